//! MyRocks tables through every method that copies them: `mariabackup` (which copies a RocksDB
//! checkpoint of a live server), `cold` (the `#rocksdb` directory of a stopped one) and `myrocks`
//! (checkpoint rounds, SST files storage holds taken over unread), each restored and a server started on
//! it with every table's `CHECKSUM TABLE` equal to the source's at the recorded point; `auto` choosing
//! between `mariabackup` and `myrocks`; a drill of a MyRocks backup; a `myrocks` run killed mid-round.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

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
    // `auto` picks it: the RocksDB data here is smaller than the rest.
    let writer = Writer::start(db.pool());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let auto: Vec<String> = mariabackup_args(&db.url(), &db.datadir, &storage)
        .into_iter()
        .map(|a| if a == "mariabackup" { "auto".into() } else { a })
        .collect();
    let hot = agent(&auto, &s3.env()).await;
    let written = writer.stop().await;
    let hot = hot.summary();
    assert_eq!(hot["method"], "mariabackup");
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

/// The checkpoint directories in the datadir.
fn checkpoints(db: &MariaDb) -> Vec<String> {
    let entries = std::fs::read_dir(&db.datadir).unwrap().filter_map(Result::ok);
    let names = entries.map(|e| e.file_name().to_string_lossy().into_owned());
    names.filter(|n| n.starts_with("#mysql-backup-operator-checkpoint-")).collect()
}

fn myrocks_args(db: &MariaDb, storage: &[String]) -> Vec<String> {
    let mut a = args(&["backup", "--method", "myrocks", "--mysql-url", &db.url(), "--datadir"]);
    a.push(db.datadir.display().to_string());
    a.extend(args(&["--mariabackup-defaults-file", "/dev/null"]));
    a.extend(storage.iter().cloned());
    a
}

/// A backup taken while `app.w` (RocksDB) is written, one row a transaction, with a trigger copying each
/// row into `app.wi` (InnoDB) in the same transaction.
struct WrittenBackup {
    summary: serde_json::Value,
    stderr: String,
    written: Vec<(u64, String)>,
}

async fn under_writer(db: &MariaDb, backup: &[String], s3: &S3Server) -> WrittenBackup {
    let writer = Writer::start(db.pool());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = agent(backup, &s3.env()).await;
    let written = writer.stop().await;
    WrittenBackup { summary: run.summary(), stderr: run.stderr, written }
}

impl WrittenBackup {
    /// Restores the backup into `target` and starts a server on it: both engines hold the writer's rows
    /// up to the recorded GTID, and every table's checksum is the source's at that point. Returns the
    /// running copy.
    async fn restores_exactly(
        &self,
        db: &MariaDb,
        storage: &[String],
        s3: &S3Server,
        target: &std::path::Path,
        server_id: u32,
    ) -> MariaDb {
        let id = self.summary["backupId"].as_str().unwrap();
        agent(&restore(target, storage, id), &s3.env()).await.summary();
        let copy = MariaDb::start_with_on(target, server_id, &rocksdb()).await;
        let k: u64 = copy.value("SELECT COALESCE(MAX(id), 0) FROM app.w").await.parse().unwrap();
        assert!(k > 0 && (k as usize) <= self.written.len(), "k={k} of {}", self.written.len());
        let recorded = self.summary["positions"]["gtid"]["binlogPos"].as_str().unwrap();
        assert_eq!(self.written[k as usize - 1].1, recorded, "the recorded GTID is the last restored transaction's");
        for table in ["app.w", "app.wi"] {
            let rows = copy.rows(&format!("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM {table}")).await;
            assert_eq!(rows, vec![vec![k.to_string(), k.to_string()]], "{table}: RocksDB and InnoDB at one commit");
        }
        db.exec(&format!("DELETE FROM app.w WHERE id > {k}")).await;
        db.exec(&format!("DELETE FROM app.wi WHERE id > {k}")).await;
        assert_eq!(copy.checksums("app").await, db.checksums("app").await);
        copy
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_myrocks_method_takes_over_the_ssts_storage_holds_and_restores_exactly() {
    let dir = tempdir();
    let options = rocksdb();
    let db = MariaDb::start_with(dir.path(), 24, &options).await;
    load(&db).await;
    db.exec("INSERT INTO app.r2 SELECT seq, seq / 7 FROM app.seq_20001_to_400000").await;
    // Mostly RocksDB data, so that `auto` picks this method.
    db.exec("INSERT INTO app.r SELECT seq, SHA2(seq, 256) FROM app.seq_50001_to_300000").await;
    db.exec("CREATE TABLE app.wi (id BIGINT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB").await;
    db.exec("CREATE TRIGGER app.w_to_wi AFTER INSERT ON app.w FOR EACH ROW INSERT INTO app.wi VALUES (NEW.id, NEW.v)")
        .await;
    // Data as a server that has run a while holds it: compacted to the bottom level, where RocksDB
    // rewrites a file only when a compaction reaches its keys. (Freshly written bottom files are
    // rewritten once anyway, to drop their sequence numbers; that would pass for churn.)
    db.exec("SET GLOBAL rocksdb_force_flush_memtable_now = 1").await;
    db.exec("SET GLOBAL rocksdb_compact_cf = 'default'").await;
    let s3 = S3Server::start();
    let storage = s3.storage_args("myrocks-method");
    // A backup that fails mid-round (storage gone while it sends) removes its checkpoint itself.
    s3.hold_chunk_uploads.store(true, Ordering::SeqCst);
    let failing = [myrocks_args(&db, &storage), args(&["--storage-retry-timeout", "1"])].concat();
    let env = s3.env();
    let failed = tokio::spawn(async move { agent(&failing, &env).await });
    wait_for("a checkpoint", Duration::from_secs(60), || !checkpoints(&db).is_empty()).await;
    s3.down.store(true, Ordering::SeqCst);
    s3.hold_chunk_uploads.store(false, Ordering::SeqCst);
    let error = failed.await.unwrap().error();
    s3.down.store(false, Ordering::SeqCst);
    assert!(error.contains("storage s3://"), "{error}");
    assert_eq!(checkpoints(&db), Vec::<String>::new(), "a failed run removes its checkpoint");

    // A backup killed mid-round (its uploads held, so it stops in a round) leaves its checkpoint, and
    // no manifest: nothing is listed.
    s3.hold_chunk_uploads.store(true, Ordering::SeqCst);
    let mut killed = agent_command(&myrocks_args(&db, &storage), &s3.env()).spawn().unwrap();
    wait_for("a checkpoint", Duration::from_secs(60), || !checkpoints(&db).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    s3.hold_chunk_uploads.store(false, Ordering::SeqCst);
    assert!(!checkpoints(&db).is_empty(), "SIGKILL leaves the checkpoint behind");
    let list = agent(&[args(&["list", "--json"]), storage.clone()].concat(), &s3.env()).await;
    assert_eq!(list.stdout.trim(), "[]", "a killed backup is not listed: {}", list.stderr);
    assert!(walk_files(&s3.object_path("myrocks-method")).iter().all(|p| !p.ends_with("manifest.json")), "no manifest");

    // The first full, under a writer whose every transaction commits to both engines.
    let first = under_writer(&db, &myrocks_args(&db, &storage), &s3).await;
    assert_eq!(first.summary["method"], "myrocks");
    assert_eq!(checkpoints(&db), Vec::<String>::new(), "the killed run's checkpoint is removed, and this one's");
    first.restores_exactly(&db, &storage, &s3, &dir.path().join("first"), 25).await.stop().await;

    // 1% churn of the RocksDB data, flushed into a new SST; then the second full, under the writer.
    db.exec("UPDATE app.r SET payload = REVERSE(payload) WHERE id BETWEEN 20000 AND 22999").await;
    db.exec("SET GLOBAL rocksdb_force_flush_memtable_now = 1").await;
    db.exec("DELETE FROM app.w").await;
    db.exec("DELETE FROM app.wi").await;
    // `auto` picks myrocks: the RocksDB engine holds most of the datadir.
    let auto: Vec<String> =
        myrocks_args(&db, &storage).into_iter().map(|a| if a == "myrocks" { "auto".into() } else { a }).collect();
    let second = under_writer(&db, &auto, &s3).await;
    let chose = second.stderr.lines().find(|l| l.contains("method auto chose")).unwrap_or_default().to_string();
    eprintln!("{chose}");
    assert_eq!(second.summary["method"], "myrocks", "{chose}");
    let totals = &second.summary["totals"];
    let id = second.summary["backupId"].as_str().unwrap();
    let manifest = manifest_at(&s3.object_path(&format!("myrocks-method/backups/{id}/manifest.json")));
    let ssts: Vec<&serde_json::Value> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"].as_str().unwrap().ends_with(".sst"))
        .collect();
    assert!(ssts.iter().all(|f| f["tail"].as_str().is_some_and(|t| t.len() == 64)), "every SST has its tail");
    let sst_bytes: u64 = ssts.iter().map(|f| f["size"].as_u64().unwrap()).sum();
    // Read: what was not taken over, and the last 64 KiB of every SST (its identity).
    let tails: u64 = ssts.iter().map(|f| f["size"].as_u64().unwrap().min(64 * 1024)).sum();
    let taken_over = totals["takenOverBytes"].as_u64().unwrap();
    assert!(sst_bytes > 0 && taken_over <= sst_bytes, "{totals}");
    let read_share = (sst_bytes - taken_over + tails) as f64 / sst_bytes as f64;
    let upload_share = totals["uploadedBytes"].as_u64().unwrap() as f64 / totals["dataBytes"].as_u64().unwrap() as f64;
    eprintln!(
        "second full: {:.1}% of the SST bytes read, {:.1}% of the data uploaded",
        read_share * 100.0,
        upload_share * 100.0
    );
    assert!(read_share <= 0.10, "read {:.1}% of the SST bytes: {totals}", read_share * 100.0);
    assert!(upload_share <= 0.05, "uploaded {:.1}% of the data: {totals}", upload_share * 100.0);
    let copy = second.restores_exactly(&db, &storage, &s3, &dir.path().join("second"), 26).await;
    assert_eq!(copy.value("SELECT COUNT(*) FROM app.r2").await, "400000");
}
