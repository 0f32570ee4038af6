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
