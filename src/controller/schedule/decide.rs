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
use crate::controller::schedule::slots::{MAX_SCHEDULE_NAME, Schedule, child_name, incremental_name, on_demand_name};
use crate::controller::status;
use crate::crd::{
    BackupSchedule, BackupScheduleStatus, ConcurrencyPolicy, MySQLBackup, Phase, ScheduledBackupStatus, WindowStatus,
};
use crate::format::archiver_status::ArchiverStatus;
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
    /// The drill Job to apply (owned by the MySQLBackup it drills).
    pub drill_job: Option<Job>,
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
        drill_job: None,
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
    // With `spec.drill.windowCountsDrilledOnly`, a backup counts once a drill proved it restorable.
    let drilled_only = s.spec.drill.as_ref().is_some_and(|d| d.window_counts_drilled_only);
    let counted: Vec<&&MySQLBackup> =
        complete.iter().filter(|b| !drilled_only || crate::controller::schedule::drills::drilled(b)).collect();
    status.recoverability_window =
        match (counted.first().and_then(|b| completed_at(b)), counted.last().and_then(|b| completed_at(b))) {
            (Some(from), Some(to)) => Some(WindowStatus { from: time(from), to: time(to) }),
            _ => None,
        };

    let checked = validate(s)
        .and_then(|(a, b)| Ok((a, b, binlog_schedule(s)?, crate::controller::schedule::drills::drill_schedule(s)?)));
    let (schedule, policy, incrementals, drill_cron) = match checked {
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
    on_demand(o, &mut status, &mut d);
    full_slots(o, &schedule, &active, &mut status, &mut d);
    // A catch-up backup starts from a full one: until the schedule has one, its slot takes a
    // `mariabackup` backup instead.
    if !complete.iter().any(|b| b.status.as_ref().and_then(|st| st.method.as_deref()).is_some_and(|m| m != "binlog")) {
        for c in d.create.iter_mut().filter(|c| c.spec.method == crate::crd::BackupMethod::Catchup) {
            c.spec.method = crate::crd::BackupMethod::Mariabackup;
            d.events.push(EventNote {
                warning: false,
                reason: "FirstFullBackup",
                message: format!(
                    "MySQLBackup {} takes a mariabackup backup: catch-up backups need a first full backup",
                    c.name_any()
                ),
            });
        }
    }

    if let Some(inc) = &incrementals {
        incremental_slots(o, inc, &active, !complete.is_empty(), &mut status, &mut d);
    }

    crate::controller::schedule::archiving::archiving(o, &mut status, &mut d);

    // History limits.
    let failed_limit = s.spec.failed_backups_history_limit.unwrap_or(3).max(0) as usize;
    d.delete.extend(failed.iter().rev().skip(failed_limit).map(|b| b.name_any()));
    if let Some(limit) = s.spec.successful_backups_history_limit {
        d.delete.extend(complete.iter().rev().skip(limit.max(1) as usize).map(|b| b.name_any()));
    }

    if policy.is_some() {
        crate::controller::schedule::retention::retention(o, &complete, &mut status, &mut d);
    }
    crate::controller::schedule::drills::drills(o, drill_cron.as_ref(), &complete, &mut status, &mut d);
    d.delete.sort();
    d.delete.dedup();
    d.status = status;
    d
}

/// On demand: a new `spec.trigger` value takes one backup.
fn on_demand(o: &Observed, status: &mut BackupScheduleStatus, d: &mut Decision) {
    let s = o.schedule;
    let existing = |name: &str| o.children.iter().any(|b| b.name_any() == name);
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
}

/// The full backups' slots: start the newest due one (by the concurrency policy), count the missed, set
/// the Ready condition and when to look again.
fn full_slots(
    o: &Observed,
    schedule: &Schedule,
    active: &[String],
    status: &mut BackupScheduleStatus,
    d: &mut Decision,
) {
    let s = o.schedule;
    let (generation, now_time) = (s.metadata.generation, time(o.now));
    let existing = |name: &str| o.children.iter().any(|b| b.name_any() == name);
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
}

/// Incrementals between full backups: only on top of a complete backup, never beside a running one.
fn incremental_slots(
    o: &Observed,
    inc: &Schedule,
    active: &[String],
    has_complete: bool,
    status: &mut BackupScheduleStatus,
    d: &mut Decision,
) {
    let s = o.schedule;
    let existing = |name: &str| o.children.iter().any(|b| b.name_any() == name);
    if !s.spec.suspend {
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
            if !existing(&name) && !busy && has_complete {
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
}

#[cfg(test)]
mod tests;
