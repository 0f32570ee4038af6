//! What every reconcile shares: the [`Context`] (client, Event recorder, metrics), the errors a
//! reconcile can meet, and the field manager of every server-side apply.
//!
//! The Kubernetes client runs over TLS with one process-wide crypto provider: rustls is built with two providers here (`ring` for kube and mysql_async, `aws-lc-rs` for
//! object_store), and then refuses to guess: a client built without a process default panics on its
//! first TLS configuration. Every Kubernetes client of this program comes from this module.

use std::time::Duration;

use kube::{
    Client, Config,
    runtime::events::{Recorder, Reporter},
};

/// Makes `ring` the process's TLS provider, once; later calls, and a provider someone else installed
/// first, leave it as it is.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for `config`.
pub fn from_config(config: Config) -> Result<Client, kube::Error> {
    install_tls_provider();
    Client::try_from(config)
}

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
    /// Marking a MySQLBackup with its drill Job failed.
    #[error("annotating MySQLBackup {name} with its drill Job: {source}")]
    AnnotateBackup { name: String, source: kube::Error },
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
    /// The name and namespace of a namespaced resource; one without a namespace cannot be reconciled.
    pub fn name_and_namespace<K: kube::ResourceExt>(obj: &K) -> Result<(String, String), Self> {
        let name = obj.name_any();
        let ns = obj.namespace().ok_or_else(|| Self::NoNamespace(name.clone()))?;
        Ok((name, ns))
    }

    /// A stable category for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Observe { .. } => "observe",
            Self::ApplyJob { .. }
            | Self::ApplyClaim { .. }
            | Self::DeleteJob { .. }
            | Self::CreateBackup { .. }
            | Self::DeleteBackup { .. }
            | Self::AnnotateBackup { .. }
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
