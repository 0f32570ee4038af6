//! MyRocks tables through the methods that exist today: `mariabackup` (which copies a RocksDB
//! checkpoint of a live server) and `cold` (the `#rocksdb` directory of a stopped one), each restored and
//! a server started on it with every table's `CHECKSUM TABLE` equal to the source's at the recorded point;
//! and a drill of a MyRocks backup.

mod common;

use common::*;

/// The engine, loaded into a test server.
fn rocksdb() -> Vec<String> {
    vec!["--plugin-load-add=ha_rocksdb".to_string()]
}

/// RocksDB tables beside an InnoDB one, and the writer's table in RocksDB.
async fn load(db: &MariaDb) {
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.r (id INT PRIMARY KEY, payload VARCHAR(200), KEY (payload(20))) ENGINE=ROCKSDB").await;
    db.exec("INSERT INTO app.r SELECT seq, SHA2(seq, 256) FROM app.seq_1_to_50000").await;
    db.exec("CREATE TABLE app.r2 (id BIGINT PRIMARY KEY, v DOUBLE) ENGINE=ROCKSDB").await;
    db.exec("INSERT INTO app.r2 SELECT seq, seq / 3 FROM app.seq_1_to_20000").await;
    db.exec("CREATE TABLE app.i (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB").await;
    db.exec("INSERT INTO app.i SELECT seq, REPEAT('i', seq % 100) FROM app.seq_1_to_5000").await;
    db.exec("CREATE TABLE app.w (id BIGINT PRIMARY KEY, v VARCHAR(64)) ENGINE=ROCKSDB").await;
    db.exec("SET GLOBAL rocksdb_force_flush_memtable_now = 1").await;
}

fn restore(target: &std::path::Path, storage: &[String], id: &str) -> Vec<String> {
    let mut a = args(&["restore", "--backup", id, "--datadir"]);
    a.push(target.display().to_string());
    a.extend(storage.iter().cloned());
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariabackup_and_cold_back_up_myrocks_tables_restorably() {
    let dir = tempdir();
    let db = MariaDb::start_with(dir.path(), 21, &rocksdb()).await;
    load(&db).await;
    let s3 = S3Server::start();
    let storage = s3.storage_args("myrocks");

    // mariabackup under a writer of a RocksDB table: the restored rows are those up to the recorded GTID.
    let writer = Writer::start(db.pool());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let hot = agent(&mariabackup_args(&db.url(), &db.datadir, &storage), &s3.env()).await;
    let written = writer.stop().await;
    let hot = hot.summary();
    let recorded = hot["positions"]["gtid"]["binlogPos"].as_str().unwrap().to_string();
    let target = dir.path().join("hot");
    agent(&restore(&target, &storage, hot["backupId"].as_str().unwrap()), &s3.env()).await.summary();
    assert!(target.join("#rocksdb").is_dir(), "the RocksDB data is restored as the server's #rocksdb");
    let copy = MariaDb::start_with_on(&target, 22, &rocksdb()).await;
    let k: u64 = copy.value("SELECT COALESCE(MAX(id), 0) FROM app.w").await.parse().unwrap();
    assert!(k > 0 && (k as usize) <= written.len(), "the backup caught the writer: k={k} of {}", written.len());
    assert_eq!(copy.value("SELECT COUNT(*) FROM app.w").await, k.to_string());
    assert_eq!(written[k as usize - 1].1, recorded, "the recorded GTID is the last restored RocksDB transaction's");
    assert_eq!(copy.value("SELECT engine FROM information_schema.tables WHERE table_name = 'r'").await, "ROCKSDB");
    db.exec(&format!("DELETE FROM app.w WHERE id > {k}")).await;
    assert_eq!(copy.checksums("app").await, db.checksums("app").await);
    copy.stop().await;

    // cold, of the stopped server.
    let sums = db.checksums("app").await;
    let gtid = db.value("SELECT @@gtid_binlog_pos").await;
    let datadir = db.datadir.clone();
    db.stop().await;
    let mut cold = args(&["backup", "--method", "cold", "--datadir"]);
    cold.push(datadir.display().to_string());
    cold.extend(storage.iter().cloned());
    let cold = agent(&cold, &s3.env()).await.summary();
    assert_eq!(cold["positions"]["gtid"]["binlogPos"], gtid.as_str());
    let target = dir.path().join("cold");
    agent(&restore(&target, &storage, cold["backupId"].as_str().unwrap()), &s3.env()).await.summary();
    let copy = MariaDb::start_with_on(&target, 23, &rocksdb()).await;
    assert_eq!(copy.checksums("app").await, sums);
    assert_eq!(copy.value("SELECT COUNT(*) FROM app.r").await, "50000");

    // A drill starts its private server with the engine, because the restored data has #rocksdb.
    let drill = [args(&["drill", "--backup", cold["backupId"].as_str().unwrap()]), storage.clone()].concat();
    let drilled = agent(&drill, &s3.env()).await.summary();
    assert_eq!(drilled["passed"], true, "{drilled}");
    assert_eq!(drilled["engines"]["ROCKSDB"], 3, "{drilled}");
}
