//! The reconcile of a BackupSchedule against the API: observe its MySQLBackups, prune Job, source pod
//! and archiver, decide (pure, in [`super::decide`]), create and delete MySQLBackups, apply the prune
//! Job and the archiver Deployment, write the status and publish Events.

use std::sync::Arc;

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};

use crate::controller::apply::{apply_job, delete_if_present};
use crate::controller::backup::drill::DRILL_ANNOTATION;
use crate::controller::build;
use crate::controller::context::{Context, FIELD_MANAGER, ReconcileError};
use crate::controller::observe::{finished_job_message, observe_err};
use crate::controller::schedule::decide as schedule_decision;
use crate::controller::status::{apply_status, publish};
use crate::crd::{BackupSchedule, MySQLBackup};

/// Reconciles one BackupSchedule: see [`schedule_decision`].
#[tracing::instrument(skip_all, fields(namespace = schedule.namespace().unwrap_or_default(), name = schedule.name_any()))]
pub async fn reconcile_schedule(schedule: Arc<BackupSchedule>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (name, ns) = ReconcileError::name_and_namespace(schedule.as_ref())?;
    let client = &ctx.client;
    let labels = crate::controller::metrics::ScheduleLabels { namespace: ns.clone(), schedule: name.clone() };
    if schedule.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget_schedule(&labels);
        return Ok(Action::await_change());
    }
    let backups: Api<MySQLBackup> = Api::namespaced(client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Observe: the schedule's children (labelled and owned by it), its last prune Job, the pod.
    let uid = schedule.metadata.uid.clone();
    let children: Vec<MySQLBackup> = backups
        .list(&ListParams::default().labels(&format!("{}={name}", build::LABEL_SCHEDULE)))
        .await
        .map_err(observe_err(format!("MySQLBackups of schedule {name}")))?
        .items
        .into_iter()
        .filter(|b| b.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect();
    let prune_job = match schedule.status.as_ref().and_then(|s| s.last_prune.as_ref()) {
        Some(p) => jobs_api.get_opt(&p.job).await.map_err(observe_err(format!("Job {}", p.job)))?,
        None => None,
    };
    let prune_message = finished_job_message(&pods, prune_job.as_ref()).await?;
    let source = &schedule.spec.backup_template.source.pod;
    let archiving = schedule.spec.binlog_archive.is_some();
    let pod = if schedule.spec.retention.is_some() || archiving || schedule.spec.drill.is_some() {
        pods.get_opt(source).await.map_err(observe_err(format!("pod {source}")))?
    } else {
        None
    };
    let archiver = if archiving { archiver_status(&ctx, &pods, &name).await? } else { None };

    // Decide.
    let mut d = schedule_decision::decide(&schedule_decision::Observed {
        schedule: &schedule,
        children: &children,
        prune_job: prune_job.as_ref(),
        prune_message: prune_message.as_deref(),
        pod_security_context: pod.as_ref().and_then(|p| p.spec.as_ref()).and_then(|s| s.security_context.as_ref()),
        source_pod: pod.as_ref(),
        archiver: archiver.as_ref(),
        operator_image: &ctx.operator_image,
        now: k8s_openapi::jiff::Timestamp::now(),
    });

    // Apply. Children are created, never applied: an object of the same name is not adopted.
    for child in &d.create {
        let child_name = child.name_any();
        match backups.create(&PostParams::default(), child).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing =
                    backups.get_opt(&child_name).await.map_err(observe_err(format!("MySQLBackup {child_name}")))?;
                let ours = existing.is_some_and(|b| b.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()));
                if !ours {
                    d.status.missed_slots += 1;
                    d.events.retain(|e| !e.message.contains(&format!("MySQLBackup {child_name} ")));
                    d.events.push(crate::controller::backup::decide::EventNote {
                        warning: true,
                        reason: "NameTaken",
                        message: format!(
                            "MySQLBackup {child_name} exists and is not owned by this schedule; it is left alone and \
                             this slot takes no backup"
                        ),
                    });
                }
            }
            Err(source) => return Err(ReconcileError::CreateBackup { name: child_name, source }),
        }
    }
    for victim in &d.delete {
        delete_if_present(&backups, victim)
            .await
            .map_err(|source| ReconcileError::DeleteBackup { name: victim.clone(), source })?;
    }
    if let Some(job) = &d.prune_job {
        apply_job(&jobs_api, job).await?;
    }
    if let Some(job) = &d.drill_job {
        apply_job(&jobs_api, job).await?;
        // The drilled backup's reconcile follows the Job from here.
        let owner = job.owner_references().first().map(|o| o.name.clone()).unwrap_or_default();
        let mark = serde_json::json!({"metadata": {"annotations": {DRILL_ANNOTATION: job.name_any()}}});
        backups
            .patch(&owner, &PatchParams::default(), &Patch::Merge(&mark))
            .await
            .map_err(|source| ReconcileError::AnnotateBackup { name: owner.clone(), source })?;
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &ns);
    if let Some(dep) = &d.archiver {
        let dep_name = dep.name_any();
        deployments
            .patch(&dep_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(dep))
            .await
            .map_err(|source| ReconcileError::ApplyDeployment { name: dep_name, source })?;
    }
    if let Some(victim) = &d.delete_archiver {
        delete_if_present(&deployments, victim)
            .await
            .map_err(|source| ReconcileError::DeleteDeployment { name: victim.clone(), source })?;
    }
    let api: Api<BackupSchedule> = Api::namespaced(client.clone(), &ns);
    apply_status(&api, &*schedule, schedule.status.as_ref(), &d.status).await?;
    publish(&ctx, &*schedule, d.events).await;
    ctx.metrics.record_schedule(labels, &d.status);
    Ok(d.requeue.map(Action::requeue).unwrap_or_else(Action::await_change))
}

/// The status of schedule `name`'s archiver, read from its running pod's endpoint (`Err` says why it
/// could not be read); `None` while no archiver pod runs.
pub(crate) async fn archiver_status(
    ctx: &Context,
    pods: &Api<Pod>,
    name: &str,
) -> Result<Option<Result<crate::format::archiver_status::ArchiverStatus, String>>, ReconcileError> {
    let selector = format!("app.kubernetes.io/component=archiver,{}={name}", build::LABEL_SCHEDULE);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(observe_err(format!("archiver pods of schedule {name}")))?;
    let (Some(url), Some(http)) =
        (crate::controller::schedule::build::archiver_status_url(&list.items), ctx.http.as_ref())
    else {
        return Ok(None);
    };
    let read = async {
        let body = http.get(&url).send().await?.error_for_status()?.bytes().await?;
        Ok::<_, reqwest::Error>(body)
    };
    Ok(Some(match read.await {
        Ok(body) => serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}")),
        Err(e) => Err(format!("{url}: {e}")),
    }))
}
