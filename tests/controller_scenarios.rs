//! Reconcile scenarios against a mocked API server (the `tower-test` pattern of kube-rs'
//! controller-rs): each test scripts the exact requests the reconcile must make, in order, answers them
//! as the API server would, and fails on a missing, extra or different request.

use std::{sync::Arc, time::Duration};

use http::{Request, Response};
use kube::{Client, client::Body, runtime::controller::Action};
use mysql_backup_operator::controller::backup::reconcile::reconcile_backup;
use mysql_backup_operator::controller::context::Context;
use mysql_backup_operator::controller::restore::reconcile::reconcile_restore;
use mysql_backup_operator::crd::{MySQLBackup, MySQLRestore};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const BACKUP: &str = include_str!("fixtures/mysqlbackup.yaml");
/// Agent summaries as release 0.1.0 wrote them, one per line (see tests/summaries.rs).
const SUMMARIES: &str = include_str!("fixtures/agent-summaries-0.1.0.jsonl");

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0", "namespace": "db"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "mariadb", "image": "mariadb:10.11",
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/mysql"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}]},
        "status": {"podIP": "10.0.0.9"}
    })
}

fn secret(name: &str, key: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "db"}, "data": {key: "eA=="}})
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// Expects one request with `method` and a path (and query, when given) starting with `path`; answers
/// with `status` and `body`; returns the request's JSON body.
async fn expect(handle: &mut Handle, method: &str, path: &str, (status, body): (u16, Value)) -> Value {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
        .unwrap_or_else(|| panic!("the client went away; expected {method} {path}"));
    let uri = request.uri().to_string();
    assert_eq!(request.method().as_str(), method, "expected {method} {path}, got {} {uri}", request.method());
    assert!(uri.starts_with(path), "expected {method} {path}, got {uri}");
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let sent = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    let response = Response::builder().status(status).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap();
    send.send_response(response);
    sent
}

/// Expects a status write to `status_path`: the read of the object's current version, answered with
/// `answer`'s object (so the copy the reconcile decided from is current), then the status patch, answered
/// with `answer`; returns the patch.
async fn expect_status(h: &mut Handle, status_path: &str, answer: (u16, Value)) -> Value {
    let object = status_path.split("/status?").next().unwrap();
    expect(h, "GET", object, (200, answer.1.clone())).await;
    expect(h, "PATCH", status_path, answer).await
}

/// Expects the server-side apply of Job `name` and answers it; returns the applied Job.
async fn apply_job(h: &mut Handle, name: &str) -> Value {
    let path = format!("{JOBS}/{name}?&force=true&fieldManager=mysql-backup-operator");
    expect(h, "PATCH", &path, (200, json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}}))).await
}

fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "db");
    (Arc::new(Context::new(client, "op:1".into())), handle)
}

/// Runs one reconcile against `script`. A missing request times the script out; an extra one finds
/// the mock closed and fails the reconcile.
async fn run(backup: MySQLBackup, script: impl AsyncFnOnce(Handle)) -> Action {
    run_with(backup, script).await.0
}

async fn run_with(backup: MySQLBackup, script: impl AsyncFnOnce(Handle)) -> (Action, Arc<Context>) {
    let (ctx, handle) = context();
    let script = async move {
        script(handle).await;
    };
    let (action, ()) = tokio::join!(reconcile_backup(Arc::new(backup), ctx.clone()), script);
    (action.expect("reconcile succeeds"), ctx)
}

/// The API server answers a status patch with the whole object.
fn backup_json() -> Value {
    serde_json::to_value(serde_yaml::from_str::<MySQLBackup>(BACKUP).unwrap()).unwrap()
}

const PODS: &str = "/api/v1/namespaces/db/pods";
const JOBS: &str = "/apis/batch/v1/namespaces/db/jobs";
const SECRETS: &str = "/api/v1/namespaces/db/secrets";
const STATUS: &str = "/apis/mysqlbackup.dev/v1alpha1/namespaces/db/mysqlbackups/nightly-1/status?&force=true&fieldManager=mysql-backup-operator";
const BACKUPS: &str = "/apis/mysqlbackup.dev/v1alpha1/namespaces/db/mysqlbackups";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/db/events";

#[tokio::test]
async fn create_applies_the_job_and_marks_pending() {
    let backup: MySQLBackup = serde_yaml::from_str(BACKUP).unwrap();
    let action = run(backup, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, pod())).await;
        expect(&mut h, "GET", &format!("{JOBS}/backup-nightly-1"), not_found()).await;
        expect(&mut h, "GET", &format!("{SECRETS}/db-user"), (200, secret("db-user", "password"))).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "AWS_ACCESS_KEY_ID"))).await;
        let job = apply_job(&mut h, "backup-nightly-1").await;
        assert_eq!(job["kind"], "Job");
        assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["image"], "mariadb:10.11");
        let status = expect_status(&mut h, STATUS, (200, backup_json())).await;
        assert_eq!(status["status"]["phase"], "Pending");
        assert_eq!(status["status"]["jobName"], "backup-nightly-1");
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(event["reason"], "JobCreated");
        assert_eq!(event["type"], "Normal");
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

/// Runs one reconcile of a copy at resourceVersion 41 that creates its Job, then answers the read of the
/// current version with `current` and, when given, the status patch with `patch`; returns the error.
async fn decided_from(
    current: &str,
    patch: Option<(u16, Value)>,
) -> mysql_backup_operator::controller::context::ReconcileError {
    let mut backup: MySQLBackup = serde_yaml::from_str(BACKUP).unwrap();
    backup.metadata.resource_version = Some("41".into());
    let mut now = backup_json();
    now["metadata"]["resourceVersion"] = json!(current);
    let (ctx, mut h) = context();
    let script = async move {
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, pod())).await;
        expect(&mut h, "GET", &format!("{JOBS}/backup-nightly-1"), not_found()).await;
        expect(&mut h, "GET", &format!("{SECRETS}/db-user"), (200, secret("db-user", "password"))).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "AWS_ACCESS_KEY_ID"))).await;
        apply_job(&mut h, "backup-nightly-1").await;
        expect(&mut h, "GET", &format!("{BACKUPS}/nightly-1"), (200, now)).await;
        if let Some(answer) = patch {
            let status = expect(&mut h, "PATCH", STATUS, answer).await;
            assert_eq!(status["metadata"]["resourceVersion"], "41");
        }
    };
    let (result, ()) = tokio::join!(reconcile_backup(Arc::new(backup), ctx), script);
    result.expect_err("a status decided from a stale copy is not written")
}

#[tokio::test]
async fn a_status_decided_from_a_stale_copy_is_not_written_and_decided_again() {
    // The watch lags (version 42 is current, the copy is 41): no write, so no refusal and nothing a
    // newer reconcile wrote is erased. An extra request would find the mock closed and fail.
    let error = decided_from("42", None).await;
    assert_eq!(error.to_string(), "nightly-1 changed since it was read; deciding again from the newer version");
    assert_eq!(error.category(), "stale");
}

#[tokio::test]
async fn a_change_between_the_read_and_the_status_write_is_refused_and_decided_again() {
    // The copy was current when read, and changed before the write: the write names version 41, the
    // API server refuses it.
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
        "code": 409, "message": "the object has been modified"});
    let error = decided_from("41", Some((409, conflict))).await;
    assert_eq!(error.to_string(), "nightly-1 changed since it was read; deciding again from the newer version");
    assert_eq!(error.category(), "stale");
}

#[tokio::test]
async fn succeeded_job_completes_the_status_with_positions() {
    let backup: MySQLBackup = serde_yaml::from_str(BACKUP).unwrap();
    let summary = r#"{"operation":"backup","backupId":"20261122T020001Z-00abcd","storage":"s3://backups/prod","manifest":"prod/backups/20261122T020001Z-00abcd/manifest.json","method":"mariabackup","positions":{"flavor":"mariadb","version":"10.11.19-MariaDB","serverId":1,"gtid":{"flavor":"mariadb","binlogPos":"0-1-42"},"binlog":{"file":"mysql-bin.000003","position":1287}},"totals":{"files":3,"dataBytes":1000,"storedBytes":100,"uploadedBytes":100,"chunks":3,"reusedChunks":0},"startedAt":"2026-11-22T02:00:01Z","completedAt":"2026-11-22T02:00:04Z","durationSeconds":3.0,"peakRssBytes":1}"#;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup-nightly-1", "namespace": "db"},
        "status": {"succeeded": 1, "startTime": "2026-11-22T02:00:00Z", "completionTime": "2026-11-22T02:00:05Z",
            "conditions": [{"type": "Complete", "status": "True"}]}});
    let job_pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{"metadata": {"name": "backup-nightly-1-x"},
        "status": {"containerStatuses": [{"name": "agent", "image": "mariadb:10.11", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": summary, "finishedAt": "2026-11-22T02:00:05Z"}}}]}}]});
    let (action, ctx) = run_with(backup, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, pod())).await;
        expect(&mut h, "GET", &format!("{JOBS}/backup-nightly-1"), (200, job)).await;
        expect(&mut h, "GET", &format!("{PODS}?&labelSelector=job-name%3Dbackup-nightly-1"), (200, job_pods)).await;
        expect(&mut h, "GET", &format!("{SECRETS}/db-user"), (200, secret("db-user", "password"))).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "K"))).await;
        let status = expect_status(&mut h, STATUS, (200, backup_json())).await;
        let s = &status["status"];
        assert_eq!(s["phase"], "Complete");
        assert_eq!(s["backupId"], "20261122T020001Z-00abcd");
        assert_eq!(s["positions"]["gtidExecuted"], "0-1-42");
        assert_eq!(s["positions"]["binlogPosition"], 1287);
        assert_eq!(s["sizes"]["dataBytes"], 1000);
        assert_eq!(s["conditions"][0]["type"], "Complete");
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(event["reason"], "BackupStored");
    })
    .await;
    assert_eq!(action, Action::await_change());
    let metrics = ctx.metrics.encode();
    for line in [
        "mysql_backup_operator_backups_finished_total{phase=\"Complete\"} 1",
        "mysql_backup_operator_last_backup_data_bytes{namespace=\"db\",pod=\"db-0\"} 1000",
        "mysql_backup_operator_last_successful_backup_timestamp_seconds{namespace=\"db\",pod=\"db-0\"} 1795312805.0",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

#[tokio::test]
async fn failed_job_fails_with_the_agents_reason() {
    let backup: MySQLBackup = serde_yaml::from_str(BACKUP).unwrap();
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup-nightly-1", "namespace": "db"},
        "status": {"failed": 2, "conditions": [{"type": "Failed", "status": "True", "message": "backoff limit"}]}});
    let job_pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{"metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "message": "{\"error\":\"datadir /var/lib/mysql: No such file or directory (os error 2)\"}"}}}]}}]});
    run(backup, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, pod())).await;
        expect(&mut h, "GET", &format!("{JOBS}/backup-nightly-1"), (200, job)).await;
        expect(&mut h, "GET", PODS, (200, job_pods)).await;
        expect(&mut h, "GET", &format!("{SECRETS}/db-user"), (200, secret("db-user", "password"))).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "K"))).await;
        let status = expect_status(&mut h, STATUS, (200, backup_json())).await;
        assert_eq!(status["status"]["phase"], "Failed");
        assert_eq!(
            status["status"]["conditions"][0]["message"],
            "datadir /var/lib/mysql: No such file or directory (os error 2)"
        );
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("AgentFailed")));
    })
    .await;
}

#[tokio::test]
async fn a_running_backup_whose_job_was_deleted_fails_job_lost_and_runs_nothing_again() {
    let mut backup: MySQLBackup = serde_yaml::from_str(BACKUP).unwrap();
    backup.status = Some(serde_json::from_value(json!({"phase": "Running", "jobName": "backup-nightly-1"})).unwrap());
    let action = run(backup, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, pod())).await;
        expect(&mut h, "GET", &format!("{JOBS}/backup-nightly-1"), not_found()).await;
        expect(&mut h, "GET", &format!("{SECRETS}/db-user"), (200, secret("db-user", "password"))).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "K"))).await;
        // No Job is applied: the next request is the status.
        let status = expect_status(&mut h, STATUS, (200, backup_json())).await;
        assert_eq!(status["status"]["phase"], "Failed");
        let failed = status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap();
        assert_eq!(failed["reason"], "JobLost");
        assert!(
            failed["message"]
                .as_str()
                .unwrap()
                .starts_with("Job backup-nightly-1 is gone and its outcome was never read")
        );
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("JobLost")));
    })
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn finished_backup_reads_nothing_and_writes_nothing() {
    let mut backup: MySQLBackup = serde_yaml::from_str(BACKUP).unwrap();
    backup.status = Some(serde_json::from_value(json!({"phase": "Complete", "observedGeneration": 1})).unwrap());
    let action = run(backup, async |mut h: Handle| {
        // Radio silence: any request is a failure.
        let next = tokio::time::timeout(Duration::from_millis(300), h.next_request()).await;
        assert!(next.is_err() || next.unwrap().is_none(), "a finished backup made a request");
    })
    .await;
    assert_eq!(action, Action::await_change());
}

#[path = "controller_scenarios/deletion.rs"]
mod deletion;
#[path = "controller_scenarios/restore.rs"]
mod restore;
