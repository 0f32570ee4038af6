//! One pod's life on this node, as a kubelet lives it: a network namespace and an address, volumes,
//! init containers one after the other, then the containers with their restart policy and readiness and
//! liveness probes, the status written through `pods/status` after every change, and on deletion the
//! processes stopped (SIGTERM, the grace period, SIGKILL) and the pod removed.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{
        Container, ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
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

use crate::containers::*;
use crate::{
    Ctx,
    network::PodNetwork,
    volumes::{self, Prepared},
};

/// How often the projected service-account tokens of a running pod are renewed (they last an hour).
const TOKEN_RENEWAL: Duration = Duration::from_secs(30 * 60);

/// Aborts a task when dropped (with the lifecycle that started it).
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

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
pub(crate) struct Tracked {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) state: ContainerState,
    pub(crate) last: Option<ContainerState>,
    pub(crate) ready: bool,
    pub(crate) restarts: i32,
}

impl Tracked {
    pub(crate) fn new(c: &Container, reason: &str) -> Self {
        Self {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: waiting(reason, None),
            last: None,
            ready: false,
            restarts: 0,
        }
    }

    pub(crate) fn status(&self) -> ContainerStatus {
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

pub(crate) fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    }
}

/// The pod's status as the node sees it.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) phase: String,
    pub(crate) reason: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) pod_ip: Option<String>,
    pub(crate) start_time: Time,
    pub(crate) initialized: bool,
    pub(crate) init: Vec<Tracked>,
    pub(crate) containers: Vec<Tracked>,
    pub(crate) transitions: BTreeMap<String, (String, Time)>,
}

/// What the pod's tasks share: the model, the process groups to stop, and the publisher.
pub struct Shared {
    pub(crate) ctx: Arc<Ctx>,
    api: Api<Pod>,
    pub(crate) name: String,
    model: std::sync::Mutex<Model>,
    pub(crate) processes: std::sync::Mutex<HashMap<String, i32>>,
    publishing: Mutex<()>,
    /// Set once the pod is being deleted: nothing starts or restarts after it.
    stopping: AtomicBool,
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Model)) {
        if let Ok(mut m) = self.model.lock() {
            f(&mut m);
        }
    }

    pub(crate) fn container(&self, init: bool, name: &str, f: impl FnOnce(&mut Tracked)) {
        self.update(|m| {
            let list = if init { &mut m.init } else { &mut m.containers };
            if let Some(t) = list.iter_mut().find(|t| t.name == name) {
                f(t);
            }
        });
    }

    /// Writes the status through `pods/status`.
    pub(crate) async fn publish(&self) {
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

pub(crate) fn build_status(m: &mut Model) -> PodStatus {
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

pub(crate) async fn stop_processes(shared: &Shared, grace: Duration) {
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
pub(crate) async fn fail(shared: &Shared, reason: &str, message: String) {
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

pub(crate) async fn lifecycle(
    shared: Arc<Shared>,
    pod: Pod,
    dir: PathBuf,
    network: Arc<std::sync::Mutex<Option<PodNetwork>>>,
) {
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

pub(crate) async fn set_waiting(shared: &Shared, reason: &str, message: &str) {
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
pub(crate) fn write_etc(ctx: &Ctx, pod: &Pod, dir: &Path, ip: &str) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn model(phase: &str, ready: bool) -> Model {
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

    pub(crate) fn condition(status: &PodStatus, kind: &str) -> PodCondition {
        status.conditions.iter().flatten().find(|c| c.type_ == kind).cloned().expect(kind)
    }

    #[test]
    pub(crate) fn ready_only_while_running_with_every_container_ready_and_times_kept_until_a_flip() {
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
