//! Deciding what a MySQLRestore needs: a pure function from what was observed (the resource, the
//! MySQLBackup it names, its target claim, its Job, the agent's termination message, the Secrets it
//! names) to the claim and Job to apply, the new status and the Events. No client here.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::PersistentVolumeClaim},
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::controller::backup::decide::{BLOCKED_RETRY, EventNote};
use crate::controller::job_outcome::{JobOutcome, job_outcome};
use crate::controller::restore::build::{RestorePlan, restore_claim, restore_job, restore_target_claim};
use crate::controller::status;
use crate::controller::status::{BLOCKED, COMPLETE};
use crate::crd::{MySQLBackup, MySQLRestore, MySQLRestoreStatus, Phase, PositionsStatus};
use crate::format::summary::Summary;

/// What was observed around one MySQLRestore.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The resource.
    pub restore: &'a MySQLRestore,
    /// The MySQLBackup named by `spec.source.backup`, if it exists.
    pub backup: Option<&'a MySQLBackup>,
    /// The target claim, if it exists.
    pub claim: Option<&'a PersistentVolumeClaim>,
    /// The restore Job, if it exists.
    pub job: Option<&'a Job>,
    /// Termination message of the Job's agent.
    pub agent_message: Option<&'a str>,
    /// Secrets of the namespace that the spec names: name → keys.
    pub secrets: &'a BTreeMap<String, BTreeSet<String>>,
    /// The operator's own image.
    pub operator_image: &'a str,
    /// The time of this reconcile.
    pub now: Time,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The claim to create, from the template.
    pub claim: Option<PersistentVolumeClaim>,
    /// The Job to apply.
    pub job: Option<Job>,
    /// The status to apply.
    pub status: MySQLRestoreStatus,
    /// Events to publish.
    pub events: Vec<EventNote>,
    /// When to reconcile again even if nothing changes.
    pub requeue: Option<Duration>,
}

/// Decides what `o.restore` needs now.
pub fn decide(o: &Observed) -> Decision {
    let r = o.restore;
    let name = r.metadata.name.clone().unwrap_or_default();
    let generation = r.metadata.generation;
    let old = r.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    let mut events = Vec::new();
    let done = |status, events| Decision { claim: None, job: None, status, events, requeue: None };
    if matches!(old.phase, Some(Phase::Complete | Phase::Failed)) {
        return done(status, events);
    }
    let fail = |mut status: MySQLRestoreStatus, reason: &'static str, message: String| {
        let event = status::mark_failed(&mut status, reason, message, generation, &o.now);
        Decision { claim: None, job: None, status, events: vec![event], requeue: None }
    };
    let blocked = |mut status: MySQLRestoreStatus, reason: &'static str, message: String| {
        let events = status::mark_blocked(&mut status, reason, message, generation, &o.now);
        Decision { claim: None, job: None, status, events, requeue: Some(BLOCKED_RETRY) }
    };

    if let Some(job) = o.job {
        status.job_name = job.metadata.name.clone();
        status.persistent_volume_claim = Some(restore_target_claim(r));
        if status.start_time.is_none() {
            status.start_time = job.status.as_ref().and_then(|s| s.start_time.clone());
        }
        return match job_outcome(job, o.agent_message) {
            JobOutcome::Running => {
                status.phase = Some(Phase::Running);
                done(status, events)
            }
            JobOutcome::Failed(reason) => fail(status, "AgentFailed", reason),
            JobOutcome::Succeeded(message) => match message.as_deref().map(Summary::parse) {
                Some(Ok(Summary::Restore { backup_id, positions, bytes, duration_seconds, until, .. })) => {
                    status.phase = Some(Phase::Complete);
                    status.backup_id = Some(backup_id.clone());
                    status.positions = Some(PositionsStatus::from(&positions));
                    status.bytes = i64::try_from(bytes).ok();
                    status.duration_seconds = Some(duration_seconds);
                    if let Some(u) = until {
                        let (incrementals_count, gaps_count) = (u.incrementals_total(), u.gaps_crossed_total());
                        if gaps_count > 0 {
                            let more = gaps_count.saturating_sub(u.gaps_crossed.len() as u64);
                            events.push(EventNote {
                                warning: true,
                                reason: "GapsCrossed",
                                message: format!(
                                    "restored across {gaps_count} gap(s) in the binary-log archive (spec.pointInTime.force): \
                                     their transactions are missing: {}{}",
                                    u.gaps_crossed.join("; "),
                                    if more > 0 { format!("; and {more} more") } else { String::new() }
                                ),
                            });
                        }
                        status.replayed = Some(crate::crd::ReplayedStatus {
                            transactions: u.transactions as i64,
                            incrementals: u.incrementals,
                            incrementals_count: incrementals_count as i64,
                            archive: u.archive,
                            segments: u.segments as i64,
                            gaps_crossed: u.gaps_crossed,
                            gaps_crossed_count: gaps_count as i64,
                        });
                    }
                    status.completion_time =
                        job.status.as_ref().and_then(|s| s.completion_time.clone()).or(Some(o.now.clone()));
                    let message = format!(
                        "backup {backup_id} restored into PersistentVolumeClaim {}",
                        status.persistent_volume_claim.clone().unwrap_or_default()
                    );
                    status::set(&mut status.conditions, COMPLETE, true, "Restored", &message, generation, &o.now);
                    events.push(EventNote { warning: false, reason: "Restored", message });
                    done(status, events)
                }
                Some(Err(e)) => fail(status, "SummaryUnreadable", format!("the agent's summary cannot be read: {e}")),
                Some(Ok(s)) => fail(
                    status,
                    "SummaryUnreadable",
                    format!("the agent's summary is not a restore's: {}", s.operation()),
                ),
                None => fail(status, "SummaryUnreadable", "the agent left no summary".into()),
            },
        };
    }

    // A Job was created and is gone: the target may hold part of a restore, or a server already using
    // it. Restoring again (with `overwrite`, wiping it) is the user's call, never ours.
    if let Some(job) = old.job_name.as_deref() {
        let claim = old.persistent_volume_claim.clone().unwrap_or_else(|| restore_target_claim(r));
        let consequence = format!(
            "PersistentVolumeClaim {claim} may hold a partial restore or a server already using it; check it, then create a new MySQLRestore to restore again"
        );
        let event = status::mark_job_lost(&mut status, job, &consequence, generation, &o.now);
        return Decision { claim: None, job: None, status, events: vec![event], requeue: None };
    }

    if name.len() > 63 {
        let message = format!(
            "metadata.name {name:?} is {} characters; a MySQLRestore's name can have at most 63 (it labels its Job)",
            name.len()
        );
        return fail(status, "InvalidSpec", message);
    }

    // Which backup, from where, prepared with which image.
    let source = &r.spec.source;
    let (storage, backup_id, database_image) = match (&source.backup, &source.storage) {
        (Some(backup_name), _) => {
            let Some(backup) = o.backup else {
                return blocked(
                    status,
                    "BackupNotFound",
                    format!("MySQLBackup {backup_name} (spec.source.backup) not found"),
                );
            };
            let bs = backup.status.clone().unwrap_or_default();
            match bs.phase {
                Some(Phase::Complete) => {}
                Some(Phase::Failed) => {
                    return fail(
                        status,
                        "BackupFailed",
                        format!("MySQLBackup {backup_name} failed; restore another backup"),
                    );
                }
                other => {
                    let phase = other.map(|p| format!("{p:?}")).unwrap_or_else(|| "new".into());
                    return blocked(
                        status,
                        "BackupNotComplete",
                        format!("MySQLBackup {backup_name} is not complete yet ({phase})"),
                    );
                }
            }
            let image = match bs.method.as_deref() {
                // Prepared by mariadb-backup, which comes with the database's image.
                Some("mariabackup" | "myrocks") => r.spec.image.clone().or(bs.database_image.clone()),
                _ if r.spec.point_in_time.is_some() => r.spec.image.clone().or(bs.database_image.clone()),
                _ => r.spec.image.clone(),
            };
            (backup.spec.storage.clone(), bs.backup_id.clone().unwrap_or_else(|| "latest".into()), image)
        }
        (None, Some(storage)) => {
            (storage.clone(), source.backup_id.clone().unwrap_or_else(|| "latest".into()), r.spec.image.clone())
        }
        (None, None) => return fail(status, "InvalidSpec", "set spec.source.backup or spec.source.storage".into()),
    };
    let at = if r.spec.source.backup.is_some() { "the MySQLBackup's spec.storage" } else { "spec.source.storage" };
    if let Some(missing) = storage.missing_secret(at, o.secrets) {
        return blocked(status, "SecretNotFound", missing);
    }

    // The target claim: an existing one must exist; a template is created.
    let mut claim_to_create = None;
    let claim_name = match (&r.spec.target.persistent_volume_claim, restore_claim(r)) {
        (Some(existing), _) => {
            if o.claim.is_none() {
                return blocked(
                    status,
                    "ClaimNotFound",
                    format!("PersistentVolumeClaim {existing} (spec.target.persistentVolumeClaim) not found"),
                );
            }
            existing.clone()
        }
        (None, Ok(Some(claim))) => {
            if o.claim.is_none() {
                claim_to_create = Some(claim);
            }
            restore_target_claim(r)
        }
        (None, Ok(None)) => {
            return fail(
                status,
                "InvalidSpec",
                "set spec.target.persistentVolumeClaim or spec.target.volumeClaimTemplate".into(),
            );
        }
        (None, Err(e)) => return blocked(status, "MissingMetadata", e.to_string()),
    };
    if r.spec.point_in_time.is_some() && database_image.is_none() {
        return fail(
            status,
            "InvalidSpec",
            "spec.pointInTime replays binary logs with the server's own tools: set spec.image to the database image"
                .into(),
        );
    }
    let plan = RestorePlan { storage: &storage, backup_id, database_image, claim: claim_name.clone() };
    match restore_job(r, &plan, o.operator_image) {
        Ok(job) => {
            status.phase = Some(Phase::Pending);
            status.job_name = job.metadata.name.clone();
            status.persistent_volume_claim = Some(claim_name.clone());
            status::set(&mut status.conditions, BLOCKED, false, "JobCreated", "", generation, &o.now);
            events.push(EventNote {
                warning: false,
                reason: "JobCreated",
                message: format!(
                    "created Job {} to restore into {claim_name}",
                    job.metadata.name.clone().unwrap_or_default()
                ),
            });
            Decision { claim: claim_to_create, job: Some(job), status, events, requeue: None }
        }
        Err(e) => blocked(status, "MissingMetadata", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::status::FAILED;

    const RESTORE: &str = include_str!("../../../tests/fixtures/mysqlrestore.yaml");

    const BACKUP: &str = r#"
apiVersion: mysqlbackup.dev/v1alpha1
kind: MySQLBackup
metadata: {name: nightly-1, namespace: db, uid: b-1}
spec:
  source: {pod: db-0}
  storage: {url: "s3://backups/prod", credentialsSecret: s3-creds}
status: {phase: Complete, method: mariabackup, backupId: 20261122T020001Z-00abcd, databaseImage: "mariadb:10.11"}
"#;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn secrets() -> BTreeMap<String, BTreeSet<String>> {
        BTreeMap::from([("s3-creds".to_string(), BTreeSet::new())])
    }

    fn run(
        restore: &MySQLRestore,
        backup: Option<&MySQLBackup>,
        claim: Option<&PersistentVolumeClaim>,
        job: Option<&Job>,
        message: Option<&str>,
    ) -> Decision {
        let secrets = secrets();
        decide(&Observed {
            restore,
            backup,
            claim,
            job,
            agent_message: message,
            secrets: &secrets,
            operator_image: "op:1",
            now: Time(k8s_openapi::jiff::Timestamp::from_second(1_795_000_000).unwrap()),
        })
    }

    fn message(d: &Decision, t: &str) -> String {
        d.status
            .conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
            .map(|c| c.message.clone())
            .unwrap_or_default()
    }

    #[test]
    fn a_restore_of_a_complete_backup_creates_the_claim_and_the_job() {
        let d = run(&parse(RESTORE), Some(&parse(BACKUP)), None, None, None);
        assert_eq!(d.claim.as_ref().and_then(|c| c.metadata.name.as_deref()), Some("restore-r1"));
        let job = d.job.expect("a Job");
        let agent = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(agent.image.as_deref(), Some("mariadb:10.11"), "prepared in the database image the backup recorded");
        assert!(agent.args.as_ref().unwrap().contains(&"--backup=20261122T020001Z-00abcd".to_string()));
        for (method, image) in [("myrocks", "mariadb:10.11"), ("cold", "op:1")] {
            let backup = BACKUP.replace("method: mariabackup", &format!("method: {method}"));
            let job = run(&parse(RESTORE), Some(&parse(&backup)), None, None, None).job.unwrap();
            let agent = &job.spec.unwrap().template.spec.unwrap().containers[0];
            assert_eq!(agent.image.as_deref(), Some(image), "a {method} backup");
        }
        assert_eq!(d.status.persistent_volume_claim.as_deref(), Some("restore-r1"));
        assert_eq!(d.status.phase, Some(Phase::Pending));
        // Once the claim exists it is not created again.
        let claim = d.claim.clone().unwrap();
        assert!(run(&parse(RESTORE), Some(&parse(BACKUP)), Some(&claim), None, None).claim.is_none());
    }

    #[test]
    fn a_status_read_from_a_stale_cache_keeps_the_claim_once_the_job_exists() {
        // The watch can deliver the Job's change before the status that named the claim: the status
        // rebuilt from it still names the claim, which a server-side apply would otherwise drop.
        let job: Job = parse("{metadata: {name: restore-r1}, status: {active: 1}}");
        let d = run(&parse(RESTORE), Some(&parse(BACKUP)), None, Some(&job), None);
        assert_eq!(d.status.phase, Some(Phase::Running));
        assert_eq!(d.status.persistent_volume_claim.as_deref(), Some("restore-r1"));
        let existing = RESTORE.replace(
            "target: {volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
            "target: {persistentVolumeClaim: data-copy}",
        );
        assert_ne!(existing, RESTORE);
        let d = run(&parse(&existing), Some(&parse(BACKUP)), None, Some(&job), None);
        assert_eq!(d.status.persistent_volume_claim.as_deref(), Some("data-copy"));
    }

    #[test]
    fn a_job_gone_before_its_outcome_was_read_fails_and_never_restores_again() {
        let mut restore: MySQLRestore = parse(RESTORE);
        restore.status = Some(parse("{phase: Running, jobName: restore-r1, persistentVolumeClaim: restore-r1}"));
        let d = run(&restore, Some(&parse(BACKUP)), None, None, None);
        assert!(d.job.is_none() && d.claim.is_none(), "nothing is created again");
        assert_eq!(d.status.phase, Some(Phase::Failed));
        let expected = "Job restore-r1 is gone and its outcome was never read (deleted by hand, or by its TTL while the controller was down); it is not run again: PersistentVolumeClaim restore-r1 may hold a partial restore or a server already using it; check it, then create a new MySQLRestore to restore again";
        assert_eq!(message(&d, FAILED), expected);
        assert_eq!(d.events.len(), 1);
        assert_eq!(
            (d.events[0].warning, d.events[0].reason, d.events[0].message.as_str()),
            (true, "JobLost", expected)
        );
        // Once failed it stays so: the next reconcile does nothing.
        let mut failed = restore.clone();
        failed.status = Some(d.status.clone());
        let again = run(&failed, Some(&parse(BACKUP)), None, None, None);
        assert!(again.job.is_none() && again.events.is_empty());
    }

    #[test]
    fn the_backup_must_exist_and_be_complete() {
        let d = run(&parse(RESTORE), None, None, None, None);
        assert_eq!(message(&d, BLOCKED), "MySQLBackup nightly-1 (spec.source.backup) not found");
        assert_eq!(d.requeue, Some(BLOCKED_RETRY));
        let running = BACKUP.replace("phase: Complete", "phase: Running");
        let d = run(&parse(RESTORE), Some(&parse(&running)), None, None, None);
        assert_eq!(message(&d, BLOCKED), "MySQLBackup nightly-1 is not complete yet (Running)");
        let failed = BACKUP.replace("phase: Complete", "phase: Failed");
        let d = run(&parse(RESTORE), Some(&parse(&failed)), None, None, None);
        assert_eq!(message(&d, FAILED), "MySQLBackup nightly-1 failed; restore another backup");
        assert!(d.job.is_none() && d.claim.is_none());
    }

    #[test]
    fn a_name_too_long_for_a_label_fails() {
        let long = RESTORE.replace("name: r1,", &format!("name: {},", "r".repeat(64)));
        let d = run(&parse(&long), Some(&parse(BACKUP)), None, None, None);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert!(
            message(&d, FAILED)
                .ends_with("is 64 characters; a MySQLRestore's name can have at most 63 (it labels its Job)")
        );
        assert!(d.job.is_none() && d.claim.is_none());
    }

    #[test]
    fn a_point_in_time_replays_in_the_database_image() {
        let pit = RESTORE.replace("  securityContext:", "  pointInTime: {gtid: 0-1-4242}\n  securityContext:");
        let d = run(&parse(&pit), Some(&parse(BACKUP)), None, None, None);
        let agent = d.job.unwrap().spec.unwrap().template.spec.unwrap().containers[0].clone();
        assert_eq!(agent.image.as_deref(), Some("mariadb:10.11"));
        let args = agent.args.unwrap();
        assert!(
            args.contains(&"--until=0-1-4242".to_string()) && !args.iter().any(|a| a.starts_with("--backup=")),
            "{args:?}"
        );
        // Archive and force reach the agent.
        let forced = pit.replace("{gtid: 0-1-4242}", "{gtid: 0-1-4242, archive: db.nightly, force: true}");
        let d = run(&parse(&forced), Some(&parse(BACKUP)), None, None, None);
        let args = d.job.unwrap().spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(
            args.contains(&"--archive=db.nightly".to_string()) && args.contains(&"--force".to_string()),
            "{args:?}"
        );
        // What was replayed becomes the status; crossed gaps a Warning.
        let job: Job = parse(
            "{metadata: {name: restore-r1}, status: {completionTime: '2026-11-22T03:00:00Z', conditions: [{type: Complete, status: 'True'}]}}",
        );
        // A point-in-time restore's summary as the agent writes it (the contract's fixture).
        let summary = include_str!("../../../tests/fixtures/agent-summaries-0.1.0.jsonl")
            .lines()
            .find(|l| l.contains(r#""until":"#))
            .unwrap();
        let d = run(&parse(&forced), Some(&parse(BACKUP)), None, Some(&job), Some(summary));
        let replayed = d.status.replayed.clone().unwrap();
        assert_eq!((replayed.transactions, replayed.segments, replayed.archive.as_deref()), (8, 3, Some("db.nightly")));
        let warning = d.events.iter().find(|e| e.reason == "GapsCrossed").expect("a Warning for the crossed gap");
        assert_eq!(
            warning.message,
            "restored across 1 gap(s) in the binary-log archive (spec.pointInTime.force): their transactions are \
             missing: gap before segment 7: the data of segment 6 is missing"
        );
        // From storage alone, the image must be given.
        let from_storage =
            pit.replace("source: {backup: nightly-1}", "source: {storage: {url: \"s3://backups/prod\"}}");
        let d = run(&parse(&from_storage), None, None, None, None);
        assert_eq!(
            message(&d, FAILED),
            "spec.pointInTime replays binary logs with the server's own tools: set spec.image to the database image"
        );
    }

    #[test]
    fn a_point_in_time_restore_across_700_incrementals_completes() {
        // A */15 binary-log schedule between weekly fulls: ~670 incrementals before the next full.
        let until = crate::format::summary::PitrSummary::new(
            "GTID 0-1-90000".into(),
            (0..700).map(|n| format!("20261130T{n:06}Z-{n:06x}")),
            700,
            None,
            0,
            std::iter::empty(),
            90_000,
        );
        let fixture = include_str!("../../../tests/fixtures/agent-summaries-0.1.0.jsonl")
            .lines()
            .find(|l| l.contains(r#""until":"#))
            .unwrap();
        let mut summary: serde_json::Value = serde_json::from_str(fixture).unwrap();
        summary["until"] = serde_json::to_value(&until).unwrap();
        let message = summary.to_string();
        assert!(message.len() < 4096, "{} bytes", message.len());
        let job: Job = parse(
            "{metadata: {name: restore-r1}, status: {completionTime: '2026-11-22T03:00:00Z', conditions: [{type: Complete, status: 'True'}]}}",
        );
        let d = run(&parse(RESTORE), Some(&parse(BACKUP)), None, Some(&job), Some(&message));
        assert_eq!(d.status.phase, Some(Phase::Complete), "{:?}", d.status.conditions);
        let replayed = d.status.replayed.unwrap();
        assert_eq!(
            (replayed.incrementals_count, replayed.incrementals.len(), replayed.transactions),
            (700, 20, 90_000)
        );
        assert_eq!(replayed.incrementals[0], "20261130T000000Z-000000");
    }

    #[test]
    fn an_existing_claim_must_exist() {
        let existing = RESTORE.replace(
            "target: {volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
            "target: {persistentVolumeClaim: data-db-1, overwrite: true}",
        );
        let d = run(&parse(&existing), Some(&parse(BACKUP)), None, None, None);
        assert_eq!(
            message(&d, BLOCKED),
            "PersistentVolumeClaim data-db-1 (spec.target.persistentVolumeClaim) not found"
        );
        let claim: PersistentVolumeClaim = parse("{metadata: {name: data-db-1}}");
        let d = run(&parse(&existing), Some(&parse(BACKUP)), Some(&claim), None, None);
        assert!(d.claim.is_none(), "an existing claim is never re-created");
        let args = d.job.unwrap().spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.contains(&"--overwrite".to_string()));
    }

    #[test]
    fn finished_jobs_complete_or_fail_the_restore() {
        let job: Job = parse(
            "{metadata: {name: restore-r1}, status: {completionTime: '2026-11-22T03:00:00Z', conditions: [{type: Complete, status: 'True'}]}}",
        );
        let summary = r#"{"operation":"restore","backupId":"20261122T020001Z-00abcd","storage":"s3://backups/prod","datadir":"/var/lib/mysql-restore","method":"mariabackup","positions":{"flavor":"mariadb","gtid":{"flavor":"mariadb","binlogPos":"0-1-42"}},"files":3,"bytes":1000,"transferSeconds":1.0,"prepareSeconds":0.5,"durationSeconds":1.5,"peakRssBytes":1}"#;
        let d = run(&parse(RESTORE), Some(&parse(BACKUP)), None, Some(&job), Some(summary));
        assert_eq!(d.status.phase, Some(Phase::Complete));
        assert_eq!(d.status.positions.as_ref().unwrap().gtid_executed.as_deref(), Some("0-1-42"));
        assert_eq!((d.status.bytes, d.status.duration_seconds), (Some(1000), Some(1.5)));
        let failed: Job = parse(
            "{metadata: {name: restore-r1}, status: {conditions: [{type: Failed, status: 'True', message: backoff}]}}",
        );
        let refusal = r#"{"error":"target /var/lib/mysql-restore is not empty (1 entries, e.g. \"ibdata1\"); restore into an empty directory or pass --overwrite to replace its contents"}"#;
        let d = run(&parse(RESTORE), Some(&parse(BACKUP)), None, Some(&failed), Some(refusal));
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert!(
            message(&d, FAILED).starts_with("target /var/lib/mysql-restore is not empty"),
            "{}",
            message(&d, FAILED)
        );
    }
}
