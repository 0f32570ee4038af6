//! Backups of real MariaDB servers through the agent binary, restored and started again: the data and
//! positions must be exactly those of the backup's consistent point.

mod common;

use std::time::Duration;

use common::*;

/// Creates `app` with an InnoDB table of `rows` rows, an Aria and a MyISAM table, and the writer's table.
async fn load_sample(db: &MariaDb, rows: u64) {
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.s (id INT PRIMARY KEY, payload VARCHAR(200)) ENGINE=InnoDB").await;
    db.exec(&format!(
        "INSERT INTO app.s SELECT seq, CONCAT(SHA2(seq, 256), SHA2(seq * 7, 224)) FROM app.seq_1_to_{rows}"
    ))
    .await;
    db.exec("CREATE TABLE app.aria (id INT PRIMARY KEY, v TEXT) ENGINE=Aria").await;
    db.exec("INSERT INTO app.aria SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) FROM app.seq_1_to_2000").await;
    db.exec("CREATE TABLE app.my (id INT PRIMARY KEY, v DOUBLE) ENGINE=MyISAM").await;
    db.exec("INSERT INTO app.my SELECT seq, seq / 7 FROM app.seq_1_to_3000").await;
    db.exec("CREATE TABLE app.w (id BIGINT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB").await;
}

fn file_storage(dir: &std::path::Path) -> Vec<String> {
    vec!["--storage".into(), format!("file://{}", dir.join("backups").display())]
}

fn backup_args(method: &str, datadir: &std::path::Path, storage: &[String], extra: &[&str]) -> Vec<String> {
    let mut a = args(&["backup", "--method", method, "--datadir"]);
    a.push(datadir.display().to_string());
    a.extend(storage.iter().cloned());
    a.extend(args(&["--mariabackup-defaults-file", "/dev/null", "--progress-interval", "1"]));
    a.extend(args(extra));
    a
}

fn restore_args(target: &std::path::Path, storage: &[String], backup: &str) -> Vec<String> {
    let mut a = args(&["restore", "--backup", backup, "--datadir"]);
    a.push(target.display().to_string());
    a.extend(storage.iter().cloned());
    a
}

/// A running server holding `rows` sample rows, and an S3 server with storage arguments for `prefix`.
async fn sample_on_s3(server_id: u32, rows: u64, prefix: &str) -> (tempfile::TempDir, MariaDb, S3Server, Vec<String>) {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), server_id).await;
    load_sample(&db, rows).await;
    let s3 = S3Server::start();
    let storage = s3.storage_args(prefix);
    (dir, db, s3, storage)
}

/// A stopped server's datadir holding `rows` sample rows, and file storage beside it.
async fn stopped_sample(server_id: u32, rows: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<String>) {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), server_id).await;
    load_sample(&db, rows).await;
    db.stop().await;
    let datadir = dir.path().join("data");
    let storage = file_storage(dir.path());
    (dir, datadir, storage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariabackup_under_write_load_restores_exactly_the_recorded_point() {
    let (dir, db, s3, storage) = sample_on_s3(1, 20_000, "prod-db").await;

    let writer = Writer::start(db.pool());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut backup = backup_args("mariabackup", &db.datadir, &storage, &["--mysql-url", &db.url()]);
    backup.extend(args(&["--summary-file"]));
    backup.push(dir.path().join("summary.json").display().to_string());
    let run = agent(&backup, &s3.env()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = writer.stop().await;
    let summary = run.summary();
    assert_eq!(summary["method"], "mariabackup");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap(),
        summary,
        "the summary file holds the printed summary"
    );
    // Not on a terminal, progress is logged with its fields; the last line comes when the backup ends.
    let last = run.stderr.lines().rfind(|l| l.contains(" progress ")).expect("a progress line in the log");
    for field in ["operation=\"backup\"", "bytes_done=", "bytes_total=", "percent=", "rate_mib_s="] {
        assert!(last.contains(field), "{field} missing from {last:?}");
    }
    let positions = &summary["positions"];
    assert_eq!(positions["flavor"], "mariadb");
    assert_eq!(positions["serverId"], 1);
    assert!(positions["version"].as_str().unwrap().contains("MariaDB"));
    let recorded_gtid = positions["gtid"]["binlogPos"].as_str().unwrap().to_string();
    assert!(positions["binlog"]["file"].as_str().unwrap().starts_with("mysql-bin."));

    // Restore into a new directory and start a second server on it.
    let target = dir.path().join("restored");
    let restored = agent(&restore_args(&target, &storage, "latest"), &s3.env()).await.summary();
    assert_eq!(restored["backupId"], summary["backupId"]);
    assert!(!target.join(".mysql-backup-operator-restore-in-progress").exists());
    let copy = MariaDb::start_on(&target, 2).await;

    // The restored rows are exactly the writer's rows up to one k, and k's GTID is the recorded one.
    let k: u64 = copy.value("SELECT COALESCE(MAX(id), 0) FROM app.w").await.parse().unwrap();
    assert!(k > 0 && (k as usize) < written.len(), "backup caught the writer mid-way: k={k} of {}", written.len());
    assert_eq!(copy.value("SELECT COUNT(*) FROM app.w").await, k.to_string());
    assert_eq!(copy.value(&format!("SELECT v FROM app.w WHERE id = {k}")).await, format!("row-{k}"));
    assert_eq!(written[k as usize - 1].1, recorded_gtid, "recorded GTID is the last restored transaction's");

    // Take the source back to the backup's point; then every table must match.
    db.exec(&format!("DELETE FROM app.w WHERE id > {k}")).await;
    assert_eq!(copy.checksums("app").await, db.checksums("app").await);
    assert_eq!(copy.checksums("mysql").await.len(), db.checksums("mysql").await.len());

    // A replica made from it starts replication from the recorded position.
    copy.exec(&format!("SET GLOBAL gtid_slave_pos = '{recorded_gtid}'")).await;
    assert_eq!(copy.value("SELECT @@gtid_current_pos").await, recorded_gtid);

    // list and verify see it.
    let list = agent(&[args(&["list", "--json"]), storage.clone()].concat(), &s3.env()).await;
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed[0]["backupId"], summary["backupId"]);
    assert_eq!(listed[0]["positions"]["gtid"]["binlogPos"], recorded_gtid.as_str());
    let verified = agent(&[args(&["verify", "--backup", "latest"]), storage.clone()].concat(), &s3.env()).await;
    assert_eq!(verified.summary()["report"]["damaged"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_backup_of_a_stopped_server_restores_data_and_gtid_state() {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), 3).await;
    load_sample(&db, 5_000).await;
    db.exec("INSERT INTO app.w VALUES (1, 'one'), (2, 'two')").await;
    let source_sums = db.checksums("app").await;
    let source_gtid = db.value("SELECT @@gtid_binlog_pos").await;
    let datadir = db.datadir.clone();

    // A live server is refused, naming the evidence.
    let storage = file_storage(dir.path());
    let refused = agent(&backup_args("cold", &datadir, &storage, &[]), &[]).await;
    let err = refused.error();
    assert!(err.contains("a running server was detected"), "{err}");
    assert!(err.contains(&datadir.display().to_string()), "{err}");
    // The myrocks method needs the engine, which this server has not loaded.
    let mut myrocks = backup_args("myrocks", &datadir, &storage, &[]);
    myrocks.extend(args(&["--mysql-url", &db.url()]));
    assert_eq!(
        agent(&myrocks, &[]).await.error(),
        format!(
            "error: method myrocks needs the RocksDB engine, and the server at 127.0.0.1:{} has no active ROCKSDB plugin (it is loaded with --plugin-load-add=ha_rocksdb)",
            db.port
        )
    );
    db.stop().await;

    let summary = agent(&backup_args("cold", &datadir, &storage, &[]), &[]).await.summary();
    assert_eq!(summary["method"], "cold");
    assert_eq!(summary["positions"]["gtid"]["binlogPos"], source_gtid.as_str());
    assert_eq!(summary["positions"]["serverId"], 3);
    let binlog_file = summary["positions"]["binlog"]["file"].as_str().unwrap();
    let binlog_len = std::fs::metadata(datadir.join(binlog_file)).unwrap().len();
    assert_eq!(summary["positions"]["binlog"]["position"], binlog_len);

    let target = dir.path().join("restored");
    agent(&restore_args(&target, &storage, summary["backupId"].as_str().unwrap()), &[]).await.summary();
    let copy = MariaDb::start_on(&target, 3).await;
    assert_eq!(copy.checksums("app").await, source_sums);
    assert_eq!(copy.value("SELECT @@gtid_binlog_pos").await, source_gtid);
    assert_eq!(copy.rows("SELECT id, v FROM app.w ORDER BY id").await, vec![vec!["1", "one"], vec!["2", "two"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_backup_after_one_percent_churn_uploads_a_small_fraction() {
    let (dir, db, s3, storage) = sample_on_s3(4, 100_000, "dedup").await;
    let extra = ["--mysql-url", &db.url(), "--chunk-size-kib", "1024"];
    // A server in steady state has written its pages; a bulk load just now has not.
    let settle = async || {
        db.exec("FLUSH TABLES app.s FOR EXPORT").await;
        db.exec("UNLOCK TABLES").await;
    };
    settle().await;
    let first = agent(&backup_args("mariabackup", &db.datadir, &storage, &extra), &s3.env()).await.summary();
    // ~1% of the rows, in one key range, as hot rows usually are.
    db.exec("UPDATE app.s SET payload = CONCAT('changed-', id) WHERE id BETWEEN 40001 AND 41000").await;
    settle().await;
    let second = agent(&backup_args("mariabackup", &db.datadir, &storage, &extra), &s3.env()).await.summary();
    let first_up = first["totals"]["uploadedBytes"].as_u64().unwrap();
    let second_up = second["totals"]["uploadedBytes"].as_u64().unwrap();
    let data = second["totals"]["dataBytes"].as_u64().unwrap();
    eprintln!("first upload {first_up} B, second upload {second_up} B of {data} B of data");
    assert!(second["totals"]["reusedChunks"].as_u64().unwrap() > 0);
    assert!(second_up * 10 < first_up, "second backup uploaded {second_up} B, first {first_up} B: expected < 10%");

    // Both backups restore on their own.
    let target = dir.path().join("restored");
    agent(&restore_args(&target, &storage, second["backupId"].as_str().unwrap()), &s3.env()).await.summary();
    let copy = MariaDb::start_on(&target, 5).await;
    assert_eq!(copy.checksums("app").await, db.checksums("app").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunk_fails_verify_and_restore_naming_the_file() {
    let (dir, datadir, storage) = stopped_sample(6, 2_000).await;
    let summary = agent(&backup_args("cold", &datadir, &storage, &[]), &[]).await.summary();
    let id = summary["backupId"].as_str().unwrap();

    // Damage the first chunk of app/s.ibd with another valid zstd frame.
    let manifest = manifest_at(&dir.path().join(format!("backups/backups/{id}/manifest.json")));
    let file = manifest["files"].as_array().unwrap().iter().find(|f| f["path"] == "app/s.ibd").unwrap();
    let hash = file["chunks"][0]["hash"].as_str().unwrap();
    let chunk = dir.path().join(format!("backups/chunks/{}/{hash}", &hash[..2]));
    std::fs::write(&chunk, zstd::bulk::compress(b"not the original bytes", 3).unwrap()).unwrap();

    let err = agent(&[args(&["verify", "--backup", id]), storage.clone()].concat(), &[]).await.error();
    assert!(err.starts_with(&format!("error: backup {id} is damaged: 1 damaged chunk(s) in app/s.ibd")), "{err}");

    let target = dir.path().join("restored");
    let err = agent(&restore_args(&target, &storage, id), &[]).await.error();
    assert!(err.starts_with("error: restoring app/s.ibd (offset 0): chunk "), "{err}");
    assert!(err.contains("is corrupt"), "{err}");
    assert!(target.join(".mysql-backup-operator-restore-in-progress").exists(), "half-restored target stays marked");
    let again = agent(&restore_args(&target, &storage, id), &[]).await.error();
    assert!(again.contains("it holds an interrupted restore"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backup_leaves_no_backup_and_the_next_one_resumes() {
    let (dir, datadir, storage) = stopped_sample(7, 100_000).await;
    // Slow on purpose (level 19, one chunk at a time) so the kill lands mid-way.
    let slow = ["--compression-level", "19", "--chunk-size-kib", "256", "--parallel", "1", "--max-in-flight", "1"];
    let mut child = agent_command(&backup_args("cold", &datadir, &storage, &slow), &[]).spawn().unwrap();
    let chunks = dir.path().join("backups/chunks");
    let count_chunks = || walkdir_count(&chunks);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while count_chunks() < 5 {
        assert!(std::time::Instant::now() < deadline, "backup stored no chunks in 120 s");
        assert!(child.try_wait().unwrap().is_none(), "backup finished before it could be killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let stored_before = count_chunks();

    let list = agent(&[args(&["list"]), storage.clone()].concat(), &[]).await;
    assert!(list.status.success());
    assert_eq!(list.stdout.lines().count(), 1, "only the header, no backup:\n{}", list.stdout);
    let err = agent(&restore_args(&dir.path().join("r0"), &storage, "latest"), &[]).await.error();
    assert!(err.ends_with("no complete backup found"), "{err}");

    let summary = agent(&backup_args("cold", &datadir, &storage, &["--chunk-size-kib", "256"]), &[]).await.summary();
    let reused = summary["totals"]["reusedChunks"].as_u64().unwrap();
    assert!(reused as usize >= stored_before, "resumed backup reused {reused} of {stored_before} stored chunks");
    let target = dir.path().join("restored");
    agent(&restore_args(&target, &storage, "latest"), &[]).await.summary();
    let copy = MariaDb::start_on(&target, 7).await;
    assert_eq!(copy.value("SELECT COUNT(*) FROM app.s").await, "100000");
}

fn walkdir_count(dir: &std::path::Path) -> usize {
    let Ok(top) = std::fs::read_dir(dir) else { return 0 };
    top.filter_map(Result::ok)
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|d| d.filter_map(Result::ok))
        .filter(|f| f.file_name().len() == 64)
        .count()
}
