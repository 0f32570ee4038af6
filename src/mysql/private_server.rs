//! A private server on a restored datadir: `mariadbd` with no network listener, no grant checks and no
//! binary log unless asked, reached through a socket in a work directory. Point-in-time restore replays
//! into one, a restore drill checks one, a catch-up backup replicates into one.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use mysql_async::prelude::Queryable;

/// How long a private server may take to start or to stop: crash recovery of a large redo log, or a
/// clean shutdown's flush, can take minutes.
const START_STOP_TIMEOUT: Duration = Duration::from_secs(600);

/// Errors of a private server.
#[derive(Debug, thiserror::Error)]
pub enum PrivateServerError {
    /// The server binary could not be run.
    #[error("starting {tool}: {source}")]
    Spawn { tool: String, source: std::io::Error },
    /// The server exited while starting.
    #[error("the private server exited during start-up ({status}); its log ends with:\n{log}")]
    ExitedAtStart { status: String, log: String },
    /// The server did not accept connections in time.
    #[error("the private server did not accept connections in {seconds} s; its log ends with:\n{log}")]
    StartTimeout { seconds: u64, log: String },
    /// A statement failed.
    #[error("the private server: {operation}: {source}")]
    Query { operation: String, source: mysql_async::Error },
    /// The server stopped with a failure, or did not stop in time.
    #[error("the private server did not stop cleanly ({status}); its log ends with:\n{log}")]
    Stop { status: String, log: String },
}

/// What to start.
#[derive(Debug, Clone)]
pub struct PrivateServerOptions {
    /// `mariadbd`.
    pub tool: String,
    /// The datadir it runs on.
    pub datadir: PathBuf,
    /// Where its socket, pid file and error log go.
    pub work: PathBuf,
    /// More server options (e.g. `--log-bin=…`, `--server-id=…`).
    pub extra_args: Vec<String>,
}

/// A running private server; killed if dropped before [`PrivateServer::shutdown`].
pub struct PrivateServer {
    child: tokio::process::Child,
    pool: mysql_async::Pool,
    log: PathBuf,
    socket: PathBuf,
    /// A short directory for the socket when the work directory's path is too long for one.
    _socket_dir: Option<tempfile::TempDir>,
}

/// Longest socket path a Unix socket address holds (108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

impl PrivateServer {
    /// Starts the server and waits until it accepts connections.
    pub async fn start(opts: &PrivateServerOptions) -> Result<Self, PrivateServerError> {
        let mut socket = opts.work.join("private.sock");
        let socket_dir = if socket.as_os_str().len() > MAX_SOCKET_PATH {
            let dir = tempfile::Builder::new()
                .prefix("mbo-")
                .tempdir()
                .map_err(|source| PrivateServerError::Spawn { tool: opts.tool.clone(), source })?;
            socket = dir.path().join("s.sock");
            Some(dir)
        } else {
            None
        };
        let log = opts.work.join("private-server.log");
        // What the server says before it opens its error log (bad options) goes here.
        let early = std::fs::File::create(opts.work.join("private-server.stderr"))
            .map_err(|source| PrivateServerError::Spawn { tool: opts.tool.clone(), source })?;
        let mut cmd = crate::mysql::tools::command(&opts.tool);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", opts.datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", opts.work.join("private.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .args(["--skip-networking", "--skip-grant-tables", "--innodb-buffer-pool-size=128M"])
            .args(&opts.extra_args);
        if !opts.extra_args.iter().any(|a| a.starts_with("--log-bin")) {
            cmd.arg("--skip-log-bin");
        }
        // The tables of MyRocks live in `#rocksdb`: without the engine they would not open.
        if opts.datadir.join("#rocksdb").is_dir() {
            cmd.arg("--plugin-load-add=ha_rocksdb");
        }
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--user=root");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(early)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PrivateServerError::Spawn { tool: opts.tool.clone(), source })?;
        let pool = mysql_async::Pool::new(
            mysql_async::OptsBuilder::default()
                .socket(Some(socket.display().to_string()))
                .user(Some("root"))
                .prefer_socket(true),
        );
        let mut server = Self { child, pool, log, socket, _socket_dir: socket_dir };
        let started = std::time::Instant::now();
        loop {
            if server.pool.get_conn().await.is_ok() {
                tracing::debug!(datadir = %opts.datadir.display(), seconds = started.elapsed().as_secs_f64(), "private server up");
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(PrivateServerError::ExitedAtStart { status: status.to_string(), log: server.log_tail() });
            }
            if started.elapsed() > START_STOP_TIMEOUT {
                return Err(PrivateServerError::StartTimeout {
                    seconds: START_STOP_TIMEOUT.as_secs(),
                    log: server.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A connection.
    pub async fn conn(&self) -> Result<mysql_async::Conn, PrivateServerError> {
        self.pool
            .get_conn()
            .await
            .map_err(|source| PrivateServerError::Query { operation: "connecting".into(), source })
    }

    /// Runs `sql`, naming `operation` in the error.
    pub async fn exec(&self, operation: &str, sql: &str) -> Result<(), PrivateServerError> {
        let mut conn = self.conn().await?;
        conn.query_drop(sql).await.map_err(|source| PrivateServerError::Query { operation: operation.into(), source })
    }

    /// Whether the process has exited (crashed, or was stopped).
    pub fn has_exited(&mut self) -> Option<String> {
        self.child.try_wait().ok().flatten().map(|s| s.to_string())
    }

    /// The whole error log, after what the server wrote to its standard error.
    pub fn log_text(&self) -> String {
        let early = std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default();
        early + &std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the error log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Shuts the server down cleanly (a slow shutdown is not needed: the datadir is consistent once
    /// `mariadbd` exits with success) and waits for it to exit.
    pub async fn shutdown(mut self) -> Result<(), PrivateServerError> {
        if let Ok(mut conn) = self.pool.get_conn().await {
            // The connection drops as the server goes: the statement's own result does not matter.
            let _ = conn.query_drop("SHUTDOWN").await;
        }
        let _ = self.pool.clone().disconnect().await;
        match tokio::time::timeout(START_STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(PrivateServerError::Stop { status: status.to_string(), log: self.log_tail() }),
            Ok(Err(e)) => Err(PrivateServerError::Stop { status: e.to_string(), log: self.log_tail() }),
            Err(_) => Err(PrivateServerError::Stop {
                status: format!("still running after {} s", START_STOP_TIMEOUT.as_secs()),
                log: self.log_tail(),
            }),
        }
    }
}

/// `@@version` of a running private server.
pub async fn version(server: &PrivateServer) -> Result<String, PrivateServerError> {
    let mut conn = server.conn().await?;
    let v: Option<String> = conn
        .query_first("SELECT @@version")
        .await
        .map_err(|source| PrivateServerError::Query { operation: "reading @@version".into(), source })?;
    Ok(v.unwrap_or_default())
}
