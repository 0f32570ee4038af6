//! Running the controller: the watches of MySQLBackups and MySQLRestores (and the Jobs they own), error backoff, and the
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
    runtime::{Controller, controller::Action, watcher},
};

use super::{
    metrics::{ErrorLabels, KindLabels},
    reconcile::{Context, ReconcileError, reconcile_backup, reconcile_restore},
};
use crate::crd::{MySQLBackup, MySQLRestore};

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable Kubernetes configuration.
    #[error("connecting to Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    /// The CRDs are not installed (or not readable with this service account).
    #[error("the MySQLBackup CRD is not usable ({0}); install crds/crds.yaml or the Helm chart first")]
    CrdMissing(#[source] kube::Error),
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
}

/// Seconds to wait before retrying a reconcile that failed.
const ERROR_RETRY: Duration = Duration::from_secs(15);

/// A resource the controller reconciles: its kind for logs and metrics, and its reconcile.
trait Reconciled:
    Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, ReconcileError>> + Send;
}

impl Reconciled for MySQLBackup {
    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, ReconcileError>> + Send {
        reconcile_backup(obj, ctx)
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
    tracing::warn!(kind = %kind, name = %name, category = error.category(), error = %error, "reconcile failed; retrying");
    ctx.metrics.errors.get_or_create(&ErrorLabels { kind, category: error.category().into() }).inc();
    Action::requeue(ERROR_RETRY)
}

/// The controller of `K`, owning the operator's Jobs, until shutdown.
async fn control<K: Reconciled>(client: Client, ctx: Arc<Context>) {
    let objects: Api<DeserializeGuard<K>> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client);
    Controller::new(objects, watcher::Config::default().any_semantic())
        .owns(jobs, watcher::Config::default().labels("app.kubernetes.io/managed-by=mysql-backup-operator"))
        .shutdown_on_signal()
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
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

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(opts: ControllerOptions) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Connect)?;
    let backups: Api<DeserializeGuard<MySQLBackup>> = Api::all(client.clone());
    backups.list(&ListParams::default().limit(1)).await.map_err(RunError::CrdMissing)?;
    let ctx = Arc::new(Context::new(client.clone(), opts.operator_image));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| RunError::Listen { addr: opts.listen, source })?;
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(serve(listener, ctx.clone(), ready.clone()));
    let controllers = futures::future::join(
        control::<MySQLBackup>(client.clone(), ctx.clone()),
        control::<MySQLRestore>(client, ctx),
    );
    ready.store(true, Ordering::Relaxed);
    tracing::info!(listen = %opts.listen, "controller running");
    controllers.await;
    server.abort();
    tracing::info!("controller stopped");
    Ok(())
}
