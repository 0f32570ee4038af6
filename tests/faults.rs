//! Faults against the real parts: object storage that goes down in the middle of a backup (and comes
//! back, or not), a restore killed with SIGKILL and run again, a restore target that runs out of
//! space, a chunk whose stored bytes change while a restore runs, and a backup user without a
//! privilege it needs. In each, nothing half-done is ever taken for done, and the error names the
//! thing that is wrong.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Duration,
};

use common::*;

/// A datadir of `files` files of `mib` MiB each of incompressible bytes.
fn make_datadir(dir: &Path, files: usize, mib: usize) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("app")).unwrap();
    for i in 0..files {
        std::fs::write(data.join(format!("app/t{i}.ibd")), random_bytes(mib << 20, 100 + 2 * i as u64)).unwrap();
    }
    data
}

/// Every regular file under `dir` with its bytes, by relative path.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()).count()
}

const MARKER: &str = ".mysql-backup-operator-restore-in-progress";

/// A cold backup of a 32 MiB datadir to `prefix` on a new S3 server that goes down while uploads are
/// in flight: the backup's chunk uploads are held until its lock is written, then the server goes down
/// and they are let go. The backup retries for `retry_seconds`.
struct Outage {
    dir: tempfile::TempDir,
    data: PathBuf,
    s3: S3Server,
    backup: tokio::process::Child,
}

impl Outage {
    async fn start(prefix: &str, retry_seconds: u64) -> Self {
        let dir = tempdir();
        let data = make_datadir(dir.path(), 4, 8);
        let s3 = S3Server::start();
        s3.hold_chunk_uploads.store(true, Ordering::SeqCst);
        let d = data.display().to_string();
        let retry = retry_seconds.to_string();
        let a = [
            args(&["backup", "--method", "cold", "--datadir", &d, "--chunk-size-kib", "1024"]),
            args(&["--storage-retry-timeout", &retry]),
            s3.storage_args(prefix),
        ]
        .concat();
        let backup = agent_command(&a, &s3.env()).spawn().unwrap();
        let locks = s3.object_path(&format!("{prefix}/locks"));
        wait_for("the backup's lock", Duration::from_secs(60), || count_files(&locks) > 0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        s3.down.store(true, Ordering::SeqCst);
        s3.hold_chunk_uploads.store(false, Ordering::SeqCst);
        Self { dir, data, s3, backup }
    }

    /// Waits for the backup to end: its status, summary and standard error.
    async fn finish(self) -> (tempfile::TempDir, PathBuf, S3Server, std::process::Output) {
        let out =
            tokio::time::timeout(Duration::from_secs(180), self.backup.wait_with_output()).await.unwrap().unwrap();
        (self.dir, self.data, self.s3, out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_mid_backup_and_back_within_the_retry_window_completes_and_verifies() {
    // Down for five seconds.
    let outage = Outage::start("outage", 120).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    outage.s3.down.store(false, Ordering::SeqCst);
    let (dir, data, s3, out) = outage.finish().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = summary["backupId"].as_str().unwrap();
    let storage = s3.storage_args("outage");
    agent(&[args(&["verify", "--backup", id]), storage.clone()].concat(), &s3.env()).await.summary();
    let target = dir.path().join("restored");
    let restore = [args(&["restore", "--backup", id, "--datadir", target.to_str().unwrap()]), storage].concat();
    agent(&restore, &s3.env()).await.summary();
    assert!(contents(&target) == contents(&data), "the restore is the datadir, byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_past_the_retry_window_fails_naming_it_and_leaves_what_a_sweep_removes() {
    let (_dir, _data, s3, out) = Outage::start("gone", 3).await.finish().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backup cannot succeed with storage down:\n{stderr}");
    let error = stderr.lines().rfind(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(error.contains("storage s3://bucket/gone: writing gone/chunks/"), "{error}");
    s3.down.store(false, Ordering::SeqCst);

    // Nothing is listed, there is no manifest; the lock (whose release failed too) and the chunks
    // uploaded before the outage remain, for a sweep.
    let storage = s3.storage_args("gone");
    let list = agent(&[args(&["list", "--json"]), storage.clone()].concat(), &s3.env()).await;
    assert_eq!(list.stdout.trim(), "[]", "{}", list.stderr);
    assert!(!s3.object_path("gone/backups").exists() || count_files(&s3.object_path("gone/backups")) == 0);
    let locks = s3.object_path("gone/locks");
    assert_eq!(count_files(&locks), 1, "the failed backup's lock");

    // While the lock is fresh a sweep waits; once stale (its process stopped renewing it) the sweep
    // removes it and every chunk no manifest references.
    let prune = [args(&["prune", "--keep-last", "1"]), storage.clone()].concat();
    let deferred = agent(&prune, &s3.env()).await.summary();
    assert_eq!(deferred["sweep"]["deferredBy"].as_array().map(Vec::len), Some(1), "{deferred}");
    let lock = walkdir::WalkDir::new(&locks).into_iter().filter_map(Result::ok).find(|e| e.file_type().is_file());
    let stale = std::time::SystemTime::now() - Duration::from_secs(11 * 60);
    std::fs::File::options().write(true).open(lock.unwrap().path()).unwrap().set_modified(stale).unwrap();
    let swept = agent(&prune, &s3.env()).await.summary();
    assert_eq!(swept["sweep"].get("deferredBy"), None, "{swept}");
    assert_eq!(count_files(&locks), 0);
    assert_eq!(count_files(&s3.object_path("gone/chunks")), 0, "the partial upload is swept");
}

/// A backup of `data` to `prefix` on `s3`; its id.
async fn backup_to(s3: &S3Server, prefix: &str, data: &Path) -> String {
    let data = data.display().to_string();
    let a = [
        args(&["backup", "--method", "cold", "--datadir", &data, "--chunk-size-kib", "1024"]),
        s3.storage_args(prefix),
    ]
    .concat();
    agent(&a, &s3.env()).await.summary()["backupId"].as_str().unwrap().to_string()
}

/// A datadir made by [`make_datadir`] and its backup, under `prefix` of a fresh S3 server.
async fn backed_up_datadir(prefix: &str, files: usize, mib: usize) -> (tempfile::TempDir, PathBuf, S3Server, String) {
    let dir = tempdir();
    let data = make_datadir(dir.path(), files, mib);
    let s3 = S3Server::start();
    let id = backup_to(&s3, prefix, &data).await;
    (dir, data, s3, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_restore_is_refused_until_overwritten_then_restores_exactly() {
    let (dir, data, s3, id) = backed_up_datadir("killed", 4, 8).await;
    let target = dir.path().join("restored");
    let restore = |extra: &[&str]| {
        let t = target.display().to_string();
        [args(&["restore", "--backup", &id, "--datadir", &t]), args(extra), s3.storage_args("killed")].concat()
    };

    // Killed while its downloads wait: the target holds the marker and part of the files.
    s3.hold_chunk_reads.store(true, Ordering::SeqCst);
    let mut child = agent_command(&restore(&[]), &s3.env()).spawn().unwrap();
    wait_for("the restore's marker", Duration::from_secs(60), || target.join(MARKER).exists()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    s3.hold_chunk_reads.store(false, Ordering::SeqCst);
    assert!(target.join(MARKER).exists());

    let err = agent(&restore(&[]), &s3.env()).await.error();
    assert_eq!(
        err,
        format!(
            "error: target {} is not empty (it holds an interrupted restore); restore into an empty directory or pass --overwrite to replace its contents",
            target.display()
        )
    );
    agent(&restore(&["--overwrite"]), &s3.env()).await.summary();
    assert!(!target.join(MARKER).exists());
    assert!(contents(&target) == contents(&data), "the restore is the datadir, byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_changed_while_a_restore_runs_is_refused_by_its_hash() {
    let (dir, _data, s3, id) = backed_up_datadir("changed", 2, 4).await;
    let manifest = manifest_at(&s3.object_path(&format!("changed/backups/{id}/manifest.json")));
    let file = manifest["files"].as_array().unwrap().iter().find(|f| f["path"] == "app/t1.ibd").unwrap();
    let hash = file["chunks"][2]["hash"].as_str().unwrap().to_string();

    // The restore has read the manifest and waits on its downloads; then the stored chunk changes
    // into another valid frame.
    s3.hold_chunk_reads.store(true, Ordering::SeqCst);
    let target = dir.path().join("restored");
    let t = target.display().to_string();
    let a = [args(&["restore", "--backup", &id, "--datadir", &t]), s3.storage_args("changed")].concat();
    let child = agent_command(&a, &s3.env()).spawn().unwrap();
    wait_for("the restore's marker", Duration::from_secs(60), || target.join(MARKER).exists()).await;
    let other = zstd::bulk::compress(&random_bytes(1 << 20, 7), 3).unwrap();
    std::fs::write(s3.object_path(&format!("changed/chunks/{}/{hash}", &hash[..2])), &other).unwrap();
    s3.hold_chunk_reads.store(false, Ordering::SeqCst);

    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().rfind(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{stderr}"));
    let actual = blake3::hash(&random_bytes(1 << 20, 7)).to_hex().to_string();
    assert_eq!(
        error,
        format!("error: restoring app/t1.ibd (offset 2097152): chunk {hash} is corrupt: content hash is {actual}")
    );
    assert!(target.join(MARKER).exists(), "the half-restored target stays marked");
}

/// Mounts a tmpfs of `mib` MiB on `dir`; unmounted when dropped.
struct SmallVolume(PathBuf);

impl SmallVolume {
    fn mount(dir: &Path, mib: usize) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (as the e2e suite does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_target_out_of_space_fails_naming_enospc_and_the_path() {
    let dir = tempdir();
    let data = make_datadir(dir.path(), 4, 8);
    let storage = vec!["--storage".to_string(), format!("file://{}", dir.path().join("backups").display())];
    let d = data.display().to_string();
    let backup = [args(&["backup", "--method", "cold", "--datadir", &d]), storage.clone()].concat();
    let id = agent(&backup, &[]).await.summary()["backupId"].as_str().unwrap().to_string();

    let volume = dir.path().join("small");
    let _mounted = SmallVolume::mount(&volume, 12);
    let target = volume.join("datadir");
    let t = target.display().to_string();
    let err = agent(&[args(&["restore", "--backup", &id, "--datadir", &t]), storage].concat(), &[]).await.error();
    assert!(err.starts_with(&format!("error: writing {}/app/t", target.display())), "{err}");
    assert!(err.ends_with("No space left on device (os error 28)"), "{err}");
    assert!(target.join(MARKER).exists(), "the half-restored target stays marked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_user_without_a_needed_privilege_is_told_which() {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), 1).await;
    db.exec("CREATE USER backup@'127.0.0.1' IDENTIFIED BY 'pw-for-backup'").await;
    // Everything mariadb-backup needs but RELOAD.
    db.exec("GRANT PROCESS, LOCK TABLES, BINLOG MONITOR, SELECT ON *.* TO backup@'127.0.0.1'").await;
    let url = format!("mysql://backup@127.0.0.1:{}", db.port);
    let storage = vec!["--storage".to_string(), format!("file://{}", dir.path().join("backups").display())];
    let a = mariabackup_args(&url, &db.datadir, &storage);
    let env = vec![("MYSQL_PWD".to_string(), "pw-for-backup".to_string())];
    let failed = agent(&a, &env).await;
    assert_eq!(
        failed.error(),
        "error: the MySQL user backup lacks RELOAD on *.*, which mariadb-backup needs: GRANT RELOAD ON *.* TO backup"
    );
    // mariadb-backup printed the user's grants, password hash included: it is kept nowhere.
    assert!(!failed.stderr.contains("IDENTIFIED BY PASSWORD"), "{}", failed.stderr);

    // With it, the same user backs up (the password reaches mariadb-backup).
    db.exec("GRANT RELOAD ON *.* TO backup@'127.0.0.1'").await;
    agent(&a, &env).await.summary();
}
