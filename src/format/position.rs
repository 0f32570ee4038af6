//! The server identity and replication positions a backup records at its consistent point, as the
//! manifest, the agent's summary and the archive's index store them. Defined here, with the other
//! stored documents, so that no change elsewhere changes them silently; GTID positions and sets
//! (`crate::mysql::gtid`) are stored as their text, which that module parses and prints.

use serde::{Deserialize, Serialize};

use crate::mysql::gtid::{MariaGtidPos, MysqlGtidSet};

/// Which server family wrote the data. The two differ in GTID model, tools and file layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// MariaDB Server.
    Mariadb,
    /// Oracle MySQL (and Percona Server, which follows it).
    Mysql,
}

impl Flavor {
    /// Tells the family from a version string such as `10.11.19-MariaDB-0+deb12u1-log` or `8.0.36`.
    pub fn from_version(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") { Self::Mariadb } else { Self::Mysql }
    }
}

/// GTID state at the consistent point, in the shape of the server family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flavor", rename_all = "lowercase")]
pub enum GtidState {
    /// MariaDB GTID positions.
    #[serde(rename_all = "camelCase")]
    Mariadb {
        /// `@@gtid_binlog_pos`: the last transaction written to the binary log in each domain.
        binlog_pos: MariaGtidPos,
        /// `@@gtid_current_pos` where it could be read at the consistent point (it also counts
        /// transactions applied as a replica without a binary log).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current_pos: Option<MariaGtidPos>,
        /// The GTID state at the start of the oldest binary log still on the server: transactions at or
        /// before it can no longer be read from binary logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purged: Option<MariaGtidPos>,
    },
    /// MySQL GTID sets.
    #[serde(rename_all = "camelCase")]
    Mysql {
        /// `@@gtid_executed`.
        executed: MysqlGtidSet,
        /// `@@gtid_purged`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purged: Option<MysqlGtidSet>,
    },
}

/// A binary log coordinate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogCoordinate {
    /// Binary log file name, without directory, e.g. `mysql-bin.000042`.
    pub file: String,
    /// Byte offset in that file.
    pub position: u64,
}

impl std::fmt::Display for BinlogCoordinate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.position)
    }
}

/// Who the server is and where its replication stream stood at the backup's consistent point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Positions {
    /// Server family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<Flavor>,
    /// Server version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `@@server_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
    /// `@@server_uuid` (MySQL only; MariaDB has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_uuid: Option<String>,
    /// GTID state, when the server has GTIDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<GtidState>,
    /// Binary log coordinate, when binary logging is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<BinlogCoordinate>,
}

impl Positions {
    /// A one-line description for listings: the GTID state, else the binlog coordinate.
    pub fn short(&self) -> String {
        match (&self.gtid, &self.binlog) {
            (Some(GtidState::Mariadb { binlog_pos, .. }), _) if !binlog_pos.is_empty() => binlog_pos.to_string(),
            (Some(GtidState::Mysql { executed, .. }), _) if !executed.is_empty() => executed.to_string(),
            (_, Some(b)) => format!("{}:{}", b.file, b.position),
            _ => "-".to_string(),
        }
    }
}
