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
};

use mysql_async::prelude::Queryable;

mod mariadb;
mod storage_servers;

#[allow(unused_imports)] // each test binary uses a different part of the harness
pub use mariadb::MariaDb;
#[allow(unused_imports)]
pub use storage_servers::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};

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
    agent_limited(Some((soft, hard)), None, args, env).await
}

/// Runs the agent to completion inside memory cgroup `group` (as a container with a memory limit runs
/// it: the agent and every tool it starts are counted, and killed at the limit).
pub async fn agent_in_cgroup(group: &MemoryCgroup, args: &[String], env: &[(String, String)]) -> AgentRun {
    agent_limited(None, Some(group), args, env).await
}

/// Runs the agent to completion with an open-files limit and in a memory cgroup, each when given.
pub async fn agent_limited(
    open_files: Option<(u64, Option<u64>)>,
    group: Option<&MemoryCgroup>,
    args: &[String],
    env: &[(String, String)],
) -> AgentRun {
    let out = limited_command(agent_command(args, env), open_files, group).output().await.expect("run agent");
    AgentRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `cmd` run by a shell that first sets the open-files limits and joins the memory cgroup, each when
/// given, then becomes `cmd`.
pub fn limited_command(
    cmd: tokio::process::Command,
    open_files: Option<(u64, Option<u64>)>,
    group: Option<&MemoryCgroup>,
) -> tokio::process::Command {
    let program = cmd.as_std().get_program().to_owned();
    let argv: Vec<_> = cmd.as_std().get_args().map(|a| a.to_owned()).collect();
    let mut prefix = String::new();
    if let Some(group) = group {
        prefix.push_str(&format!("echo $$ > {} && ", group.dir.join("cgroup.procs").display()));
    }
    // The soft limit first: a hard limit below the soft one is refused.
    if let Some((soft, hard)) = open_files {
        prefix.push_str(&format!("ulimit -Sn {soft} && "));
        if let Some(h) = hard {
            prefix.push_str(&format!("ulimit -Hn {h} && "));
        }
    }
    let mut wrapped = tokio::process::Command::new("bash");
    wrapped.arg("-c").arg(format!("{prefix}exec \"$0\" \"$@\"")).arg(program).args(argv);
    for (k, v) in cmd.as_std().get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    wrapped
}

/// A cgroup (v1) of the memory controller, under this process's own, with a limit: a process in it is
/// OOM-killed at the limit, as in a container. Removed when dropped (once its processes are gone).
pub struct MemoryCgroup {
    /// Its directory in the cgroup file system.
    pub dir: PathBuf,
}

impl MemoryCgroup {
    /// A new group limited to `limit` bytes.
    pub fn new(limit: u64) -> Self {
        let proc = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let own = proc
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.trim_start_matches('/').to_string()))
            .unwrap_or_else(|| {
                panic!("no cgroup v1 memory controller (this kernel's cgroups: {proc}): these tests need one")
            });
        let parent = Path::new("/sys/fs/cgroup/memory").join(own);
        let dir = parent.join(format!("mysql-backup-operator-test-{}-{:08x}", std::process::id(), rand_u32()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating memory cgroup {}: {e}", dir.display()));
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).expect("memory.limit_in_bytes");
        // No swap to escape to: at the limit, a process is reclaimed from or killed.
        let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
        Self { dir }
    }

    /// The group's peak memory (its processes', page cache included), in bytes.
    pub fn peak(&self) -> u64 {
        self.read("memory.max_usage_in_bytes").trim().parse().expect("memory.max_usage_in_bytes")
    }

    /// Processes the kernel killed for memory in this group.
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map(|n| n.trim().parse().expect("oom_kill"))
            .unwrap_or(0)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_else(|e| panic!("{}/{file}: {e}", self.dir.display()))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16)
}

/// Waits until `done`, failing the test after `limit`.
pub async fn wait_for(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
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

/// Every regular file under `dir`, recursively (none if it does not exist).
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk_files(&e.path())),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
    out
}
