//! The reconcile of a MySQLBackup against the API: observe (the resource's pod, Job, the Job's
//! termination message and the Secrets it names), decide (pure, in [`super::backup`]), apply the Job
//! (server-side apply), write the status (server-side apply on the status subresource) and publish
//! Events. Secret values are read only to learn their keys and are never logged or copied.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
    },
};

use super::backup::{self, Decision, Observed};
use crate::{crd::MySQLBackup, jobs};

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
    /// Writing the status failed.
    #[error("writing the status of {name}: {source}")]
    WriteStatus { name: String, source: kube::Error },
    /// The resource has no namespace.
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl ReconcileError {
    /// A stable category for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Observe { .. } => "observe",
            Self::ApplyJob { .. } => "apply",
            Self::WriteStatus { .. } => "status",
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
    pub metrics: super::metrics::Metrics,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, operator_image: String) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            operator_image,
            metrics: super::metrics::Metrics::default(),
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

/// Reconciles one MySQLBackup.
pub async fn reconcile_backup(backup: Arc<MySQLBackup>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = backup.name_any();
    let ns = backup.namespace().ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
    let client = &ctx.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // Observe. A finished backup needs nothing but its own status.
    let finished = backup
        .status
        .as_ref()
        .is_some_and(|s| matches!(s.phase, Some(crate::crd::Phase::Complete | crate::crd::Phase::Failed)));
    let (pod, job, message, secrets) = if finished {
        (None, None, None, BTreeMap::new())
    } else {
        let pod = pods
            .get_opt(&backup.spec.source.pod)
            .await
            .map_err(observe_err(format!("pod {}", backup.spec.source.pod)))?;
        let job_name = jobs::child_name("backup", &name);
        let job = jobs_api.get_opt(&job_name).await.map_err(observe_err(format!("Job {job_name}")))?;
        let finished_job = job
            .as_ref()
            .and_then(|j| j.status.as_ref())
            .is_some_and(|s| s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0);
        let message = if finished_job { agent_message(&pods, &job_name).await? } else { None };
        let mut secrets = BTreeMap::new();
        let wanted = backup
            .spec
            .source
            .connection
            .password_secret
            .iter()
            .map(|s| s.name.clone())
            .chain(backup.spec.storage.credentials_secret.clone());
        for secret in wanted.collect::<BTreeSet<_>>() {
            if let Some(s) = secrets_api.get_opt(&secret).await.map_err(observe_err(format!("Secret {secret}")))? {
                let keys: BTreeSet<String> = s
                    .data
                    .unwrap_or_default()
                    .into_keys()
                    .chain(s.string_data.unwrap_or_default().into_keys())
                    .collect();
                secrets.insert(secret, keys);
            }
        }
        (pod, job, message, secrets)
    };

    // Decide.
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let Decision { job: desired, status, events, requeue } = backup::decide(&Observed {
        backup: &backup,
        pod: pod.as_ref(),
        job: job.as_ref(),
        agent_message: message.as_deref(),
        secrets: &secrets,
        operator_image: &ctx.operator_image,
        now,
    });

    // Apply.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Some(job) = desired {
        let job_name = job.name_any();
        jobs_api
            .patch(&job_name, &params, &Patch::Apply(&job))
            .await
            .map_err(|source| ReconcileError::ApplyJob { job: job_name, source })?;
    }

    // Status, only when it changed.
    if backup.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({
            "apiVersion": MySQLBackup::api_version(&()),
            "kind": MySQLBackup::kind(&()),
            "status": status,
        });
        let api: Api<MySQLBackup> = Api::namespaced(client.clone(), &ns);
        api.patch_status(&name, &params, &Patch::Apply(&patch))
            .await
            .map_err(|source| ReconcileError::WriteStatus { name: name.clone(), source })?;
    }

    for e in events {
        let event = Event {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason.to_string(),
            note: Some(e.message),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &backup.object_ref(&())).await {
            tracing::warn!(backup = %name, error = %err, "could not publish an Event");
        }
    }
    record_finish(&ctx.metrics, &backup, &status);
    let terminal = matches!(status.phase, Some(crate::crd::Phase::Complete | crate::crd::Phase::Failed));
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        // Nothing will change a finished backup but an edit or deletion, which the watch delivers.
        None if terminal => Action::await_change(),
        // Job changes arrive through the watch; this is the safety net for a missed one.
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// Counts a backup that has just finished, and for a success updates its source's gauges.
fn record_finish(metrics: &super::metrics::Metrics, backup: &MySQLBackup, status: &crate::crd::MySQLBackupStatus) {
    use crate::crd::Phase;
    let was = backup.status.as_ref().and_then(|s| s.phase);
    let Some(phase @ (Phase::Complete | Phase::Failed)) = status.phase else { return };
    if was == Some(phase) {
        return;
    }
    let label = if phase == Phase::Complete { "Complete" } else { "Failed" };
    metrics.backups_finished.get_or_create(&super::metrics::PhaseLabels { phase: label.into() }).inc();
    if phase == Phase::Complete {
        let source = super::metrics::SourceLabels {
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
