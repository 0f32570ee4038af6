//! The schedule's decisions, from YAML as users write it.

use super::*;
use crate::controller::status::is_true;

const SCHEDULE: &str = r#"
apiVersion: mysqlbackup.dev/v1alpha1
kind: BackupSchedule
metadata: {name: db-nightly, namespace: db, uid: s-1, generation: 1, creationTimestamp: "2026-11-20T12:00:00Z"}
spec:
  schedule: "0 2 * * *"
  backupTemplate:
    source: {pod: db-0}
    storage: {url: "s3://backups/prod", credentialsSecret: s3-creds}
"#;

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).unwrap()
}

/// The schedule with `field` added to its spec, whose cursor is at `last_slot`.
fn schedule_after(field: &str, last_slot: &str) -> BackupSchedule {
    let mut s: BackupSchedule = parse(&SCHEDULE.replace("  schedule:", &format!("  {field}\n  schedule:")));
    s.status = Some(BackupScheduleStatus { last_schedule_time: Some(time(t(last_slot))), ..Default::default() });
    s
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn backup(name: &str, phase: &str, completed: &str, id: &str) -> MySQLBackup {
    parse(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: {name}, namespace: db, creationTimestamp: '{completed}'}}, \
             spec: {{source: {{pod: db-0}}, storage: {{url: 's3://backups/prod'}}}}, \
             status: {{phase: {phase}, completionTime: '{completed}', backupId: '{id}', positions: {{gtidExecuted: 0-1-9}}}}}}"
    ))
}

fn run_at(schedule: &BackupSchedule, children: &[MySQLBackup], now: &str) -> Decision {
    decide(&Observed {
        schedule,
        children,
        prune_job: None,
        prune_message: None,
        pod_security_context: None,
        source_pod: None,
        archiver: None,
        operator_image: "op:1",
        now: t(now),
    })
}

fn ready(d: &Decision) -> (bool, String, String) {
    let c = d.status.conditions.iter().find(|c| c.type_ == READY).expect("a Ready condition");
    (c.status == "True", c.reason.clone(), c.message.clone())
}

#[test]
fn invalid_specs_name_the_field_and_create_nothing() {
    for (change, message) in [
        (
            ("\"0 2 * * *\"", "\"0 25 * * *\""),
            "spec.schedule \"0 25 * * *\" is not a 5-field cron expression or @shorthand",
        ),
        (
            ("\"0 2 * * *\"", "\"0 2 * * *\"\n  timeZone: Europe/Atlantis"),
            "spec.timeZone \"Europe/Atlantis\" is not an IANA time zone",
        ),
        (("\"0 2 * * *\"", "\"0 2 * * *\"\n  retention: {keepLast: 0}"), "spec.retention keeps nothing"),
        (
            ("name: db-nightly", "name: a-schedule-name-that-is-far-too-long-for-children"),
            "metadata.name \"a-schedule-name-that-is-far-too-long-for-children\" is 49 characters",
        ),
    ] {
        let s: BackupSchedule = parse(&SCHEDULE.replace(change.0, change.1));
        let d = run_at(&s, &[], "2026-11-22T02:00:30Z");
        let (ok, reason, msg) = ready(&d);
        assert!(!ok && reason == "InvalidSpec" && msg.starts_with(message), "{msg}");
        assert!(d.create.is_empty() && d.requeue.is_none());
        assert_eq!(d.events.len(), 1);
        // The same problem again: no second Event.
        let mut again = s.clone();
        again.status = Some(d.status.clone());
        assert!(run_at(&again, &[], "2026-11-22T02:01:30Z").events.is_empty());
    }
}

#[test]
fn a_due_slot_creates_one_owned_labelled_child_and_a_retry_creates_none() {
    let s: BackupSchedule = parse(SCHEDULE);
    let d = run_at(&s, &[], "2026-11-22T02:00:30Z");
    // The 2026-11-21 slot came due too, with no deadline: only the newest starts.
    assert_eq!(d.status.missed_slots, 1);
    assert_eq!(d.create.len(), 1);
    let c = &d.create[0];
    assert_eq!(c.metadata.name.as_deref(), Some("db-nightly-20261122-0200"));
    assert_eq!(c.labels().get(LABEL_SCHEDULE).map(String::as_str), Some("db-nightly"));
    assert_eq!(c.annotations().get(SLOT_ANNOTATION).map(String::as_str), Some("2026-11-22T02:00:00Z"));
    let owner = &c.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("BackupSchedule", "s-1", Some(true)));
    assert_eq!(c.spec, s.spec.backup_template);
    assert_eq!(d.status.last_schedule_time, Some(time(t("2026-11-22T02:00:00Z"))));
    assert_eq!(d.status.next_schedule_time, Some(time(t("2026-11-23T02:00:00Z"))));
    assert_eq!(d.requeue, Some(MAX_REQUEUE));
    assert!(is_true(&d.status.conditions, READY));

    // The status write failed and the reconcile runs again: the cursor did not move, the child exists.
    let retry = run_at(
        &s,
        &[backup("db-nightly-20261122-0200", "Running", "2026-11-22T02:00:31Z", "")],
        "2026-11-22T02:01:00Z",
    );
    assert!(retry.create.is_empty());
    // With the cursor written: nothing new, an identical status, no Event.
    let mut written = s.clone();
    written.status = Some(d.status.clone());
    let children = [backup("db-nightly-20261122-0200", "Running", "2026-11-22T02:00:31Z", "")];
    let again = run_at(&written, &children, "2026-11-22T02:01:00Z");
    assert!(again.create.is_empty() && again.events.is_empty());
    let mut expected = d.status.clone();
    expected.active = vec!["db-nightly-20261122-0200".into()];
    assert_eq!(again.status, expected);
    // Requeued for the next slot, at most an hour away.
    assert_eq!(run_at(&written, &children, "2026-11-23T01:59:00Z").requeue, Some(Duration::from_secs(60)));
}

#[test]
fn forbid_skips_a_slot_while_a_backup_runs_replace_stops_it_allow_runs_both() {
    let mut s: BackupSchedule = parse(&SCHEDULE.replace("\"0 2 * * *\"", "\"0 * * * *\""));
    s.status =
        Some(BackupScheduleStatus { last_schedule_time: Some(time(t("2026-11-22T01:00:00Z"))), ..Default::default() });
    let running = [backup("db-nightly-20261122-0100", "Running", "2026-11-22T01:00:00Z", "")];
    let d = run_at(&s, &running, "2026-11-22T02:00:10Z");
    assert!(d.create.is_empty());
    assert_eq!(d.status.missed_slots, 1);
    assert_eq!(
        d.events[0].message,
        "slot 2026-11-22T02:00:00Z skipped: db-nightly-20261122-0100 still running (concurrencyPolicy Forbid)"
    );
    s.spec.concurrency_policy = ConcurrencyPolicy::Replace;
    let d = run_at(&s, &running, "2026-11-22T02:00:10Z");
    assert_eq!(d.delete, ["db-nightly-20261122-0100"]);
    assert_eq!(d.create[0].metadata.name.as_deref(), Some("db-nightly-20261122-0200"));
    s.spec.concurrency_policy = ConcurrencyPolicy::Allow;
    let d = run_at(&s, &running, "2026-11-22T02:00:10Z");
    assert!(d.delete.is_empty() && d.create.len() == 1);
}

#[test]
fn a_deadline_turns_a_late_slot_into_a_missed_one() {
    let s = schedule_after("startingDeadlineSeconds: 600", "2026-11-21T02:00:00Z");
    let d = run_at(&s, &[], "2026-11-22T02:30:00Z");
    assert!(d.create.is_empty());
    assert_eq!(d.status.missed_slots, 1);
    assert_eq!(d.status.last_schedule_time, Some(time(t("2026-11-22T02:00:00Z"))));
    assert_eq!(d.events[0].reason, "MissedSlots");
}

#[test]
fn suspended_slots_pass_without_backups_or_misses() {
    let s = schedule_after("suspend: true", "2026-11-20T02:00:00Z");
    let d = run_at(&s, &[], "2026-11-22T02:30:00Z");
    assert!(d.create.is_empty() && d.events.is_empty());
    assert_eq!(d.status.missed_slots, 0);
    assert_eq!(d.status.last_schedule_time, Some(time(t("2026-11-22T02:00:00Z"))));
    assert_eq!(d.status.next_schedule_time, None);
    assert_eq!(ready(&d), (false, "Suspended".into(), "spec.suspend is true".into()));
    // Resumed: nothing is due until the next slot.
    let mut resumed: BackupSchedule = parse(SCHEDULE);
    resumed.status = Some(d.status.clone());
    let d = run_at(&resumed, &[], "2026-11-22T03:00:00Z");
    assert!(d.create.is_empty());
    assert_eq!(d.status.next_schedule_time, Some(time(t("2026-11-23T02:00:00Z"))));
}

#[test]
fn binlog_incrementals_run_between_fulls_on_top_of_a_complete_backup() {
    let mut s: BackupSchedule =
        parse(&SCHEDULE.replace("  schedule:", "  binlogSchedule: \"*/15 * * * *\"\n  schedule:"));
    s.status = Some(BackupScheduleStatus {
        last_schedule_time: Some(time(t("2026-11-22T02:00:00Z"))),
        last_binlog_schedule_time: Some(time(t("2026-11-22T02:30:00Z"))),
        ..Default::default()
    });
    let done = [backup("db-nightly-20261122-0200", "Complete", "2026-11-22T02:10:00Z", "id-1")];
    let d = run_at(&s, &done, "2026-11-22T02:45:05Z");
    assert_eq!(d.create.len(), 1);
    let c = &d.create[0];
    assert_eq!(c.metadata.name.as_deref(), Some("db-nightly-i-20261122-0245"));
    assert_eq!(c.spec.method, crate::crd::BackupMethod::Binlog);
    assert_eq!(d.status.last_binlog_schedule_time, Some(time(t("2026-11-22T02:45:00Z"))));
    assert_eq!(d.requeue, Some(Duration::from_secs(895)), "the next incremental comes before the next full");
    // No complete backup to build on yet, or a backup running: no incremental.
    assert!(run_at(&s, &[], "2026-11-22T02:45:05Z").create.is_empty());
    let running = [done[0].clone(), backup("db-nightly-i-20261122-0230", "Running", "2026-11-22T02:30:01Z", "")];
    assert!(run_at(&s, &running, "2026-11-22T02:45:05Z").create.is_empty());
    // A bad expression names its own field.
    let bad: BackupSchedule =
        parse(&SCHEDULE.replace("  schedule:", "  binlogSchedule: \"every 5 minutes\"\n  schedule:"));
    let (ok, _, message) = ready(&run_at(&bad, &[], "2026-11-22T02:45:05Z"));
    assert!(!ok && message.starts_with("spec.binlogSchedule \"every 5 minutes\" has 3 fields"), "{message}");
}

#[test]
fn a_new_trigger_value_takes_one_backup() {
    let mut s = schedule_after("trigger: before-upgrade", "2026-11-22T02:00:00Z");
    let d = run_at(&s, &[], "2026-11-22T10:00:00Z");
    assert_eq!(d.create.len(), 1);
    let name = on_demand_name("db-nightly", "before-upgrade");
    assert_eq!(d.create[0].metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(d.create[0].annotations().get(SLOT_ANNOTATION).map(String::as_str), Some("trigger"));
    assert_eq!(d.status.last_trigger.as_deref(), Some("before-upgrade"));
    s.status = Some(d.status.clone());
    assert!(run_at(&s, &[], "2026-11-22T10:01:00Z").create.is_empty(), "the same value never takes a second backup");
}

#[test]
fn status_reports_the_last_success_the_window_and_trims_failed_history() {
    let s: BackupSchedule = parse(SCHEDULE);
    let mut children = vec![
        backup("db-nightly-20261118-0200", "Complete", "2026-11-18T02:10:00Z", "id-18"),
        backup("db-nightly-20261121-0200", "Complete", "2026-11-21T02:10:00Z", "id-21"),
    ];
    for day in 10..15 {
        children.push(backup(
            &format!("db-nightly-202611{day}-0200"),
            "Failed",
            &format!("2026-11-{day}T02:10:00Z"),
            "",
        ));
    }
    let d = run_at(&s, &children, "2026-11-21T12:00:00Z");
    let last = d.status.last_successful_backup.clone().unwrap();
    assert_eq!((last.name.as_str(), last.backup_id.as_deref()), ("db-nightly-20261121-0200", Some("id-21")));
    assert_eq!(last.positions.and_then(|p| p.gtid_executed).as_deref(), Some("0-1-9"));
    let w = d.status.recoverability_window.clone().unwrap();
    assert_eq!((w.from, w.to), (time(t("2026-11-18T02:10:00Z")), time(t("2026-11-21T02:10:00Z"))));
    assert_eq!(d.delete, ["db-nightly-20261110-0200", "db-nightly-20261111-0200"], "three failed ones are kept");
}

#[test]
fn retention_runs_after_each_new_success_and_deletes_the_pruned_objects() {
    let mut s: BackupSchedule = parse(
        &SCHEDULE
            .replace("  schedule:", "  retention: {keepLast: 1, maxAge: 72h}\n  timeZone: Europe/Berlin\n  schedule:"),
    );
    s.status =
        Some(BackupScheduleStatus { last_schedule_time: Some(time(t("2026-11-22T01:00:00Z"))), ..Default::default() });
    let children = [
        backup("db-nightly-20261118-0100", "Complete", "2026-11-18T01:10:00Z", "20261118T010000Z-000001"),
        backup("db-nightly-20261122-0100", "Complete", "2026-11-22T01:10:00Z", "20261122T010000Z-000002"),
    ];
    let d = run_at(&s, &children, "2026-11-22T01:20:00Z");
    let job = d.prune_job.clone().expect("a prune Job");
    assert_eq!(job.metadata.name.as_deref(), Some("prune-db-nightly-20261122-0100"));
    let args = job.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert_eq!(
        args,
        [
            "agent",
            "prune",
            "--keep-last=1",
            "--max-age=72h",
            "--time-zone=Europe/Berlin",
            "--tag=mysqlbackup.dev/schedule=db/db-nightly",
            "--summary-file=/dev/termination-log",
            "--log-format=json",
            "--storage=s3://backups/prod"
        ]
    );
    let p = d.status.last_prune.clone().unwrap();
    assert_eq!((p.after.as_str(), p.phase), ("db-nightly-20261122-0100", Phase::Running));
    // With archiving, the prune also drops the archive's segments no kept backup needs.
    let mut archiving = s.clone();
    archiving.spec.binlog_archive = Some(Default::default());
    let job = run_at(&archiving, &children, "2026-11-22T01:20:00Z").prune_job.expect("a prune Job");
    let args = job.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&"--archive=db.db-nightly".to_string()), "{args:?}");

    // The Job finished: its summary names what it deleted, and those objects go.
    s.status = Some(d.status.clone());
    let finished: Job = parse(
        "{metadata: {name: prune-db-nightly-20261122-0100}, status: {succeeded: 1, conditions: [{type: Complete, status: 'True'}]}}",
    );
    let summary = r#"{"operation":"prune","storage":"s3://backups/prod","dryRun":false,"considered":2,"kept":1,"deleted":["20261118T010000Z-000001"],"deletedCount":1,"sweep":{"deletedChunks":40,"freedBytes":1000,"keptChunks":60},"durationSeconds":1.0}"#;
    let d = decide(&Observed {
        schedule: &s,
        children: &children,
        prune_job: Some(&finished),
        prune_message: Some(summary),
        pod_security_context: None,
        source_pod: None,
        archiver: None,
        operator_image: "op:1",
        now: t("2026-11-22T01:30:00Z"),
    });
    assert!(d.prune_job.is_none());
    assert_eq!(d.delete, ["db-nightly-20261118-0100"]);
    let p = d.status.last_prune.clone().unwrap();
    assert_eq!((p.phase, p.kept, p.deleted, p.deleted_chunks), (Phase::Complete, 1, 1, 40));
    assert_eq!(d.events[0].message, "retention kept 1 backup(s) and deleted 1");
}

#[test]
fn archiving_runs_a_deployment_and_reports_its_lag_gaps_and_health() {
    let mut s: BackupSchedule = parse(SCHEDULE);
    s.spec.binlog_archive = Some(Default::default());
    let pod: Pod = parse(
        "{apiVersion: v1, kind: Pod, metadata: {name: db-0, namespace: db}, spec: {containers: [{name: db}]}, \
             status: {podIP: 10.0.0.9}}",
    );
    let children = [backup("db-nightly-20261121-0200", "Complete", "2026-11-21T02:05:00Z", "b1")];
    let decide_with = |s: &BackupSchedule, archiver: Option<&Result<ArchiverStatus, String>>| {
        decide(&Observed {
            schedule: s,
            children: &children,
            prune_job: None,
            prune_message: None,
            pod_security_context: None,
            source_pod: Some(&pod),
            archiver,
            operator_image: "op:1",
            now: t("2026-11-21T10:00:00Z"),
        })
    };
    // No archiver pod yet: the Deployment is applied, the archive is starting, polled every 30 s.
    let d = decide_with(&s, None);
    assert_eq!(d.archiver.as_ref().and_then(|a| a.metadata.name.as_deref()), Some("archiver-db-nightly"));
    let a = d.status.binlog_archive.clone().unwrap();
    assert_eq!((a.phase.as_str(), a.archive.as_str()), ("Starting", "db.db-nightly"));
    assert_eq!(d.requeue, Some(ARCHIVER_POLL));

    // Streaming: position, lag, last event; the window reaches the newest archived event.
    s.status = Some(d.status.clone());
    let report: ArchiverStatus = serde_json::from_str(
        r#"{"state": "streaming", "archivedPosition": "0-1-420", "lastEventTime": "2026-11-21T09:59:58Z",
                "lagSeconds": 1.6, "gaps": []}"#,
    )
    .unwrap();
    let d = decide_with(&s, Some(&Ok(report.clone())));
    let a = d.status.binlog_archive.clone().unwrap();
    assert_eq!(
        (a.phase.as_str(), a.archived_position.as_deref(), a.lag_seconds, a.gaps),
        ("Streaming", Some("0-1-420"), 2, 0)
    );
    assert_eq!(d.status.recoverability_window.as_ref().unwrap().to.0, t("2026-11-21T09:59:58Z"));
    assert_eq!(d.events.len(), 1);
    assert_eq!(
        (d.events[0].reason, d.events[0].message.as_str()),
        ("ArchiverStreaming", "binary-log archiver of db.db-nightly is Streaming")
    );

    // A gap: a Warning naming it, once; the window no longer extends past the backups.
    s.status = Some(d.status.clone());
    let with_gap: ArchiverStatus = serde_json::from_str(
        r#"{"state": "streaming", "archivedPosition": "0-1-500", "lastEventTime": "2026-11-21T09:59:59Z",
                "gaps": [{"afterSeq": 6, "beforeSeq": 7, "reason": "the data of segment 6 is missing"}]}"#,
    )
    .unwrap();
    let d = decide_with(&s, Some(&Ok(with_gap.clone())));
    assert_eq!(d.events.len(), 1);
    assert!(d.events[0].warning);
    assert_eq!(
        d.events[0].message,
        "archive db.db-nightly has 1 gap(s); point-in-time restores cannot cross them unless forced: gap before \
             segment 7: the data of segment 6 is missing"
    );
    assert_eq!(d.status.recoverability_window.as_ref().unwrap().to.0, t("2026-11-21T02:05:00Z"));
    s.status = Some(d.status.clone());
    assert!(decide_with(&s, Some(&Ok(with_gap))).events.is_empty(), "no second Event for the same gap");

    // The endpoint does not answer: a Warning, the last known position kept.
    let d = decide_with(&s, Some(&Err("http://10.0.0.10:8081/status: connection refused".into())));
    let a = d.status.binlog_archive.clone().unwrap();
    assert_eq!((a.phase.as_str(), a.archived_position.as_deref()), ("Unreachable", Some("0-1-500")));
    assert_eq!(d.events[0].reason, "ArchiverDown");

    // Turned off: the Deployment goes, and the status with it.
    s.status = Some(d.status.clone());
    s.spec.binlog_archive = None;
    let d = decide_with(&s, None);
    assert_eq!(d.delete_archiver.as_deref(), Some("archiver-db-nightly"));
    assert!(d.archiver.is_none() && d.status.binlog_archive.is_none());
}

/// Restore drills and catch-up schedules (`spec.drill`, `method: catchup`).
mod drills {
    use super::*;
    use crate::crd::LastDrillStatus;

    const DRILLED: &str = r#"
apiVersion: mysqlbackup.dev/v1alpha1
kind: BackupSchedule
metadata: {name: db-nightly, namespace: db, uid: s-1, generation: 1, creationTimestamp: "2026-11-20T12:00:00Z"}
spec:
  schedule: "0 2 * * *"
  drill: {scratch: {sizeLimit: 5Gi}}
  backupTemplate:
    source: {pod: db-0}
    storage: {url: "s3://backups/prod"}
status: {lastScheduleTime: "2026-11-25T02:00:00Z"}
"#;

    /// A complete backup of `method`, finished at 02:00 on day `day` of the month; `drill` its drill phase.
    fn full(name: &str, day: u32, method: &str, drill: Option<&str>) -> MySQLBackup {
        let drill = drill.map(|p| format!(", drill: {{job: drill-{name}, phase: {p}}}")).unwrap_or_default();
        parse(&format!(
            "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: {name}, namespace: db, uid: u-{name}}}, \
             spec: {{source: {{pod: db-0}}, storage: {{url: 's3://backups/prod'}}}}, \
             status: {{phase: Complete, method: {method}, completionTime: '2026-11-{day:02}T02:00:00Z', \
             backupId: 'id-{name}', databaseImage: 'mariadb:10.11'{drill}}}}}"
        ))
    }

    fn with_status(s: &BackupSchedule, d: &Decision) -> BackupSchedule {
        let mut s = s.clone();
        s.status = Some(d.status.clone());
        s
    }

    fn drilled_name(d: &Decision) -> Option<String> {
        d.drill_job.as_ref().map(|j| j.name_any())
    }

    #[test]
    fn every_full_backup_is_drilled_one_at_a_time() {
        let s: BackupSchedule = parse(DRILLED);
        let children = [full("b1", 23, "mariabackup", None), full("i1", 24, "binlog", None)];
        let d = run_at(&s, &children, "2026-11-25T01:00:00Z");
        assert_eq!(drilled_name(&d).as_deref(), Some("drill-b1"), "incrementals are not drilled");
        assert_eq!(d.status.last_drill.as_ref().unwrap().backup, "b1");
        assert!(
            d.events.iter().any(|e| e.reason == "DrillStarted" && e.message == "Job drill-b1 drills MySQLBackup b1")
        );
        // Started and recorded: not again; and a newer backup waits while b1's drill runs.
        let s = with_status(&s, &d);
        assert!(run_at(&s, &children, "2026-11-25T01:01:00Z").drill_job.is_none());
        let more = [full("b1", 23, "mariabackup", Some("Running")), full("b2", 25, "mariabackup", None)];
        assert!(run_at(&s, &more, "2026-11-25T03:00:00Z").drill_job.is_none());
        let done = [full("b1", 23, "mariabackup", Some("Failed")), full("b2", 25, "mariabackup", None)];
        assert_eq!(drilled_name(&run_at(&s, &done, "2026-11-25T03:00:00Z")).as_deref(), Some("drill-b2"));
    }

    #[test]
    fn every_nth_backup_counts_fulls_since_the_last_drill() {
        let s: BackupSchedule = parse(&DRILLED.replace("drill: {", "drill: {everyNthBackup: 2, "));
        let b1 = full("b1", 21, "mariabackup", Some("Complete"));
        let mut s1 = s.clone();
        s1.status.as_mut().unwrap().last_drill = Some(LastDrillStatus {
            backup: "b1".into(),
            job: "drill-b1".into(),
            time: time(t("2026-11-21T03:00:00Z")),
        });
        let two = [b1.clone(), full("b2", 22, "mariabackup", None)];
        assert!(run_at(&s1, &two, "2026-11-25T01:00:00Z").drill_job.is_none(), "one since the last drill");
        let three = [b1, full("b2", 22, "mariabackup", None), full("b3", 23, "cold", None)];
        assert_eq!(drilled_name(&run_at(&s1, &three, "2026-11-25T01:00:00Z")).as_deref(), Some("drill-b3"));
    }

    #[test]
    fn a_drill_cron_drills_the_newest_at_its_slots() {
        let s: BackupSchedule = parse(&DRILLED.replace("drill: {", "drill: {schedule: \"0 12 * * 6\", "));
        let mut s = s;
        s.status.as_mut().unwrap().last_drill_schedule_time = Some(time(t("2026-11-21T12:00:00Z")));
        let children = [full("b1", 23, "mariabackup", None), full("b2", 24, "mariabackup", None)];
        let before = run_at(&s, &children, "2026-11-28T11:00:00Z");
        assert!(before.drill_job.is_none(), "no slot yet, and no count rule with a cron");
        let at = run_at(&s, &children, "2026-11-28T12:00:10Z");
        assert_eq!(drilled_name(&at).as_deref(), Some("drill-b2"));
        assert_eq!(at.status.last_drill_schedule_time, Some(time(t("2026-11-28T12:00:00Z"))));
        let bad: BackupSchedule = parse(&DRILLED.replace("drill: {", "drill: {schedule: \"0 12 * *\", "));
        let d = run_at(&bad, &children, "2026-11-28T12:00:10Z");
        let ready = d.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.message.starts_with("spec.drill.schedule \"0 12 * *\""), "{}", ready.message);
    }

    #[test]
    fn the_window_can_count_drilled_backups_only() {
        let s: BackupSchedule = parse(&DRILLED.replace("drill: {", "drill: {windowCountsDrilledOnly: true, "));
        let children = [
            full("b1", 21, "mariabackup", Some("Failed")),
            full("b2", 22, "mariabackup", Some("Complete")),
            full("b3", 23, "mariabackup", Some("Complete")),
            full("b4", 24, "mariabackup", None),
        ];
        let w = run_at(&s, &children, "2026-11-25T01:00:00Z").status.recoverability_window.unwrap();
        assert_eq!(
            (w.from.0.to_string(), w.to.0.to_string()),
            ("2026-11-22T02:00:00Z".into(), "2026-11-23T02:00:00Z".into())
        );
        let all: BackupSchedule = parse(DRILLED);
        let w = run_at(&all, &children, "2026-11-25T01:00:00Z").status.recoverability_window.unwrap();
        assert_eq!(w.from.0.to_string(), "2026-11-21T02:00:00Z");
    }

    #[test]
    fn a_catchup_schedule_takes_a_first_full_backup_with_mariabackup() {
        let s: BackupSchedule =
            parse(&DRILLED.replace("    source: {pod: db-0}", "    method: catchup\n    source: {pod: db-0}"));
        let first = run_at(&s, &[], "2026-11-26T02:00:10Z");
        assert_eq!(first.create[0].spec.method, crate::crd::BackupMethod::Mariabackup);
        assert!(first.events.iter().any(|e| e.reason == "FirstFullBackup"));
        let then = run_at(&s, &[full("b1", 25, "mariabackup", None)], "2026-11-26T02:00:10Z");
        assert_eq!(then.create[0].spec.method, crate::crd::BackupMethod::Catchup);
    }
}
