//! A private MariaDB server per test, started from a datadir template initialised once per machine.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::{Duration, Instant},
};

use mysql_async::prelude::Queryable;

use super::*;

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

    /// Starts a server on an existing datadir with more server options (e.g. an engine plugin).
    pub async fn start_with_on(datadir: &Path, server_id: u32, extra: &[String]) -> Self {
        Self::launch(datadir, server_id, extra).await
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
