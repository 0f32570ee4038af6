//! Reads of what a resource owns and names: its Job, the agent's termination message, the keys of
//! the Secrets it names (values are read only to learn their keys, never logged or copied).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{Api, api::ListParams};

use crate::controller::context::ReconcileError;

pub(crate) fn observe_err(what: String) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Observe { what, source }
}

/// The termination message of the newest terminated agent container of `job`'s pods.
pub(crate) async fn agent_message(pods: &Api<Pod>, job: &str) -> Result<Option<String>, ReconcileError> {
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
pub(crate) async fn secret_keys(
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
pub(crate) async fn finished_job_message(pods: &Api<Pod>, job: Option<&Job>) -> Result<Option<String>, ReconcileError> {
    let finished =
        job.and_then(|j| j.status.as_ref()).is_some_and(|s| s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0);
    match job.and_then(|j| j.metadata.name.as_deref()) {
        Some(name) if finished => agent_message(pods, name).await,
        _ => Ok(None),
    }
}
