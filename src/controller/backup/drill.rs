//! Restore drills of a complete MySQLBackup: the drill Job a schedule starts for it (built here, owned
//! by the backup so its changes reach the backup's reconcile), and what the backup's status says of it —
//! `status.drill` and condition `Drilled`, read from the Job and the agent's summary.

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Container, EmptyDirVolumeSource, PodSecurityContext, PodSpec, Volume, VolumeMount},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use crate::controller::backup::decide::EventNote;
use crate::controller::build::{
    AGENT_DIR, BuildError, SCRATCH_DIR, agent_job_spec, agent_runtime, child_name, credentials_env, install_container,
    labels, name_and_namespace, owner_reference, scratch_volume, storage_args,
};
use crate::controller::job_outcome::{JobOutcome, job_outcome};
use crate::controller::status;
use crate::crd::{DrillSpec, DrillStatus, MySQLBackup, MySQLBackupStatus, Phase};
use crate::format::summary::Summary;

/// Condition: the backup's last drill passed (False with the reason when it failed).
pub const DRILLED: &str = "Drilled";

/// Annotation a schedule puts on a MySQLBackup when it starts a drill of it: the drill Job's name. The
/// backup's reconcile reads that Job until its outcome is in `status.drill`, and reads nothing otherwise.
pub const DRILL_ANNOTATION: &str = "mysqlbackup.dev/drill-job";

/// The drill Job whose outcome `backup`'s status still lacks, if any.
pub fn pending_drill(backup: &MySQLBackup) -> Option<&str> {
    let job = backup.metadata.annotations.as_ref()?.get(DRILL_ANNOTATION)?;
    let recorded = backup.status.as_ref().and_then(|s| s.drill.as_ref()).filter(|d| &d.job == job);
    match recorded {
        Some(d) if matches!(d.phase, Phase::Complete | Phase::Failed) => None,
        _ => Some(job.as_str()),
    }
}

/// The name of `backup`'s drill Job.
pub fn drill_job_name(backup: &str) -> String {
    child_name("drill", backup)
}

/// Builds the drill Job of `backup` (complete, with its id and database image in its status), as its
/// schedule's `spec` says: the database image (it starts `mariadbd`) with the agent copied in, on any
/// node, restoring into the scratch volume; run as `security_context` (the source pod's) when given.
pub fn drill_job(
    backup: &MySQLBackup,
    spec: &DrillSpec,
    security_context: Option<PodSecurityContext>,
    operator_image: &str,
) -> Result<Job, BuildError> {
    let (name, namespace) = name_and_namespace(backup)?;
    let st = backup.status.as_ref();
    let backup_id = st.and_then(|s| s.backup_id.clone()).ok_or(BuildError::MissingStatus("backupId"))?;
    let image = st.and_then(|s| s.database_image.clone()).ok_or(BuildError::MissingStatus("databaseImage"))?;
    let mut args = vec![
        "agent".to_string(),
        "drill".into(),
        format!("--backup={backup_id}"),
        format!("--scratch={SCRATCH_DIR}"),
        format!("--parallel={}", backup.spec.storage.parallelism),
        "--summary-file=/dev/termination-log".into(),
        "--log-format=json".into(),
    ];
    let (scratch, scratch_mount, tmpdir) = scratch_volume(Some(&spec.scratch));
    let mut volumes = vec![
        scratch,
        Volume { name: "agent".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    let mut mounts =
        vec![scratch_mount, VolumeMount { name: "agent".into(), mount_path: AGENT_DIR.into(), ..Default::default() }];
    storage_args(&backup.spec.storage, &mut args, &mut volumes, &mut mounts);
    let (image, command) = agent_runtime(true, &image, operator_image);
    let agent = Container {
        name: "agent".into(),
        image: Some(image),
        command: Some(vec![command]),
        args: Some(args),
        env_from: credentials_env(&backup.spec.storage),
        env: Some(vec![tmpdir]),
        volume_mounts: Some(mounts),
        resources: spec.resources.clone(),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let job_labels = labels("drill", &name);
    // A failed drill is a finding, not a fluke to retry; a day's deadline bounds a stuck one.
    let options = crate::crd::JobOptions {
        backoff_limit: Some(0),
        active_deadline_seconds: backup.spec.job.active_deadline_seconds.or(Some(24 * 3600)),
        ttl_seconds_after_finished: None,
        resources: None,
    };
    let mut job_spec = agent_job_spec(
        &options,
        job_labels.clone(),
        PodSpec {
            security_context,
            init_containers: Some(vec![install_container(operator_image)]),
            containers: vec![agent],
            volumes: Some(volumes),
            ..Default::default()
        },
    );
    // Kept as long as the backup: its outcome is read from it.
    job_spec.ttl_seconds_after_finished = None;
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(drill_job_name(&name)),
            namespace: Some(namespace),
            labels: Some(job_labels),
            owner_references: Some(vec![owner_reference(backup)?]),
            ..Default::default()
        },
        spec: Some(job_spec),
        ..Default::default()
    })
}

/// Updates `status.drill` and condition `Drilled` from the drill Job and its agent's `message`; returns
/// the Event of a drill that has just finished.
pub fn observe_drill(
    job: &Job,
    message: Option<&str>,
    status: &mut MySQLBackupStatus,
    generation: Option<i64>,
    now: &Time,
) -> Option<EventNote> {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let was = status.drill.as_ref().filter(|d| d.job == job_name).map(|d| d.phase);
    let mut drill = DrillStatus::running(&job_name);
    let finished_at = job.status.as_ref().and_then(|s| s.completion_time.clone()).unwrap_or_else(|| now.clone());
    let event = match job_outcome(job, message) {
        JobOutcome::Running => None,
        JobOutcome::Succeeded(message) => match message.as_deref().map(Summary::parse) {
            Some(Ok(Summary::Drill { outcome, .. })) => {
                drill.phase = Phase::Complete;
                drill.completion_time = Some(Time(outcome.completed_at));
                drill.tables_checked = Some(outcome.tables_checked as i64);
                drill.rows = Some(outcome.rows as i64);
                drill.server_version = outcome.server_version.clone();
                drill.duration_seconds = Some(outcome.durations.total_seconds);
                drill.scratch_bytes = Some(outcome.scratch_bytes as i64);
                let text = format!(
                    "drill passed: a {} server started on the restored backup and {} table(s), {} row(s) checked",
                    outcome.server_version.unwrap_or_default(),
                    outcome.tables_checked,
                    outcome.rows
                );
                status::set(&mut status.conditions, DRILLED, true, "DrillPassed", &text, generation, now);
                Some(EventNote { warning: false, reason: "DrillPassed", message: text })
            }
            other => {
                let why = match other {
                    Some(Err(e)) => format!("the drill's summary cannot be read: {e}"),
                    Some(Ok(s)) => format!("the drill's summary is not a drill's: {}", s.operation()),
                    None => "the drill left no summary".to_string(),
                };
                Some(fail(&mut drill, status, why, finished_at, generation, now))
            }
        },
        JobOutcome::Failed(reason) => Some(fail(&mut drill, status, reason, finished_at, generation, now)),
    };
    status.drill = Some(drill);
    // Only the transition is news.
    event.filter(|_| was.is_none_or(|p| p == Phase::Running))
}

/// Records that `job`, the drill the backup is marked with, no longer exists (deleted by hand, or its
/// namespace's quota refused it): the drill failed, and it is not read again.
pub fn drill_job_gone(job: &str, status: &mut MySQLBackupStatus, generation: Option<i64>, now: &Time) -> EventNote {
    let mut drill = DrillStatus::running(job);
    let note = fail(&mut drill, status, format!("the drill Job {job} is gone"), now.clone(), generation, now);
    status.drill = Some(drill);
    note
}

fn fail(
    drill: &mut DrillStatus,
    status: &mut MySQLBackupStatus,
    reason: String,
    at: Time,
    generation: Option<i64>,
    now: &Time,
) -> EventNote {
    drill.phase = Phase::Failed;
    drill.completion_time = Some(at);
    drill.reason = Some(reason.clone());
    let text = format!("drill failed: {reason}");
    status::set(&mut status.conditions, DRILLED, false, "DrillFailed", &text, generation, now);
    EventNote { warning: true, reason: "DrillFailed", message: text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::parse;

    const BACKUP: &str = r#"
apiVersion: mysqlbackup.dev/v1alpha1
kind: MySQLBackup
metadata: {name: nightly-1, namespace: db, uid: 1234-abcd}
spec:
  source: {pod: db-0}
  storage: {url: s3://backups/prod, credentialsSecret: s3-creds}
status:
  phase: Complete
  backupId: 20261122T020001Z-00abcd
  databaseImage: mariadb:10.11
"#;

    const SPEC: &str = r#"
scratch:
  volumeClaimTemplate:
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 20Gi}}, storageClassName: fast}
resources: {limits: {memory: 2Gi}}
"#;

    fn job(conditions: &str) -> Job {
        parse(&format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: drill-nightly-1, namespace: db}}\nstatus: {{completionTime: \
             \"2026-11-22T03:00:00Z\", conditions: [{conditions}]}}"
        ))
    }

    fn now() -> Time {
        Time("2026-11-22T03:00:05Z".parse().unwrap())
    }

    #[test]
    fn the_drill_job_runs_the_database_image_on_any_node_with_its_scratch_claim() {
        let backup: MySQLBackup = parse(BACKUP);
        let spec: DrillSpec = parse(SPEC);
        let job = drill_job(&backup, &spec, None, "op:1").unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("drill-nightly-1"));
        assert_eq!(job.metadata.owner_references.as_ref().unwrap()[0].name, "nightly-1");
        let js = job.spec.as_ref().unwrap();
        assert_eq!((js.backoff_limit, js.ttl_seconds_after_finished), (Some(0), None));
        let pod = js.template.spec.as_ref().unwrap();
        assert!(pod.affinity.is_none(), "not pinned to the database node");
        let agent = &pod.containers[0];
        assert_eq!(agent.image.as_deref(), Some("mariadb:10.11"));
        assert_eq!(
            agent.args.as_ref().unwrap(),
            &[
                "agent",
                "drill",
                "--backup=20261122T020001Z-00abcd",
                "--scratch=/var/lib/mysql-backup-operator-scratch",
                "--parallel=2",
                "--summary-file=/dev/termination-log",
                "--log-format=json",
                "--storage=s3://backups/prod",
            ]
        );
        assert_eq!(agent.env.as_ref().unwrap()[0].value.as_deref(), Some(SCRATCH_DIR));
        let scratch = &pod.volumes.as_ref().unwrap()[0];
        let claim = scratch.ephemeral.as_ref().unwrap().volume_claim_template.as_ref().unwrap();
        assert_eq!(claim.spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(agent.resources, spec.resources);

        let plain = drill_job(&backup, &parse("scratch: {sizeLimit: 5Gi}"), None, "op:1").unwrap();
        let volume = &plain.spec.unwrap().template.spec.unwrap().volumes.unwrap()[0];
        assert_eq!(volume.empty_dir.as_ref().unwrap().size_limit.as_ref().unwrap().0, "5Gi");

        let pending: MySQLBackup = parse(&BACKUP.replace("  databaseImage: mariadb:10.11\n", ""));
        assert_eq!(
            drill_job(&pending, &spec, None, "op:1").unwrap_err().to_string(),
            "the MySQLBackup has no status.databaseImage yet"
        );
    }

    #[test]
    fn a_backup_reads_its_drill_job_only_until_the_outcome_is_recorded() {
        let mut b: MySQLBackup = parse(BACKUP);
        assert_eq!(pending_drill(&b), None, "never drilled: nothing to read");
        b.metadata.annotations = Some([(DRILL_ANNOTATION.to_string(), "drill-nightly-1".to_string())].into());
        assert_eq!(pending_drill(&b), Some("drill-nightly-1"));
        let mut status = b.status.clone().unwrap();
        observe_drill(&job(""), None, &mut status, Some(1), &now());
        b.status = Some(status.clone());
        assert_eq!(pending_drill(&b), Some("drill-nightly-1"), "running");
        observe_drill(&job(r#"{type: Failed, status: "True"}"#), None, &mut status, Some(1), &now());
        b.status = Some(status);
        assert_eq!(pending_drill(&b), None, "recorded");
    }

    #[test]
    fn a_drill_job_that_is_gone_is_a_failed_drill() {
        let mut status = MySQLBackupStatus::default();
        let note = drill_job_gone("drill-nightly-1", &mut status, Some(1), &now());
        assert_eq!(
            (note.warning, note.message.as_str()),
            (true, "drill failed: the drill Job drill-nightly-1 is gone")
        );
        assert_eq!(status.drill.unwrap().phase, Phase::Failed);
    }

    #[test]
    fn a_passed_drill_sets_the_condition_once() {
        let summary = r#"{"operation":"drill","storage":"s3://backups/prod","backupId":"20261122T020001Z-00abcd",
          "passed":true,"startedAt":"2026-11-22T02:58:00Z","completedAt":"2026-11-22T03:00:00Z",
          "serverVersion":"10.11.14-MariaDB","tablesChecked":42,"engines":{"InnoDB":40,"Aria":2},"rows":1000,
          "scratchBytes":1048576,"durations":{"totalSeconds":120.5}}"#;
        let mut status = MySQLBackupStatus::default();
        let done = job(r#"{type: Complete, status: "True"}"#);
        let event = observe_drill(&done, Some(summary), &mut status, Some(1), &now()).unwrap();
        assert_eq!(event.reason, "DrillPassed");
        let drill = status.drill.clone().unwrap();
        assert_eq!((drill.phase, drill.tables_checked, drill.rows), (Phase::Complete, Some(42), Some(1000)));
        let c = status.conditions.iter().find(|c| c.type_ == DRILLED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "DrillPassed"));
        assert!(observe_drill(&done, Some(summary), &mut status, Some(1), &now()).is_none(), "no second Event");
    }

    #[test]
    fn a_failed_drill_is_a_warning_with_the_agents_reason() {
        let mut status = MySQLBackupStatus::default();
        let running = job("");
        assert!(observe_drill(&running, None, &mut status, Some(1), &now()).is_none());
        assert_eq!(status.drill.as_ref().unwrap().phase, Phase::Running);
        let failed = job(r#"{type: Failed, status: "True", message: "BackoffLimitExceeded"}"#);
        let message = r#"{"error":"drill of backup 20261122T020001Z-00abcd failed: CHECK TABLE app.s: Corrupt"}"#;
        let event = observe_drill(&failed, Some(message), &mut status, Some(1), &now()).unwrap();
        assert!(event.warning);
        assert_eq!(
            event.message,
            "drill failed: drill of backup 20261122T020001Z-00abcd failed: CHECK TABLE app.s: Corrupt"
        );
        let c = status.conditions.iter().find(|c| c.type_ == DRILLED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "DrillFailed"));
        assert_eq!(
            status.drill.unwrap().reason.unwrap(),
            "drill of backup 20261122T020001Z-00abcd failed: CHECK TABLE app.s: Corrupt"
        );
    }
}
