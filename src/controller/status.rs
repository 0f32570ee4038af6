//! Status conditions: setting one keeps its `lastTransitionTime` unless its status changes, so a
//! reconcile that finds nothing new writes an identical status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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
