//! Retention in a schedule's decision: after each newly complete backup, a prune Job applies the
//! policy; when it has run, the MySQLBackups whose backups it deleted are deleted too, so the objects
//! list what can be restored.

use kube::ResourceExt;

use crate::controller::backup::decide::EventNote;
use crate::controller::job_outcome::{JobOutcome, job_outcome};
use crate::controller::schedule::build::prune_job;
use crate::controller::schedule::decide::{Decision, Observed};
use crate::crd::{BackupScheduleStatus, MySQLBackup, Phase, PruneStatus};

/// Retention, after each newly complete backup: apply the prune Job, read its outcome into
/// `status.lastPrune`, and delete the MySQLBackups whose backups it deleted.
pub fn retention(o: &Observed, complete: &[&MySQLBackup], status: &mut BackupScheduleStatus, d: &mut Decision) {
    let s = o.schedule;
    if let Some(newest) = complete.last() {
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
                            for b in complete {
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
}
