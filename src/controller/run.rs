//! Running the controller: the watch of MySQLBackups (and the Jobs they own), error backoff, and the
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
    Api, Client, ResourceExt,
    api::ListParams,
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, watcher},
};

use super::{
    metrics::{ErrorLabels, KindLabels},
    reconcile::{Context, ReconcileError, reconcile_backup},
};
use crate::crd::MySQLBackup;

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

async fn reconcile(guard: Arc<DeserializeGuard<MySQLBackup>>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    ctx.metrics.reconciles.get_or_create(&KindLabels { kind: "MySQLBackup".into() }).inc();
    match &guard.0 {
        Ok(backup) => reconcile_backup(Arc::new(backup.clone()), ctx).await,
        Err(invalid) => {
            tracing::warn!(
                namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
                name = invalid.metadata.name.as_deref().unwrap_or(""),
                error = %invalid.error,
                "skipping a MySQLBackup that does not match the schema"
            );
            ctx.metrics
                .errors
                .get_or_create(&ErrorLabels { kind: "MySQLBackup".into(), category: "invalid".into() })
                .inc();
            Ok(Action::await_change())
        }
    }
}

fn error_policy(guard: Arc<DeserializeGuard<MySQLBackup>>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let name = guard.0.as_ref().map(|b| b.name_any()).unwrap_or_default();
    tracing::warn!(backup = %name, category = error.category(), error = %error, "reconcile failed; retrying");
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels { kind: "MySQLBackup".into(), category: error.category().into() })
        .inc();
    Action::requeue(ERROR_RETRY)
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
    let jobs: Api<Job> = Api::all(client);
    let controller = Controller::new(backups, watcher::Config::default().any_semantic())
        .owns(jobs, watcher::Config::default().labels("app.kubernetes.io/managed-by=mysql-backup-operator"))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        });
    ready.store(true, Ordering::Relaxed);
    tracing::info!(listen = %opts.listen, "controller running");
    controller.await;
    server.abort();
    tracing::info!("controller stopped");
    Ok(())
}
