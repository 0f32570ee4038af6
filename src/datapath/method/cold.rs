//! The `cold` method: a file copy of a datadir that nothing writes to — a stopped server, or a volume
//! restored from a snapshot. It refuses a datadir with a live server (a pid file naming a running
//! server process, or a lock held on an InnoDB or Aria control file), unless forced. Positions come
//! from the binary logs in the copy.

use std::{
    os::{fd::AsFd, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
};

use futures::TryStreamExt;

use super::{BackupMethod, MethodError};
use crate::datapath::chunk::writer::ChunkWriter;
use crate::format::manifest::{Base, MethodKind, Prepare};
use crate::mysql::binlog::file as binlog_file;
use crate::mysql::position::Positions;

/// Files whose write lock means a server has the datadir open.
const LOCKED_FILES: &[&str] = &["ibdata1", "aria_log_control"];

/// Settings of a cold backup.
#[derive(Debug, Clone)]
pub struct Cold {
    /// The datadir.
    pub datadir: PathBuf,
    /// Binary log directory, when outside the datadir.
    pub binlog_dir: Option<PathBuf>,
    /// Copy even when a live server seems to use the datadir.
    pub force: bool,
    /// Files read at once.
    pub parallel: usize,
    /// Read buffer size (the chunk size).
    pub read_size: usize,
}

/// Evidence that a server is running on `datadir`, if any.
pub fn detect_live_server(datadir: &Path) -> Option<String> {
    if let Ok(entries) = std::fs::read_dir(datadir) {
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "pid")
                && let Some(pid) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok())
                && let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                && ["mysqld", "mariadbd"].contains(&comm.trim())
            {
                return Some(format!("pid file {} names running process {pid} ({})", path.display(), comm.trim()));
            }
        }
    }
    for name in LOCKED_FILES {
        let path = datadir.join(name);
        let Ok(file) = std::fs::File::open(&path) else { continue };
        let mut probe = nix::libc::flock {
            l_type: nix::libc::F_WRLCK as i16,
            l_whence: nix::libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        if nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_GETLK(&mut probe)).is_ok()
            && probe.l_type != nix::libc::F_UNLCK as i16
        {
            return Some(format!("{} is locked by process {}", path.display(), probe.l_pid));
        }
    }
    None
}

/// Binary log files named by index files found in `dirs`, oldest first.
fn find_binlogs(dirs: &[&Path]) -> Vec<PathBuf> {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "index") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let looks_like_binlogs = !text.trim().is_empty()
                && text.lines().map(str::trim).filter(|l| !l.is_empty()).all(super::is_binlog_name);
            if looks_like_binlogs {
                let files = binlog_file::files_from_index(&text, dir);
                if files.iter().all(|f| f.exists()) {
                    return files;
                }
            }
        }
    }
    Vec::new()
}

struct Entry {
    base: Base,
    abs: PathBuf,
    rel: String,
    mode: u32,
}

fn walk(root: &Path, base: Base, out: &mut Vec<Entry>) -> Result<(), MethodError> {
    for e in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let e = e.map_err(|e| MethodError::Datadir {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("filesystem loop")),
        })?;
        if e.file_type().is_symlink() {
            tracing::warn!(path = %e.path().display(), "skipping symbolic link");
            continue;
        }
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap_or(e.path()).to_string_lossy().into_owned();
        let mode = e.metadata().map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o640);
        out.push(Entry { base, abs: e.path().to_path_buf(), rel, mode });
    }
    Ok(())
}

impl BackupMethod for Cold {
    const KIND: MethodKind = MethodKind::Cold;
    const PREPARE: Prepare = Prepare::None;

    async fn estimated_bytes(&self) -> u64 {
        let dirs = std::iter::once(self.datadir.clone()).chain(self.binlog_dir.clone()).collect();
        super::dir_size(dirs, false).await
    }

    async fn run(&self, writer: &ChunkWriter) -> Result<Positions, MethodError> {
        let meta = std::fs::metadata(&self.datadir)
            .map_err(|source| MethodError::Datadir { path: self.datadir.clone(), source })?;
        if !meta.is_dir() {
            return Err(MethodError::Datadir {
                path: self.datadir.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        if let Some(evidence) = detect_live_server(&self.datadir) {
            if !self.force {
                return Err(MethodError::LiveServer { datadir: self.datadir.clone(), evidence });
            }
            tracing::warn!(datadir = %self.datadir.display(), %evidence, "copying a datadir in use because --force was given");
        }
        // The walk and the binary-log scan are blocking file I/O: off the async threads.
        let (datadir, binlog_dir) = (self.datadir.clone(), self.binlog_dir.clone().filter(|b| *b != self.datadir));
        let (entries, positions) = tokio::task::spawn_blocking(move || {
            let mut dirs = vec![datadir.as_path()];
            let mut entries = Vec::new();
            walk(&datadir, Base::Datadir, &mut entries)?;
            if let Some(b) = &binlog_dir {
                dirs.push(b);
                walk(b, Base::BinlogDir, &mut entries)?;
            }
            let positions = binlog_file::positions_from_binlogs(&find_binlogs(&dirs))?.unwrap_or_default();
            Ok::<_, MethodError>((entries, positions))
        })
        .await
        .map_err(|e| MethodError::Datadir { path: self.datadir.clone(), source: std::io::Error::other(e) })??;

        let read_size = self.read_size;
        futures::stream::iter(entries.into_iter().map(Ok))
            .try_for_each_concurrent(self.parallel.max(1), |entry| async move {
                super::copy_file(writer, entry.base, &entry.rel, entry.mode, &entry.abs, read_size, None).await
            })
            .await?;
        Ok(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_held_innodb_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_live_server(dir.path()), None);
        let path = dir.path().join("ibdata1");
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(detect_live_server(dir.path()), None);
        // Hold the lock from a child process: locks of our own process are invisible to F_GETLK.
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg("import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)")
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let evidence = detect_live_server(dir.path());
        child.kill().unwrap();
        child.wait().unwrap();
        let evidence = evidence.expect("lock detected");
        assert!(evidence.starts_with(&format!("{} is locked by process ", path.display())), "{evidence}");
    }

    #[test]
    fn detects_a_pid_file_of_a_running_server_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("host.pid"), format!("{}\n", std::process::id())).unwrap();
        // Our own process is not a server: a stale or foreign pid is not evidence.
        assert_eq!(detect_live_server(dir.path()), None);
    }
}
