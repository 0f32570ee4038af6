//! The servers' own tools as child processes (`mariadb-backup`, `mariadbd`, `mariadb-binlog`,
//! `mariadb`): each starts with a cleared environment holding only what a tool reads for itself (the
//! search path, the home and temporary directories, the time zone and the locale). The agent's own
//! credentials — `MYSQL_PWD`, the storage keys in `AWS_*` or `AZURE_*` — never reach them: a tool that
//! needs the server's password reads it from the one in-memory option file it is given.

use std::ffi::OsStr;

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

#[cfg(test)]
mod tests {
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
