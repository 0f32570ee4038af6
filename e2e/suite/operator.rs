//! The operator itself: CRDs upgraded in place, the standby taking over a backup when the leader
//! dies, a Job deleted under a running backup and restore, bad resources reported while good ones
//! proceed.

use super::*;

/// Applies every CRD in `text` server-side and waits until each is established and served with its
/// new schema (the API server takes a moment to switch).
async fn apply_crds(client: &Client, text: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(text) {
        let crd = CustomResourceDefinition::deserialize(doc).expect("a CRD");
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("e2e-crds").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        wait_for(&api, &name, Duration::from_secs(60), "established", |c: &CustomResourceDefinition| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await;
    }
}

/// Merge-patches a MySQLBackup's spec; returns the API server's refusal, if any.
async fn patch_spec(api: &Api<MySQLBackup>, name: &str, spec: serde_json::Value) -> Result<MySQLBackup, String> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": spec })))
        .await
        .map_err(|e| e.to_string())
}

/// Retries `patch_spec` for up to 30 s until it succeeds (the API server switches schemas lazily).
async fn patch_spec_eventually(api: &Api<MySQLBackup>, name: &str, spec: serde_json::Value) -> MySQLBackup {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match patch_spec(api, name, spec.clone()).await {
            Ok(b) => return b,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("patch refused, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("patching {name} with {spec}: {e}"),
        }
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn crds_upgrade_in_place_over_the_previous_release() {
    let _only = CRDS.write().await;
    let client = client().await;
    apply_crds(&client, PREVIOUS_CRDS).await;
    let ns = TestNamespace::create(&client, "e2e-upgrade").await;
    // An object written under the previous release's CRDs.
    ns.apply::<MySQLBackup>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {name: kept}, spec: {source: {pod: gone-0}, method: mariabackup, storage: {url: 's3://bucket/prefix'}}}",
    ))
    .await;
    let api = ns.api::<MySQLBackup>();
    // The previous release kept the whole spec immutable (the bug this release fixes).
    let old = patch_spec(&api, "kept", serde_json::json!({"deletionPolicy": "Delete"})).await.expect_err("refused");
    assert!(old.contains("spec is immutable: create a new MySQLBackup"), "{old}");

    apply_crds(&client, CURRENT_CRDS).await;
    // The object is still served and reconciled: blocked on its missing pod, with a Warning.
    let blocked = wait_for(&api, "kept", Duration::from_secs(120), "blocked", |b: &MySQLBackup| {
        b.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Blocked" && c.status == "True"))
    })
    .await;
    let c = blocked.status.expect("a status").conditions.into_iter().find(|c| c.type_ == "Blocked").expect("Blocked");
    assert_eq!(
        (c.reason.as_str(), c.message.as_str()),
        ("PodNotFound", &*format!("pod gone-0 not found in namespace {}", ns.name))
    );
    // Now deletionPolicy can change, and the finalizer follows it; the rest of the spec cannot.
    patch_spec_eventually(&api, "kept", serde_json::json!({"deletionPolicy": "Delete"})).await;
    let err = patch_spec(&api, "kept", serde_json::json!({"method": "cold"})).await.expect_err("refused");
    assert!(err.contains("spec is immutable except deletionPolicy: create a new MySQLBackup"), "{err}");
    wait_for(&api, "kept", Duration::from_secs(60), "finalized", |b: &MySQLBackup| {
        b.finalizers().iter().any(|f| f == "mysqlbackup.dev/delete-data")
    })
    .await;
    // The schedule's template is editable, which the previous CRDs refused.
    let schedule = "{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {name: tmpl}, spec: {suspend: true, schedule: '0 0 1 1 *', backupTemplate: {source: {pod: gone-0}, method: mariabackup, storage: {url: 's3://bucket/prefix'}}}}";
    ns.apply::<BackupSchedule>(yaml(schedule)).await;
    ns.apply::<BackupSchedule>(yaml(&schedule.replace("method: mariabackup", "method: cold"))).await;
    // Deleting it runs no cleanup: nothing was stored.
    api.delete("kept", &DeleteParams::default()).await.expect("delete");
    wait_gone(&api, "kept", Duration::from_secs(120)).await;
}

/// The pod holding the operator's Lease, once one does (a stopping leader releases it, and for a
/// moment no one holds it).
async fn leader(client: &Client) -> String {
    let leases = Api::<Lease>::namespaced(client.clone(), &operator_namespace());
    let held = wait_for(&leases, "mysql-backup-operator", Duration::from_secs(60), "held", |l: &Lease| {
        l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).is_some_and(|h| !h.is_empty())
    })
    .await;
    held.spec.and_then(|s| s.holder_identity).expect("a holder")
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn the_standby_replica_finishes_a_backup_when_the_leader_dies_mid_run() {
    let (_crds, ns) = with_database("e2e-failover").await;
    let client = ns.client.clone();
    sql(&ns, "load", "db-0.db", LOAD).await;
    // The backup stores on a claim that stays unbound (no provisioner serves its class) until the test
    // binds it: its Job runs, but its pod waits for the volume, so the backup cannot end while the
    // leader that started it lives.
    ns.apply::<PersistentVolumeClaim>(yaml(
        "{apiVersion: v1, kind: PersistentVolumeClaim, metadata: {name: late}, spec: {storageClassName: e2e-late, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
    ))
    .await;
    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: late}";
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: survives}}, spec: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}}}}}"
    )))
    .await;
    let backups = ns.api::<MySQLBackup>();
    let running = wait_for(&backups, "survives", Duration::from_secs(300), "running", |b: &MySQLBackup| {
        b.status.as_ref().and_then(|s| s.job_name.as_ref()).is_some()
    })
    .await;
    assert!(!finished(running.status.and_then(|s| s.phase)));

    // Kill the leader (no grace) and wait until it is gone and the other replica leads.
    let old = leader(&client).await;
    let operator_pods = Api::<Pod>::namespaced(client.clone(), &operator_namespace());
    operator_pods
        .delete(&old, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("deleting the leader {old}: {e}"));
    wait_gone(&operator_pods, &old, Duration::from_secs(120)).await;
    let leases = Api::<Lease>::namespaced(client.clone(), &operator_namespace());
    let moved = wait_for(&leases, "mysql-backup-operator", Duration::from_secs(120), "taken over", |l: &Lease| {
        l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).is_some_and(|h| !h.is_empty() && h != old)
    })
    .await;
    let new = moved.spec.and_then(|s| s.holder_identity).expect("a holder");
    let b = backups.get("survives").await.expect("the backup");
    assert!(!finished(b.status.and_then(|s| s.phase)), "the backup ended before the leader died");

    // Now the volume arrives; the new leader sees the Job through and records it.
    let volume_name = format!("e2e-late-{}", ns.name);
    let volume: PersistentVolume = yaml(&format!(
        "{{apiVersion: v1, kind: PersistentVolume, metadata: {{name: {volume_name}}}, spec: {{storageClassName: e2e-late, capacity: {{storage: 1Gi}}, accessModes: [ReadWriteOnce], persistentVolumeReclaimPolicy: Retain, hostPath: {{path: /tmp/mysql-backup-operator-{volume_name}, type: DirectoryOrCreate}}, claimRef: {{namespace: {}, name: late}}}}}}",
        ns.name
    ));
    let volumes = Api::<PersistentVolume>::all(client.clone());
    volumes.create(&PostParams::default(), &volume).await.expect("the late volume");
    let status = backup_finished(&ns, "survives").await;
    let _ = volumes.delete(&volume_name, &DeleteParams::default()).await;
    assert_eq!(status.phase, Some(Phase::Complete), "{:#?}", status.conditions);
    assert!(status.positions.and_then(|p| p.gtid_executed).is_some());
    assert_eq!(leader(&client).await, new, "the new leader kept the Lease");
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.expect("jobs");
    let names: Vec<String> = jobs.items.iter().map(|j| j.name_any()).filter(|n| n.starts_with("backup-")).collect();
    assert_eq!(names, vec!["backup-survives".to_string()], "exactly one backup Job");
    let job = jobs.items.iter().find(|j| j.name_any() == "backup-survives").and_then(|j| j.status.as_ref());
    assert_eq!(job.and_then(|s| s.succeeded), Some(1));
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn a_job_deleted_under_a_running_backup_and_an_overwriting_restore_ends_job_lost_and_runs_nothing_again() {
    let (_crds, ns) = with_database("e2e-lost").await;
    // Claims that stay unbound (no provisioner serves their class): the Jobs run, their pods wait.
    for claim in ["late-store", "late-target"] {
        ns.apply::<PersistentVolumeClaim>(yaml(&format!(
            "{{apiVersion: v1, kind: PersistentVolumeClaim, metadata: {{name: {claim}}}, spec: {{storageClassName: e2e-never, accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}"
        )))
        .await;
    }
    ns.apply::<MySQLBackup>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {name: orphan}, spec: {source: {pod: db-0, connection: {user: root, passwordSecret: {name: db-root, key: password}}}, method: mariabackup, storage: {url: 'file:///backups/e2e', persistentVolumeClaim: late-store}}}",
    ))
    .await;
    ns.apply::<MySQLRestore>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {name: orphan}, spec: {source: {storage: {url: 'file:///backups/e2e', persistentVolumeClaim: backups}}, target: {persistentVolumeClaim: late-target, overwrite: true}, securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}",
    ))
    .await;
    let jobs = ns.api::<Job>();
    for job in ["backup-orphan", "restore-orphan"] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while jobs.get_opt(job).await.expect("jobs").is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no Job {job} within 2 minutes");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        jobs.delete(job, &DeleteParams::background()).await.unwrap_or_else(|e| panic!("deleting {job}: {e}"));
    }
    let lost = |job: &str, consequence: &str| {
        format!(
            "Job {job} is gone and its outcome was never read (deleted by hand, or by its TTL while the controller was down); it is not run again: {consequence}"
        )
    };
    let expected = [
        (
            "backup",
            lost(
                "backup-orphan",
                "the backup may or may not be in storage (agent list shows it); create a new MySQLBackup to take another",
            ),
        ),
        (
            "restore",
            lost(
                "restore-orphan",
                "PersistentVolumeClaim late-target may hold a partial restore or a server already using it; check it, then create a new MySQLRestore to restore again",
            ),
        ),
    ];
    for (kind, message) in &expected {
        let conditions = if *kind == "backup" {
            backup_finished(&ns, "orphan").await.conditions
        } else {
            restore_finished(&ns, "orphan").await.conditions
        };
        let failed = conditions.iter().find(|c| c.type_ == "Failed" && c.status == "True");
        let failed = failed.unwrap_or_else(|| panic!("{kind}: not Failed: {conditions:#?}"));
        assert_eq!((failed.reason.as_str(), failed.message.as_str()), ("JobLost", message.as_str()), "{kind}");
    }
    let events = events_of(&ns, "orphan").await;
    for (_, message) in &expected {
        assert!(
            events.iter().any(|(t, r, m)| t == "Warning" && r == "JobLost" && m == message),
            "no Warning JobLost Event {message:?} in {events:#?}"
        );
    }
    // Nothing runs again: no Job comes back, the target claim is left as it is.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for job in ["backup-orphan", "restore-orphan"] {
        let again = jobs.get_opt(job).await.expect("jobs");
        assert!(again.is_none_or(|j| j.metadata.deletion_timestamp.is_some()), "{job} was created again");
    }
}

/// The Events recorded for `name`, as (type, reason, message).
async fn events_of(ns: &TestNamespace, name: &str) -> Vec<(String, String, String)> {
    let events = ns
        .api::<Event>()
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events");
    events
        .items
        .into_iter()
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn bad_resources_get_conditions_and_events_while_good_ones_proceed() {
    let (_crds, ns) = with_database("e2e-bad").await;
    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: backups}";
    let conn = "{user: root, passwordSecret: {name: db-root, key: password}}";
    let backup = |name: &str, source: &str, storage: &str| {
        yaml::<MySQLBackup>(&format!(
            "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: {name}}}, spec: {{source: {source}, method: mariabackup, storage: {storage}}}}}"
        ))
    };
    ns.apply(backup("no-pod", &format!("{{pod: db-9, connection: {conn}}}"), storage)).await;
    ns.apply(backup(
        "no-secret",
        "{pod: db-0, connection: {user: root, passwordSecret: {name: nowhere, key: password}}}",
        storage,
    ))
    .await;
    // The schema refuses a URL of an unknown scheme outright; one it cannot refuse fails the backup.
    let refused = ns
        .api::<MySQLBackup>()
        .patch(
            "ftp",
            &PatchParams::apply("e2e"),
            &Patch::Apply(backup("ftp", &format!("{{pod: db-0, connection: {conn}}}"), "{url: 'ftp://host/backups'}")),
        )
        .await
        .expect_err("refused by the schema")
        .to_string();
    assert!(refused.contains("url must start with s3://, az://, gs:// or file://"), "{refused}");
    // So it refuses a rate that is not bytes a second.
    let refused = ns
        .api::<MySQLBackup>()
        .patch(
            "fast",
            &PatchParams::apply("e2e"),
            &Patch::Apply(backup(
                "fast",
                &format!("{{pod: db-0, connection: {conn}, readRate: fast}}"),
                "{url: 's3://b/p', rateLimit: '1.5Gi'}",
            )),
        )
        .await
        .expect_err("refused by the schema")
        .to_string();
    assert!(refused.contains("readRate is bytes a second: 20Mi, 500M or a whole number"), "{refused}");
    assert!(refused.contains("rateLimit is bytes a second: 20Mi, 500M or a whole number"), "{refused}");
    ns.apply(backup("bad-url", &format!("{{pod: db-0, connection: {conn}}}"), "{url: 'file:///backups/e2e'}")).await;
    ns.apply(backup("good", &format!("{{pod: db-0, connection: {conn}}}"), storage)).await;

    let backups = ns.api::<MySQLBackup>();
    assert_eq!(backup_finished(&ns, "good").await.phase, Some(Phase::Complete));
    let expected = [
        ("no-pod", "Blocked", "PodNotFound", format!("pod db-9 not found in namespace {}", ns.name)),
        (
            "no-secret",
            "Blocked",
            "SecretNotFound",
            "Secret nowhere (spec.source.connection.passwordSecret) not found".to_string(),
        ),
        (
            "bad-url",
            "Failed",
            "InvalidSpec",
            "spec.storage.url is file:// but spec.storage.persistentVolumeClaim names no volume".to_string(),
        ),
    ];
    for (name, kind, reason, message) in expected {
        let b = backups.get(name).await.expect("the bad backup");
        let conditions = b.status.map(|s| s.conditions).unwrap_or_default();
        let c = conditions.iter().find(|c| c.type_ == kind && c.status == "True");
        let c = c.unwrap_or_else(|| panic!("{name}: no {kind} condition in {conditions:#?}"));
        assert_eq!((c.reason.as_str(), c.message.as_str()), (reason, message.as_str()), "{name}");
        let events = events_of(&ns, name).await;
        assert!(
            events.iter().any(|(t, r, m)| t == "Warning" && r == reason && *m == message),
            "{name}: no Warning {reason} Event in {events:#?}"
        );
        assert!(ns.api::<Job>().get_opt(&format!("backup-{name}")).await.expect("jobs").is_none(), "{name} got a Job");
    }

    // The finalizer follows deletionPolicy both ways.
    let has_finalizer = |b: &MySQLBackup| b.finalizers().iter().any(|f| f == "mysqlbackup.dev/delete-data");
    patch_spec(&backups, "no-pod", serde_json::json!({"deletionPolicy": "Delete"})).await.expect("switch to Delete");
    wait_for(&backups, "no-pod", Duration::from_secs(60), "finalized", has_finalizer).await;
    patch_spec(&backups, "no-pod", serde_json::json!({"deletionPolicy": "Retain"})).await.expect("switch to Retain");
    wait_for(&backups, "no-pod", Duration::from_secs(60), "without the finalizer", |b: &MySQLBackup| !has_finalizer(b))
        .await;

    // deletionPolicy switched on the finished backup: the finalizer follows, and deleting the
    // object deletes its data through a cleanup Job.
    let switched =
        patch_spec(&backups, "good", serde_json::json!({"deletionPolicy": "Delete"})).await.expect("switch to Delete");
    assert_eq!(switched.spec.deletion_policy, mysql_backup_operator::crd::DeletionPolicy::Delete);
    wait_for(&backups, "good", Duration::from_secs(60), "finalized", |b: &MySQLBackup| {
        b.finalizers().iter().any(|f| f == "mysqlbackup.dev/delete-data")
    })
    .await;
    let err = patch_spec(&backups, "good", serde_json::json!({"source": {"pod": "db-1"}})).await.expect_err("refused");
    assert!(err.contains("spec is immutable except deletionPolicy: create a new MySQLBackup"), "{err}");
    backups.delete("good", &DeleteParams::default()).await.expect("delete");
    wait_gone(&backups, "good", Duration::from_secs(300)).await;
    let cleanup = ns.api::<Job>().get("cleanup-good").await.expect("the cleanup Job");
    assert_eq!(cleanup.status.and_then(|s| s.succeeded), Some(1));
}
