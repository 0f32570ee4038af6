//! Restore drills and catch-up backups against real MariaDB servers and the S3 server: a drill proves a
//! server starts on a backup and reads every table; a catch-up backup reads nothing of its source but
//! the replication stream.

mod common;

use std::time::Duration;

use common::*;

/// Tables with known row counts in three engines; returns the base tables the server has in all.
async fn load(db: &MariaDb) -> u64 {
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.s (id INT PRIMARY KEY, payload VARCHAR(200)) ENGINE=InnoDB").await;
    db.exec("INSERT INTO app.s SELECT seq, SHA2(seq, 256) FROM app.seq_1_to_20000").await;
    db.exec("CREATE TABLE app.aria (id INT PRIMARY KEY, v TEXT) ENGINE=Aria").await;
    db.exec("INSERT INTO app.aria SELECT seq, REPEAT('a', seq % 300) FROM app.seq_1_to_2000").await;
    db.exec("CREATE TABLE app.my (id INT PRIMARY KEY, v DOUBLE) ENGINE=MyISAM").await;
    db.exec("INSERT INTO app.my SELECT seq, seq / 7 FROM app.seq_1_to_3000").await;
    db.exec("CREATE TABLE app.w (id BIGINT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB").await;
    db.value(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') \
         AND table_schema NOT IN ('information_schema', 'performance_schema')",
    )
    .await
    .parse()
    .unwrap()
}

fn drill_args(storage: &[String], scratch: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["drill", "--scratch"]);
    a.push(scratch.display().to_string());
    a.extend(args(extra));
    a.extend(storage.iter().cloned());
    a
}

fn cold_args(datadir: &std::path::Path, storage: &[String]) -> Vec<String> {
    let mut a = args(&["backup", "--method", "cold", "--datadir"]);
    a.push(datadir.display().to_string());
    a.extend(storage.iter().cloned());
    a
}

fn listed(storage: &[String], env: &[(String, String)]) -> impl std::future::Future<Output = serde_json::Value> {
    let a = [args(&["list", "--json"]), storage.to_vec()].concat();
    let env = env.to_vec();
    async move { serde_json::from_str(&agent(&a, &env).await.stdout).unwrap() }
}

fn is_empty_dir(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_of_good_backups_passes_with_exact_counts_and_positions() {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), 11).await;
    let tables = load(&db).await;
    db.exec("INSERT INTO app.w SELECT seq, CONCAT('row-', seq) FROM app.seq_1_to_10").await;
    let s3 = S3Server::start();
    let storage = s3.storage_args("drills");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    // A mariabackup backup: InnoDB's own record of its last binary-log coordinate must not pass the
    // manifest's (the last transaction here is InnoDB's, so it equals it).
    let full = full_backup(&db, &storage, &s3.env()).await;
    let full_id = full["backupId"].as_str().unwrap();
    let drilled = agent(&drill_args(&storage, &scratch, &[]), &s3.env()).await.summary();
    assert_eq!(drilled["operation"], "drill");
    assert_eq!(drilled["passed"], true, "{drilled}");
    assert_eq!(drilled["backupId"], full_id);
    assert_eq!(drilled["tablesChecked"], tables);
    let engines: serde_json::Map<String, serde_json::Value> = db
        .rows(
            "SELECT COALESCE(engine, ''), COUNT(*) FROM information_schema.tables WHERE table_type IN \
             ('BASE TABLE', 'SYSTEM VERSIONED') AND table_schema NOT IN ('information_schema', \
             'performance_schema') GROUP BY 1",
        )
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse::<u64>().unwrap().into()))
        .collect();
    assert_eq!(drilled["engines"], serde_json::Value::Object(engines), "every engine's tables checked");
    let rows_in_mysql: u64 = drilled["rows"].as_u64().unwrap() - (20_000 + 2_000 + 3_000 + 10);
    assert!(rows_in_mysql > 0 && rows_in_mysql < 5_000, "rows outside app: {rows_in_mysql}");
    assert_eq!(drilled["position"]["source"], "innodb", "{drilled}");
    assert_eq!(drilled["position"]["matches"], true, "{drilled}");
    let binlog = &full["positions"]["binlog"];
    assert_eq!(drilled["position"]["manifest"], format!("{}:{}", binlog["file"].as_str().unwrap(), binlog["position"]));
    assert!(drilled["serverVersion"].as_str().unwrap().contains("MariaDB"));
    assert!(drilled["scratchBytes"].as_u64().unwrap() >= full["totals"]["dataBytes"].as_u64().unwrap());
    assert!(is_empty_dir(&scratch), "the scratch data is removed");

    // The record sits beside the backup with every table's rows; its manifest is untouched; list shows it.
    let record_path = s3.object_path(&format!("drills/backups/{full_id}/drill.json"));
    let record = || serde_json::from_slice::<serde_json::Value>(&std::fs::read(&record_path).unwrap()).unwrap();
    let rows_of = |record: &serde_json::Value, t: &str| {
        record["tables"].as_array().unwrap().iter().find(|e| e["table"] == t).unwrap()["rows"].clone()
    };
    let record_now = record();
    let count = |t: &str| rows_of(&record_now, t);
    assert_eq!(
        (count("app.s"), count("app.aria"), count("app.my"), count("app.w")),
        (20_000.into(), 2_000.into(), 3_000.into(), 10.into())
    );
    let list = listed(&storage, &s3.env()).await;
    assert_eq!(list[0]["lastDrill"]["passed"], true);
    assert_eq!(list[0]["lastDrill"]["tablesChecked"], tables);

    // A point in time after it, through a binary-log incremental: replayed, checked, position recorded.
    db.exec("INSERT INTO app.w SELECT seq, CONCAT('row-', seq) FROM app.seq_11_to_13").await;
    let target = db.value("SELECT @@gtid_binlog_pos").await;
    db.exec("INSERT INTO app.w VALUES (14, 'after the target')").await;
    let mut incremental = args(&["backup", "--method", "binlog", "--mysql-url", &db.url()]);
    incremental.extend(storage.iter().cloned());
    let inc = agent(&incremental, &s3.env()).await.summary();
    let inc_id = inc["backupId"].as_str().unwrap();
    let refused = agent(&drill_args(&storage, &scratch, &["--backup", inc_id]), &s3.env()).await;
    assert!(refused.error().starts_with(&format!("error: backup {inc_id} is an incremental")), "{}", refused.error());
    let until = agent(&drill_args(&storage, &scratch, &["--until", &target]), &s3.env()).await.summary();
    assert_eq!(until["passed"], true, "{until}");
    assert_eq!(until["backupId"], full_id, "the record goes beside the full backup replayed from");
    assert_eq!(until["until"], format!("GTID {target}"));
    assert_eq!(rows_of(&record(), "app.w"), 13, "the rows up to the target, not the one after it");
    assert_eq!(
        (until["position"]["source"].clone(), until["position"]["server"].clone()),
        ("replicaPosition".into(), target.clone().into())
    );
    assert!(is_empty_dir(&scratch));

    // A cold backup: the server reads its GTID state from the restored binary logs.
    let gtid = db.value("SELECT @@gtid_binlog_pos").await;
    let datadir = db.datadir.clone();
    db.stop().await;
    let cold = agent(&cold_args(&datadir, &storage), &s3.env()).await.summary();
    let drilled = agent(&drill_args(&storage, &scratch, &["--backup", cold["backupId"].as_str().unwrap()]), &s3.env())
        .await
        .summary();
    assert_eq!(drilled["passed"], true, "{drilled}");
    assert_eq!(drilled["position"]["source"], "binaryLogs");
    assert_eq!(drilled["position"]["server"], gtid.as_str());
    assert_eq!(drilled["tablesChecked"], tables);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_of_a_corrupted_page_fails_naming_the_table() {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), 12).await;
    load(&db).await;
    let datadir = db.datadir.clone();
    db.stop().await;
    // Flip bytes in the middle of a leaf page of app.s: every hash of the backup will be right.
    let ibd = datadir.join("app/s.ibd");
    let mut bytes = std::fs::read(&ibd).unwrap();
    let page = 16 * 1024;
    for b in &mut bytes[5 * page + 4000..5 * page + 4100] {
        *b ^= 0x5a;
    }
    std::fs::write(&ibd, bytes).unwrap();
    let storage = vec!["--storage".to_string(), format!("file://{}", dir.path().join("backups").display())];
    let backup = agent(&cold_args(&datadir, &storage), &[]).await.summary();
    let verified = agent(&[args(&["verify"]), storage.clone()].concat(), &[]).await.summary();
    assert_eq!(verified["report"]["damaged"], serde_json::json!([]), "the hashes cannot see it");

    let scratch = dir.path().join("scratch");
    let run = agent(&drill_args(&storage, &scratch, &[]), &[]).await;
    assert!(!run.status.success(), "the drill fails");
    let err = run.error();
    let id = backup["backupId"].as_str().unwrap();
    assert_eq!(err, format!("error: drill of backup {id} failed: CHECK TABLE app.s: Corrupt"));
    assert!(is_empty_dir(&scratch), "the scratch data is removed after a failure too");
    let list = listed(&storage, &[]).await;
    assert_eq!(list[0]["lastDrill"]["passed"], false);
    assert!(list[0]["lastDrill"]["reason"].as_str().unwrap().contains("app.s"));
    let text = agent(&[args(&["list"]), storage.clone()].concat(), &[]).await.stdout;
    assert!(text.contains("FAILED "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_with_a_missing_chunk_fails_before_starting_a_server() {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), 13).await;
    load(&db).await;
    let datadir = db.datadir.clone();
    db.stop().await;
    let storage = vec!["--storage".to_string(), format!("file://{}", dir.path().join("backups").display())];
    agent(&cold_args(&datadir, &storage), &[]).await.summary();
    let chunk = walk_files(&dir.path().join("backups/chunks"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&chunk).unwrap();

    let scratch = dir.path().join("scratch");
    let run = agent(&drill_args(&storage, &scratch, &["--parallel", "1"]), &[]).await;
    assert!(!run.status.success());
    let err = run.error();
    assert!(err.contains("restoring "), "{err}");
    let list = listed(&storage, &[]).await;
    let last = &list[0]["lastDrill"];
    assert_eq!(last["passed"], false);
    assert_eq!(last["durations"]["startSeconds"], 0.0, "no server was started: {last}");
    assert!(last.get("serverVersion").is_none(), "{last}");
    assert!(is_empty_dir(&scratch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catchup_backup_restores_to_the_source_at_its_position_without_reading_its_datadir() {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), 14).await;
    load(&db).await;
    let s3 = S3Server::start();
    let storage = s3.storage_args("catchup");
    let scratch = dir.path().join("scratch");

    // None to start from: said so.
    let mut catchup = args(&["backup", "--method", "catchup", "--mysql-url", &db.url(), "--scratch"]);
    catchup.push(scratch.display().to_string());
    catchup.extend(storage.iter().cloned());
    let refused = agent(&catchup, &s3.env()).await;
    assert!(!refused.status.success());
    assert!(refused.error().contains("a catch-up backup starts from a full backup, and s3://"), "{}", refused.error());

    let full = full_backup(&db, &storage, &s3.env()).await;
    db.exec("UPDATE app.s SET payload = 'changed' WHERE id <= 200").await;

    // From here on, nothing may read the source's table files: their access times go far back, and a
    // read would move them (this file system records reads, as the control file shows).
    let app = db.datadir.join("app");
    let watched: Vec<_> = walk_files(&app).into_iter().filter(|p| p.file_stem().is_none_or(|s| s != "w")).collect();
    let long_ago = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let set_atime = |p: &std::path::Path| {
        let file = std::fs::File::options().write(true).open(p).unwrap();
        file.set_times(std::fs::FileTimes::new().set_accessed(long_ago)).unwrap()
    };
    let control = dir.path().join("control");
    std::fs::write(&control, b"read me").unwrap();
    set_atime(&control);
    watched.iter().for_each(|p| set_atime(p));
    std::fs::read(&control).unwrap();
    let atime = |p: &std::path::Path| std::os::unix::fs::MetadataExt::atime(&std::fs::metadata(p).unwrap());
    let records_reads = atime(&control) > 1_600_000_000;

    let writer = Writer::start(db.pool());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = agent(&catchup, &s3.env()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = writer.stop().await;
    let summary = run.summary();
    assert_eq!(summary["method"], "catchup");
    let info = &summary["catchup"];
    assert_eq!(info["base"], full["backupId"]);
    assert!(info["readDatadir"].as_str().unwrap().starts_with(&scratch.display().to_string()), "{info}");
    let reached = summary["positions"]["gtid"]["binlogPos"].as_str().unwrap().to_string();
    assert_eq!(info["reached"], reached.as_str());
    let totals = &summary["totals"];
    assert!(totals["reusedChunks"].as_u64().unwrap() > 0, "unchanged chunks are not uploaded: {totals}");
    assert!(is_empty_dir(&scratch), "the scratch datadir is removed");
    if !records_reads {
        eprintln!("this file system does not record reads: the summary alone shows what was read");
    }
    if records_reads {
        for p in &watched {
            assert_eq!(atime(p), 1_600_000_000, "{} was read", p.display());
        }
    }

    // Restored, it holds exactly the writer's rows up to the recorded GTID, and the churn.
    let target = dir.path().join("restored");
    let mut restore = args(&["restore", "--backup", summary["backupId"].as_str().unwrap(), "--datadir"]);
    restore.push(target.display().to_string());
    restore.extend(storage.iter().cloned());
    agent(&restore, &s3.env()).await.summary();
    let copy = MariaDb::start_on(&target, 15).await;
    let k: u64 = copy.value("SELECT COALESCE(MAX(id), 0) FROM app.w").await.parse().unwrap();
    assert!(k > 0, "the writer's rows before the catch-up are in: {k} of {}", written.len());
    assert_eq!(copy.value("SELECT COUNT(*) FROM app.w").await, k.to_string());
    assert_eq!(written[k as usize - 1].1, reached, "the recorded GTID is the last restored transaction's");
    assert_eq!(copy.value("SELECT COUNT(*) FROM app.s WHERE payload = 'changed'").await, "200");
    assert_eq!(copy.value("SELECT @@gtid_slave_pos").await, reached, "a replica made from it continues from there");
    db.exec(&format!("DELETE FROM app.w WHERE id > {k}")).await;
    assert_eq!(copy.checksums("app").await, db.checksums("app").await);
    // A drill of it checks its position where it records it: in gtid_slave_pos.
    let drill = [args(&["drill", "--backup", summary["backupId"].as_str().unwrap()]), storage.clone()].concat();
    let drilled = agent(&drill, &s3.env()).await.summary();
    assert_eq!(drilled["passed"], true, "{drilled}");
    assert_eq!(drilled["position"]["source"], "replicaPosition");
    assert_eq!(drilled["position"]["server"], reached.as_str());
    // What it stored is the data: no replication settings or relay logs, no stale binary logs or
    // position files of the backup it started from.
    let id = summary["backupId"].as_str().unwrap();
    let manifest = manifest_at(&s3.object_path(&format!("catchup/backups/{id}/manifest.json")));
    let paths: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"app/w.ibd") && paths.contains(&"ibdata1"), "{paths:?}");
    for stale in ["master.info", "relay-log.info", "relay-bin", "mysql-bin.", "xtrabackup_", "mariadb_backup_"] {
        assert!(!paths.iter().any(|p| p.contains(stale)), "{stale} stored: {paths:?}");
    }
    assert_eq!(manifest["formatVersion"], 3, "a catch-up manifest is format 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_drill_and_catchup_input_is_named() {
    let dir = tempdir();
    let storage = vec!["--storage".to_string(), format!("file://{}", dir.path().join("backups").display())];
    let scratch = dir.path().join("scratch");
    let missing = agent(&drill_args(&storage, &scratch, &["--backup", "20990101T000000Z-000000"]), &[]).await;
    assert!(missing.error().ends_with("no complete backup with id \"20990101T000000Z-000000\""), "{}", missing.error());
    let none = agent(&drill_args(&storage, &scratch, &[]), &[]).await;
    assert!(none.error().ends_with(": no complete backup found"), "{}", none.error());
    let past = agent(&drill_args(&storage, &scratch, &["--until", "0-1-5"]), &[]).await;
    assert_eq!(past.error(), "error: no full backup before GTID 0-1-5: the target is older than every backup");

    let catchup = |extra: &[&str]| [args(&["backup", "--method", "catchup"]), args(extra), storage.clone()].concat();
    let no_url = agent(&catchup(&[]), &[]).await;
    assert_eq!(no_url.error(), "error: --method catchup needs --mysql-url (or MYSQL_URL)");
    let socket = agent(&catchup(&["--mysql-url", "mysql://root@localhost?socket=/run/mysqld/mysqld.sock"]), &[]).await;
    assert_eq!(
        socket.error(),
        "error: catch-up replicates over TCP: the source /run/mysqld/mysqld.sock must be given as mysql://user@host:port"
    );
}
