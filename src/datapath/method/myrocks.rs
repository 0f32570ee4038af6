//! The `myrocks` method (MariaDB with the RocksDB engine): MyRocks keeps its data in immutable SST
//! files whose names are never reused, so an SST the previous backup holds (same name, same size) is
//! taken over from its manifest without being read, as `myrocks_hotbackup` does.
//!
//! 1. Rounds: a RocksDB checkpoint (`SET GLOBAL rocksdb_create_checkpoint`, hard links in a directory
//!    of the datadir's file system), its SST files not sent yet sent, the checkpoint dropped. Each round
//!    leaves less for the next.
//! 2. The last round runs under `BACKUP STAGE BLOCK_COMMIT`, held by our own connection: no transaction
//!    commits, in any engine, while the final checkpoint is made, the binary-log position read, and
//!    `mariadb-backup --no-lock --skip-rocksdb-backup` copies the rest of the server (InnoDB with its
//!    redo log, Aria, the `.frm` files). The checkpoint, the position and the InnoDB copy are then of the
//!    same commit. The server offers nothing finer: `mariadb-backup`'s own MyRocks support reads every
//!    SST, and two connections cannot both hold a backup stage. Commits wait while the non-RocksDB part
//!    is copied: small on a server whose data is mostly MyRocks.
//! 3. After the block: the final checkpoint's remaining SSTs, then its WAL, `MANIFEST`, `OPTIONS` and
//!    `CURRENT`, as `#rocksdb/` of the datadir; the checkpoint removed.
//!
//! Checkpoint directories are named `#mysql-backup-operator-checkpoint-<n>` in the datadir; one left by
//! a killed run is removed by the next.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use mysql_async::prelude::Queryable;

use super::mariabackup::Mariabackup;
use super::{BackupMethod, MethodError, copy_file};
use crate::datapath::chunk::writer::ChunkWriter;
use crate::format::manifest::{Base, ChunkRef, Manifest, MethodKind, Prepare};
use crate::mysql::position::Positions;
use crate::mysql::server;

/// Where checkpoints go in the datadir (a `#` name: never taken for a database).
pub const CHECKPOINT_PREFIX: &str = "#mysql-backup-operator-checkpoint-";
/// Where the RocksDB files go in the backup, relative to the datadir.
pub const ROCKSDB_DIR: &str = "#rocksdb";
/// One row, one column: 1 when the RocksDB engine is loaded and active, 0 otherwise.
pub const ROCKSDB_LOADED: &str =
    "SELECT COUNT(*) FROM information_schema.plugins WHERE plugin_name = 'ROCKSDB' AND plugin_status = 'ACTIVE'";
/// Rounds before the last one.
const ROUNDS: usize = 2;
/// A round that read less than this ends the rounds.
const SMALL_ROUND: u64 = 64 * 1024 * 1024;

/// SST files of an earlier backup: name → (size, chunks).
pub type KnownSsts = HashMap<String, (u64, Vec<ChunkRef>)>;

/// The SST files of `manifest` (its `#rocksdb/*.sst`), to take over.
pub fn known_ssts(manifest: &Manifest) -> KnownSsts {
    manifest
        .files
        .iter()
        .filter(|f| f.base == Base::Datadir)
        .filter_map(|f| {
            let name = f.path.strip_prefix(ROCKSDB_DIR)?.strip_prefix('/')?;
            (name.ends_with(".sst") && !name.contains('/')).then(|| (name.to_string(), (f.size, f.chunks.clone())))
        })
        .collect()
}

/// Settings of a MyRocks backup.
#[derive(Debug, Clone)]
pub struct Myrocks {
    /// The server, its datadir and `mariadb-backup` (for the non-RocksDB part).
    pub mariabackup: Mariabackup,
    /// SSTs of the previous backup of this server in the same storage.
    pub previous: KnownSsts,
    /// Read size (the chunk size).
    pub read_size: usize,
}

/// A checkpoint directory, removed when dropped (also when the backup fails).
struct Checkpoint(PathBuf);

impl Drop for Checkpoint {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "removing a RocksDB checkpoint failed");
        }
    }
}

impl Myrocks {
    fn query_err(&self, operation: &'static str) -> impl Fn(mysql_async::Error) -> MethodError + '_ {
        move |source| {
            MethodError::Server(server::ServerError::Query {
                endpoint: self.mariabackup.server.endpoint(),
                operation,
                source,
            })
        }
    }

    /// Removes the checkpoints a killed run left.
    fn remove_stale_checkpoints(&self) -> Result<(), MethodError> {
        let datadir = &self.mariabackup.datadir;
        let entries =
            std::fs::read_dir(datadir).map_err(|source| MethodError::Datadir { path: datadir.clone(), source })?;
        for e in entries.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(CHECKPOINT_PREFIX) {
                tracing::info!(dir = %e.path().display(), "removing the checkpoint of an interrupted backup");
                drop(Checkpoint(e.path()));
            }
        }
        Ok(())
    }

    async fn checkpoint(&self, conn: &mut mysql_async::Conn, round: usize) -> Result<Checkpoint, MethodError> {
        let dir = self.mariabackup.datadir.join(format!("{CHECKPOINT_PREFIX}{round}"));
        let sql = format!("SET GLOBAL rocksdb_create_checkpoint = '{}'", dir.display().to_string().replace('\'', "''"));
        conn.query_drop(sql).await.map_err(self.query_err("creating a RocksDB checkpoint"))?;
        Ok(Checkpoint(dir))
    }

    /// Sends the SST files of `checkpoint` not in `sent`: taken over from the previous backup when it
    /// holds the same name and size, read otherwise. Returns the bytes read.
    async fn send_ssts(
        &self,
        writer: &ChunkWriter,
        checkpoint: &Path,
        sent: &mut HashSet<String>,
    ) -> Result<u64, MethodError> {
        let mut read = 0;
        for (name, size) in files_of(checkpoint)?.into_iter().filter(|(n, _)| n.ends_with(".sst")) {
            if !sent.insert(name.clone()) {
                continue;
            }
            let rel = format!("{ROCKSDB_DIR}/{name}");
            if let Some((known_size, chunks)) = self.previous.get(&name)
                && *known_size == size
                && writer.take_over(Base::Datadir, &rel, 0o640, size, chunks)?
            {
                continue;
            }
            copy_file(writer, Base::Datadir, &rel, 0o640, &checkpoint.join(&name), self.read_size).await?;
            read += size;
        }
        Ok(read)
    }
}

/// The regular files of `dir`, with their sizes, by name.
fn files_of(dir: &Path) -> Result<Vec<(String, u64)>, MethodError> {
    let entries = std::fs::read_dir(dir).map_err(|source| MethodError::ReadFile { path: dir.to_path_buf(), source })?;
    let mut files = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let meta = e.metadata().map_err(|source| MethodError::ReadFile { path: e.path(), source })?;
        if meta.is_file() {
            files.push((e.file_name().to_string_lossy().into_owned(), meta.len()));
        }
    }
    files.sort();
    Ok(files)
}

impl BackupMethod for Myrocks {
    const KIND: MethodKind = MethodKind::Myrocks;
    const PREPARE: Prepare = Prepare::Mariabackup;

    async fn estimated_bytes(&self) -> u64 {
        super::dir_size(vec![self.mariabackup.datadir.clone()], true).await
    }

    async fn run(&self, writer: &ChunkWriter) -> Result<Positions, MethodError> {
        self.remove_stale_checkpoints()?;
        let pool = self.mariabackup.server.pool();
        let result = self.run_with(&pool, writer).await;
        let _ = pool.disconnect().await;
        result
    }
}

impl Myrocks {
    async fn run_with(&self, pool: &mysql_async::Pool, writer: &ChunkWriter) -> Result<Positions, MethodError> {
        let mut conn = pool.get_conn().await.map_err(self.query_err("connecting"))?;
        let loaded: Option<u64> =
            conn.query_first(ROCKSDB_LOADED).await.map_err(self.query_err("looking for the RocksDB engine"))?;
        if loaded.unwrap_or(0) == 0 {
            return Err(MethodError::Unsupported(format!(
                "method myrocks needs the RocksDB engine, and the server at {} has no active ROCKSDB plugin \
                 (it is loaded with --plugin-load-add=ha_rocksdb)",
                self.mariabackup.server.endpoint()
            )));
        }
        let dir: Option<String> =
            conn.query_first("SELECT @@rocksdb_datadir").await.map_err(self.query_err("reading @@rocksdb_datadir"))?;
        let dir = dir.unwrap_or_default();
        if dir.trim_start_matches("./").trim_end_matches('/') != ROCKSDB_DIR {
            return Err(MethodError::Unsupported(format!(
                "method myrocks needs the RocksDB engine loaded with its data in the datadir's {ROCKSDB_DIR} \
                 (@@rocksdb_datadir is {dir:?})"
            )));
        }
        let mut sent = HashSet::new();
        for round in 0..ROUNDS {
            let checkpoint = self.checkpoint(&mut conn, round).await?;
            let read = self.send_ssts(writer, &checkpoint.0, &mut sent).await?;
            tracing::info!(round, read_bytes = read, ssts = sent.len(), "checkpoint round sent");
            drop(checkpoint);
            if read < SMALL_ROUND {
                break;
            }
        }
        // The last round: nothing commits from here until BACKUP STAGE END.
        for stage in ["START", "FLUSH", "BLOCK_DDL", "BLOCK_COMMIT"] {
            conn.query_drop(format!("BACKUP STAGE {stage}"))
                .await
                .map_err(self.query_err("entering a backup stage"))?;
        }
        let blocked = async {
            let positions = server::read_positions(pool, &self.mariabackup.server).await?;
            let checkpoint = self.checkpoint(&mut conn, ROUNDS).await?;
            self.mariabackup.stream_into(writer, &["--no-lock", "--skip-rocksdb-backup"]).await?;
            Ok::<_, MethodError>((positions, checkpoint))
        }
        .await;
        let ended = conn.query_drop("BACKUP STAGE END").await.map_err(self.query_err("ending the backup stage"));
        let (positions, checkpoint) = blocked?;
        ended?;
        self.send_ssts(writer, &checkpoint.0, &mut sent).await?;
        // What makes the copy one checkpoint comes last: the WAL, OPTIONS, MANIFEST, then CURRENT.
        let mut rest: Vec<(String, u64)> =
            files_of(&checkpoint.0)?.into_iter().filter(|(n, _)| !n.ends_with(".sst")).collect();
        rest.sort_by_key(|(n, _)| (n == "CURRENT", n.starts_with("MANIFEST"), n.clone()));
        for (name, _) in rest {
            let rel = format!("{ROCKSDB_DIR}/{name}");
            copy_file(writer, Base::Datadir, &rel, 0o640, &checkpoint.0.join(&name), self.read_size).await?;
        }
        Ok(positions)
    }
}
