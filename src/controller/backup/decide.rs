//! Deciding what a MySQLBackup needs: a pure function from what was observed (the resource, its source
//! pod, its Job, the agent's termination message, the Secrets it names) to the Job to apply, the new
//! status, the Events to publish and when to look again. No client here.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::controller::backup::build::backup_job;
use crate::controller::backup::drill::{drill_job_gone, observe_drill, pending_drill};
use crate::controller::build::{BuildError, method_kind, method_name};
use crate::controller::job_outcome::{JobOutcome, job_outcome};
use crate::controller::status;
use crate::crd::{MySQLBackup, MySQLBackupStatus, Phase, PositionsStatus, SizesStatus};
use crate::format::manifest::MethodKind;
use crate::format::summary::Summary;
use crate::mysql::position::Positions;

pub use crate::controller::status::{BLOCKED, COMPLETE, FAILED};

/// What was observed around one MySQLBackup.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The resource.
    pub backup: &'a MySQLBackup,
    /// Its source pod, if it exists.
    pub pod: Option<&'a Pod>,
    /// Its Job, if it exists.
    pub job: Option<&'a Job>,
    /// Termination message of the Job's last finished agent container.
    pub agent_message: Option<&'a str>,
    /// The drill Job a schedule started for this (complete) backup, if it exists.
    pub drill_job: Option<&'a Job>,
    /// Its agent's termination message, once finished.
    pub drill_message: Option<&'a str>,
    /// Secrets of the namespace that the spec names: name → keys.
    pub secrets: &'a BTreeMap<String, BTreeSet<String>>,
    /// The operator's own image.
    pub operator_image: &'a str,
    /// The time of this reconcile.
    pub now: Time,
}

/// An Event to publish on the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// Warning rather than Normal.
    pub warning: bool,
    /// Machine-readable reason, also the error category in metrics.
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The Job to apply (server-side), if one is needed now.
    pub job: Option<Job>,
    /// The status to apply.
    pub status: MySQLBackupStatus,
    /// Events to publish.
    pub events: Vec<EventNote>,
    /// When to reconcile again even if nothing changes.
    pub requeue: Option<Duration>,
}

/// How long to wait before looking again at a blocked backup.
pub const BLOCKED_RETRY: Duration = Duration::from_secs(30);

/// Secrets the spec names that are missing, or lack the named key.
fn missing_secrets(backup: &MySQLBackup, secrets: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    let password = backup.spec.source.connection.password_secret.as_ref();
    password
        .and_then(|s| s.missing_in("spec.source.connection.passwordSecret", secrets))
        .or_else(|| backup.spec.storage.missing_secret("spec.storage", secrets))
}

/// Problems of the spec that no retry fixes.
fn invalid_spec(backup: &MySQLBackup, pod: Option<&Pod>) -> Option<String> {
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    if name.len() > 63 {
        return Some(format!(
            "metadata.name {name:?} is {} characters; a MySQLBackup's name can have at most 63 (it labels its Job)",
            name.len()
        ));
    }
    let storage = &backup.spec.storage;
    match url::Url::parse(&storage.url) {
        Err(e) => return Some(format!("spec.storage.url {:?} is not a URL: {e}", storage.url)),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            return Some(format!("spec.storage.url: {}", crate::storage::CREDENTIALS_IN_URL));
        }
        Ok(u) if !["s3", "az", "gs", "file"].contains(&u.scheme()) => {
            return Some(format!("spec.storage.url {:?}: unsupported scheme {:?}", storage.url, u.scheme()));
        }
        Ok(u) if u.scheme() == "file" && storage.persistent_volume_claim.is_none() => {
            return Some("spec.storage.url is file:// but spec.storage.persistentVolumeClaim names no volume".into());
        }
        Ok(_) => {}
    }
    if let Some(key) = storage.options.keys().find(|k| crate::storage::is_credential_key(k)) {
        return Some(format!(
            "spec.storage.options.{key} looks like a credential: put credentials in the Secret named by spec.storage.credentialsSecret"
        ));
    }
    let image = pod
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| match &backup.spec.source.container {
            Some(c) => s.containers.iter().find(|x| &x.name == c),
            None => s.containers.first(),
        })
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let lower = image.to_ascii_lowercase();
    if let None | Some(MethodKind::Mariabackup | MethodKind::Myrocks) = method_kind(backup.spec.method)
        && (lower.contains("mysql") || lower.contains("percona"))
        && !lower.contains("mariadb")
    {
        return Some(format!(
            "method {} needs a MariaDB server, but the pod runs image {image}; use method cold on a stopped server",
            method_name(backup.spec.method)
        ));
    }
    None
}

/// Decides what `o.backup` needs now.
pub fn decide(o: &Observed) -> Decision {
    let b = o.backup;
    let name = b.metadata.name.clone().unwrap_or_default();
    let namespace = b.metadata.namespace.clone().unwrap_or_default();
    let generation = b.metadata.generation;
    let old = b.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    let mut events = Vec::new();
    let decision = |status: MySQLBackupStatus, job, events, requeue| Decision { job, status, events, requeue };

    // A finished backup is never turned into work again; a complete one may be drilled.
    if matches!(old.phase, Some(Phase::Complete | Phase::Failed)) {
        match (o.drill_job, pending_drill(b)) {
            (Some(job), _) => events.extend(observe_drill(job, o.drill_message, &mut status, generation, &o.now)),
            (None, Some(gone)) => events.push(drill_job_gone(gone, &mut status, generation, &o.now)),
            (None, None) => {}
        }
        return decision(status, None, events, None);
    }

    let fail = |status: &mut MySQLBackupStatus, events: &mut Vec<EventNote>, reason: &'static str, message: String| {
        events.push(status::mark_failed(status, reason, message, generation, &o.now));
    };

    if let Some(job) = o.job {
        status.job_name = job.metadata.name.clone();
        if status.start_time.is_none() {
            status.start_time = job.status.as_ref().and_then(|s| s.start_time.clone());
        }
        if let Some(image) = job.metadata.annotations.as_ref().and_then(|a| a.get("mysqlbackup.dev/database-image")) {
            status.database_image = Some(image.clone());
        }
        let outcome = job_outcome(job, o.agent_message);
        if let JobOutcome::Succeeded(message) = &outcome {
            match message.as_deref().map(Summary::parse) {
                Some(Ok(Summary::Backup {
                    backup_id,
                    storage,
                    method,
                    positions,
                    totals,
                    duration_seconds,
                    incremental,
                    encryption_key,
                    ..
                })) => {
                    status.phase = Some(Phase::Complete);
                    status.backup_id = Some(backup_id.clone());
                    // The storage layout is a compatibility promise: the manifest's URL follows from the id.
                    status.manifest =
                        Some(format!("{}/backups/{}/manifest.json", storage.trim_end_matches('/'), backup_id));
                    status.method = Some(method.as_str().to_string());
                    status.positions = Some(PositionsStatus::from(&positions));
                    status.sizes = Some(SizesStatus::from(&totals));
                    status.incremental = incremental.as_ref().map(|i| crate::crd::IncrementalStatus {
                        base_backup_id: i.base.clone(),
                        from_gtid: PositionsStatus::from(&Positions {
                            gtid: Some(i.from.clone()),
                            ..Default::default()
                        })
                        .gtid_executed,
                    });
                    status.encryption_key = encryption_key.map(|k| k.to_string());
                    status.duration_seconds = Some(duration_seconds);
                    status.completion_time =
                        job.status.as_ref().and_then(|s| s.completion_time.clone()).or(Some(o.now.clone()));
                    let message = format!(
                        "backup {backup_id} stored: {} bytes of data, {} uploaded",
                        totals.data_bytes, totals.uploaded_bytes
                    );
                    status::set(&mut status.conditions, COMPLETE, true, "BackupStored", &message, generation, &o.now);
                    status::set(&mut status.conditions, BLOCKED, false, "BackupStored", "", generation, &o.now);
                    events.push(EventNote { warning: false, reason: "BackupStored", message });
                }
                other => {
                    let why = match other {
                        Some(Err(e)) => format!("the agent's summary cannot be read: {e}"),
                        Some(Ok(s)) => format!("the agent's summary is not a backup's: {}", s.operation()),
                        None => "the agent left no summary".to_string(),
                    };
                    fail(&mut status, &mut events, "SummaryUnreadable", why);
                }
            }
            return decision(status, None, events, None);
        }
        if let JobOutcome::Failed(reason) = outcome {
            fail(&mut status, &mut events, "AgentFailed", reason);
            return decision(status, None, events, None);
        }
        if status.phase != Some(Phase::Running) {
            events.push(EventNote {
                warning: false,
                reason: "BackupRunning",
                message: format!("Job {} is running", job.metadata.name.clone().unwrap_or_default()),
            });
        }
        status.phase = Some(Phase::Running);
        return decision(status, None, events, None);
    }

    // A Job was created and is gone: the backup may or may not have been stored. Never run it twice.
    if let Some(job) = old.job_name.as_deref() {
        let consequence =
            "the backup may or may not be in storage (agent list shows it); create a new MySQLBackup to take another";
        events.push(status::mark_job_lost(&mut status, job, consequence, generation, &o.now));
        return decision(status, None, events, None);
    }

    // No Job yet: check everything the Job needs, then build it.
    if let Some(problem) = invalid_spec(b, o.pod) {
        fail(&mut status, &mut events, "InvalidSpec", problem);
        return decision(status, None, events, None);
    }
    let blocked = |mut status: MySQLBackupStatus, reason: &'static str, message: String| {
        let events = status::mark_blocked(&mut status, reason, message, generation, &o.now);
        Decision { job: None, status, events, requeue: Some(BLOCKED_RETRY) }
    };
    let Some(pod) = o.pod else {
        return blocked(status, "PodNotFound", format!("pod {} not found in namespace {namespace}", b.spec.source.pod));
    };
    if let Some(message) = missing_secrets(b, o.secrets) {
        return blocked(status, "SecretNotFound", message);
    }
    match backup_job(b, pod, o.operator_image) {
        Ok(job) => {
            status.phase = Some(Phase::Pending);
            status.job_name = job.metadata.name.clone();
            // `auto` is known once the agent has chosen: its summary says.
            status.method = method_kind(b.spec.method).map(|m| m.as_str().to_string());
            status::set(&mut status.conditions, BLOCKED, false, "JobCreated", "", generation, &o.now);
            let message = format!("created Job {} for backup {name}", job.metadata.name.clone().unwrap_or_default());
            events.push(EventNote { warning: false, reason: "JobCreated", message });
            decision(status, Some(job), events, None)
        }
        Err(e) if e.is_transient() => blocked(status, "PodNotReady", e.to_string()),
        Err(e @ BuildError::MissingMetadata(_)) => blocked(status, "MissingMetadata", e.to_string()),
        Err(e) => {
            fail(&mut status, &mut events, "InvalidSource", e.to_string());
            decision(status, None, events, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKUP: &str = include_str!("../../../tests/fixtures/mysqlbackup.yaml");

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: db}
spec:
  nodeName: node-1
  containers:
  - name: mariadb
    image: mariadb:10.11
    volumeMounts: [{name: data, mountPath: /var/lib/mysql}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data-db-0}}]
status: {podIP: 10.0.0.9}
"#;

    const JOB_RUNNING: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: backup-nightly-1, namespace: db, annotations: {mysqlbackup.dev/database-image: "mariadb:10.11"}}
status: {startTime: "2026-11-22T02:00:00Z", active: 1}
"#;

    const SUMMARY: &str = r#"{"operation":"backup","backupId":"20261122T020001Z-00abcd","storage":"s3://backups/prod",
      "manifest":"prod/backups/20261122T020001Z-00abcd/manifest.json","method":"mariabackup",
      "positions":{"flavor":"mariadb","version":"10.11.19-MariaDB","serverId":1,
        "gtid":{"flavor":"mariadb","binlogPos":"0-1-42","purged":"0-1-1"},"binlog":{"file":"mysql-bin.000003","position":1287}},
      "totals":{"files":207,"dataBytes":17624540,"storedBytes":746342,"uploadedBytes":746342,"chunks":207,"reusedChunks":18},
      "startedAt":"2026-11-22T02:00:01Z","completedAt":"2026-11-22T02:00:04Z","durationSeconds":3.2,"peakRssBytes":48164864}"#;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_795_000_000).unwrap())
    }

    fn secrets() -> BTreeMap<String, BTreeSet<String>> {
        BTreeMap::from([
            ("db-user".to_string(), BTreeSet::from(["password".to_string()])),
            ("s3-creds".to_string(), BTreeSet::from(["AWS_ACCESS_KEY_ID".to_string()])),
        ])
    }

    fn run(
        backup: &MySQLBackup,
        pod: Option<&Pod>,
        job: Option<&Job>,
        message: Option<&str>,
        secrets: &BTreeMap<String, BTreeSet<String>>,
    ) -> Decision {
        decide(&Observed {
            backup,
            pod,
            job,
            agent_message: message,
            drill_job: None,
            drill_message: None,
            secrets,
            operator_image: "op:1",
            now: now(),
        })
    }

    fn condition<'a>(
        s: &'a MySQLBackupStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t} condition in {:?}", s.conditions))
    }

    fn finished_job(kind: &str, message: &str) -> Job {
        let mut job: Job = parse(JOB_RUNNING);
        job.status = Some(parse(&format!(
            "{{startTime: '2026-11-22T02:00:00Z', completionTime: '2026-11-22T02:00:05Z', conditions: [{{type: {kind}, status: 'True', message: '{message}'}}]}}"
        )));
        job
    }

    #[test]
    fn a_new_backup_gets_its_job() {
        let d = run(&parse(BACKUP), Some(&parse(POD)), None, None, &secrets());
        let job = d.job.expect("a Job to apply");
        assert_eq!(job.metadata.name.as_deref(), Some("backup-nightly-1"));
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(d.status.method, None, "auto is known when the agent has chosen");
        assert_eq!(d.status.observed_generation, Some(1));
        let myrocks = BACKUP.replace("  storage:", "  method: myrocks\n  storage:");
        let d2 = run(&parse(&myrocks), Some(&parse(POD)), None, None, &secrets());
        assert_eq!(d2.status.method.as_deref(), Some("myrocks"));
        assert_eq!(
            d.events,
            vec![EventNote {
                warning: false,
                reason: "JobCreated",
                message: "created Job backup-nightly-1 for backup nightly-1".into()
            }]
        );
    }

    #[test]
    fn a_job_gone_before_its_outcome_was_read_fails_and_is_never_run_again() {
        for phase in ["Pending", "Running"] {
            let mut backup: MySQLBackup = parse(BACKUP);
            backup.status = Some(parse(&format!("{{phase: {phase}, jobName: backup-nightly-1}}")));
            let d = run(&backup, Some(&parse(POD)), None, None, &secrets());
            assert!(d.job.is_none(), "{phase}: no second Job");
            assert_eq!(d.status.phase, Some(Phase::Failed));
            let c = condition(&d.status, FAILED);
            let expected = "Job backup-nightly-1 is gone and its outcome was never read (deleted by hand, or by its TTL while the controller was down); it is not run again: the backup may or may not be in storage (agent list shows it); create a new MySQLBackup to take another";
            assert_eq!((c.reason.as_str(), c.message.as_str()), ("JobLost", expected));
            assert_eq!(d.events, vec![EventNote { warning: true, reason: "JobLost", message: expected.into() }]);
            backup.status = Some(d.status.clone());
            let again = run(&backup, Some(&parse(POD)), None, None, &secrets());
            assert!(again.job.is_none() && again.events.is_empty() && again.status == d.status);
        }
    }

    #[test]
    fn a_missing_pod_blocks_and_retries_with_one_event() {
        let d = run(&parse(BACKUP), None, None, None, &secrets());
        assert!(d.job.is_none());
        assert_eq!(d.requeue, Some(BLOCKED_RETRY));
        assert_eq!(d.status.phase, Some(Phase::Pending));
        let c = condition(&d.status, BLOCKED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("True", "PodNotFound", "pod db-0 not found in namespace db")
        );
        assert_eq!(d.events.len(), 1);
        // The next reconcile finds the same problem: same condition, no new Event, no tight loop.
        let mut again: MySQLBackup = parse(BACKUP);
        again.status = Some(d.status.clone());
        let d2 = run(&again, None, None, None, &secrets());
        assert!(d2.events.is_empty());
        assert_eq!(d2.status, d.status);
        assert_eq!(d2.requeue, Some(BLOCKED_RETRY));
    }

    #[test]
    fn missing_secrets_and_keys_block_naming_them() {
        let mut s = secrets();
        s.remove("s3-creds");
        let d = run(&parse(BACKUP), Some(&parse(POD)), None, None, &s);
        assert_eq!(condition(&d.status, BLOCKED).message, "Secret s3-creds (spec.storage.credentialsSecret) not found");
        let mut s = secrets();
        s.insert("db-user".into(), BTreeSet::from(["pass".to_string()]));
        let d = run(&parse(BACKUP), Some(&parse(POD)), None, None, &s);
        assert_eq!(
            condition(&d.status, BLOCKED).message,
            "Secret db-user has no key \"password\" (spec.source.connection.passwordSecret.key)"
        );
        assert!(d.job.is_none());
        // The encryption key: its Secret and the key in it.
        let encrypted = BACKUP.replace(
            "credentialsSecret: s3-creds}",
            "credentialsSecret: s3-creds, encryption: {keySecret: {name: keys, key: k}}}",
        );
        let mut s = secrets();
        let d = run(&parse(&encrypted), Some(&parse(POD)), None, None, &s);
        assert_eq!(condition(&d.status, BLOCKED).message, "Secret keys (spec.storage.encryption.keySecret) not found");
        assert!(d.job.is_none());
        s.insert("keys".into(), BTreeSet::from(["old".to_string()]));
        let d = run(&parse(&encrypted), Some(&parse(POD)), None, None, &s);
        assert_eq!(
            condition(&d.status, BLOCKED).message,
            "Secret keys has no key \"k\" (spec.storage.encryption.keySecret.key)"
        );
        s.insert("keys".into(), BTreeSet::from(["old".to_string(), "k".to_string()]));
        assert!(run(&parse(&encrypted), Some(&parse(POD)), None, None, &s).job.is_some());
    }

    #[test]
    fn bad_specs_fail_for_good_naming_the_field() {
        let cases = [
            (
                BACKUP.replace("s3://backups/prod", "ftp://x/y"),
                "spec.storage.url \"ftp://x/y\": unsupported scheme \"ftp\"",
            ),
            (
                BACKUP.replace("s3://backups/prod", "not a url"),
                "spec.storage.url \"not a url\" is not a URL: relative URL without a base",
            ),
            (
                BACKUP.replace(
                    "credentialsSecret: s3-creds}",
                    "credentialsSecret: s3-creds, options: {secret_access_key: x}}",
                ),
                "spec.storage.options.secret_access_key looks like a credential: put credentials in the Secret named by spec.storage.credentialsSecret",
            ),
            (
                BACKUP.replace("s3://backups/prod", "file:///backups"),
                "spec.storage.url is file:// but spec.storage.persistentVolumeClaim names no volume",
            ),
            (
                BACKUP.replace("name: nightly-1,", &format!("name: {},", "n".repeat(64))),
                "metadata.name \"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\" is 64 characters; a MySQLBackup's name can have at most 63 (it labels its Job)",
            ),
        ];
        for (yaml, message) in cases {
            let d = run(&parse(&yaml), Some(&parse(POD)), None, None, &secrets());
            assert!(d.job.is_none());
            assert_eq!(d.status.phase, Some(Phase::Failed), "{message}");
            let c = condition(&d.status, FAILED);
            assert_eq!((c.reason.as_str(), c.message.as_str()), ("InvalidSpec", message));
            assert!(d.events[0].warning);
        }
        let mysql = POD.replace("image: mariadb:10.11", "image: mysql:8.0");
        let d = run(&parse(BACKUP), Some(&parse(&mysql)), None, None, &secrets());
        assert_eq!(
            condition(&d.status, FAILED).message,
            "method auto needs a MariaDB server, but the pod runs image mysql:8.0; use method cold on a stopped server"
        );
        let no_mount = POD.replace("mountPath: /var/lib/mysql", "mountPath: /data");
        let d = run(&parse(BACKUP), Some(&parse(&no_mount)), None, None, &secrets());
        assert_eq!(condition(&d.status, FAILED).reason, "InvalidSource");
    }

    #[test]
    fn a_pod_that_is_still_starting_blocks() {
        let starting = POD.replace("  nodeName: node-1\n", "");
        let d = run(&parse(BACKUP), Some(&parse(&starting)), None, None, &secrets());
        assert_eq!(condition(&d.status, BLOCKED).message, "pod db-0 is not scheduled to a node yet");
        assert_eq!(d.requeue, Some(BLOCKED_RETRY));
    }

    #[test]
    fn a_running_job_shows_in_status() {
        let d = run(&parse(BACKUP), Some(&parse(POD)), Some(&parse(JOB_RUNNING)), None, &secrets());
        assert!(d.job.is_none(), "an existing Job is not re-applied");
        assert_eq!(d.status.phase, Some(Phase::Running));
        assert_eq!(d.status.job_name.as_deref(), Some("backup-nightly-1"));
        assert_eq!(d.status.database_image.as_deref(), Some("mariadb:10.11"));
        assert_eq!(d.status.start_time.as_ref().unwrap().0.to_string(), "2026-11-22T02:00:00Z");
    }

    #[test]
    fn a_succeeded_job_completes_with_positions_and_sizes() {
        let job = finished_job("Complete", "");
        let d = run(&parse(BACKUP), Some(&parse(POD)), Some(&job), Some(SUMMARY), &secrets());
        let s = &d.status;
        assert_eq!(s.phase, Some(Phase::Complete));
        assert_eq!(s.backup_id.as_deref(), Some("20261122T020001Z-00abcd"));
        assert_eq!(s.manifest.as_deref(), Some("s3://backups/prod/backups/20261122T020001Z-00abcd/manifest.json"));
        let p = s.positions.as_ref().unwrap();
        assert_eq!((p.gtid_executed.as_deref(), p.gtid_purged.as_deref()), (Some("0-1-42"), Some("0-1-1")));
        assert_eq!((p.binlog_file.as_deref(), p.binlog_position), (Some("mysql-bin.000003"), Some(1287)));
        assert_eq!(s.sizes.as_ref().unwrap().data_bytes, 17624540);
        assert_eq!(s.duration_seconds, Some(3.2));
        assert_eq!(s.completion_time.as_ref().unwrap().0.to_string(), "2026-11-22T02:00:05Z");
        assert_eq!(
            condition(s, COMPLETE).message,
            "backup 20261122T020001Z-00abcd stored: 17624540 bytes of data, 746342 uploaded"
        );
        assert_eq!(s.incremental, None, "a full backup");
        assert_eq!(s.encryption_key, None, "in the clear");
        // An encrypted backup shows its key's fingerprint.
        let sealed = SUMMARY.replace(r#""peakRssBytes""#, r#""encryptionKey":"5ef02a3336cbceba","peakRssBytes""#);
        let d3 = run(&parse(BACKUP), Some(&parse(POD)), Some(&job), Some(&sealed), &secrets());
        assert_eq!(d3.status.encryption_key.as_deref(), Some("5ef02a3336cbceba"));
        // An incremental reports where it starts, and from which backup.
        let inc = SUMMARY.replace(
            r#""method":"mariabackup","#,
            r#""method":"binlog","incremental":{"base":"20261121T020001Z-00aaaa","from":{"flavor":"mariadb","binlogPos":"0-1-30"}},"#,
        );
        let d2 = run(&parse(BACKUP), Some(&parse(POD)), Some(&job), Some(&inc), &secrets());
        let i = d2.status.incremental.clone().expect("incremental status");
        assert_eq!(
            (i.base_backup_id.as_deref(), i.from_gtid.as_deref()),
            (Some("20261121T020001Z-00aaaa"), Some("0-1-30"))
        );
        assert_eq!(d2.status.method.as_deref(), Some("binlog"));
        // Finished is final: later reconciles change nothing and create nothing.
        let mut done: MySQLBackup = parse(BACKUP);
        done.status = Some(d.status.clone());
        let again = run(&done, None, None, None, &BTreeMap::new());
        assert!(again.job.is_none() && again.events.is_empty() && again.requeue.is_none());
        assert_eq!(again.status, d.status);
    }

    #[test]
    fn a_failed_job_fails_with_the_agents_reason() {
        let job = finished_job("Failed", "Job has reached the specified backoff limit");
        let message = r#"{"error":"storage s3://backups/prod: listing prod/chunks: 403 Forbidden"}"#;
        let d = run(&parse(BACKUP), Some(&parse(POD)), Some(&job), Some(message), &secrets());
        assert_eq!(d.status.phase, Some(Phase::Failed));
        let c = condition(&d.status, FAILED);
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            ("AgentFailed", "storage s3://backups/prod: listing prod/chunks: 403 Forbidden")
        );
        assert_eq!(d.events[0].message, c.message);
        // Without a termination message, the Job's own reason is used.
        let d = run(&parse(BACKUP), Some(&parse(POD)), Some(&job), None, &secrets());
        assert_eq!(condition(&d.status, FAILED).message, "Job has reached the specified backoff limit");
        // A succeeded Job without a readable summary is not taken for a backup.
        let d =
            run(&parse(BACKUP), Some(&parse(POD)), Some(&finished_job("Complete", "")), Some("garbage"), &secrets());
        assert_eq!(condition(&d.status, FAILED).reason, "SummaryUnreadable");
    }
}
