//! MySQLRestore scenarios: the claim, then the Job; a missing backup; a finished Job.

use super::*;

const RESTORE: &str = include_str!("../fixtures/mysqlrestore.yaml");

const CLAIMS: &str = "/api/v1/namespaces/db/persistentvolumeclaims";
const RESTORE_STATUS: &str = "/apis/mysqlbackup.dev/v1alpha1/namespaces/db/mysqlrestores/r1/status?&force=true&fieldManager=mysql-backup-operator";

fn complete_backup() -> Value {
    let mut b = backup_json();
    b["status"] = json!({"phase": "Complete", "method": "mariabackup", "backupId": "20261122T020001Z-00abcd",
        "databaseImage": "mariadb:10.11"});
    b
}

async fn run_restore(restore: MySQLRestore, script: impl AsyncFnOnce(Handle)) -> Action {
    let (ctx, handle) = context();
    let script = async move {
        script(handle).await;
    };
    let (action, ()) = tokio::join!(reconcile_restore(Arc::new(restore), ctx), script);
    action.expect("reconcile succeeds")
}

fn restore_json() -> Value {
    serde_json::to_value(serde_yaml::from_str::<MySQLRestore>(RESTORE).unwrap()).unwrap()
}

#[tokio::test]
async fn restore_creates_the_claim_then_the_job() {
    let restore: MySQLRestore = serde_yaml::from_str(RESTORE).unwrap();
    let action = run_restore(restore, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{BACKUPS}/nightly-1"), (200, complete_backup())).await;
        expect(&mut h, "GET", &format!("{CLAIMS}/restore-r1"), not_found()).await;
        expect(&mut h, "GET", &format!("{JOBS}/restore-r1"), not_found()).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "K"))).await;
        let claim = expect(
            &mut h,
            "PATCH",
            &format!("{CLAIMS}/restore-r1?&fieldManager=mysql-backup-operator"),
            (200, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "restore-r1"}})),
        )
        .await;
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert!(claim["metadata"].get("ownerReferences").is_none(), "a restored volume outlives its MySQLRestore");
        let job = apply_job(&mut h, "restore-r1").await;
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "mariadb:10.11");
        assert_eq!(pod["securityContext"]["runAsUser"], 999);
        assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "restore-r1");
        let args: Vec<&str> =
            pod["containers"][0]["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(args.contains(&"--backup=20261122T020001Z-00abcd"), "{args:?}");
        let status = expect_status(&mut h, RESTORE_STATUS, (200, restore_json())).await;
        assert_eq!(status["status"]["phase"], "Pending");
        assert_eq!(status["status"]["persistentVolumeClaim"], "restore-r1");
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(event["note"], "created Job restore-r1 to restore into restore-r1");
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn restore_of_a_missing_backup_is_blocked_and_retried() {
    let restore: MySQLRestore = serde_yaml::from_str(RESTORE).unwrap();
    let action = run_restore(restore, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{BACKUPS}/nightly-1"), not_found()).await;
        expect(&mut h, "GET", &format!("{CLAIMS}/restore-r1"), not_found()).await;
        expect(&mut h, "GET", &format!("{JOBS}/restore-r1"), not_found()).await;
        let status = expect_status(&mut h, RESTORE_STATUS, (200, restore_json())).await;
        let blocked = &status["status"]["conditions"][0];
        assert_eq!((blocked["type"].as_str(), blocked["status"].as_str()), (Some("Blocked"), Some("True")));
        assert_eq!(blocked["message"], "MySQLBackup nightly-1 (spec.source.backup) not found");
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("BackupNotFound")));
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn restore_job_success_completes_with_the_restored_position() {
    let mut restore: MySQLRestore = serde_yaml::from_str(RESTORE).unwrap();
    restore.status = Some(
        serde_json::from_value(
            json!({"phase": "Running", "jobName": "restore-r1", "persistentVolumeClaim": "restore-r1"}),
        )
        .unwrap(),
    );
    // A summary as the agent writes it (the previous release's, from the contract's fixture).
    let summary = SUMMARIES
        .lines()
        .find(|l| l.starts_with(r#"{"operation":"restore""#))
        .unwrap()
        .replace("20261130T170734Z-b53906", "20261122T020001Z-00abcd");
    let summary = summary.as_str();
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "restore-r1", "namespace": "db"},
        "status": {"succeeded": 1, "completionTime": "2026-11-22T03:00:00Z", "conditions": [{"type": "Complete", "status": "True"}]}});
    let job_pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{"metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": summary}}}]}}]});
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "restore-r1"}});
    let action = run_restore(restore, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{BACKUPS}/nightly-1"), (200, complete_backup())).await;
        expect(&mut h, "GET", &format!("{CLAIMS}/restore-r1"), (200, claim)).await;
        expect(&mut h, "GET", &format!("{JOBS}/restore-r1"), (200, job)).await;
        expect(&mut h, "GET", &format!("{PODS}?&labelSelector=job-name%3Drestore-r1"), (200, job_pods)).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "K"))).await;
        let status = expect_status(&mut h, RESTORE_STATUS, (200, restore_json())).await;
        let s = &status["status"];
        assert_eq!(s["phase"], "Complete");
        assert_eq!(s["positions"]["gtidExecuted"], "0-1-42");
        assert_eq!((s["bytes"].as_i64(), s["durationSeconds"].as_f64()), (Some(3_000_000), Some(0.298217288)));
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(event["note"], "backup 20261122T020001Z-00abcd restored into PersistentVolumeClaim restore-r1");
    })
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_restore_with_overwrite_whose_job_was_deleted_fails_job_lost_and_creates_nothing() {
    let mut restore: MySQLRestore = serde_yaml::from_str(&RESTORE.replace(
        "target: {volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
        "target: {persistentVolumeClaim: data-db-0, overwrite: true}",
    ))
    .unwrap();
    restore.status = Some(
        serde_json::from_value(
            json!({"phase": "Running", "jobName": "restore-r1", "persistentVolumeClaim": "data-db-0"}),
        )
        .unwrap(),
    );
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-db-0"}});
    let action = run_restore(restore, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{BACKUPS}/nightly-1"), (200, complete_backup())).await;
        expect(&mut h, "GET", &format!("{CLAIMS}/data-db-0"), (200, claim)).await;
        expect(&mut h, "GET", &format!("{JOBS}/restore-r1"), not_found()).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "K"))).await;
        // No Job is applied: the next request is the status.
        let status = expect_status(&mut h, RESTORE_STATUS, (200, restore_json())).await;
        let s = &status["status"];
        assert_eq!(s["phase"], "Failed");
        let failed = s["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap();
        assert_eq!(failed["reason"], "JobLost");
        let expected = "Job restore-r1 is gone and its outcome was never read (deleted by hand, or by its TTL while the controller was down); it is not run again: PersistentVolumeClaim data-db-0 may hold a partial restore or a server already using it; check it, then create a new MySQLRestore to restore again";
        assert_eq!(failed["message"], expected);
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str(), event["note"].as_str()), (Some("Warning"), Some("JobLost"), Some(expected)));
    })
    .await;
    assert_eq!(action, Action::await_change());
}
