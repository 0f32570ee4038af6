//! `local-node`: a Kubernetes node for the local e2e cluster that runs Pods as processes on this
//! machine (test support; never shipped). `scripts/kube-local start` runs `local-node run`; the node
//! runs itself as `local-node container` to start each container and as `local-node enter` for each
//! exec probe. See README.md beside this crate for what it maps and what it leaves out.

mod containers;
mod images;
mod network;
mod node;
mod pods;
mod probes;
mod runtime;
mod server;
mod volumes;

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, SocketAddrV4},
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use clap::{Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Client, Config, ResourceExt,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "local-node", about = "A Kubernetes node that runs Pods as processes on this machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register the node and run the pods bound to it.
    Run(RunArgs),
    /// Start one container (the node runs this; not for people).
    Container {
        #[arg(long)]
        spec: PathBuf,
    },
    /// Run a command in a running container's namespaces, as its user (exec probes).
    Enter {
        #[arg(long)]
        pid: i32,
        #[arg(long)]
        spec: PathBuf,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig with the node's credentials.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Folder of the node's state: pods' files, logs and the volumes it provisions.
    #[arg(long)]
    state: PathBuf,
    #[arg(long, default_value = "local-node")]
    node_name: String,
    /// The binary that `…/mysql-backup-operator:*` images run.
    #[arg(long)]
    operator_binary: PathBuf,
    /// The images' own files (`e2e/node/images`).
    #[arg(long)]
    images: PathBuf,
    /// Port of the kubelet API (logs) on 127.0.0.1.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    #[arg(long)]
    kubelet_cert: PathBuf,
    #[arg(long)]
    kubelet_key: PathBuf,
    /// The API server's port on 127.0.0.1, reached by pods at 10.244.0.1:443.
    #[arg(long)]
    api_port: u16,
    /// The version the node reports.
    #[arg(long, default_value = "v1.36.3")]
    kube_version: String,
    /// Prefix of the network namespaces this node makes.
    #[arg(long, default_value = "kl")]
    netns_prefix: String,
}

/// A pod's names and address, for every pod's `/etc/hosts`.
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub namespace: String,
    pub hostname: String,
    pub subdomain: Option<String>,
    pub ip: String,
    pub hosts_file: PathBuf,
}

/// What every task of the node shares.
pub struct Ctx {
    pub client: Client,
    pub node_name: String,
    pub state: PathBuf,
    pub images: images::Images,
    pub network: network::Network,
    pub self_exe: PathBuf,
    pub kubelet_port: u16,
    pub kube_version: String,
    pub started: Time,
    hosts: Mutex<BTreeMap<String, HostEntry>>,
    /// (namespace, pod) → the folder of its containers' logs.
    pub logs: Mutex<HashMap<(String, String), PathBuf>>,
}

impl Ctx {
    pub fn add_host(&self, uid: &str, entry: HostEntry) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.insert(uid.to_string(), entry);
            write_hosts(&hosts);
        }
    }

    pub fn forget_host(&self, uid: &str) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.remove(uid);
            write_hosts(&hosts);
        }
    }
}

/// Rewrites every pod's hosts file in place (each is bind-mounted: its inode must stay).
fn write_hosts(hosts: &BTreeMap<String, HostEntry>) {
    for entry in hosts.values() {
        let text = render_hosts(entry, hosts.values());
        if let Err(e) = std::fs::write(&entry.hosts_file, text) {
            tracing::warn!(path = %entry.hosts_file.display(), error = %e, "writing a hosts file");
        }
    }
}

/// The hosts file `own` sees: itself, then every pod that has a subdomain by the names cluster DNS
/// gives it (`host.sub`, `host.sub.ns`, `host.sub.ns.svc`, `host.sub.ns.svc.cluster.local`), the
/// short forms only for pods of `own`'s namespace.
fn render_hosts<'a>(own: &HostEntry, all: impl Iterator<Item = &'a HostEntry>) -> String {
    let mut text =
        String::from("# Written by the local node.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let fqdn =
        |e: &HostEntry| e.subdomain.as_ref().map(|s| format!("{}.{s}.{}.svc.cluster.local", e.hostname, e.namespace));
    match fqdn(own) {
        Some(f) => text.push_str(&format!("{}\t{f}\t{}\n", own.ip, own.hostname)),
        None => text.push_str(&format!("{}\t{}\n", own.ip, own.hostname)),
    }
    for e in all {
        let Some(sub) = &e.subdomain else { continue };
        if e.ip == own.ip {
            continue;
        }
        let base = format!("{}.{sub}", e.hostname);
        let mut names = Vec::new();
        if e.namespace == own.namespace {
            names.push(base.clone());
        }
        names.push(format!("{base}.{}", e.namespace));
        names.push(format!("{base}.{}.svc", e.namespace));
        names.push(format!("{base}.{}.svc.cluster.local", e.namespace));
        text.push_str(&format!("{}\t{}\n", e.ip, names.join(" ")));
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // Both replace this process; they must run before any thread is started.
        Command::Container { spec } => {
            let error = match runtime::read_spec(&spec) {
                Ok(spec) => runtime::run_container(&spec),
                Err(e) => e,
            };
            eprintln!("local-node: starting the container: {error}");
            ExitCode::from(if matches!(error, runtime::RuntimeError::NotFound(_)) { 127 } else { 128 })
        }
        Command::Enter { pid, spec, argv } => {
            let error = match runtime::read_spec(&spec) {
                Ok(mut spec) => {
                    spec.argv = argv;
                    runtime::enter_container(pid, &spec)
                }
                Err(e) => e,
            };
            eprintln!("local-node: exec in the container: {error}");
            ExitCode::from(126)
        }
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_ansi(false)
                .init();
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("local-node: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("local-node: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn client(kubeconfig: &std::path::Path) -> Result<Client, String> {
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("reading {}: {e}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    Client::try_from(config).map_err(|e| format!("API client: {e}"))
}

async fn run(args: RunArgs) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client(&args.kubeconfig).await?;
    let network = network::Network::create(&args.netns_prefix).await.map_err(|e| e.to_string())?;
    let proxy = network
        .listen_in_cluster(SocketAddr::V4(SocketAddrV4::new(network::GATEWAY, 443)))
        .map_err(|e| format!("the API server's address in the pod network: {e}"))?;
    let self_exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node_name: args.node_name.clone(),
        state: args.state.clone(),
        images: images::Images { operator_binary: args.operator_binary.clone(), files: args.images.clone() },
        network,
        self_exe,
        kubelet_port: args.kubelet_port,
        kube_version: args.kube_version.clone(),
        started: pods::now(),
        hosts: Mutex::default(),
        logs: Mutex::default(),
    });
    node::register(&ctx).await.map_err(|e| format!("registering node {}: {e}", args.node_name))?;
    tracing::info!(node = %args.node_name, "registered");
    tokio::spawn(node::heartbeat(ctx.clone()));
    tokio::spawn(node::provision(ctx.clone()));
    let api = SocketAddr::from(([127, 0, 0, 1], args.api_port));
    tokio::spawn(async move {
        if let Err(e) = server::api_proxy(proxy, api).await {
            tracing::error!(error = %e, "API proxy");
        }
    });
    let kubelet = SocketAddr::from(([127, 0, 0, 1], args.kubelet_port));
    let (cert, key) = (args.kubelet_cert.clone(), args.kubelet_key.clone());
    let server_ctx = ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = server::kubelet_api(server_ctx, kubelet, &cert, &key).await {
            tracing::error!(error = %e, "kubelet API");
        }
    });

    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(event) = event else { break };
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(tx) = workers.remove(&pod.uid().unwrap_or_default()) {
                    let _ = tx.send(None);
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods");
                continue;
            }
        };
        let spec = pod.spec.as_ref();
        match spec.and_then(|s| s.node_name.as_deref()) {
            None => {
                let ours = spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|s| s == "default-scheduler");
                if ours && pod.metadata.deletion_timestamp.is_none() {
                    let (client, node, pod) = (client.clone(), args.node_name.clone(), pod.clone());
                    tokio::spawn(async move { node::bind(&client, &node, &pod).await });
                }
            }
            Some(n) if n == args.node_name => {
                let uid = pod.uid().unwrap_or_default();
                workers.retain(|_, tx| !tx.is_closed());
                match workers.get(&uid) {
                    Some(tx) => {
                        let _ = tx.send(Some(pod));
                    }
                    None => {
                        let (tx, rx) = watch::channel(Some(pod));
                        workers.insert(uid, tx);
                        tokio::spawn(pods::run(ctx.clone(), rx));
                    }
                }
            }
            Some(_) => {}
        }
    }
    tracing::info!("stopping: ending every pod's processes");
    for (_, tx) in workers.drain() {
        let _ = tx.send(None);
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    network::Network::remove_all(&args.netns_prefix).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: &str, host: &str, sub: Option<&str>, ip: &str) -> HostEntry {
        HostEntry {
            namespace: ns.into(),
            hostname: host.into(),
            subdomain: sub.map(Into::into),
            ip: ip.into(),
            hosts_file: PathBuf::new(),
        }
    }

    #[test]
    fn hosts_name_statefulset_pods_as_cluster_dns_does() {
        let own = entry("a", "job-x", None, "10.244.0.5");
        let all =
            [entry("a", "db-0", Some("db"), "10.244.0.2"), entry("b", "db-0", Some("db"), "10.244.0.3"), own.clone()];
        let text = render_hosts(&own, all.iter());
        assert!(text.contains("10.244.0.5\tjob-x\n"), "{text}");
        assert!(text.contains("10.244.0.2\tdb-0.db db-0.db.a db-0.db.a.svc db-0.db.a.svc.cluster.local\n"), "{text}");
        assert!(text.contains("10.244.0.3\tdb-0.db.b db-0.db.b.svc db-0.db.b.svc.cluster.local\n"), "{text}");
    }
}
