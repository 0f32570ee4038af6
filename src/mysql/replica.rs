//! Catching a private server up with a source by GTID replication (MariaDB): from the position its
//! data holds to a position taken from the source, then replication is stopped and forgotten, so the
//! datadir keeps no trace of the source's address or password (the replica's connection settings and
//! relay logs live in the server's work directory, and `RESET SLAVE ALL` removes them).

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::mysql::gtid::MariaGtidPos;
use crate::mysql::private_server::{PrivateServer, PrivateServerError};
use crate::mysql::server::ServerConfig;

/// How long replication may make no progress before a catch-up gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Errors of a catch-up.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The private server failed.
    #[error(transparent)]
    Server(#[from] PrivateServerError),
    /// The source is reachable only through a socket, which a replica cannot use.
    #[error("catch-up replicates over TCP: the source {endpoint} must be given as mysql://user@host:port")]
    SocketSource { endpoint: String },
    /// The server refused the replication settings (the message never repeats the password).
    #[error("configuring replication from {endpoint}: {reason}")]
    Configure { endpoint: String, reason: String },
    /// Replication stopped with an error.
    #[error("replication from {endpoint} stopped at {reached}: {error}")]
    Replication { endpoint: String, reached: String, error: String },
    /// Replication made no progress for too long.
    #[error("replication from {endpoint} made no progress for {seconds} s (at {reached}, catching up to {target})")]
    Stalled { endpoint: String, reached: String, target: String, seconds: u64 },
}

/// Server options a private server needs to be a replica whose settings stay out of its datadir.
pub fn replica_server_args(work: &std::path::Path, server_id: u32) -> Vec<String> {
    vec![
        format!("--server-id={server_id}"),
        "--skip-slave-start".into(),
        format!("--relay-log={}", work.join("relay-bin").display()),
        format!("--relay-log-index={}", work.join("relay-bin.index").display()),
        format!("--master-info-file={}", work.join("master.info").display()),
        format!("--relay-log-info-file={}", work.join("relay-log.info").display()),
    ]
}

/// Whether `pos` holds every transaction of `target`: in each of `target`'s domains, a sequence at
/// least as high.
pub fn reaches(pos: &MariaGtidPos, target: &MariaGtidPos) -> bool {
    target.gtids().all(|g| pos.contains(g))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Replicates from `source` into `server`, whose data is at `from`, until `target`; returns the
/// position reached (`@@gtid_slave_pos`). Progress is logged every `interval`.
pub async fn catch_up(
    server: &PrivateServer,
    source: &ServerConfig,
    from: &MariaGtidPos,
    target: &MariaGtidPos,
    interval: Duration,
) -> Result<MariaGtidPos, ReplicaError> {
    if source.socket.is_some() {
        return Err(ReplicaError::SocketSource { endpoint: source.endpoint() });
    }
    let q = |operation: &str| {
        let operation = operation.to_string();
        move |source| PrivateServerError::Query { operation: operation.clone(), source }
    };
    let mut conn = server.conn().await?;
    conn.query_drop(format!("SET GLOBAL gtid_slave_pos = {}", quote(&from.to_string())))
        .await
        .map_err(q("setting gtid_slave_pos"))?;
    if reaches(from, target) {
        return Ok(from.clone());
    }
    let change = format!(
        "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {}, MASTER_USER = {}, MASTER_PASSWORD = {}, \
         MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
        quote(&source.host),
        source.port,
        quote(&source.user),
        quote(source.password.as_deref().unwrap_or("")),
    );
    if let Err(e) = conn.query_drop(change).await {
        let mut reason = e.to_string();
        if let Some(password) = source.password.as_deref().filter(|p| !p.is_empty()) {
            reason = reason.replace(password, "<redacted>");
        }
        return Err(ReplicaError::Configure { endpoint: source.endpoint(), reason });
    }
    conn.query_drop(format!("START SLAVE UNTIL master_gtid_pos = {}", quote(&target.to_string())))
        .await
        .map_err(q("starting replication"))?;
    tracing::info!(source = %source.endpoint(), %from, %target, "catching up by replication");
    let result = wait(&mut conn, source, target, interval).await;
    // Stop and forget the source whatever happened: its address and password must not stay behind.
    let _ = conn.query_drop("STOP SLAVE").await;
    conn.query_drop("RESET SLAVE ALL").await.map_err(q("removing the replication settings"))?;
    result
}

async fn wait(
    conn: &mut mysql_async::Conn,
    source: &ServerConfig,
    target: &MariaGtidPos,
    interval: Duration,
) -> Result<MariaGtidPos, ReplicaError> {
    let q = |operation: &'static str| move |source| PrivateServerError::Query { operation: operation.into(), source };
    let mut last_change = Instant::now();
    let mut last_log = Instant::now();
    let mut previous = String::new();
    loop {
        let reached: Option<String> =
            conn.query_first("SELECT @@gtid_slave_pos").await.map_err(q("reading gtid_slave_pos"))?;
        let reached_text = reached.unwrap_or_default();
        let pos: MariaGtidPos = reached_text.parse().unwrap_or_default();
        if reaches(&pos, target) {
            tracing::info!(reached = %pos, "caught up");
            return Ok(pos);
        }
        let status: Option<mysql_async::Row> =
            conn.query_first("SHOW SLAVE STATUS").await.map_err(q("reading the replica status"))?;
        if let Some(row) = status {
            let text = |name: &str| row.get_opt::<Option<String>, _>(name).and_then(|v| v.ok()).flatten();
            for (errno, error) in [("Last_IO_Errno", "Last_IO_Error"), ("Last_SQL_Errno", "Last_SQL_Error")] {
                if text(errno).is_some_and(|n| n != "0") {
                    return Err(ReplicaError::Replication {
                        endpoint: source.endpoint(),
                        reached: reached_text,
                        error: text(error).unwrap_or_default(),
                    });
                }
            }
        }
        if reached_text != previous {
            previous = reached_text.clone();
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL_TIMEOUT {
            return Err(ReplicaError::Stalled {
                endpoint: source.endpoint(),
                reached: reached_text,
                target: target.to_string(),
                seconds: STALL_TIMEOUT.as_secs(),
            });
        }
        if last_log.elapsed() >= interval {
            tracing::info!(reached = %reached_text, %target, "catching up");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reaches_a_target_domain_by_domain() {
        let p = |s: &str| s.parse::<MariaGtidPos>().unwrap();
        assert!(reaches(&p("0-1-10,1-2-5"), &p("0-1-10")));
        assert!(reaches(&p("0-1-10,1-2-5"), &p("")));
        assert!(!reaches(&p("0-1-9"), &p("0-1-10")));
        assert!(!reaches(&p("0-1-10"), &p("0-1-10,1-2-1")));
    }

    #[test]
    fn quoted_values_cannot_end_the_string() {
        assert_eq!(quote(r"pa'ss\"), r"'pa\'ss\\'");
    }
}
