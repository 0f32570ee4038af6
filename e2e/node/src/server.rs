//! The node's two listeners: the kubelet API the API server calls for `kubectl logs` (HTTPS on
//! 127.0.0.1), and the API server's address inside the pod network (10.244.0.1:443, forwarded as TCP to
//! the API server on loopback, TLS passing through).

use std::{net::SocketAddr, path::Path, sync::Arc};

use axum::{
    Router,
    extract::{Path as UrlPath, Query, State},
    http::StatusCode,
    routing::get,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

use crate::Ctx;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("reading {path}: {message}")]
    Pem { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listening on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    tail_lines: Option<usize>,
    limit_bytes: Option<u64>,
}

async fn container_logs(
    State(ctx): State<Arc<Ctx>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<String, (StatusCode, String)> {
    let dir = ctx.logs.lock().ok().and_then(|l| l.get(&(ns.clone(), pod.clone())).cloned());
    let Some(dir) = dir else {
        return Err((StatusCode::NOT_FOUND, format!("pod {ns}/{pod} does not run on this node")));
    };
    let path = dir.join(format!("{container}.log"));
    let text = tokio::fs::read(&path).await.unwrap_or_default();
    let mut text = String::from_utf8_lossy(&text).into_owned();
    if let Some(n) = q.tail_lines {
        let lines: Vec<&str> = text.lines().collect();
        text = lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("{l}\n")).collect();
    }
    if let Some(limit) = q.limit_bytes {
        let mut end = (limit as usize).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Ok(text)
}

fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, ServerError> {
    let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| ServerError::Pem {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the kubelet API on `addr` with the node's serving certificate.
pub async fn kubelet_api(ctx: Arc<Ctx>, addr: SocketAddr, cert: &Path, key: &Path) -> Result<(), ServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(cert, key)?));
    let listener =
        TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { addr: addr.to_string(), source })?;
    let app = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ctx);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else { return };
            let service = TowerToHyperService::new(app);
            let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

/// Forwards every connection to the pod network's API server address to the API server.
pub async fn api_proxy(listener: std::net::TcpListener, api: SocketAddr) -> Result<(), ServerError> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    listener.set_nonblocking(true).map_err(|source| ServerError::Listen { addr: addr.clone(), source })?;
    let listener = TcpListener::from_std(listener).map_err(|source| ServerError::Listen { addr, source })?;
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(api).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
