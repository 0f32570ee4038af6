//! Scratch space of the operations that restore for themselves (a drill, a catch-up backup): a new
//! directory under the one given, holding the restored `datadir` and the private server's `work`
//! directory, removed when dropped.

use std::path::{Path, PathBuf};

use crate::agent::AgentError;
use crate::datapath::restore::RestoreOptions;

/// A scratch directory and its two parts.
pub struct Scratch {
    dir: tempfile::TempDir,
    /// Where the backup is restored.
    pub datadir: PathBuf,
    /// The private server's socket, log and replication files.
    pub work: PathBuf,
}

impl Scratch {
    /// Makes `<parent>/.mysql-backup-operator-<what>-<random>/{datadir,work}` (the datadir is made by
    /// the restore), refusing a file system with less than `needed` bytes free.
    pub fn new(parent: &Path, what: &str, needed: u64) -> Result<Self, AgentError> {
        let err = |dir: &Path| {
            let dir = dir.to_path_buf();
            move |source| AgentError::WorkDir { dir, source }
        };
        std::fs::create_dir_all(parent).map_err(err(parent))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!(".mysql-backup-operator-{what}-"))
            .tempdir_in(parent)
            .map_err(err(parent))?;
        let (datadir, work) = (dir.path().join("datadir"), dir.path().join("work"));
        std::fs::create_dir_all(&work).map_err(err(&work))?;
        if let Ok(stat) = nix::sys::statvfs::statvfs(dir.path()) {
            let free = stat.blocks_available() * stat.fragment_size();
            if free < needed {
                return Err(AgentError::ScratchTooSmall { dir: parent.to_path_buf(), free, needed });
            }
        }
        Ok(Self { dir, datadir, work })
    }

    /// How to restore into its datadir (binary logs beside the data).
    pub fn restore_options(&self, parallel: usize, mariabackup_tool: &str) -> RestoreOptions {
        RestoreOptions {
            datadir: self.datadir.clone(),
            binlog_dir: None,
            overwrite: false,
            parallel,
            mariabackup_tool: mariabackup_tool.to_string(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes of the files in it now, counted on a blocking thread (a restored datadir holds thousands).
    pub async fn bytes(&self) -> u64 {
        let dir = self.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || dir_bytes(&dir)).await.unwrap_or(0)
    }

    /// Removes it on a blocking thread, logging (not failing) when that fails.
    pub async fn remove(self) {
        let closed = tokio::task::spawn_blocking(move || self.dir.close()).await;
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "removing the scratch data failed"),
            Err(e) => tracing::warn!(error = %e, "removing the scratch data failed"),
        }
    }
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
