//! One pod's life on this node, as a kubelet lives it: a network namespace and an address, volumes,
//! init containers one after the other, then the containers with their restart policy and readiness and
//! liveness probes, the status written through `pods/status` after every change, and on deletion the
//! processes stopped (SIGTERM, the grace period, SIGKILL) and the pod removed.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, Pod, PodCondition, PodIP, PodStatus, Probe,
    },
    apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::sync::{Mutex, watch};

use crate::{
    Ctx,
    images::Image,
    network::{GATEWAY, PodNetwork},
    runtime::{ContainerSpec, DEFAULT_PATH, Mount, MountKind},
    volumes::{self, Prepared},
};

/// How often the projected service-account tokens of a running pod are renewed (they last an hour).
const TOKEN_RENEWAL: Duration = Duration::from_secs(30 * 60);

/// Aborts a task when dropped (with the lifecycle that started it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The latest pod object the watch delivered, or `None` once it is gone from the API.
pub type PodUpdates = watch::Receiver<Option<Pod>>;

/// Now, as the API writes times.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// What the node knows of one container, turned into a `ContainerStatus` when published.
#[derive(Debug, Clone)]
struct Tracked {
    name: String,
    image: String,
    state: ContainerState,
    last: Option<ContainerState>,
    ready: bool,
    restarts: i32,
}

impl Tracked {
    fn new(c: &Container, reason: &str) -> Self {
        Self {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: waiting(reason, None),
            last: None,
            ready: false,
            restarts: 0,
        }
    }

    fn status(&self) -> ContainerStatus {
        let running = self.state.running.is_some();
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("local://{}", self.image),
            container_id: None,
            ready: self.ready,
            restart_count: self.restarts,
            started: Some(running),
            state: Some(self.state.clone()),
            last_state: self.last.clone(),
            ..Default::default()
        }
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    }
}

/// The pod's status as the node sees it.
#[derive(Debug)]
struct Model {
    phase: String,
    reason: Option<String>,
    message: Option<String>,
    pod_ip: Option<String>,
    start_time: Time,
    initialized: bool,
    init: Vec<Tracked>,
    containers: Vec<Tracked>,
    transitions: BTreeMap<String, (String, Time)>,
}

/// What the pod's tasks share: the model, the process groups to stop, and the publisher.
pub struct Shared {
    ctx: Arc<Ctx>,
    api: Api<Pod>,
    name: String,
    model: std::sync::Mutex<Model>,
    processes: std::sync::Mutex<HashMap<String, i32>>,
    publishing: Mutex<()>,
    /// Set once the pod is being deleted: nothing starts or restarts after it.
    stopping: AtomicBool,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn update(&self, f: impl FnOnce(&mut Model)) {
        if let Ok(mut m) = self.model.lock() {
            f(&mut m);
        }
    }

    fn container(&self, init: bool, name: &str, f: impl FnOnce(&mut Tracked)) {
        self.update(|m| {
            let list = if init { &mut m.init } else { &mut m.containers };
            if let Some(t) = list.iter_mut().find(|t| t.name == name) {
                f(t);
            }
        });
    }

    /// Writes the status through `pods/status`.
    async fn publish(&self) {
        let _one_at_a_time = self.publishing.lock().await;
        let status = match self.model.lock() {
            Ok(mut m) => build_status(&mut m),
            Err(_) => return,
        };
        let patch = serde_json::json!({ "status": status });
        match self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            // Deleted meanwhile: the deletion reaches the pod's task next.
            Err(kube::Error::Api(e)) if e.code == 404 => tracing::debug!(pod = %self.name, "gone"),
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "writing the pod status"),
        }
    }
}

fn build_status(m: &mut Model) -> PodStatus {
    let all_ready = !m.containers.is_empty() && m.containers.iter().all(|c| c.ready);
    let running = m.phase == "Running";
    let terminal = m.phase == "Succeeded" || m.phase == "Failed";
    let mut conditions = Vec::new();
    let wanted = [
        ("PodScheduled", true),
        ("PodReadyToStartContainers", m.pod_ip.is_some() && !terminal),
        ("Initialized", m.initialized),
        ("ContainersReady", all_ready && running),
        ("Ready", all_ready && running),
    ];
    for (kind, ok) in wanted {
        let status = if ok { "True" } else { "False" }.to_string();
        let entry = m.transitions.entry(kind.to_string()).or_insert_with(|| (status.clone(), now()));
        if entry.0 != status {
            *entry = (status.clone(), now());
        }
        conditions.push(PodCondition {
            type_: kind.into(),
            status,
            last_transition_time: Some(entry.1.clone()),
            reason: (!ok && kind.ends_with("Ready") && !terminal).then(|| "ContainersNotReady".into()),
            ..Default::default()
        });
    }
    PodStatus {
        phase: Some(m.phase.clone()),
        reason: m.reason.clone(),
        message: m.message.clone(),
        host_ip: Some("127.0.0.1".into()),
        host_ips: None,
        pod_ip: m.pod_ip.clone(),
        pod_ips: m.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: Some(m.start_time.clone()),
        conditions: Some(conditions),
        init_container_statuses: (!m.init.is_empty()).then(|| m.init.iter().map(Tracked::status).collect()),
        container_statuses: Some(m.containers.iter().map(Tracked::status).collect()),
        ..Default::default()
    }
}

/// The folder of a pod's files on this node.
pub fn pod_dir(ctx: &Ctx, pod: &Pod) -> PathBuf {
    ctx.state.join("pods").join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

/// Runs the pod until it is deleted: its containers, then (on deletion) their end and the pod's.
pub async fn run(ctx: Arc<Ctx>, mut updates: PodUpdates) {
    let Some(pod) = updates.borrow().clone() else { return };
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let dir = pod_dir(&ctx, &pod);
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        api: Api::namespaced(ctx.client.clone(), &ns),
        name: name.clone(),
        model: std::sync::Mutex::new(Model {
            phase: "Pending".into(),
            reason: None,
            message: None,
            pod_ip: None,
            start_time: now(),
            initialized: false,
            init: pod
                .spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten())
                .map(|c| Tracked::new(c, "PodInitializing"))
                .collect(),
            containers: pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(|c| Tracked::new(c, "ContainerCreating"))
                .collect(),
            transitions: BTreeMap::new(),
        }),
        processes: std::sync::Mutex::new(HashMap::new()),
        publishing: Mutex::new(()),
        stopping: AtomicBool::new(false),
    });
    if let Ok(mut logs) = ctx.logs.lock() {
        logs.insert((ns.clone(), name.clone()), dir.join("logs"));
    }
    // A pod that ended before this node started is left as it is.
    let network: Arc<std::sync::Mutex<Option<PodNetwork>>> = Arc::default();
    let life = if phase == "Succeeded" || phase == "Failed" {
        None
    } else {
        Some(tokio::spawn(lifecycle(shared.clone(), pod.clone(), dir.clone(), network.clone())))
    };
    // Wait for deletion.
    let grace = loop {
        let current = updates.borrow().clone();
        match current {
            None => break 0,
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                break p.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0);
            }
            Some(_) => {}
        }
        if updates.changed().await.is_err() {
            break 0;
        }
    };
    tracing::info!(pod = %format!("{ns}/{name}"), grace, "stopping");
    shared.stopping.store(true, Ordering::SeqCst);
    stop_processes(&shared, Duration::from_secs(grace as u64)).await;
    // Aborting the lifecycle drops its JoinSet, which aborts the containers' tasks; then whatever was
    // being started meanwhile goes too.
    if let Some(task) = life {
        task.abort();
        let _ = task.await;
    }
    stop_processes(&shared, Duration::ZERO).await;
    let net = network.lock().ok().and_then(|mut n| n.take());
    if let Some(net) = net {
        ctx.network.remove_pod(&net).await;
    }
    ctx.forget_host(&pod.uid().unwrap_or_default());
    if let Ok(mut logs) = ctx.logs.lock() {
        logs.remove(&(ns.clone(), name.clone()));
    }
    let _ = fs::remove_dir_all(&dir);
    if updates.borrow().is_some() {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
            ..Default::default()
        };
        if let Err(e) = shared.api.delete(&name, &params).await {
            tracing::debug!(pod = %name, error = %e, "deleting the pod");
        }
    }
}

async fn stop_processes(shared: &Shared, grace: Duration) {
    let groups: Vec<i32> = shared.processes.lock().map(|p| p.values().copied().collect()).unwrap_or_default();
    for pgid in &groups {
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline && groups.iter().any(|g| killpg(Pid::from_raw(*g), None).is_ok()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pgid in &groups {
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
}

/// Fails the pod for good with `reason` and `message`.
async fn fail(shared: &Shared, reason: &str, message: String) {
    tracing::warn!(pod = %shared.name, reason, %message, "pod failed");
    shared.update(|m| {
        m.phase = "Failed".into();
        m.reason = Some(reason.into());
        m.message = Some(message.clone());
        for c in m.init.iter_mut().chain(m.containers.iter_mut()) {
            if c.state.waiting.is_some() {
                c.state = waiting(reason, Some(message.clone()));
            }
        }
    });
    shared.publish().await;
}

async fn lifecycle(shared: Arc<Shared>, pod: Pod, dir: PathBuf, network: Arc<std::sync::Mutex<Option<PodNetwork>>>) {
    let ctx = shared.ctx.clone();
    let Some(spec) = pod.spec.clone() else { return };
    // Every image must be known before anything starts.
    let mut images = HashMap::new();
    for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
        match ctx.images.resolve(c.image.as_deref().unwrap_or_default()) {
            Ok(image) => {
                images.insert(c.name.clone(), image);
            }
            Err(message) => return fail(&shared, "ErrImagePull", format!("container {}: {message}", c.name)).await,
        }
    }
    let net = match ctx.network.add_pod().await {
        Ok(n) => n,
        Err(e) => return fail(&shared, "NetworkNotReady", e.to_string()).await,
    };
    if let Ok(mut slot) = network.lock() {
        *slot = Some(net.clone());
    }
    let ip = net.ip.to_string();
    if let Err(e) = write_etc(&ctx, &pod, &dir, &ip) {
        return fail(&shared, "SandboxFailed", e).await;
    }
    shared.update(|m| m.pod_ip = Some(ip.clone()));
    shared.publish().await;

    // Volumes and env: retried until they can be had, as a kubelet does (a missing Secret keeps the pod
    // in ContainerCreating with the reason).
    let paths = loop {
        match volumes::prepare(&ctx.client, &pod, &dir.join("volumes"), &ip).await {
            Ok(Prepared::Ready(paths)) => break paths,
            Ok(Prepared::Waiting(why)) => set_waiting(&shared, "ContainerCreating", &why).await,
            Err(e) => set_waiting(&shared, "ContainerCreating", &format!("MountVolume.SetUp failed: {e}")).await,
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // Tokens live an hour; a kubelet renews them well before.
    let renewal = {
        let (client, pod, dir) = (ctx.client.clone(), pod.clone(), dir.join("volumes"));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKEN_RENEWAL).await;
                if let Err(e) = volumes::refresh_tokens(&client, &pod, &dir).await {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "renewing service-account tokens");
                }
            }
        })
    };
    let _renewal = AbortOnDrop(renewal);
    let restart = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    for c in spec.init_containers.iter().flatten() {
        let image = &images[&c.name];
        loop {
            let launch = Launch { pod: &pod, container: c, image, paths: &paths, net: &net, dir: &dir };
            let Some(exit) = run_once(&shared, &launch, true).await else { return };
            if exit == 0 {
                break;
            }
            if restart == "Never" || shared.stopping() {
                shared.update(|m| m.phase = "Failed".into());
                shared.publish().await;
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    shared.update(|m| {
        m.initialized = true;
        m.phase = "Running".into();
    });
    let mut tasks = tokio::task::JoinSet::new();
    for c in spec.containers.clone() {
        let (shared, pod, paths, net, dir, restart) =
            (shared.clone(), pod.clone(), paths.clone(), net.clone(), dir.clone(), restart.clone());
        let image = images[&c.name].clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let launch = Launch { pod: &pod, container: &c, image: &image, paths: &paths, net: &net, dir: &dir };
                let exit = run_once(&shared, &launch, false).await?;
                let again = restart == "Always" || (restart == "OnFailure" && exit != 0);
                if !again || shared.stopping() {
                    return Some(exit);
                }
                shared.container(false, &c.name, |t| {
                    t.restarts += 1;
                    t.last = Some(t.state.clone());
                    t.state = waiting(
                        "CrashLoopBackOff",
                        Some(format!("back-off {}s restarting failed container", backoff.as_secs())),
                    );
                });
                shared.publish().await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(20));
            }
        });
    }
    let mut failed = false;
    while let Some(result) = tasks.join_next().await {
        if !matches!(result, Ok(Some(0))) {
            failed = true;
        }
    }
    shared.update(|m| m.phase = if failed { "Failed" } else { "Succeeded" }.into());
    shared.publish().await;
    // The address goes back as soon as nothing runs.
    let net = network.lock().ok().and_then(|mut n| n.take());
    if let Some(net) = net {
        ctx.network.remove_pod(&net).await;
    }
}

async fn set_waiting(shared: &Shared, reason: &str, message: &str) {
    shared.update(|m| {
        for c in m.init.iter_mut().chain(m.containers.iter_mut()) {
            if c.state.waiting.is_some() {
                c.state = waiting(reason, Some(message.to_string()));
            }
        }
    });
    shared.publish().await;
}

/// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` of the pod, and its entry in every pod's hosts.
fn write_etc(ctx: &Ctx, pod: &Pod, dir: &Path, ip: &str) -> Result<(), String> {
    let etc = dir.join("etc");
    fs::create_dir_all(&etc).map_err(|e| format!("creating {}: {e}", etc.display()))?;
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.clone()).unwrap_or_else(|| pod.name_any());
    let write = |name: &str, text: &str| {
        let path = etc.join(name);
        fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write("hostname", &format!("{hostname}\n"))?;
    write(
        "resolv.conf",
        "# No DNS server on the local node: names resolve through /etc/hosts.\noptions ndots:1 timeout:1 attempts:1\n",
    )?;
    write("hosts", "")?;
    ctx.add_host(
        &pod.uid().unwrap_or_default(),
        crate::HostEntry {
            namespace: pod.namespace().unwrap_or_default(),
            hostname,
            subdomain: spec.and_then(|s| s.subdomain.clone()),
            ip: ip.to_string(),
            hosts_file: etc.join("hosts"),
        },
    );
    Ok(())
}

/// The command line of `c` in `image`, as a container runtime puts entrypoint, cmd, command and args
/// together, `$(VAR)` expanded.
fn command_line(c: &Container, image: &Image, env: &[(String, String)]) -> Vec<String> {
    let argv = match (&c.command, &c.args) {
        (Some(cmd), Some(args)) => cmd.iter().chain(args).cloned().collect(),
        (Some(cmd), None) => cmd.clone(),
        (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    argv.iter().map(|a| volumes::expand(a, env)).collect()
}

fn base_mounts(dir: &Path, container_dir: &Path) -> Vec<Mount> {
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
struct Launch<'a> {
    pod: &'a Pod,
    container: &'a Container,
    image: &'a Image,
    /// Each volume's host path.
    paths: &'a BTreeMap<String, PathBuf>,
    net: &'a PodNetwork,
    /// The pod's folder.
    dir: &'a Path,
}

/// Starts a container once and waits for it, probing it meanwhile. Returns its exit code, or `None`
/// when it could not start in a way that ends the pod.
async fn run_once(shared: &Arc<Shared>, launch: &Launch<'_>, init: bool) -> Option<i32> {
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
fn termination_message(c: &Container, file: &Path, log: &Path, code: i32) -> Option<String> {
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

async fn container_spec(ctx: &Ctx, launch: &Launch<'_>) -> Result<ContainerSpec, String> {
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

/// A readiness or liveness probe's schedule and counts.
struct Prober {
    probe: Probe,
    kind: &'static str,
    next: tokio::time::Instant,
    successes: i32,
    failures: i32,
    state: Option<bool>,
}

impl Prober {
    fn new(probe: Probe, kind: &'static str) -> Self {
        let delay = probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        Self {
            next: tokio::time::Instant::now() + Duration::from_secs(delay),
            probe,
            kind,
            successes: 0,
            failures: 0,
            state: None,
        }
    }

    fn due(&self) -> bool {
        tokio::time::Instant::now() >= self.next
    }

    /// Counts a result; returns the new state when it changed (thresholds applied).
    fn record(&mut self, ok: bool) -> Option<bool> {
        let period = self.probe.period_seconds.unwrap_or(10).max(1) as u64;
        self.next = tokio::time::Instant::now() + Duration::from_secs(period);
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let new = if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
            Some(true)
        } else if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1)
            || (self.kind == "readiness" && self.state.is_none() && !ok)
        {
            Some(false)
        } else {
            None
        };
        match new {
            Some(n) if self.state != Some(n) => {
                self.state = Some(n);
                Some(n)
            }
            _ => None,
        }
    }

    async fn probe(&self, ctx: &Ctx, c: &Container, spec: &Path, pid: i32, ip: &str, netns: &str) -> bool {
        // At least 3 s: the machine is shared, and a probe process starts a client of its own.
        let timeout = Duration::from_secs(self.probe.timeout_seconds.unwrap_or(1).max(3) as u64);
        let port_of = |port: &IntOrString| -> Option<u16> {
            match port {
                IntOrString::Int(p) => u16::try_from(*p).ok(),
                IntOrString::String(name) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
            }
        };
        if let Some(exec) = &self.probe.exec {
            let mut cmd = tokio::process::Command::new(&ctx.self_exe);
            cmd.arg("enter").arg("--pid").arg(pid.to_string()).arg("--spec").arg(spec).arg("--");
            cmd.args(exec.command.iter().flatten());
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
            return matches!(tokio::time::timeout(timeout, cmd.status()).await, Ok(Ok(s)) if s.success());
        }
        let (port, http_path) = if let Some(t) = &self.probe.tcp_socket {
            (port_of(&t.port), None)
        } else if let Some(h) = &self.probe.http_get {
            (port_of(&h.port), Some(h.path.clone().unwrap_or_else(|| "/".into())))
        } else {
            (None, None)
        };
        let Some(port) = port else { return false };
        let addr: std::net::SocketAddr = match format!("{ip}:{port}").parse() {
            Ok(a) => a,
            Err(_) => return false,
        };
        let netns = netns.to_string();
        let check = tokio::task::spawn_blocking(move || {
            crate::network::in_namespace(&netns, move || {
                let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                let Some(path) = http_path else { return Ok(true) };
                stream.set_read_timeout(Some(timeout))?;
                write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kube-probe/local\r\n\r\n")?;
                let mut head = [0u8; 12];
                stream.read_exact(&mut head)?;
                let code: u16 = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
                Ok((200..400).contains(&code))
            })
        });
        matches!(check.await, Ok(Ok(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(failure: i32, success: i32) -> Probe {
        Probe { failure_threshold: Some(failure), success_threshold: Some(success), ..Default::default() }
    }

    #[test]
    fn readiness_starts_unready_and_needs_the_failure_threshold_to_drop() {
        let mut p = Prober::new(probe(3, 1), "readiness");
        assert_eq!(p.record(false), Some(false), "a first failure says not ready at once");
        assert_eq!(p.record(true), Some(true));
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), Some(false), "the third failure in a row");
        assert_eq!(p.record(false), None, "reported once");
    }

    #[test]
    fn liveness_fails_only_after_the_threshold_and_a_success_resets_the_count() {
        let mut p = Prober::new(probe(3, 1), "liveness");
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(true), Some(true));
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), Some(false));
    }

    #[test]
    fn a_success_threshold_counts_successes_in_a_row() {
        let mut p = Prober::new(probe(1, 2), "readiness");
        assert_eq!(p.record(true), None);
        assert_eq!(p.record(false), Some(false));
        assert_eq!(p.record(true), None);
        assert_eq!(p.record(true), Some(true));
    }

    fn model(phase: &str, ready: bool) -> Model {
        let container = Container { name: "c".into(), image: Some("mariadb:10.11".into()), ..Default::default() };
        let mut tracked = Tracked::new(&container, "ContainerCreating");
        tracked.ready = ready;
        Model {
            phase: phase.into(),
            reason: None,
            message: None,
            pod_ip: Some("10.244.0.9".into()),
            start_time: now(),
            initialized: true,
            init: vec![],
            containers: vec![tracked],
            transitions: BTreeMap::new(),
        }
    }

    fn condition(status: &PodStatus, kind: &str) -> PodCondition {
        status.conditions.iter().flatten().find(|c| c.type_ == kind).cloned().expect(kind)
    }

    #[test]
    fn ready_only_while_running_with_every_container_ready_and_times_kept_until_a_flip() {
        let mut m = model("Running", true);
        let first = build_status(&mut m);
        assert_eq!(condition(&first, "Ready").status, "True");
        assert_eq!(condition(&first, "ContainersReady").status, "True");
        assert_eq!(first.pod_ip.as_deref(), Some("10.244.0.9"));
        let since = condition(&first, "Ready").last_transition_time;
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(condition(&build_status(&mut m), "Ready").last_transition_time, since, "unchanged: time kept");
        m.containers[0].ready = false;
        let unready = build_status(&mut m);
        assert_eq!(condition(&unready, "Ready").status, "False");
        assert_ne!(condition(&unready, "Ready").last_transition_time, since, "flipped: a new time");
        let mut done = model("Succeeded", true);
        assert_eq!(condition(&build_status(&mut done), "Ready").status, "False", "a finished pod is not ready");
    }
}
