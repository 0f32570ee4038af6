//! Talking to a running MySQL or MariaDB server: connection settings (the password only from the
//! environment or a file, never from the URL), and the identity and positions recorded with backups.

use std::path::PathBuf;

use mysql_async::{Opts, OptsBuilder, Pool, prelude::Queryable};

use crate::mysql::position::{Flavor, GtidState, Positions};

/// Errors talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The connection URL is malformed.
    #[error("MySQL URL {url:?}: {reason}")]
    ParseUrl { url: String, reason: String },
    /// The password file could not be read.
    #[error("reading the MySQL password file {path}: {source}")]
    PasswordFile { path: PathBuf, source: std::io::Error },
    /// Connecting or querying failed.
    #[error("MySQL server at {endpoint}: {operation}: {source}")]
    Query { endpoint: String, operation: &'static str, source: mysql_async::Error },
}

/// How to reach the server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Host name or address (empty with a socket).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password (from `MYSQL_PWD` or a file).
    pub password: Option<String>,
    /// Unix socket, when given as `?socket=/path`.
    pub socket: Option<String>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("endpoint", &self.endpoint())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ServerConfig {
    /// Parses `mysql://user@host:port[?socket=/path]`; the password comes from `password_file` or,
    /// failing that, the `MYSQL_PWD` environment variable.
    pub fn from_url(url: &str, password_file: Option<&PathBuf>) -> Result<Self, ServerError> {
        let err = |reason: &str| ServerError::ParseUrl { url: redact(url), reason: reason.into() };
        let parsed = url::Url::parse(url).map_err(|e| err(&e.to_string()))?;
        if parsed.scheme() != "mysql" {
            return Err(err("expected mysql://user@host:port"));
        }
        if parsed.password().is_some() {
            return Err(err(
                "a password in the URL would show in process lists and logs; set MYSQL_PWD or use --mysql-password-file",
            ));
        }
        let socket = parsed.query_pairs().find(|(k, _)| k == "socket").map(|(_, v)| v.into_owned());
        let host = parsed.host_str().unwrap_or("").to_string();
        if host.is_empty() && socket.is_none() {
            return Err(err("no host"));
        }
        let password = match password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ServerError::PasswordFile { path: path.clone(), source })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => std::env::var("MYSQL_PWD").ok(),
        };
        let user = if parsed.username().is_empty() { "root".to_string() } else { parsed.username().to_string() };
        Ok(Self { host, port: parsed.port().unwrap_or(3306), user, password, socket })
    }

    /// `host:port` or the socket path, for messages.
    pub fn endpoint(&self) -> String {
        match &self.socket {
            Some(s) => s.clone(),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    fn opts(&self) -> Opts {
        let mut b = OptsBuilder::default()
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .prefer_socket(false)
            .pool_opts(
                mysql_async::PoolOpts::default()
                    .with_constraints(mysql_async::PoolConstraints::new(0, 2).unwrap_or_default()),
            );
        b = match &self.socket {
            Some(s) => b.socket(Some(s.clone())),
            None => b.ip_or_hostname(self.host.clone()).tcp_port(self.port),
        };
        b.into()
    }

    /// Opens one connection (for a replication stream, which takes the connection over).
    pub async fn connect(&self) -> Result<mysql_async::Conn, ServerError> {
        mysql_async::Conn::new(self.opts()).await.map_err(|source| ServerError::Query {
            endpoint: self.endpoint(),
            operation: "connecting",
            source,
        })
    }

    /// Opens a connection pool (connections are made lazily).
    pub fn pool(&self) -> Pool {
        Pool::new(self.opts())
    }
}

/// Hides a password in a URL for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Reads the server's identity and current positions (version, ids, GTIDs, binary log coordinate).
pub async fn read_positions(pool: &Pool, cfg: &ServerConfig) -> Result<Positions, ServerError> {
    let q = |operation: &'static str| move |source| ServerError::Query { endpoint: cfg.endpoint(), operation, source };
    let mut conn = pool.get_conn().await.map_err(q("connecting"))?;
    let (version, server_id): (String, u32) =
        conn.query_first("SELECT @@version, @@server_id").await.map_err(q("reading version"))?.unwrap_or_default();
    let flavor = Flavor::from_version(&version);
    let mut p =
        Positions { flavor: Some(flavor), version: Some(version), server_id: Some(server_id), ..Default::default() };
    let logs: Vec<(String, u64)> = conn
        .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
            (row.get::<String, _>(0).unwrap_or_default(), row.get::<u64, _>(1).unwrap_or_default())
        })
        .await
        .unwrap_or_default(); // binary logging off: no coordinates
    match flavor {
        Flavor::Mariadb => {
            let (binlog_pos, current_pos): (String, String) = conn
                .query_first("SELECT @@gtid_binlog_pos, @@gtid_current_pos")
                .await
                .map_err(q("reading GTID positions"))?
                .unwrap_or_default();
            let purged = match logs.first() {
                Some((first, _)) => conn
                    .exec_first::<Option<String>, _, _>("SELECT BINLOG_GTID_POS(?, 4)", (first.clone(),))
                    .await
                    .map_err(q("reading the purged GTID position"))?
                    .flatten()
                    .and_then(|s| s.parse().ok()),
                None => None,
            };
            p.gtid = Some(GtidState::Mariadb {
                binlog_pos: binlog_pos.parse().unwrap_or_default(),
                current_pos: current_pos.parse().ok(),
                purged,
            });
        }
        Flavor::Mysql => {
            let (uuid, executed, purged): (String, String, String) = conn
                .query_first("SELECT @@server_uuid, @@gtid_executed, @@gtid_purged")
                .await
                .map_err(q("reading GTID sets"))?
                .unwrap_or_default();
            p.server_uuid = Some(uuid);
            p.gtid =
                Some(GtidState::Mysql { executed: executed.parse().unwrap_or_default(), purged: purged.parse().ok() });
        }
    }
    if let Some((file, size)) = logs.last() {
        p.binlog = Some(crate::mysql::position::BinlogCoordinate { file: file.clone(), position: *size });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_password_in_url_without_echoing_it() {
        let err = ServerConfig::from_url("mysql://root:hunter2@db:3306", None).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("set MYSQL_PWD or use --mysql-password-file"), "{err}");
    }

    #[test]
    fn parses_tcp_and_socket_urls_and_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = ServerConfig::from_url("mysql://backup@10.0.0.5:3307", Some(&pw)).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.user.as_str()), ("10.0.0.5", 3307, "backup"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = ServerConfig::from_url("mysql://root@localhost?socket=/run/mysqld/mysqld.sock", Some(&pw)).unwrap();
        assert_eq!(c.endpoint(), "/run/mysqld/mysqld.sock");
        let err = ServerConfig::from_url("mysql://root@h", Some(&dir.path().join("missing"))).unwrap_err();
        assert!(err.to_string().starts_with("reading the MySQL password file"), "{err}");
        let err = ServerConfig::from_url("postgres://h", None).unwrap_err();
        assert_eq!(err.to_string(), "MySQL URL \"postgres://h\": expected mysql://user@host:port");
    }
}
