//! The archiver's HTTP endpoints: `/status` (the [`ArchiverStatus`] as JSON), `/metrics`
//! (Prometheus text) and `/healthz`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use jiff::Timestamp;

use crate::archive::archiver::ArchiverError;
use crate::format::archiver_status::{ArchiverState, ArchiverStatus};

/// Serves `/status`, `/metrics` and `/healthz` in the background.
pub async fn serve_status(addr: SocketAddr, status: Arc<Mutex<ArchiverStatus>>) -> Result<(), ArchiverError> {
    use axum::{Router, http::header::CONTENT_TYPE, routing::get};
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ArchiverError::Listen { addr, source })?;
    let (a, b) = (status.clone(), status);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/status",
            get(move || {
                let s = a.clone();
                async move {
                    let now = s.lock().map(|s| s.at(Timestamp::now())).unwrap_or_default();
                    ([(CONTENT_TYPE, "application/json")], serde_json::to_string(&now).unwrap_or_default())
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let s = b.clone();
                async move { s.lock().map(|s| s.at(Timestamp::now())).map(|s| metrics(&s)).unwrap_or_default() }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "status endpoint stopped");
        }
    });
    Ok(())
}

/// Prometheus text exposition of the status.
pub fn metrics(status: &ArchiverStatus) -> String {
    let ts = |t: Option<Timestamp>| t.map(|t| t.as_millisecond() as f64 / 1000.0).unwrap_or(0.0);
    let label = format!("archive=\"{}\"", status.archive);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{label}}} {value}\n"));
    };
    metric(
        "mysqlbackup_archive_lag_seconds",
        "gauge",
        "Seconds of transactions received or possibly written but not yet stored.",
        status.lag_seconds,
    );
    metric(
        "mysqlbackup_archive_last_event_timestamp_seconds",
        "gauge",
        "Time of the newest event stored.",
        ts(status.last_event_time),
    );
    metric(
        "mysqlbackup_archive_caught_up_timestamp_seconds",
        "gauge",
        "When the server last had nothing more to send.",
        ts(status.caught_up_at),
    );
    metric("mysqlbackup_archive_segments_total", "counter", "Segments stored.", status.segments as f64);
    metric("mysqlbackup_archive_transactions_total", "counter", "Transactions stored.", status.transactions as f64);
    metric("mysqlbackup_archive_reconnects_total", "counter", "Reconnections to the server.", status.reconnects as f64);
    metric("mysqlbackup_archive_gaps", "gauge", "Gaps in the archive.", status.gaps.len() as f64);
    metric(
        "mysqlbackup_archive_up",
        "gauge",
        "1 while streaming.",
        f64::from(u8::from(status.state == ArchiverState::Streaming)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_metrics() {
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let s = ArchiverStatus {
            state: ArchiverState::Streaming,
            archive: "shop".into(),
            unstored_since: Some(t0),
            last_event_time: Some(t0),
            segments: 3,
            ..Default::default()
        };
        let now = s.at(t0 + jiff::SignedDuration::from_millis(2500));
        assert_eq!(now.lag_seconds, 2.5);
        let text = metrics(&now);
        assert!(text.contains("mysqlbackup_archive_lag_seconds{archive=\"shop\"} 2.5\n"), "{text}");
        assert!(text.contains("mysqlbackup_archive_last_event_timestamp_seconds{archive=\"shop\"} 1795341600\n"));
        assert!(text.contains("mysqlbackup_archive_segments_total{archive=\"shop\"} 3\n"));
        assert!(text.contains("mysqlbackup_archive_up{archive=\"shop\"} 1\n"));
        let idle = ArchiverStatus { unstored_since: None, ..s };
        assert_eq!(idle.at(t0).lag_seconds, 0.0);
    }
}
