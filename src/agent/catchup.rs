//! A catch-up backup: restore the newest full backup into scratch space, start a private server on it,
//! replicate from the source until the position the source had when the backup started, stop, and
//! take a cold copy of the scratch datadir. The source serves a replication stream and nothing else;
//! the chunks that did not change since the restored backup are not uploaded again.

use std::{path::PathBuf, time::Instant};

use crate::agent::scratch::Scratch;
use crate::agent::{AgentError, BackupSettings};
use crate::datapath::method::catchup::CatchupCopy;
use crate::datapath::method::cold::Cold;
use crate::format::manifest::{Base, Manifest, MethodKind, TAG_SCHEDULE};
use crate::format::summary::{CatchupSummary, Summary};
use crate::mysql::gtid::MariaGtidPos;
use crate::mysql::position::{Flavor, GtidState, Positions};
use crate::mysql::private_server::{PrivateServer, PrivateServerOptions};
use crate::mysql::replica::reaches;
use crate::mysql::server::{ServerConfig, read_positions};
use crate::storage::Storage;

/// How to take a catch-up backup.
#[derive(Debug, Clone)]
pub struct CatchupOptions {
    /// The server to catch up with (a replica or the primary), reached over TCP.
    pub source: ServerConfig,
    /// The scratch datadir goes into a new directory under this one, removed at the end.
    pub scratch: PathBuf,
    /// Chunks downloaded, files read at once.
    pub parallel: usize,
    /// `mariadb-backup`, to prepare a restored `mariabackup` backup.
    pub mariabackup_tool: String,
    /// `mariadbd`.
    pub server_tool: String,
    /// Server id of the private replica.
    pub replica_server_id: u32,
    /// Read size of the copy (the chunk size).
    pub read_size: usize,
}

/// Takes a catch-up backup (see the module documentation).
pub async fn catchup(
    storage: &Storage,
    opts: &CatchupOptions,
    settings: BackupSettings,
) -> Result<Summary, AgentError> {
    // Refused before anything is restored: a replica reaches its source over TCP only.
    if opts.source.socket.is_some() {
        return Err(crate::mysql::replica::ReplicaError::SocketSource { endpoint: opts.source.endpoint() }.into());
    }
    let pool = opts.source.pool();
    let source = read_positions(&pool, &opts.source).await;
    let _ = pool.disconnect().await;
    let source = source?;
    let target = match (&source.flavor, &source.gtid) {
        (Some(Flavor::Mariadb), Some(GtidState::Mariadb { binlog_pos, .. })) => binlog_pos.clone(),
        _ => {
            return Err(AgentError::CatchupUnsupported(format!(
                "the source {} is not a MariaDB server with binary logs",
                opts.source.endpoint()
            )));
        }
    };
    let (base_id, base, from) = base_for(storage, settings.tags.get(TAG_SCHEDULE), &target).await?;
    tracing::info!(base = %base_id, %from, %target, source = %opts.source.endpoint(), "catch-up backup starting");

    let scratch = Scratch::new(&opts.scratch, "catchup", base.totals.data_bytes)?;
    let (datadir, work) = (scratch.datadir.clone(), scratch.work.clone());

    let clock = Instant::now();
    let restore_opts = scratch.restore_options(opts.parallel, &opts.mariabackup_tool);
    crate::agent::restore(storage, &base_id, &restore_opts, settings.progress_interval).await?;
    remove_stale_files(&datadir, &base)?;
    let restore_seconds = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let server = PrivateServer::start(&PrivateServerOptions {
        tool: opts.server_tool.clone(),
        datadir: datadir.clone(),
        work: work.clone(),
        extra_args: crate::mysql::replica::replica_server_args(&work, opts.replica_server_id),
    })
    .await
    .map_err(crate::mysql::replica::ReplicaError::from)?;
    let caught_up =
        crate::mysql::replica::catch_up(&server, &opts.source, &from, &target, settings.progress_interval).await;
    let stopped = server.shutdown().await;
    let reached = caught_up?;
    stopped.map_err(crate::mysql::replica::ReplicaError::from)?;
    let replication_seconds = clock.elapsed().as_secs_f64();

    let positions = Positions {
        flavor: Some(Flavor::Mariadb),
        version: source.version.clone(),
        server_id: source.server_id,
        server_uuid: None,
        gtid: Some(GtidState::Mariadb { binlog_pos: reached.clone(), current_pos: None, purged: None }),
        binlog: None,
    };
    let copy = CatchupCopy {
        cold: Cold {
            datadir: datadir.clone(),
            binlog_dir: None,
            force: false,
            parallel: opts.parallel,
            read_size: opts.read_size,
        },
        positions,
    };
    let mut summary = crate::agent::backup(&copy, storage, settings).await?;
    if let Summary::Backup { catchup, .. } = &mut summary {
        *catchup = Some(CatchupSummary {
            base: base_id,
            source: opts.source.endpoint(),
            from: from.to_string(),
            reached: reached.to_string(),
            read_datadir: datadir,
            restore_seconds,
            replication_seconds,
        });
    }
    scratch.remove().await;
    Ok(summary)
}

/// The full backup to start from: the newest of the schedule (with a schedule tag), else the newest
/// one whose position the source has reached — a backup of this server's history, not another's.
async fn base_for(
    storage: &Storage,
    schedule: Option<&String>,
    target: &MariaGtidPos,
) -> Result<(String, Manifest, MariaGtidPos), AgentError> {
    let mut fulls = Vec::new();
    for id in storage.list_backup_ids().await?.into_iter().rev() {
        let m = storage.read_manifest(&id).await?;
        if m.method == MethodKind::Binlog {
            continue;
        }
        if let Some(GtidState::Mariadb { binlog_pos, .. }) = m.positions.gtid.clone() {
            fulls.push((id, m, binlog_pos));
        }
    }
    if fulls.is_empty() {
        return Err(AgentError::NoBaseForCatchup { storage: storage.url().to_string() });
    }
    let ours = |m: &Manifest| schedule.is_some_and(|s| m.tags.get(TAG_SCHEDULE) == Some(s));
    let pick =
        fulls.iter().position(|(_, m, _)| ours(m)).or_else(|| fulls.iter().position(|(_, _, p)| reaches(target, p)));
    match pick {
        Some(i) => Ok(fulls.swap_remove(i)),
        None => Err(AgentError::CatchupUnsupported(format!(
            "no full backup in {} lies in the source's history (its position {target} reaches none of theirs)",
            storage.url()
        ))),
    }
}

/// Removes what the restored backup carries that the caught-up datadir no longer stands for: its binary
/// logs (the new backup's position is replication's) and the backup tool's position files.
fn remove_stale_files(datadir: &std::path::Path, base: &Manifest) -> Result<(), AgentError> {
    let binlog_base = base.positions.binlog.as_ref().and_then(|c| c.file.rsplit_once('.').map(|(b, _)| b.to_string()));
    let stale = |name: &str| {
        name.starts_with("mariadb_backup_")
            || name.starts_with("xtrabackup_")
            || binlog_base.as_deref().is_some_and(|b| name.strip_prefix(b).is_some_and(|s| s.starts_with('.')))
    };
    let mut doomed: Vec<PathBuf> =
        base.files.iter().filter(|f| f.base == Base::BinlogDir).map(|f| datadir.join(&f.path)).collect();
    let entries =
        std::fs::read_dir(datadir).map_err(|source| AgentError::WorkDir { dir: datadir.to_path_buf(), source })?;
    doomed.extend(entries.filter_map(|e| e.ok()).filter(|e| stale(&e.file_name().to_string_lossy())).map(|e| e.path()));
    for path in doomed {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed a stale file of the restored backup"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(AgentError::WorkDir { dir: path, source }),
        }
    }
    Ok(())
}
