//! Point-in-time restore as the agent runs it: choose the backup and the binary logs (an
//! incremental chain or the archive) that reach the target, restore, then replay.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::agent::{AgentError, restore_summary};
use crate::datapath::progress::Progress;
use crate::datapath::restore::RestoreOptions;
use crate::format::summary::{PitrSummary, Summary};
use crate::storage::Storage;

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
        Some(name) => Some(crate::archive::timeline::read_timeline(storage, name).await?),
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
    let until = PitrSummary::new(
        target.to_string(),
        plan.incrementals.iter().map(|m| m.backup_id.clone()),
        binlogs.len() as u64,
        archive.filter(|_| !plan.segments.is_empty()),
        plan.segments.len() as u64,
        plan.gaps_crossed.iter().map(|g| g.to_string()),
        replayed.transactions,
    );
    let (id, method) = (full.backup_id.clone(), full.method);
    Ok(restore_summary(storage, opts, id, method, positions, outcome, started, Some(until)))
}
