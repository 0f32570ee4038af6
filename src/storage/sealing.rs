//! The encryption side of [`Storage`]: sealing what is written, opening what is read, and the check
//! at the first write that the keys given fit the prefix's key history.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;

use super::{Storage, StorageError};
use crate::encryption::{ChunkNamer, Keyring};
use crate::format::key_history::KeyHistory;
use crate::format::keys;
use crate::format::manifest::Manifest;

/// Objects from this size on are sealed and opened on a blocking thread (a 4 MiB chunk takes a few
/// milliseconds, too long to hold an async worker).
const BLOCKING_FROM: usize = 64 * 1024;

impl Storage {
    /// Seals every object written with the first key of `keyring`, and opens what is read with any of them.
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(Arc::new(keyring));
        self
    }

    /// What names the chunks written through this storage.
    pub fn chunk_namer(&self) -> ChunkNamer {
        self.keyring.as_ref().map(|r| r.sealing().namer()).unwrap_or_default()
    }

    /// The encryption a manifest written through this storage records.
    pub fn encryption(&self) -> Option<crate::format::manifest::Encryption> {
        self.keyring.as_ref().map(|r| crate::format::manifest::Encryption {
            cipher: crate::encryption::CIPHER.into(),
            key: r.sealing().fingerprint(),
        })
    }

    /// What names the chunks of a backup with manifest `manifest` (read through this storage, so
    /// sealed with a key of its keyring when it records one).
    pub fn chunk_namer_of(&self, manifest: &Manifest) -> Result<ChunkNamer, StorageError> {
        let Some(enc) = &manifest.encryption else { return Ok(ChunkNamer::default()) };
        let key = self.keyring.as_ref().and_then(|r| r.get(enc.key));
        key.map(|k| k.namer()).ok_or_else(|| StorageError::Keys {
            url: self.url.clone(),
            reason: format!(
                "backup {} is encrypted with key {}, which is not among the keys given",
                manifest.backup_id, enc.key
            ),
        })
    }

    /// The stored length of an object of `plain_len` bytes.
    pub fn stored_len(&self, plain_len: usize) -> u64 {
        match self.keyring {
            Some(_) => crate::encryption::sealed_len(plain_len) as u64,
            None => plain_len as u64,
        }
    }

    /// `key` relative to the prefix: the name a sealed object is bound to, so a prefix can be copied
    /// or moved whole.
    pub(super) fn relative(&self, key: &ObjPath) -> String {
        let full = key.as_ref();
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            return full.to_string();
        }
        full.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')).unwrap_or(full).to_string()
    }

    /// `data` as it is stored at `key`: sealed when there is a keyring. Sealing large objects runs
    /// off the async threads.
    pub(super) async fn seal(&self, key: &ObjPath, data: Bytes) -> Result<Bytes, StorageError> {
        let Some(ring) = self.keyring.clone() else { return Ok(data) };
        let (name, len) = (self.relative(key), data.len());
        let seal = move || Bytes::from(ring.sealing().seal(&name, &data));
        if len < BLOCKING_FROM {
            return Ok(seal());
        }
        tokio::task::spawn_blocking(seal).await.map_err(|e| self.worker_failed(key, "sealing", e))
    }

    /// The content of object `key` as stored in `stored`; opening large objects runs off the async
    /// threads.
    pub(super) async fn open_object(&self, key: &ObjPath, stored: Bytes) -> Result<Bytes, StorageError> {
        let (ring, name, large) = (self.keyring.clone(), self.relative(key), stored.len() >= BLOCKING_FROM);
        let open = move || crate::encryption::open(ring.as_ref(), &name, stored);
        let opened = match self.keyring {
            Some(_) if large => {
                tokio::task::spawn_blocking(open).await.map_err(|e| self.worker_failed(key, "opening", e))?
            }
            _ => open(),
        };
        opened.map_err(|source| StorageError::Open { url: self.url.clone(), source })
    }

    fn worker_failed(&self, key: &ObjPath, doing: &str, e: tokio::task::JoinError) -> StorageError {
        StorageError::Worker { url: self.url.clone(), key: key.to_string(), reason: format!("{doing}: {e}") }
    }

    /// Checks, once, that writing with the keys given keeps the prefix to one key at a time: an
    /// encrypted prefix's key history names the sealing key as current (or, rotating, the current key
    /// is among the keys given and the sealing key is new); a prefix in the clear is not encrypted now.
    pub(super) async fn ensure_writable(&self) -> Result<(), StorageError> {
        self.writable.get_or_try_init(|| self.check_keys()).await.map(|_| ())
    }

    async fn check_keys(&self) -> Result<(), StorageError> {
        let history_key = self.key(keys::ENCRYPTION);
        let refuse = |reason: String| StorageError::Keys { url: self.url.clone(), reason };
        let read = |bytes: Option<Bytes>| {
            bytes.map(|b| KeyHistory::parse(&b).map_err(|e| refuse(format!("{}: {e}", keys::ENCRYPTION)))).transpose()
        };
        let history = read(self.get_raw(&history_key).await?)?;
        let (ring, history) = match (&self.keyring, history) {
            (None, None) => return Ok(()),
            (None, Some(h)) => {
                return Err(refuse(format!(
                    "it is encrypted (key {}); give its key with --encryption-key-file",
                    h.current().map(|f| f.to_string()).unwrap_or_default()
                )));
            }
            (Some(ring), None) => {
                if let Some(found) = self.first_object().await? {
                    return Err(refuse(format!(
                        "it holds objects stored in the clear (such as {found}); encrypted backups need a prefix \
                 of their own"
                    )));
                }
                let fingerprint = ring.sealing().fingerprint();
                let json =
                    serde_json::to_vec_pretty(&KeyHistory::start(fingerprint)).expect("a key history serialises");
                if self.put_new_raw(&history_key, Bytes::from(json)).await? {
                    tracing::info!(key = %fingerprint, "storage prefix encrypted from now on");
                    return Ok(());
                }
                // Another writer started the history first: check against it.
                let Some(h) = read(self.get_raw(&history_key).await?)? else {
                    return Err(refuse(format!("{} vanished while it was written", keys::ENCRYPTION)));
                };
                (ring, h)
            }
            (Some(ring), Some(h)) => (ring, h),
        };
        let sealing = ring.sealing().fingerprint();
        let current = history.current().expect("a parsed history lists a key");
        if sealing == current {
            return Ok(());
        }
        if history.keys.iter().any(|k| k.fingerprint == sealing) {
            return Err(refuse(format!(
                "key {sealing} was replaced by key {current}; objects are sealed with the newest key: give key \
                 {current}'s file first"
            )));
        }
        if ring.get(current).is_none() {
            return Err(refuse(format!(
                "it is encrypted with key {current}, and the key given to seal with is {sealing}; to rotate keys, \
                 give the new key's file first and key {current}'s file after it"
            )));
        }
        let mut rotated = history;
        rotated.keys.push(crate::format::key_history::KeyUse { fingerprint: sealing, since: jiff::Timestamp::now() });
        let json = serde_json::to_vec_pretty(&rotated).expect("a key history serialises");
        self.put_raw(&history_key, Bytes::from(json)).await?;
        tracing::info!(from = %current, to = %sealing, "encryption key rotated");
        Ok(())
    }

    /// The first object under the prefix other than the key history, if any.
    async fn first_object(&self) -> Result<Option<String>, StorageError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let err = |source| StorageError::List { url: self.url.clone(), key: self.prefix.to_string(), source };
        let mut listing = self.store.list(prefix);
        while let Some(meta) = listing.try_next().await.map_err(err)? {
            let name = self.relative(&meta.location);
            if name != keys::ENCRYPTION {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }
}
