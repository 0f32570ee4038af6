//! Deleting a MySQLBackup whose `deletionPolicy` is `Delete`: a pure decision, like [`crate::controller::backup::decide`].
//!
//! Such a backup carries the finalizer [`FINALIZER`] from before its Job is created. When the object is
//! deleted, a running backup Job is stopped first; then, if the backup reached storage, a cleanup Job
//! runs `agent delete`; the finalizer is removed when it succeeds. A cleanup that fails sets the
//! `CleanupFailed` condition with the agent's reason and is retried every [`CLEANUP_RETRY`]; the
//! annotation [`SKIP_CLEANUP_ANNOTATION`]` = "true"` gives up and lets the object go, data kept, so
//! unreachable storage never blocks a deletion forever.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::PodSecurityContext},
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::controller::backup::build::cleanup_job;
use crate::controller::backup::decide::{BLOCKED_RETRY, EventNote};
use crate::controller::job_outcome::{JobOutcome, job_outcome};
use crate::controller::status;
use crate::crd::{DeletionPolicy, MySQLBackup, MySQLBackupStatus};

/// The finalizer that holds a `Delete` backup until its data is deleted.
pub const FINALIZER: &str = "mysqlbackup.dev/delete-data";
/// Set to `"true"` on a MySQLBackup being deleted to let it go without deleting its data.
pub const SKIP_CLEANUP_ANNOTATION: &str = "mysqlbackup.dev/skip-cleanup";
/// Condition: the cleanup Job failed; retried.
pub const CLEANUP_FAILED: &str = "CleanupFailed";
/// How long a failed cleanup waits before it is tried again.
pub const CLEANUP_RETRY: Duration = Duration::from_secs(300);
/// How often a running cleanup or a stopping backup Job is looked at (the cleanup Job has no owner,
/// so its changes do not trigger a reconcile).
pub const CLEANUP_POLL: Duration = Duration::from_secs(10);

/// Whether `backup` should carry the finalizer and does not yet.
pub fn needs_finalizer(backup: &MySQLBackup) -> bool {
    backup.spec.deletion_policy == DeletionPolicy::Delete
        && backup.metadata.deletion_timestamp.is_none()
        && !has_finalizer(backup)
}

/// Whether `backup` carries the finalizer though its policy was switched back to `Retain`: the
/// finalizer follows the policy, so a switched backup deletes like any `Retain` one.
pub fn finalizer_is_stale(backup: &MySQLBackup) -> bool {
    backup.spec.deletion_policy == DeletionPolicy::Retain
        && backup.metadata.deletion_timestamp.is_none()
        && has_finalizer(backup)
}

/// Whether `backup` carries the finalizer.
pub fn has_finalizer(backup: &MySQLBackup) -> bool {
    backup.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

/// What was observed around a MySQLBackup being deleted.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The resource, with its deletion timestamp set.
    pub backup: &'a MySQLBackup,
    /// The backup Job, if it still exists.
    pub backup_job: Option<&'a Job>,
    /// The termination message of the backup Job's agent, once finished.
    pub backup_message: Option<&'a str>,
    /// The cleanup Job, if it exists.
    pub cleanup_job: Option<&'a Job>,
    /// The termination message of the cleanup Job's agent, once finished.
    pub cleanup_message: Option<&'a str>,
    /// The source pod's security context, when the pod still exists.
    pub pod_security_context: Option<&'a PodSecurityContext>,
    /// Secrets of the namespace that the storage spec names: name → keys.
    pub secrets: &'a BTreeMap<String, BTreeSet<String>>,
    /// The operator's own image.
    pub operator_image: &'a str,
    /// The time of this reconcile.
    pub now: Time,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The cleanup Job to apply.
    pub job: Option<Job>,
    /// Jobs to delete (with their pods): a running backup Job, or a failed cleanup Job to retry.
    pub delete_jobs: Vec<String>,
    /// Remove the finalizer: the object may go.
    pub remove_finalizer: bool,
    /// The status to apply.
    pub status: MySQLBackupStatus,
    /// Events to publish.
    pub events: Vec<EventNote>,
    /// When to reconcile again.
    pub requeue: Option<Duration>,
}

/// When the Failed condition of `job` became true.
fn failed_at(job: &Job) -> Option<&Time> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
}

/// Sets the `CleanupFailed` condition, with a Warning when its message is new.
fn cleanup_failed(d: &mut Decision, reason: &'static str, message: String, generation: Option<i64>, now: &Time) {
    let fresh = !d.status.conditions.iter().any(|c| c.type_ == CLEANUP_FAILED && c.message == message);
    status::set(&mut d.status.conditions, CLEANUP_FAILED, true, reason, &message, generation, now);
    if fresh {
        d.events.push(EventNote { warning: true, reason, message });
    }
}

/// Decides what a MySQLBackup being deleted needs now.
pub fn decide(o: &Observed) -> Decision {
    let b = o.backup;
    let generation = b.metadata.generation;
    let status = b.status.clone().unwrap_or_default();
    let mut d = Decision {
        job: None,
        delete_jobs: Vec::new(),
        remove_finalizer: false,
        status,
        events: Vec::new(),
        requeue: None,
    };
    if !has_finalizer(b) {
        return d;
    }
    let release = |mut d: Decision, event: Option<EventNote>| {
        d.remove_finalizer = true;
        d.events.extend(event);
        d
    };
    if b.spec.deletion_policy == DeletionPolicy::Retain {
        return release(d, None);
    }
    let skip = b.metadata.annotations.as_ref().and_then(|a| a.get(SKIP_CLEANUP_ANNOTATION)).map(String::as_str);
    let id = d.status.backup_id.clone().or_else(|| match o.backup_job.map(|j| job_outcome(j, o.backup_message)) {
        Some(JobOutcome::Succeeded(Some(m))) => match crate::format::summary::Summary::parse(&m) {
            Ok(crate::format::summary::Summary::Backup { backup_id, .. }) => Some(backup_id),
            _ => None,
        },
        _ => None,
    });
    if skip == Some("true") {
        let message = match &id {
            Some(id) => format!(
                "{SKIP_CLEANUP_ANNOTATION} is set: backup {id} is left in {} (delete it with `agent delete`)",
                b.spec.storage.url
            ),
            None => format!("{SKIP_CLEANUP_ANNOTATION} is set: nothing deleted from {}", b.spec.storage.url),
        };
        return release(d, Some(EventNote { warning: true, reason: "CleanupSkipped", message }));
    }

    // A backup Job still running could write a manifest after the clean-up: stop it first.
    if let Some(job) = o.backup_job
        && job_outcome(job, o.backup_message) == JobOutcome::Running
    {
        let job_name = job.metadata.name.clone().unwrap_or_default();
        if job.metadata.deletion_timestamp.is_none() {
            d.delete_jobs.push(job_name.clone());
            d.events.push(EventNote {
                warning: false,
                reason: "StoppingBackup",
                message: format!("stopping Job {job_name} before deleting the backup's data"),
            });
        }
        d.requeue = Some(CLEANUP_POLL);
        return d;
    }
    let Some(id) = id else {
        // Never stored: a manifest is written last, so nothing was ever listed. Chunks an interrupted
        // backup uploaded are reused by the next backup under the same prefix.
        return release(d, None);
    };

    match o.cleanup_job.map(|j| (j, job_outcome(j, o.cleanup_message))) {
        None => {
            if let Some(missing) = b.spec.storage.missing_secret("spec.storage", o.secrets) {
                let message = format!(
                    "cannot delete backup {id}: {missing}; restore it, or set the annotation \
                     {SKIP_CLEANUP_ANNOTATION}=true to keep the data and let the object go"
                );
                cleanup_failed(&mut d, "SecretNotFound", message, generation, &o.now);
                d.requeue = Some(BLOCKED_RETRY);
                return d;
            }
            match cleanup_job(b, &id, o.pod_security_context.cloned(), o.operator_image) {
                Ok(job) => {
                    d.events.push(EventNote {
                        warning: false,
                        reason: "CleanupStarted",
                        message: format!(
                            "created Job {} to delete backup {id} from {}",
                            job.metadata.name.clone().unwrap_or_default(),
                            b.spec.storage.url
                        ),
                    });
                    d.job = Some(job);
                    d.requeue = Some(CLEANUP_POLL);
                }
                Err(e) => {
                    cleanup_failed(&mut d, "MissingMetadata", e.to_string(), generation, &o.now);
                    d.requeue = Some(BLOCKED_RETRY);
                }
            }
            d
        }
        Some((_, JobOutcome::Running)) => {
            d.requeue = Some(CLEANUP_POLL);
            d
        }
        Some((_, JobOutcome::Succeeded(message))) => {
            let summary = match message.as_deref().map(crate::format::summary::Summary::parse) {
                Some(Ok(crate::format::summary::Summary::Delete { outcome, .. })) => Some(outcome),
                _ => None,
            };
            let url = &b.spec.storage.url;
            let message = match summary {
                Some(s) if s.already_deleted => format!("backup {id} was already gone from {url}"),
                Some(s) if !s.sweep.deferred_by.is_empty() => format!(
                    "deleted backup {id} from {url}; its chunks go at the next sweep (backups were running: {})",
                    s.sweep.deferred_by.join(", ")
                ),
                Some(s) => format!(
                    "deleted backup {id} from {url}: {} unreferenced chunk(s), {} bytes freed; {} chunk(s) still in use",
                    s.sweep.deleted_chunks, s.sweep.freed_bytes, s.sweep.kept_chunks
                ),
                None => format!("deleted backup {id} from {url}"),
            };
            release(d, Some(EventNote { warning: false, reason: "DataDeleted", message }))
        }
        Some((job, JobOutcome::Failed(reason))) => {
            let job_name = job.metadata.name.clone().unwrap_or_default();
            let message = format!(
                "deleting backup {id} failed: {reason}; retried every {} minutes; set the annotation \
                 {SKIP_CLEANUP_ANNOTATION}=true to keep the data and let the object go",
                CLEANUP_RETRY.as_secs() / 60
            );
            cleanup_failed(&mut d, "CleanupFailed", message, generation, &o.now);
            let since = failed_at(job).map(|t| o.now.0.duration_since(t.0).as_secs()).unwrap_or(i64::MAX);
            let wait = CLEANUP_RETRY.as_secs() as i64 - since;
            if wait <= 0 {
                if job.metadata.deletion_timestamp.is_none() {
                    d.delete_jobs.push(job_name);
                }
                d.requeue = Some(CLEANUP_POLL);
            } else {
                d.requeue = Some(Duration::from_secs(wait as u64));
            }
            d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKUP: &str = r#"
apiVersion: mysqlbackup.dev/v1alpha1
kind: MySQLBackup
metadata:
  name: nightly-1
  namespace: db
  uid: b-1
  generation: 1
  deletionTimestamp: "2026-11-22T05:00:00Z"
  finalizers: [mysqlbackup.dev/delete-data]
spec:
  source: {pod: db-0}
  storage: {url: "s3://backups/prod", credentialsSecret: s3-creds}
  deletionPolicy: Delete
status: {phase: Complete, backupId: 20261122T020001Z-00abcd}
"#;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_795_330_000).unwrap())
    }

    struct World<'a> {
        backup: MySQLBackup,
        backup_job: Option<Job>,
        backup_message: Option<&'a str>,
        cleanup_job: Option<Job>,
        cleanup_message: Option<&'a str>,
        secrets: BTreeMap<String, BTreeSet<String>>,
    }

    impl<'a> World<'a> {
        fn new(backup: &str) -> Self {
            Self {
                backup: parse(backup),
                backup_job: None,
                backup_message: None,
                cleanup_job: None,
                cleanup_message: None,
                secrets: BTreeMap::from([("s3-creds".to_string(), BTreeSet::new())]),
            }
        }

        /// The backup of [`BACKUP`] whose cleanup Job succeeded, its agent reporting `summary`.
        fn cleaned_up(summary: &'a str) -> Self {
            let mut w = Self::new(BACKUP);
            w.cleanup_job = Some(parse(
                "{metadata: {name: cleanup-nightly-1}, status: {succeeded: 1, conditions: [{type: Complete, status: 'True'}]}}",
            ));
            w.cleanup_message = Some(summary);
            w
        }

        fn decide(&self) -> Decision {
            let sc: PodSecurityContext = parse("{runAsUser: 999, fsGroup: 999}");
            decide(&Observed {
                backup: &self.backup,
                backup_job: self.backup_job.as_ref(),
                backup_message: self.backup_message,
                cleanup_job: self.cleanup_job.as_ref(),
                cleanup_message: self.cleanup_message,
                pod_security_context: Some(&sc),
                secrets: &self.secrets,
                operator_image: "op:1",
                now: now(),
            })
        }
    }

    fn failed_job(name: &str, failed_at: &str) -> Job {
        parse(&format!(
            "{{metadata: {{name: {name}}}, status: {{failed: 3, conditions: [{{type: Failed, status: 'True', lastTransitionTime: '{failed_at}'}}]}}}}"
        ))
    }

    #[test]
    fn only_a_live_delete_backup_without_it_needs_the_finalizer() {
        let fresh = BACKUP
            .replace("  deletionTimestamp: \"2026-11-22T05:00:00Z\"\n", "")
            .replace("  finalizers: [mysqlbackup.dev/delete-data]\n", "");
        assert!(needs_finalizer(&parse(&fresh)));
        assert!(!needs_finalizer(&parse(&fresh.replace("deletionPolicy: Delete", "deletionPolicy: Retain"))));
        assert!(!needs_finalizer(&parse(&BACKUP.replace("  deletionTimestamp: \"2026-11-22T05:00:00Z\"\n", ""))));
        assert!(!needs_finalizer(&parse(&BACKUP.replace("  finalizers: [mysqlbackup.dev/delete-data]\n", ""))));
    }

    #[test]
    fn the_finalizer_of_a_live_backup_switched_to_retain_is_stale() {
        let live = BACKUP.replace("  deletionTimestamp: \"2026-11-22T05:00:00Z\"\n", "");
        assert!(!finalizer_is_stale(&parse(&live)));
        let retained = live.replace("deletionPolicy: Delete", "deletionPolicy: Retain");
        assert!(finalizer_is_stale(&parse(&retained)));
        assert!(!finalizer_is_stale(&parse(&retained.replace("  finalizers: [mysqlbackup.dev/delete-data]\n", ""))));
        // Being deleted, the deletion path lets it go.
        assert!(!finalizer_is_stale(&parse(&BACKUP.replace("deletionPolicy: Delete", "deletionPolicy: Retain"))));
    }

    #[test]
    fn a_stored_backup_gets_a_cleanup_job_and_keeps_the_finalizer() {
        let d = World::new(BACKUP).decide();
        assert!(!d.remove_finalizer);
        assert_eq!(d.requeue, Some(CLEANUP_POLL));
        let job = d.job.expect("a cleanup Job");
        assert_eq!(job.metadata.name.as_deref(), Some("cleanup-nightly-1"));
        assert!(job.metadata.owner_references.is_none(), "no owner: the garbage collector must not remove it");
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(999));
        let agent = &pod.containers[0];
        assert_eq!(
            (agent.image.as_deref(), agent.command.as_deref()),
            (Some("op:1"), Some(&["/mysql-backup-operator".to_string()][..]))
        );
        assert_eq!(
            agent.args.clone().unwrap(),
            [
                "agent",
                "delete",
                "--backup=20261122T020001Z-00abcd",
                "--ignore-missing",
                "--summary-file=/dev/termination-log",
                "--log-format=json",
                "--storage=s3://backups/prod"
            ]
        );
        let env_from = agent.env_from.clone().unwrap();
        assert_eq!(env_from[0].secret_ref.as_ref().map(|s| s.name.as_str()), Some("s3-creds"));
        assert_eq!(
            d.events[0].message,
            "created Job cleanup-nightly-1 to delete backup 20261122T020001Z-00abcd from s3://backups/prod"
        );
    }

    #[test]
    fn a_running_backup_job_is_stopped_first() {
        let mut w = World::new(
            &BACKUP.replace("status: {phase: Complete, backupId: 20261122T020001Z-00abcd}", "status: {phase: Running}"),
        );
        w.backup_job = Some(parse("{metadata: {name: backup-nightly-1}, status: {active: 1}}"));
        let d = w.decide();
        assert_eq!(d.delete_jobs, ["backup-nightly-1"]);
        assert!(d.job.is_none() && !d.remove_finalizer);
        assert_eq!(d.requeue, Some(CLEANUP_POLL));
        // Being deleted already: wait, without deleting again.
        w.backup_job = Some(parse(
            "{metadata: {name: backup-nightly-1, deletionTimestamp: '2026-11-22T05:00:01Z'}, status: {active: 1}}",
        ));
        let d = w.decide();
        assert!(d.delete_jobs.is_empty() && d.events.is_empty() && !d.remove_finalizer);
    }

    #[test]
    fn a_backup_that_never_reached_storage_goes_at_once() {
        let mut w = World::new(
            &BACKUP.replace("status: {phase: Complete, backupId: 20261122T020001Z-00abcd}", "status: {phase: Failed}"),
        );
        w.backup_job = Some(failed_job("backup-nightly-1", "2026-11-22T04:00:00Z"));
        let d = w.decide();
        assert!(d.remove_finalizer && d.job.is_none() && d.events.is_empty());
    }

    #[test]
    fn a_succeeded_backup_job_not_yet_in_status_still_has_its_data_deleted() {
        // A backup's summary as the agent writes it (the contract's fixture), of backup …-00ffff.
        let summary = include_str!("../../../tests/fixtures/agent-summaries-0.1.0.jsonl")
            .lines()
            .next()
            .unwrap()
            .replace("20261130T170734Z-b53906", "20261122T040000Z-00ffff");
        let mut w = World::new(
            &BACKUP.replace("status: {phase: Complete, backupId: 20261122T020001Z-00abcd}", "status: {phase: Running}"),
        );
        w.backup_job = Some(parse(
            "{metadata: {name: backup-nightly-1}, status: {succeeded: 1, conditions: [{type: Complete, status: 'True'}]}}",
        ));
        w.backup_message = Some(&summary);
        let d = w.decide();
        assert!(!d.remove_finalizer);
        let args = d.job.unwrap().spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.contains(&"--backup=20261122T040000Z-00ffff".to_string()), "{args:?}");
    }

    #[test]
    fn a_succeeded_cleanup_releases_the_object_and_says_what_it_freed() {
        let w = World::cleaned_up(
            r#"{"operation":"delete","backupId":"20261122T020001Z-00abcd","storage":"s3://backups/prod","alreadyDeleted":false,"deletedChunks":12,"freedBytes":4096,"keptChunks":3,"durationSeconds":0.5}"#,
        );
        let d = w.decide();
        assert!(d.remove_finalizer);
        assert_eq!(
            d.events,
            [EventNote {
                warning: false,
                reason: "DataDeleted",
                message: "deleted backup 20261122T020001Z-00abcd from s3://backups/prod: 12 unreferenced chunk(s), 4096 bytes freed; 3 chunk(s) still in use".into()
            }]
        );
    }

    #[test]
    fn a_cleanup_whose_sweep_was_deferred_still_releases_and_says_so() {
        let w = World::cleaned_up(
            r#"{"operation":"delete","backupId":"20261122T020001Z-00abcd","storage":"s3://backups/prod","alreadyDeleted":false,"deletedChunks":0,"freedBytes":0,"keptChunks":0,"deferredBy":["backup-20261122T050000Z-00ffff"],"durationSeconds":0.1}"#,
        );
        let d = w.decide();
        assert!(d.remove_finalizer, "the backup is gone from storage; its chunks follow at the next sweep");
        assert_eq!(
            d.events[0].message,
            "deleted backup 20261122T020001Z-00abcd from s3://backups/prod; its chunks go at the next sweep (backups were running: backup-20261122T050000Z-00ffff)"
        );
    }

    #[test]
    fn a_failed_cleanup_says_why_waits_and_is_retried() {
        let mut w = World::new(BACKUP);
        w.cleanup_message = Some(
            r#"{"error":"storage s3://backups/prod: listing prod/backups: Generic S3 error: error sending request"}"#,
        );
        // Failed one minute ago: wait the rest of the five minutes.
        w.cleanup_job = Some(failed_job("cleanup-nightly-1", "2026-11-22T06:45:40Z"));
        let d = w.decide();
        let expected = "deleting backup 20261122T020001Z-00abcd failed: storage s3://backups/prod: listing prod/backups: Generic S3 error: error sending request; retried every 5 minutes; set the annotation mysqlbackup.dev/skip-cleanup=true to keep the data and let the object go";
        let c = d.status.conditions.iter().find(|c| c.type_ == CLEANUP_FAILED).unwrap();
        assert_eq!((c.status.as_str(), c.message.as_str()), ("True", expected));
        assert_eq!(d.events[0].reason, "CleanupFailed");
        assert!(d.delete_jobs.is_empty() && !d.remove_finalizer);
        assert_eq!(d.requeue, Some(Duration::from_secs(240)));
        // Same failure again: no second Event. Five minutes on: the failed Job is deleted to run again.
        w.backup.status = Some(d.status.clone());
        w.cleanup_job = Some(failed_job("cleanup-nightly-1", "2026-11-22T06:40:40Z"));
        let d = w.decide();
        assert!(d.events.is_empty());
        assert_eq!(d.delete_jobs, ["cleanup-nightly-1"]);
    }

    #[test]
    fn the_skip_annotation_lets_the_object_go_and_says_where_the_data_is() {
        let w = World::new(&BACKUP.replace(
            "  generation: 1\n",
            "  generation: 1\n  annotations: {mysqlbackup.dev/skip-cleanup: \"true\"}\n",
        ));
        let d = w.decide();
        assert!(d.remove_finalizer && d.job.is_none());
        assert_eq!(
            d.events[0].message,
            "mysqlbackup.dev/skip-cleanup is set: backup 20261122T020001Z-00abcd is left in s3://backups/prod (delete it with `agent delete`)"
        );
        assert!(d.events[0].warning);
    }

    #[test]
    fn a_missing_credentials_secret_blocks_the_cleanup_with_a_way_out() {
        let mut w = World::new(BACKUP);
        w.secrets.clear();
        let d = w.decide();
        assert!(d.job.is_none() && !d.remove_finalizer);
        let c = d.status.conditions.iter().find(|c| c.type_ == CLEANUP_FAILED).unwrap();
        assert_eq!(
            c.message,
            "cannot delete backup 20261122T020001Z-00abcd: Secret s3-creds (spec.storage.credentialsSecret) not found; restore it, or set the annotation mysqlbackup.dev/skip-cleanup=true to keep the data and let the object go"
        );
        assert_eq!(d.requeue, Some(BLOCKED_RETRY));
    }

    #[test]
    fn retain_or_no_finalizer_means_nothing_to_do() {
        let retain = World::new(&BACKUP.replace("deletionPolicy: Delete", "deletionPolicy: Retain")).decide();
        assert!(retain.remove_finalizer && retain.job.is_none());
        let foreign = World::new(&BACKUP.replace("  finalizers: [mysqlbackup.dev/delete-data]\n", "")).decide();
        assert!(!foreign.remove_finalizer && foreign.job.is_none() && foreign.requeue.is_none());
    }
}
