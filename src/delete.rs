//! Deleting a backup from storage: its manifest, then the chunks no other backup references.
//!
//! The order keeps the guarantee that a listed backup is whole. The manifest is first copied to a
//! tombstone (`backups/<id>/deleting.json`) and then deleted, so the backup stops being listed before
//! any of its chunks goes; the chunks are deleted next, and the tombstone last. A deletion interrupted
//! at any point is finished by running it again, which reads the tombstone.
//!
//! Chunks are shared by every backup under the prefix. A chunk is deleted only when no manifest listed
//! after the backup stopped being listed references it. A backup running at the same time may have
//! found such a chunk in storage and skipped uploading it; it re-lists the chunks it reused before it
//! writes its manifest and fails if one has gone (see [`crate::agent::backup`]), so it never records a
//! backup with a missing chunk. Only a deletion that falls between that re-listing and the manifest
//! write (milliseconds) can still remove a reused chunk; `verify` finds it.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::{
    manifest::{Manifest, is_backup_id},
    storage::{Storage, StorageError},
};

/// Errors of a deletion.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// Storage failed; running the deletion again resumes it.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The id is not a backup id (`latest` is refused on purpose: a deletion names its backup).
    #[error("{0:?} is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx); deletion needs an explicit id")]
    InvalidId(String),
    /// Neither the manifest nor a tombstone exists.
    #[error("storage {url}: no backup with id {id:?} (already deleted?)")]
    NotFound { url: String, id: String },
    /// The tombstone is not a manifest.
    #[error("storage {url}: the tombstone of {id} is unreadable: {reason}")]
    Tombstone { url: String, id: String, reason: String },
}

/// What a deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOutcome {
    /// The backup was already gone (nothing to do).
    pub already_deleted: bool,
    /// Chunks deleted.
    pub deleted_chunks: u64,
    /// Stored bytes of the deleted chunks.
    pub freed_bytes: u64,
    /// Chunks of the backup kept because another backup references them.
    pub shared_chunks: u64,
}

/// Chunks deleted at once.
const PARALLEL_DELETES: usize = 16;

/// Deletes backup `id` from `storage`. With `ignore_missing`, a backup that is already gone is a
/// success (`already_deleted`), which makes a retried deletion idempotent.
pub async fn delete(storage: &Storage, id: &str, ignore_missing: bool) -> Result<DeleteOutcome, DeleteError> {
    if !is_backup_id(id) {
        return Err(DeleteError::InvalidId(id.to_string()));
    }
    let manifest_key = storage.manifest_key(id);
    let tombstone_key = storage.tombstone_key(id);
    let manifest = match storage.get_opt(&manifest_key).await? {
        Some(bytes) => {
            let manifest = Manifest::from_json(id, &bytes).map_err(StorageError::from)?;
            storage.put(&tombstone_key, bytes).await?;
            storage.delete(&manifest_key).await?;
            tracing::info!(backup_id = id, "manifest deleted; the backup is no longer listed");
            manifest
        }
        None => match storage.get_opt(&tombstone_key).await? {
            Some(bytes) => {
                tracing::info!(backup_id = id, "resuming an interrupted deletion");
                Manifest::from_json(id, &bytes).map_err(|e| DeleteError::Tombstone {
                    url: storage.url().to_string(),
                    id: id.to_string(),
                    reason: e.to_string(),
                })?
            }
            None if ignore_missing => {
                tracing::info!(backup_id = id, "already deleted");
                return Ok(DeleteOutcome { already_deleted: true, ..Default::default() });
            }
            None => return Err(DeleteError::NotFound { url: storage.url().to_string(), id: id.to_string() }),
        },
    };

    // Every chunk a listed backup references stays.
    let mut referenced = HashSet::new();
    for other in storage.list_backup_ids().await? {
        let m = storage.read_manifest(&other).await?;
        referenced.extend(m.files.into_iter().flat_map(|f| f.chunks).map(|c| c.hash));
    }
    let mut own = std::collections::HashMap::new();
    for chunk in manifest.files.iter().flat_map(|f| &f.chunks) {
        own.insert(chunk.hash.as_str(), chunk.stored_length);
    }
    let (shared, doomed): (Vec<_>, Vec<_>) = own.into_iter().partition(|(hash, _)| referenced.contains(*hash));
    let freed_bytes = doomed.iter().map(|(_, len)| len).sum();
    let deleted_chunks = doomed.len() as u64;
    futures::stream::iter(doomed)
        .map(|(hash, _)| storage.delete_chunk(hash))
        .buffer_unordered(PARALLEL_DELETES)
        .try_collect::<()>()
        .await?;
    storage.delete(&tombstone_key).await?;
    tracing::info!(backup_id = id, deleted_chunks, freed_bytes, shared_chunks = shared.len(), "backup deleted");
    Ok(DeleteOutcome { already_deleted: false, deleted_chunks, freed_bytes, shared_chunks: shared.len() as u64 })
}
