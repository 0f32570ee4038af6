//! Storage configuration and listing, on local storage and without a server.

use super::*;

const RETRY: RetryPolicy = RetryPolicy { timeout: Duration::from_secs(1) };

#[test]
fn refuses_credentials_as_options() {
    for key in ["secret_access_key", "aws_access_key_id", "token", "azure_storage_account_key", "sas_key"] {
        let err = Storage::open("s3://b/p", &[(key.into(), "x".into())], RETRY).unwrap_err();
        assert!(err.to_string().contains("credentials are not accepted as options"), "{key}: {err}");
    }
}

#[test]
fn rejects_unknown_scheme_and_option() {
    let err = Storage::open("ftp://host/x", &[], RETRY).unwrap_err();
    assert_eq!(
        err.to_string(),
        "storage URL \"ftp://host/x\": unsupported scheme \"ftp\"; use file://, s3://, az:// or gs://"
    );
    let err = Storage::open("s3://b/p", &[("no_such_option".into(), "1".into())], RETRY).unwrap_err();
    assert!(err.to_string().starts_with("storage option \"no_such_option\":"), "{err}");
    assert!(parse_option("endpoint").unwrap_err().to_string().contains("expected key=value"));
}

/// GCS has no emulator usable here: this checks configuration only (URL, prefix, key layout).
#[test]
fn configures_gcs_and_lays_out_keys() {
    // An unreadable service account file fails at configuration, naming the URL and the file.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-key.json").to_string_lossy().into_owned();
    let err = Storage::open("gs://bucket/team/db1", &[("service_account_path".into(), missing.clone())], RETRY)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("storage gs://bucket/team/db1: cannot configure the client:"), "{err}");
    assert!(err.contains(&missing), "{err}");
    // Without one, credentials are resolved at the first request; the key layout is the same as S3's.
    let gs = Storage::open("gs://bucket/team/db1", &[], RETRY).unwrap();
    let h = "cd".repeat(32);
    assert_eq!(gs.chunk_key(&h.parse().unwrap()).to_string(), format!("team/db1/chunks/cd/{h}"));
    let s = Storage::open("s3://bucket/team/db1", &[("region".into(), "eu-west-1".into())], RETRY).unwrap();
    let h = "ab".repeat(32);
    assert_eq!(s.chunk_key(&h.parse().unwrap()).to_string(), format!("team/db1/chunks/ab/{h}"));
    assert_eq!(s.manifest_key("x").to_string(), "team/db1/backups/x/manifest.json");
}

#[tokio::test]
async fn local_storage_lists_only_complete_backups() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path().to_str().unwrap(), &[], RETRY).unwrap();
    let id = "20261122T041231Z-00abcd";
    s.put(&s.key(&format!("backups/{id}/partial")), Bytes::from_static(b"x")).await.unwrap();
    assert!(s.list_backup_ids().await.unwrap().is_empty());
    assert_eq!(
        s.resolve_backup("latest").await.unwrap_err().to_string(),
        format!("storage {}: no complete backup found", dir.path().display())
    );
    s.put(&s.manifest_key(id), Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(s.list_backup_ids().await.unwrap(), vec![id.to_string()]);
    assert_eq!(s.resolve_backup("latest").await.unwrap(), id);
}
