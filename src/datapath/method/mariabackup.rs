//! The `mariabackup` method: runs `mariadb-backup --backup --stream=mbstream` against a live MariaDB
//! server and parses the stream in-process, file by file, straight into the chunk pipeline — no
//! staging copy on disk. The consistent point is the one mariadb-backup takes under
//! `BACKUP STAGE BLOCK_COMMIT`; its `xtrabackup_binlog_info` gives the binlog coordinate and GTID.
//! The password reaches the tool through an option file that lives in memory only (a memfd given to the
//! tool alone, as its standard input, which it opens as `/dev/stdin`): never its command line or
//! environment, never a disk, never another child (the descriptor is close-on-exec), nothing left
//! behind when the agent is killed.
//!
//! A read limit (`--max-read-rate`) reaches mariadb-backup as backpressure: the chunk writer takes the
//! stream at the limit, so the tool's writes wait, and its reads with them (a 42 MiB backup at 8 MiB/s
//! took 5.7 s). Its own `--throttle` is not used: it counts I/O operations, not bytes, and
//! `--throttle=8` read that backup at 0.56 MiB/s. Its redo-log copier is not held back, as it must keep
//! up with the server.

use std::{collections::HashMap, io::Write, path::PathBuf, process::Stdio};

use super::{BackupMethod, MethodError};
use crate::datapath::chunk::writer::{ChunkWriter, FileWriter};
use crate::format::manifest::{Base, MethodKind, Prepare};
use crate::mysql::mbstream::{MbstreamReader, StreamChunk};
use crate::mysql::position::{GtidState, Positions, parse_xtrabackup_binlog_info};
use crate::mysql::server;
use crate::mysql::server::ServerConfig;
use crate::mysql::tools::{Redaction, collect_output, tail_text};

/// Settings of a mariabackup backup.
#[derive(Debug, Clone)]
pub struct Mariabackup {
    /// How to reach the server.
    pub server: ServerConfig,
    /// The server's datadir, as mounted where the agent runs.
    pub datadir: PathBuf,
    /// Option file mariadb-backup should read (e.g. the server's my.cnf); when unset it reads the
    /// system's default option files.
    pub defaults_file: Option<PathBuf>,
    /// `--parallel` of mariadb-backup.
    pub parallel: usize,
    /// The tool to run.
    pub tool: String,
}

/// Pipe buffer asked for between mariadb-backup and us: with the default 64 KiB, a reader that keeps
/// up with a fast writer spends its time waking up; 1 MiB is the default unprivileged maximum.
const PIPE_BUFFER: i32 = 1024 * 1024;

/// Enlarges the stream pipe's buffer (best effort: a smaller pipe is only slower).
fn widen_pipe(stdout: &tokio::process::ChildStdout) {
    use std::os::fd::AsFd;
    if let Err(e) = nix::fcntl::fcntl(stdout.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BUFFER)) {
        tracing::debug!(error = %e, "could not enlarge the stream pipe");
    }
}

/// Quotes a value for a MySQL option file.
fn option_value(v: &str) -> String {
    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The privileges mariadb-backup reported missing (`Error: missing required privilege RELOAD on *.*`).
fn missing_privileges(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.split_once("missing required privilege ").map(|(_, rest)| rest))
        .map(|rest| rest.split(" on ").next().unwrap_or(rest).trim().to_string())
        .collect()
}

/// An option file in memory, given to one tool as its standard input; gone with the descriptor.
pub(crate) struct MemOptionFile {
    fd: std::os::fd::OwnedFd,
}

impl MemOptionFile {
    /// The name the tool opens it by: its standard input, opened again from the start.
    pub(crate) const PATH: &str = "/dev/stdin";

    /// Writes `text` into a new anonymous in-memory file, closed on exec: no child inherits it unless
    /// it is handed over as [`MemOptionFile::stdin`].
    pub(crate) fn new(text: &str) -> Result<Self, MethodError> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let path = PathBuf::from("memfd:client.cnf");
        let err = |source| MethodError::TempFile { path: path.clone(), source };
        let fd = memfd_create("client.cnf", MFdFlags::MFD_CLOEXEC).map_err(|e| err(e.into()))?;
        // A memfd starts world-writable, and the tools ignore a world-writable option file.
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
            .map_err(|e| err(e.into()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(text.as_bytes()).map_err(err)?;
        Ok(Self { fd: file.into() })
    }

    /// The file as one child's standard input (the only descriptor to it that child gets).
    pub(crate) fn stdin(&self) -> Result<Stdio, MethodError> {
        let copy =
            self.fd.try_clone().map_err(|source| MethodError::TempFile { path: "memfd:client.cnf".into(), source })?;
        Ok(Stdio::from(copy))
    }
}

impl Mariabackup {
    fn option_file(&self) -> Result<MemOptionFile, MethodError> {
        let mut text = String::new();
        if let Some(d) = &self.defaults_file {
            text.push_str(&format!("!include {}\n", d.display()));
        }
        text.push_str("[client]\n");
        if let Some(pw) = &self.server.password {
            text.push_str(&format!("password={}\n", option_value(pw)));
        }
        MemOptionFile::new(&text)
    }
}

impl Mariabackup {
    /// Runs `mariadb-backup --backup --stream=mbstream` with `extra` options and writes every file it
    /// streams into `writer` (under the datadir); returns the `xtrabackup_binlog_info` it streamed, if
    /// any.
    pub(crate) async fn stream_into(&self, writer: &ChunkWriter, extra: &[&str]) -> Result<Vec<u8>, MethodError> {
        let tmp = tempfile::Builder::new()
            .prefix("mysql-backup-operator-")
            .tempdir()
            .map_err(|source| MethodError::TempFile { path: std::env::temp_dir(), source })?;
        let option_file = self.option_file()?;
        let mut cmd = crate::mysql::tools::command(&self.tool);
        cmd.arg(format!("--defaults-file={}", MemOptionFile::PATH))
            .arg("--backup")
            .arg("--stream=mbstream")
            .arg(format!("--target-dir={}", tmp.path().join("target").display()))
            .arg(format!("--datadir={}", self.datadir.display()))
            .arg(format!("--parallel={}", self.parallel.max(1)))
            .arg(format!("--user={}", self.server.user))
            .args(extra);
        match &self.server.socket {
            Some(s) => cmd.arg(format!("--socket={s}")),
            None => cmd.arg(format!("--host={}", self.server.host)).arg(format!("--port={}", self.server.port)),
        };
        cmd.stdin(option_file.stdin()?).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| MethodError::Spawn { tool: self.tool.clone(), source })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(MethodError::Spawn { tool: self.tool.clone(), source: std::io::Error::other("no pipes") });
        };
        widen_pipe(&stdout);
        let (tail, tail_task) = collect_output(stderr, "mariadb-backup", Redaction::Grants);
        let tool_failed =
            |status: String| MethodError::ToolFailed { tool: self.tool.clone(), status, output: tail_text(&tail) };

        let mut reader = MbstreamReader::new(stdout);
        let mut open: HashMap<String, FileWriter> = HashMap::new();
        let mut binlog_info = Vec::new();
        let parsed: Result<(), MethodError> = async {
            while let Some(chunk) = reader.next_chunk().await? {
                match chunk {
                    StreamChunk::Payload { path, offset, data } => {
                        if path == "xtrabackup_binlog_info" {
                            binlog_info.extend_from_slice(&data);
                        }
                        let file = match open.get_mut(&path) {
                            Some(f) => f,
                            None => open.entry(path.clone()).or_insert(writer.open(Base::Datadir, &path, 0o640)?),
                        };
                        if offset != file.offset() {
                            return Err(MethodError::StreamOrder {
                                tool: self.tool.clone(),
                                reason: format!("{path}: data at offset {offset}, expected {}", file.offset()),
                            });
                        }
                        file.write(data).await?;
                    }
                    StreamChunk::EndOfFile { path } => {
                        let file = match open.remove(&path) {
                            Some(f) => f,
                            None => writer.open(Base::Datadir, &path, 0o640)?,
                        };
                        file.close().await?;
                    }
                }
            }
            if let Some(path) = open.keys().next() {
                return Err(MethodError::StreamOrder {
                    tool: self.tool.clone(),
                    reason: format!("stream ended before the end of {path}"),
                });
            }
            Ok(())
        }
        .await;
        if parsed.is_err() {
            let _ = child.start_kill();
        }
        let status = child.wait().await.map_err(|source| MethodError::Spawn { tool: self.tool.clone(), source })?;
        let _ = tail_task.await;
        if !status.success() {
            let missing = missing_privileges(&tail_text(&tail));
            if !missing.is_empty() {
                return Err(MethodError::MissingPrivileges {
                    user: self.server.user.clone(),
                    needed_by: "mariadb-backup",
                    privileges: missing.join(", "),
                });
            }
            return Err(tool_failed(status.to_string()));
        }
        parsed?;
        Ok(binlog_info)
    }
}

impl BackupMethod for Mariabackup {
    const KIND: MethodKind = MethodKind::Mariabackup;
    const PREPARE: Prepare = Prepare::Mariabackup;

    async fn estimated_bytes(&self) -> u64 {
        super::data_bytes(&self.datadir).await
    }

    async fn run(&self, writer: &ChunkWriter) -> Result<Positions, MethodError> {
        if let Err(source) = std::fs::read_dir(&self.datadir) {
            return Err(MethodError::Datadir { path: self.datadir.clone(), source });
        }
        let pool = self.server.pool();
        let before = server::read_positions(&pool, &self.server).await;
        let _ = pool.disconnect().await;
        let mut positions = before?;

        let binlog_info = self.stream_into(writer, &[]).await?;

        // The consistent point: mariadb-backup's own record, taken while commits were blocked.
        let info = String::from_utf8_lossy(&binlog_info);
        match parse_xtrabackup_binlog_info(&info)
            .map_err(|reason| MethodError::StreamOrder { tool: self.tool.clone(), reason })?
        {
            Some((coordinate, gtid)) => {
                positions.binlog = Some(coordinate);
                let purged = match positions.gtid.take() {
                    Some(GtidState::Mariadb { purged, .. }) => purged,
                    _ => None,
                };
                positions.gtid = Some(GtidState::Mariadb { binlog_pos: gtid, current_pos: None, purged });
            }
            None => {
                positions.binlog = None;
                positions.gtid = None;
            }
        }
        Ok(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_privileges_are_named_and_password_hashes_never_kept() {
        let output = "[00] 2026-11-30 15:39:58 Error: missing required privilege RELOAD on *.*\n\
                      [00] 2026-11-30 15:39:58 Error: missing required privilege BINLOG MONITOR on *.*\n\
                      [00] 2026-11-30 15:39:58   1.GRANT SELECT ON *.* TO `backup`@`%` IDENTIFIED BY PASSWORD '*30ED421D'";
        assert_eq!(missing_privileges(output), ["RELOAD", "BINLOG MONITOR"]);
        let last = output.lines().last().unwrap();
        assert_eq!(
            Redaction::Grants.apply(last),
            "[00] 2026-11-30 15:39:58   1.GRANT SELECT ON *.* TO `backup`@`%` IDENTIFIED … (redacted)"
        );
    }

    #[test]
    fn the_option_file_is_read_by_its_child_alone_and_never_on_disk() {
        let file = MemOptionFile::new("[client]\npassword=\"s3cret\"\n").unwrap();
        // The tool opens its standard input by name, from the start; twice, as option parsing may.
        let out = std::process::Command::new("sh")
            .args(["-c", "cat /dev/stdin; cat /dev/stdin; stat -L -c %a /dev/stdin; readlink /proc/self/fd/0"])
            .stdin(file.stdin().unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let once = "[client]\npassword=\"s3cret\"";
        assert!(text.starts_with(&format!("{once}\n{once}\n")), "{text}");
        assert_eq!(lines.nth(4), Some("600"), "the tools ignore an option file others can write");
        assert!(lines.next().unwrap().starts_with("/memfd:client.cnf"), "{text}");
        // Any other child gets no descriptor to it: it is close-on-exec.
        let fds = std::process::Command::new("ls").arg("-l").arg("/proc/self/fd").output().unwrap();
        let fds = String::from_utf8_lossy(&fds.stdout);
        assert!(!fds.contains("memfd:client.cnf"), "{fds}");
    }

    #[test]
    fn option_values_are_quoted_and_escaped() {
        assert_eq!(option_value(r#"p"a\ss"#), r#""p\"a\\ss""#);
    }
}
