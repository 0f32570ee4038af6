//! Backup methods: the ways of reading a consistent copy of a server's files. Each method feeds files
//! into the shared chunk pipeline and reports the replication positions of its consistent point; the
//! rest of the data path (storage, manifest, restore) does not know which method ran.
//!
//! Methods to come (clone, snapshot, myrocks, xtrabackup, binlog) implement [`BackupMethod`] too.

use std::path::PathBuf;

use crate::{
    binlog_file::BinlogFileError,
    chunk_writer::{ChunkWriteError, ChunkWriter},
    manifest::{MethodKind, Prepare},
    mbstream::MbstreamError,
    position::Positions,
    server::ServerError,
};

pub mod cold;
pub mod mariabackup;

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
    /// Talking to the server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The chunk pipeline failed.
    #[error(transparent)]
    Chunks(#[from] ChunkWriteError),
}

/// A way of taking a backup.
pub trait BackupMethod {
    /// The method's name in manifests.
    fn kind(&self) -> MethodKind;

    /// What restore must run after writing the files.
    fn prepare(&self) -> Prepare;

    /// Estimated bytes the backup will read, for progress (0 when unknown).
    fn estimated_bytes(&self) -> u64;

    /// Reads the files into `writer` and returns the positions at the consistent point.
    fn run(&self, writer: &ChunkWriter) -> impl std::future::Future<Output = Result<Positions, MethodError>> + Send;
}

/// Total size of regular files under `dir` (for progress estimates; errors count as 0).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
