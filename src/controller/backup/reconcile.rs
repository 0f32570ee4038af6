//! The reconciles of a MySQLBackup against the API: observe its source pod, Job and Secrets, decide
//! (pure, in [`super::decide`] and [`super::deletion`]), apply the Job, write the status and publish Events.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{Api, ResourceExt, runtime::controller::Action};

use crate::controller::apply::{apply_job, delete_if_present, set_finalizers, without_ours};
use crate::controller::backup::decide::{Decision, Observed};
use crate::controller::backup::drill::pending_drill;
use crate::controller::backup::{decide, deletion};
use crate::controller::build;
use crate::controller::context::{Context, ReconcileError};
use crate::controller::observe::{finished_job_message, observe_err, secret_keys};
use crate::controller::status::{apply_status, is_finished, next_action, publish};
use crate::crd::MySQLBackup;

/// Reconciles a MySQLBackup being deleted: see [`deletion`].
pub(crate) async fn reconcile_deletion(
    backup: Arc<MySQLBackup>,
    ctx: Arc<Context>,
    ns: &str,
) -> Result<Action, ReconcileError> {
    let name = backup.name_any();
    let client = &ctx.client;
    let api: Api<MySQLBackup> = Api::namespaced(client.clone(), ns);
    if !deletion::has_finalizer(&backup) {
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), ns);
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let backup_job_name = build::child_name("backup", &name);
    let backup_job = jobs_api.get_opt(&backup_job_name).await.map_err(observe_err(format!("Job {backup_job_name}")))?;
    let backup_message = finished_job_message(&pods, backup_job.as_ref()).await?;
    let cleanup_job_name = build::child_name("cleanup", &name);
    let cleanup_job =
        jobs_api.get_opt(&cleanup_job_name).await.map_err(observe_err(format!("Job {cleanup_job_name}")))?;
    let cleanup_message = finished_job_message(&pods, cleanup_job.as_ref()).await?;
    let pod =
        pods.get_opt(&backup.spec.source.pod).await.map_err(observe_err(format!("pod {}", backup.spec.source.pod)))?;
    let secrets = secret_keys(&secrets_api, backup.spec.storage.secret_names()).await?;

    let d = deletion::decide(&deletion::Observed {
        backup: &backup,
        backup_job: backup_job.as_ref(),
        backup_message: backup_message.as_deref(),
        cleanup_job: cleanup_job.as_ref(),
        cleanup_message: cleanup_message.as_deref(),
        pod_security_context: pod.as_ref().and_then(|p| p.spec.as_ref()).and_then(|s| s.security_context.as_ref()),
        secrets: &secrets,
        operator_image: &ctx.operator_image,
        now: Time(k8s_openapi::jiff::Timestamp::now()),
    });

    for job in &d.delete_jobs {
        delete_if_present(&jobs_api, job)
            .await
            .map_err(|source| ReconcileError::DeleteJob { job: job.clone(), source })?;
    }
    if let Some(job) = &d.job {
        apply_job(&jobs_api, job).await?;
    }
    publish(&ctx, &*backup, d.events).await;
    if d.remove_finalizer {
        // The object goes now: its status no longer matters.
        set_finalizers(&api, &backup, without_ours(&backup)).await?;
        return Ok(Action::await_change());
    }
    apply_status(&api, &*backup, backup.status.as_ref(), &d.status).await?;
    Ok(d.requeue.map(Action::requeue).unwrap_or_else(Action::await_change))
}

/// Reconciles one MySQLBackup.
#[tracing::instrument(skip_all, fields(namespace = backup.namespace().unwrap_or_default(), name = backup.name_any()))]
pub async fn reconcile_backup(backup: Arc<MySQLBackup>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (name, ns) = ReconcileError::name_and_namespace(backup.as_ref())?;
    if backup.metadata.deletion_timestamp.is_some() {
        return reconcile_deletion(backup, ctx, &ns).await;
    }
    let client = &ctx.client;
    if deletion::needs_finalizer(&backup) {
        // Before any Job: data is never stored without the finalizer that deletes it.
        let api: Api<MySQLBackup> = Api::namespaced(client.clone(), &ns);
        let mut finalizers = backup.finalizers().to_vec();
        finalizers.push(deletion::FINALIZER.to_string());
        set_finalizers(&api, &backup, finalizers).await?;
        // The change comes back through the watch, with the new resourceVersion.
        return Ok(Action::await_change());
    }
    if deletion::finalizer_is_stale(&backup) {
        let api: Api<MySQLBackup> = Api::namespaced(client.clone(), &ns);
        set_finalizers(&api, &backup, without_ours(&backup)).await?;
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // Observe. A finished backup needs nothing but its own status, and its drill Job while one runs.
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    let (drill_job, drill_message) = if let Some(drill_name) = pending_drill(&backup) {
        let job = jobs_api.get_opt(drill_name).await.map_err(observe_err(format!("Job {drill_name}")))?;
        let message = finished_job_message(&pods, job.as_ref()).await?;
        (job, message)
    } else {
        (None, None)
    };
    let (pod, job, message, secrets) = if is_finished(phase) {
        (None, None, None, BTreeMap::new())
    } else {
        let pod = pods
            .get_opt(&backup.spec.source.pod)
            .await
            .map_err(observe_err(format!("pod {}", backup.spec.source.pod)))?;
        let job_name = build::child_name("backup", &name);
        let job = jobs_api.get_opt(&job_name).await.map_err(observe_err(format!("Job {job_name}")))?;
        let message = finished_job_message(&pods, job.as_ref()).await?;
        let wanted = backup.spec.source.connection.password_secret.iter().map(|s| s.name.clone());
        let secrets = secret_keys(&secrets_api, wanted.chain(backup.spec.storage.secret_names())).await?;
        (pod, job, message, secrets)
    };

    // Decide.
    let Decision { job: desired, status, events, requeue } = decide::decide(&Observed {
        backup: &backup,
        pod: pod.as_ref(),
        job: job.as_ref(),
        agent_message: message.as_deref(),
        drill_job: drill_job.as_ref(),
        drill_message: drill_message.as_deref(),
        secrets: &secrets,
        operator_image: &ctx.operator_image,
        now: Time(k8s_openapi::jiff::Timestamp::now()),
    });

    // Apply, then status, then Events.
    if let Some(job) = desired {
        apply_job(&jobs_api, &job).await?;
    }
    let api: Api<MySQLBackup> = Api::namespaced(client.clone(), &ns);
    apply_status(&api, &*backup, backup.status.as_ref(), &status).await?;
    publish(&ctx, &*backup, events).await;
    record_finish(&ctx.metrics, &backup, &status);
    record_drill(&ctx.metrics, &backup, &status);
    Ok(next_action(requeue, status.phase))
}

/// Counts a drill that has just finished: the time of a success, or one more failure, per source.
pub(crate) fn record_drill(
    metrics: &crate::controller::metrics::Metrics,
    backup: &MySQLBackup,
    status: &crate::crd::MySQLBackupStatus,
) {
    use crate::crd::Phase;
    let Some(drill) = &status.drill else { return };
    let was = backup.status.as_ref().and_then(|s| s.drill.as_ref()).filter(|d| d.job == drill.job).map(|d| d.phase);
    if !matches!(drill.phase, Phase::Complete | Phase::Failed) || was == Some(drill.phase) {
        return;
    }
    let source = crate::controller::metrics::SourceLabels {
        namespace: backup.namespace().unwrap_or_default(),
        pod: backup.spec.source.pod.clone(),
    };
    if drill.phase == Phase::Complete {
        let at = drill.completion_time.as_ref().map(|t| t.0.as_second() as f64).unwrap_or_default();
        metrics.drill_last_success.get_or_create(&source).set(at);
    } else {
        metrics.drill_failures.get_or_create(&source).inc();
    }
}

/// Counts a backup that has just finished, and for a success updates its source's gauges.
pub(crate) fn record_finish(
    metrics: &crate::controller::metrics::Metrics,
    backup: &MySQLBackup,
    status: &crate::crd::MySQLBackupStatus,
) {
    use crate::crd::Phase;
    let was = backup.status.as_ref().and_then(|s| s.phase);
    let Some(phase @ (Phase::Complete | Phase::Failed)) = status.phase else { return };
    if was == Some(phase) {
        return;
    }
    let label = if phase == Phase::Complete { "Complete" } else { "Failed" };
    metrics.backups_finished.get_or_create(&crate::controller::metrics::PhaseLabels { phase: label.into() }).inc();
    if phase == Phase::Complete {
        let source = crate::controller::metrics::SourceLabels {
            namespace: backup.namespace().unwrap_or_default(),
            pod: backup.spec.source.pod.clone(),
        };
        let finished = status.completion_time.as_ref().map(|t| t.0.as_second() as f64).unwrap_or_default();
        metrics.last_success.get_or_create(&source).set(finished);
        let bytes = status.sizes.as_ref().map(|s| s.data_bytes).unwrap_or_default();
        metrics.last_bytes.get_or_create(&source).set(bytes);
        metrics.last_duration.get_or_create(&source).set(status.duration_seconds.unwrap_or_default());
    }
}
