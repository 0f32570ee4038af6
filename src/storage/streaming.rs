//! Writing one large object from a local file without holding it in memory: the file is read a block
//! at a time on a blocking thread, sealed a frame at a time when the storage encrypts, and uploaded in
//! parts, at most three parts in memory at once.

use std::{io, os::unix::fs::FileExt, sync::Arc, time::Duration};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload, path::Path as ObjPath};

use super::{MULTIPART_THRESHOLD, Storage, StorageError, is_transport_failure};

/// Bytes read from the file at a time.
const BLOCK: usize = 1024 * 1024;

enum Failure {
    Store(object_store::Error),
    Read(io::Error),
}

impl Storage {
    /// Writes the first `len` bytes of `file` as object `key`, in parts, sealed when the storage has a
    /// keyring: the same object [`Storage::put`] writes of the same bytes. A transport failure the
    /// client gave up on starts the upload again from the start, within the retry budget.
    pub async fn put_file(&self, key: &ObjPath, file: &Arc<std::fs::File>, len: u64) -> Result<(), StorageError> {
        self.ensure_writable().await?;
        let deadline = std::time::Instant::now() + self.retry;
        let mut pause = Duration::from_millis(200);
        loop {
            match self.put_file_once(key, file.clone(), len).await {
                Ok(()) => return Ok(()),
                Err(Failure::Store(e)) if is_transport_failure(&e) && std::time::Instant::now() + pause < deadline => {
                    tracing::info!(key = %key, error = %e, "storage request failed in transport; uploading again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(Failure::Store(source)) => {
                    return Err(StorageError::Put { url: self.url.clone(), key: key.to_string(), source });
                }
                Err(Failure::Read(e)) => {
                    let reason = format!("reading the local file to upload: {e}");
                    return Err(StorageError::Worker { url: self.url.clone(), key: key.to_string(), reason });
                }
            }
        }
    }

    async fn put_file_once(&self, key: &ObjPath, file: Arc<std::fs::File>, len: u64) -> Result<(), Failure> {
        let sealer = self.keyring.as_ref().map(|r| r.sealing().sealer(&self.relative(key)));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
        let producer = tokio::task::spawn_blocking(move || {
            let mut sealer = sealer;
            let mut part = Vec::with_capacity(MULTIPART_THRESHOLD + BLOCK);
            let mut buf = vec![0u8; BLOCK];
            let mut at = 0u64;
            while at < len {
                let want = usize::try_from(len - at).unwrap_or(BLOCK).min(BLOCK);
                let n = match file.read_at(&mut buf[..want], at) {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ends at {at} of {len} bytes"),
                    )),
                    other => other,
                };
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                at += n as u64;
                match &mut sealer {
                    Some(s) => part.extend(s.push(&buf[..n])),
                    None => part.extend_from_slice(&buf[..n]),
                }
                while part.len() >= MULTIPART_THRESHOLD {
                    let rest = part.split_off(MULTIPART_THRESHOLD);
                    if tx.blocking_send(Ok(Bytes::from(std::mem::replace(&mut part, rest)))).is_err() {
                        return;
                    }
                }
            }
            if let Some(s) = sealer {
                part.extend(s.finish());
            }
            if !part.is_empty() {
                let _ = tx.blocking_send(Ok(Bytes::from(part)));
            }
        });
        let mut upload = self.store.put_multipart(key).await.map_err(Failure::Store)?;
        let mut failed = None;
        while let Some(piece) = rx.recv().await {
            let result = match piece {
                Ok(piece) => {
                    self.upload_permit(piece.len()).await;
                    upload.put_part(PutPayload::from_bytes(piece)).await.map_err(Failure::Store)
                }
                Err(e) => Err(Failure::Read(e)),
            };
            if let Err(e) = result {
                failed = Some(e);
                break;
            }
        }
        drop(rx);
        let _ = producer.await;
        if let Some(e) = failed {
            let _ = upload.abort().await;
            return Err(e);
        }
        if let Err(e) = upload.complete().await {
            let _ = upload.abort().await;
            return Err(Failure::Store(e));
        }
        Ok(())
    }
}
