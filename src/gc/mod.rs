//! Removing backups from storage: one by id (`agent delete`), or by a retention policy
//! (`agent prune`); then a mark-and-sweep of the chunks.
//!
//! A backup stops existing the moment its manifest is deleted, so that goes first and a listed backup
//! never has a chunk missing. The sweep then lists every manifest (mark) and deletes every chunk none of
//! them references (sweep) — the chunks of the deleted backups, and those an interrupted backup left.
//! It runs under the storage lock of [`crate::gc::lock`]: while a backup runs, the sweep defers rather than
//! delete a chunk that backup may have reused or just uploaded, and a backup that starts during a sweep
//! waits for it to end before it looks at what storage holds. A deferred or interrupted sweep is
//! finished by the next one; running either command again is always safe.

pub mod lock;
pub mod retention;

use std::collections::{BTreeMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use jiff::tz::TimeZone;

use crate::format::manifest::is_backup_id;
use crate::format::summary::{DeleteOutcome, LISTED_IDS, LISTED_LOCKS, PruneOutcome, SweepOutcome, Window, listed};
use crate::gc::lock::{Lock, LockError, SweepLock};
use crate::gc::retention::{Item, Policy};
use crate::storage::{Storage, StorageError};

/// Errors of deletion and pruning.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Storage failed; running the command again resumes it.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Locking failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The id is not a backup id (`latest` is refused on purpose: a deletion names its backup).
    #[error("{0:?} is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx); deletion needs an explicit id")]
    InvalidId(String),
    /// The manifest does not exist.
    #[error("storage {url}: no backup with id {id:?} (already deleted?)")]
    NotFound { url: String, id: String },
    /// Pruning the binary-log archive failed.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

/// Chunks deleted at once.
const PARALLEL_DELETES: usize = 16;

/// Deletes every chunk no manifest references, unless a backup is running (then it defers).
pub async fn sweep(storage: &Storage) -> Result<SweepOutcome, GcError> {
    let lock = match Lock::sweep(storage).await? {
        SweepLock::Held(lock) => lock,
        SweepLock::Busy(backups) => {
            tracing::info!(running = ?backups, "backups are running: the chunk sweep waits for a later run");
            let (deferred_by, deferred_by_count) = listed(backups, LISTED_LOCKS);
            return Ok(SweepOutcome { deferred_by, deferred_by_count, ..Default::default() });
        }
    };
    let result = sweep_locked(storage, &lock).await;
    lock.release().await;
    result
}

async fn sweep_locked(storage: &Storage, lock: &Lock) -> Result<SweepOutcome, GcError> {
    // Mark.
    let mut referenced = HashSet::new();
    for id in storage.list_backup_ids().await? {
        let m = storage.read_manifest(&id).await?;
        referenced.extend(m.files.into_iter().flat_map(|f| f.chunks).map(|c| c.hash));
    }
    // Sweep.
    let chunks = storage.list_chunks().await?;
    let doomed: Vec<(crate::format::manifest::ChunkHash, u64)> =
        chunks.into_iter().filter(|(hash, _)| !referenced.contains(hash)).collect();
    let kept_chunks = referenced.len() as u64;
    let freed_bytes = doomed.iter().map(|(_, len)| len).sum();
    let deleted_chunks = doomed.len() as u64;
    lock.check()?;
    futures::stream::iter(doomed)
        .map(|(hash, _)| async move {
            lock.check()?;
            storage.delete_chunk(&hash).await.map_err(GcError::from)
        })
        .buffer_unordered(PARALLEL_DELETES)
        .try_collect::<()>()
        .await?;
    tracing::info!(deleted_chunks, freed_bytes, kept_chunks, "chunk sweep done");
    Ok(SweepOutcome { deleted_chunks, freed_bytes, kept_chunks, ..Default::default() })
}

/// Deletes backup `id` from `storage`, then sweeps. With `ignore_missing`, a backup that is already
/// gone is a success (`alreadyDeleted`) and the sweep still runs, which finishes an interrupted deletion.
pub async fn delete(storage: &Storage, id: &str, ignore_missing: bool) -> Result<DeleteOutcome, GcError> {
    if !is_backup_id(id) {
        return Err(GcError::InvalidId(id.to_string()));
    }
    let key = storage.manifest_key(id);
    let already_deleted = storage.get_opt(&key).await?.is_none();
    if already_deleted && !ignore_missing {
        return Err(GcError::NotFound { url: storage.url().to_string(), id: id.to_string() });
    }
    if !already_deleted {
        storage.delete(&key).await?;
        tracing::info!(backup_id = id, "manifest deleted; the backup is no longer listed");
    }
    // Its drill record goes with it (also when an interrupted deletion is run again).
    storage.delete(&storage.drill_key(id)).await?;
    Ok(DeleteOutcome { already_deleted, sweep: sweep(storage).await? })
}

/// Applies `policy` to the backups in `storage` whose manifest carries every tag in `tags`, with
/// calendar periods read in `tz`: deletes the manifests the policy drops, then sweeps. `dry` only plans.
pub async fn prune(
    storage: &Storage,
    policy: &Policy,
    tz: &TimeZone,
    tags: &BTreeMap<String, String>,
    archive: Option<&str>,
    dry: bool,
) -> Result<PruneOutcome, GcError> {
    let mut items = Vec::new();
    let mut fulls = BTreeMap::new();
    for id in storage.list_backup_ids().await? {
        let m = storage.read_manifest(&id).await?;
        if !tags.iter().all(|(k, v)| m.tags.get(k) == Some(v)) {
            continue;
        }
        let time = m.completed_at;
        if m.incremental.is_none()
            && let Some(gtid) = m.positions.gtid.clone()
        {
            fulls.insert(id.clone(), (m.completed_at, gtid));
        }
        items.push(Item { id, time, base: m.incremental.and_then(|i| i.base) });
    }
    let plan = retention::plan(&items, policy, tz, jiff::Timestamp::now());
    let kept_times: Vec<_> = items.iter().filter(|i| plan.keep.contains_key(&i.id)).map(|i| i.time).collect();
    let window = match (kept_times.iter().min(), kept_times.iter().max()) {
        (Some(from), Some(to)) => Some(Window { from: *from, to: *to }),
        _ => None,
    };
    if !dry {
        for id in &plan.delete {
            storage.delete(&storage.manifest_key(id)).await?;
            storage.delete(&storage.drill_key(id)).await?;
            tracing::info!(backup_id = %id, "pruned");
        }
    }
    let sweep = if dry { None } else { Some(sweep(storage).await?) };
    // Archive segments the oldest kept full backup already holds serve no kept backup.
    let oldest_full = plan.keep.keys().filter_map(|id| fulls.get(id)).min_by_key(|(at, _)| *at);
    let archive_segments_deleted = match (archive, oldest_full) {
        (Some(name), Some((_, from))) => Some(crate::archive::prune_before(storage, name, from, dry).await?),
        (Some(_), None) => Some(0),
        (None, _) => None,
    };
    Ok(PruneOutcome {
        archive_segments_deleted,
        considered: items.len() as u64,
        kept: plan.keep.len() as u64,
        deleted_count: plan.delete.len() as u64,
        deleted: plan.delete.into_iter().take(LISTED_IDS).collect(),
        window,
        sweep,
    })
}
