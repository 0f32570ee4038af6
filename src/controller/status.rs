//! Status conditions: setting one keeps its `lastTransitionTime` unless its status changes, so a
//! reconcile that finds nothing new writes an identical status.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};

use crate::controller::context::{Context, FIELD_MANAGER, ReconcileError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Sets condition `type_` in `conditions`.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Whether condition `type_` is present and true.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut c = Vec::new();
        set(&mut c, "Blocked", true, "PodNotFound", "pod db-0 not found", Some(1), &t(100));
        set(&mut c, "Blocked", true, "PodNotFound", "pod db-0 still not found", Some(1), &t(200));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, t(100));
        assert_eq!(c[0].message, "pod db-0 still not found");
        set(&mut c, "Blocked", false, "Resolved", "", Some(2), &t(300));
        assert_eq!((c[0].status.as_str(), &c[0].last_transition_time), ("False", &t(300)));
        assert!(!is_true(&c, "Blocked"));
    }

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

/// The parts of a run's status that the common transitions touch.
pub trait RunStatus {
    /// Where the run stands.
    fn phase_mut(&mut self) -> &mut Option<crate::crd::Phase>;
    /// Its conditions.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// When it finished.
    fn completion_time_mut(&mut self) -> &mut Option<Time>;
}

macro_rules! run_status {
    ($ty:ty) => {
        impl RunStatus for $ty {
            fn phase_mut(&mut self) -> &mut Option<crate::crd::Phase> {
                &mut self.phase
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn completion_time_mut(&mut self) -> &mut Option<Time> {
                &mut self.completion_time
            }
        }
    };
}
run_status!(crate::crd::MySQLBackupStatus);
run_status!(crate::crd::MySQLRestoreStatus);

/// Condition: finished successfully.
pub const COMPLETE: &str = "Complete";
/// Condition: failed for good; a new resource is needed.
pub const FAILED: &str = "Failed";
/// Condition: something outside the spec is missing or not ready yet; retried.
pub const BLOCKED: &str = "Blocked";

/// Reason of a run whose recorded Job is gone before its outcome was read.
pub const JOB_LOST: &str = "JobLost";

/// Marks a run whose recorded Job `job` no longer exists failed for good ([`JOB_LOST`]): deleted by
/// hand, or by its TTL while the controller was away. Nothing is run again behind the user's back;
/// `consequence` says what that leaves and how to run it again.
pub fn mark_job_lost<S: RunStatus>(
    status: &mut S,
    job: &str,
    consequence: &str,
    generation: Option<i64>,
    now: &Time,
) -> crate::controller::backup::decide::EventNote {
    let message = format!(
        "Job {job} is gone and its outcome was never read (deleted by hand, or by its TTL while the controller was down); it is not run again: {consequence}"
    );
    mark_failed(status, JOB_LOST, message, generation, now)
}

/// Marks a run failed for good and returns the Warning to publish.
pub fn mark_failed<S: RunStatus>(
    status: &mut S,
    reason: &'static str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> crate::controller::backup::decide::EventNote {
    *status.phase_mut() = Some(crate::crd::Phase::Failed);
    set(status.conditions_mut(), FAILED, true, reason, &message, generation, now);
    set(status.conditions_mut(), BLOCKED, false, reason, "", generation, now);
    *status.completion_time_mut() = Some(now.clone());
    crate::controller::backup::decide::EventNote { warning: true, reason, message }
}

/// Marks a run blocked (pending, retried) and returns a Warning only when the problem is new.
pub fn mark_blocked<S: RunStatus>(
    status: &mut S,
    reason: &'static str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Vec<crate::controller::backup::decide::EventNote> {
    let same = status.conditions_mut().iter().any(|c| c.type_ == BLOCKED && c.status == "True" && c.message == message);
    *status.phase_mut() = Some(crate::crd::Phase::Pending);
    set(status.conditions_mut(), BLOCKED, true, reason, &message, generation, now);
    if same {
        Vec::new()
    } else {
        vec![crate::controller::backup::decide::EventNote { warning: true, reason, message }]
    }
}

/// Applies `status` to the status subresource of `obj` when it differs from `old`, only if `obj` is still
/// the current version: a server-side apply drops the fields it no longer names, so a status decided from a
/// stale cache would erase what a newer reconcile wrote.
///
/// The watch often lags the write a reconcile just made (a Job event wakes the next reconcile before the
/// new status arrives), so the current version is read first (metadata only) and a stale copy is decided
/// again without a write. The write still names the version it was decided from: a change between the
/// read and the write is refused by the API server (409) and decided again the same way.
pub(crate) async fn apply_status<K, S>(api: &Api<K>, obj: &K, old: Option<&S>, status: &S) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if old == Some(status) {
        return Ok(());
    }
    let name = obj.name_any();
    let current =
        api.get_metadata(&name).await.map_err(|source| ReconcileError::WriteStatus { name: name.clone(), source })?;
    if current.resource_version() != obj.resource_version() {
        return Err(ReconcileError::StaleRead { name });
    }
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
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
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
pub(crate) fn namespace_terminating(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(e) if e.code == 403
        && e.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

/// What to do after a reconcile: the decision's own requeue, else wait for a change when the resource
/// is finished, else a slow safety-net requeue (Job changes arrive through the watch).
pub(crate) fn next_action(requeue: Option<Duration>, phase: Option<crate::crd::Phase>) -> Action {
    use crate::crd::Phase;
    match requeue {
        Some(after) => Action::requeue(after),
        None if matches!(phase, Some(Phase::Complete | Phase::Failed)) => Action::await_change(),
        None => Action::requeue(Duration::from_secs(300)),
    }
}

pub(crate) fn is_finished(phase: Option<crate::crd::Phase>) -> bool {
    matches!(phase, Some(crate::crd::Phase::Complete | crate::crd::Phase::Failed))
}
