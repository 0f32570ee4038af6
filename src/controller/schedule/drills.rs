//! Restore drills in a schedule's decision: when `spec.drill` asks — every Nth complete full backup, or
//! at the slots of its own cron — a drill Job for the newest complete full backup, one at a time. The
//! Job is owned by that MySQLBackup, whose reconcile reports the outcome (`status.drill`, `Drilled`).

use std::time::Duration;

use kube::ResourceExt;

use crate::controller::backup::decide::EventNote;
use crate::controller::backup::drill::drill_job;
use crate::controller::schedule::decide::{Decision, Observed};
use crate::controller::schedule::slots::Schedule;
use crate::crd::{BackupSchedule, BackupScheduleStatus, LastDrillStatus, MySQLBackup, Phase};

/// The `spec.drill.schedule`, checked; its errors name that field.
pub fn drill_schedule(s: &BackupSchedule) -> Result<Option<Schedule>, String> {
    s.spec
        .drill
        .as_ref()
        .and_then(|d| d.schedule.as_deref())
        .map(|expr| {
            Schedule::parse(expr, s.spec.time_zone.as_deref(), 0, "")
                .map_err(|e| e.to_string().replacen("spec.schedule ", "spec.drill.schedule ", 1))
        })
        .transpose()
}

/// Whether `b` is a full backup (what a drill restores on its own).
fn is_full(b: &MySQLBackup) -> bool {
    b.status.as_ref().and_then(|s| s.method.as_deref()).is_some_and(|m| m != "binlog")
}

/// Whether the last drill passed on `b`.
pub fn drilled(b: &MySQLBackup) -> bool {
    b.status.as_ref().and_then(|s| s.drill.as_ref()).is_some_and(|d| d.phase == Phase::Complete)
}

/// Drills, by `spec.drill`: see the module documentation. `complete` is ordered oldest first.
pub fn drills(
    o: &Observed,
    cron: Option<&Schedule>,
    complete: &[&MySQLBackup],
    status: &mut BackupScheduleStatus,
    d: &mut Decision,
) {
    let s = o.schedule;
    let Some(spec) = &s.spec.drill else {
        status.last_drill_schedule_time = None;
        return;
    };
    let fulls: Vec<&MySQLBackup> = complete.iter().copied().filter(|b| is_full(b)).collect();
    let mut due = false;
    if let Some(cron) = cron {
        let cursor = status
            .last_drill_schedule_time
            .as_ref()
            .or(s.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(o.now);
        let slots = cron.due(cursor, o.now, None);
        if slots.cursor != cursor {
            status.last_drill_schedule_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(slots.cursor));
        }
        due |= slots.start.is_some();
        if let Some((_, fire)) = slots.next {
            let wait = Duration::from_secs(fire.duration_since(o.now).as_secs().max(1) as u64);
            d.requeue = Some(d.requeue.map_or(wait, |r| r.min(wait)));
        }
    }
    if spec.every_nth_backup.is_some() || cron.is_none() {
        let n = spec.every_nth_backup.unwrap_or(1).max(1) as usize;
        let last = status.last_drill.as_ref().map(|l| l.backup.as_str());
        let since = match last.and_then(|l| fulls.iter().position(|b| b.name_any() == l)) {
            Some(i) => fulls.len() - i - 1,
            None => fulls.len(),
        };
        due |= since >= n;
    }
    let Some(newest) = fulls.last() else { return };
    let newest_name = newest.name_any();
    if !due || status.last_drill.as_ref().is_some_and(|l| l.backup == newest_name) {
        return;
    }
    // One drill at a time: the previous one must have finished (or its backup be gone).
    let running =
        status.last_drill.as_ref().and_then(|l| o.children.iter().find(|b| b.name_any() == l.backup)).is_some_and(
            |b| b.status.as_ref().and_then(|st| st.drill.as_ref()).is_none_or(|dr| dr.phase == Phase::Running),
        );
    if running {
        return;
    }
    match drill_job(newest, spec, o.pod_security_context.cloned(), o.operator_image) {
        Ok(job) => {
            let job_name = job.name_any();
            status.last_drill = Some(LastDrillStatus {
                backup: newest_name.clone(),
                job: job_name.clone(),
                time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(o.now),
            });
            d.events.push(EventNote {
                warning: false,
                reason: "DrillStarted",
                message: format!("Job {job_name} drills MySQLBackup {newest_name}"),
            });
            d.drill_job = Some(job);
        }
        Err(e) => d.events.push(EventNote {
            warning: true,
            reason: "DrillUnavailable",
            message: format!("MySQLBackup {newest_name} cannot be drilled: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::schedule::decide::decide;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const SCHEDULE: &str = r#"
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

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// A complete backup of `method`, finished at 02:00 on day `day` of the month; `drill` its drill phase.
    fn backup(name: &str, day: u32, method: &str, drill: Option<&str>) -> MySQLBackup {
        let drill = drill.map(|p| format!(", drill: {{job: drill-{name}, phase: {p}}}")).unwrap_or_default();
        parse(&format!(
            "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: {name}, namespace: db, uid: u-{name}}}, \
             spec: {{source: {{pod: db-0}}, storage: {{url: 's3://backups/prod'}}}}, \
             status: {{phase: Complete, method: {method}, completionTime: '2026-11-{day:02}T02:00:00Z', \
             backupId: 'id-{name}', databaseImage: 'mariadb:10.11'{drill}}}}}"
        ))
    }

    fn run(schedule: &BackupSchedule, children: &[MySQLBackup], now: &str) -> Decision {
        decide(&Observed {
            schedule,
            children,
            prune_job: None,
            prune_message: None,
            pod_security_context: None,
            source_pod: None,
            archiver: None,
            operator_image: "op:1",
            now: now.parse::<Timestamp>().unwrap(),
        })
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
        let s: BackupSchedule = parse(SCHEDULE);
        let children = [backup("b1", 23, "mariabackup", None), backup("i1", 24, "binlog", None)];
        let d = run(&s, &children, "2026-11-25T01:00:00Z");
        assert_eq!(drilled_name(&d).as_deref(), Some("drill-b1"), "incrementals are not drilled");
        assert_eq!(d.status.last_drill.as_ref().unwrap().backup, "b1");
        assert!(
            d.events.iter().any(|e| e.reason == "DrillStarted" && e.message == "Job drill-b1 drills MySQLBackup b1")
        );
        // Started and recorded: not again; and a newer backup waits while b1's drill runs.
        let s = with_status(&s, &d);
        assert!(run(&s, &children, "2026-11-25T01:01:00Z").drill_job.is_none());
        let more = [backup("b1", 23, "mariabackup", Some("Running")), backup("b2", 25, "mariabackup", None)];
        assert!(run(&s, &more, "2026-11-25T03:00:00Z").drill_job.is_none());
        let done = [backup("b1", 23, "mariabackup", Some("Failed")), backup("b2", 25, "mariabackup", None)];
        assert_eq!(drilled_name(&run(&s, &done, "2026-11-25T03:00:00Z")).as_deref(), Some("drill-b2"));
    }

    #[test]
    fn every_nth_backup_counts_fulls_since_the_last_drill() {
        let s: BackupSchedule = parse(&SCHEDULE.replace("drill: {", "drill: {everyNthBackup: 2, "));
        let b1 = backup("b1", 21, "mariabackup", Some("Complete"));
        let mut s1 = s.clone();
        s1.status.as_mut().unwrap().last_drill = Some(LastDrillStatus {
            backup: "b1".into(),
            job: "drill-b1".into(),
            time: Time("2026-11-21T03:00:00Z".parse().unwrap()),
        });
        let two = [b1.clone(), backup("b2", 22, "mariabackup", None)];
        assert!(run(&s1, &two, "2026-11-25T01:00:00Z").drill_job.is_none(), "one since the last drill");
        let three = [b1, backup("b2", 22, "mariabackup", None), backup("b3", 23, "cold", None)];
        assert_eq!(drilled_name(&run(&s1, &three, "2026-11-25T01:00:00Z")).as_deref(), Some("drill-b3"));
    }

    #[test]
    fn a_drill_cron_drills_the_newest_at_its_slots() {
        let s: BackupSchedule = parse(&SCHEDULE.replace("drill: {", "drill: {schedule: \"0 12 * * 6\", "));
        let mut s = s;
        s.status.as_mut().unwrap().last_drill_schedule_time = Some(Time("2026-11-21T12:00:00Z".parse().unwrap()));
        let children = [backup("b1", 23, "mariabackup", None), backup("b2", 24, "mariabackup", None)];
        let before = run(&s, &children, "2026-11-28T11:00:00Z");
        assert!(before.drill_job.is_none(), "no slot yet, and no count rule with a cron");
        let at = run(&s, &children, "2026-11-28T12:00:10Z");
        assert_eq!(drilled_name(&at).as_deref(), Some("drill-b2"));
        assert_eq!(at.status.last_drill_schedule_time, Some(Time("2026-11-28T12:00:00Z".parse().unwrap())));
        let bad: BackupSchedule = parse(&SCHEDULE.replace("drill: {", "drill: {schedule: \"0 12 * *\", "));
        let d = run(&bad, &children, "2026-11-28T12:00:10Z");
        let ready = d.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.message.starts_with("spec.drill.schedule \"0 12 * *\""), "{}", ready.message);
    }

    #[test]
    fn the_window_can_count_drilled_backups_only() {
        let s: BackupSchedule = parse(&SCHEDULE.replace("drill: {", "drill: {windowCountsDrilledOnly: true, "));
        let children = [
            backup("b1", 21, "mariabackup", Some("Failed")),
            backup("b2", 22, "mariabackup", Some("Complete")),
            backup("b3", 23, "mariabackup", Some("Complete")),
            backup("b4", 24, "mariabackup", None),
        ];
        let w = run(&s, &children, "2026-11-25T01:00:00Z").status.recoverability_window.unwrap();
        assert_eq!(
            (w.from.0.to_string(), w.to.0.to_string()),
            ("2026-11-22T02:00:00Z".into(), "2026-11-23T02:00:00Z".into())
        );
        let all: BackupSchedule = parse(SCHEDULE);
        let w = run(&all, &children, "2026-11-25T01:00:00Z").status.recoverability_window.unwrap();
        assert_eq!(w.from.0.to_string(), "2026-11-21T02:00:00Z");
    }

    #[test]
    fn a_catchup_schedule_takes_a_first_full_backup_with_mariabackup() {
        let s: BackupSchedule =
            parse(&SCHEDULE.replace("    source: {pod: db-0}", "    method: catchup\n    source: {pod: db-0}"));
        let first = run(&s, &[], "2026-11-26T02:00:10Z");
        assert_eq!(first.create[0].spec.method, crate::crd::BackupMethod::Mariabackup);
        assert!(first.events.iter().any(|e| e.reason == "FirstFullBackup"));
        let then = run(&s, &[backup("b1", 25, "mariabackup", None)], "2026-11-26T02:00:10Z");
        assert_eq!(then.create[0].spec.method, crate::crd::BackupMethod::Catchup);
    }
}
