//! Test harness: real parts started by the tests themselves — a private MariaDB server per test (from
//! a datadir template initialised once per machine), an S3-protocol server (s3s-fs) in-process, Azure's
//! emulator Azurite — and a runner for the agent binary.
//!
//! A missing part is a failure with a message saying how to install it, never a silent pass: the
//! repository's test script installs everything these tests need.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::{Duration, Instant},
};

use mysql_async::prelude::Queryable;

/// The agent binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_mysql-backup-operator");

/// Finds a tool on PATH or fails the test saying how to get it.
pub fn require(tool: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/bin"]) {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{tool} not found: these tests need MariaDB 10.11 (mariadb-server, mariadb-backup, mariadb-client); run ./scripts/test, which installs them"
    )
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// A fresh temporary directory under the target directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("t-").tempdir_in(tmp_root()).expect("temporary directory")
}

/// The initialised datadir every test server is copied from; made once per machine.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tmp_root().join("mariadb-template");
        if dir.join("mysql").is_dir() {
            return dir;
        }
        let staging = tmp_root().join(format!("mariadb-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let out = std::process::Command::new(require("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", staging.display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .output()
            .expect("run mariadb-install-db");
        assert!(out.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&out.stderr));
        // Another test process may have won the race: theirs is as good as ours.
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(status.success(), "copying {} to {}", from.display(), to.display());
}

/// A private MariaDB server, stopped when dropped.
pub struct MariaDb {
    child: Option<std::process::Child>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Its datadir.
    pub datadir: PathBuf,
    log: PathBuf,
    pool: mysql_async::Pool,
}

impl MariaDb {
    /// Starts a new server with an empty database, binary logs and GTIDs, in `dir`.
    pub async fn start(dir: &Path, server_id: u32) -> Self {
        let datadir = dir.join("data");
        copy_dir(template(), &datadir);
        Self::start_on(&datadir, server_id).await
    }

    /// Starts a new server like [`MariaDb::start`], with more server options (e.g. `--log-bin=/elsewhere/b`).
    pub async fn start_with(dir: &Path, server_id: u32, extra: &[String]) -> Self {
        let datadir = dir.join("data");
        copy_dir(template(), &datadir);
        Self::launch(&datadir, server_id, extra).await
    }

    /// Starts a server on an existing datadir (e.g. a restored one).
    pub async fn start_on(datadir: &Path, server_id: u32) -> Self {
        Self::launch(datadir, server_id, &[]).await
    }

    async fn launch(datadir: &Path, server_id: u32, extra: &[String]) -> Self {
        let port = free_port();
        let parent = datadir.parent().expect("datadir has a parent");
        let log = parent.join(format!("server-{port}.log"));
        let mut cmd = std::process::Command::new(require("mariadbd"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", parent.join(format!("s{port}.sock")).display()))
            .arg(format!("--pid-file={}", datadir.join("server.pid").display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--server-id={server_id}"))
            .arg("--log-bin=mysql-bin")
            .arg("--binlog-format=ROW")
            .arg("--log-slave-updates")
            .arg("--gtid-strict-mode=1")
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--skip-name-resolve")
            .arg(format!("--log-error={}", log.display()))
            .args(extra);
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--user=root");
        }
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start mariadbd");
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("root"))
            .prefer_socket(false);
        let mut me =
            Self { child: Some(child), port, datadir: datadir.to_path_buf(), log, pool: mysql_async::Pool::new(opts) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = me.pool.get_conn().await
                && c.ping().await.is_ok()
            {
                break;
            }
            if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("mariadbd exited with {status} during start-up:\n{}", me.log_tail());
            }
            assert!(Instant::now() < deadline, "mariadbd did not accept connections in 60 s:\n{}", me.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        me
    }

    /// The last lines of the server's error log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Connection URL for the agent (password-less root).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// A connection pool to the server.
    pub fn pool(&self) -> mysql_async::Pool {
        self.pool.clone()
    }

    /// Runs statements.
    pub async fn exec(&self, sql: &str) {
        let mut c = self.pool.get_conn().await.expect("connect");
        c.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs a query; every value as text (NULL as "NULL").
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let mut c = self.pool.get_conn().await.expect("connect");
        let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match r.as_ref(i) {
                        Some(mysql_async::Value::NULL) | None => "NULL".to_string(),
                        Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                        Some(v) => v.as_sql(true).trim_matches('\'').to_string(),
                    })
                    .collect()
            })
            .collect()
    }

    /// The single value of a query.
    pub async fn value(&self, sql: &str) -> String {
        self.rows(sql)
            .await
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_else(|| panic!("{sql}: no row"))
    }

    /// `CHECKSUM TABLE` of every table in `schema`, by table name.
    pub async fn checksums(&self, schema: &str) -> Vec<(String, String)> {
        let tables = self
            .rows(&format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}' AND table_type = 'BASE TABLE' ORDER BY 1"
            ))
            .await;
        let mut out = Vec::new();
        for t in tables {
            let row = self.rows(&format!("CHECKSUM TABLE `{schema}`.`{}`", t[0])).await;
            out.push((t[0].clone(), row[0][1].clone()));
        }
        out
    }

    /// Stops the server cleanly and waits for it.
    pub async fn stop(mut self) {
        let pool = self.pool.clone();
        let _ = pool.disconnect().await;
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// An S3-protocol server (s3s-fs) on a loopback port, in this process on its own runtime thread.
pub struct S3Server {
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    /// Directory holding the buckets.
    pub root: tempfile::TempDir,
    /// While true, uploads of chunks wait: a backup holds still at its first new chunk.
    pub hold_chunk_uploads: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While true, downloads of chunks wait: a restore holds still at its first chunk.
    pub hold_chunk_reads: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While true the server is down: new connections are closed as they come, and requests on open
    /// ones are dropped without an answer.
    pub down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Access key of the test S3 server.
pub const S3_ACCESS_KEY: &str = "test-access-key";
/// Secret key of the test S3 server.
pub const S3_SECRET_KEY: &str = "test-secret-key-0123456789";

impl S3Server {
    /// Starts a server with one bucket named `bucket`.
    pub fn start() -> Self {
        use hyper_util::{
            rt::{TokioExecutor, TokioIo},
            server::conn::auto::Builder,
        };
        let root = tempdir();
        std::fs::create_dir(root.path().join("bucket")).expect("bucket directory");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = hold.clone();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_down = down.clone();
        let hold_reads = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reads_held = hold_reads.clone();
        std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let mut b = s3s::service::S3ServiceBuilder::new(fs);
                b.set_auth(s3s::auth::SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
                let service = b.build();
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                                drop(socket);
                                continue;
                            }
                            let gates = (held.clone(), reads_held.clone(), is_down.clone());
                            let service = service.clone();
                            let gated = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                                let (service, (held, reads_held, is_down)) = (service.clone(), gates.clone());
                                async move {
                                    let gate = match *req.method() {
                                        http::Method::PUT => Some(held),
                                        http::Method::GET => Some(reads_held),
                                        _ => None,
                                    };
                                    if let Some(gate) = gate.filter(|_| req.uri().path().contains("/chunks/")) {
                                        while gate.load(std::sync::atomic::Ordering::SeqCst) {
                                            tokio::time::sleep(Duration::from_millis(20)).await;
                                        }
                                    }
                                    if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                                        // An error closes the connection with no response, as a dying server does.
                                        return Err(s3s::HttpError::new("the server is down".into()));
                                    }
                                    hyper::service::Service::call(&service, req).await
                                }
                            });
                            tokio::spawn(async move {
                                let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), gated).await;
                            });
                        }
                        _ = &mut rx => break,
                    }
                }
            });
        });
        Self { endpoint, root, hold_chunk_uploads: hold, hold_chunk_reads: hold_reads, down, shutdown: Some(tx) }
    }

    /// Agent arguments for storage `s3://bucket/<prefix>` on this server.
    pub fn storage_args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--storage".into(),
            format!("s3://bucket/{prefix}"),
            "--storage-option".into(),
            format!("endpoint={}", self.endpoint),
            "--storage-option".into(),
            "allow_http=true".into(),
            "--storage-option".into(),
            "region=us-east-1".into(),
        ]
    }

    /// Environment with this server's credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()), ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into())]
    }

    /// Local path of an object.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join("bucket").join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What the agent printed and how it exited.
#[derive(Debug)]
pub struct AgentRun {
    /// Exit status.
    pub status: std::process::ExitStatus,
    /// Standard output (the JSON summary).
    pub stdout: String,
    /// Standard error (logs and the error message).
    pub stderr: String,
}

impl AgentRun {
    /// The summary, asserting success.
    pub fn summary(&self) -> serde_json::Value {
        assert!(self.status.success(), "agent failed ({}):\n{}", self.status, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("summary is not JSON ({e}):\n{}", self.stdout))
    }

    /// The final error line, asserting failure.
    pub fn error(&self) -> String {
        assert!(!self.status.success(), "agent unexpectedly succeeded:\n{}", self.stdout);
        self.stderr
            .lines()
            .rfind(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line in:\n{}", self.stderr))
            .to_string()
    }
}

/// Builds an agent command: `args` after `agent`, with `env` set and no credentials inherited.
pub fn agent_command(args: &[String], env: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(AGENT);
    cmd.arg("agent").args(args);
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MYSQL_PWD", "BACKUP_STORAGE", "MYSQL_URL"] {
        cmd.env_remove(k);
    }
    cmd.env("RUST_LOG", "info").env("MYSQL_PWD", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// Runs the agent to completion under an open-files soft limit of `soft`, and a hard limit of `hard`
/// when given (`ulimit -n 1024` in a shell sets both; container runtimes often set only the soft one).
pub async fn agent_with_open_files(
    soft: u64,
    hard: Option<u64>,
    args: &[String],
    env: &[(String, String)],
) -> AgentRun {
    let cmd = agent_command(args, env);
    let program = cmd.as_std().get_program().to_owned();
    let argv: Vec<_> = cmd.as_std().get_args().map(|a| a.to_owned()).collect();
    let mut wrapped = tokio::process::Command::new("bash");
    // The soft limit first: a hard limit below the soft one is refused.
    let hard = hard.map(|h| format!("ulimit -Hn {h} && ")).unwrap_or_default();
    wrapped.arg("-c").arg(format!("ulimit -Sn {soft} && {hard}exec \"$0\" \"$@\"")).arg(program).args(argv);
    for (k, v) in cmd.as_std().get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let out = wrapped.output().await.expect("run agent");
    AgentRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the agent to completion.
pub async fn agent(args: &[String], env: &[(String, String)]) -> AgentRun {
    let out = agent_command(args, env).output().await.expect("run agent");
    AgentRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `len` bytes that zstd cannot shrink, the same for the same `seed` (xorshift; the seed is made odd,
/// so seeds differing only in the lowest bit give the same bytes).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Turns `&str` arguments into owned ones.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Azure's emulator Azurite on a loopback port, stopped when dropped.
pub struct Azurite {
    child: std::process::Child,
    /// Blob endpoint including the account, `http://127.0.0.1:port/devstoreaccount1`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    /// Starts Azurite from the repository's tool directory (installed by the test script) or from
    /// `AZURITE_BLOB`, and creates `container`.
    pub async fn start(container: &str) -> Self {
        let bin = std::env::var("AZURITE_BLOB")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/azurite-blob"));
        assert!(bin.exists(), "Azurite not found at {}: run ./scripts/test, which installs it from npm", bin.display());
        let dir = tempdir();
        let port = free_port();
        let child = std::process::Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
            .arg(dir.path())
            .args(["--disableTelemetry", "--silent", "--skipApiVersionCheck"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite");
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "Azurite did not listen within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let me = Self { child, endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"), _dir: dir };
        me.create_container(port, container).await;
        me
    }

    /// Creates a container with one SharedKey-signed request (object_store cannot create containers).
    async fn create_container(&self, port: u16, container: &str) {
        use base64::Engine;
        use hmac::Mac;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let date = jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let version = "2021-08-06";
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY).expect("key");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac");
        mac.update(string_to_sign.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let request = format!(
            "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect azurite");
        s.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        s.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 201"), "creating container {container}: {response}");
    }

    /// Agent arguments for storage `az://<container>/<prefix>` on this emulator.
    pub fn storage_args(&self, container: &str, prefix: &str) -> Vec<String> {
        vec![
            "--storage".into(),
            format!("az://{container}/{prefix}"),
            "--storage-option".into(),
            format!("endpoint={}", self.endpoint),
            "--storage-option".into(),
            "allow_http=true".into(),
        ]
    }

    /// Environment with the emulator's account.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), AZURITE_ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A writer committing one row per transaction into `app.w` until stopped, recording each row's GTID.
pub struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<Vec<(u64, String)>>,
}

impl Writer {
    /// Starts writing; `app.w (id BIGINT PRIMARY KEY, v VARCHAR(64))` must exist.
    pub fn start(pool: mysql_async::Pool) -> Self {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(async move {
            let mut conn = pool.get_conn().await.expect("writer connects");
            let mut done = Vec::new();
            let mut id = 0u64;
            while !*rx.borrow() {
                id += 1;
                conn.exec_drop("INSERT INTO app.w VALUES (?, CONCAT('row-', ?))", (id, id)).await.expect("insert");
                let gtid: String = conn.query_first("SELECT @@last_gtid").await.expect("last_gtid").unwrap_or_default();
                done.push((id, gtid));
            }
            done
        });
        Self { stop, handle }
    }

    /// Stops and returns (id, GTID) of every committed row.
    pub async fn stop(self) -> Vec<(u64, String)> {
        let _ = self.stop.send(true);
        self.handle.await.expect("writer task")
    }
}

/// Arguments of a `mariabackup` backup of the server at `url` with datadir `datadir` into `st`.
pub fn mariabackup_args(url: &str, datadir: &Path, st: &[String]) -> Vec<String> {
    let datadir = datadir.display().to_string();
    [
        args(&["backup", "--method", "mariabackup", "--mysql-url", url, "--datadir", &datadir]),
        args(&["--mariabackup-defaults-file", "/dev/null"]),
        st.to_vec(),
    ]
    .concat()
}

/// A full `mariabackup` backup of `db` into `st` (with `env`, e.g. storage credentials); its summary.
pub async fn full_backup(db: &MariaDb, st: &[String], env: &[(String, String)]) -> serde_json::Value {
    agent(&mariabackup_args(&db.url(), &db.datadir, st), env).await.summary()
}

/// Inserts marker row `id` and returns its GTID.
pub async fn marker(pool: &mysql_async::Pool, id: u32) -> String {
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop(format!("INSERT INTO app.m VALUES ({id}, 'marker {id}')")).await.unwrap();
    conn.query_first::<String, _>("SELECT @@last_gtid").await.unwrap().unwrap()
}

/// A stored manifest as JSON, in either format (format 2 is a zstd frame of the document).
pub fn manifest_at(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json = if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) { zstd::decode_all(&bytes[..]).unwrap() } else { bytes };
    serde_json::from_slice(&json).unwrap()
}
