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
