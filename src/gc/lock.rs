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
//! looks second sees the first: they never both proceed. A lock is rewritten every heartbeat (a minute);
//! one not rewritten for the stale window (ten minutes; its process died) is ignored.
//!
//! **Whose clock.** Freshness is judged on the storage server's clock alone: a lock's age is the
//! difference between its last-modified time and that of the looker's own lock in the same listing,
//! both stamped by the server. An agent whose clock is ten minutes off therefore judges exactly as
//! one whose clock is right ([`fresh`]).
//!
//! **A holder that stalled.** A holder measures its renewals on its own boot clock (which runs on while
//! the process is stopped or the machine suspended), from the moment it *sent* each write, so a write
//! that hung in flight is not counted as recent. Once it went longer than half the stale window without
//! a renewal, it is lost for good ([`Lock::check`]): a sweep may have run in that gap, so a renewal that
//! succeeds later does not make the lock trustworthy again, and the backup fails instead of writing its
//! manifest.

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use jiff::Timestamp;

use crate::format::lock::LockRecord;
use crate::storage::{Storage, StorageError};

/// How long a backup waits for a running sweep.
pub const SWEEP_WAIT: Duration = Duration::from_secs(1800);
/// How often a waiting backup looks again.
const POLL: Duration = Duration::from_secs(5);
/// Stale window of production: ten minutes.
const STALE_AFTER: Duration = Duration::from_secs(600);
/// Shortens the stale window, in seconds, for the tests that stall a holder past it (every process
/// sharing a storage must use the same window). Not for production use.
pub const STALE_WINDOW_VAR: &str = "MYSQL_BACKUP_OPERATOR_TEST_LOCK_STALE_SECONDS";

/// The lock timings: a lock not rewritten for `stale_after` is ignored; it is rewritten every tenth
/// of that; its holder gives it up after half of it without a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A lock not rewritten for this long (on the storage server's clock) is ignored.
    pub stale_after: Duration,
}

impl Timing {
    /// How often a lock is rewritten.
    pub fn heartbeat(self) -> Duration {
        self.stale_after / 10
    }

    /// The longest a holder may go without a renewal before it stops relying on its lock.
    pub fn holder_limit(self) -> Duration {
        self.stale_after / 2
    }
}

/// The timings in force: ten minutes, unless [`STALE_WINDOW_VAR`] shortens them for a test.
pub fn timing() -> Timing {
    static TIMING: LazyLock<Timing> = LazyLock::new(|| {
        let secs = std::env::var(STALE_WINDOW_VAR).ok().and_then(|v| v.parse::<u64>().ok()).filter(|s| *s > 0);
        Timing { stale_after: secs.map(Duration::from_secs).unwrap_or(STALE_AFTER) }
    });
    *TIMING
}

/// Errors of locking.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A sweep held the storage for too long.
    #[error("a chunk sweep ({0}) has held the storage for more than {secs} s; try again later", secs = SWEEP_WAIT.as_secs())]
    SweepTooLong(String),
    /// The lock went unrenewed for longer than its holder may rely on it: another process may have
    /// taken it for stale in that gap.
    #[error(
        "lock {name} went {secs} s without a renewal ({reason}); others ignore a lock after {stale} s, so a chunk sweep may have run meanwhile: stopping instead of relying on it"
    )]
    Lost { name: String, secs: u64, stale: u64, reason: String },
    /// The listing just after writing a lock did not hold it: the storage does not list what was written.
    #[error(
        "lock {0} was written but is not in the listing of locks/ that followed; this storage cannot keep backups and sweeps apart"
    )]
    NotListed(String),
}

/// The boot clock: monotonic, and running while the process is stopped or the machine suspended.
fn boot_clock() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map(Duration::from).unwrap_or_else(|_| {
        static START: LazyLock<Instant> = LazyLock::new(Instant::now);
        START.elapsed()
    })
}

/// What the holder knows of its renewals.
#[derive(Debug)]
struct Renewals {
    /// Boot clock when the last successful write was sent.
    last: Duration,
    /// The error of the last failed renewal since then.
    error: Option<String>,
    /// Set once the lock went unrenewed past the holder's limit: never cleared.
    lost: Option<(u64, String)>,
}

impl Renewals {
    /// Marks the lock lost if, at boot-clock time `at`, it went unrenewed past `limit`.
    fn judge(&mut self, at: Duration, limit: Duration) {
        let gap = at.saturating_sub(self.last);
        if self.lost.is_none() && gap > limit {
            let reason = self.error.clone().unwrap_or_else(|| "no renewal was made: the process was stalled".into());
            self.lost = Some((gap.as_secs(), reason));
        }
    }
}

/// A held lock, rewritten in the background until released.
pub struct Lock {
    storage: Storage,
    name: String,
    timing: Timing,
    renewals: Arc<Mutex<Renewals>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// What a sweep found when it tried to lock.
pub enum SweepLock {
    /// The sweep holds the storage.
    Held(Lock),
    /// Backups are running; the sweep must not delete chunks now.
    Busy(Vec<String>),
}

/// The locks of `locks` named `prefix…` (but not `except`) that are fresh: rewritten less than
/// `stale_after` before `now`, a time stamped by the same storage server.
fn fresh(
    locks: &[(String, Timestamp)],
    prefix: &str,
    except: &str,
    now: Timestamp,
    stale_after: Duration,
) -> Vec<String> {
    locks
        .iter()
        .filter(|(name, _)| name.starts_with(prefix) && name != except)
        .filter(|(_, at)| now.duration_since(*at).as_secs_f64() < stale_after.as_secs_f64())
        .map(|(name, _)| name.clone())
        .collect()
}

/// The storage server's "now" in a listing: when it stamped the looker's own lock `own`.
fn server_now(locks: &[(String, Timestamp)], own: &str) -> Result<Timestamp, LockError> {
    locks.iter().find(|(name, _)| name == own).map(|(_, at)| *at).ok_or_else(|| LockError::NotListed(own.to_string()))
}

impl Lock {
    async fn write(storage: Storage, name: String) -> Result<Self, LockError> {
        let timing = timing();
        let body = LockRecord {
            lock: name.clone(),
            host: nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
            pid: std::process::id(),
            since: Timestamp::now(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).expect("lock records always serialise"));
        let key = storage.lock_key(&name);
        let sent = boot_clock();
        storage.put(&key, bytes.clone()).await?;
        let renewals = Arc::new(Mutex::new(Renewals { last: sent, error: None, lost: None }));
        let heartbeat = {
            let (storage, renewals) = (storage.clone(), renewals.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(timing.heartbeat()).await;
                    let sent = boot_clock();
                    renewals.lock().unwrap_or_else(|p| p.into_inner()).judge(sent, timing.holder_limit());
                    let result = storage.put(&key, bytes.clone()).await;
                    let mut state = renewals.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((secs, _)) = &state.lost {
                        tracing::warn!(lock = %key, gap_seconds = secs, "a lock went unrenewed for too long; it is lost for good");
                        return;
                    }
                    match result {
                        Ok(()) => *state = Renewals { last: sent, error: None, lost: None },
                        Err(e) => {
                            tracing::warn!(lock = %key, error = %e, "could not renew a lock");
                            state.error = Some(e.to_string());
                        }
                    }
                }
            })
        };
        Ok(Self { storage, name, timing, renewals, heartbeat })
    }

    /// Takes the lock of backup `backup_id`, waiting while a sweep runs. Call before listing chunks.
    pub async fn backup(storage: &Storage, backup_id: &str) -> Result<Self, LockError> {
        let lock = Self::write(storage.clone(), format!("backup-{backup_id}")).await?;
        let started = Instant::now();
        loop {
            let locks = storage.list_locks().await?;
            let now = server_now(&locks, &lock.name)?;
            let sweeps = fresh(&locks, "sweep-", "", now, lock.timing.stale_after);
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
        let now = server_now(&locks, &name)?;
        let stale_after = lock.timing.stale_after;
        let backups = fresh(&locks, "backup-", &name, now, stale_after);
        if backups.is_empty() {
            // Locks of processes that died: nobody renews them; tidy them away.
            let live = fresh(&locks, "", "", now, stale_after);
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

    /// Fails if the lock ever went unrenewed for longer than half the stale window, counted from when
    /// each renewal was sent: others may have ignored it in that gap. Once failed, it always fails.
    pub fn check(&self) -> Result<(), LockError> {
        let mut state = self.renewals.lock().unwrap_or_else(|p| p.into_inner());
        state.judge(boot_clock(), self.timing.holder_limit());
        match &state.lost {
            Some((secs, reason)) => Err(LockError::Lost {
                name: self.name.clone(),
                secs: *secs,
                stale: self.timing.stale_after.as_secs(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Releases the lock. A failure only leaves the lock to go stale.
    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.storage.delete(&self.storage.lock_key(&self.name)).await {
            tracing::warn!(lock = %self.name, error = %e, "could not remove a lock; it goes stale by itself");
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn freshness_is_measured_between_two_stamps_of_the_server() {
        // The server's clock is 15 minutes behind the agents': its stamps are all that is compared.
        let locks = vec![
            ("backup-a".to_string(), at("2026-12-03T10:00:00Z")),
            ("backup-b".to_string(), at("2026-12-03T09:49:59Z")),
            ("sweep-1".to_string(), at("2026-12-03T10:01:00Z")),
        ];
        let now = server_now(&locks, "sweep-1").unwrap();
        let stale_after = Duration::from_secs(600);
        assert_eq!(fresh(&locks, "backup-", "sweep-1", now, stale_after), vec!["backup-a".to_string()]);
        assert_eq!(fresh(&locks, "", "", now, stale_after), vec!["backup-a".to_string(), "sweep-1".to_string()]);
        assert_eq!(
            server_now(&locks, "sweep-2").unwrap_err().to_string(),
            "lock sweep-2 was written but is not in the listing of locks/ that followed; this storage cannot keep backups and sweeps apart"
        );
    }

    #[test]
    fn a_gap_past_the_limit_is_lost_for_good() {
        let limit = Duration::from_secs(300);
        let mut r = Renewals { last: Duration::from_secs(1000), error: None, lost: None };
        r.judge(Duration::from_secs(1299), limit);
        assert!(r.lost.is_none(), "within the limit");
        r.judge(Duration::from_secs(1301), limit);
        assert_eq!(r.lost, Some((301, "no renewal was made: the process was stalled".to_string())));
        // A later renewal does not clear it (the heartbeat stops renewing; judging again keeps the first gap).
        r.last = Duration::from_secs(1301);
        r.judge(Duration::from_secs(2000), limit);
        assert_eq!(r.lost.map(|(secs, _)| secs), Some(301));
        let mut failing = Renewals { last: Duration::ZERO, error: Some("connection refused".into()), lost: None };
        failing.judge(Duration::from_secs(400), limit);
        assert_eq!(failing.lost, Some((400, "connection refused".to_string())));
    }
}
