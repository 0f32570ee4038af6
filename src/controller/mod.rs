//! The controller: reconciles the custom resources. Each reconcile is a pipeline — observe (read the
//! resource and what it owns), decide (a pure function, in the per-resource modules), apply (server-side
//! apply with one field manager), status (server-side apply of status).

pub mod apply;
pub mod backup;
pub mod build;
pub mod context;
pub mod job_outcome;
pub mod metrics;
pub mod observe;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod status;
