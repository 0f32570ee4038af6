//! A restore drill: restore a backup (or a point in time) into scratch space, start a private server on
//! it, check every table and the server's position (see [`crate::datapath::drill`]), stop it cleanly,
//! remove the scratch data, and store the outcome beside the backup without touching its manifest.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use jiff::Timestamp;

use crate::agent::scratch::Scratch;
use crate::agent::{AgentError, ArchiveChoice, error_chain};
use crate::datapath::drill::{self, Checked};
use crate::datapath::pitr::{Target, Tools};
use crate::format::drill::{
    DRILL_FORMAT_VERSION, DrillDurations, DrillOutcome, DrillRecord, LISTED_TABLES, PositionCheck, PositionSource,
};
use crate::format::manifest::MethodKind;
use crate::format::summary::Summary;
use crate::mysql::position::{GtidState, Positions};
use crate::mysql::private_server::{PrivateServer, PrivateServerOptions};
use crate::storage::{Storage, StorageError};

/// What to drill.
#[derive(Debug, Clone)]
pub enum DrillTarget {
    /// A backup id, or `latest` (the newest backup that restores on its own).
    Backup(String),
    /// A point in time, as `restore --until` restores it.
    Until { target: Target, archive: ArchiveChoice, force: bool },
}

/// How to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The scratch data goes into a new directory under this one, removed at the end.
    pub scratch: PathBuf,
    /// Chunks downloaded at once.
    pub parallel: usize,
    /// `mariadb-backup`, for the prepare step.
    pub mariabackup_tool: String,
    /// The server and replay tools.
    pub tools: Tools,
    /// Interval of progress log lines.
    pub progress_interval: Duration,
}

/// What a restore left for the checks.
struct Restored {
    backup_id: String,
    method: MethodKind,
    positions: Positions,
    until: Option<String>,
}

/// Runs a drill of `target`. A drill that fails stores its record too, then returns
/// [`AgentError::DrillFailed`] with the reason.
pub async fn drill(storage: &Storage, target: &DrillTarget, opts: &DrillOptions) -> Result<Summary, AgentError> {
    let started_at = Timestamp::now();
    let clock = Instant::now();
    let backup_id = match target {
        DrillTarget::Backup(wanted) => Some(resolve(storage, wanted).await?),
        DrillTarget::Until { .. } => None,
    };
    let needed = match &backup_id {
        Some(id) => {
            let manifest = storage.read_manifest(id).await?;
            // Refused, not failed: an incremental is drilled through a point in time.
            if manifest.method == MethodKind::Binlog {
                return Err(AgentError::Incremental(id.clone()));
            }
            manifest.totals.data_bytes
        }
        None => 0,
    };
    let scratch = Scratch::new(&opts.scratch, "drill", needed)?;
    tracing::info!(backup = ?backup_id, scratch = %scratch.path().display(), "drill starting");
    let mut durations = DrillDurations::default();
    let mut outcome = DrillOutcome {
        backup_id: backup_id.clone().unwrap_or_default(),
        until: None,
        passed: false,
        reason: None,
        started_at,
        completed_at: started_at,
        server_version: None,
        tables_checked: 0,
        engines: Default::default(),
        rows: 0,
        failed_tables: Vec::new(),
        position: None,
        scratch_bytes: 0,
        durations: DrillDurations::default(),
    };
    let result = run(storage, target, backup_id.as_deref(), opts, &scratch, &mut outcome, &mut durations).await;
    outcome.scratch_bytes = scratch.bytes().await;
    scratch.remove().await;
    let tables = match result {
        Ok(checked) => {
            outcome.tables_checked = checked.counts.len() as u64;
            outcome.engines = checked.engines;
            outcome.rows = checked.rows;
            outcome.reason = verdict(&checked.failed, outcome.position.as_ref());
            outcome.passed = outcome.reason.is_none();
            outcome.failed_tables = checked.failed.into_iter().take(LISTED_TABLES).collect();
            checked.counts
        }
        // A point in time that no backup reaches: there is no backup to keep a record beside.
        Err(e) if outcome.backup_id.is_empty() => return Err(e),
        Err(e) => {
            outcome.reason = Some(error_chain(&e));
            Vec::new()
        }
    };
    durations.total_seconds = clock.elapsed().as_secs_f64();
    outcome.durations = durations;
    outcome.completed_at = Timestamp::now();
    let record = DrillRecord { format_version: DRILL_FORMAT_VERSION, outcome: outcome.clone(), tables };
    storage.write_drill(&record).await?;
    tracing::info!(
        backup_id = %outcome.backup_id,
        passed = outcome.passed,
        tables = outcome.tables_checked,
        rows = outcome.rows,
        seconds = outcome.durations.total_seconds,
        "drill complete"
    );
    match outcome.reason {
        Some(reason) => Err(AgentError::DrillFailed { backup: outcome.backup_id, reason }),
        None => Ok(Summary::Drill {
            storage: storage.url().to_string(),
            outcome,
            peak_rss_bytes: Some(crate::agent::memory::peak_rss_bytes()),
            memory: Some(crate::agent::memory::peaks()),
        }),
    }
}

/// The id `wanted` names: `latest` is the newest backup that restores on its own.
async fn resolve(storage: &Storage, wanted: &str) -> Result<String, AgentError> {
    if wanted != "latest" {
        return Ok(storage.resolve_backup(wanted).await?);
    }
    match storage.newest_manifest(|m| m.method != MethodKind::Binlog).await? {
        Some((id, _)) => Ok(id),
        None => Err(StorageError::BackupNotFound {
            url: storage.url().to_string(),
            what: "no complete backup found".to_string(),
        }
        .into()),
    }
}

/// Why a drill whose checks ran failed, if it did.
fn verdict(failed: &[crate::format::drill::TableProblem], position: Option<&PositionCheck>) -> Option<String> {
    if let Some(first) = failed.first() {
        let more = match failed.len() {
            1 => String::new(),
            n => format!(" (and {} more table(s))", n - 1),
        };
        return Some(format!("CHECK TABLE {}: {}{more}", first.table, first.message));
    }
    match position {
        Some(p) if !p.matches => Some(format!(
            "the restored server's position ({}) is {:?}, which does not agree with the manifest's {:?}",
            source_name(p.source),
            p.server,
            p.manifest
        )),
        _ => None,
    }
}

fn source_name(source: PositionSource) -> &'static str {
    match source {
        PositionSource::BinaryLogs => "from its binary logs",
        PositionSource::Innodb => "InnoDB's last binary-log coordinate",
        PositionSource::ReplicaPosition => "gtid_slave_pos",
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    storage: &Storage,
    target: &DrillTarget,
    backup_id: Option<&str>,
    opts: &DrillOptions,
    scratch: &Scratch,
    outcome: &mut DrillOutcome,
    durations: &mut DrillDurations,
) -> Result<Checked, AgentError> {
    let (datadir, work) = (scratch.datadir.clone(), scratch.work.clone());
    let restore_opts = scratch.restore_options(opts.parallel, &opts.mariabackup_tool);
    let clock = Instant::now();
    let summary = match target {
        DrillTarget::Backup(wanted) => {
            let id = backup_id.unwrap_or(wanted);
            crate::agent::restore(storage, id, &restore_opts, opts.progress_interval).await?
        }
        DrillTarget::Until { target, archive, force } => {
            let (archive, force) = (archive.clone(), *force);
            let interval = opts.progress_interval;
            crate::agent::restore_until(storage, target, &restore_opts, &opts.tools, interval, archive, force).await?
        }
    };
    let Summary::Restore { backup_id, method, positions, until, .. } = summary else {
        return Err(AgentError::DrillFailed {
            backup: outcome.backup_id.clone(),
            reason: "the restore reported no restore".into(),
        });
    };
    let restored = Restored { backup_id, method, positions, until: until.map(|u| u.target) };
    outcome.backup_id = restored.backup_id.clone();
    outcome.until = restored.until.clone();
    durations.restore_seconds = clock.elapsed().as_secs_f64();

    let (check, extra_args) = position_check_for(&restored, &datadir, &work)?;
    let clock = Instant::now();
    let mut server = PrivateServer::start(&PrivateServerOptions {
        tool: opts.tools.server.clone(),
        datadir: datadir.clone(),
        work: work.clone(),
        extra_args,
    })
    .await
    .map_err(drill::DrillError::from)?;
    durations.start_seconds = clock.elapsed().as_secs_f64();
    outcome.server_version =
        Some(crate::mysql::private_server::version(&server).await.map_err(drill::DrillError::from)?);

    let clock = Instant::now();
    let tables = drill::inventory(&server).await?;
    tracing::info!(tables = tables.len(), "checking every table");
    let checked = drill::check_tables(&mut server, &tables).await?;
    durations.check_seconds = clock.elapsed().as_secs_f64();
    if let Some((source, expected)) = check {
        match drill::server_position(&server, source, &datadir).await? {
            Some(found) => outcome.position = Some(drill::compare_position(source, &found, &expected)),
            None => tracing::warn!(?source, "the restored data records no position: not compared"),
        }
    }

    let clock = Instant::now();
    server.shutdown().await.map_err(drill::DrillError::from)?;
    durations.stop_seconds = clock.elapsed().as_secs_f64();
    Ok(checked)
}

/// Where a restored server's position is read from, and the manifest's it is compared with.
type Expected = (PositionSource, String);

/// Where the restored server's position is read from, what it must equal, and the server options that
/// make it readable.
fn position_check_for(
    restored: &Restored,
    datadir: &Path,
    work: &Path,
) -> Result<(Option<Expected>, Vec<String>), AgentError> {
    let Some(GtidState::Mariadb { binlog_pos, .. }) = &restored.positions.gtid else {
        return Ok((None, Vec::new()));
    };
    if restored.until.is_some() || restored.method == MethodKind::Catchup {
        return Ok((Some((PositionSource::ReplicaPosition, binlog_pos.to_string())), Vec::new()));
    }
    match (restored.method, &restored.positions.binlog) {
        (MethodKind::Mariabackup, Some(coordinate)) => {
            Ok((Some((PositionSource::Innodb, coordinate.to_string())), Vec::new()))
        }
        (MethodKind::Cold, Some(coordinate)) if datadir.join(&coordinate.file).is_file() => {
            // The server reads its GTID state from the restored binary logs, through an index of our own
            // (the restored one may name the source's paths).
            let base = coordinate.file.rsplit_once('.').map(|(b, _)| b).unwrap_or(&coordinate.file);
            let mut logs: Vec<String> = std::fs::read_dir(datadir)
                .map_err(|source| AgentError::WorkDir { dir: datadir.to_path_buf(), source })?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.strip_prefix(base)
                        .and_then(|s| s.strip_prefix('.'))
                        .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect();
            logs.sort();
            let index = work.join("drill-bin.index");
            let body: String = logs.iter().map(|l| format!("{}\n", datadir.join(l).display())).collect();
            std::fs::write(&index, body).map_err(|source| AgentError::WorkDir { dir: work.to_path_buf(), source })?;
            let server_id = restored.positions.server_id.unwrap_or(1);
            let args = vec![
                format!("--log-bin={}", datadir.join(base).display()),
                format!("--log-bin-index={}", index.display()),
                format!("--server-id={server_id}"),
            ];
            Ok((Some((PositionSource::BinaryLogs, binlog_pos.to_string())), args))
        }
        _ => Ok((None, Vec::new())),
    }
}
