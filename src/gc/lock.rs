//! Locks in storage that keep a chunk sweep and a backup apart.
//!
//! Chunks are shared by every backup under a prefix, and a backup does not upload a chunk storage
//! already holds. A sweep (deleting the chunks no manifest references) running while a backup runs could
//! delete a chunk that backup found and reused, or uploaded but not yet listed in a manifest (the
//! manifest is written last). So the two exclude each other, through objects under `locks/`:
//!
//! - a **backup** writes `locks/backup-<id>.json` *before* it lists the chunks in storage, then waits
//!   while a fresh `locks/sweep-*.json` exists;
//! - a **sweep** writes `locks/sweep-<random>.json`, then lists the locks: if a fresh `backup-*` lock
//!   exists it removes its own and defers (deleting manifests is always safe; the chunks wait for the
//!   next sweep).
//!
//! Each side writes its lock and then looks for the other's. Object stores list what was written before
//! (S3, Azure Blob, GCS and local files are strongly consistent), so of two that overlap, the one that
//! looks second sees the first: they never both proceed. A lock is rewritten every [`HEARTBEAT`]; one
//! not rewritten for [`STALE_AFTER`] (its process died) is ignored. A holder that could not rewrite its
//! lock for half that time stops before it relies on it ([`Lock::check`]), so a lock is never taken for
//! stale while its holder still acts on it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use jiff::Timestamp;

use crate::format::lock::LockRecord;
use crate::storage::{Storage, StorageError};

/// How often a lock is rewritten.
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// A lock not rewritten for this long is ignored.
pub const STALE_AFTER: Duration = Duration::from_secs(600);
/// How long a backup waits for a running sweep.
pub const SWEEP_WAIT: Duration = Duration::from_secs(1800);
/// How often a waiting backup looks again.
const POLL: Duration = Duration::from_secs(5);

/// Errors of locking.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A sweep held the storage for too long.
    #[error("a chunk sweep ({0}) has held the storage for more than {secs} s; try again later", secs = SWEEP_WAIT.as_secs())]
    SweepTooLong(String),
    /// The lock could not be rewritten in time: another process may already take it for stale.
    #[error("lock {name} could not be renewed for {secs} s ({reason}); stopping before relying on it")]
    Lost { name: String, secs: u64, reason: String },
}

/// A held lock, rewritten in the background until released.
pub struct Lock {
    storage: Storage,
    name: String,
    renewed: Arc<Mutex<(Instant, Option<String>)>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// What a sweep found when it tried to lock.
pub enum SweepLock {
    /// The sweep holds the storage.
    Held(Lock),
    /// Backups are running; the sweep must not delete chunks now.
    Busy(Vec<String>),
}

fn fresh(locks: &[(String, Timestamp)], prefix: &str, except: &str) -> Vec<String> {
    let now = Timestamp::now();
    locks
        .iter()
        .filter(|(name, _)| name.starts_with(prefix) && name != except)
        .filter(|(_, at)| now.duration_since(*at).as_secs_f64() < STALE_AFTER.as_secs_f64())
        .map(|(name, _)| name.clone())
        .collect()
}

impl Lock {
    async fn write(storage: Storage, name: String) -> Result<Self, LockError> {
        let body = LockRecord {
            lock: name.clone(),
            host: nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
            pid: std::process::id(),
            since: Timestamp::now(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).expect("lock records always serialise"));
        let key = storage.lock_key(&name);
        storage.put(&key, bytes.clone()).await?;
        let renewed = Arc::new(Mutex::new((Instant::now(), None)));
        let heartbeat = {
            let (storage, renewed) = (storage.clone(), renewed.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    let result = storage.put(&key, bytes.clone()).await;
                    let mut state = renewed.lock().unwrap_or_else(|p| p.into_inner());
                    match result {
                        Ok(()) => *state = (Instant::now(), None),
                        Err(e) => {
                            tracing::warn!(lock = %key, error = %e, "could not renew a lock");
                            state.1 = Some(e.to_string());
                        }
                    }
                }
            })
        };
        Ok(Self { storage, name, renewed, heartbeat })
    }

    /// Takes the lock of backup `backup_id`, waiting while a sweep runs. Call before listing chunks.
    pub async fn backup(storage: &Storage, backup_id: &str) -> Result<Self, LockError> {
        let lock = Self::write(storage.clone(), format!("backup-{backup_id}")).await?;
        let started = Instant::now();
        loop {
            let sweeps = fresh(&storage.list_locks().await?, "sweep-", "");
            let Some(sweep) = sweeps.first() else { return Ok(lock) };
            if started.elapsed() > SWEEP_WAIT {
                lock.release().await;
                return Err(LockError::SweepTooLong(sweep.clone()));
            }
            tracing::info!(sweep = %sweep, "waiting for a chunk sweep to finish");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Tries to take the storage for a sweep.
    pub async fn sweep(storage: &Storage) -> Result<SweepLock, LockError> {
        let name = format!("sweep-{:016x}", rand::random::<u64>());
        let lock = Self::write(storage.clone(), name.clone()).await?;
        let locks = storage.list_locks().await?;
        let backups = fresh(&locks, "backup-", &name);
        if backups.is_empty() {
            // Locks of processes that died: nobody renews them; tidy them away.
            let live = fresh(&locks, "", "");
            for (stale, _) in locks.iter().filter(|(n, _)| !live.contains(n)) {
                if let Err(e) = storage.delete(&storage.lock_key(stale)).await {
                    tracing::warn!(lock = %stale, error = %e, "could not remove a stale lock");
                }
            }
            Ok(SweepLock::Held(lock))
        } else {
            lock.release().await;
            Ok(SweepLock::Busy(backups))
        }
    }

    /// Fails if the lock went unrenewed for half of [`STALE_AFTER`]: others may soon ignore it.
    pub fn check(&self) -> Result<(), LockError> {
        let state = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        let since = state.0.elapsed();
        if since > STALE_AFTER / 2 {
            return Err(LockError::Lost {
                name: self.name.clone(),
                secs: since.as_secs(),
                reason: state.1.clone().unwrap_or_else(|| "no renewal".into()),
            });
        }
        Ok(())
    }

    /// Releases the lock. A failure only leaves the lock to go stale.
    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.storage.delete(&self.storage.lock_key(&self.name)).await {
            tracing::warn!(lock = %self.name, error = %e, "could not remove a lock; it goes stale in 10 minutes");
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
