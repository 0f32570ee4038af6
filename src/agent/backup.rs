//! Taking a backup: run a method into the chunk pipeline, then write the manifest last, under the
//! lock that keeps a chunk sweep away; and finding what an incremental builds on.

use std::time::Duration;

use jiff::Timestamp;

use crate::agent::{AgentError, peak_rss_bytes};
use crate::datapath::chunk::writer::{ChunkParams, ChunkWriter};
use crate::datapath::method::BackupMethod;
use crate::datapath::progress::Progress;
use crate::format::manifest::{Chunking, Manifest, new_backup_id};
use crate::format::summary::Summary;
use crate::gc::lock::Lock;
use crate::storage::Storage;

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

/// Takes a backup with `method` into `storage`. The manifest is written after every chunk is stored;
/// if anything fails before, no manifest exists and the backup does not exist.
pub async fn backup<M: BackupMethod>(
    method: &M,
    storage: &Storage,
    settings: BackupSettings,
) -> Result<Summary, AgentError> {
    let started_at = Timestamp::now();
    let backup_id = new_backup_id(started_at);
    tracing::info!(backup_id, storage = storage.url(), method = M::KIND.as_str(), "backup starting");
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
    started_at: Timestamp,
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
    let completed_at = Timestamp::now();
    let manifest = Manifest {
        format_version: M::KIND.format_version(),
        backup_id: backup_id.clone(),
        method: M::KIND,
        started_at,
        completed_at,
        positions: positions.clone(),
        chunking: Chunking {
            hash: storage.chunk_namer().algorithm().into(),
            compression: "zstd".into(),
            level: settings.chunks.level,
            chunk_size: settings.chunks.chunk_size as u64,
        },
        prepare: M::PREPARE,
        totals: totals.clone(),
        files,
        tags: settings.tags.clone(),
        incremental: settings.incremental.clone(),
        encryption: storage.encryption(),
    };
    lock.check()?;
    storage.write_manifest(&manifest).await?;
    // A write that hung past the lock's limit: a sweep may have deleted a chunk before the manifest
    // was there to keep it. The manifest goes again, so that nothing unrestorable is ever listed.
    if let Err(lost) = lock.check() {
        if let Err(e) = storage.delete(&storage.manifest_key(&backup_id)).await {
            tracing::error!(backup_id, error = %e, "could not remove the manifest of a backup whose lock was lost");
        }
        return Err(lost.into());
    }
    let duration_seconds = Timestamp::now().duration_since(started_at).as_millis() as f64 / 1000.0;
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
        memory: Some(crate::agent::memory::peaks()),
        incremental: manifest.incremental,
        catchup: None,
        encryption_key: manifest.encryption.map(|e| e.key),
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

/// The SST files of the newest backup of the server at `server` in `storage` (with a schedule among
/// `tags`, of that schedule) that holds any: what a `myrocks` backup takes over unread. "Of the server"
/// is its server id, read from it now.
pub async fn previous_myrocks_ssts(
    storage: &Storage,
    server: &crate::mysql::server::ServerConfig,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<crate::datapath::method::myrocks::KnownSsts, AgentError> {
    use mysql_async::prelude::Queryable;
    let pool = server.pool();
    let id: Result<Option<u32>, _> = async { pool.get_conn().await?.query_first("SELECT @@server_id").await }.await;
    let _ = pool.disconnect().await;
    let id = id.map_err(|source| crate::mysql::server::ServerError::Query {
        endpoint: server.endpoint(),
        operation: "reading @@server_id",
        source,
    })?;
    let schedule = tags.get(crate::format::manifest::TAG_SCHEDULE);
    for backup in storage.list_backup_ids().await?.into_iter().rev() {
        let m = storage.read_manifest(&backup).await?;
        // Chunks named under another key cannot serve a backup sealed with this one.
        let ours = m.positions.server_id == id
            && m.encryption == storage.encryption()
            && schedule.is_none_or(|s| m.tags.get(crate::format::manifest::TAG_SCHEDULE) == Some(s));
        let known = crate::datapath::method::myrocks::known_ssts(&m.files);
        if ours && !known.is_empty() {
            tracing::info!(previous = backup, ssts = known.len(), "SST files of the previous backup");
            return Ok(known);
        }
    }
    Ok(crate::datapath::method::myrocks::KnownSsts::new())
}
