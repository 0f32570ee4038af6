//! What an agent Job came to: still running, succeeded with the agent's summary, or failed with the
//! agent's own error (from its termination message) or, failing that, the Job's reason.

use k8s_openapi::api::batch::v1::Job;

/// The state of an agent Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Not finished.
    Running,
    /// Succeeded; the agent's termination message (its JSON summary), if any.
    Succeeded(Option<String>),
    /// Failed, with the best reason known.
    Failed(String),
}

fn condition_true<'a>(job: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")
}

/// Reads the outcome of `job` whose agent left `message`.
pub fn job_outcome(job: &Job, message: Option<&str>) -> JobOutcome {
    if condition_true(job, "Complete").is_some() {
        return JobOutcome::Succeeded(message.map(str::to_string));
    }
    if let Some(failed) = condition_true(job, "Failed") {
        let reason = message
            .and_then(|m| serde_json::from_str::<crate::format::summary::Failure>(m).ok())
            .map(|f| f.error)
            .or_else(|| failed.message.clone())
            .unwrap_or_else(|| "the agent Job failed".into());
        return JobOutcome::Failed(reason);
    }
    JobOutcome::Running
}
