//! The pod network: a network namespace of the cluster holding a bridge (10.244.0.1/16), and one
//! network namespace per pod joined to it by a veth pair. No address is added outside namespaces this
//! node makes, and the bridge has no route out: pods reach each other and, through the node's proxy on
//! 10.244.0.1:443, the API server. Built with iproute2's `ip`.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};
use tokio::process::Command;

/// The gateway's address: the bridge's, where the API server proxy listens.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const PREFIX_LEN: u8 = 16;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("running `ip {args}`: {message}")]
    Ip { args: String, message: String },
    #[error("joining network namespace {name}: {source}")]
    Join { name: String, source: std::io::Error },
    #[error("the pod network is full")]
    Full,
}

/// The cluster's network: its namespace and the next pod address.
#[derive(Debug)]
pub struct Network {
    /// Namespace names start with this (one node per cluster state directory).
    prefix: String,
    next: AtomicU32,
}

/// One pod's network namespace and address.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub namespace: String,
    pub ip: Ipv4Addr,
}

impl PodNetwork {
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.namespace)
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

async fn ip(args: &[&str]) -> Result<(), NetworkError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| NetworkError::Ip { args: args.join(" "), message: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Ip { args: args.join(" "), message: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

impl Network {
    /// Creates the cluster's namespace and bridge, first removing whatever an earlier node of the same
    /// prefix left.
    pub async fn create(prefix: &str) -> Result<Self, NetworkError> {
        Self::remove_all(prefix).await;
        let net = prefix.to_string();
        ip(&["netns", "add", &net]).await?;
        ip(&["-n", &net, "link", "set", "lo", "up"]).await?;
        ip(&["-n", &net, "link", "add", "br0", "type", "bridge"]).await?;
        ip(&["-n", &net, "addr", "add", &format!("{GATEWAY}/{PREFIX_LEN}"), "dev", "br0"]).await?;
        ip(&["-n", &net, "link", "set", "br0", "up"]).await?;
        Ok(Self { prefix: prefix.to_string(), next: AtomicU32::new(2) })
    }

    /// Removes every namespace of `prefix` (the cluster's and its pods').
    pub async fn remove_all(prefix: &str) {
        let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name == prefix || name.starts_with(&format!("{prefix}-")) {
                let _ = ip(&["netns", "del", &name]).await;
            }
        }
    }

    fn allocate(&self) -> Result<(u32, Ipv4Addr), NetworkError> {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= 1 << 16 {
                return Err(NetworkError::Full);
            }
            let low = n & 0xff;
            if low == 0 || low == 255 {
                continue;
            }
            return Ok((n, Ipv4Addr::new(10, 244, (n >> 8) as u8, low as u8)));
        }
    }

    /// A new pod namespace on the bridge, with its own address.
    pub async fn add_pod(&self) -> Result<PodNetwork, NetworkError> {
        let (n, addr) = self.allocate()?;
        let ns = format!("{}-p{n}", self.prefix);
        let host_end = format!("h{n}");
        ip(&["netns", "add", &ns]).await?;
        let steps: [Vec<String>; 6] = [
            ["-n", &self.prefix, "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns]
                .map(String::from)
                .to_vec(),
            ["-n", &self.prefix, "link", "set", &host_end, "master", "br0", "up"].map(String::from).to_vec(),
            ["-n", &ns, "addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", "eth0"].map(String::from).to_vec(),
            ["-n", &ns, "link", "set", "eth0", "up"].map(String::from).to_vec(),
            ["-n", &ns, "link", "set", "lo", "up"].map(String::from).to_vec(),
            ["-n", &ns, "route", "add", "default", "via", &GATEWAY.to_string()].map(String::from).to_vec(),
        ];
        for step in &steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = ip(&args).await {
                let _ = ip(&["netns", "del", &ns]).await;
                return Err(e);
            }
        }
        Ok(PodNetwork { namespace: ns, ip: addr })
    }

    /// Removes a pod's namespace (and with it its end of the veth pair).
    pub async fn remove_pod(&self, pod: &PodNetwork) {
        if let Err(e) = ip(&["netns", "del", &pod.namespace]).await {
            tracing::warn!(namespace = %pod.namespace, error = %e, "removing a pod network");
        }
    }

    /// A listening socket on `addr` inside the cluster's namespace.
    pub fn listen_in_cluster(&self, addr: SocketAddr) -> Result<TcpListener, NetworkError> {
        in_namespace(&self.prefix, move || TcpListener::bind(addr))
    }
}

/// Runs `f` on a thread of its own that has joined network namespace `name` (sockets it opens stay in
/// that namespace); the calling thread's namespace is untouched.
pub fn in_namespace<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, NetworkError> {
    let path = netns_path(name);
    let name = name.to_string();
    let join_err = |source| NetworkError::Join { name: name.clone(), source };
    let handle = std::thread::spawn(move || -> std::io::Result<T> {
        let file = File::open(&path)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        f()
    });
    match handle.join() {
        Ok(result) => result.map_err(join_err),
        Err(_) => Err(join_err(std::io::Error::other("the namespace thread panicked"))),
    }
}
