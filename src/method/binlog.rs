//! The `binlog` method: an incremental backup made of the server's closed binary logs since a position.
//!
//! It rotates the binary log (`FLUSH BINARY LOGS`), so every transaction committed before lies in a
//! closed file that no longer changes; reads the GTID state at the start of each file from its header;
//! picks the files holding transactions after `from` ([`crate::binlog_range`]); and stores them whole,
//! through the same chunk store as every backup, under the binary-log base. The backup ends at the
//! state the new current file starts with — exactly what the stored files reach — and refuses when the
//! files it needs were purged. Files are read from the binary-log directory (a Job mounts the
//! database's volume), never through the server.

use std::path::{Path, PathBuf};

use mysql_async::prelude::Queryable;

use super::{BackupMethod, MethodError};
use crate::{
    binlog_file,
    binlog_range::{FileStart, files_after},
    chunk_writer::ChunkWriter,
    manifest::{Base, MethodKind, Prepare},
    position::{BinlogCoordinate, GtidState, Positions},
    server::{ServerConfig, ServerError, read_positions},
};

/// Bytes of a file's start read to find its GTID header (format description and GTID list come first).
const HEADER_BYTES: usize = 1 << 20;

/// An incremental backup of binary logs.
pub struct Binlog {
    /// The server.
    pub server: ServerConfig,
    /// Directory holding the binary logs (usually the datadir).
    pub binlog_dir: PathBuf,
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

impl BackupMethod for Binlog {
    fn kind(&self) -> MethodKind {
        MethodKind::Binlog
    }

    fn prepare(&self) -> Prepare {
        Prepare::None
    }

    fn estimated_bytes(&self) -> u64 {
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
        drop(conn);
        let mut positions = read_positions(&pool, &self.server).await?;
        let _ = pool.disconnect().await;
        let Some((current, closed)) = logs.split_last() else {
            return Err(MethodError::Range(crate::binlog_range::RangeError::NoFiles));
        };
        let to = start_state(&self.binlog_dir.join(current))?;
        let starts = closed
            .iter()
            .map(|name| Ok(FileStart { name: name.clone(), start: start_state(&self.binlog_dir.join(name))? }))
            .collect::<Result<Vec<_>, MethodError>>()?;
        let needed = files_after(&starts, &to, &self.from)?;
        tracing::info!(files = needed.len(), first = needed.first().map(String::as_str), "binary logs to back up");

        for name in &needed {
            super::copy_file(writer, Base::BinlogDir, name, 0o640, &self.binlog_dir.join(name), self.read_size).await?;
        }
        // The backup reaches the start of the current file: its GTID state, at its beginning.
        positions.gtid = Some(to);
        positions.binlog = Some(BinlogCoordinate { file: current.clone(), position: 4 });
        Ok(positions)
    }
}
