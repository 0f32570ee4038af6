//! Removing backups from S3 storage (s3s-fs): `agent delete` and `agent prune` delete manifests, then
//! sweep every chunk no manifest references; a sweep never runs while a backup runs, and a backup waits
//! for a running sweep. Every kept backup still verifies, and the restored bytes are exact.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Duration,
};

use common::*;

/// Hashes of the chunks stored under `dir` (the `chunks/` directory of a prefix).
fn stored_chunks(dir: &Path) -> BTreeSet<String> {
    let Ok(shards) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    shards
        .flat_map(|shard| std::fs::read_dir(shard.unwrap().path()).unwrap())
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.len() == 64)
        .collect()
}

/// A test storage: a prefix on the S3 server, a datadir, and helpers around the agent.
struct Store {
    s3: S3Server,
    prefix: &'static str,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Store {
    fn new(prefix: &'static str) -> Self {
        let dir = tempdir();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        Self { s3: S3Server::start(), prefix, data, _dir: dir }
    }

    fn args(&self, a: &[&str]) -> Vec<String> {
        [args(a), self.s3.storage_args(self.prefix)].concat()
    }

    /// A cold backup of the datadir in 64 KiB chunks, with `extra` arguments; returns its id.
    async fn backup(&self, extra: &[&str]) -> String {
        let mut a =
            vec!["backup", "--method", "cold", "--chunk-size-kib", "64", "--datadir", self.data.to_str().unwrap()];
        a.extend_from_slice(extra);
        agent(&self.args(&a), &self.s3.env()).await.summary()["backupId"].as_str().unwrap().to_string()
    }

    async fn run(&self, a: &[&str]) -> AgentRun {
        agent(&self.args(a), &self.s3.env()).await
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.s3.object_path(&format!("{}/{rel}", self.prefix))
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        manifest_at(&self.path(&format!("backups/{id}/manifest.json")))
    }

    /// Chunk hashes of backups `ids`.
    fn chunks_of(&self, ids: &[&str]) -> BTreeSet<String> {
        ids.iter()
            .flat_map(|id| {
                let m = self.manifest(id);
                m["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|f| f["chunks"].as_array().unwrap().iter())
                    .map(|c| c["hash"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn listed(&self) -> Vec<String> {
        let out = self.run(&["list", "--json"]).await;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v.as_array().unwrap().iter().map(|b| b["backupId"].as_str().unwrap().to_string()).collect()
    }

    async fn verify_all(&self) {
        for id in self.listed().await {
            self.run(&["verify", "--backup", &id]).await.summary();
        }
    }

    /// Writes a lock as another process would.
    fn put_lock(&self, name: &str) -> PathBuf {
        let path = self.path(&format!("locks/{name}.json"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, br#"{"lock":"test"}"#).unwrap();
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_manifest_then_every_unreferenced_chunk() {
    let st = Store::new("del");
    // shared.ibd is 3 chunks both backups hold; first.ibd and second.ibd 2 each.
    let shared = random_bytes(3 * 65536, 11);
    let second = random_bytes(2 * 65536, 23);
    std::fs::write(st.data.join("shared.ibd"), &shared).unwrap();
    std::fs::write(st.data.join("first.ibd"), random_bytes(2 * 65536, 35)).unwrap();
    let first_id = st.backup(&[]).await;
    std::fs::remove_file(st.data.join("first.ibd")).unwrap();
    std::fs::write(st.data.join("second.ibd"), &second).unwrap();
    let second_id = st.backup(&[]).await;
    let chunks_dir = st.path("chunks");
    assert_eq!(stored_chunks(&chunks_dir).len(), 7, "3 shared + 2 + 2");
    let first_only: u64 = {
        let m = st.manifest(&first_id);
        let keep = st.chunks_of(&[&second_id]);
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["chunks"].as_array().unwrap().iter())
            .filter(|c| !keep.contains(c["hash"].as_str().unwrap()))
            .map(|c| c["storedLength"].as_u64().unwrap())
            .sum()
    };

    let summary = st.run(&["delete", "--backup", &first_id]).await.summary();
    assert_eq!(summary["operation"], "delete");
    assert_eq!(summary["alreadyDeleted"], false);
    assert_eq!((summary["deletedChunks"].as_u64(), summary["keptChunks"].as_u64()), (Some(2), Some(5)));
    assert_eq!(summary["freedBytes"].as_u64(), Some(first_only));
    assert_eq!(stored_chunks(&chunks_dir), st.chunks_of(&[&second_id]), "exactly the chunks of the remaining backup");
    assert_eq!(st.listed().await, vec![second_id.clone()]);
    assert!(std::fs::read_dir(st.path("locks")).map(|d| d.count()).unwrap_or(0) == 0, "no lock left behind");

    // The remaining backup is whole.
    st.verify_all().await;
    let target = st._dir.path().join("restored");
    st.run(&["restore", "--backup", &second_id, "--datadir", target.to_str().unwrap()]).await.summary();
    assert!(std::fs::read(target.join("shared.ibd")).unwrap() == shared);
    assert!(std::fs::read(target.join("second.ibd")).unwrap() == second);

    // Deleting again: an error naming the id, unless the caller says a missing backup is fine.
    let again = st.run(&["delete", "--backup", &first_id]).await;
    assert_eq!(
        again.error(),
        format!("error: storage s3://bucket/del: no backup with id {first_id:?} (already deleted?)")
    );
    let again = st.run(&["delete", "--backup", &first_id, "--ignore-missing"]).await.summary();
    assert_eq!((again["alreadyDeleted"].as_bool(), again["deletedChunks"].as_u64()), (Some(true), Some(0)));
    assert_eq!(
        st.run(&["delete", "--backup", "latest"]).await.error(),
        "error: \"latest\" is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx); deletion needs an explicit id"
    );

    // A deletion that died after removing the manifest: running it again sweeps what is left.
    std::fs::remove_file(st.path(&format!("backups/{second_id}/manifest.json"))).unwrap();
    let resumed = st.run(&["delete", "--backup", &second_id, "--ignore-missing"]).await.summary();
    assert_eq!((resumed["alreadyDeleted"].as_bool(), resumed["deletedChunks"].as_u64()), (Some(true), Some(5)));
    assert!(stored_chunks(&chunks_dir).is_empty(), "no chunk left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_defers_to_a_running_backup_and_a_backup_waits_for_a_sweep() {
    let st = Store::new("locks");
    std::fs::write(st.data.join("a.ibd"), random_bytes(4 * 65536, 41)).unwrap();
    let old = st.backup(&[]).await;
    std::fs::write(st.data.join("a.ibd"), random_bytes(4 * 65536, 43)).unwrap();
    let new = st.backup(&[]).await;

    // A backup is running (its lock is fresh): deleting removes the manifest and leaves the chunks.
    let lock = st.put_lock("backup-20261122T000000Z-000000");
    let deferred = st.run(&["delete", "--backup", &old]).await.summary();
    assert_eq!(deferred["deferredBy"], serde_json::json!(["backup-20261122T000000Z-000000"]));
    assert_eq!(deferred["deletedChunks"], 0);
    assert_eq!(stored_chunks(&st.path("chunks")).len(), 8, "chunks wait for a sweep");
    assert_eq!(st.listed().await, vec![new.clone()]);
    // A lock its process stopped renewing goes stale after ten minutes and no longer holds the sweep.
    let stale = std::time::SystemTime::now() - Duration::from_secs(11 * 60);
    std::fs::File::options().write(true).open(&lock).unwrap().set_modified(stale).unwrap();
    let swept = st.run(&["delete", "--backup", &old, "--ignore-missing"]).await.summary();
    assert_eq!((swept["deletedChunks"].as_u64(), swept.get("deferredBy")), (Some(4), None));
    assert_eq!(stored_chunks(&st.path("chunks")), st.chunks_of(&[&new]));
    assert!(!lock.exists(), "the sweep removed the stale lock");

    // A sweep is running: a backup waits for it before it looks at what storage holds.
    let sweep = st.put_lock("sweep-0000000000000001");
    let data = st.data.to_str().unwrap().to_string();
    let backup_args = st.args(&["backup", "--method", "cold", "--chunk-size-kib", "64", "--datadir", &data]);
    let mut child = agent_command(&backup_args, &st.s3.env()).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.try_wait().unwrap().is_none(), "the backup must wait while the sweep's lock is fresh");
    assert_eq!(st.listed().await, vec![new.clone()]);
    std::fs::remove_file(&sweep).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("waiting for a chunk sweep to finish"), "{stderr}");
    assert_eq!(st.listed().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_applies_the_policy_to_tagged_backups_during_a_concurrent_backup() {
    let st = Store::new("prune");
    let mut ids = Vec::new();
    for n in 0..4u64 {
        std::fs::write(st.data.join("t.ibd"), random_bytes(2 * 65536, 101 + 2 * n)).unwrap();
        ids.push(st.backup(&["--tag", "schedule=db/nightly"]).await);
    }
    std::fs::write(st.data.join("t.ibd"), random_bytes(2 * 65536, 201)).unwrap();
    let other = st.backup(&["--tag", "schedule=db/hourly"]).await;

    // Dry run: the plan, nothing deleted.
    let dry = st.run(&["prune", "--keep-last", "2", "--tag", "schedule=db/nightly", "--dry-run"]).await.summary();
    assert_eq!(
        (dry["considered"].as_u64(), dry["kept"].as_u64(), dry["deletedCount"].as_u64()),
        (Some(4), Some(2), Some(2))
    );
    assert_eq!(dry["deleted"], serde_json::json!([ids[1], ids[0]]));
    assert!(dry.get("sweep").is_none());
    assert_eq!(st.listed().await.len(), 5);

    // A backup is running: it has taken its lock and holds still at its first new chunk.
    std::fs::write(st.data.join("t.ibd"), random_bytes(2 * 65536, 301)).unwrap();
    st.s3.hold_chunk_uploads.store(true, Ordering::SeqCst);
    let data = st.data.to_str().unwrap().to_string();
    let backup_args = st.args(&[
        "backup",
        "--method",
        "cold",
        "--chunk-size-kib",
        "64",
        "--datadir",
        &data,
        "--tag",
        "schedule=db/nightly",
    ]);
    let running = agent_command(&backup_args, &st.s3.env()).spawn().unwrap();
    let locks = st.path("locks");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the backup never took its lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pruned = st.run(&["prune", "--keep-last", "2", "--tag", "schedule=db/nightly"]).await.summary();
    assert_eq!(pruned["deleted"], serde_json::json!([ids[1], ids[0]]));
    let deferred = pruned["sweep"]["deferredBy"].as_array().unwrap();
    assert!(deferred.len() == 1 && deferred[0].as_str().unwrap().starts_with("backup-"), "{pruned}");
    st.s3.hold_chunk_uploads.store(false, Ordering::SeqCst);
    let out = tokio::time::timeout(Duration::from_secs(60), running.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let newest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let newest = newest["backupId"].as_str().unwrap().to_string();

    // Every backup left verifies; the next prune keeps the two newest nightly ones and sweeps.
    st.verify_all().await;
    let pruned = st.run(&["prune", "--keep-last", "2", "--tag", "schedule=db/nightly"]).await.summary();
    assert_eq!(pruned["deleted"], serde_json::json!([ids[2]]));
    assert_eq!(pruned["sweep"]["deferredBy"], serde_json::Value::Null);
    let mut left = st.listed().await;
    left.sort();
    let mut expected = vec![ids[3].clone(), other.clone(), newest.clone()];
    expected.sort();
    assert_eq!(left, expected, "the other schedule's backup is untouched");
    assert_eq!(
        stored_chunks(&st.path("chunks")),
        st.chunks_of(&[&ids[3], &other, &newest]),
        "unreferenced chunks are gone"
    );
    st.verify_all().await;
    let window = &pruned["window"];
    assert_eq!(window["to"], st.manifest(&newest)["completedAt"]);
    assert_eq!(window["from"], st.manifest(&ids[3])["completedAt"]);

    // A policy that keeps nothing is refused before anything is touched.
    assert_eq!(
        st.run(&["prune", "--tag", "schedule=db/nightly"]).await.error(),
        "error: prune keeps nothing: set at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --max-age"
    );
}

/// Where Debian's libfaketime is (`scripts/test-deps` installs the `faketime` package).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that runs an agent with its wall clock shifted by `offset` (`+15m`, `-15m`) against
/// the storage's clock (the file system's timestamps, set by the kernel).
fn skewed(offset: &str) -> Vec<(String, String)> {
    assert!(Path::new(LIBFAKETIME).is_file(), "{LIBFAKETIME} is missing: run ./scripts/test, which installs faketime");
    vec![
        ("LD_PRELOAD".to_string(), LIBFAKETIME.to_string()),
        ("FAKETIME".to_string(), offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
    ]
}

/// Names of the locks under `locks` (without `.json`).
fn lock_names(locks: &Path) -> Vec<String> {
    std::fs::read_dir(locks)
        .map(|d| d.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.trim_end_matches(".json").to_string())
        .collect()
}

/// Waits until a `backup-*` lock other than `except` exists under `locks`; its name.
async fn backup_lock_appears(locks: &Path, except: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(name) = lock_names(locks).into_iter().find(|n| n.starts_with("backup-") && n != except) {
            return name;
        }
        assert!(std::time::Instant::now() < deadline, "the backup never took its lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every agent runs with its clock 15 minutes ahead of the storage's, then 15 minutes behind it. (On S3
/// a skew of 15 minutes is refused by request signing itself, `RequestTimeTooSkewed`, loudly; file
/// storage signs nothing, so the skew reaches the locks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_agents_fifteen_minutes_off_the_storages_clock_a_sweep_still_defers_to_a_running_backup() {
    for offset in ["+15m", "-15m"] {
        let dir = tempdir();
        let (data, store) = (dir.path().join("data"), dir.path().join("store"));
        std::fs::create_dir_all(&data).unwrap();
        let url = format!("file://{}", store.display());
        let env = skewed(offset);
        let run = |a: &[&str]| {
            let a = [args(a), args(&["--storage", &url])].concat();
            let env = env.clone();
            async move { agent(&a, &env).await }
        };
        let datadir = data.to_str().unwrap();
        let cold = ["backup", "--method", "cold", "--chunk-size-kib", "64", "--datadir", datadir];
        // The first backup: shared.ibd, which the second reuses, and old.ibd, which only it holds.
        let shared = random_bytes(4 * 65536, 61);
        std::fs::write(data.join("shared.ibd"), &shared).unwrap();
        std::fs::write(data.join("old.ibd"), random_bytes(2 * 65536, 63)).unwrap();
        let first = run(&cold).await.summary()["backupId"].as_str().unwrap().to_string();
        std::fs::remove_file(data.join("old.ibd")).unwrap();
        let new = random_bytes(8 * 65536, 65);
        std::fs::write(data.join("new.ibd"), &new).unwrap();
        // A lock whose process died eleven minutes ago (on the storage's clock).
        let locks = store.join("locks");
        let dead_name = "backup-20261101T000000Z-000000";
        let dead = locks.join(format!("{dead_name}.json"));
        std::fs::write(&dead, br#"{"lock":"test"}"#).unwrap();
        let eleven_minutes_ago = std::time::SystemTime::now() - Duration::from_secs(11 * 60);
        std::fs::File::options().write(true).open(&dead).unwrap().set_modified(eleven_minutes_ago).unwrap();

        // The second backup uploads new.ibd at 64 KiB/s (8 s), having counted shared.ibd's chunks as present.
        let throttled = [&cold[..], &["--max-upload-rate", "64KiB", "--storage", &url]].concat();
        let running = agent_command(&args(&throttled), &env).spawn().unwrap();
        let lock = backup_lock_appears(&locks, dead_name).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let deferred = run(&["delete", "--backup", &first]).await.summary();
        assert_eq!(
            deferred["deferredBy"],
            serde_json::json!([lock]),
            "{offset}: only the live backup defers the sweep"
        );
        assert_eq!(deferred["deletedChunks"], 0, "{offset}");
        let out = tokio::time::timeout(Duration::from_secs(60), running.wait_with_output()).await.unwrap().unwrap();
        assert!(out.status.success(), "{offset}: {}", String::from_utf8_lossy(&out.stderr));
        let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let second = second["backupId"].as_str().unwrap().to_string();
        run(&["verify", "--backup", &second]).await.summary();

        // With the backup done, the next sweep runs, removes the dead lock, and the backup still restores.
        let swept = run(&["delete", "--backup", &first, "--ignore-missing"]).await.summary();
        assert_eq!((swept["deletedChunks"].as_u64(), swept.get("deferredBy")), (Some(2), None), "{offset}");
        assert!(lock_names(&locks).is_empty(), "{offset}: the sweep removed the dead process's lock");
        let target = dir.path().join("restored");
        run(&["restore", "--backup", &second, "--datadir", target.to_str().unwrap()]).await.summary();
        assert!(std::fs::read(target.join("shared.ibd")).unwrap() == shared, "{offset}");
        assert!(std::fs::read(target.join("new.ibd")).unwrap() == new, "{offset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_stalled_past_the_stale_window_fails_naming_its_lock_and_lists_nothing() {
    let st = Store::new("stall");
    // Every process on this storage uses a 10 s stale window: a holder gives up after 5 s unrenewed.
    let mut env = st.s3.env();
    env.push(("MYSQL_BACKUP_OPERATOR_TEST_LOCK_STALE_SECONDS".into(), "10".into()));
    let data = st.data.to_str().unwrap().to_string();
    let cold = st.args(&["backup", "--method", "cold", "--chunk-size-kib", "64", "--datadir", &data]);
    std::fs::write(st.data.join("shared.ibd"), random_bytes(4 * 65536, 71)).unwrap();
    let first = agent(&cold, &env).await.summary()["backupId"].as_str().unwrap().to_string();
    std::fs::write(st.data.join("new.ibd"), random_bytes(2 * 65536, 73)).unwrap();

    // The second backup counted shared.ibd's chunks as present, then its process is stopped.
    st.s3.hold_chunk_uploads.store(true, Ordering::SeqCst);
    let running = agent_command(&cold, &env).spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(running.id().unwrap() as i32);
    let lock = backup_lock_appears(&st.path("locks"), "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    // Past the window its lock is stale: a deletion sweeps, the reused chunks with the first backup.
    let swept = agent(&st.args(&["delete", "--backup", &first]), &env).await.summary();
    assert_eq!((swept["deletedChunks"].as_u64(), swept.get("deferredBy")), (Some(4), None), "{swept}");
    st.s3.hold_chunk_uploads.store(false, Ordering::SeqCst);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), running.wait_with_output()).await.unwrap().unwrap();
    let run = AgentRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let error = run.error();
    let prefix = format!("error: lock {lock} went ");
    let suffix = " s without a renewal (no renewal was made: the process was stalled); others ignore a lock after 10 s, so a chunk sweep may have run meanwhile: stopping instead of relying on it";
    assert!(error.starts_with(&prefix) && error.ends_with(suffix), "{error}");
    let gap: u64 = error[prefix.len()..error.len() - suffix.len()].parse().unwrap();
    assert!((12..60).contains(&gap), "the gap is the stop's length: {error}");
    assert!(st.listed().await.is_empty(), "nothing is listed: the first was deleted and the second never completed");

    // The next backup uploads what is missing and verifies.
    let third = agent(&cold, &env).await.summary()["backupId"].as_str().unwrap().to_string();
    assert_eq!(st.listed().await, vec![third]);
    st.verify_all().await;
}
