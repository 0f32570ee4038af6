//! Deleting a MySQLBackup with `deletionPolicy: Delete`: the cleanup Job, then the finalizer.

use super::*;

fn deleting_backup() -> MySQLBackup {
    let yaml = BACKUP.replace(
        "metadata: {name: nightly-1, namespace: db, uid: u-1, generation: 1}",
        "metadata: {name: nightly-1, namespace: db, uid: u-1, generation: 1, resourceVersion: '41',\n  \
         deletionTimestamp: '2026-11-22T05:00:00Z', finalizers: [example.com/other, mysqlbackup.dev/delete-data]}",
    ) + "  deletionPolicy: Delete\nstatus: {phase: Complete, backupId: 20261122T020001Z-00abcd}\n";
    serde_yaml::from_str(&yaml).unwrap()
}

const BACKUP_OBJECT: &str = "/apis/mysqlbackup.dev/v1alpha1/namespaces/db/mysqlbackups/nightly-1?";

#[tokio::test]
async fn delete_policy_adds_the_finalizer_before_any_job() {
    let yaml = BACKUP.replace("generation: 1}", "generation: 1, resourceVersion: '7'}") + "  deletionPolicy: Delete\n";
    let backup: MySQLBackup = serde_yaml::from_str(&yaml).unwrap();
    let action = run(backup, async |mut h: Handle| {
        let patch = expect(&mut h, "PATCH", BACKUP_OBJECT, (200, backup_json())).await;
        assert_eq!(patch, json!({"metadata": {"finalizers": ["mysqlbackup.dev/delete-data"], "resourceVersion": "7"}}));
    })
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn deletion_with_delete_policy_runs_the_cleanup_job() {
    let action = run(deleting_backup(), async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{JOBS}/backup-nightly-1"), not_found()).await;
        expect(&mut h, "GET", &format!("{JOBS}/cleanup-nightly-1"), not_found()).await;
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, pod())).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "K"))).await;
        let job = apply_job(&mut h, "cleanup-nightly-1").await;
        let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
        assert_eq!(args[1], "delete");
        assert_eq!(args[2], "--backup=20261122T020001Z-00abcd");
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(event["reason"], "CleanupStarted");
        // The status did not change (no condition yet), so it is not written; the finalizer stays.
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn deletion_completes_when_the_cleanup_job_succeeded() {
    let summary = r#"{"operation":"delete","backupId":"20261122T020001Z-00abcd","storage":"s3://backups/prod","alreadyDeleted":false,"deletedChunks":5,"freedBytes":2048,"keptChunks":1,"durationSeconds":0.2}"#;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "cleanup-nightly-1", "namespace": "db"},
        "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
    let job_pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{"metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "agent", "image": "op:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": summary}}}]}}]});
    let action = run(deleting_backup(), async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{JOBS}/backup-nightly-1"), not_found()).await;
        expect(&mut h, "GET", &format!("{JOBS}/cleanup-nightly-1"), (200, job)).await;
        expect(&mut h, "GET", &format!("{PODS}?&labelSelector=job-name%3Dcleanup-nightly-1"), (200, job_pods)).await;
        expect(&mut h, "GET", &format!("{PODS}/db-0"), not_found()).await;
        expect(&mut h, "GET", &format!("{SECRETS}/s3-creds"), (200, secret("s3-creds", "K"))).await;
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(
            event["note"],
            "deleted backup 20261122T020001Z-00abcd from s3://backups/prod: 5 unreferenced chunk(s), 2048 bytes freed; 1 chunk(s) still in use"
        );
        let patch = expect(&mut h, "PATCH", BACKUP_OBJECT, (200, backup_json())).await;
        assert_eq!(
            patch,
            json!({"metadata": {"finalizers": ["example.com/other"], "resourceVersion": "41"}}),
            "only our finalizer goes"
        );
    })
    .await;
    assert_eq!(action, Action::await_change());
}

const SCHEDULES_STATUS: &str = "/apis/mysqlbackup.dev/v1alpha1/namespaces/db/backupschedules/db-nightly/status?&force=true&fieldManager=mysql-backup-operator";

/// A schedule created two days ago whose cursor is at yesterday's 02:00, so today's 02:00 slot is due.
fn due_schedule() -> mysql_backup_operator::crd::BackupSchedule {
    let now = k8s_openapi::jiff::Timestamp::now();
    let yesterday = now - k8s_openapi::jiff::SignedDuration::from_hours(24);
    serde_json::from_value(json!({
        "apiVersion": "mysqlbackup.dev/v1alpha1", "kind": "BackupSchedule",
        "metadata": {"name": "db-nightly", "namespace": "db", "uid": "s-1", "generation": 1,
            "creationTimestamp": (now - k8s_openapi::jiff::SignedDuration::from_hours(48)).to_string()},
        // Every minute: the slot just past is due whatever the time of the test run.
        "spec": {"schedule": "* * * * *", "backupTemplate": {"source": {"pod": "db-0"}, "storage": {"url": "s3://backups/prod"}}},
        "status": {"lastScheduleTime": yesterday.to_string()}
    }))
    .unwrap()
}

async fn run_schedule(
    schedule: mysql_backup_operator::crd::BackupSchedule,
    script: impl AsyncFnOnce(Handle),
) -> Action {
    let (ctx, handle) = context();
    let script = async move {
        script(handle).await;
    };
    let (action, ()) = tokio::join!(
        mysql_backup_operator::controller::schedule::reconcile::reconcile_schedule(Arc::new(schedule), ctx),
        script
    );
    action.expect("reconcile succeeds")
}

fn empty_list(kind: &str) -> Value {
    json!({"apiVersion": "mysqlbackup.dev/v1alpha1", "kind": kind, "metadata": {}, "items": []})
}

#[tokio::test]
async fn a_due_slot_posts_one_owned_child_and_records_the_cursor() {
    let schedule = due_schedule();
    let echo = serde_json::to_value(&schedule).unwrap();
    let action = run_schedule(schedule, async |mut h: Handle| {
        expect(
            &mut h,
            "GET",
            &format!("{BACKUPS}?&labelSelector=mysqlbackup.dev%2Fschedule%3Ddb-nightly"),
            (200, empty_list("MySQLBackupList")),
        )
        .await;
        let child = expect(&mut h, "POST", &format!("{BACKUPS}?"), (201, backup_json())).await;
        let name = child["metadata"]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with("db-nightly-") && name.len() == "db-nightly-20261122-0200".len(), "{name}");
        assert_eq!(child["metadata"]["ownerReferences"][0]["uid"], "s-1");
        assert_eq!(child["metadata"]["labels"]["mysqlbackup.dev/schedule"], "db-nightly");
        let status = expect_status(&mut h, SCHEDULES_STATUS, (200, echo)).await;
        let s = &status["status"];
        assert!(s["missedSlots"].as_i64().unwrap() > 1000, "a day of minutes went by: {s}");
        assert!(s["nextScheduleTime"].is_string() && s["lastScheduleTime"].is_string());
        let events: Vec<Value> = vec![
            expect(&mut h, "POST", EVENTS, (201, json!({}))).await,
            expect(&mut h, "POST", EVENTS, (201, json!({}))).await,
        ];
        let reasons: Vec<&str> = events.iter().map(|e| e["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["MissedSlots", "BackupCreated"]);
    })
    .await;
    assert_ne!(action, Action::await_change(), "a valid schedule requeues for its next slot");
}

#[tokio::test]
async fn a_name_held_by_another_object_is_not_adopted() {
    let schedule = due_schedule();
    let echo = serde_json::to_value(&schedule).unwrap();
    run_schedule(schedule, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{BACKUPS}?&labelSelector=mysqlbackup.dev%2Fschedule%3Ddb-nightly"), (200, empty_list("MySQLBackupList"))).await;
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"});
        let child = expect(&mut h, "POST", &format!("{BACKUPS}?"), (409, conflict)).await;
        let name = child["metadata"]["name"].as_str().unwrap().to_string();
        // Someone else's MySQLBackup of that name: no owner reference to this schedule.
        let mut foreign = backup_json();
        foreign["metadata"]["name"] = json!(name);
        expect(&mut h, "GET", &format!("{BACKUPS}/{name}"), (200, foreign)).await;
        let status = expect_status(&mut h, SCHEDULES_STATUS, (200, echo)).await;
        let missed = status["status"]["missedSlots"].as_i64().unwrap();
        let first = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(first["reason"], "MissedSlots");
        let second = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(second["reason"], "NameTaken");
        assert_eq!(
            second["note"],
            format!("MySQLBackup {name} exists and is not owned by this schedule; it is left alone and this slot takes no backup")
        );
        assert!(missed > 1000);
    })
    .await;
}

#[tokio::test]
async fn a_new_success_starts_retention_as_a_prune_job() {
    let now = k8s_openapi::jiff::Timestamp::now();
    let schedule: mysql_backup_operator::crd::BackupSchedule = serde_json::from_value(json!({
        "apiVersion": "mysqlbackup.dev/v1alpha1", "kind": "BackupSchedule",
        "metadata": {"name": "db-nightly", "namespace": "db", "uid": "s-1", "generation": 1,
            "creationTimestamp": (now - k8s_openapi::jiff::SignedDuration::from_hours(48)).to_string()},
        // New Year only: nothing is due during the test.
        "spec": {"schedule": "0 0 1 1 *", "retention": {"keepDaily": 7},
            "backupTemplate": {"source": {"pod": "db-0"}, "storage": {"url": "s3://backups/prod", "credentialsSecret": "s3-creds"}}},
        "status": {"lastScheduleTime": (now - k8s_openapi::jiff::SignedDuration::from_secs(60)).to_string()}
    }))
    .unwrap();
    let echo = serde_json::to_value(&schedule).unwrap();
    let child = json!({"apiVersion": "mysqlbackup.dev/v1alpha1", "kind": "MySQLBackup",
        "metadata": {"name": "db-nightly-manual-0000abcd", "namespace": "db", "ownerReferences": [{"apiVersion": "mysqlbackup.dev/v1alpha1",
            "kind": "BackupSchedule", "name": "db-nightly", "uid": "s-1", "controller": true}]},
        "spec": {"source": {"pod": "db-0"}, "storage": {"url": "s3://backups/prod"}},
        "status": {"phase": "Complete", "completionTime": "2026-11-22T02:10:00Z", "backupId": "20261122T020001Z-00abcd"}});
    let list =
        json!({"apiVersion": "mysqlbackup.dev/v1alpha1", "kind": "MySQLBackupList", "metadata": {}, "items": [child]});
    let action = run_schedule(schedule, async |mut h: Handle| {
        expect(
            &mut h,
            "GET",
            &format!("{BACKUPS}?&labelSelector=mysqlbackup.dev%2Fschedule%3Ddb-nightly"),
            (200, list),
        )
        .await;
        let mut db_pod = pod();
        db_pod["spec"]["securityContext"] = json!({"runAsUser": 999, "fsGroup": 999});
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, db_pod)).await;
        let job = apply_job(&mut h, "prune-db-nightly-manual-0000abcd").await;
        let spec = &job["spec"]["template"]["spec"];
        assert_eq!(spec["securityContext"]["runAsUser"], 999, "runs as the database pod's user");
        assert_eq!(spec["containers"][0]["args"][2], "--keep-daily=7");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "BackupSchedule");
        let status = expect_status(&mut h, SCHEDULES_STATUS, (200, echo)).await;
        let s = &status["status"];
        assert_eq!(s["lastPrune"]["phase"], "Running");
        assert_eq!(s["lastSuccessfulBackup"]["backupId"], "20261122T020001Z-00abcd");
        assert_eq!(s["recoverabilityWindow"]["from"], "2026-11-22T02:10:00Z");
    })
    .await;
    assert!(matches!(action, a if a != Action::await_change()));
}

/// Schedule `db-nightly` archiving binary logs, with `status.binlogArchive` as given; its backups are
/// due on New Year only, so none is due during a test.
fn archiving_schedule(archive_status: Option<Value>) -> mysql_backup_operator::crd::BackupSchedule {
    let now = k8s_openapi::jiff::Timestamp::now();
    serde_json::from_value(json!({
        "apiVersion": "mysqlbackup.dev/v1alpha1", "kind": "BackupSchedule",
        "metadata": {"name": "db-nightly", "namespace": "db", "uid": "s-1", "generation": 1,
            "creationTimestamp": (now - k8s_openapi::jiff::SignedDuration::from_hours(48)).to_string()},
        "spec": {"schedule": "0 0 1 1 *", "binlogArchive": {},
            "backupTemplate": {"source": {"pod": "db-0"}, "storage": {"url": "s3://backups/prod", "credentialsSecret": "s3-creds"}}},
        "status": {"lastScheduleTime": (now - k8s_openapi::jiff::SignedDuration::from_secs(60)).to_string(),
            "binlogArchive": archive_status}
    }))
    .expect("a BackupSchedule")
}

#[tokio::test]
async fn binlog_archiving_applies_the_archiver_deployment_and_polls_it() {
    let schedule = archiving_schedule(None);
    let echo = serde_json::to_value(&schedule).unwrap();
    let action = run_schedule(schedule, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{BACKUPS}?&labelSelector=mysqlbackup.dev%2Fschedule%3Ddb-nightly"), (200, empty_list("MySQLBackupList"))).await;
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, pod())).await;
        // No archiver pod runs yet: nothing to read.
        let no_pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
        expect(
            &mut h,
            "GET",
            &format!("{PODS}?&labelSelector=app.kubernetes.io%2Fcomponent%3Darchiver%2Cmysqlbackup.dev%2Fschedule%3Ddb-nightly"),
            (200, no_pods),
        )
        .await;
        let dep = expect(
            &mut h,
            "PATCH",
            "/apis/apps/v1/namespaces/db/deployments/archiver-db-nightly?&force=true&fieldManager=mysql-backup-operator",
            (200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "archiver-db-nightly"}})),
        )
        .await;
        assert_eq!(dep["spec"]["replicas"], 1);
        assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
        assert_eq!(dep["spec"]["template"]["spec"]["containers"][0]["args"][3], "--archive=db.db-nightly");
        let status = expect_status(&mut h, SCHEDULES_STATUS, (200, echo)).await;
        assert_eq!(status["status"]["binlogArchive"]["phase"], "Starting");
        let event = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
        assert_eq!(event["note"], "binary-log archiver of db.db-nightly is Starting");
    })
    .await;
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(30)), "the archiver is read every 30 s");
}

/// An archiver's `/status`, served over HTTP on a free loopback port; returns the port.
async fn serve_archiver_status(body: Value) -> u16 {
    let body = body.to_string();
    let app = axum::Router::new().route("/status", axum::routing::get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test]
async fn a_running_archiver_is_read_over_http_and_its_gap_becomes_status_and_a_warning() {
    let port = serve_archiver_status(json!({
        "state": "streaming", "archive": "db.db-nightly", "archivedPosition": "0-1-420",
        "lastEventTime": "2026-11-22T10:00:00Z", "lagSeconds": 1.6, "segments": 12, "transactions": 420,
        "gaps": [{"afterSeq": 6, "beforeSeq": 7, "reason": "the data of segment 6 is missing"}]
    }))
    .await;
    let schedule = archiving_schedule(Some(json!({"phase": "Starting", "archive": "db.db-nightly"})));
    let echo = serde_json::to_value(&schedule).unwrap();
    // The archiver pod as its Deployment makes it, running on this machine's loopback address.
    let archiver_pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "archiver-db-nightly-1", "namespace": "db"},
        "spec": {"containers": [{"name": "archiver", "ports": [{"name": "status", "containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1"}
    });
    run_schedule(schedule, async |mut h: Handle| {
        expect(&mut h, "GET", &format!("{BACKUPS}?&labelSelector=mysqlbackup.dev%2Fschedule%3Ddb-nightly"), (200, empty_list("MySQLBackupList"))).await;
        expect(&mut h, "GET", &format!("{PODS}/db-0"), (200, pod())).await;
        expect(
            &mut h,
            "GET",
            &format!("{PODS}?&labelSelector=app.kubernetes.io%2Fcomponent%3Darchiver%2Cmysqlbackup.dev%2Fschedule%3Ddb-nightly"),
            (200, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [archiver_pod]})),
        )
        .await;
        expect(
            &mut h,
            "PATCH",
            "/apis/apps/v1/namespaces/db/deployments/archiver-db-nightly?&force=true&fieldManager=mysql-backup-operator",
            (200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "archiver-db-nightly"}})),
        )
        .await;
        let status = expect_status(&mut h, SCHEDULES_STATUS, (200, echo)).await;
        let archive = &status["status"]["binlogArchive"];
        assert_eq!(
            (&archive["phase"], &archive["archivedPosition"], &archive["lastEventTime"], &archive["lagSeconds"]),
            (&json!("Streaming"), &json!("0-1-420"), &json!("2026-11-22T10:00:00Z"), &json!(2))
        );
        assert_eq!((&archive["gaps"], &archive["lastGap"]), (&json!(1), &json!("gap before segment 7: the data of segment 6 is missing")));
        let mut events = Vec::new();
        for _ in 0..2 {
            let e = expect(&mut h, "POST", EVENTS, (201, json!({}))).await;
            events.push((e["type"].as_str().unwrap().to_string(), e["reason"].as_str().unwrap().to_string()));
        }
        events.sort();
        assert_eq!(
            events,
            [("Normal".to_string(), "ArchiverStreaming".to_string()), ("Warning".to_string(), "ArchiveGap".to_string())]
        );
    })
    .await;
}
