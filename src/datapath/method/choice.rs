//! `auto`: the method a running server is best backed up with, from what the server says it is and
//! what its datadir holds.
//!
//! - MariaDB whose RocksDB engine is loaded and whose `#rocksdb` directory holds more than half of the
//!   datadir's data: `myrocks`, which reads only the SST files storage does not hold yet, where
//!   `mariabackup` would read every one of them, every time. It copies the rest under a commit block,
//!   which is why it needs the rest to be the smaller part. Not data: binary logs, the redo log (of
//!   which only what is written during the copy is copied) and the temporary tablespace.
//! - Any other MariaDB: `mariabackup`.
//! - MySQL: no method here copies a running MySQL server yet, so `auto` refuses and says what to use.

use std::path::Path;

use mysql_async::prelude::Queryable;

use super::MethodError;
use super::myrocks::{ROCKSDB_DIR, ROCKSDB_LOADED};
use crate::format::manifest::MethodKind;
use crate::mysql::server::{ServerConfig, ServerError};

/// What `auto` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// `SELECT VERSION()`.
    pub version: String,
    /// Whether the ROCKSDB plugin is active.
    pub rocksdb_loaded: bool,
    /// Bytes under the datadir's `#rocksdb`.
    pub rocksdb_bytes: u64,
    /// Bytes of the datadir's data ([`super::data_bytes`]).
    pub datadir_bytes: u64,
}

/// The method for `evidence` (pure), or why there is none.
pub fn choose(evidence: &Evidence) -> Result<MethodKind, MethodError> {
    if !evidence.version.to_ascii_lowercase().contains("mariadb") {
        return Err(MethodError::Unsupported(format!(
            "method auto found server version {}, which is not MariaDB: no method here copies a running MySQL \
             server; back up a stopped one (or a volume snapshot) with method cold",
            evidence.version
        )));
    }
    if evidence.rocksdb_loaded && evidence.rocksdb_bytes * 2 > evidence.datadir_bytes {
        Ok(MethodKind::Myrocks)
    } else {
        Ok(MethodKind::Mariabackup)
    }
}

/// Asks `server` and measures `datadir`.
pub async fn observe(server: &ServerConfig, datadir: &Path) -> Result<Evidence, MethodError> {
    let mut conn = server.connect().await?;
    let row: Option<(String, u64)> =
        conn.query_first(format!("SELECT VERSION(), ({ROCKSDB_LOADED})")).await.map_err(|source| {
            ServerError::Query {
                endpoint: server.endpoint(),
                operation: "reading the version and engines for method auto",
                source,
            }
        })?;
    let _ = conn.disconnect().await;
    let (version, rocksdb) = row.unwrap_or_default();
    let rocksdb_bytes = super::dir_size(vec![datadir.join(ROCKSDB_DIR)], true).await;
    let datadir_bytes = super::data_bytes(datadir).await;
    Ok(Evidence { version, rocksdb_loaded: rocksdb > 0, rocksdb_bytes, datadir_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(version: &str, loaded: bool, rocksdb: u64, total: u64) -> Evidence {
        Evidence { version: version.into(), rocksdb_loaded: loaded, rocksdb_bytes: rocksdb, datadir_bytes: total }
    }

    #[test]
    fn mostly_myrocks_data_picks_myrocks() {
        let v = "10.11.14-MariaDB-0+deb12u2-log";
        assert_eq!(choose(&evidence(v, true, 900, 1000)).unwrap(), MethodKind::Myrocks);
        assert_eq!(choose(&evidence(v, true, 500, 1000)).unwrap(), MethodKind::Mariabackup, "half is not most");
        assert_eq!(choose(&evidence(v, true, 0, 1000)).unwrap(), MethodKind::Mariabackup);
        // A #rocksdb left behind by an engine no longer loaded is not read by the server.
        assert_eq!(choose(&evidence(v, false, 900, 1000)).unwrap(), MethodKind::Mariabackup);
        assert_eq!(choose(&evidence(v, false, 0, 0)).unwrap(), MethodKind::Mariabackup);
    }

    #[test]
    fn mysql_is_refused_with_what_to_use() {
        let e = choose(&evidence("8.0.40", false, 0, 1000)).unwrap_err().to_string();
        assert!(e.contains("server version 8.0.40, which is not MariaDB"), "{e}");
        assert!(e.contains("method cold"), "{e}");
    }
}
