//! Backups to Azure Blob Storage through Azure's emulator, Azurite.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_backup_to_azure_restores_verified() {
    let azurite = Azurite::start("backups").await;
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), 11).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(100))").await;
    db.exec("INSERT INTO app.t SELECT seq, SHA2(seq, 256) FROM app.seq_1_to_5000").await;
    let sums = db.checksums("app").await;
    let gtid = db.value("SELECT @@gtid_binlog_pos").await;
    db.stop().await;

    let storage = azurite.storage_args("backups", "cluster-a/db-0");
    let backup = [
        args(&["backup", "--method", "cold", "--datadir", dir.path().join("data").to_str().unwrap()]),
        storage.clone(),
    ]
    .concat();
    let summary = agent(&backup, &azurite.env()).await.summary();
    assert_eq!(summary["storage"], "az://backups/cluster-a/db-0");
    assert_eq!(summary["positions"]["gtid"]["binlogPos"], gtid.as_str());

    let verified = agent(&[args(&["verify"]), storage.clone()].concat(), &azurite.env()).await.summary();
    assert_eq!(verified["report"]["damaged"], serde_json::json!([]));
    let target = dir.path().join("restored");
    agent(&[args(&["restore", "--datadir", target.to_str().unwrap()]), storage].concat(), &azurite.env())
        .await
        .summary();
    let copy = MariaDb::start_on(&target, 11).await;
    assert_eq!(copy.checksums("app").await, sums);
}
