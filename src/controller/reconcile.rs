//! The reconciles of MySQLBackup and MySQLRestore against the API: observe (the source pod, or the
//! backup and target claim; the Job, its agent's termination message and the Secrets named), decide
//! (pure, in [`crate::controller::backup::decide`] and [`crate::controller::restore::decide`]), apply the claim and Job (server-side apply),
//! write the status (server-side apply on the status subresource) and publish Events. Secret values are read only to learn their keys and are never logged or copied.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{PersistentVolumeClaim, Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
    },
};

use crate::controller::backup::decide::{Decision, Observed};
use crate::controller::backup::{decide, deletion};
use crate::controller::build;
use crate::controller::restore::decide as restore_decision;
use crate::controller::schedule::decide as schedule_decision;
use crate::crd::{BackupSchedule, MySQLBackup, MySQLRestore};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "mysql-backup-operator";

/// Errors of a reconcile: all are API failures, retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading an object failed.
    #[error("reading {what}: {source}")]
    Observe { what: String, source: kube::Error },
    /// Applying the Job failed.
    #[error("applying Job {job}: {source}")]
    ApplyJob { job: String, source: kube::Error },
    /// Adding or removing the finalizer failed.
    #[error("updating the finalizers of {name}: {source}")]
    Finalizer { name: String, source: kube::Error },
    /// Deleting a Job failed.
    #[error("deleting Job {job}: {source}")]
    DeleteJob { job: String, source: kube::Error },
    /// Creating a schedule's MySQLBackup failed.
    #[error("creating MySQLBackup {name}: {source}")]
    CreateBackup { name: String, source: kube::Error },
    /// Deleting a schedule's MySQLBackup failed.
    #[error("deleting MySQLBackup {name}: {source}")]
    DeleteBackup { name: String, source: kube::Error },
    /// Creating the target claim of a restore failed.
    #[error("applying PersistentVolumeClaim {claim}: {source}")]
    ApplyClaim { claim: String, source: kube::Error },
    /// Applying a Deployment failed.
    #[error("applying Deployment {name}: {source}")]
    ApplyDeployment { name: String, source: kube::Error },
    /// Deleting a Deployment failed.
    #[error("deleting Deployment {name}: {source}")]
    DeleteDeployment { name: String, source: kube::Error },
    /// Writing a status failed.
    #[error("writing the status of {name}: {source}")]
    WriteStatus { name: String, source: kube::Error },
    /// The status was decided from a copy older than the object: the newer one is reconciled instead.
    #[error("{name} changed since it was read; deciding again from the newer version")]
    StaleRead { name: String },
    /// The resource has no namespace.
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl ReconcileError {
    /// A stable category for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Observe { .. } => "observe",
            Self::ApplyJob { .. }
            | Self::ApplyClaim { .. }
            | Self::DeleteJob { .. }
            | Self::CreateBackup { .. }
            | Self::DeleteBackup { .. }
            | Self::ApplyDeployment { .. }
            | Self::DeleteDeployment { .. } => "apply",
            Self::Finalizer { .. } => "finalizer",
            Self::WriteStatus { .. } => "status",
            Self::StaleRead { .. } => "stale",
            Self::NoNamespace(_) => "invalid",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// The operator's own image, for init containers and methods without server tools.
    pub operator_image: String,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: crate::controller::metrics::Metrics,
    /// Reads the archivers' status endpoints.
    pub http: Option<reqwest::Client>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, operator_image: String) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            operator_image,
            metrics: crate::controller::metrics::Metrics::default(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(3)).build().ok(),
        }
    }
}

fn observe_err(what: String) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Observe { what, source }
}

/// The termination message of the newest terminated agent container of `job`'s pods.
async fn agent_message(pods: &Api<Pod>, job: &str) -> Result<Option<String>, ReconcileError> {
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map_err(observe_err(format!("pods of Job {job}")))?;
    let mut newest: Option<(Time, String)> = None;
    for pod in list.items {
        let statuses = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
        for cs in statuses.into_iter().filter(|c| c.name == "agent") {
            if let Some(t) = cs.state.and_then(|s| s.terminated)
                && let Some(message) = t.message
            {
                let at = t.finished_at.unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
                if newest.as_ref().is_none_or(|(n, _)| at.0 > n.0) {
                    newest = Some((at, message));
                }
            }
        }
    }
    Ok(newest.map(|(_, m)| m))
}

/// The keys of each Secret among `names` that exists. Values are never kept.
async fn secret_keys(
    api: &Api<Secret>,
    names: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, BTreeSet<String>>, ReconcileError> {
    let mut found = BTreeMap::new();
    for name in names.into_iter().collect::<BTreeSet<_>>() {
        if let Some(s) = api.get_opt(&name).await.map_err(observe_err(format!("Secret {name}")))? {
            let keys = s.data.unwrap_or_default().into_keys().chain(s.string_data.unwrap_or_default().into_keys());
            found.insert(name, keys.collect());
        }
    }
    Ok(found)
}

/// The agent's termination message, once `job` has finished.
async fn finished_job_message(pods: &Api<Pod>, job: Option<&Job>) -> Result<Option<String>, ReconcileError> {
    let finished =
        job.and_then(|j| j.status.as_ref()).is_some_and(|s| s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0);
    match job.and_then(|j| j.metadata.name.as_deref()) {
        Some(name) if finished => agent_message(pods, name).await,
        _ => Ok(None),
    }
}

/// Applies `status` to the status subresource of `obj` when it differs from `old`, only if `obj` is still
/// the current version: a server-side apply drops the fields it no longer names, so a status decided from a
/// stale cache would erase what a newer reconcile wrote.
async fn apply_status<K, S>(api: &Api<K>, obj: &K, old: Option<&S>, status: &S) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if old == Some(status) {
        return Ok(());
    }
    let name = obj.name_any();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "resourceVersion": obj.resource_version() },
        "status": status,
    });
    match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(ReconcileError::StaleRead { name }),
        Err(source) => Err(ReconcileError::WriteStatus { name, source }),
    }
}

/// Publishes `events` on `obj`. A failure is logged, never fatal: Events are best effort.
async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    events: Vec<crate::controller::backup::decide::EventNote>,
) {
    for e in events {
        let event = Event {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason.to_string(),
            note: Some(e.message),
            action: "Reconcile".into(),
            secondary: None,
        };
        match ctx.recorder.publish(&event, &obj.object_ref(&())).await {
            Ok(()) => {}
            // The object's namespace is being deleted, and the object with it: nobody reads its Events.
            Err(err) if namespace_terminating(&err) => {
                tracing::debug!(kind = %K::kind(&()), name = obj.meta().name.as_deref().unwrap_or(""), "namespace terminating: Event dropped");
            }
            Err(err) => {
                tracing::warn!(kind = %K::kind(&()), name = obj.meta().name.as_deref().unwrap_or(""), error = %err, "could not publish an Event");
            }
        }
    }
}

/// Whether `err` is the API server refusing new objects in a namespace being deleted.
fn namespace_terminating(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(e) if e.code == 403
        && e.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

/// Applies `job` server-side.
async fn apply_job(api: &Api<Job>, job: &Job) -> Result<(), ReconcileError> {
    let name = job.name_any();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(job))
        .await
        .map_err(|source| ReconcileError::ApplyJob { job: name, source })?;
    Ok(())
}

/// What to do after a reconcile: the decision's own requeue, else wait for a change when the resource
/// is finished, else a slow safety-net requeue (Job changes arrive through the watch).
fn next_action(requeue: Option<Duration>, phase: Option<crate::crd::Phase>) -> Action {
    use crate::crd::Phase;
    match requeue {
        Some(after) => Action::requeue(after),
        None if matches!(phase, Some(Phase::Complete | Phase::Failed)) => Action::await_change(),
        None => Action::requeue(Duration::from_secs(300)),
    }
}

fn is_finished(phase: Option<crate::crd::Phase>) -> bool {
    matches!(phase, Some(crate::crd::Phase::Complete | crate::crd::Phase::Failed))
}

/// The finalizers of `backup` but the delete-data one.
fn without_ours(backup: &MySQLBackup) -> Vec<String> {
    backup.finalizers().iter().filter(|f| *f != deletion::FINALIZER).cloned().collect()
}

/// Sets the finalizers of `backup` to `finalizers`, only if the object has not changed since it was read
/// (the resourceVersion makes the merge patch conditional), so no one else's finalizer is lost.
async fn set_finalizers(
    api: &Api<MySQLBackup>,
    backup: &MySQLBackup,
    finalizers: Vec<String>,
) -> Result<(), ReconcileError> {
    let name = backup.name_any();
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": backup.resource_version() },
    });
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Gone already: nothing holds it.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(ReconcileError::Finalizer { name, source }),
    }
}

/// Reconciles a MySQLBackup being deleted: see [`deletion`].
async fn reconcile_deletion(backup: Arc<MySQLBackup>, ctx: Arc<Context>, ns: &str) -> Result<Action, ReconcileError> {
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
    let secrets = secret_keys(&secrets_api, backup.spec.storage.credentials_secret.clone()).await?;

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
        match jobs_api.delete(job, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(ReconcileError::DeleteJob { job: job.clone(), source }),
        }
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
pub async fn reconcile_backup(backup: Arc<MySQLBackup>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = backup.name_any();
    let ns = backup.namespace().ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
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

    // Observe. A finished backup needs nothing but its own status.
    let (pod, job, message, secrets) = if is_finished(backup.status.as_ref().and_then(|s| s.phase)) {
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
        let secrets = secret_keys(&secrets_api, wanted.chain(backup.spec.storage.credentials_secret.clone())).await?;
        (pod, job, message, secrets)
    };

    // Decide.
    let Decision { job: desired, status, events, requeue } = decide::decide(&Observed {
        backup: &backup,
        pod: pod.as_ref(),
        job: job.as_ref(),
        agent_message: message.as_deref(),
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
    Ok(next_action(requeue, status.phase))
}

/// Reconciles one MySQLRestore.
pub async fn reconcile_restore(restore: Arc<MySQLRestore>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = restore.name_any();
    let ns = restore.namespace().ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
    let client = &ctx.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let backups: Api<MySQLBackup> = Api::namespaced(client.clone(), &ns);
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // Observe: a finished restore needs nothing but its own status.
    let (backup, claim, job, message, secrets) = if is_finished(restore.status.as_ref().and_then(|s| s.phase)) {
        (None, None, None, None, BTreeMap::new())
    } else {
        let backup = match &restore.spec.source.backup {
            Some(b) => backups.get_opt(b).await.map_err(observe_err(format!("MySQLBackup {b}")))?,
            None => None,
        };
        let claim_name = build::restore_target_claim(&restore);
        let claim =
            claims.get_opt(&claim_name).await.map_err(observe_err(format!("PersistentVolumeClaim {claim_name}")))?;
        let job_name = build::child_name("restore", &name);
        let job = jobs_api.get_opt(&job_name).await.map_err(observe_err(format!("Job {job_name}")))?;
        let message = finished_job_message(&pods, job.as_ref()).await?;
        let storage = backup.as_ref().map(|b| &b.spec.storage).or(restore.spec.source.storage.as_ref());
        let secrets = secret_keys(&secrets_api, storage.and_then(|s| s.credentials_secret.clone())).await?;
        (backup, claim, job, message, secrets)
    };

    // Decide.
    let restore_decision::Decision { claim: new_claim, job: desired, status, events, requeue } =
        restore_decision::decide(&restore_decision::Observed {
            restore: &restore,
            backup: backup.as_ref(),
            claim: claim.as_ref(),
            job: job.as_ref(),
            agent_message: message.as_deref(),
            secrets: &secrets,
            operator_image: &ctx.operator_image,
            now: Time(k8s_openapi::jiff::Timestamp::now()),
        });

    // Apply: the claim first, so the Job never waits on a claim that will not come.
    if let Some(claim) = new_claim {
        let claim_name = claim.name_any();
        claims
            .patch(&claim_name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&claim))
            .await
            .map_err(|source| ReconcileError::ApplyClaim { claim: claim_name, source })?;
    }
    if let Some(job) = desired {
        apply_job(&jobs_api, &job).await?;
    }
    let api: Api<MySQLRestore> = Api::namespaced(client.clone(), &ns);
    apply_status(&api, &*restore, restore.status.as_ref(), &status).await?;
    publish(&ctx, &*restore, events).await;
    Ok(next_action(requeue, status.phase))
}

/// Reconciles one BackupSchedule: see [`schedule_decision`].
pub async fn reconcile_schedule(schedule: Arc<BackupSchedule>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = schedule.name_any();
    let ns = schedule.namespace().ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
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
    let pod = if schedule.spec.retention.is_some() || archiving {
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
        match backups.delete(victim, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(ReconcileError::DeleteBackup { name: victim.clone(), source }),
        }
    }
    if let Some(job) = &d.prune_job {
        apply_job(&jobs_api, job).await?;
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
        match deployments.delete(victim, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(ReconcileError::DeleteDeployment { name: victim.clone(), source }),
        }
    }
    let api: Api<BackupSchedule> = Api::namespaced(client.clone(), &ns);
    apply_status(&api, &*schedule, schedule.status.as_ref(), &d.status).await?;
    publish(&ctx, &*schedule, d.events).await;
    ctx.metrics.record_schedule(labels, &d.status);
    Ok(d.requeue.map(Action::requeue).unwrap_or_else(Action::await_change))
}

/// The status of schedule `name`'s archiver, read from its running pod's endpoint (`Err` says why it
/// could not be read); `None` while no archiver pod runs.
async fn archiver_status(
    ctx: &Context,
    pods: &Api<Pod>,
    name: &str,
) -> Result<Option<Result<crate::format::archiver_status::ArchiverStatus, String>>, ReconcileError> {
    let selector = format!("app.kubernetes.io/component=archiver,{}={name}", build::LABEL_SCHEDULE);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(observe_err(format!("archiver pods of schedule {name}")))?;
    let (Some(url), Some(http)) = (build::archiver_status_url(&list.items), ctx.http.as_ref()) else {
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

/// Counts a backup that has just finished, and for a success updates its source's gauges.
fn record_finish(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_terminating_namespace_excuses_a_failed_event() {
        // As the API server answers an Event created in a namespace being deleted.
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "events.events.k8s.io \"x.1\" is forbidden: unable to create new content in namespace e2e because it is being terminated",
            "details": {"name": "x.1", "group": "events.k8s.io", "kind": "events",
                        "causes": [{"reason": "NamespaceTerminating", "message": "namespace e2e is being terminated", "field": "metadata.namespace"}]}
        }))
        .unwrap();
        assert!(namespace_terminating(&kube::Error::Api(Box::new(status.clone()))));
        let mut rbac = status;
        rbac.details = None;
        assert!(!namespace_terminating(&kube::Error::Api(Box::new(rbac))));
    }
}
