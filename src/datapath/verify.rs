//! Verify: re-read every chunk of a backup from storage and check every hash, reporting each damaged
//! file by name. Each distinct chunk is read once, however many files share it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use futures::StreamExt;

use crate::datapath::chunk::reader::fetch_verified;
use crate::datapath::progress::Progress;
use crate::format::manifest::{ChunkHash, ChunkRef, Manifest};
use crate::format::summary::{Damage, VerifyReport};
use crate::storage::{Storage, StorageError};

/// Checks every chunk of `manifest`.
pub async fn verify(
    storage: &Storage,
    manifest: &Manifest,
    parallel: usize,
    progress: Arc<Progress>,
) -> Result<VerifyReport, StorageError> {
    let namer = &storage.chunk_namer_of(manifest)?;
    let mut distinct: BTreeMap<ChunkHash, &ChunkRef> = BTreeMap::new();
    for f in &manifest.files {
        for c in &f.chunks {
            distinct.entry(c.hash).or_insert(c);
        }
    }
    let results: HashMap<ChunkHash, Result<u64, String>> = futures::stream::iter(distinct.into_values())
        .map(|c| {
            let progress = progress.clone();
            async move {
                let r = fetch_verified(storage, namer, c).await.map(|b| b.len() as u64).map_err(|e| e.to_string());
                progress.add_done(c.length);
                (c.hash, r)
            }
        })
        .buffer_unordered(parallel.max(1) * 2)
        .collect()
        .await;
    let mut report = VerifyReport::default();
    for r in results.values() {
        report.chunks_checked += 1;
        if let Ok(n) = r {
            report.bytes_checked += n;
        }
    }
    for f in &manifest.files {
        for c in &f.chunks {
            if let Some(Err(reason)) = results.get(&c.hash) {
                report.damaged.push(Damage { path: f.path.clone(), offset: c.offset, reason: reason.clone() });
            }
        }
    }
    Ok(report)
}
