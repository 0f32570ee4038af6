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
