//! Deciding what a BackupSchedule needs: a pure function from the schedule, its MySQLBackups and its
//! prune Job to the MySQLBackups to create or delete, the prune Job to apply, the new status and Events.
//!
//! - **Slots** come from [`crate::controller::schedule::slots`]: only the newest due slot starts, within
//!   `startingDeadlineSeconds`; older ones are counted as missed. The cursor is `status.lastScheduleTime`,
//!   never inferred from what exists, and it only ever moves to a slot time, so a reconcile that finds
//!   nothing new writes nothing.
//! - **Children** are named `<schedule>-<UTC slot>` (or `<schedule>-manual-<hash>` for `spec.trigger`),
//!   created with a POST so a retried reconcile meets "already exists" instead of a duplicate, labelled
//!   with the schedule and owned by it. An object of that name the schedule does not own is never
//!   adopted (see the reconcile).
//! - **Suspended**: slots pass without a backup and without counting as missed.
//! - **Retention** runs after each newly complete backup, as a prune Job; when it has run, the
//!   MySQLBackups whose backups it deleted are deleted too, so the objects list what can be restored.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{Pod, PodSecurityContext},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use kube::{Resource, ResourceExt};

use crate::controller::backup::decide::EventNote;
use crate::controller::build::LABEL_SCHEDULE;
use crate::controller::job_outcome::{JobOutcome, job_outcome};
use crate::controller::schedule::build::{archive_name, archiver_deployment, prune_job};
use crate::controller::schedule::slots::{MAX_SCHEDULE_NAME, Schedule, child_name, incremental_name, on_demand_name};
use crate::controller::status;
use crate::crd::{
    BackupSchedule, BackupScheduleStatus, BinlogArchiveStatus, ConcurrencyPolicy, MySQLBackup, Phase, PruneStatus,
    ScheduledBackupStatus, WindowStatus,
};
use crate::format::archiver_status::{ArchiverState, ArchiverStatus};
use crate::gc::retention::Policy;

/// Condition: the schedule is valid and running (False with the reason when invalid or suspended).
pub const READY: &str = "Ready";
/// Annotation on a child: the slot it was created for, or `trigger`.
pub const SLOT_ANNOTATION: &str = "mysqlbackup.dev/slot";
/// The longest wait between two reconciles of a valid schedule (a safety net; slots requeue exactly).
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// How often the archiver's status is read while archiving is on.
pub const ARCHIVER_POLL: Duration = Duration::from_secs(30);

/// What was observed around one BackupSchedule.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The schedule.
    pub schedule: &'a BackupSchedule,
    /// Its MySQLBackups (labelled with it and owned by it).
    pub children: &'a [MySQLBackup],
    /// The prune Job named in `status.lastPrune`, if it exists.
    pub prune_job: Option<&'a Job>,
    /// Its agent's termination message, once finished.
    pub prune_message: Option<&'a str>,
    /// The source pod's security context, when the pod exists (for `file://` volumes).
    pub pod_security_context: Option<&'a PodSecurityContext>,
    /// The source pod, when it exists and `spec.binlogArchive` needs it (the archiver connects to it).
    pub source_pod: Option<&'a Pod>,
    /// What the archiver's status endpoint said, or why it could not be read; `None` while no archiver
    /// pod runs.
    pub archiver: Option<&'a Result<ArchiverStatus, String>>,
    /// The operator's own image.
    pub operator_image: &'a str,
    /// The time of this reconcile.
    pub now: Timestamp,
}

/// What to do.
#[derive(Debug, Clone)]
pub struct Decision {
    /// MySQLBackups to create (POST, never adopt).
    pub create: Vec<MySQLBackup>,
    /// MySQLBackups to delete, by name.
    pub delete: Vec<String>,
    /// The prune Job to apply.
    pub prune_job: Option<Job>,
    /// The archiver Deployment to apply.
    pub archiver: Option<Deployment>,
    /// The archiver Deployment to delete (archiving was turned off), by name.
    pub delete_archiver: Option<String>,
    /// The status to apply.
    pub status: BackupScheduleStatus,
    /// Events to publish.
    pub events: Vec<EventNote>,
    /// When to reconcile again.
    pub requeue: Option<Duration>,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn phase(b: &MySQLBackup) -> Option<Phase> {
    b.status.as_ref().and_then(|s| s.phase)
}

fn finished(b: &MySQLBackup) -> bool {
    matches!(phase(b), Some(Phase::Complete | Phase::Failed))
}

/// When a child completed (or, lacking that, was created): what orders children.
fn completed_at(b: &MySQLBackup) -> Option<Timestamp> {
    b.status.as_ref().and_then(|s| s.completion_time.as_ref()).or(b.metadata.creation_timestamp.as_ref()).map(|t| t.0)
}

/// The MySQLBackup a schedule creates, from its template.
fn child(schedule: &BackupSchedule, name: &str, slot: &str) -> MySQLBackup {
    let owner = OwnerReference {
        api_version: BackupSchedule::api_version(&()).into_owned(),
        kind: BackupSchedule::kind(&()).into_owned(),
        name: schedule.name_any(),
        uid: schedule.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut labels = crate::controller::build::labels("backup", name);
    labels.insert(LABEL_SCHEDULE.into(), schedule.name_any());
    MySQLBackup {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: schedule.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some([(SLOT_ANNOTATION.to_string(), slot.to_string())].into()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: schedule.spec.backup_template.clone(),
        status: None,
    }
}

/// Checks the spec; the error names the field.
fn validate(s: &BackupSchedule) -> Result<(Schedule, Option<Policy>), String> {
    let name = s.name_any();
    if name.len() > MAX_SCHEDULE_NAME {
        return Err(format!(
            "metadata.name {name:?} is {} characters; a schedule's name can have at most {MAX_SCHEDULE_NAME}, so \
             that its MySQLBackups' names stay within 63",
            name.len()
        ));
    }
    let schedule = Schedule::parse(
        &s.spec.schedule,
        s.spec.time_zone.as_deref(),
        s.spec.jitter_seconds.unwrap_or(0).max(0) as u64,
        s.metadata.uid.as_deref().unwrap_or(&name),
    )
    .map_err(|e| e.to_string())?;
    let policy =
        s.spec.retention.as_ref().map(|r| Policy::from_rules(&r.rules())).transpose().map_err(|e| e.to_string())?;
    Ok((schedule, policy))
}

/// The `binlogSchedule`, checked; its errors name that field.
fn binlog_schedule(s: &BackupSchedule) -> Result<Option<Schedule>, String> {
    s.spec
        .binlog_schedule
        .as_deref()
        .map(|expr| {
            Schedule::parse(expr, s.spec.time_zone.as_deref(), 0, "")
                .map_err(|e| e.to_string().replacen("spec.schedule ", "spec.binlogSchedule ", 1))
        })
        .transpose()
}

/// Decides what `o.schedule` needs now.
pub fn decide(o: &Observed) -> Decision {
    let s = o.schedule;
    let generation = s.metadata.generation;
    let now_time = time(o.now);
    let mut status = s.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let mut d = Decision {
        create: Vec::new(),
        delete: Vec::new(),
        prune_job: None,
        archiver: None,
        delete_archiver: None,
        status: BackupScheduleStatus::default(),
        events: Vec::new(),
        requeue: None,
    };

    // What the children say, whatever else happens.
    let mut complete: Vec<&MySQLBackup> = o.children.iter().filter(|b| phase(b) == Some(Phase::Complete)).collect();
    complete.sort_by_key(|b| (completed_at(b), b.name_any()));
    let mut failed: Vec<&MySQLBackup> = o.children.iter().filter(|b| phase(b) == Some(Phase::Failed)).collect();
    failed.sort_by_key(|b| (completed_at(b), b.name_any()));
    let active: Vec<String> = o.children.iter().filter(|b| !finished(b)).map(|b| b.name_any()).collect();
    status.active = active.clone();
    status.last_successful_backup = complete.last().map(|b| {
        let st = b.status.clone().unwrap_or_default();
        ScheduledBackupStatus {
            name: b.name_any(),
            time: st.completion_time,
            backup_id: st.backup_id,
            positions: st.positions,
        }
    });
    status.recoverability_window =
        match (complete.first().and_then(|b| completed_at(b)), complete.last().and_then(|b| completed_at(b))) {
            (Some(from), Some(to)) => Some(WindowStatus { from: time(from), to: time(to) }),
            _ => None,
        };

    let (schedule, policy, incrementals) = match validate(s).and_then(|(a, b)| Ok((a, b, binlog_schedule(s)?))) {
        Ok(v) => v,
        Err(message) => {
            let fresh = !status.conditions.iter().any(|c| c.type_ == READY && c.message == message);
            status::set(&mut status.conditions, READY, false, "InvalidSpec", &message, generation, &now_time);
            status.next_schedule_time = None;
            if fresh {
                d.events.push(EventNote { warning: true, reason: "InvalidSpec", message });
            }
            d.status = status;
            return d;
        }
    };
    let existing = |name: &str| o.children.iter().any(|b| b.name_any() == name);

    // On demand: a new trigger value takes one backup.
    if let Some(trigger) = s.spec.trigger.as_deref().filter(|t| status.last_trigger.as_deref() != Some(*t)) {
        let name = on_demand_name(&s.name_any(), trigger);
        if !existing(&name) {
            d.create.push(child(s, &name, "trigger"));
            d.events.push(EventNote {
                warning: false,
                reason: "BackupCreated",
                message: format!("created MySQLBackup {name} for trigger {trigger:?}"),
            });
        }
        status.last_trigger = Some(trigger.to_string());
    }

    // Slots.
    let cursor =
        status.last_schedule_time.as_ref().or(s.metadata.creation_timestamp.as_ref()).map(|t| t.0).unwrap_or(o.now);
    let due = schedule.due(cursor, o.now, s.spec.starting_deadline_seconds);
    if due.cursor != cursor {
        status.last_schedule_time = Some(time(due.cursor));
    }
    if s.spec.suspend {
        status::set(&mut status.conditions, READY, false, "Suspended", "spec.suspend is true", generation, &now_time);
        status.next_schedule_time = None;
    } else {
        status.missed_slots += due.missed as i64;
        if due.missed > 0 {
            d.events.push(EventNote {
                warning: true,
                reason: "MissedSlots",
                message: format!(
                    "{} slot(s) up to {} took no backup (past startingDeadlineSeconds, or the controller was away)",
                    due.missed, due.cursor
                ),
            });
        }
        if let Some(slot) = due.start {
            let name = child_name(&s.name_any(), slot);
            let others: Vec<&String> = active.iter().filter(|a| **a != name).collect();
            if existing(&name) {
                // Created by an earlier attempt of this reconcile.
            } else if !others.is_empty() && s.spec.concurrency_policy == ConcurrencyPolicy::Forbid {
                status.missed_slots += 1;
                d.events.push(EventNote {
                    warning: true,
                    reason: "SlotSkipped",
                    message: format!(
                        "slot {slot} skipped: {} still running (concurrencyPolicy Forbid)",
                        others.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                });
            } else {
                if s.spec.concurrency_policy == ConcurrencyPolicy::Replace {
                    d.delete.extend(others.iter().map(|a| a.to_string()));
                }
                d.create.push(child(s, &name, &slot.to_string()));
                d.events.push(EventNote {
                    warning: false,
                    reason: "BackupCreated",
                    message: format!("created MySQLBackup {name} for slot {slot}"),
                });
            }
        }
        status.next_schedule_time = due.next.map(|(_, fire)| time(fire));
        let message = match due.next {
            Some((slot, _)) => format!("next slot {slot}"),
            None => "the cron expression matches no future time".into(),
        };
        status::set(&mut status.conditions, READY, true, "Scheduled", &message, generation, &now_time);
        d.requeue = Some(match due.next {
            Some((_, fire)) => {
                let wait = fire.duration_since(o.now).as_secs().max(1) as u64;
                Duration::from_secs(wait).min(MAX_REQUEUE)
            }
            None => MAX_REQUEUE,
        });
    }

    // Incrementals between full backups: only on top of a complete backup, never beside a running one.
    if let (Some(inc), false) = (&incrementals, s.spec.suspend) {
        let cursor = status
            .last_binlog_schedule_time
            .as_ref()
            .or(s.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(o.now);
        let due = inc.due(cursor, o.now, s.spec.starting_deadline_seconds);
        if due.cursor != cursor {
            status.last_binlog_schedule_time = Some(time(due.cursor));
        }
        if let Some(slot) = due.start {
            let name = incremental_name(&s.name_any(), slot);
            let busy = !active.is_empty() || !d.create.is_empty();
            if !existing(&name) && !busy && !complete.is_empty() {
                let mut c = child(s, &name, &slot.to_string());
                c.spec.method = crate::crd::BackupMethod::Binlog;
                d.create.push(c);
                d.events.push(EventNote {
                    warning: false,
                    reason: "BackupCreated",
                    message: format!("created incremental MySQLBackup {name} for slot {slot}"),
                });
            }
        }
        if let (Some((_, fire)), Some(current)) = (due.next, d.requeue) {
            let wait = Duration::from_secs(fire.duration_since(o.now).as_secs().max(1) as u64);
            d.requeue = Some(current.min(wait));
        }
    }

    archiving(o, &mut status, &mut d);

    // History limits.
    let failed_limit = s.spec.failed_backups_history_limit.unwrap_or(3).max(0) as usize;
    d.delete.extend(failed.iter().rev().skip(failed_limit).map(|b| b.name_any()));
    if let Some(limit) = s.spec.successful_backups_history_limit {
        d.delete.extend(complete.iter().rev().skip(limit.max(1) as usize).map(|b| b.name_any()));
    }

    // Retention, after each newly complete backup.
    if let (Some(_), Some(newest)) = (&policy, complete.last()) {
        let newest = newest.name_any();
        let last = status.last_prune.clone();
        match last {
            Some(p) if p.after == newest => {
                let outcome = o.prune_job.map(|j| job_outcome(j, o.prune_message));
                let mut p = p;
                match outcome {
                    Some(JobOutcome::Succeeded(message)) => {
                        let summary = match message.as_deref().map(crate::format::summary::Summary::parse) {
                            Some(Ok(crate::format::summary::Summary::Prune { outcome, .. })) => Some(outcome),
                            _ => None,
                        };
                        if let Some(summary) = summary {
                            if p.phase != Phase::Complete {
                                d.events.push(EventNote {
                                    warning: false,
                                    reason: "Pruned",
                                    message: format!(
                                        "retention kept {} backup(s) and deleted {}{}",
                                        summary.kept,
                                        summary.deleted_count,
                                        match summary.sweep.as_ref().map(|w| &w.deferred_by) {
                                            Some(by) if !by.is_empty() =>
                                                format!("; chunk sweep deferred ({} running)", by.join(", ")),
                                            _ => String::new(),
                                        }
                                    ),
                                });
                            }
                            p.phase = Phase::Complete;
                            p.kept = summary.kept as i64;
                            p.deleted = summary.deleted_count as i64;
                            p.deleted_chunks = summary.sweep.as_ref().map(|w| w.deleted_chunks as i64).unwrap_or(0);
                            p.message = summary
                                .sweep
                                .as_ref()
                                .filter(|w| !w.deferred_by.is_empty())
                                .map(|w| format!("chunk sweep deferred: {} running", w.deferred_by.join(", ")));
                            // The objects of the deleted backups go too.
                            for b in &complete {
                                let id = b.status.as_ref().and_then(|st| st.backup_id.clone());
                                if id.is_some_and(|id| summary.deleted.contains(&id)) {
                                    d.delete.push(b.name_any());
                                }
                            }
                        } else {
                            p.phase = Phase::Complete;
                        }
                    }
                    Some(JobOutcome::Failed(reason)) => {
                        if p.phase != Phase::Failed {
                            d.events.push(EventNote {
                                warning: true,
                                reason: "PruneFailed",
                                message: format!("retention after {newest} failed: {reason}"),
                            });
                        }
                        p.phase = Phase::Failed;
                        p.message = Some(reason);
                    }
                    Some(JobOutcome::Running) => p.phase = Phase::Running,
                    // Gone (finished and cleaned up): keep what was recorded.
                    None => {}
                }
                status.last_prune = Some(p);
            }
            _ => match prune_job(s, &newest, o.pod_security_context.cloned(), o.operator_image) {
                Ok(job) => {
                    status.last_prune = Some(PruneStatus {
                        job: job.name_any(),
                        after: newest,
                        phase: Phase::Running,
                        kept: 0,
                        deleted: 0,
                        deleted_chunks: 0,
                        message: None,
                    });
                    d.prune_job = Some(job);
                }
                Err(e) => {
                    d.events.push(EventNote { warning: true, reason: "PruneFailed", message: e.to_string() });
                }
            },
        }
    }
    d.delete.sort();
    d.delete.dedup();
    d.status = status;
    d
}

/// Continuous archiving: the archiver Deployment, its status, Events on changes, the window's end.
fn archiving(o: &Observed, status: &mut BackupScheduleStatus, d: &mut Decision) {
    let s = o.schedule;
    let name = s.name_any();
    if s.spec.binlog_archive.is_none() {
        if status.binlog_archive.take().is_some() {
            d.delete_archiver = Some(crate::controller::build::child_name("archiver", &name));
        }
        return;
    }
    let prev = status.binlog_archive.clone().unwrap_or_default();
    let mut a = BinlogArchiveStatus {
        archive: archive_name(s.metadata.namespace.as_deref().unwrap_or_default(), &name),
        ..prev.clone()
    };
    let mut problem = None;
    match o.source_pod.map(|p| archiver_deployment(s, p, o.operator_image)) {
        Some(Ok(dep)) => d.archiver = Some(dep),
        Some(Err(e)) => problem = Some(e.to_string()),
        None => problem = Some(format!("source pod {} not found", s.spec.backup_template.source.pod)),
    }
    match (s.spec.suspend, o.archiver) {
        (true, _) => {
            a.phase = "Suspended".into();
            a.lag_seconds = 0;
            a.message = None;
        }
        (false, None) => {
            a.phase = "Starting".into();
            a.message = problem;
        }
        (false, Some(Err(reason))) => {
            a.phase = "Unreachable".into();
            a.message = Some(reason.clone());
        }
        (false, Some(Ok(r))) => {
            a.phase = match r.state {
                ArchiverState::Streaming => "Streaming",
                ArchiverState::Reconnecting => "Reconnecting",
                // A stopped archiver is exiting; its Deployment starts it again.
                ArchiverState::Starting | ArchiverState::Stopped => "Starting",
            }
            .into();
            a.archived_position = Some(r.archived_position.clone()).filter(|p| !p.is_empty());
            a.last_event_time =
                r.last_event_time.and_then(|t| Timestamp::from_millisecond(t.timestamp_millis()).ok()).map(time);
            a.lag_seconds = r.lag_seconds.round() as i64;
            a.gaps = r.gaps.len() as i64;
            a.last_gap = r.gaps.last().map(|g| g.to_string());
            a.message = r.last_error.clone().or(problem);
        }
    }
    if a.gaps > prev.gaps {
        d.events.push(EventNote {
            warning: true,
            reason: "ArchiveGap",
            message: format!(
                "archive {} has {} gap(s); point-in-time restores cannot cross them unless forced: {}",
                a.archive,
                a.gaps,
                a.last_gap.clone().unwrap_or_default()
            ),
        });
    }
    if a.phase != prev.phase {
        let (warning, reason) = match a.phase.as_str() {
            "Streaming" => (false, "ArchiverStreaming"),
            "Reconnecting" | "Unreachable" => (true, "ArchiverDown"),
            _ => (false, "ArchiverChanged"),
        };
        let detail = a.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        d.events.push(EventNote {
            warning,
            reason,
            message: format!("binary-log archiver of {} is {}{detail}", a.archive, a.phase),
        });
    }
    // Without a gap, a restore reaches the newest archived event.
    if let (Some(w), Some(t), 0) = (status.recoverability_window.as_mut(), a.last_event_time.as_ref(), a.gaps)
        && t.0 > w.to.0
    {
        w.to = t.clone();
    }
    status.binlog_archive = Some(a);
    if !s.spec.suspend {
        d.requeue = Some(d.requeue.map_or(ARCHIVER_POLL, |r| r.min(ARCHIVER_POLL)));
    }
}

#[cfg(test)]
mod tests {
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
        s.status = Some(BackupScheduleStatus {
            last_schedule_time: Some(time(t("2026-11-22T01:00:00Z"))),
            ..Default::default()
        });
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
        let mut s: BackupSchedule =
            parse(&SCHEDULE.replace("  schedule:", "  startingDeadlineSeconds: 600\n  schedule:"));
        s.status = Some(BackupScheduleStatus {
            last_schedule_time: Some(time(t("2026-11-21T02:00:00Z"))),
            ..Default::default()
        });
        let d = run_at(&s, &[], "2026-11-22T02:30:00Z");
        assert!(d.create.is_empty());
        assert_eq!(d.status.missed_slots, 1);
        assert_eq!(d.status.last_schedule_time, Some(time(t("2026-11-22T02:00:00Z"))));
        assert_eq!(d.events[0].reason, "MissedSlots");
    }

    #[test]
    fn suspended_slots_pass_without_backups_or_misses() {
        let mut s: BackupSchedule = parse(&SCHEDULE.replace("  schedule:", "  suspend: true\n  schedule:"));
        s.status = Some(BackupScheduleStatus {
            last_schedule_time: Some(time(t("2026-11-20T02:00:00Z"))),
            ..Default::default()
        });
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
        let mut s: BackupSchedule = parse(&SCHEDULE.replace("  schedule:", "  trigger: before-upgrade\n  schedule:"));
        s.status = Some(BackupScheduleStatus {
            last_schedule_time: Some(time(t("2026-11-22T02:00:00Z"))),
            ..Default::default()
        });
        let d = run_at(&s, &[], "2026-11-22T10:00:00Z");
        assert_eq!(d.create.len(), 1);
        let name = on_demand_name("db-nightly", "before-upgrade");
        assert_eq!(d.create[0].metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(d.create[0].annotations().get(SLOT_ANNOTATION).map(String::as_str), Some("trigger"));
        assert_eq!(d.status.last_trigger.as_deref(), Some("before-upgrade"));
        s.status = Some(d.status.clone());
        assert!(
            run_at(&s, &[], "2026-11-22T10:01:00Z").create.is_empty(),
            "the same value never takes a second backup"
        );
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
        let mut s: BackupSchedule =
            parse(&SCHEDULE.replace(
                "  schedule:",
                "  retention: {keepLast: 1, maxAge: 72h}\n  timeZone: Europe/Berlin\n  schedule:",
            ));
        s.status = Some(BackupScheduleStatus {
            last_schedule_time: Some(time(t("2026-11-22T01:00:00Z"))),
            ..Default::default()
        });
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
}
