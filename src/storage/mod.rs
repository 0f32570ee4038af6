//! Object storage: one code path for `file://`, `s3://`, `az://` and `gs://` through `object_store`,
//! with retries bounded in time. The keys under the URL's prefix are laid out by
//! [`crate::format::keys`].
//!
//! With a [`Keyring`], every object written is sealed and every object read must open with one of its
//! keys (see [`crate::encryption`]); the one exception is the prefix's key history, which the first
//! write checks: keys are never mixed under one prefix, nor encrypted objects with clear ones.
//!
//! Credentials come only from the environment (the `AWS_*`, `AZURE_*`, `GOOGLE_*` variables
//! `object_store` reads); options given on the command line that look like credentials are refused so
//! they never land in a process list, a Job spec or a log.

use std::{collections::HashMap, path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    azure::{AzureConfigKey, MicrosoftAzureBuilder},
    gcp::{GoogleCloudStorageBuilder, GoogleConfigKey},
    local::LocalFileSystem,
    path::Path as ObjPath,
};
use url::Url;

mod sealing;
mod streaming;

use crate::encryption::{EncryptionError, Keyring, Opener};
use crate::format::drill::DrillRecord;
use crate::format::keys;
use crate::format::manifest::{ChunkHash, Manifest, ManifestError, is_backup_id};

/// Retries of one request: high enough that the time budget (`RetryPolicy::timeout`), not the count,
/// ends them — with backoff from 100 ms, ten retries can be spent in a few seconds of an outage.
const MAX_RETRIES: usize = 1_000;

/// Objects larger than this are uploaded in parts (each part retried on its own by the client).
const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

/// Errors of the storage layer. Every message names the storage location and the object involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URL cannot be parsed or has an unsupported scheme.
    #[error("storage URL {url:?}: {reason}")]
    ParseUrl { url: String, reason: String },
    /// A `--storage-option` is malformed, unknown, or a credential.
    #[error("storage option {key:?}: {reason}")]
    Option { key: String, reason: String },
    /// The backend could not be configured (missing bucket, bad endpoint, …).
    #[error("storage {url}: cannot configure the client: {source}")]
    Configure { url: String, source: object_store::Error },
    /// A local storage directory could not be created.
    #[error("storage {url}: cannot create directory {dir}: {source}")]
    CreateDir { url: String, dir: PathBuf, source: std::io::Error },
    /// Writing an object failed.
    #[error("storage {url}: writing {key}: {source}")]
    Put { url: String, key: String, source: object_store::Error },
    /// Reading an object failed.
    #[error("storage {url}: reading {key}: {source}")]
    Get { url: String, key: String, source: object_store::Error },
    /// Listing objects failed.
    #[error("storage {url}: listing {key}: {source}")]
    List { url: String, key: String, source: object_store::Error },
    /// Deleting an object failed.
    #[error("storage {url}: deleting {key}: {source}")]
    Delete { url: String, key: String, source: object_store::Error },
    /// No backup with that id (or no backup at all, for `latest`).
    #[error("storage {url}: {what}")]
    BackupNotFound { url: String, what: String },
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A drill record is invalid.
    #[error("storage {url}: drill record {key}: {reason}")]
    Drill { url: String, key: String, reason: String },
    /// An object does not open with the keys given.
    #[error("storage {url}: {source}")]
    Open { url: String, source: EncryptionError },
    /// The keys given do not fit the prefix's: writing would mix keys, or encrypted and clear objects.
    #[error("storage {url}: {reason}")]
    Keys { url: String, reason: String },
    /// A blocking worker sealing or opening an object failed.
    #[error("storage {url}: {key}: {reason}")]
    Worker { url: String, key: String, reason: String },
}

/// Where backups live: a configured object store and the key prefix inside it.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    url: String,
    /// The retry budget of one request, for the failures the client does not retry itself.
    retry: Duration,
    /// Bytes a second over every upload through this storage (and its clones).
    upload_limit: Option<Arc<crate::throttle::RateLimit>>,
    /// The keys objects are sealed and opened with; `None` stores them in the clear.
    keyring: Option<Arc<Keyring>>,
    /// Set once the first write found the keys fit the prefix (shared by clones).
    writable: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("url", &self.url).finish()
    }
}

/// Option keys that carry credentials; they must come from the environment instead.
pub fn is_credential_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "access_key", "token", "sas", "password", "account_key", "service_account_key", "client_secret"]
        .iter()
        .any(|w| k.contains(w))
}

/// Parses `key=value` option text.
pub fn parse_option(text: &str) -> Result<(String, String), StorageError> {
    let (k, v) = text.split_once('=').ok_or_else(|| StorageError::Option {
        key: text.into(),
        reason: "expected key=value, e.g. endpoint=http://127.0.0.1:9000".into(),
    })?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Whether `e` is a failure of the transport (the request may not even have been sent: a connection
/// reset, cancelled or not ready) rather than an answer of the server. The client retries most of
/// these itself, but not a request cancelled on a connection a restarting server dropped.
fn is_transport_failure(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(http) = err.downcast_ref::<object_store::client::HttpError>() {
            return http.kind() != object_store::client::HttpErrorKind::Decode;
        }
        source = err.source();
    }
    false
}

/// How long the client keeps retrying one request before giving up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total time budget of retries of one request.
    pub timeout: Duration,
}

/// Why a storage URL with user info is refused.
pub const CREDENTIALS_IN_URL: &str = "credentials do not go in the URL (user info before '@' would show in every \
     log line, summary and status that names the storage); set them in the environment \
     (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, GOOGLE_SERVICE_ACCOUNT, …) or, in \
     Kubernetes, in the Secret named by spec.storage.credentialsSecret";

impl Storage {
    /// Opens storage at `url` (`file:///dir`, a plain directory path, `s3://bucket/prefix`,
    /// `az://container/prefix`, `gs://bucket/prefix`), with backend options `options`
    /// (object_store configuration keys such as `endpoint`, `region`, `allow_http`).
    pub fn open(url: &str, options: &[(String, String)], retry: RetryPolicy) -> Result<Self, StorageError> {
        for (key, _) in options {
            if is_credential_key(key) {
                return Err(StorageError::Option {
                    key: key.clone(),
                    reason: "credentials are not accepted as options; set them in the environment \
                             (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, \
                             GOOGLE_SERVICE_ACCOUNT, …)"
                        .into(),
                });
            }
        }
        let parse_err = |reason: String| StorageError::ParseUrl { url: url.to_string(), reason };
        let retry_config = RetryConfig { max_retries: MAX_RETRIES, retry_timeout: retry.timeout, ..Default::default() };
        let opt_err =
            |key: &str, e: object_store::Error| StorageError::Option { key: key.into(), reason: e.to_string() };
        let configure = |e| StorageError::Configure { url: url.to_string(), source: e };

        if !url.contains("://") {
            return Self::open_local(url, PathBuf::from(url), options);
        }
        let parsed = Url::parse(url).map_err(|e| parse_err(e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            let mut shown = parsed.clone();
            let _ = (shown.set_username(""), shown.set_password(None));
            return Err(StorageError::ParseUrl { url: shown.to_string(), reason: CREDENTIALS_IN_URL.into() });
        }
        let prefix = ObjPath::from(parsed.path().trim_matches('/'));
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let path = parsed.to_file_path().map_err(|_| parse_err("not an absolute local path".into()))?;
                return Self::open_local(url, path, options);
            }
            "s3" => {
                let mut b = AmazonS3Builder::from_env().with_url(url).with_retry(retry_config);
                for (k, v) in options {
                    b = b.with_config(AmazonS3ConfigKey::from_str(k).map_err(|e| opt_err(k, e))?, v);
                }
                Arc::new(b.build().map_err(configure)?)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = MicrosoftAzureBuilder::from_env().with_url(url).with_retry(retry_config);
                for (k, v) in options {
                    b = b.with_config(AzureConfigKey::from_str(k).map_err(|e| opt_err(k, e))?, v);
                }
                Arc::new(b.build().map_err(configure)?)
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_url(url).with_retry(retry_config);
                for (k, v) in options {
                    b = b.with_config(GoogleConfigKey::from_str(k).map_err(|e| opt_err(k, e))?, v);
                }
                Arc::new(b.build().map_err(configure)?)
            }
            other => {
                return Err(parse_err(format!("unsupported scheme {other:?}; use file://, s3://, az:// or gs://")));
            }
        };
        Ok(Self {
            store,
            prefix,
            url: url.to_string(),
            retry: retry.timeout,
            upload_limit: None,
            keyring: None,
            writable: Default::default(),
        })
    }

    fn open_local(url: &str, dir: PathBuf, options: &[(String, String)]) -> Result<Self, StorageError> {
        if let Some((key, _)) = options.first() {
            return Err(StorageError::Option { key: key.clone(), reason: "local storage takes no options".into() });
        }
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::CreateDir {
            url: url.to_string(),
            dir: dir.clone(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StorageError::Configure { url: url.to_string(), source: e })?;
        Ok(Self {
            store: Arc::new(store),
            prefix: ObjPath::default(),
            url: url.to_string(),
            retry: Duration::ZERO,
            upload_limit: None,
            keyring: None,
            writable: Default::default(),
        })
    }

    /// Limits every upload through this storage and its clones, together, to `rate`.
    pub fn with_upload_limit(mut self, rate: crate::throttle::ByteRate) -> Self {
        self.upload_limit = Some(Arc::new(crate::throttle::RateLimit::new(rate)));
        self
    }

    /// Waits until `bytes` may be uploaded.
    async fn upload_permit(&self, bytes: usize) {
        if let Some(limit) = &self.upload_limit {
            limit.take(bytes as u64).await;
        }
    }

    /// The URL this storage was opened with (never contains credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, rel: &str) -> ObjPath {
        if self.prefix.as_ref().is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Object key of a chunk.
    pub fn chunk_key(&self, hash: &ChunkHash) -> ObjPath {
        self.key(&keys::chunk(hash))
    }

    /// Object key of a backup's manifest.
    pub fn manifest_key(&self, backup_id: &str) -> ObjPath {
        self.key(&keys::manifest(backup_id))
    }

    /// Writes an object, in parts when it is large. Writes are idempotent (chunks are named by their
    /// content, manifests written once): a transport failure the client gave up on is tried again
    /// within the retry budget.
    pub async fn put(&self, key: &ObjPath, data: Bytes) -> Result<(), StorageError> {
        self.ensure_writable().await?;
        let data = self.seal(key, data).await?;
        self.put_raw(key, data).await
    }

    /// Writes an object as it is given.
    async fn put_raw(&self, key: &ObjPath, data: Bytes) -> Result<(), StorageError> {
        let err = |source| StorageError::Put { url: self.url.clone(), key: key.to_string(), source };
        let deadline = std::time::Instant::now() + self.retry;
        let mut pause = Duration::from_millis(200);
        loop {
            match self.put_once(key, data.clone()).await {
                Err(e) if is_transport_failure(&e) && std::time::Instant::now() + pause < deadline => {
                    tracing::info!(key = %key, error = %e, "storage request failed in transport; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                other => return other.map_err(err),
            }
        }
    }

    async fn put_once(&self, key: &ObjPath, data: Bytes) -> Result<(), object_store::Error> {
        if data.len() <= MULTIPART_THRESHOLD {
            self.upload_permit(data.len()).await;
            self.store.put(key, PutPayload::from_bytes(data)).await?;
            return Ok(());
        }
        let mut upload = self.store.put_multipart(key).await?;
        for part in data.chunks(MULTIPART_THRESHOLD) {
            self.upload_permit(part.len()).await;
            if let Err(e) = upload.put_part(PutPayload::from_bytes(data.slice_ref(part))).await {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        if let Err(e) = upload.complete().await {
            let _ = upload.abort().await;
            return Err(e);
        }
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &ObjPath) -> Result<Bytes, StorageError> {
        let err = |source| StorageError::Get { url: self.url.clone(), key: key.to_string(), source };
        let stored = self.store.get(key).await.map_err(err)?.bytes().await.map_err(err)?;
        self.open_object(key, stored).await
    }

    /// Reads a whole object, or `None` when it does not exist.
    pub async fn get_opt(&self, key: &ObjPath) -> Result<Option<Bytes>, StorageError> {
        match self.get_raw(key).await? {
            Some(stored) => self.open_object(key, stored).await.map(Some),
            None => Ok(None),
        }
    }

    /// Reads a whole object as stored, or `None` when it does not exist.
    async fn get_raw(&self, key: &ObjPath) -> Result<Option<Bytes>, StorageError> {
        let err = |source| StorageError::Get { url: self.url.clone(), key: key.to_string(), source };
        match self.store.get(key).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(err)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Reads an object as a stream of pieces as they arrive (opened as they arrive, when sealed), or
    /// `None` when it does not exist: memory holds one piece (or one sealed frame) at a time whatever
    /// the object's size.
    pub async fn get_stream(
        &self,
        key: &ObjPath,
    ) -> Result<Option<futures::stream::BoxStream<'static, Result<Bytes, StorageError>>>, StorageError> {
        use futures::StreamExt;
        let (url, key_text) = (self.url.clone(), key.to_string());
        let inner = match self.store.get(key).await {
            Ok(found) => found.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(StorageError::Get { url, key: key_text, source }),
        };
        let opener = Opener::new(self.keyring.clone(), &self.relative(key));
        let opened = futures::stream::unfold(Some((inner, opener)), move |state| {
            let (url, key_text) = (url.clone(), key_text.clone());
            async move {
                let (mut inner, mut opener) = state?;
                let open_err = |source| StorageError::Open { url: url.clone(), source };
                loop {
                    match inner.next().await {
                        Some(Ok(piece)) => match opener.push(piece) {
                            Ok(out) if out.is_empty() => continue,
                            Ok(out) => return Some((Ok(out), Some((inner, opener)))),
                            Err(e) => return Some((Err(open_err(e)), None)),
                        },
                        Some(Err(source)) => {
                            return Some((
                                Err(StorageError::Get { url: url.clone(), key: key_text.clone(), source }),
                                None,
                            ));
                        }
                        None => return Some((opener.finish().map_err(open_err), None)),
                    }
                }
            }
        });
        Ok(Some(Box::pin(opened)))
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, key: &ObjPath) -> Result<(), StorageError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StorageError::Delete { url: self.url.clone(), key: key.to_string(), source }),
        }
    }

    /// Deletes a chunk; a missing one is not an error.
    pub async fn delete_chunk(&self, hash: &ChunkHash) -> Result<(), StorageError> {
        self.delete(&self.chunk_key(hash)).await
    }

    /// Every chunk storage holds: hash → stored length (about 100 bytes an entry: 2.6 million, a 10 TB
    /// backup's worth, take about 250 MiB).
    pub async fn list_chunks(&self) -> Result<HashMap<ChunkHash, u64>, StorageError> {
        let key = self.key(keys::CHUNKS);
        let err = |source| StorageError::List { url: self.url.clone(), key: key.to_string(), source };
        let mut out = HashMap::new();
        let mut listing = self.store.list(Some(&key));
        while let Some(meta) = listing.try_next().await.map_err(err)? {
            if let Some(hash) = meta.location.filename().and_then(|n| n.parse::<ChunkHash>().ok()) {
                out.insert(hash, meta.size);
            }
        }
        Ok(out)
    }

    /// Object key of a file of binary-log archive `archive` (see [`crate::archive`]).
    pub fn archive_key(&self, archive: &str, name: &str) -> ObjPath {
        self.key(&keys::archive_object(archive, name))
    }

    /// Names of the objects directly in binary-log archive `archive` (or of the archives, with
    /// `None`), with their sizes.
    pub async fn list_archive(&self, archive: Option<&str>) -> Result<Vec<(String, u64)>, StorageError> {
        let key = self.key(&keys::archive_dir(archive));
        let err = |source| StorageError::List { url: self.url.clone(), key: key.to_string(), source };
        let listing = self.store.list_with_delimiter(Some(&key)).await.map_err(err)?;
        let mut out: Vec<(String, u64)> = match archive {
            Some(_) => {
                listing.objects.iter().filter_map(|o| o.location.filename().map(|n| (n.to_string(), o.size))).collect()
            }
            None => listing.common_prefixes.iter().filter_map(|p| p.filename().map(|n| (n.to_string(), 0))).collect(),
        };
        out.sort();
        Ok(out)
    }

    /// Writes a small object only if none exists at `key`; `false` when one did. Backends without
    /// conditional writes fall back to a check, then a write.
    pub async fn put_new(&self, key: &ObjPath, data: Bytes) -> Result<bool, StorageError> {
        self.ensure_writable().await?;
        let data = self.seal(key, data).await?;
        self.put_new_raw(key, data).await
    }

    /// [`Storage::put_new`] of an object as it is given.
    async fn put_new_raw(&self, key: &ObjPath, data: Bytes) -> Result<bool, StorageError> {
        let err = |source| StorageError::Put { url: self.url.clone(), key: key.to_string(), source };
        self.upload_permit(data.len()).await;
        let opts = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        match self.store.put_opts(key, PutPayload::from_bytes(data.clone()), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                if self.get_raw(key).await?.is_some() {
                    return Ok(false);
                }
                self.store.put(key, PutPayload::from_bytes(data)).await.map_err(err)?;
                Ok(true)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Object key of a lock (see [`crate::gc::lock`]).
    pub fn lock_key(&self, name: &str) -> ObjPath {
        self.key(&keys::lock(name))
    }

    /// Every lock: name (without `.json`) and when it was last written, by the storage's clock.
    pub async fn list_locks(&self) -> Result<Vec<(String, jiff::Timestamp)>, StorageError> {
        let key = self.key(keys::LOCKS);
        let err = |source| StorageError::List { url: self.url.clone(), key: key.to_string(), source };
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&key));
        while let Some(meta) = listing.try_next().await.map_err(err)? {
            if let Some(name) = meta.location.filename().and_then(|n| n.strip_suffix(".json")) {
                let at = jiff::Timestamp::from_millisecond(meta.last_modified.timestamp_millis())
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                out.push((name.to_string(), at));
            }
        }
        Ok(out)
    }

    /// Ids of every complete backup (one whose manifest exists), oldest first.
    pub async fn list_backup_ids(&self) -> Result<Vec<String>, StorageError> {
        let key = self.key(keys::BACKUPS);
        let err = |source| StorageError::List { url: self.url.clone(), key: key.to_string(), source };
        let mut ids = Vec::new();
        let mut listing = self.store.list(Some(&key));
        while let Some(meta) = listing.try_next().await.map_err(err)? {
            let parts: Vec<_> = meta.location.parts().collect();
            if let [.., id, file] = parts.as_slice()
                && file.as_ref() == keys::MANIFEST_FILE
                && is_backup_id(id.as_ref())
            {
                ids.push(id.as_ref().to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The newest complete backup whose manifest satisfies `keep`, with its manifest.
    pub async fn newest_manifest(
        &self,
        keep: impl Fn(&Manifest) -> bool,
    ) -> Result<Option<(String, Manifest)>, StorageError> {
        for id in self.list_backup_ids().await?.into_iter().rev() {
            let m = self.read_manifest(&id).await?;
            if keep(&m) {
                return Ok(Some((id, m)));
            }
        }
        Ok(None)
    }

    /// Resolves `latest` or a backup id to the id of a complete backup.
    pub async fn resolve_backup(&self, wanted: &str) -> Result<String, StorageError> {
        let ids = self.list_backup_ids().await?;
        let not_found = |what: String| StorageError::BackupNotFound { url: self.url.clone(), what };
        if wanted == "latest" {
            return ids.last().cloned().ok_or_else(|| not_found("no complete backup found".into()));
        }
        if ids.iter().any(|i| i == wanted) {
            Ok(wanted.to_string())
        } else {
            Err(not_found(format!("no complete backup with id {wanted:?}")))
        }
    }

    /// Reads and validates the manifest of a complete backup.
    pub async fn read_manifest(&self, backup_id: &str) -> Result<Manifest, StorageError> {
        let bytes = self.get(&self.manifest_key(backup_id)).await?;
        let id = backup_id.to_string();
        // Parsing millions of chunk references is CPU work: off the async threads.
        let parsed = tokio::task::spawn_blocking(move || Manifest::from_stored(&id, &bytes)).await;
        Ok(parsed.map_err(|e| ManifestError::Parse { backup: backup_id.into(), reason: e.to_string() })??)
    }

    /// Object key of a backup's last drill record.
    pub fn drill_key(&self, backup_id: &str) -> ObjPath {
        self.key(&keys::drill(backup_id))
    }

    /// The last drill of backup `backup_id`, if it was drilled.
    pub async fn read_drill(&self, backup_id: &str) -> Result<Option<DrillRecord>, StorageError> {
        let key = self.drill_key(backup_id);
        match self.get_opt(&key).await? {
            None => Ok(None),
            Some(bytes) => DrillRecord::parse(&bytes).map(Some).map_err(|reason| StorageError::Drill {
                url: self.url.clone(),
                key: key.to_string(),
                reason,
            }),
        }
    }

    /// Stores a drill record beside its backup's manifest, replacing the previous one.
    pub async fn write_drill(&self, record: &DrillRecord) -> Result<(), StorageError> {
        let json = serde_json::to_vec(record).expect("drill records always serialise");
        self.put(&self.drill_key(&record.outcome.backup_id), Bytes::from(json)).await
    }

    /// Writes a manifest: the last write of a backup, after which it exists.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), StorageError> {
        debug_assert_eq!(manifest.encryption, self.encryption(), "a manifest records the key that seals it");
        let key = self.manifest_key(&manifest.backup_id);
        let stored = manifest.to_stored().map_err(|source| StorageError::Put {
            url: self.url.clone(),
            key: key.to_string(),
            source: object_store::Error::Generic { store: "manifest", source: Box::new(source) },
        })?;
        self.put(&key, Bytes::from(stored)).await
    }
}

#[cfg(test)]
mod tests;
