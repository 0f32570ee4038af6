//! The agent's operations as the command line and Jobs run them: backup, list, verify, restore, delete,
//! prune. Each
//! returns a [`Summary`] — the small JSON document printed at the end and, when asked, written to a
//! file (a Job's termination-message path) for the controller to read.

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::datapath::chunk::writer::{ChunkParams, ChunkWriteError, ChunkWriter};
use crate::datapath::method::{BackupMethod, MethodError};
use crate::datapath::progress::Progress;
use crate::datapath::restore::{RestoreError, RestoreOptions};
use crate::format::manifest::{Chunking, FORMAT_VERSION, Manifest, MethodKind, new_backup_id};
use crate::format::summary::Damage;
use crate::format::summary::{PitrSummary, Summary};
use crate::gc::lock::Lock;
use crate::mysql::position::Positions;
use crate::storage::{Storage, StorageError};

/// Errors of agent operations.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
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
    /// Writing the summary file failed.
    #[error("writing summary file {path}: {source}")]
    SummaryFile { path: PathBuf, source: std::io::Error },
}

fn describe_damage(damaged: &[Damage]) -> String {
    let mut files: Vec<&str> = damaged.iter().map(|d| d.path.as_str()).collect();
    files.dedup();
    let first = damaged.first().map(|d| d.reason.as_str()).unwrap_or("");
    format!("{} damaged chunk(s) in {} (first: {first})", damaged.len(), files.join(", "))
}

/// Settings shared by the operations that write backups.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Tags recorded in the manifest.
    pub tags: std::collections::BTreeMap<String, String>,
    /// For an incremental: what it builds on.
    pub incremental: Option<crate::format::manifest::Incremental>,
    /// Chunking parameters.
    pub chunks: ChunkParams,
    /// Interval of progress log lines when not on a terminal.
    pub progress_interval: Duration,
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

/// Which binary-log archive a point-in-time restore may replay.
#[derive(Debug, Clone)]
pub enum ArchiveChoice {
    /// This one.
    Named(String),
    /// The storage's only archive, if it has exactly one; none if it has none.
    Auto,
    /// None: incrementals only.
    None,
}

/// Restores to a point in time: the newest full backup before `target`, then a replay of the
/// incrementals' binary logs and of the archive's segments up to and including it (see
/// [`crate::datapath::pitr`]). Gaps in the archive are crossed only with `force`.
pub async fn restore_until(
    storage: &Storage,
    target: &crate::datapath::pitr::Target,
    opts: &RestoreOptions,
    tools: &crate::datapath::pitr::Tools,
    progress_interval: Duration,
    archive: ArchiveChoice,
    force: bool,
) -> Result<Summary, AgentError> {
    let started = std::time::Instant::now();
    let mut manifests = Vec::new();
    for id in storage.list_backup_ids().await? {
        manifests.push(storage.read_manifest(&id).await?);
    }
    let archive = match archive {
        ArchiveChoice::Named(name) => Some(name),
        ArchiveChoice::None => None,
        ArchiveChoice::Auto => {
            let mut names = crate::archive::list_archives(storage).await?;
            match names.len() {
                0 => None,
                1 => names.pop(),
                _ => return Err(AgentError::WhichArchive { storage: storage.url().to_string(), names }),
            }
        }
    };
    let timeline = match &archive {
        Some(name) => Some(crate::archive::read_timeline(storage, name).await?),
        None => None,
    };
    let plan =
        crate::datapath::pitr::plan_with_archive(&manifests, target, archive.as_deref().zip(timeline.as_ref()), force)?;
    let full = plan.full;
    let Some(crate::mysql::position::GtidState::Mariadb { binlog_pos: from, .. }) = full.positions.gtid.clone() else {
        return Err(AgentError::Pitr(crate::datapath::pitr::PitrError::NoFullBefore(target.to_string())));
    };
    for gap in &plan.gaps_crossed {
        tracing::warn!(%gap, "forced across a gap: its transactions are not restored");
    }
    tracing::info!(
        full = %full.backup_id,
        incrementals = plan.incrementals.len(),
        segments = plan.segments.len(),
        %target,
        "point-in-time restore starting"
    );
    let progress = Progress::new(full.totals.data_bytes);
    let reporter = progress.report("restore", progress_interval);
    let outcome = crate::datapath::restore::restore(storage, full, opts, Arc::clone(&progress)).await;
    reporter.stop();
    let outcome = outcome?;

    // The binary logs, in a work directory beside the datadir (the same volume) or, where that is not
    // writable (the datadir is a volume's mount point in a container, its parent the image's), in
    // the temporary directory ($TMPDIR: the restore Job points it at a volume of its own).
    let parent = opts.datadir.parent().unwrap_or(std::path::Path::new("."));
    let work_in = |dir: &std::path::Path| {
        tempfile::Builder::new()
            .prefix(".mysql-backup-operator-replay-")
            .tempdir_in(dir)
            .map_err(|source| AgentError::WorkDir { dir: dir.to_path_buf(), source })
    };
    let work = match work_in(parent) {
        Ok(work) => work,
        Err(AgentError::WorkDir { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            let tmp = std::env::temp_dir();
            tracing::info!(parent = %parent.display(), work = %tmp.display(), "the datadir's parent is not writable: replaying from the temporary directory");
            work_in(&tmp)?
        }
        Err(e) => return Err(e),
    };
    let mut binlogs: Vec<PathBuf> = Vec::new();
    for (n, inc) in plan.incrementals.iter().enumerate() {
        let dir = work.path().join(format!("binlogs-{n}"));
        let inc_opts = RestoreOptions {
            datadir: dir.clone(),
            binlog_dir: Some(dir.clone()),
            overwrite: false,
            parallel: opts.parallel,
            mariabackup_tool: opts.mariabackup_tool.clone(),
        };
        crate::datapath::restore::restore(storage, inc, &inc_opts, Progress::new(inc.totals.data_bytes)).await?;
        for f in &inc.files {
            if !binlogs.iter().any(|b| b.file_name() == std::path::Path::new(&f.path).file_name()) {
                binlogs.push(dir.join(&f.path));
            }
        }
    }
    binlogs.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut steps = vec![crate::datapath::pitr::ReplayStep { files: binlogs.clone(), from: from.clone() }];
    if let (Some(name), Some(seg_from)) = (&archive, &plan.segments_from) {
        let mut files = Vec::new();
        for seg in &plan.segments {
            let path = work.path().join(format!("segment-{:012}.bin", seg.seq));
            crate::archive::download_segment(storage, name, seg, &path).await?;
            files.push(path);
        }
        steps.push(crate::datapath::pitr::ReplayStep { files, from: seg_from.clone() });
    }
    let replayed = crate::datapath::pitr::replay(&opts.datadir, work.path(), &steps, target, tools).await?;
    tracing::info!(reached = %replayed.reached, transactions = replayed.transactions, "point-in-time restore complete");
    let mut positions = full.positions.clone();
    positions.gtid = Some(crate::mysql::position::GtidState::Mariadb {
        binlog_pos: replayed.reached.clone(),
        current_pos: None,
        purged: None,
    });
    positions.binlog = None;
    let until = PitrSummary {
        target: target.to_string(),
        incrementals: plan.incrementals.iter().map(|m| m.backup_id.clone()).collect(),
        binlog_files: binlogs.len() as u64,
        archive: archive.filter(|_| !plan.segments.is_empty()),
        segments: plan.segments.len() as u64,
        gaps_crossed: plan.gaps_crossed.iter().map(|g| g.to_string()).collect(),
        transactions: replayed.transactions,
    };
    let (id, method) = (full.backup_id.clone(), full.method);
    Ok(restore_summary(storage, opts, id, method, positions, outcome, started, Some(until)))
}

/// An archive's extent and gaps, as `agent binlog status` reports them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    /// The archive.
    pub archive: String,
    /// The storage.
    pub storage: String,
    /// Segments with data.
    pub segments: u64,
    /// Transactions in them.
    pub transactions: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// Where the first segment starts.
    pub start: Option<crate::mysql::position::GtidState>,
    /// Where the last segment ends.
    pub end: Option<crate::mysql::position::GtidState>,
    /// Time of the first event.
    pub first_event_time: Option<DateTime<Utc>>,
    /// Time of the last event.
    pub last_event_time: Option<DateTime<Utc>>,
    /// Every gap.
    pub gaps: Vec<crate::format::archive_index::Gap>,
}

impl ArchiveReport {
    /// The report for people.
    pub fn text(&self) -> String {
        let pos = |p: &Option<crate::mysql::position::GtidState>| match p {
            Some(crate::mysql::position::GtidState::Mariadb { binlog_pos, .. }) => binlog_pos.to_string(),
            Some(crate::mysql::position::GtidState::Mysql { executed, .. }) => executed.to_string(),
            None => "-".into(),
        };
        let time = |t: &Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
        let mut out = format!(
            "archive {} in {}: {} segments, {} transactions, {} bytes stored\nfrom {} ({})\nto   {} ({})\n",
            self.archive,
            self.storage,
            self.segments,
            self.transactions,
            self.stored_bytes,
            pos(&self.start),
            time(&self.first_event_time),
            pos(&self.end),
            time(&self.last_event_time),
        );
        for gap in &self.gaps {
            out.push_str(&format!("{gap}\n"));
        }
        out
    }
}

/// Reads archive `name`'s extent and gaps.
pub async fn archive_status(storage: &Storage, name: &str) -> Result<ArchiveReport, AgentError> {
    let tl = crate::archive::read_timeline(storage, name).await?;
    Ok(ArchiveReport {
        archive: name.to_string(),
        storage: storage.url().to_string(),
        segments: tl.segments.len() as u64,
        transactions: tl.segments.iter().map(|s| s.transactions).sum(),
        stored_bytes: tl.segments.iter().map(|s| s.stored_bytes).sum(),
        start: tl.segments.first().map(|s| s.start.clone()),
        end: tl.segments.last().map(|s| s.end.clone()),
        first_event_time: tl.segments.first().map(|s| s.first_event_time),
        last_event_time: tl.segments.last().map(|s| s.last_event_time),
        gaps: tl.gaps,
    })
}

/// Peak resident memory of this process so far, in bytes (0 if unknown).
pub fn peak_rss_bytes() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| u64::try_from(u.max_rss()).unwrap_or(0) * 1024)
        .unwrap_or(0)
}

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

/// Takes a backup with `method` into `storage`. The manifest is written after every chunk is stored;
/// if anything fails before, no manifest exists and the backup does not exist.
pub async fn backup<M: BackupMethod>(
    method: &M,
    storage: &Storage,
    settings: BackupSettings,
) -> Result<Summary, AgentError> {
    let started_at = Utc::now();
    let backup_id = new_backup_id(started_at);
    tracing::info!(backup_id, storage = storage.url(), method = method.kind().as_str(), "backup starting");
    // The lock comes first: from here on no sweep deletes a chunk this backup may reuse or upload.
    let lock = Lock::backup(storage, &backup_id).await?;
    let result = backup_locked(method, storage, settings, &backup_id, started_at, &lock).await;
    lock.release().await;
    result
}

async fn backup_locked<M: BackupMethod>(
    method: &M,
    storage: &Storage,
    settings: BackupSettings,
    backup_id: &str,
    started_at: DateTime<Utc>,
    lock: &Lock,
) -> Result<Summary, AgentError> {
    let backup_id = backup_id.to_string();
    let known = storage.list_chunks().await?;
    tracing::info!(chunks = known.len(), "chunks already in storage");
    let progress = Progress::new(method.estimated_bytes().await);
    let reporter = progress.report("backup", settings.progress_interval);
    let writer = ChunkWriter::new(storage.clone(), settings.chunks, known, progress.clone());
    let ran = method.run(&writer).await;
    let finished = writer.finish().await;
    reporter.stop();
    let positions = ran?;
    let (files, totals) = finished?;
    let completed_at = Utc::now();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backup_id: backup_id.clone(),
        method: method.kind(),
        started_at,
        completed_at,
        positions: positions.clone(),
        chunking: Chunking {
            hash: "blake3".into(),
            compression: "zstd".into(),
            level: settings.chunks.level,
            chunk_size: settings.chunks.chunk_size as u64,
        },
        prepare: method.prepare(),
        totals: totals.clone(),
        files,
        tags: settings.tags.clone(),
        incremental: settings.incremental.clone(),
    };
    lock.check()?;
    storage.write_manifest(&manifest).await?;
    let duration_seconds = (Utc::now() - started_at).num_milliseconds() as f64 / 1000.0;
    tracing::info!(
        backup_id,
        data_bytes = totals.data_bytes,
        uploaded_bytes = totals.uploaded_bytes,
        reused_chunks = totals.reused_chunks,
        duration_seconds,
        "backup complete"
    );
    Ok(Summary::Backup {
        backup_id: backup_id.clone(),
        storage: storage.url().to_string(),
        manifest: storage.manifest_key(&backup_id).to_string(),
        method: manifest.method,
        positions,
        totals,
        started_at,
        completed_at,
        duration_seconds,
        peak_rss_bytes: peak_rss_bytes(),
        incremental: manifest.incremental,
    })
}

/// What an incremental starting at `from` builds on: `auto` is the end of the newest backup in
/// `storage`; anything else is a GTID position (MariaDB) or set (MySQL).
///
/// With a schedule among `tags`, `auto` continues only that schedule's backups, so schedules sharing
/// a storage prefix never build on each other's.
pub async fn incremental_from(
    storage: &Storage,
    from: &str,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<crate::format::manifest::Incremental, AgentError> {
    use crate::mysql::position::GtidState;
    if from != "auto" {
        let state = if from.contains(':') {
            GtidState::Mysql { executed: from.parse().map_err(|e| AgentError::From(format!("{e}")))?, purged: None }
        } else {
            crate::mysql::binlog::range::mariadb(from).map_err(|e| AgentError::From(format!("{e}")))?
        };
        return Ok(crate::format::manifest::Incremental { base: None, from: state });
    }
    let schedule = tags.get(crate::format::manifest::TAG_SCHEDULE);
    let newest = storage
        .newest_manifest(|m| schedule.is_none_or(|s| m.tags.get(crate::format::manifest::TAG_SCHEDULE) == Some(s)))
        .await?;
    let Some((newest, manifest)) = newest else {
        return Err(AgentError::From(format!(
            "there is no backup in {} to continue from: take a full backup first, or give --from <GTID position>",
            storage.url()
        )));
    };
    let Some(state) = manifest.positions.gtid else {
        return Err(AgentError::From(format!(
            "the newest backup, {newest}, records no GTID position (binary logging or GTIDs off?); give --from"
        )));
    };
    Ok(crate::format::manifest::Incremental { base: Some(newest), from: state })
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedBackup {
    /// Backup id.
    pub backup_id: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// Method.
    pub method: MethodKind,
    /// Original data bytes.
    pub data_bytes: u64,
    /// Stored bytes of the backup's distinct chunks.
    pub stored_bytes: u64,
    /// Positions at the consistent point.
    pub positions: Positions,
}

/// Lists complete backups, oldest first.
pub async fn list(storage: &Storage) -> Result<Vec<ListedBackup>, AgentError> {
    let mut out = Vec::new();
    for id in storage.list_backup_ids().await? {
        let m = storage.read_manifest(&id).await?;
        out.push(ListedBackup {
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
    let report = crate::datapath::verify::verify(storage, &manifest, parallel, progress).await;
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
        until,
    }
}
