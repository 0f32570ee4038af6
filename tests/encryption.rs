//! Client-side encryption against a real MariaDB and the S3 server: an encrypted prefix holds no byte of
//! the database in the clear (a marker string written into a table, its binary logs and its archive is
//! in no stored object, and no stored object is a zstd frame); full, incremental, archive and
//! point-in-time restores work with the right key; every command refuses the wrong key or none, naming
//! the key expected; keys are never mixed under one prefix; a rotated key starts new chunk names while
//! the old backups still restore with the old key, and retention with both keys deletes them; and
//! deduplication still works under one key.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use mysql_backup_operator::encryption::Key;

/// Written into rows, hence into data files, binary logs and the archive.
const MARKER: &str = "plaintext-marker-5e1f0c93";

/// Key texts as users make them: `openssl rand -base64 32`, and 64 hex digits.
const KEY_A: &str = "q1XyYVd5m4Lw3bqH0i0S8m5l2Zl6J2b9o0rX8H1cE7k=";
const KEY_B: &str = "6f1c8a0e3b5d7f9a2c4e6a8b0d1f3a5c7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d80";

fn fingerprint(text: &str) -> String {
    Key::parse(text).unwrap().fingerprint().to_string()
}

/// Writes key `text` into a file of `dir` and returns its path.
fn key_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

/// `st` with `--encryption-key-file` for each of `keys`.
fn with_keys(st: &[String], keys: &[&Path]) -> Vec<String> {
    let mut a = st.to_vec();
    for k in keys {
        a.extend(args(&["--encryption-key-file", k.to_str().unwrap()]));
    }
    a
}

/// Checks every object under the S3 server's root: none holds the marker; every object under `prefix`
/// is sealed (so none is a zstd frame), but for the key history. Returns the number of objects.
fn assert_no_plaintext(s3: &S3Server, prefix: &str) -> usize {
    let root = s3.object_path("");
    for f in walk_files(root.parent().unwrap()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "{} holds the marker", f.display());
    }
    let objects = walk_files(&s3.object_path(prefix));
    for f in &objects {
        let bytes = std::fs::read(f).unwrap();
        if f.file_name().unwrap() == "encryption.json" {
            let history: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(history["keys"].is_array(), "{history}");
            continue;
        }
        assert!(bytes.starts_with(b"MBOSEAL1"), "{} is not sealed", f.display());
        assert!(zstd::decode_all(&bytes[..]).is_err(), "{} decompresses as zstd", f.display());
        assert!(!bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "{} is a zstd frame", f.display());
    }
    objects.len()
}

/// Inserts marker row `id`, whose note carries the marker string, and returns its GTID.
async fn secret_marker(db: &MariaDb, id: u32) -> String {
    db.exec(&format!("INSERT INTO app.m VALUES ({id}, '{MARKER} {id}')")).await;
    db.value("SELECT @@gtid_binlog_pos").await
}

fn ids(rows: &[Vec<String>]) -> Vec<u64> {
    rows.iter().map(|r| r[0].parse().unwrap()).collect()
}

/// Waits until the archive holds the server's position (per `binlog status`).
async fn archived(db: &MariaDb, st: &[String], env: &[(String, String)]) {
    let want = db.value("SELECT @@gtid_binlog_pos").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = agent(&[args(&["binlog", "status", "--archive", "shop", "--json"]), st.to_vec()].concat(), env).await;
        if run.status.success() {
            let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            if report["end"]["binlogPos"] == want.as_str() {
                assert_eq!(report["gaps"], serde_json::json!([]));
                return;
            }
        }
        assert!(Instant::now() < deadline, "the archive did not reach {want}: {}", run.stderr);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_prefix_restores_full_incremental_and_archive_and_holds_no_plaintext() {
    let dir = tempdir();
    let s3 = S3Server::start();
    let env = s3.env();
    let (a, b) = (key_file(dir.path(), "a.key", KEY_A), key_file(dir.path(), "b.key", KEY_B));
    let (fa, fb) = (fingerprint(KEY_A), fingerprint(KEY_B));
    let plain = s3.storage_args("enc");
    let st = with_keys(&plain, &[&a]);
    let db = MariaDb::start(dir.path(), 1).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.m (id INT PRIMARY KEY, note VARCHAR(80)) ENGINE=InnoDB").await;
    // Enough rows that the marker lands in many pages and chunks, not in one.
    db.exec(&format!(
        "CREATE TABLE app.s (id INT PRIMARY KEY, payload VARCHAR(200)) ENGINE=InnoDB \
         SELECT seq AS id, CONCAT('{MARKER} ', SHA2(seq, 256)) AS payload FROM app.seq_1_to_50000"
    ))
    .await;
    secret_marker(&db, 1).await;
    // Written in pages on disk, not only in the redo log.
    db.exec("FLUSH TABLES app.s, app.m FOR EXPORT").await;
    db.exec("UNLOCK TABLES").await;
    let full = full_backup(&db, &st, &env).await;
    let full_id = full["backupId"].as_str().unwrap().to_string();

    // The archive, an incremental in the middle of it, and markers either side.
    let port = free_port();
    let archiver_args = [
        args(&["binlog", "archive", "--mysql-url", &db.url(), "--archive", "shop", "--segment-seconds", "1"]),
        args(&["--listen", &format!("127.0.0.1:{port}")]),
        st.clone(),
    ]
    .concat();
    let mut archiver = agent_command(&archiver_args, &env).spawn().unwrap();
    let mut gtids = vec![String::new(), String::new()];
    for id in 2..=4 {
        gtids.push(secret_marker(&db, id).await);
    }
    let datadir = db.datadir.display().to_string();
    let inc_args =
        [args(&["backup", "--method", "binlog", "--mysql-url", &db.url(), "--datadir", &datadir]), st.clone()].concat();
    let inc = agent(&inc_args, &env).await.summary();
    for id in 5..=7 {
        gtids.push(secret_marker(&db, id).await);
    }
    archived(&db, &st, &env).await;
    archiver.start_kill().unwrap();
    archiver.wait().await.unwrap();

    let objects = assert_no_plaintext(&s3, "enc");
    assert!(objects > 20, "{objects} objects");
    let manifest = s3.object_path(&format!("enc/backups/{full_id}/manifest.json"));
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s3.object_path("enc/encryption.json")).unwrap()).unwrap();
    assert_eq!(history["keys"][0]["fingerprint"], fa.as_str());
    assert!(std::fs::read(&manifest).unwrap().starts_with(b"MBOSEAL1"));

    // The full alone, exactly; verify and list with the key.
    let restore = |target: &Path, backup: &str, st: &[String]| {
        [args(&["restore", "--backup", backup, "--datadir", target.to_str().unwrap()]), st.to_vec()].concat()
    };
    let target = dir.path().join("full");
    agent(&restore(&target, &full_id, &st), &env).await.summary();
    let copy = MariaDb::start_on(&target, 2).await;
    assert_eq!(copy.value("SELECT COUNT(*) FROM app.s WHERE payload LIKE 'plaintext-marker-%'").await, "50000");
    assert_eq!(ids(&copy.rows("SELECT id FROM app.m ORDER BY id").await), vec![1]);
    copy.stop().await;
    let verify = agent(&[args(&["verify", "--backup", &full_id]), st.clone()].concat(), &env).await.summary();
    assert_eq!(verify["report"]["damaged"], serde_json::json!([]), "{verify}");
    let list = agent(&[args(&["list", "--json"]), st.clone()].concat(), &env).await;
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&list.stdout).unwrap_or_else(|e| panic!("{e}: {}", list.stderr));
    let listed_ids: std::collections::BTreeSet<&str> = listed.iter().map(|b| b["backupId"].as_str().unwrap()).collect();
    assert_eq!(listed_ids, [full_id.as_str(), inc["backupId"].as_str().unwrap()].into());
    assert!(listed.iter().all(|b| b["encryptionKey"] == fa.as_str()), "{listed:?}");

    // Point in time: the full, the incremental (markers 2..4), then the archive (5..6).
    let pitr = dir.path().join("pitr");
    let until = [args(&["restore", "--until", &gtids[6], "--datadir", pitr.to_str().unwrap()]), st.clone()].concat();
    let summary = agent(&until, &env).await.summary();
    assert_eq!(summary["until"]["incrementals"], serde_json::json!([inc["backupId"]]));
    assert_eq!(summary["until"]["archive"], "shop");
    let copy = MariaDb::start_on(&pitr, 3).await;
    assert_eq!(ids(&copy.rows("SELECT id FROM app.m ORDER BY id").await), (1..=6).collect::<Vec<_>>());
    assert_eq!(copy.value("SELECT note FROM app.m WHERE id = 6").await, format!("{MARKER} 6"));
    copy.stop().await;

    // Without a key or with the wrong one, every command refuses, naming the key expected.
    let manifest_name = format!("backups/{full_id}/manifest.json");
    let url = "s3://bucket/enc";
    let none = format!(
        "error: storage {url}: {manifest_name}: it is encrypted with key {fa}, and no encryption key was given (--encryption-key-file)"
    );
    let wrong = format!(
        "error: storage {url}: {manifest_name}: it is encrypted with key {fa}, which is not among the keys given ({fb})"
    );
    let with_b = with_keys(&plain, &[&b]);
    for keys in [&plain, &with_b] {
        let expected = if keys.len() == plain.len() { &none } else { &wrong };
        let target = dir.path().join("refused");
        let err = agent(&restore(&target, &full_id, keys), &env).await.error();
        assert_eq!(&err, expected);
        assert!(!target.join("ibdata1").exists(), "nothing restored");
        let err = agent(&[args(&["verify", "--backup", &full_id]), keys.clone()].concat(), &env).await.error();
        assert_eq!(&err, expected);
        let err = agent(&[args(&["list"]), keys.clone()].concat(), &env).await.error();
        assert_eq!(&err, expected);
    }
    let prune = |keys: &[String]| [args(&["prune", "--keep-last", "1"]), keys.to_vec()].concat();
    assert_eq!(agent(&prune(&plain), &env).await.error(), none);
    assert_eq!(agent(&prune(&with_b), &env).await.error(), wrong);
    // A backup without the key, or with only another, is refused before it writes anything.
    let before = walk_files(&s3.object_path("enc")).len();
    let err = agent(&mariabackup_args(&db.url(), &db.datadir, &plain), &env).await.error();
    assert_eq!(
        err,
        format!("error: storage {url}: it is encrypted (key {fa}); give its key with --encryption-key-file")
    );
    let err = agent(&mariabackup_args(&db.url(), &db.datadir, &with_b), &env).await.error();
    assert_eq!(
        err,
        format!(
            "error: storage {url}: it is encrypted with key {fa}, and the key given to seal with is {fb}; to rotate \
             keys, give the new key's file first and key {fa}'s file after it"
        )
    );
    assert_eq!(walk_files(&s3.object_path("enc")).len(), before);
    // A prefix in the clear stays in the clear.
    let clear = s3.storage_args("clear");
    full_backup(&db, &clear, &env).await;
    let err = agent(&mariabackup_args(&db.url(), &db.datadir, &with_keys(&clear, &[&a])), &env).await.error();
    assert!(
        err.starts_with("error: storage s3://bucket/clear: it holds objects stored in the clear (such as "),
        "{err}"
    );
    assert!(err.ends_with("); encrypted backups need a prefix of their own"), "{err}");

    // Rotation: the new key first, the old after it. New chunks get new names; old backups still
    // restore, with the old key given.
    let rotated = with_keys(&plain, &[&b, &a]);
    secret_marker(&db, 8).await;
    let second = full_backup(&db, &rotated, &env).await;
    // Every chunk stored for it was uploaded now: no chunk of the old key serves it.
    assert_eq!(second["totals"]["uploadedBytes"], second["totals"]["storedBytes"], "{second}");
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s3.object_path("enc/encryption.json")).unwrap()).unwrap();
    let keys: Vec<&str> =
        history["keys"].as_array().unwrap().iter().map(|k| k["fingerprint"].as_str().unwrap()).collect();
    assert_eq!(keys, [fa.as_str(), fb.as_str()]);
    assert_no_plaintext(&s3, "enc");
    // The retired key no longer seals.
    let err = agent(&mariabackup_args(&db.url(), &db.datadir, &with_keys(&plain, &[&a, &b])), &env).await.error();
    assert_eq!(
        err,
        format!(
            "error: storage {url}: key {fa} was replaced by key {fb}; objects are sealed with the newest key: give \
             key {fb}'s file first"
        )
    );
    // The new backup restores with the new key alone; the old one needs the old key.
    let second_id = second["backupId"].as_str().unwrap();
    let target = dir.path().join("second");
    agent(&restore(&target, second_id, &with_b), &env).await.summary();
    let copy = MariaDb::start_on(&target, 4).await;
    assert_eq!(ids(&copy.rows("SELECT id FROM app.m ORDER BY id").await), (1..=8).collect::<Vec<_>>());
    copy.stop().await;
    let err = agent(&restore(&dir.path().join("old"), &full_id, &with_b), &env).await.error();
    assert_eq!(err, wrong);
    let target = dir.path().join("old");
    agent(&restore(&target, &full_id, &rotated), &env).await.summary();
    let copy = MariaDb::start_on(&target, 5).await;
    assert_eq!(ids(&copy.rows("SELECT id FROM app.m ORDER BY id").await), vec![1]);
    copy.stop().await;

    // Retention, with both keys: the old backups go and their chunks with them; the new one stays whole.
    let pruned = agent(&prune(&rotated), &env).await.summary();
    assert_eq!(pruned["deletedCount"], 2, "{pruned}");
    assert!(pruned["sweep"]["deletedChunks"].as_u64().unwrap() > 0, "{pruned}");
    let listed = agent(&[args(&["list", "--json"]), with_b.clone()].concat(), &env).await.stdout;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["backupId"], second_id);
    let verify = agent(&[args(&["verify", "--backup", second_id]), with_b].concat(), &env).await.summary();
    assert_eq!(verify["report"]["damaged"], serde_json::json!([]), "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_encrypted_full_after_one_percent_churn_uploads_under_five_percent() {
    let dir = tempdir();
    let s3 = S3Server::start();
    let env = s3.env();
    let key = key_file(dir.path(), "a.key", KEY_A);
    let st = with_keys(&s3.storage_args("dedup"), &[&key]);
    let db = MariaDb::start(dir.path(), 6).await;
    db.exec("CREATE DATABASE app").await;
    db.exec(
        "CREATE TABLE app.s (id INT PRIMARY KEY, payload VARCHAR(200)) ENGINE=InnoDB \
         SELECT seq AS id, CONCAT(SHA2(seq, 256), SHA2(seq * 7, 224)) AS payload FROM app.seq_1_to_100000",
    )
    .await;
    // A server in steady state has written its pages; a bulk load just now has not.
    let settle = async || {
        db.exec("FLUSH TABLES app.s FOR EXPORT").await;
        db.exec("UNLOCK TABLES").await;
    };
    settle().await;
    let backup = [mariabackup_args(&db.url(), &db.datadir, &st), args(&["--chunk-size-kib", "1024"])].concat();
    let first = agent(&backup, &env).await.summary();
    // ~1% of the rows, in one key range, as hot rows usually are.
    db.exec("UPDATE app.s SET payload = CONCAT('changed-', id) WHERE id BETWEEN 40001 AND 41000").await;
    settle().await;
    let second = agent(&backup, &env).await.summary();
    let uploaded = second["totals"]["uploadedBytes"].as_u64().unwrap();
    let data = second["totals"]["dataBytes"].as_u64().unwrap();
    eprintln!(
        "first upload {} B, second upload {uploaded} B of {data} B of data",
        first["totals"]["uploadedBytes"].as_u64().unwrap()
    );
    assert!(uploaded * 20 <= data, "the second full uploaded {uploaded} B of {data} B: more than 5%");

    let target = dir.path().join("restored");
    let id = second["backupId"].as_str().unwrap();
    agent(&[args(&["restore", "--backup", id, "--datadir", target.to_str().unwrap()]), st.clone()].concat(), &env)
        .await
        .summary();
    let copy = MariaDb::start_on(&target, 7).await;
    assert_eq!(copy.checksums("app").await, db.checksums("app").await);
}

#[tokio::test]
async fn bad_key_files_are_named() {
    let dir = tempdir();
    let storage = args(&["--storage", dir.path().join("store").to_str().unwrap()]);
    let list = |keys: &[&Path]| [args(&["list"]), with_keys(&storage, keys)].concat();
    let missing = dir.path().join("missing.key");
    let err = agent(&list(&[&missing]), &[]).await.error();
    assert_eq!(
        err,
        format!("error: encryption key file {}: No such file or directory (os error 2)", missing.display())
    );
    let short = key_file(dir.path(), "short.key", "c2hvcnQ=");
    let err = agent(&list(&[&short]), &[]).await.error();
    assert_eq!(
        err,
        format!(
            "error: encryption key file {}: the key is 5 bytes long; it must be 32 (openssl rand -base64 32)",
            short.display()
        )
    );
    let text = key_file(dir.path(), "text.key", "my secret passphrase");
    let err = agent(&list(&[&text]), &[]).await.error();
    assert_eq!(
        err,
        format!(
            "error: encryption key file {}: expected 32 random bytes as base64 (openssl rand -base64 32) or as 64 hex \
             digits",
            text.display()
        )
    );
    // The same key twice, once as base64 and once as hex.
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, KEY_A).unwrap();
    let (a, hex) = (key_file(dir.path(), "a.key", KEY_A), key_file(dir.path(), "a.hex", &hex::encode(raw)));
    let err = agent(&list(&[&a, &hex]), &[]).await.error();
    assert_eq!(err, format!("error: encryption key {} is given twice", fingerprint(KEY_A)));
    // A good key on an empty storage lists nothing, and writes nothing.
    let run = agent(&list(&[&a]), &[]).await;
    assert!(run.status.success(), "{}", run.stderr);
    assert!(walk_files(&dir.path().join("store")).is_empty());
}

#[tokio::test]
async fn a_mounted_secret_rotates_by_a_new_key_under_the_same_name() {
    let dir = tempdir();
    let datadir = dir.path().join("data");
    std::fs::create_dir_all(datadir.join("app")).unwrap();
    std::fs::write(datadir.join("ibdata1"), random_bytes(3 << 20, 1)).unwrap();
    std::fs::write(datadir.join("app/t.ibd"), format!("{MARKER} ").repeat(10_000)).unwrap();
    // What a Secret volume looks like: the keys, and its own hidden entries.
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(secret.join("..data")).unwrap();
    std::fs::write(secret.join("..data/not-a-key"), "x").unwrap();
    key_file(&secret, "key", KEY_A);
    let storage = args(&["--storage", dir.path().join("store").to_str().unwrap()]);
    let keys = [
        storage.clone(),
        args(&["--encryption-key-file", secret.join("key").to_str().unwrap()]),
        args(&["--encryption-key-dir", secret.to_str().unwrap()]),
    ]
    .concat();
    let backup = |keys: &[String]| {
        [args(&["backup", "--method", "cold", "--force", "--datadir", datadir.to_str().unwrap()]), keys.to_vec()]
            .concat()
    };
    let first = agent(&backup(&keys), &[]).await.summary();

    // The rotation: the current key moves to another name, the new one takes its place.
    key_file(&secret, "2026-12", KEY_A);
    key_file(&secret, "key", KEY_B);
    let second = agent(&backup(&keys), &[]).await.summary();
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("store/encryption.json")).unwrap()).unwrap();
    let fingerprints: Vec<&str> =
        history["keys"].as_array().unwrap().iter().map(|k| k["fingerprint"].as_str().unwrap()).collect();
    assert_eq!(fingerprints, [fingerprint(KEY_A), fingerprint(KEY_B)]);

    // Both restore with the Secret as it is now; the first needs the old key, found in the directory.
    for (n, summary) in [&first, &second].iter().enumerate() {
        let target = dir.path().join(format!("restored-{n}"));
        let id = summary["backupId"].as_str().unwrap();
        let restore =
            [args(&["restore", "--backup", id, "--datadir", target.to_str().unwrap()]), keys.clone()].concat();
        agent(&restore, &[]).await.summary();
        assert_eq!(std::fs::read(target.join("app/t.ibd")).unwrap(), std::fs::read(datadir.join("app/t.ibd")).unwrap());
    }
    let listed = agent(&[args(&["list", "--json"]), keys.clone()].concat(), &[]).await.stdout;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let key_of = |summary: &serde_json::Value| {
        let entry = listed.iter().find(|b| b["backupId"] == summary["backupId"]).expect("listed");
        entry["encryptionKey"].as_str().unwrap().to_string()
    };
    assert_eq!((key_of(&first), key_of(&second)), (fingerprint(KEY_A), fingerprint(KEY_B)));
    let without_dir =
        [storage.clone(), args(&["--encryption-key-file", secret.join("key").to_str().unwrap()])].concat();
    let err = agent(&[args(&["list"]), without_dir].concat(), &[]).await.error();
    assert!(
        err.ends_with(&format!(
            "it is encrypted with key {}, which is not among the keys given ({})",
            fingerprint(KEY_A),
            fingerprint(KEY_B)
        )),
        "{err}"
    );
    // A directory alone does not say which key seals.
    let err = agent(&[args(&["list", "--encryption-key-dir", secret.to_str().unwrap()]), storage].concat(), &[]).await;
    assert!(!err.status.success());
    assert!(err.stderr.contains("--encryption-key-file"), "{}", err.stderr);
    assert!(walk_files(&dir.path().join("store")).iter().all(|f| {
        let bytes = std::fs::read(f).unwrap();
        !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
    }));
}
