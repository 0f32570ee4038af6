//! The container runtime's process side: what `local-node container` and `local-node enter` do in the
//! fresh, single-threaded process the node spawns for every container start and every exec probe.
//!
//! `container` joins the pod's network namespace, makes a mount namespace of its own whose root is a
//! tmpfs holding the container's view of the machine (system directories bound read-only from the
//! host, the image's files, the pod's volumes), pivots into it, drops to the pod's user and group and
//! executes the container's command. `enter` joins a running container's namespaces instead (what an
//! exec probe needs: the same sockets and files as the container).
//!
//! Both run before any thread exists, as namespace changes require; neither returns on success.

use std::{
    ffi::CString,
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
    unistd::{Gid, Uid, chdir, execve, pivot_root, setgid, setgroups, sethostname, setuid},
};
use serde::{Deserialize, Serialize};

/// Everything the runtime needs to start one container, written by the node as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// An empty directory that becomes the container's root (a tmpfs is mounted on it).
    pub root: PathBuf,
    /// The pod's network namespace (`/run/netns/<name>`).
    pub netns: PathBuf,
    /// The pod's host name.
    pub hostname: String,
    /// Mounts, in order: a parent before what is mounted inside it.
    pub mounts: Vec<Mount>,
    /// The command and its arguments; `argv[0]` is looked up in the container's `PATH`.
    pub argv: Vec<String>,
    /// The environment, in order.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the pod's fsGroup and supplementalGroups).
    pub groups: Vec<u32>,
}

/// One entry of the container's file system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container.
    pub target: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountKind {
    /// A bind mount of a host file or directory (recursive).
    Bind { source: PathBuf, read_only: bool },
    /// A fresh tmpfs with this mode.
    Tmpfs { mode: u32 },
    /// A symbolic link.
    Symlink { to: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("reading the container spec {path}: {source}")]
    ReadSpec { path: PathBuf, source: std::io::Error },
    #[error("parsing the container spec {path}: {source}")]
    ParseSpec { path: PathBuf, source: serde_json::Error },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("executable file not found in $PATH: {0}")]
    NotFound(String),
    #[error("an argument holds a NUL byte")]
    Nul,
}

fn sys<T>(what: impl FnOnce() -> String, r: nix::Result<T>) -> Result<T, RuntimeError> {
    r.map_err(|source| RuntimeError::Sys { what: what(), source })
}

fn io<T>(what: impl FnOnce() -> String, r: std::io::Result<T>) -> Result<T, RuntimeError> {
    r.map_err(|source| RuntimeError::Io { what: what(), source })
}

pub fn read_spec(path: &Path) -> Result<ContainerSpec, RuntimeError> {
    let text = fs::read(path).map_err(|source| RuntimeError::ReadSpec { path: path.into(), source })?;
    serde_json::from_slice(&text).map_err(|source| RuntimeError::ParseSpec { path: path.into(), source })
}

/// Starts the container described by `spec` in this process. Returns only on failure.
pub fn run_container(spec: &ContainerSpec) -> RuntimeError {
    match build_and_exec(spec) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Runs `spec.argv` inside the namespaces of the running process `pid` (an exec probe). Returns only
/// on failure.
pub fn enter_container(pid: i32, spec: &ContainerSpec) -> RuntimeError {
    let enter = || -> Result<std::convert::Infallible, RuntimeError> {
        for (ns, flag) in
            [("net", CloneFlags::CLONE_NEWNET), ("uts", CloneFlags::CLONE_NEWUTS), ("mnt", CloneFlags::CLONE_NEWNS)]
        {
            let path = format!("/proc/{pid}/ns/{ns}");
            let file = io(|| format!("opening {path}"), fs::File::open(&path))?;
            sys(|| format!("joining {path}"), setns(&file, flag))?;
        }
        exec_as(spec)
    };
    match enter() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn build_and_exec(spec: &ContainerSpec) -> Result<std::convert::Infallible, RuntimeError> {
    let netns = io(|| format!("opening {}", spec.netns.display()), fs::File::open(&spec.netns))?;
    sys(|| format!("joining {}", spec.netns.display()), setns(&netns, CloneFlags::CLONE_NEWNET))?;
    sys(|| "a mount and UTS namespace".into(), unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS))?;
    sys(|| format!("setting the host name {}", spec.hostname), sethostname(&spec.hostname))?;
    // Nothing mounted here propagates back to the host.
    sys(
        || "making / private".into(),
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>),
    )?;
    let root = &spec.root;
    sys(
        || format!("mounting the root tmpfs on {}", root.display()),
        mount(Some("tmpfs"), root, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=0755")),
    )?;
    for m in &spec.mounts {
        apply_mount(root, m)?;
    }
    let old = root.join(".old-root");
    io(|| "creating .old-root".into(), fs::create_dir_all(&old))?;
    sys(|| format!("pivoting into {}", root.display()), pivot_root(root, &old))?;
    sys(|| "chdir /".into(), chdir("/"))?;
    sys(|| "detaching the old root".into(), umount2("/.old-root", MntFlags::MNT_DETACH))?;
    let _ = fs::remove_dir("/.old-root");
    exec_as(spec)
}

/// `target` (absolute, inside the container) as a host path under `root`, its symbolic links followed
/// inside `root`: an absolute link means the container's root, never the host's.
fn resolve_in(root: &Path, target: &str) -> PathBuf {
    let mut resolved = root.to_path_buf();
    let mut pending: Vec<String> = target.split('/').filter(|c| !c.is_empty()).rev().map(String::from).collect();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                if resolved != root {
                    resolved.pop();
                }
                continue;
            }
            _ => {}
        }
        let next = resolved.join(&component);
        match fs::read_link(&next) {
            Ok(link) if hops < 40 && !pending.is_empty() => {
                hops += 1;
                let link = link.to_string_lossy().into_owned();
                if link.starts_with('/') {
                    resolved = root.to_path_buf();
                }
                pending.extend(link.split('/').filter(|c| !c.is_empty()).rev().map(String::from));
            }
            _ => resolved = next,
        }
    }
    resolved
}

fn apply_mount(root: &Path, m: &Mount) -> Result<(), RuntimeError> {
    let target = resolve_in(root, &m.target);
    let parent = target.parent().unwrap_or(root).to_path_buf();
    io(|| format!("creating {}", parent.display()), fs::create_dir_all(&parent))?;
    match &m.kind {
        MountKind::Symlink { to } => {
            let _ = fs::remove_file(&target);
            io(|| format!("linking {} to {to}", m.target), symlink(to, &target))
        }
        MountKind::Tmpfs { mode } => {
            io(|| format!("creating {}", m.target), fs::create_dir_all(&target))?;
            let data = format!("mode={mode:o}");
            sys(
                || format!("mounting a tmpfs on {}", m.target),
                mount(Some("tmpfs"), &target, Some("tmpfs"), MsFlags::MS_NOSUID, Some(data.as_str())),
            )
        }
        MountKind::Bind { source, read_only } => {
            let meta = io(|| format!("the source of {}: {}", m.target, source.display()), fs::metadata(source))?;
            if meta.is_dir() {
                io(|| format!("creating {}", m.target), fs::create_dir_all(&target))?;
            } else if fs::symlink_metadata(&target).is_err() {
                io(|| format!("creating {}", m.target), fs::File::create(&target))?;
            }
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            sys(
                || format!("binding {} on {}", source.display(), m.target),
                mount(Some(source.as_path()), &target, None::<&str>, flags, None::<&str>),
            )?;
            if *read_only {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
                sys(
                    || format!("making {} read-only", m.target),
                    mount(None::<&str>, &target, None::<&str>, flags, None::<&str>),
                )?;
            }
            Ok(())
        }
    }
}

/// Drops to the container's user and executes its command.
fn exec_as(spec: &ContainerSpec) -> Result<std::convert::Infallible, RuntimeError> {
    let groups: Vec<Gid> = spec.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    sys(|| "setting the supplementary groups".into(), setgroups(&groups))?;
    sys(|| format!("setting group {}", spec.gid), setgid(Gid::from_raw(spec.gid)))?;
    sys(|| format!("setting user {}", spec.uid), setuid(Uid::from_raw(spec.uid)))?;
    if chdir(spec.cwd.as_str()).is_err() {
        // As a runtime does: the working directory is created when missing (and left to the user).
        let _ = fs::create_dir_all(&spec.cwd);
        sys(|| format!("chdir {}", spec.cwd), chdir(spec.cwd.as_str()))?;
    }
    let program = spec.argv.first().ok_or_else(|| RuntimeError::NotFound(String::new()))?;
    let path = lookup(program, spec)?;
    let cstr = |s: &str| CString::new(s).map_err(|_| RuntimeError::Nul);
    let argv = spec.argv.iter().map(|a| cstr(a)).collect::<Result<Vec<_>, _>>()?;
    let env = spec.env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
    sys(|| format!("executing {program}"), execve(&cstr(&path)?, &argv, &env))
}

/// Finds `program` on the container's `PATH` as a shell would.
fn lookup(program: &str, spec: &ContainerSpec) -> Result<String, RuntimeError> {
    if program.contains('/') {
        return Ok(program.to_string());
    }
    let path = spec.env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| format!("{dir}/{program}"))
        .find(|candidate| fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| RuntimeError::NotFound(program.to_string()))
}

/// The `PATH` of a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_root() {
        let root = tempdir();
        fs::create_dir_all(root.join("run")).unwrap();
        fs::create_dir_all(root.join("var")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        symlink("../../run", root.join("var/up")).unwrap();
        assert_eq!(resolve_in(&root, "/var/run/secrets/x"), root.join("run/secrets/x"));
        assert_eq!(resolve_in(&root, "/var/up/a"), root.join("run/a"));
        assert_eq!(resolve_in(&root, "/../../etc"), root.join("etc"));
        // The last component is the mount point itself: a link there is replaced, not followed.
        assert_eq!(resolve_in(&root, "/var/run"), root.join("var/run"));
        fs::remove_dir_all(&root).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("local-node-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
