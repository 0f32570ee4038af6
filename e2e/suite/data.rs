//! The data through the operator: a StatefulSet backed up and restored into a new claim with equal
//! checksums; a server whose data is mostly MyRocks backed up by `auto` with the `myrocks` method and
//! restored with equal checksums; binary logs archived continuously, with every object encrypted, and
//! restored to a GTID between marker rows.

use super::*;

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn backup_a_statefulset_restore_into_a_new_claim_and_compare_checksums() {
    let (_crds, ns) = with_database("e2e-backup").await;
    sql(&ns, "load", "db-0.db", LOAD).await;
    let source = sql(&ns, "checksum-source", "db-0.db", CHECKSUMS).await;
    assert!(source.contains("app.accounts") && source.contains("20000"), "unexpected source checksums:\n{source}");

    // Back up through the operator and read the result from the status.
    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: backups}";
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: first}}, spec: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}}}}}"
    )))
    .await;
    let backups = ns.api::<MySQLBackup>();
    let status = backup_finished(&ns, "first").await;
    assert_eq!(status.phase, Some(Phase::Complete), "backup failed: {:#?}", status.conditions);
    assert!(status.backup_id.is_some() && status.manifest.is_some());
    let positions = status.positions.expect("positions");
    assert!(positions.gtid_executed.as_deref().is_some_and(|g| g.starts_with("0-1-")), "{positions:?}");
    assert!(positions.binlog_file.as_deref().is_some_and(|f| f.starts_with("mysql-bin.")), "{positions:?}");
    assert!(status.sizes.expect("sizes").data_bytes > 0);

    // Restore into a new claim, then start a server on it.
    ns.apply::<MySQLRestore>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {name: again}, spec: {source: {backup: first}, target: {volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}}, securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}",
    ))
    .await;
    let rs = restore_finished(&ns, "again").await;
    assert_eq!(rs.phase, Some(Phase::Complete), "restore failed: {:#?}", rs.conditions);
    assert_eq!(rs.positions.and_then(|p| p.gtid_executed), positions.gtid_executed);
    let claim = rs.persistent_volume_claim.expect("the restored claim");
    let ip = start_server_on(&ns, "restored", &claim).await;
    let copy = sql(&ns, "checksum-restored", &ip, CHECKSUMS).await;
    assert_eq!(copy, source, "checksums of the restored server differ from the source's");

    // deletionPolicy Delete: deleting the object deletes the data, then the object goes.
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: doomed}}, spec: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, deletionPolicy: Delete, storage: {storage}}}}}"
    )))
    .await;
    assert_eq!(backup_finished(&ns, "doomed").await.phase, Some(Phase::Complete));
    let doomed = backups.get("doomed").await.expect("the backup");
    assert!(doomed.finalizers().iter().any(|f| f == "mysqlbackup.dev/delete-data"), "{:?}", doomed.finalizers());
    backups.delete("doomed", &DeleteParams::default()).await.expect("delete");
    wait_gone(&backups, "doomed", Duration::from_secs(300)).await;
    let cleanup = ns.api::<Job>().get("cleanup-doomed").await.expect("the cleanup Job is kept for an hour");
    assert_eq!(cleanup.status.and_then(|s| s.succeeded), Some(1));
    // The first backup is untouched: a second restore of it still completes.
    ns.apply::<MySQLRestore>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {name: after-delete}, spec: {source: {backup: first}, target: {volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}}, securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}",
    ))
    .await;
    assert_eq!(restore_finished(&ns, "after-delete").await.phase, Some(Phase::Complete));

    // A schedule every minute keeping one backup: after two successes the prune Job deletes the older
    // backup and its MySQLBackup; the schedule's status reports the window and its last success.
    ns.apply::<BackupSchedule>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: every-minute}}, spec: {{schedule: '* * * * *', retention: {{keepLast: 1}}, backupTemplate: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}}}}}}}"
    )))
    .await;
    let schedules = ns.api::<BackupSchedule>();
    let pruned = wait_for(&schedules, "every-minute", Duration::from_secs(900), "pruned once", |s: &BackupSchedule| {
        s.status
            .as_ref()
            .and_then(|st| st.last_prune.as_ref())
            .is_some_and(|p| p.phase == Phase::Complete && p.deleted >= 1)
    })
    .await;
    let st = pruned.status.expect("a status");
    assert!(st.last_successful_backup.and_then(|b| b.positions).and_then(|p| p.gtid_executed).is_some());
    assert!(st.recoverability_window.is_some());
    // The template can be edited (its type is also MySQLBackup's spec, which cannot): the next backup
    // of the schedule carries the change.
    let edited = ns
        .apply::<BackupSchedule>(yaml(&format!(
            "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: every-minute}}, spec: {{schedule: '* * * * *', retention: {{keepLast: 1}}, backupTemplate: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}, job: {{backoffLimit: 2}}}}}}}}"
        )))
        .await;
    let edited_at = edited.metadata.generation;
    assert!(edited_at > pruned.metadata.generation, "the template edit made a new generation");
    let children_api = ns.api::<MySQLBackup>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let children = children_api
            .list(&ListParams::default().labels("mysqlbackup.dev/schedule=every-minute"))
            .await
            .expect("children");
        if children.items.iter().any(|b| b.spec.job.backoff_limit == Some(2)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no backup of the edited template within 3 minutes");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    ns.apply::<BackupSchedule>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: every-minute}}, spec: {{suspend: true, schedule: '* * * * *', retention: {{keepLast: 1}}, backupTemplate: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}}}}}}}"
    )))
    .await;
    let children = ns
        .api::<MySQLBackup>()
        .list(&ListParams::default().labels("mysqlbackup.dev/schedule=every-minute"))
        .await
        .expect("children");
    let complete =
        children.items.iter().filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Complete)).count();
    assert!(complete <= 2, "retention keeps one complete backup (plus one that may just have finished): {complete}");
}

/// RocksDB tables, most of the data, beside an InnoDB one; flushed into SST files.
const ROCKS_LOAD: &str = "CREATE DATABASE app; USE app; \
    CREATE TABLE app.r (id INT PRIMARY KEY, payload CHAR(64), KEY (payload(16))) ENGINE=ROCKSDB; \
    INSERT INTO app.r SELECT seq, SHA2(seq, 256) FROM seq_1_to_400000; \
    CREATE TABLE app.accounts (id INT PRIMARY KEY, owner VARCHAR(64)) ENGINE=InnoDB; \
    INSERT INTO app.accounts SELECT seq, CONCAT('owner-', seq) FROM seq_1_to_20000; \
    SET GLOBAL rocksdb_force_flush_memtable_now = 1;";

const ROCKS_CHECKSUMS: &str = "CHECKSUM TABLE app.r, app.accounts; SELECT COUNT(*) FROM app.r;";

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn a_mostly_myrocks_server_is_backed_up_by_auto_with_myrocks_and_restored() {
    let rocksdb = ["--plugin-load-add=ha_rocksdb"];
    let _crds = CRDS.read().await;
    let ns = TestNamespace::create(&client().await, "e2e-myrocks").await;
    start_database_with(&ns, &rocksdb).await;
    sql(&ns, "load", "db-0.db", ROCKS_LOAD).await;
    let source = sql(&ns, "checksum-source", "db-0.db", ROCKS_CHECKSUMS).await;
    assert!(source.contains("app.r") && source.contains("400000"), "unexpected source checksums:\n{source}");

    // No method: auto, which the Job resolves by asking the server; twice, the second taking the SST
    // files over from the first.
    let storage = "{url: 'file:///backups/e2e-myrocks', persistentVolumeClaim: backups}";
    for name in ["rocks-1", "rocks-2"] {
        ns.apply::<MySQLBackup>(yaml(&format!(
            "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: {name}}}, spec: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, storage: {storage}}}}}"
        )))
        .await;
        let status = backup_finished(&ns, name).await;
        assert_eq!(status.phase, Some(Phase::Complete), "backup failed: {:#?}", status.conditions);
        assert_eq!(status.method.as_deref(), Some("myrocks"), "auto chose myrocks");
    }
    let second = ns.api::<MySQLBackup>().get("rocks-2").await.expect("rocks-2").status.expect("a status");
    let sizes = second.sizes.expect("sizes");
    assert!(
        sizes.taken_over_bytes.is_some_and(|t| t * 2 > sizes.data_bytes),
        "the second backup read most of the data from the first's manifest, not the disk: {sizes:?}"
    );

    // Restored (prepared in the database's image) into a new claim, a server with the engine on it.
    ns.apply::<MySQLRestore>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {name: rocks}, spec: {source: {backup: rocks-2}, target: {volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}}, securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}",
    ))
    .await;
    let rs = restore_finished(&ns, "rocks").await;
    assert_eq!(rs.phase, Some(Phase::Complete), "restore failed: {:#?}", rs.conditions);
    let claim = rs.persistent_volume_claim.expect("the restored claim");
    let ip = start_server_with_on(&ns, "rocks-restored", &claim, &rocksdb).await;
    let copy = sql(&ns, "checksum-restored", &ip, ROCKS_CHECKSUMS).await;
    assert_eq!(copy, source, "checksums of the restored server differ from the source's");
}

/// The markers the archiving test writes, one transaction each.
const MARKERS: &str = "CREATE DATABASE app; CREATE TABLE app.marks (id INT PRIMARY KEY) ENGINE=InnoDB;";

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn archive_binary_logs_continuously_and_restore_to_a_gtid_between_markers_encrypted() {
    let (_crds, ns) = with_database("e2e-archive").await;
    // A marker string no stored object may hold in the clear.
    let secret_marker = "e2e-plaintext-7c1d0a";
    sql(
        &ns,
        "markers",
        "db-0.db",
        &format!(
            "{MARKERS} CREATE TABLE app.secret (s VARCHAR(64)); INSERT INTO app.secret VALUES ('{secret_marker}');"
        ),
    )
    .await;
    // Everything below is encrypted: backups, the archiver, the restore.
    let (key, other) = ("q1XyYVd5m4Lw3bqH0i0S8m5l2Zl6J2b9o0rX8H1cE7k=", "3rV0b6yJmQ8x2Zk1Hc5nWq7tLp9sDf4gAe6uYi0oPjM=");
    ns.apply::<Secret>(yaml(&format!(
        "{{apiVersion: v1, kind: Secret, metadata: {{name: backup-key}}, stringData: {{key: '{key}'}}}}"
    )))
    .await;
    ns.apply::<Secret>(yaml(&format!(
        "{{apiVersion: v1, kind: Secret, metadata: {{name: another-key}}, stringData: {{key: '{other}'}}}}"
    )))
    .await;
    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: backups, encryption: {keySecret: {name: backup-key, key: key}}}";
    let source = "{pod: db-0, connection: {user: root, passwordSecret: {name: db-root, key: password}}}";

    // A full backup to start from, then a schedule that only archives during the test (its backups
    // are yearly), with 2-second segments.
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: base}}, spec: {{source: {source}, method: mariabackup, storage: {storage}}}}}"
    )))
    .await;
    let base = backup_finished(&ns, "base").await;
    assert_eq!(base.phase, Some(Phase::Complete));
    let fingerprint = mysql_backup_operator::encryption::Key::parse(key).expect("a key").fingerprint().to_string();
    assert_eq!(base.encryption_key.as_deref(), Some(fingerprint.as_str()));
    ns.apply::<BackupSchedule>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: archived}}, spec: {{schedule: '0 0 1 1 *', binlogArchive: {{segmentSeconds: 2}}, backupTemplate: {{source: {source}, method: mariabackup, storage: {storage}}}}}}}"
    )))
    .await;
    let schedules = ns.api::<BackupSchedule>();
    let streaming = |s: &BackupSchedule| {
        s.status.as_ref().and_then(|st| st.binlog_archive.as_ref()).is_some_and(|a| a.phase == "Streaming")
    };
    let st = wait_for(&schedules, "archived", Duration::from_secs(300), "streaming", streaming).await;
    let archive = st.status.and_then(|s| s.binlog_archive).expect("the archive's status").archive;
    assert_eq!(archive, format!("{}.archived", ns.name));

    // Four markers, one transaction each; the position after the second is the target.
    let out = sql(
        &ns,
        "write-markers",
        "db-0.db",
        "INSERT INTO app.marks VALUES (1); INSERT INTO app.marks VALUES (2); SELECT @@gtid_binlog_pos; \
         INSERT INTO app.marks VALUES (3); INSERT INTO app.marks VALUES (4); SELECT @@gtid_binlog_pos;",
    )
    .await;
    let positions: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let [target, last] = positions[..] else { panic!("expected two positions, got:\n{out}") };

    // The schedule's status reaches the last marker within seconds, with no gap.
    let caught_up = |s: &BackupSchedule| {
        s.status
            .as_ref()
            .and_then(|st| st.binlog_archive.as_ref())
            .is_some_and(|a| a.archived_position.as_deref() == Some(last))
    };
    let st = wait_for(&schedules, "archived", Duration::from_secs(120), "caught up", caught_up).await;
    let status = st.status.and_then(|s| s.binlog_archive).expect("the archive's status");
    assert_eq!((status.gaps, status.last_gap), (0, None));
    assert!(status.last_event_time.is_some());

    // Restore to the second marker: the base backup, then the archive's segments up to it.
    ns.apply::<MySQLRestore>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {{name: to-second}}, spec: {{source: {{backup: base}}, pointInTime: {{gtid: '{target}', archive: '{archive}'}}, target: {{volumeClaimTemplate: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 2Gi}}}}}}}}, securityContext: {{runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}}}}"
    )))
    .await;
    let rs = restore_finished(&ns, "to-second").await;
    assert_eq!(rs.phase, Some(Phase::Complete), "restore failed: {:#?}", rs.conditions);
    assert_eq!(rs.positions.and_then(|p| p.gtid_executed).as_deref(), Some(target));
    let replayed = rs.replayed.expect("what was replayed");
    assert_eq!(replayed.transactions, 2, "{replayed:?}");
    assert_eq!(replayed.archive.as_deref(), Some(archive.as_str()));
    assert!(replayed.segments >= 1 && replayed.gaps_crossed.is_empty(), "{replayed:?}");
    let ip = start_server_on(&ns, "at-second", &rs.persistent_volume_claim.expect("the restored claim")).await;
    let rows = sql(&ns, "rows-at-second", &ip, "SELECT GROUP_CONCAT(id ORDER BY id) FROM app.marks;").await;
    assert_eq!(rows.trim(), "1,2");
    let rows = sql(&ns, "secret-at-second", &ip, "SELECT s FROM app.secret;").await;
    assert_eq!(rows.trim(), secret_marker);

    // A binlog incremental after the base backup ends at the last marker (taken after the restore,
    // which would otherwise replay it instead of the archive).
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: incr}}, spec: {{source: {source}, method: binlog, storage: {storage}}}}}"
    )))
    .await;
    let incr = backup_finished(&ns, "incr").await;
    assert_eq!(incr.phase, Some(Phase::Complete), "incremental failed: {:#?}", incr.conditions);
    assert_eq!(incr.method.as_deref(), Some("binlog"));
    let base_id = ns.api::<MySQLBackup>().get("base").await.expect("base").status.and_then(|s| s.backup_id);
    assert_eq!(incr.incremental.and_then(|i| i.base_backup_id), base_id);
    assert_eq!(incr.positions.and_then(|p| p.gtid_executed).as_deref(), Some(last));

    // In storage: the marker is nowhere, every manifest and segment is sealed, the key history
    // names the key.
    let out = shell_on_backups(
        &ns,
        "inspect-storage",
        &format!(
            "cd /backups && grep -rl '{secret_marker}' . && echo PLAINTEXT; \
             for f in backups/*/manifest.json binlogs/*/*; do echo \"$(head -c 8 $f) $f\"; done; cat encryption.json"
        ),
    )
    .await;
    assert!(!out.contains("PLAINTEXT"), "the marker is stored in the clear:\n{out}");
    let objects: Vec<&str> = out.lines().filter(|l| l.contains("manifest.json") || l.contains("binlogs/")).collect();
    assert!(objects.len() >= 4, "two manifests, segments and their index entries:\n{out}");
    assert!(objects.iter().all(|l| l.starts_with("MBOSEAL1 ")), "{out}");
    assert!(out.contains(&format!("\"fingerprint\": \"{fingerprint}\"")), "{out}");

    // A backup whose key is not the prefix's fails, naming the key the prefix holds.
    let other_fp = mysql_backup_operator::encryption::Key::parse(other).expect("a key").fingerprint().to_string();
    let wrong = storage.replace("name: backup-key", "name: another-key");
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: wrong-key}}, spec: {{source: {source}, method: mariabackup, storage: {wrong}, job: {{backoffLimit: 0}}}}}}"
    )))
    .await;
    let failed = backup_finished(&ns, "wrong-key").await;
    assert_eq!(failed.phase, Some(Phase::Failed));
    let message = failed.conditions.iter().map(|c| c.message.clone()).collect::<Vec<_>>().join("\n");
    assert!(
        message
            .contains(&format!("it is encrypted with key {fingerprint}, and the key given to seal with is {other_fp}")),
        "{message}"
    );

    // Removing binlogArchive stops the archiver: its Deployment goes.
    ns.apply::<BackupSchedule>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: archived}}, spec: {{schedule: '0 0 1 1 *', backupTemplate: {{source: {source}, method: mariabackup, storage: {storage}}}}}}}"
    )))
    .await;
    wait_gone(&ns.api::<Deployment>(), "archiver-archived", Duration::from_secs(120)).await;
}
