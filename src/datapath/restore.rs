//! Restore: write a backup's files into an empty target directory, each chunk verified before its
//! bytes land, then run the method's prepare step. A marker file stays in the target from the first
//! write until everything (prepare included) succeeded, so a half-restored datadir is never taken for
//! a good one: `restore` refuses a target holding the marker unless told to overwrite, and the
//! operator never starts a server on it.

use std::{
    os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use futures::TryStreamExt;

use crate::datapath::chunk::reader::{ChunkReadError, fetch_verified};
use crate::datapath::progress::Progress;
use crate::format::manifest::{Base, FileEntry, Manifest, Prepare};
use crate::mysql::tools::{Redaction, collect_output, tail_text};
use crate::storage::{Storage, StorageError};

/// Name of the marker file kept in the target while a restore is incomplete.
pub const IN_PROGRESS_MARKER: &str = ".mysql-backup-operator-restore-in-progress";

/// Errors of restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the manifest failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The target holds files and overwriting was not asked for.
    #[error(
        "target {path} is not empty ({detail}); restore into an empty directory or pass --overwrite to replace its contents"
    )]
    TargetNotEmpty { path: PathBuf, detail: String },
    /// Preparing the target directory failed.
    #[error("target {path}: {source}")]
    Target { path: PathBuf, source: std::io::Error },
    /// A chunk failed to download or verify.
    #[error("restoring {path} (offset {offset}): {source}")]
    Chunk { path: String, offset: u64, source: ChunkReadError },
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// The prepare tool could not run or failed.
    #[error("preparing the restored datadir with {tool} failed ({status}); its last output:\n{output}")]
    Prepare { tool: String, status: String, output: String },
}

/// Settings of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Target datadir.
    pub datadir: PathBuf,
    /// Where files of the binlog directory go (default: the datadir).
    pub binlog_dir: Option<PathBuf>,
    /// Replace the contents of a non-empty target.
    pub overwrite: bool,
    /// Chunks downloaded at once.
    pub parallel: usize,
    /// mariadb-backup binary for the prepare step.
    pub mariabackup_tool: String,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds spent downloading and writing.
    pub transfer_seconds: f64,
    /// Seconds spent in the prepare step.
    pub prepare_seconds: f64,
}

fn target_err(path: &Path) -> impl Fn(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Target { path: path.to_path_buf(), source }
}

/// Entries a freshly formatted volume holds, which do not make a target "not empty" and are kept.
const VOLUME_ENTRIES: &[&str] = &["lost+found"];

/// Makes `dir` an empty directory: creates it, or empties it when `overwrite`, else refuses.
fn make_empty(dir: &Path, overwrite: bool) -> Result<(), RestoreError> {
    std::fs::create_dir_all(dir).map_err(target_err(dir))?;
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(target_err(dir))?
        .filter_map(Result::ok)
        .filter(|e| !VOLUME_ENTRIES.iter().any(|v| e.file_name() == *v))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    if !overwrite {
        let interrupted = entries.iter().any(|e| e.file_name() == IN_PROGRESS_MARKER);
        let detail = if interrupted {
            "it holds an interrupted restore".to_string()
        } else {
            let first = entries.iter().map(|e| e.file_name().to_string_lossy().into_owned()).min().unwrap_or_default();
            format!("{} entries, e.g. {first:?}", entries.len())
        };
        return Err(RestoreError::TargetNotEmpty { path: dir.to_path_buf(), detail });
    }
    for e in entries {
        let p = e.path();
        let res = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        res.map_err(target_err(&p))?;
    }
    Ok(())
}

/// The directories a manifest's bases resolve to.
#[derive(Clone, Copy)]
struct Roots<'a> {
    datadir: &'a Path,
    binlog_dir: &'a Path,
}

/// One file being restored, open while chunks of it are in flight.
struct Target {
    /// The path as the manifest has it, for errors.
    rel: String,
    mode: u32,
    path: PathBuf,
    file: std::fs::File,
    /// Chunks not written yet; the write that takes it to zero closes the file.
    left: AtomicUsize,
}

impl Roots<'_> {
    /// Creates `f` at its final size (chunks then land with positioned writes); a file without chunks
    /// is complete at once.
    async fn open(&self, f: &FileEntry) -> Result<Arc<Target>, RestoreError> {
        let root = match f.base {
            Base::Datadir => self.datadir,
            Base::BinlogDir => self.binlog_dir,
        };
        let path = root.join(&f.path);
        let (size, task_path) = (f.size, path.clone());
        let file = tokio::task::spawn_blocking(move || {
            let path = task_path;
            let write_err = |path: &Path| {
                let path = path.to_path_buf();
                move |source| RestoreError::Write { path, source }
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(write_err(parent))?;
            }
            // O_NOFOLLOW and create_new: a path never resolves through a link or onto an existing file.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&path)
                .map_err(write_err(&path))?;
            file.set_len(size).map_err(write_err(&path))?;
            Ok::<_, RestoreError>(file)
        })
        .await
        .map_err(|e| RestoreError::Write { path: path.clone(), source: std::io::Error::other(e) })??;
        let left = AtomicUsize::new(f.chunks.len());
        let target = Arc::new(Target { rel: f.path.clone(), mode: f.mode, path, file, left });
        if f.chunks.is_empty() {
            target.close()?;
        }
        Ok(target)
    }
}

impl Target {
    /// Gives the file its recorded mode; its descriptor closes with the last reference. Durability
    /// comes after every file is written, with one `syncfs` (see [`sync_filesystems`]): a sync per
    /// file made a restore of 40,000 files twice as slow as `tar -x`.
    fn close(&self) -> Result<(), RestoreError> {
        let err = |source| RestoreError::Write { path: self.path.clone(), source };
        self.file.set_permissions(std::fs::Permissions::from_mode(self.mode & 0o7777)).map_err(err)
    }
}

/// Makes everything written under `dirs` durable: one `syncfs(2)` per directory's filesystem, which
/// also reports a write-back error (ENOSPC, EIO) of any file written there since.
async fn sync_filesystems(dirs: Vec<PathBuf>) -> Result<(), RestoreError> {
    tokio::task::spawn_blocking(move || {
        for dir in dirs {
            let sync = std::fs::File::open(&dir).and_then(|d| nix::unistd::syncfs(&d).map_err(std::io::Error::from));
            sync.map_err(|source| RestoreError::Write { path: dir.clone(), source })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| RestoreError::Write { path: PathBuf::new(), source: std::io::Error::other(e) })?
}

/// Runs `mariadb-backup --prepare` on a restored directory.
async fn prepare_mariabackup(tool: &str, dir: &Path) -> Result<(), RestoreError> {
    let failed = |status: String, output: String| RestoreError::Prepare { tool: tool.to_string(), status, output };
    let mut child = crate::mysql::tools::command(tool)
        .arg("--prepare")
        .arg(format!("--target-dir={}", dir.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed("could not start".into(), e.to_string()))?;
    let Some(stderr) = child.stderr.take() else {
        return Err(failed("could not start".into(), "no stderr pipe".into()));
    };
    let (tail, task) = collect_output(stderr, "mariadb-backup --prepare", Redaction::Grants);
    let status = child.wait().await.map_err(|e| failed("could not wait".into(), e.to_string()))?;
    let _ = task.await;
    if !status.success() {
        return Err(failed(status.to_string(), tail_text(&tail)));
    }
    Ok(())
}

/// Restores `manifest` from `storage` into `opts.datadir`.
pub async fn restore(
    storage: &Storage,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreOutcome, RestoreError> {
    let started = Instant::now();
    let datadir = &opts.datadir;
    let binlog_dir = opts.binlog_dir.clone().unwrap_or_else(|| datadir.clone());
    // Emptying a datadir (--overwrite) is blocking I/O over every file: off the async threads.
    let (dirs, overwrite) = (vec![datadir.clone(), binlog_dir.clone()], opts.overwrite);
    tokio::task::spawn_blocking(move || {
        make_empty(&dirs[0], overwrite)?;
        if dirs[1] != dirs[0] { make_empty(&dirs[1], overwrite) } else { Ok(()) }
    })
    .await
    .map_err(|e| RestoreError::Target { path: datadir.clone(), source: std::io::Error::other(e) })??;
    let marker = datadir.join(IN_PROGRESS_MARKER);
    std::fs::write(&marker, format!("{{\"backupId\":\"{}\"}}\n", manifest.backup_id)).map_err(target_err(&marker))?;

    // Files are opened in manifest order only as their chunks are reached, and closed (synced, given
    // their mode) by whichever write lands last: at most `in_flight` chunks, so at most `in_flight + 1`
    // files, are open at once whatever the number of files.
    let in_flight = opts.parallel.max(1) * 2;
    let namer = &storage.chunk_namer_of(manifest)?;
    let roots = Roots { datadir, binlog_dir: &binlog_dir };
    futures::stream::iter(manifest.files.iter().map(Ok::<_, RestoreError>))
        .and_then(|f| async move {
            let target = roots.open(f).await?;
            Ok(futures::stream::iter(f.chunks.iter().map(move |c| Ok((target.clone(), c)))))
        })
        .try_flatten()
        .map_ok(|(target, c)| {
            let progress = progress.clone();
            async move {
                let data = fetch_verified(storage, namer, c).await.map_err(|source| RestoreError::Chunk {
                    path: target.rel.clone(),
                    offset: c.offset,
                    source,
                })?;
                let len = data.len() as u64;
                let offset = c.offset;
                let path = target.path.clone();
                tokio::task::spawn_blocking(move || {
                    target
                        .file
                        .write_all_at(&data, offset)
                        .map_err(|source| RestoreError::Write { path: target.path.clone(), source })?;
                    if target.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        target.close()?;
                    }
                    Ok::<_, RestoreError>(())
                })
                .await
                .map_err(|e| RestoreError::Write { path, source: std::io::Error::other(e) })??;
                progress.add_done(len);
                Ok::<_, RestoreError>(())
            }
        })
        .try_buffer_unordered(in_flight)
        .try_collect::<()>()
        .await?;
    let mut dirs = vec![datadir.clone()];
    if binlog_dir != *datadir {
        dirs.push(binlog_dir.clone());
    }
    sync_filesystems(dirs).await?;
    let transfer_seconds = started.elapsed().as_secs_f64();

    let prepare_started = Instant::now();
    match manifest.prepare {
        Prepare::None => {}
        Prepare::Mariabackup => prepare_mariabackup(&opts.mariabackup_tool, datadir).await?,
    }
    let prepare_seconds = prepare_started.elapsed().as_secs_f64();
    std::fs::remove_file(&marker).map_err(target_err(&marker))?;
    if let Ok(dir) = std::fs::File::open(datadir) {
        let _ = dir.sync_all();
    }
    Ok(RestoreOutcome {
        files: manifest.totals.files,
        bytes: manifest.totals.data_bytes,
        transfer_seconds,
        prepare_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_empty_targets_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ibdata1"), b"x").unwrap();
        let err = make_empty(dir.path(), false).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "target {} is not empty (1 entries, e.g. \"ibdata1\"); restore into an empty directory or pass --overwrite to replace its contents",
                dir.path().display()
            )
        );
        std::fs::write(dir.path().join(IN_PROGRESS_MARKER), b"{}").unwrap();
        let err = make_empty(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("(it holds an interrupted restore)"), "{err}");
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::fs::create_dir(dir.path().join("lost+found")).unwrap();
        make_empty(dir.path(), true).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec!["lost+found"], "a volume's lost+found is kept");
        make_empty(dir.path(), false).expect("a fresh volume with only lost+found counts as empty");
    }
}
