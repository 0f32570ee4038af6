//! Backups proven restorable on the cluster: a schedule whose backups are catch-up backups (its first a
//! mariabackup one) drills them with Jobs on scratch claims of their own; the catch-up backup restores
//! to a server with the source's checksums.

use super::*;

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn a_schedule_drills_its_backups_and_takes_catch_up_backups() {
    let (_crds, ns) = with_database("e2e-drill").await;
    sql(&ns, "load", "db-0.db", LOAD).await;
    let source = sql(&ns, "checksum-source", "db-0.db", CHECKSUMS).await;

    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: backups}";
    let connection = "{user: root, passwordSecret: {name: db-root, key: password}}";
    let scratch =
        "{volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}}}";
    let schedule = |suspend: bool| {
        yaml::<BackupSchedule>(&format!(
            "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: drilled}}, spec: {{suspend: {suspend}, \
             schedule: '* * * * *', drill: {{scratch: {scratch}, windowCountsDrilledOnly: true}}, \
             backupTemplate: {{source: {{pod: db-0, connection: {connection}}}, method: catchup, scratch: {scratch}, storage: {storage}}}}}}}"
        ))
    };
    ns.apply(schedule(false)).await;

    // The first backup is a mariabackup one, the next ones catch up from it; each is drilled in turn.
    let backups = ns.api::<MySQLBackup>();
    let of_schedule = ListParams::default().labels("mysqlbackup.dev/schedule=drilled");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    let (catchup, drilled) = loop {
        let children = backups.list(&of_schedule).await.expect("children").items;
        let status = |b: &MySQLBackup| b.status.clone().unwrap_or_default();
        for b in &children {
            let st = status(b);
            assert_ne!(st.phase, Some(Phase::Failed), "{} failed: {:#?}", b.name_any(), st.conditions);
            if let Some(d) = &st.drill {
                assert_ne!(d.phase, Phase::Failed, "the drill of {} failed: {:?}", b.name_any(), d.reason);
            }
        }
        let catchup = children.iter().find(|b| {
            let st = status(b);
            st.phase == Some(Phase::Complete) && st.method.as_deref() == Some("catchup")
        });
        let drilled = children.iter().find(|b| status(b).drill.is_some_and(|d| d.phase == Phase::Complete));
        if let (Some(c), Some(d)) = (catchup, drilled) {
            break (c.clone(), d.clone());
        }
        assert!(tokio::time::Instant::now() < deadline, "no drilled backup and catch-up backup within 15 minutes");
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    ns.apply(schedule(true)).await;

    let st = drilled.status.clone().expect("a status");
    let drill = st.drill.expect("a drill");
    assert!(drill.tables_checked.unwrap_or(0) > 2, "{drill:?}");
    assert!(drill.rows.unwrap_or(0) >= 25_000, "the 20000 accounts and 5000 events at least: {drill:?}");
    assert!(drill.server_version.as_deref().is_some_and(|v| v.contains("MariaDB")), "{drill:?}");
    let drilled_condition = st.conditions.iter().find(|c| c.type_ == "Drilled").expect("condition Drilled");
    assert_eq!((drilled_condition.status.as_str(), drilled_condition.reason.as_str()), ("True", "DrillPassed"));
    let drill_job = ns.api::<Job>().get(&drill.job).await.expect("the drill Job");
    let pod_spec = drill_job.spec.and_then(|s| s.template.spec).expect("a pod spec");
    assert!(pod_spec.affinity.is_none(), "a drill is not pinned to the database's node");
    assert!(pod_spec.volumes.unwrap_or_default().iter().any(|v| v.ephemeral.is_some()), "its own scratch claim");
    let schedules = ns.api::<BackupSchedule>();
    let window = schedules.get("drilled").await.expect("the schedule").status.and_then(|s| s.recoverability_window);
    assert!(window.is_some(), "the drilled backup counts in the window");

    // The catch-up backup: positions recorded, and restored it has the source's rows.
    let cst = catchup.status.clone().expect("a status");
    assert!(cst.positions.and_then(|p| p.gtid_executed).is_some_and(|g| g.starts_with("0-1-")));
    let job = ns.api::<Job>().get(cst.job_name.as_deref().expect("its Job")).await.expect("the catch-up Job");
    let pod_spec = job.spec.and_then(|s| s.template.spec).expect("a pod spec");
    assert!(pod_spec.affinity.is_none(), "a catch-up backup runs on any node");
    assert!(
        !pod_spec.volumes.unwrap_or_default().iter().any(|v| v.name == "datadir"),
        "a catch-up backup does not mount the server's datadir"
    );
    ns.apply::<MySQLRestore>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {{name: caught-up}}, spec: {{source: {{backup: {}}}, target: {{volumeClaimTemplate: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 2Gi}}}}}}}}, securityContext: {{runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}}}}",
        catchup.name_any()
    )))
    .await;
    let rs = restore_finished(&ns, "caught-up").await;
    assert_eq!(rs.phase, Some(Phase::Complete), "restore failed: {:#?}", rs.conditions);
    let ip = start_server_on(&ns, "caught-up", &rs.persistent_volume_claim.expect("the restored claim")).await;
    assert_eq!(sql(&ns, "checksum-caught-up", &ip, CHECKSUMS).await, source);
}
