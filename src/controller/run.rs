//! Running the controller: the watches of MySQLBackups, MySQLRestores and BackupSchedules (and the
//! Jobs and MySQLBackups they own), error backoff, and the
//! HTTP endpoints `/healthz`, `/readyz` and `/metrics`; stops cleanly on SIGTERM or Ctrl-C.
//!
//! Objects that do not deserialize (e.g. written against an older schema) are reported and skipped
//! through `DeserializeGuard`, so one malformed object never stops the watch of the others.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::{self, Action},
        watcher,
    },
};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::controller::backup::reconcile::reconcile_backup;
use crate::controller::context::{Context, FIELD_MANAGER, ReconcileError};
use crate::controller::metrics::{ErrorLabels, KindLabels};
use crate::controller::restore::reconcile::reconcile_restore;
use crate::controller::schedule::reconcile::reconcile_schedule;
use crate::crd::{BackupSchedule, MySQLBackup, MySQLRestore};

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable Kubernetes configuration.
    #[error("connecting to Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    /// The first request found no API server to talk to: refused, timed out, or a certificate not
    /// trusted.
    #[error("reaching the Kubernetes API server at {url}: {source}")]
    Unreachable { url: String, source: kube::Error },
    /// The API server does not serve MySQLBackups: the CRDs are not installed.
    #[error("the API server at {url} does not serve MySQLBackups; install crds/crds.yaml or the Helm chart first")]
    CrdMissing { url: String },
    /// The identity may not list MySQLBackups: not the operator's ServiceAccount, or its RBAC missing.
    #[error(
        "listing MySQLBackups at {url} is forbidden ({message}); run as the operator's ServiceAccount, with the chart's RBAC"
    )]
    Forbidden { url: String, message: String },
    /// The first request failed otherwise.
    #[error("listing MySQLBackups at {url}: {source}")]
    FirstRequest { url: String, source: kube::Error },
    /// The Lease of leader election could not be read or created.
    #[error("leader election on Lease {lease}: {source}")]
    Lease { lease: String, source: kube_lease_manager::LeaseManagerError },
    /// Another replica took the Lease (or it could not be renewed in time): stop reconciling.
    #[error("lost the leader-election Lease; restarting to stand by")]
    LeaseLost,
    /// The HTTP endpoint could not listen.
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// The operator's own image.
    pub operator_image: String,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Leader election; `None` runs without it (a single replica, or outside a cluster).
    pub leader_election: Option<LeaderElection>,
}

/// Which Lease the replicas compete for, and as whom.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Name of the Lease.
    pub lease: String,
    /// Its namespace; default: the namespace of the client (the pod's own, in a cluster).
    pub namespace: Option<String>,
    /// This replica's identity, unique among replicas (the pod name).
    pub identity: String,
}

/// Seconds a Lease stays valid after its last renewal; a standby takes over at most this long after the
/// leader dies without releasing it.
const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry at which the leader renews; also the clock skew tolerated between nodes.
const LEASE_GRACE_SECONDS: u64 = 5;

/// Seconds to wait before retrying a reconcile that failed.
const ERROR_RETRY: Duration = Duration::from_secs(15);
/// When to decide again after a status write found the object changed, if no watch event comes first.
const STALE_RETRY: Duration = Duration::from_secs(1);

/// A resource the controller reconciles: its kind for logs and metrics, and its reconcile.
trait Reconciled:
    Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, ReconcileError>> + Send;

    /// What else the controller of this kind watches, besides the operator's Jobs it owns.
    fn watches(controller: Controller<DeserializeGuard<Self>>, _client: &Client) -> Controller<DeserializeGuard<Self>> {
        controller
    }
}

impl Reconciled for MySQLBackup {
    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, ReconcileError>> + Send {
        reconcile_backup(obj, ctx)
    }
}

impl Reconciled for BackupSchedule {
    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, ReconcileError>> + Send {
        reconcile_schedule(obj, ctx)
    }

    /// A schedule reacts to its MySQLBackups finishing (for status and retention).
    fn watches(controller: Controller<DeserializeGuard<Self>>, client: &Client) -> Controller<DeserializeGuard<Self>> {
        let backups: Api<DeserializeGuard<MySQLBackup>> = Api::all(client.clone());
        controller.owns(backups, watcher::Config::default().labels(crate::controller::build::LABEL_SCHEDULE))
    }
}

impl Reconciled for MySQLRestore {
    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, ReconcileError>> + Send {
        reconcile_restore(obj, ctx)
    }
}

async fn reconcile<K: Reconciled>(
    guard: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let kind = K::kind(&()).to_string();
    ctx.metrics.reconciles.get_or_create(&KindLabels { kind: kind.clone() }).inc();
    match &guard.0 {
        Ok(obj) => K::reconcile(Arc::new(obj.clone()), ctx).await,
        Err(invalid) => {
            tracing::warn!(
                kind = %kind,
                namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
                name = invalid.metadata.name.as_deref().unwrap_or(""),
                error = %invalid.error,
                "skipping an object that does not match the schema"
            );
            ctx.metrics.errors.get_or_create(&ErrorLabels { kind, category: "invalid".into() }).inc();
            Ok(Action::await_change())
        }
    }
}

fn error_policy<K: Reconciled>(guard: Arc<DeserializeGuard<K>>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let name = guard.0.as_ref().map(|o| o.name_any()).unwrap_or_default();
    let kind = K::kind(&()).to_string();
    if let ReconcileError::StaleRead { .. } = error {
        // Routine: the watch lags the API. The newer version arrives and is reconciled.
        tracing::debug!(kind = %kind, name = %name, "decided from a stale copy; deciding again");
        return Action::requeue(STALE_RETRY);
    }
    tracing::warn!(kind = %kind, name = %name, category = error.category(), error = %error, "reconcile failed; retrying");
    ctx.metrics.errors.get_or_create(&ErrorLabels { kind, category: error.category().into() }).inc();
    Action::requeue(ERROR_RETRY)
}

/// The controller of `K`, owning the operator's Jobs, until shutdown.
async fn control<K: Reconciled>(client: Client, ctx: Arc<Context>) {
    let objects: Api<DeserializeGuard<K>> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let controller = Controller::new(objects, watcher::Config::default().any_semantic())
        .owns(jobs, watcher::Config::default().labels("app.kubernetes.io/managed-by=mysql-backup-operator"));
    K::watches(controller, &client)
        .shutdown_on_signal()
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            match result {
                // Logged by `error_policy`, at the level each error deserves.
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                // Routine: a Job event for an object deleted since.
                Err(e @ controller::Error::ObjectNotFound(_)) => tracing::debug!(error = %e, "controller event"),
                // A watch that fails (the API server unreachable, a permission taken away) stops
                // reconciles: visible, not only at debug.
                Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watching failed; retrying"),
            }
        })
        .await;
}

/// Serves the health and metrics endpoints until the process stops.
async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Context>, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    use axum::{Router, http::StatusCode, routing::get};
    let metrics = ctx.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.metrics.encode() }
            }),
        );
    axum::serve(listener, app).await
}

/// Waits until this replica holds the Lease. `None` when a signal came first.
async fn acquire(
    client: Client,
    election: &LeaderElection,
) -> Result<Option<(watch::Receiver<bool>, LeaseTask)>, RunError> {
    let namespace = election.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&namespace)
        .with_identity(&election.identity)
        .with_field_manager(FIELD_MANAGER)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await
        .map_err(|source| RunError::Lease { lease: format!("{namespace}/{}", election.lease), source })?;
    let (mut leading, task) = manager.watch().await;
    tracing::info!(lease = %election.lease, namespace = %namespace, identity = %election.identity, "waiting to lead");
    tokio::select! {
        acquired = leading.wait_for(|leader| *leader) => {
            if acquired.is_err() {
                return Err(RunError::LeaseLost);
            }
        }
        _ = crate::shutdown::signal() => return Ok(None),
    }
    tracing::info!(identity = %election.identity, "leading");
    Ok(Some((leading, task)))
}

type LeaseTask =
    tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>;

/// Lists one MySQLBackup, to stop at start with the reason when the controller could do nothing: no API
/// server reachable at `url` (or not trusted), no CRDs, or no permission.
pub async fn check_api(client: &Client, url: &str) -> Result<(), RunError> {
    let backups: Api<DeserializeGuard<MySQLBackup>> = Api::all(client.clone());
    let url = url.trim_end_matches('/').to_string();
    match backups.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(RunError::CrdMissing { url }),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            Err(RunError::Forbidden { url, message: status.message.clone() })
        }
        Err(source @ (kube::Error::HyperError(_) | kube::Error::Service(_))) => {
            Err(RunError::Unreachable { url, source })
        }
        Err(source) => Err(RunError::FirstRequest { url, source }),
    }
}

/// Runs the controller until SIGTERM or Ctrl-C, or until the Lease is lost (an error: the pod restarts
/// and stands by again, so two replicas never reconcile at once).
pub async fn run(opts: ControllerOptions) -> Result<(), RunError> {
    let config = kube::Config::infer().await.map_err(|e| RunError::Connect(kube::Error::InferConfig(e)))?;
    let url = config.cluster_url.to_string();
    let client = crate::controller::context::from_config(config).map_err(RunError::Connect)?;
    check_api(&client, &url).await?;
    let ctx = Arc::new(Context::new(client.clone(), opts.operator_image));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| RunError::Listen { addr: opts.listen, source })?;
    // A standby replica is healthy and ready: readiness says the process serves, not that it leads.
    let ready = Arc::new(AtomicBool::new(true));
    let server = tokio::spawn(serve(listener, ctx.clone(), ready.clone()));

    let lease = match &opts.leader_election {
        Some(election) => match acquire(client.clone(), election).await? {
            Some(lease) => Some(lease),
            None => {
                server.abort();
                tracing::info!("stopped before leading");
                return Ok(());
            }
        },
        None => None,
    };
    let controllers = futures::future::join3(
        control::<MySQLBackup>(client.clone(), ctx.clone()),
        control::<MySQLRestore>(client.clone(), ctx.clone()),
        control::<BackupSchedule>(client, ctx),
    );
    tracing::info!(listen = %opts.listen, "controller running");
    let result = match lease {
        None => {
            controllers.await;
            Ok(())
        }
        Some((mut leading, task)) => {
            let result = tokio::select! {
                _ = controllers => Ok(()),
                _ = leading.wait_for(|leader| !*leader) => Err(RunError::LeaseLost),
            };
            // Closing the channel makes the manager release the Lease, so a standby takes over at once.
            drop(leading);
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Ok(_))) => tracing::info!("released the Lease"),
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the Lease; it expires by itself"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the Lease task ended abnormally"),
                Err(_) => tracing::warn!("releasing the Lease timed out; it expires by itself"),
            }
            result
        }
    };
    server.abort();
    tracing::info!("controller stopped");
    result
}
