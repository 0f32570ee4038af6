//! The `myrocks` method (MariaDB with the RocksDB engine): MyRocks keeps its data in immutable SST
//! files whose names one database never reuses, so an SST the previous backup holds is taken over from
//! its manifest without being read, as `myrocks_hotbackup` does. "Holds" means same name, same size and
//! same tail (the hash of its last 64 KiB, [`FileEntry::tail`](crate::format::manifest::FileEntry::tail)):
//! the tail holds the SST's properties, which name the database session that wrote it. A server
//! restored from a backup starts a new session and reuses file numbers; the tail tells its files from
//! the original's, where name and size alone could not. Reading tails costs 64 KiB an SST.
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
use crate::format::manifest::{Base, ChunkRef, FileEntry, MethodKind, Prepare, TAIL_BYTES};
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

/// An SST file of an earlier backup.
#[derive(Debug, Clone)]
pub struct KnownSst {
    /// Its size.
    pub size: u64,
    /// Its [`FileEntry::tail`](crate::format::manifest::FileEntry::tail).
    pub tail: String,
    /// Its chunks.
    pub chunks: Vec<ChunkRef>,
}

/// SST files of an earlier backup, by name.
pub type KnownSsts = HashMap<String, KnownSst>;

/// The SST files among a manifest's `files` (its `#rocksdb/*.sst`) that can be taken over: those with
/// a recorded tail (a `myrocks` backup's), which identifies the file beyond its name.
pub fn known_ssts(files: &[FileEntry]) -> KnownSsts {
    files
        .iter()
        .filter(|f| f.base == Base::Datadir)
        .filter_map(|f| {
            let name = f.path.strip_prefix(ROCKSDB_DIR)?.strip_prefix('/')?;
            let tail = f.tail.clone()?;
            (name.ends_with(".sst") && !name.contains('/'))
                .then(|| (name.to_string(), KnownSst { size: f.size, tail, chunks: f.chunks.clone() }))
        })
        .collect()
}

/// The chunks of `known` when it is the same file as one of `size` bytes with `tail`.
fn held<'a>(known: Option<&'a KnownSst>, size: u64, tail: &str) -> Option<&'a [ChunkRef]> {
    known.filter(|k| k.size == size && k.tail == tail).map(|k| &k.chunks[..])
}

/// BLAKE3 (hex) of the last [`TAIL_BYTES`] of the file at `path`, `size` bytes long.
fn tail_of(path: &Path, size: u64) -> Result<String, MethodError> {
    use std::io::{Read, Seek, SeekFrom};
    let read_err = |source| MethodError::ReadFile { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let start = size.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(read_err)?;
    let mut buf = Vec::with_capacity((size - start) as usize);
    file.take(size - start).read_to_end(&mut buf).map_err(read_err)?;
    if buf.len() as u64 != size - start {
        let short = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while being read");
        return Err(read_err(short));
    }
    Ok(blake3::hash(&buf).to_hex().to_string())
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

    /// Removes the checkpoints a killed run left, on a blocking thread.
    async fn remove_stale_checkpoints(&self) -> Result<(), MethodError> {
        let datadir = self.mariabackup.datadir.clone();
        let join_err =
            |e| MethodError::Datadir { path: self.mariabackup.datadir.clone(), source: std::io::Error::other(e) };
        tokio::task::spawn_blocking(move || {
            let entries =
                std::fs::read_dir(&datadir).map_err(|source| MethodError::Datadir { path: datadir.clone(), source })?;
            for e in entries.filter_map(Result::ok) {
                if e.file_name().to_string_lossy().starts_with(CHECKPOINT_PREFIX) {
                    tracing::info!(dir = %e.path().display(), "removing the checkpoint of an interrupted backup");
                    drop(Checkpoint(e.path()));
                }
            }
            Ok(())
        })
        .await
        .map_err(join_err)?
    }

    async fn checkpoint(&self, conn: &mut mysql_async::Conn, round: usize) -> Result<Checkpoint, MethodError> {
        let dir = self.mariabackup.datadir.join(format!("{CHECKPOINT_PREFIX}{round}"));
        let sql = format!("SET GLOBAL rocksdb_create_checkpoint = '{}'", dir.display().to_string().replace('\'', "''"));
        conn.query_drop(sql).await.map_err(self.query_err("creating a RocksDB checkpoint"))?;
        Ok(Checkpoint(dir))
    }

    /// Sends the SST files of `checkpoint` not in `sent`: taken over from the previous backup when it
    /// holds the same name, size and tail, read otherwise. Returns the bytes read (tails included).
    async fn send_ssts(
        &self,
        writer: &ChunkWriter,
        checkpoint: &Path,
        sent: &mut HashSet<String>,
    ) -> Result<u64, MethodError> {
        let mut read = 0;
        for (name, size) in files_of(checkpoint).await?.into_iter().filter(|(n, _)| n.ends_with(".sst")) {
            if !sent.insert(name.clone()) {
                continue;
            }
            let rel = format!("{ROCKSDB_DIR}/{name}");
            let path = checkpoint.join(&name);
            let tail = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || tail_of(&path, size)).await.map_err(|e| {
                    MethodError::ReadFile { path: checkpoint.join(&name), source: std::io::Error::other(e) }
                })??
            };
            read += size.min(TAIL_BYTES);
            if let Some(chunks) = held(self.previous.get(&name), size, &tail)
                && writer.take_over(Base::Datadir, &rel, 0o640, size, chunks, Some(tail.clone()))?
            {
                continue;
            }
            copy_file(writer, Base::Datadir, &rel, 0o640, &path, self.read_size, Some(tail)).await?;
            read += size;
        }
        Ok(read)
    }
}

/// The regular files of `dir`, with their sizes, by name, listed on a blocking thread (a checkpoint
/// holds thousands of files).
async fn files_of(dir: &Path) -> Result<Vec<(String, u64)>, MethodError> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || list_files(&owned))
        .await
        .map_err(|e| MethodError::ReadFile { path: dir.to_path_buf(), source: std::io::Error::other(e) })?
}

fn list_files(dir: &Path) -> Result<Vec<(String, u64)>, MethodError> {
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
        super::data_bytes(&self.mariabackup.datadir).await
    }

    async fn run(&self, writer: &ChunkWriter) -> Result<Positions, MethodError> {
        self.remove_stale_checkpoints().await?;
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
            files_of(&checkpoint.0).await?.into_iter().filter(|(n, _)| !n.ends_with(".sst")).collect();
        rest.sort_by_key(|(n, _)| (n == "CURRENT", n.starts_with("MANIFEST"), n.clone()));
        for (name, _) in rest {
            let rel = format!("{ROCKSDB_DIR}/{name}");
            copy_file(writer, Base::Datadir, &rel, 0o640, &checkpoint.0.join(&name), self.read_size, None).await?;
        }
        Ok(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, tail: Option<&str>) -> FileEntry {
        FileEntry {
            base: Base::Datadir,
            path: path.into(),
            size: 7,
            mode: 0o640,
            chunks: vec![],
            tail: tail.map(Into::into),
        }
    }

    #[test]
    fn only_ssts_with_a_recorded_tail_can_be_taken_over() {
        let files = [
            entry("#rocksdb/000012.sst", Some("aa")),
            entry("#rocksdb/000013.sst", None), // a mariabackup backup's: nothing tells it apart
            entry("#rocksdb/MANIFEST-000009", Some("bb")),
            entry("app/t.ibd", Some("cc")),
            entry("#rocksdb/sub/000014.sst", Some("dd")),
        ];
        let known = known_ssts(&files);
        assert_eq!(known.keys().collect::<Vec<_>>(), ["000012.sst"]);
        let k = &known["000012.sst"];
        assert!(held(Some(k), 7, "aa").is_some());
        assert!(held(Some(k), 7, "ab").is_none(), "same name and size, another file: read it");
        assert!(held(Some(k), 8, "aa").is_none());
        assert!(held(None, 7, "aa").is_none());
    }

    #[test]
    fn the_tail_is_the_hash_of_the_last_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000001.sst");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let tail = &bytes[bytes.len() - TAIL_BYTES as usize..];
        assert_eq!(tail_of(&path, bytes.len() as u64).unwrap(), blake3::hash(tail).to_hex().to_string());
        std::fs::write(&path, &bytes[..1000]).unwrap();
        assert_eq!(tail_of(&path, 1000).unwrap(), blake3::hash(&bytes[..1000]).to_hex().to_string());
        let err = tail_of(&path, 2000).unwrap_err().to_string();
        assert!(err.contains("000001.sst"), "{err}");
    }
}
