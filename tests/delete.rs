//! Deleting a backup from S3 storage (s3s-fs): the backup stops being listed, only the chunks no other
//! backup references go, an interrupted deletion is finished by running it again, and the backups left
//! restore byte for byte.

mod common;

use std::{collections::BTreeSet, path::Path};

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

/// Hashes and stored lengths of the chunks a manifest references.
fn manifest_chunks(manifest: &serde_json::Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["chunks"].as_array().unwrap().iter())
        .map(|c| (c["hash"].as_str().unwrap().to_string(), c["storedLength"].as_u64().unwrap()))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_backup_removes_only_the_chunks_no_other_backup_uses() {
    let s3 = S3Server::start();
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // 64 KiB chunks: shared.ibd is 3 chunks both backups hold; first.ibd and second.ibd 2 each.
    let shared = random_bytes(3 * 65536, 11);
    let second = random_bytes(2 * 65536, 23);
    std::fs::write(data.join("shared.ibd"), &shared).unwrap();
    std::fs::write(data.join("first.ibd"), random_bytes(2 * 65536, 35)).unwrap();
    let storage = s3.storage_args("del");
    let backup = [
        args(&["backup", "--method", "cold", "--chunk-size-kib", "64", "--datadir", data.to_str().unwrap()]),
        storage.clone(),
    ]
    .concat();
    let first_id = agent(&backup, &s3.env()).await.summary()["backupId"].as_str().unwrap().to_string();
    std::fs::remove_file(data.join("first.ibd")).unwrap();
    std::fs::write(data.join("second.ibd"), &second).unwrap();
    let second_id = agent(&backup, &s3.env()).await.summary()["backupId"].as_str().unwrap().to_string();

    let manifest = |id: &str| -> serde_json::Value {
        let path = s3.object_path(&format!("del/backups/{id}/manifest.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let first_chunks = manifest_chunks(&manifest(&first_id));
    let second_chunks = manifest_chunks(&manifest(&second_id));
    let chunks_dir = s3.object_path("del/chunks");
    assert_eq!(stored_chunks(&chunks_dir).len(), 7, "3 shared + 2 + 2");
    let only_first: Vec<_> = first_chunks.iter().filter(|c| !second_chunks.contains(c)).collect();
    assert_eq!(only_first.len(), 2);

    let delete = |id: &str, extra: &[&str]| [args(&["delete", "--backup", id]), args(extra), storage.clone()].concat();
    let summary = agent(&delete(&first_id, &[]), &s3.env()).await.summary();
    assert_eq!(summary["operation"], "delete");
    assert_eq!(summary["alreadyDeleted"], false);
    assert_eq!(summary["deletedChunks"], 2);
    assert_eq!(summary["sharedChunks"], 3);
    assert_eq!(summary["freedBytes"].as_u64().unwrap(), only_first.iter().map(|c| c.1).sum::<u64>());
    let left: BTreeSet<String> = second_chunks.iter().map(|c| c.0.clone()).collect();
    assert_eq!(stored_chunks(&chunks_dir), left, "exactly the chunks of the remaining backup");
    assert!(!s3.object_path(&format!("del/backups/{first_id}")).join("deleting.json").exists(), "tombstone removed");
    let listed = agent(&[args(&["list", "--json"]), storage.clone()].concat(), &s3.env()).await;
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|b| b["backupId"].as_str().unwrap()).collect();
    assert_eq!(ids, [second_id.as_str()]);

    // The remaining backup is whole.
    agent(&[args(&["verify", "--backup", &second_id]), storage.clone()].concat(), &s3.env()).await.summary();
    let target = dir.path().join("restored");
    let restore = [args(&["restore", "--backup", &second_id, "--datadir", target.to_str().unwrap()]), storage.clone()];
    agent(&restore.concat(), &s3.env()).await.summary();
    assert!(std::fs::read(target.join("shared.ibd")).unwrap() == shared);
    assert!(std::fs::read(target.join("second.ibd")).unwrap() == second);

    // Deleting again: an error naming the id, unless the caller says a missing backup is fine.
    let again = agent(&delete(&first_id, &[]), &s3.env()).await;
    assert_eq!(
        again.error(),
        format!("error: storage s3://bucket/del: no backup with id {first_id:?} (already deleted?)")
    );
    let again = agent(&delete(&first_id, &["--ignore-missing"]), &s3.env()).await.summary();
    assert_eq!((again["alreadyDeleted"].as_bool(), again["deletedChunks"].as_u64()), (Some(true), Some(0)));
    let latest = agent(&delete("latest", &[]), &s3.env()).await;
    assert_eq!(
        latest.error(),
        "error: \"latest\" is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx); deletion needs an explicit id"
    );

    // A deletion that died after removing the manifest left a tombstone: running it again finishes it.
    let backup_dir = s3.object_path(&format!("del/backups/{second_id}"));
    std::fs::rename(backup_dir.join("manifest.json"), backup_dir.join("deleting.json")).unwrap();
    let resumed = agent(&delete(&second_id, &[]), &s3.env()).await.summary();
    assert_eq!((resumed["deletedChunks"].as_u64(), resumed["sharedChunks"].as_u64()), (Some(5), Some(0)));
    assert!(stored_chunks(&chunks_dir).is_empty(), "no chunk left");
    assert!(!backup_dir.join("deleting.json").exists());
}
