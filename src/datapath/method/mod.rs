//! Backup methods: the ways of reading a consistent copy of a server's files. Each method feeds files
//! into the shared chunk pipeline and reports the replication positions of its consistent point; the
//! rest of the data path (storage, manifest, restore) does not know which method ran.
//!
//! Methods to come (clone, snapshot, myrocks, xtrabackup) implement [`BackupMethod`] too.

use std::path::PathBuf;

use crate::datapath::chunk::writer::{ChunkWriteError, ChunkWriter};
use crate::format::manifest::{MethodKind, Prepare};
use crate::mysql::binlog::file::BinlogFileError;
use crate::mysql::mbstream::MbstreamError;
use crate::mysql::position::Positions;
use crate::mysql::server::ServerError;

pub mod binlog;
pub mod catchup;
pub mod choice;
pub mod cold;
pub mod mariabackup;
pub mod myrocks;

/// Errors of backup methods.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// The datadir is missing or unreadable.
    #[error("datadir {path}: {source}")]
    Datadir { path: PathBuf, source: std::io::Error },
    /// Reading a file of the datadir failed.
    #[error("reading {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    /// A server is running on the datadir the cold method was asked to copy.
    #[error(
        "datadir {datadir}: a running server was detected ({evidence}); stop it first, back up with --method mariabackup, or pass --force if the detection is wrong"
    )]
    LiveServer { datadir: PathBuf, evidence: String },
    /// An external tool could not be started.
    #[error("starting {tool}: {source}")]
    Spawn { tool: String, source: std::io::Error },
    /// An external tool failed.
    #[error("{tool} failed ({status}); its last output:\n{output}")]
    ToolFailed { tool: String, status: String, output: String },
    /// The tool's stream was malformed.
    #[error(transparent)]
    Stream(#[from] MbstreamError),
    /// The stream broke a rule of the format as mariadb-backup writes it.
    #[error("mbstream from {tool}: {reason}")]
    StreamOrder { tool: String, reason: String },
    /// Writing a temporary file failed.
    #[error("writing temporary file {path}: {source}")]
    TempFile { path: PathBuf, source: std::io::Error },
    /// Reading positions from binary logs failed.
    #[error(transparent)]
    Binlog(#[from] BinlogFileError),
    /// The backup user lacks privileges the method's tool needs.
    #[error(
        "the MySQL user {user} lacks {privileges} on *.*, which {needed_by} needs: GRANT {privileges} ON *.* TO {user}"
    )]
    MissingPrivileges { user: String, needed_by: &'static str, privileges: String },
    /// The server did not say where its binary logs are.
    #[error(
        "MySQL server at {endpoint} names no binary-log directory (@@log_bin_basename is {basename:?}): is binary logging on? pass --binlog-dir"
    )]
    BinlogDirUnknown { endpoint: String, basename: Option<String> },
    /// Talking to the server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The chunk pipeline failed.
    #[error(transparent)]
    Chunks(#[from] ChunkWriteError),
    /// No binary-log range can be backed up.
    #[error(transparent)]
    Range(#[from] crate::mysql::binlog::range::RangeError),
    /// The server cannot be backed up this way.
    #[error("{0}")]
    Unsupported(String),
}

/// A way of taking a backup.
pub trait BackupMethod {
    /// The method's name in manifests.
    const KIND: MethodKind;

    /// What restore must run after writing the files.
    const PREPARE: Prepare;

    /// Estimated bytes the backup will read, for progress (0 when unknown).
    fn estimated_bytes(&self) -> impl std::future::Future<Output = u64> + Send;

    /// Reads the files into `writer` and returns the positions at the consistent point.
    fn run(&self, writer: &ChunkWriter) -> impl std::future::Future<Output = Result<Positions, MethodError>> + Send;
}

/// Streams the file at `path` into `writer` as `rel` under `base`, in reads of `read_size` bytes,
/// recording `tail` ([`crate::format::manifest::FileEntry::tail`]) in the file's entry when given.
pub async fn copy_file(
    writer: &ChunkWriter,
    base: crate::format::manifest::Base,
    rel: &str,
    mode: u32,
    path: &std::path::Path,
    read_size: usize,
    tail: Option<String>,
) -> Result<(), MethodError> {
    use tokio::io::AsyncReadExt;
    let read_err = |source| MethodError::ReadFile { path: path.to_path_buf(), source };
    let mut file = tokio::fs::File::open(path).await.map_err(read_err)?;
    let mut out = writer.open(base, rel, mode)?;
    if let Some(tail) = tail {
        out.set_tail(tail);
    }
    loop {
        let mut buf = bytes::BytesMut::with_capacity(read_size);
        while buf.len() < read_size {
            if file.read_buf(&mut buf).await.map_err(read_err)? == 0 {
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
        let full = buf.len() == read_size;
        out.write(buf.freeze()).await?;
        if !full {
            break;
        }
    }
    out.close().await?;
    Ok(())
}

/// Whether a file name looks like a binary or relay log (`name.000042`) or its index.
pub fn is_binlog_name(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    // Aria's transaction logs (aria_log.00000001) share the shape but are table data.
    !file.starts_with("aria_log.")
        && file
            .rsplit_once('.')
            .is_some_and(|(_, ext)| ext == "index" || (ext.len() >= 6 && ext.bytes().all(|c| c.is_ascii_digit())))
}

/// Total size of regular files under `dirs`, binary logs excepted when `without_binlogs` (for progress
/// estimates; errors count as 0). The walk is blocking I/O over possibly 100,000 files: it runs on a
/// blocking thread.
pub async fn dir_size(dirs: Vec<std::path::PathBuf>, without_binlogs: bool) -> u64 {
    let walk = move || {
        dirs.iter()
            .flat_map(|dir| walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok))
            .filter(|e| e.file_type().is_file())
            .filter(|e| !without_binlogs || !is_binlog_name(&e.file_name().to_string_lossy()))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    tokio::task::spawn_blocking(walk).await.unwrap_or(0)
}

/// Bytes of a live server's data in `datadir`: what a hot copy reads. Not counted: binary logs, the
/// redo log (of which only what is written during the copy is copied), the temporary tablespace, and
/// checkpoints of an interrupted `myrocks` run (hard links to `#rocksdb` files: counted, they would
/// count those twice).
pub async fn data_bytes(datadir: &std::path::Path) -> u64 {
    const NOT_DATA: [&str; 3] = [myrocks::CHECKPOINT_PREFIX, "ib_logfile", "ibtmp"];
    let Ok(entries) = std::fs::read_dir(datadir) else { return 0 };
    let dirs = entries
        .filter_map(Result::ok)
        .filter(|e| !NOT_DATA.iter().any(|p| e.file_name().to_string_lossy().starts_with(p)))
        .map(|e| e.path())
        .collect();
    dir_size(dirs, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_bytes_count_tables_not_logs_temporary_space_or_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let files: [(&str, usize); 7] = [
            ("ib_logfile0", 100),
            ("ibtmp1", 50),
            ("mysql-bin.000001", 20),
            ("#mysql-backup-operator-checkpoint-0/000009.sst", 7),
            ("ibdata1", 10),
            ("app/t.ibd", 5),
            ("#rocksdb/000009.sst", 3),
        ];
        for (path, len) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, vec![0u8; len]).unwrap();
        }
        assert_eq!(data_bytes(dir.path()).await, 10 + 5 + 3);
        assert_eq!(data_bytes(&dir.path().join("missing")).await, 0);
    }

    #[test]
    fn binlog_names() {
        assert!(is_binlog_name("mysql-bin.000001"));
        assert!(is_binlog_name("./relay.1234567"));
        assert!(is_binlog_name("mysql-bin.index"));
        assert!(!is_binlog_name("ibdata1"));
        assert!(!is_binlog_name("app/t.ibd"));
        assert!(!is_binlog_name("aria_log.00000001"));
        assert!(!is_binlog_name("aria_log_control"));
    }
}
