//! A container's launch and end: its command line, mounts and runtime spec, one run to its exit,
//! and what it leaves behind (the termination message, the tail of its log).

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Seek, SeekFrom},
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, Pod};
use kube::ResourceExt;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

use crate::pods::*;
use crate::probes::Prober;
use crate::{
    Ctx,
    images::Image,
    network::{GATEWAY, PodNetwork},
    runtime::{ContainerSpec, DEFAULT_PATH, Mount, MountKind},
    volumes::{self},
};

/// The command line of `c` in `image`, as a container runtime puts entrypoint, cmd, command and args
/// together, `$(VAR)` expanded.
pub(crate) fn command_line(c: &Container, image: &Image, env: &[(String, String)]) -> Vec<String> {
    let argv = match (&c.command, &c.args) {
        (Some(cmd), Some(args)) => cmd.iter().chain(args).cloned().collect(),
        (Some(cmd), None) => cmd.clone(),
        (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    argv.iter().map(|a| volumes::expand(a, env)).collect()
}

pub(crate) fn base_mounts(dir: &Path, container_dir: &Path) -> Vec<Mount> {
    let bind = |target: &str, source: PathBuf, read_only: bool| Mount {
        target: target.into(),
        kind: MountKind::Bind { source, read_only },
    };
    let tmpfs = |target: &str, mode: u32| Mount { target: target.into(), kind: MountKind::Tmpfs { mode } };
    let link = |target: &str, to: &str| Mount { target: target.into(), kind: MountKind::Symlink { to: to.into() } };
    let mut mounts = Vec::new();
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc"] {
        let host = Path::new("/").join(top);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(to) = fs::read_link(&host) {
                    mounts.push(link(&format!("/{top}"), &to.to_string_lossy()));
                }
            }
            Ok(m) if m.is_dir() => mounts.push(bind(&format!("/{top}"), host, true)),
            _ => {}
        }
    }
    for file in ["hosts", "hostname", "resolv.conf"] {
        mounts.push(bind(&format!("/etc/{file}"), dir.join("etc").join(file), true));
    }
    mounts.push(bind("/proc", "/proc".into(), false));
    mounts.push(bind("/sys", "/sys".into(), true));
    mounts.push(tmpfs("/dev", 0o755));
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        mounts.push(bind(&format!("/dev/{dev}"), Path::new("/dev").join(dev), false));
    }
    mounts.push(bind("/dev/pts", "/dev/pts".into(), false));
    mounts.push(tmpfs("/dev/shm", 0o1777));
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        mounts.push(link(&format!("/dev/{name}"), to));
    }
    mounts.push(bind("/dev/termination-log", container_dir.join("termination-log"), false));
    for (target, mode) in
        [("/tmp", 0o1777), ("/run", 0o755), ("/var", 0o755), ("/var/tmp", 0o1777), ("/root", 0o700), ("/home", 0o755)]
    {
        mounts.push(tmpfs(target, mode));
    }
    // Relative: mounts are made before the pivot, where an absolute link would lead into the host.
    mounts.push(link("/var/run", "../run"));
    mounts
}

/// What starting one container of a pod needs.
pub(crate) struct Launch<'a> {
    pub(crate) pod: &'a Pod,
    pub(crate) container: &'a Container,
    pub(crate) image: &'a Image,
    /// Each volume's host path.
    pub(crate) paths: &'a BTreeMap<String, PathBuf>,
    pub(crate) net: &'a PodNetwork,
    /// The pod's folder.
    pub(crate) dir: &'a Path,
}

/// Starts a container once and waits for it, probing it meanwhile. Returns its exit code, or `None`
/// when it could not start in a way that ends the pod.
pub(crate) async fn run_once(shared: &Arc<Shared>, launch: &Launch<'_>, init: bool) -> Option<i32> {
    let Launch { container: c, net, dir, .. } = *launch;
    if shared.stopping() {
        return None;
    }
    let ctx = &shared.ctx;
    let ip = net.ip.to_string();
    let spec = match container_spec(ctx, launch).await {
        Ok(spec) => spec,
        Err(message) => {
            shared.container(init, &c.name, |t| t.state = waiting("CreateContainerConfigError", Some(message.clone())));
            shared.publish().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Some(1);
        }
    };
    let container_dir = dir.join("containers").join(&c.name);
    let spec_path = container_dir.join("spec.json");
    let log_path = dir.join("logs").join(format!("{}.log", c.name));
    let prepared = (|| -> std::io::Result<(fs::File, fs::File)> {
        fs::create_dir_all(&spec.root)?;
        fs::create_dir_all(dir.join("logs"))?;
        let term = container_dir.join("termination-log");
        fs::write(&term, b"")?;
        fs::set_permissions(&term, fs::Permissions::from_mode(0o666))?;
        fs::write(&spec_path, serde_json::to_vec_pretty(&spec).map_err(std::io::Error::other)?)?;
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let err = log.try_clone()?;
        Ok((log, err))
    })();
    let (out, err) = match prepared {
        Ok(files) => files,
        Err(e) => {
            fail(shared, "RunContainerError", format!("preparing container {}: {e}", c.name)).await;
            return None;
        }
    };
    let started = now();
    let child = tokio::process::Command::new(&ctx.self_exe)
        .arg("container")
        .arg("--spec")
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            fail(shared, "RunContainerError", format!("starting container {}: {e}", c.name)).await;
            return None;
        }
    };
    let pid = child.id().map(|p| p as i32).unwrap_or_default();
    if let Ok(mut p) = shared.processes.lock() {
        p.insert(c.name.clone(), pid);
    }
    let has_readiness = c.readiness_probe.is_some();
    shared.container(init, &c.name, |t| {
        t.state = ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(started.clone()) }),
            ..Default::default()
        };
        t.ready = !init && !has_readiness;
    });
    shared.publish().await;
    tracing::info!(pod = %shared.name, container = %c.name, pid, "started");

    let mut readiness = c.readiness_probe.clone().map(|p| Prober::new(p, "readiness"));
    let mut liveness = c.liveness_probe.clone().map(|p| Prober::new(p, "liveness"));
    let status = loop {
        let next = [readiness.as_ref().map(|p| p.next), liveness.as_ref().map(|p| p.next)].into_iter().flatten().min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => break status,
            _ = sleep => {
                if let Some(p) = readiness.as_mut().filter(|p| p.due()) {
                    let ok = p.probe(ctx, c, &spec_path, pid, &ip, &net.namespace).await;
                    if let Some(ready) = p.record(ok) {
                        shared.container(init, &c.name, |t| t.ready = ready);
                        shared.publish().await;
                    }
                }
                if let Some(p) = liveness.as_mut().filter(|p| p.due()) {
                    let ok = p.probe(ctx, c, &spec_path, pid, &ip, &net.namespace).await;
                    if p.record(ok) == Some(false) {
                        tracing::info!(pod = %shared.name, container = %c.name, "liveness probe failed: restarting");
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
    };
    // Whatever the main process left behind goes with it.
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    if let Ok(mut p) = shared.processes.lock() {
        p.remove(&c.name);
    }
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)),
        Err(_) => 255,
    };
    let message = termination_message(c, &container_dir.join("termination-log"), &log_path, code);
    tracing::info!(pod = %shared.name, container = %c.name, code, "exited");
    shared.container(init, &c.name, |t| {
        t.ready = false;
        t.state = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                message,
                started_at: Some(started.clone()),
                finished_at: Some(now()),
                container_id: Some(format!("local://{pid}")),
                signal: None,
            }),
            ..Default::default()
        };
    });
    shared.publish().await;
    Some(code)
}

/// The termination message: the container's file, else (policy FallbackToLogsOnError, on failure) the
/// end of its log; at most 4096 bytes, as a kubelet keeps.
pub(crate) fn termination_message(c: &Container, file: &Path, log: &Path, code: i32) -> Option<String> {
    let text = fs::read(file).ok().map(|mut b| {
        b.truncate(4096);
        String::from_utf8_lossy(&b).into_owned()
    });
    if text.as_deref().is_some_and(|t| !t.is_empty()) {
        return text;
    }
    if code != 0 && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") {
        let tail = tail(log, 80, 2048);
        return (!tail.is_empty()).then_some(tail);
    }
    None
}

/// The last `lines` lines of `path`, at most `max` bytes.
pub fn tail(path: &Path, lines: usize, max: u64) -> String {
    let Ok(mut f) = fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) async fn container_spec(ctx: &Ctx, launch: &Launch<'_>) -> Result<ContainerSpec, String> {
    let Launch { pod, container: c, image, paths, net, dir } = *launch;
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let ip = net.ip.to_string();
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    let mut base = image.env.clone();
    base.push(("PATH".into(), DEFAULT_PATH.into()));
    base.push(("HOSTNAME".into(), hostname.clone()));
    base.push(("KUBERNETES_SERVICE_HOST".into(), GATEWAY.to_string()));
    base.push(("KUBERNETES_SERVICE_PORT".into(), "443".into()));
    base.push(("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into()));
    base.push(("KUBERNETES_PORT".into(), format!("tcp://{GATEWAY}:443")));
    let env = volumes::environment(&ctx.client, pod, c, &ip, base).await.map_err(|e| e.to_string())?;
    let pod_sc = spec.security_context.as_ref();
    let sc = c.security_context.as_ref();
    let uid = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user)).unwrap_or(0) as u32;
    let gid = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group)).unwrap_or(0) as u32;
    let mut groups: Vec<u32> = pod_sc.and_then(|s| s.fs_group).into_iter().map(|g| g as u32).collect();
    groups.extend(pod_sc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default().into_iter().map(|g| g as u32));
    let env = if env.iter().any(|(k, _)| k == "HOME") {
        env
    } else {
        let mut env = env;
        env.push(("HOME".into(), if uid == 0 { "/root" } else { "/" }.into()));
        env
    };
    let container_dir = dir.join("containers").join(&c.name);
    let mut mounts = base_mounts(dir, &container_dir);
    mounts.extend(image.mounts.iter().cloned());
    for vm in c.volume_mounts.iter().flatten() {
        let source = paths.get(&vm.name).ok_or_else(|| format!("volume mount {}: no volume of that name", vm.name))?;
        let source = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let path = source.join(sub);
                if !path.exists() {
                    fs::create_dir_all(&path).map_err(|e| format!("subPath {sub}: {e}"))?;
                    if let Some(gid) = pod_sc.and_then(|s| s.fs_group) {
                        volumes::apply_fs_group(&path, gid as u32);
                    }
                }
                path
            }
            None => source.clone(),
        };
        mounts.push(Mount {
            target: vm.mount_path.clone(),
            kind: MountKind::Bind { source, read_only: vm.read_only.unwrap_or(false) },
        });
    }
    let argv = command_line(c, image, &env);
    if argv.is_empty() {
        return Err(format!("container {} has no command", c.name));
    }
    Ok(ContainerSpec {
        root: container_dir.join("root"),
        netns: net.netns_path(),
        hostname,
        mounts,
        argv,
        env,
        cwd: c.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
        uid,
        gid,
        groups,
    })
}
