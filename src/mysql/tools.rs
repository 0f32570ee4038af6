//! The servers' own tools as child processes (`mariadb-backup`, `mariadbd`, `mariadb-binlog`,
//! `mariadb`): each starts with a cleared environment holding only what a tool reads for itself (the
//! search path, the home and temporary directories, the time zone and the locale). The agent's own
//! credentials — `MYSQL_PWD`, the storage keys in `AWS_*` or `AZURE_*` — never reach them: a tool that
//! needs the server's password reads it from the one in-memory option file it is given.
//!
//! A tool's standard error is read while it runs ([`collect_output`]): a tool that writes more than a
//! pipe holds would otherwise stop, waiting for a reader. Its last lines are kept, redacted, for the
//! error that reaches a log, a Job's termination message, a status and an Event.

use std::{
    collections::VecDeque,
    ffi::OsStr,
    sync::{Arc, Mutex},
};

use tokio::io::{AsyncBufReadExt, BufReader};

/// The variables a tool inherits; every other one is dropped.
const INHERITED: &[&str] =
    &["PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "USER", "LOGNAME"];

/// A command for `program` with only the [`INHERITED`] variables of this process's environment.
pub fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear();
    for name in INHERITED {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd
}

/// Lines of a tool's output kept for an error.
const OUTPUT_TAIL: usize = 25;
/// The longest line kept: a tool may print a whole statement.
const MAX_LINE: usize = 512;

/// What is cut from a tool's output before it is kept or logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// What follows `IDENTIFIED` (a grant as SHOW GRANTS prints it carries the password hash).
    Grants,
    /// That, and every quoted value: a client's error quotes row data (`Duplicate entry 'alice@…'`),
    /// which must not reach a status or an Event, least of all for an encrypted backup.
    Values,
    /// The `mariadb` client's: only its own messages (`ERROR …`, `Warning …`, `mariadb: …`), values
    /// cut; the statement it echoes around an error is row data and is dropped.
    Client,
}

impl Redaction {
    /// Whether a line is kept at all.
    pub fn keeps(self, line: &str) -> bool {
        match self {
            Self::Client => ["ERROR", "Warning", "WARNING", "mariadb:", "mysql:"].iter().any(|p| line.starts_with(p)),
            Self::Grants | Self::Values => true,
        }
    }

    /// `line` redacted, and cut to [`MAX_LINE`] bytes.
    pub fn apply(self, line: &str) -> String {
        let line = match line.to_ascii_uppercase().find("IDENTIFIED") {
            Some(at) => format!("{}IDENTIFIED … (redacted)", &line[..at]),
            None => line.to_string(),
        };
        let line = match self {
            Self::Grants => line,
            Self::Values | Self::Client => without_quoted_values(&line),
        };
        crate::format::summary::cut(&line, MAX_LINE)
    }
}

/// `line` with the content of every '…' or "…" quoted string replaced by `…` (an unterminated one to
/// the end of the line).
fn without_quoted_values(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line.chars() {
        match quote {
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
                out.push('…');
            }
            None => out.push(c),
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => {
                quote = None;
                out.push(c);
            }
            Some(_) => {}
        }
    }
    out
}

/// Reads a child's stderr until it closes, keeping its last lines (redacted) and logging each at debug
/// level; any bytes, any amount, so the child never waits for a reader.
pub fn collect_output<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    stderr: R,
    tool: &'static str,
    redaction: Redaction,
) -> (Arc<Mutex<VecDeque<String>>>, tokio::task::JoinHandle<()>) {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let t = tail.clone();
    let handle = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).split(b'\n');
        while let Ok(Some(line)) = lines.next_segment().await {
            let line = String::from_utf8_lossy(&line);
            if !redaction.keeps(&line) {
                continue;
            }
            let line = redaction.apply(&line);
            tracing::debug!(tool, "{line}");
            let mut t = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if t.len() == OUTPUT_TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    (tail, handle)
}

/// The kept lines, joined.
pub fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_grants_are_cut_from_a_tools_output() {
        let dup = "ERROR 1062 (23000) at line 42: Duplicate entry 'alice@example.com' for key 'email'";
        assert_eq!(Redaction::Values.apply(dup), "ERROR 1062 (23000) at line 42: Duplicate entry '…' for key '…'");
        assert_eq!(Redaction::Grants.apply(dup), dup, "mariadb-backup's file names stay");
        assert_eq!(Redaction::Values.apply(r#"a "b\"c" 'd"#), r#"a "…" '…"#);
        let grant = "GRANT SELECT ON *.* TO `b`@`%` IDENTIFIED BY PASSWORD '*30ED'";
        assert_eq!(Redaction::Values.apply(grant), "GRANT SELECT ON *.* TO `b`@`%` IDENTIFIED … (redacted)");
        assert!(Redaction::Grants.apply(&"x".repeat(5000)).len() <= MAX_LINE);
        // The client echoes the failing statement around its error: only the error is kept.
        let echoed = ["--------------", "INSERT INTO app.m VALUES (987654, 'a')", "--------------", "", dup];
        let kept: Vec<String> =
            echoed.iter().filter(|l| Redaction::Client.keeps(l)).map(|l| Redaction::Client.apply(l)).collect();
        assert_eq!(kept, ["ERROR 1062 (23000) at line 42: Duplicate entry '…' for key '…'"]);
    }

    #[tokio::test]
    async fn a_child_writing_a_mebibyte_of_errors_is_read_to_the_end() {
        let mut child = command("sh")
            .args(["-c", "s=$(printf '%0.sx' $(seq 1 50)); i=0; while [ $i -lt 16384 ]; do echo \"warning $i: $s\" >&2; i=$((i+1)); done; echo done >&2"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tail, task) = collect_output(child.stderr.take().unwrap(), "sh", Redaction::Values);
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
        task.await.unwrap();
        assert!(status.success());
        let text = tail_text(&tail);
        assert_eq!(text.lines().count(), OUTPUT_TAIL);
        assert!(text.ends_with("done"), "{text}");
    }

    #[tokio::test]
    async fn a_tool_sees_only_the_inherited_variables() {
        // This test's own environment holds what any agent's may (HOME, PATH, and more).
        let out = super::command("env").env("TZ", "UTC").output().await.unwrap();
        let mut names: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        names.sort();
        assert!(names.iter().all(|n| super::INHERITED.contains(&n.as_str())), "{names:?}");
        assert!(names.contains(&"PATH".to_string()) && names.contains(&"TZ".to_string()), "{names:?}");
    }
}
