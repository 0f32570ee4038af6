//! The record of a restore drill, stored beside the backup it drilled (`backups/<id>/drill.json`,
//! overwritten by the next drill) without touching its manifest. `agent list` reads it; the drill's
//! summary carries the same outcome without the per-table counts, which can be thousands long.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Version of the drill record's layout; a reader refuses a newer one.
pub const DRILL_FORMAT_VERSION: u32 = 1;

/// A drill as stored: its outcome, and the rows of every table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRecord {
    /// [`DRILL_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// What the drill found.
    #[serde(flatten)]
    pub outcome: DrillOutcome,
    /// Every table checked, in the order checked.
    #[serde(default)]
    pub tables: Vec<TableCount>,
}

/// What a drill found: whether a server started on the restored data, every table checked, and the
/// position equal to the recorded one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillOutcome {
    /// The backup restored (for a point-in-time drill, the full backup the replay started from).
    pub backup_id: String,
    /// The point-in-time target replayed to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Every check passed.
    pub passed: bool,
    /// Why it failed (absent when it passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the drill started.
    pub started_at: Timestamp,
    /// When it ended.
    pub completed_at: Timestamp,
    /// `@@version` of the server started on the restored data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Tables checked (`CHECK TABLE` passed or failed).
    pub tables_checked: u64,
    /// Tables per engine.
    #[serde(default)]
    pub engines: BTreeMap<String, u64>,
    /// Rows over every table.
    pub rows: u64,
    /// Tables `CHECK TABLE` found damaged, with its message (at most [`LISTED_TABLES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tables: Vec<TableProblem>,
    /// The server's position against the manifest's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<PositionCheck>,
    /// Bytes the restored data took in the scratch space.
    pub scratch_bytes: u64,
    /// Where the time went.
    pub durations: DrillDurations,
}

/// Damaged tables listed in an outcome at most (it must fit a pod's termination message).
pub const LISTED_TABLES: usize = 10;

/// One table's row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableCount {
    /// `schema.table`.
    pub table: String,
    /// Storage engine.
    pub engine: String,
    /// `COUNT(*)`.
    pub rows: u64,
}

/// A table `CHECK TABLE` did not pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableProblem {
    /// `schema.table`.
    pub table: String,
    /// The server's message.
    pub message: String,
}

/// Where the server read its position from, and whether it equals the manifest's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionCheck {
    /// What the server's position was read from.
    pub source: PositionSource,
    /// The server's position.
    pub server: String,
    /// The manifest's.
    pub manifest: String,
    /// They agree: equal, or for InnoDB's coordinate, not past the manifest's.
    pub matches: bool,
}

/// What a restored server knows its position from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PositionSource {
    /// The restored binary logs (`@@gtid_binlog_pos`): cold backups.
    BinaryLogs,
    /// InnoDB's record of the binary-log coordinate of the last transaction it committed, as the
    /// prepare step's recovery found it: `mariabackup` backups. It may trail the recorded position
    /// (transactions of other engines), never pass it.
    Innodb,
    /// `@@gtid_slave_pos`: catch-up backups and point-in-time restores, which record it.
    ReplicaPosition,
}

/// Seconds per phase of a drill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DrillDurations {
    /// Downloading, verifying and preparing (and replaying, to a point in time).
    pub restore_seconds: f64,
    /// Starting the server.
    pub start_seconds: f64,
    /// `CHECK TABLE` and row counts.
    pub check_seconds: f64,
    /// Stopping the server.
    pub stop_seconds: f64,
    /// The whole drill.
    pub total_seconds: f64,
}

impl DrillRecord {
    /// Parses a stored record, refusing a layout newer than this release knows.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let record: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if record.format_version > DRILL_FORMAT_VERSION {
            return Err(format!(
                "drill record format {} is newer than this release reads ({DRILL_FORMAT_VERSION})",
                record.format_version
            ));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_newer_one_is_refused() {
        let record = DrillRecord {
            format_version: DRILL_FORMAT_VERSION,
            outcome: DrillOutcome {
                backup_id: "20261130T020000Z-00abcd".into(),
                until: None,
                passed: false,
                reason: Some("CHECK TABLE app.s: Corrupt".into()),
                started_at: "2026-11-30T03:00:00Z".parse().unwrap(),
                completed_at: "2026-11-30T03:01:00Z".parse().unwrap(),
                server_version: Some("10.11.14-MariaDB".into()),
                tables_checked: 2,
                engines: [("InnoDB".to_string(), 2)].into(),
                rows: 7,
                failed_tables: vec![TableProblem { table: "app.s".into(), message: "Corrupt".into() }],
                position: None,
                scratch_bytes: 1 << 20,
                durations: DrillDurations { total_seconds: 60.0, ..Default::default() },
            },
            tables: vec![TableCount { table: "app.w".into(), engine: "InnoDB".into(), rows: 7 }],
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""failedTables":[{"table":"app.s","message":"Corrupt"}]"#), "{json}");
        assert_eq!(DrillRecord::parse(json.as_bytes()).unwrap(), record);
        let newer = json.replace(r#""formatVersion":1"#, r#""formatVersion":2"#);
        assert_eq!(
            DrillRecord::parse(newer.as_bytes()).unwrap_err(),
            "drill record format 2 is newer than this release reads (1)"
        );
    }
}
