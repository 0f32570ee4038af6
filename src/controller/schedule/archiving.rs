//! Continuous archiving in a schedule's decision: the archiver Deployment, its status read into
//! `status.binlogArchive`, Events when its phase changes or a gap appears.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::controller::backup::decide::EventNote;
use crate::controller::schedule::build::{archive_name, archiver_deployment};
use crate::controller::schedule::decide::{ARCHIVER_POLL, Decision, Observed};
use crate::crd::{BackupScheduleStatus, BinlogArchiveStatus};
use crate::format::archiver_status::ArchiverState;

/// Continuous archiving: the archiver Deployment, its status, Events on changes, the window's end.
pub fn archiving(o: &Observed, status: &mut BackupScheduleStatus, d: &mut Decision) {
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
            a.last_event_time = r.last_event_time.map(Time);
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
