//! The `binlog` method: an incremental backup made of the server's closed binary logs since a position.
//!
//! It rotates the binary log (`FLUSH BINARY LOGS`), so every transaction committed before lies in a
//! closed file that no longer changes; reads the GTID state at the start of each file from its header;
//! picks the files holding transactions after `from` ([`crate::mysql::binlog::range`]); and stores them whole,
//! through the same chunk store as every backup, under the binary-log base. The backup ends at the
//! state the new current file starts with — exactly what the stored files reach — and refuses when the
//! files it needs were purged. Files are read from the binary-log directory (a Job mounts the
//! database's volume at the server's own path), never through the server: the directory the server
//! names (`@@log_bin_basename`) unless one is given.

use std::path::{Path, PathBuf};

use mysql_async::prelude::Queryable;

use super::{BackupMethod, MethodError};
use crate::datapath::chunk::writer::ChunkWriter;
use crate::format::manifest::{Base, MethodKind, Prepare};
use crate::mysql::binlog::file as binlog_file;
use crate::mysql::binlog::range::{FileStart, files_after};
use crate::mysql::position::{BinlogCoordinate, GtidState, Positions};
use crate::mysql::server::{ServerConfig, ServerError, read_positions};

/// Bytes of a file's start read to find its GTID header (format description and GTID list come first).
const HEADER_BYTES: usize = 1 << 20;

/// An incremental backup of binary logs.
pub struct Binlog {
    /// The server.
    pub server: ServerConfig,
    /// Directory holding the binary logs; `None`: where the server says they are.
    pub binlog_dir: Option<PathBuf>,
    /// Back up the transactions after this state.
    pub from: GtidState,
    /// Read size, the chunk size.
    pub read_size: usize,
}

/// The GTID state at the start of binary log `path`.
fn start_state(path: &Path) -> Result<GtidState, MethodError> {
    use std::io::Read;
    let read_err = |source| MethodError::ReadFile { path: path.to_path_buf(), source };
    let mut head = Vec::with_capacity(HEADER_BYTES);
    std::fs::File::open(path).map_err(read_err)?.take(HEADER_BYTES as u64).read_to_end(&mut head).map_err(read_err)?;
    Ok(binlog_file::parse(path, &head)?.start)
}

/// The directory of the binary logs from the server's `@@log_bin_basename` (an absolute path and the
/// logs' name without their number, e.g. `/var/lib/mysql/mysql-bin`).
fn server_binlog_dir(basename: Option<&str>) -> Option<PathBuf> {
    let path = Path::new(basename?);
    path.is_absolute().then(|| path.parent().map(Path::to_path_buf)).flatten()
}

impl BackupMethod for Binlog {
    const KIND: MethodKind = MethodKind::Binlog;
    const PREPARE: Prepare = Prepare::None;

    async fn estimated_bytes(&self) -> u64 {
        0
    }

    async fn run(&self, writer: &ChunkWriter) -> Result<Positions, MethodError> {
        let pool = self.server.pool();
        let q = |operation: &'static str| {
            move |source| {
                MethodError::Server(ServerError::Query { endpoint: self.server.endpoint(), operation, source })
            }
        };
        let mut conn = pool.get_conn().await.map_err(q("connecting"))?;
        conn.query_drop("FLUSH BINARY LOGS").await.map_err(q("FLUSH BINARY LOGS"))?;
        let logs: Vec<String> = conn
            .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| row.get::<String, usize>(0).unwrap_or_default())
            .await
            .map_err(q("SHOW BINARY LOGS"))?;
        let dir = match &self.binlog_dir {
            Some(dir) => dir.clone(),
            None => {
                let basename: Option<String> =
                    conn.query_first("SELECT @@log_bin_basename").await.map_err(q("SELECT @@log_bin_basename"))?;
                server_binlog_dir(basename.as_deref())
                    .ok_or_else(|| MethodError::BinlogDirUnknown { endpoint: self.server.endpoint(), basename })?
            }
        };
        tracing::info!(dir = %dir.display(), "reading binary logs");
        drop(conn);
        let mut positions = read_positions(&pool, &self.server).await?;
        let _ = pool.disconnect().await;
        let Some((current, closed)) = logs.split_last() else {
            return Err(MethodError::Range(crate::mysql::binlog::range::RangeError::NoFiles));
        };
        let to = start_state(&dir.join(current))?;
        let starts = closed
            .iter()
            .map(|name| Ok(FileStart { name: name.clone(), start: start_state(&dir.join(name))? }))
            .collect::<Result<Vec<_>, MethodError>>()?;
        let needed = files_after(&starts, &to, &self.from)?;
        tracing::info!(files = needed.len(), first = needed.first().map(String::as_str), "binary logs to back up");

        for name in &needed {
            super::copy_file(writer, Base::BinlogDir, name, 0o640, &dir.join(name), self.read_size, None).await?;
        }
        // The backup reaches the start of the current file: its GTID state, at its beginning.
        positions.gtid = Some(to);
        positions.binlog = Some(BinlogCoordinate { file: current.clone(), position: 4 });
        Ok(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_names_the_binlog_directory() {
        assert_eq!(server_binlog_dir(Some("/srv/binlogs/mysql-bin")), Some(PathBuf::from("/srv/binlogs")));
        assert_eq!(server_binlog_dir(Some("mysql-bin")), None, "a relative basename names no directory");
        assert_eq!(server_binlog_dir(None), None, "binary logging is off");
    }
}
