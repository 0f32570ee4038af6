//! Bad input and broken surroundings: each failure ends the agent with an error line that names the
//! thing that is wrong, and leaves no backup behind.

mod common;

use common::*;

fn cold_backup(datadir: &str, storage: &[String]) -> Vec<String> {
    [args(&["backup", "--method", "cold", "--datadir", datadir]), storage.to_vec()].concat()
}

#[tokio::test]
async fn wrong_storage_credentials_are_named() {
    let s3 = S3Server::start();
    let dir = tempdir();
    std::fs::write(dir.path().join("ibdata1"), b"x").unwrap();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), S3_ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "not-the-secret".to_string()),
    ];
    let run = agent(&cold_backup(dir.path().to_str().unwrap(), &s3.storage_args("p")), &env).await;
    let err = run.error();
    // The first request of a write: whether the prefix is encrypted.
    assert!(err.starts_with("error: storage s3://bucket/p: reading p/encryption.json: "), "{err}");
    assert!(err.contains("403") || err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!run.stderr.contains("not-the-secret"), "the secret never shows:\n{}", run.stderr);
}

#[tokio::test]
async fn unreachable_storage_is_named() {
    let dir = tempdir();
    std::fs::write(dir.path().join("ibdata1"), b"x").unwrap();
    let port = free_port();
    let storage = args(&[
        "--storage",
        "s3://bucket/p",
        "--storage-option",
        &format!("endpoint=http://127.0.0.1:{port}"),
        "--storage-option",
        "allow_http=true",
        "--storage-retry-timeout",
        "1",
    ]);
    let env = vec![("AWS_ACCESS_KEY_ID".into(), "k".into()), ("AWS_SECRET_ACCESS_KEY".into(), "s".into())];
    let err = agent(&cold_backup(dir.path().to_str().unwrap(), &storage), &env).await.error();
    assert!(err.starts_with("error: storage s3://bucket/p: reading p/encryption.json: "), "{err}");
    assert!(err.to_lowercase().contains("connect"), "{err}");
}

#[tokio::test]
async fn missing_datadir_is_named_and_leaves_no_backup() {
    let dir = tempdir();
    let storage = args(&["--storage", dir.path().join("b").to_str().unwrap()]);
    let missing = dir.path().join("no-such-datadir");
    let summary = dir.path().join("termination-log");
    let backup =
        [cold_backup(missing.to_str().unwrap(), &storage), args(&["--summary-file", summary.to_str().unwrap()])]
            .concat();
    let err = agent(&backup, &[]).await.error();
    assert_eq!(err, format!("error: datadir {}: No such file or directory (os error 2)", missing.display()));
    // A Job's termination message carries the reason to the controller.
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(written, serde_json::json!({ "error": err.trim_start_matches("error: ") }));
    let list = agent(&[args(&["list"]), storage].concat(), &[]).await;
    assert_eq!(list.stdout.lines().count(), 1, "{}", list.stdout);
}

#[tokio::test]
async fn non_empty_restore_target_is_refused() {
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("ibdata1"), b"some bytes").unwrap();
    let storage = args(&["--storage", dir.path().join("b").to_str().unwrap()]);
    agent(&cold_backup(data.to_str().unwrap(), &storage), &[]).await.summary();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("precious"), b"keep me").unwrap();
    let restore = [args(&["restore", "--datadir", target.to_str().unwrap()]), storage.clone()].concat();
    let err = agent(&restore, &[]).await.error();
    assert_eq!(
        err,
        format!(
            "error: target {} is not empty (1 entries, e.g. \"precious\"); restore into an empty directory or pass --overwrite to replace its contents",
            target.display()
        )
    );
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"keep me");
    // With --overwrite the target holds exactly the backup.
    agent(&[restore, args(&["--overwrite"])].concat(), &[]).await.summary();
    assert!(!target.join("precious").exists());
    assert_eq!(std::fs::read(target.join("ibdata1")).unwrap(), b"some bytes");
}

#[tokio::test]
async fn bad_options_are_named() {
    let dir = tempdir();
    let storage = args(&["--storage", dir.path().to_str().unwrap()]);
    let no_url = [args(&["backup", "--method", "mariabackup", "--datadir", "/tmp"]), storage.clone()].concat();
    assert_eq!(agent(&no_url, &[]).await.error(), "error: --method mariabackup needs --mysql-url (or MYSQL_URL)");
    let auto = [args(&["backup", "--method", "auto", "--datadir", "/tmp"]), storage.clone()].concat();
    assert_eq!(agent(&auto, &[]).await.error(), "error: --method auto needs --mysql-url (or MYSQL_URL)");
    let with_pw = [no_url.clone(), args(&["--mysql-url", "mysql://root:hunter2@127.0.0.1:3306"])].concat();
    let run = agent(&with_pw, &[]).await;
    assert!(run.error().contains("set MYSQL_PWD or use --mysql-password-file"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    let secret = [args(&["list", "--storage", "s3://b/p", "--storage-option", "secret_access_key=abc"])].concat();
    let run = agent(&secret, &[]).await;
    assert!(
        run.error().starts_with("error: storage option \"secret_access_key\": credentials are not accepted"),
        "{}",
        run.stderr
    );
    let unknown = [args(&["verify", "--backup", "20260101T000000Z-000000"]), storage].concat();
    assert_eq!(
        agent(&unknown, &[]).await.error(),
        format!("error: storage {}: no complete backup with id \"20260101T000000Z-000000\"", dir.path().display())
    );
}

#[tokio::test]
async fn unreachable_server_is_named() {
    let dir = tempdir();
    let port = free_port();
    let backup = args(&[
        "backup",
        "--method",
        "mariabackup",
        "--datadir",
        dir.path().to_str().unwrap(),
        "--storage",
        dir.path().join("b").to_str().unwrap(),
        "--mysql-url",
        &format!("mysql://root@127.0.0.1:{port}"),
    ]);
    let err = agent(&backup, &[]).await.error();
    assert!(err.starts_with(&format!("error: MySQL server at 127.0.0.1:{port}: connecting:")), "{err}");
}

#[tokio::test]
async fn install_copies_the_binary_executable() {
    let dir = tempdir();
    let out = tokio::process::Command::new(AGENT)
        .arg("install")
        .arg(format!("--to={}", dir.path().display()))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let copy = dir.path().join("mysql-backup-operator");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), copy.display().to_string());
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(AGENT).unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o755);
    let version = tokio::process::Command::new(&copy).arg("--version").output().await.unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("mysql-backup-operator "));
}

#[tokio::test]
async fn a_storage_url_with_credentials_is_refused_without_echoing_them() {
    for command in [args(&["list"]), args(&["backup", "--method", "cold", "--datadir", "/nonexistent"])] {
        let url = "s3://AKIAEXAMPLE:wJalrXUtnFEMI-secret@bucket/prod";
        let run = agent(&[command.clone(), args(&["--storage", url])].concat(), &[]).await;
        assert_eq!(
            run.error(),
            "error: storage URL \"s3://bucket/prod\": credentials do not go in the URL (user info before '@' would show in every log line, summary and status that names the storage); set them in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, GOOGLE_SERVICE_ACCOUNT, …) or, in Kubernetes, in the Secret named by spec.storage.credentialsSecret",
            "{command:?}"
        );
        assert!(!run.stderr.contains("wJalrXUtnFEMI") && !run.stdout.contains("wJalrXUtnFEMI"), "{}", run.stderr);
    }
}
