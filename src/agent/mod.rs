//! The agent's operations as the command line and Jobs run them: backup, list, verify, restore, delete,
//! prune. Each
//! returns a [`Summary`] — the small JSON document printed at the end and, when asked, written to a
//! file (a Job's termination-message path) for the controller to read.

use std::{path::PathBuf, sync::Arc, time::Duration};

use jiff::Timestamp;
use serde::Serialize;

use crate::datapath::chunk::writer::ChunkWriteError;
use crate::datapath::method::MethodError;
use crate::datapath::progress::Progress;
use crate::datapath::restore::{RestoreError, RestoreOptions};
use crate::format::manifest::MethodKind;
use crate::format::summary::Damage;
use crate::format::summary::{PitrSummary, Summary};
use crate::mysql::position::Positions;
use crate::storage::{Storage, StorageError};

mod archive_report;
mod backup;
mod catchup;
mod drill;
pub mod memory;
mod scratch;
mod until;

pub use archive_report::{ArchiveReport, archive_status};
pub use backup::{BackupSettings, backup, incremental_from, previous_myrocks_ssts};
pub use catchup::{CatchupOptions, catchup};
pub use drill::{DrillOptions, DrillTarget, drill};
pub use until::{ArchiveChoice, restore_until};

/// Errors of agent operations.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An encryption key could not be read.
    #[error(transparent)]
    Encryption(#[from] crate::encryption::EncryptionError),
    /// The backup method failed.
    #[error(transparent)]
    Method(#[from] MethodError),
    /// The chunk pipeline failed.
    #[error(transparent)]
    Chunks(#[from] ChunkWriteError),
    /// Restore failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Verification found damage.
    #[error("backup {backup} is damaged: {}", describe_damage(.damaged))]
    Damaged { backup: String, damaged: Vec<Damage> },
    /// Point-in-time restore failed.
    #[error(transparent)]
    Pitr(#[from] crate::datapath::pitr::PitrError),
    /// A work directory could not be made.
    #[error("creating a work directory in {dir}: {source}")]
    WorkDir { dir: PathBuf, source: std::io::Error },
    /// The start of an incremental cannot be determined.
    #[error("--from: {0}")]
    From(String),
    /// A backup cannot be restored on its own.
    #[error(
        "backup {0} is an incremental (binary logs); restore the full backup it builds on, or a point in time \
         with --until"
    )]
    Incremental(String),
    /// The binary-log archive failed.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The archiver failed.
    #[error(transparent)]
    Archiver(#[from] crate::archive::archiver::ArchiverError),
    /// The archive has gaps (reported by `agent binlog status`).
    #[error("the archive has {0} gap(s)")]
    ArchiveHasGaps(usize),
    /// The storage holds several archives and none was named.
    #[error("storage {storage} holds several binary-log archives ({}); name one with --archive", .names.join(", "))]
    WhichArchive { storage: String, names: Vec<String> },
    /// Deleting or pruning failed.
    #[error(transparent)]
    Gc(#[from] crate::gc::GcError),
    /// The retention policy is invalid.
    #[error("{}", .0.cli_message())]
    Retention(crate::gc::retention::PolicyError),
    /// The time zone is unknown.
    #[error("--time-zone {zone:?} is not an IANA time zone: {reason}")]
    TimeZone { zone: String, reason: String },
    /// The storage lock failed.
    #[error(transparent)]
    Lock(#[from] crate::gc::lock::LockError),
    /// A required option is missing.
    #[error("{needed_by} needs {option}")]
    MissingOption { option: &'static str, needed_by: &'static str },
    /// The server connection settings are wrong.
    #[error(transparent)]
    Server(#[from] crate::mysql::server::ServerError),
    /// Copying the binary failed.
    #[error("installing the binary into {dir}: {source}")]
    Install { dir: PathBuf, source: std::io::Error },
    /// A drill's checks could not run to the end.
    #[error(transparent)]
    Drill(#[from] crate::datapath::drill::DrillError),
    /// A restore drill failed (its record is stored beside the backup).
    #[error("drill of backup {backup} failed: {reason}")]
    DrillFailed { backup: String, reason: String },
    /// A catch-up backup has nothing to catch up from.
    #[error(
        "a catch-up backup starts from a full backup, and {storage} holds none: take one with --method \
         mariabackup or cold first"
    )]
    NoBaseForCatchup { storage: String },
    /// A catch-up backup cannot be taken of this server or from this backup.
    #[error("catch-up backup: {0}")]
    CatchupUnsupported(String),
    /// Replication of a catch-up backup failed.
    #[error(transparent)]
    Replica(#[from] crate::mysql::replica::ReplicaError),
    /// The scratch space cannot hold the restored data.
    #[error("scratch space {dir} has {free} bytes free; the backup needs {needed}")]
    ScratchTooSmall { dir: PathBuf, free: u64, needed: u64 },
    /// Writing the summary file failed.
    #[error("writing summary file {path}: {source}")]
    SummaryFile { path: PathBuf, source: std::io::Error },
}

/// The error and its causes, one per clause (a cause already quoted by its error is not repeated).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn describe_damage(damaged: &[Damage]) -> String {
    let mut files: Vec<&str> = damaged.iter().map(|d| d.path.as_str()).collect();
    files.dedup();
    let first = damaged.first().map(|d| d.reason.as_str()).unwrap_or("");
    format!("{} damaged chunk(s) in {} (first: {first})", damaged.len(), files.join(", "))
}

/// Deletes backup `id`, then sweeps the chunks no backup references.
pub async fn delete(storage: &Storage, id: &str, ignore_missing: bool) -> Result<Summary, AgentError> {
    let started = std::time::Instant::now();
    let outcome = crate::gc::delete(storage, id, ignore_missing).await?;
    Ok(Summary::Delete {
        backup_id: id.to_string(),
        storage: storage.url().to_string(),
        outcome,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Applies a retention policy to the backups carrying `tags`, then sweeps, and deletes the segments of
/// `archive` no kept backup needs; `dry` only reports.
pub async fn prune(
    storage: &Storage,
    policy: &crate::gc::retention::Policy,
    tz: &jiff::tz::TimeZone,
    tags: &std::collections::BTreeMap<String, String>,
    archive: Option<&str>,
    dry: bool,
) -> Result<Summary, AgentError> {
    let started = std::time::Instant::now();
    let outcome = crate::gc::prune(storage, policy, tz, tags, archive, dry).await?;
    Ok(Summary::Prune {
        storage: storage.url().to_string(),
        dry_run: dry,
        outcome,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

pub use memory::peak_rss_bytes;

/// Raises this process's soft limit of open files to its hard limit, as servers do: a container
/// often starts with a soft limit of 1024 and a far higher hard one. Returns the limit now in force.
/// The data path holds a bounded number of files open whatever the datadir's shape; the headroom is
/// for the tools it runs (`mariadb-backup` opens tablespaces by the thousand).
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 0 };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::debug!(from = soft, to = hard, "raised the open-files limit");
                return hard;
            }
            Err(e) => tracing::debug!(soft, hard, error = %e, "could not raise the open-files limit"),
        }
    }
    soft
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedBackup {
    /// Backup id.
    pub backup_id: String,
    /// Start time.
    pub started_at: Timestamp,
    /// Method.
    pub method: MethodKind,
    /// Original data bytes.
    pub data_bytes: u64,
    /// Stored bytes of the backup's distinct chunks.
    pub stored_bytes: u64,
    /// Positions at the consistent point.
    pub positions: Positions,
    /// The backup's last restore drill, if it was drilled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<crate::format::drill::DrillOutcome>,
    /// The fingerprint of the key that encrypted it, if it is encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<crate::encryption::Fingerprint>,
}

/// Lists complete backups, oldest first.
pub async fn list(storage: &Storage) -> Result<Vec<ListedBackup>, AgentError> {
    let mut out = Vec::new();
    for id in storage.list_backup_ids().await? {
        let m = storage.read_manifest(&id).await?;
        let last_drill = storage.read_drill(&id).await?.map(|d| d.outcome);
        out.push(ListedBackup {
            last_drill,
            encryption_key: m.encryption.map(|e| e.key),
            backup_id: m.backup_id,
            started_at: m.started_at,
            method: m.method,
            data_bytes: m.totals.data_bytes,
            stored_bytes: m.totals.stored_bytes,
            positions: m.positions,
        });
    }
    Ok(out)
}

/// Verifies backup `wanted` (an id or `latest`); damage is an error naming the files.
pub async fn verify(
    storage: &Storage,
    wanted: &str,
    parallel: usize,
    progress_interval: Duration,
) -> Result<Summary, AgentError> {
    let started = std::time::Instant::now();
    let id = storage.resolve_backup(wanted).await?;
    let manifest = storage.read_manifest(&id).await?;
    let progress = Progress::new(manifest.totals.data_bytes);
    let reporter = progress.report("verify", progress_interval);
    let report = crate::datapath::verify::verify(storage, &manifest, parallel, progress).await?;
    reporter.stop();
    if !report.damaged.is_empty() {
        return Err(AgentError::Damaged { backup: id, damaged: report.damaged });
    }
    Ok(Summary::Verify {
        backup_id: id,
        storage: storage.url().to_string(),
        report,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Restores backup `wanted` (an id or `latest`).
pub async fn restore(
    storage: &Storage,
    wanted: &str,
    opts: &RestoreOptions,
    progress_interval: Duration,
) -> Result<Summary, AgentError> {
    let started = std::time::Instant::now();
    // `latest` is the newest backup that restores on its own: incrementals are skipped.
    let (id, manifest) = if wanted == "latest" {
        let found = storage.newest_manifest(|m| m.method != MethodKind::Binlog).await?;
        match found {
            Some(f) => f,
            None => {
                let what = "no complete backup found".to_string();
                return Err(StorageError::BackupNotFound { url: storage.url().to_string(), what }.into());
            }
        }
    } else {
        let id = storage.resolve_backup(wanted).await?;
        let m = storage.read_manifest(&id).await?;
        (id, m)
    };
    if manifest.method == MethodKind::Binlog {
        return Err(AgentError::Incremental(id));
    }
    tracing::info!(backup_id = id, datadir = %opts.datadir.display(), "restore starting");
    let progress = Progress::new(manifest.totals.data_bytes);
    let reporter = progress.report("restore", progress_interval);
    let outcome = crate::datapath::restore::restore(storage, &manifest, opts, Arc::clone(&progress)).await;
    reporter.stop();
    let outcome = outcome?;
    tracing::info!(backup_id = id, bytes = outcome.bytes, "restore complete");
    Ok(restore_summary(storage, opts, id, manifest.method, manifest.positions, outcome, started, None))
}

/// The summary of a restore, plain or to a point in time.
#[allow(clippy::too_many_arguments)]
fn restore_summary(
    storage: &Storage,
    opts: &RestoreOptions,
    backup_id: String,
    method: MethodKind,
    positions: Positions,
    outcome: crate::datapath::restore::RestoreOutcome,
    started: std::time::Instant,
    until: Option<PitrSummary>,
) -> Summary {
    Summary::Restore {
        backup_id,
        storage: storage.url().to_string(),
        datadir: opts.datadir.clone(),
        method,
        positions,
        files: outcome.files,
        bytes: outcome.bytes,
        transfer_seconds: outcome.transfer_seconds,
        prepare_seconds: outcome.prepare_seconds,
        duration_seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        memory: Some(memory::peaks()),
        until,
    }
}
