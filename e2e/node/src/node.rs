//! The node's dealings with the API server besides running pods: its Node object and heartbeat, the
//! scheduler's one job (binding every pending pod to this node), and the provisioner of the default
//! StorageClass `local` (a directory per claim; deleted with the claim).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        core::v1::{
            Binding, DaemonEndpoint, HostPathVolumeSource, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
            NodeStatus, NodeSystemInfo, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
            Pod,
        },
        storage::v1::StorageClass,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};

use crate::Ctx;

/// The StorageClass this node provisions, made the cluster's default.
pub const STORAGE_CLASS: &str = "local";
const PROVISIONER: &str = "local-node.mysql-backup-operator.dev/dir";

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

fn node_status(ctx: &Ctx) -> NodeStatus {
    let now = crate::pods::now();
    let condition = |kind: &str, status: &str, reason: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(ctx.started.clone()),
        message: None,
    };
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string()),
        ("memory", "24Gi".to_string()),
        ("pods", "250".to_string()),
        ("ephemeral-storage", "100Gi".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), quantity(&v)))
    .collect();
    NodeStatus {
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: "127.0.0.1".into() },
            NodeAddress { type_: "Hostname".into(), address: ctx.node_name.clone() },
        ]),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(vec![
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(ctx.kubelet_port) }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.replace("x86_64", "amd64"),
            operating_system: "linux".into(),
            kubelet_version: ctx.kube_version.clone(),
            kube_proxy_version: String::new(),
            container_runtime_version: "local-node://0.1.0".into(),
            kernel_version: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image: "local processes".into(),
            boot_id: String::new(),
            machine_id: String::new(),
            system_uuid: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Registers the Node (labels as a kubelet sets them) and the default StorageClass.
pub async fn register(ctx: &Ctx) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", ctx.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("node-role.kubernetes.io/local", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let node = Node {
        metadata: ObjectMeta { name: Some(ctx.node_name.clone()), labels: Some(labels), ..Default::default() },
        ..Default::default()
    };
    let apply = PatchParams::apply("local-node").force();
    nodes.patch(&ctx.node_name, &apply, &Patch::Apply(&node)).await?;
    heartbeat_once(ctx).await?;
    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(STORAGE_CLASS.into()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        ..Default::default()
    };
    Api::<StorageClass>::all(ctx.client.clone()).patch(STORAGE_CLASS, &apply, &Patch::Apply(&class)).await?;
    Ok(())
}

async fn heartbeat_once(ctx: &Ctx) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({ "status": node_status(ctx) });
    nodes.patch_status(&ctx.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Renews the Node's Ready condition every 10 seconds.
pub async fn heartbeat(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Err(e) = heartbeat_once(&ctx).await {
            tracing::warn!(error = %e, "node heartbeat");
        }
    }
}

/// Binds `pod` to this node (what the scheduler would do, there being one node).
pub async fn bind(client: &Client, node: &str, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let binding = Binding {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.into()),
            api_version: Some("v1".into()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api.create_subresource::<Binding, serde_json::Value>("binding", &name, &PostParams::default(), &binding).await
    {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "bound"),
        Err(e) => tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "binding"),
    }
}

/// Provisions a directory volume for every pending claim of the `local` class, and deletes released
/// ones with their directories. Polls every second.
pub async fn provision(ctx: Arc<Ctx>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let root = ctx.state.join("volumes");
    loop {
        if let Err(e) = provision_once(&claims, &volumes, &root).await {
            tracing::warn!(error = %e, "provisioning volumes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn provision_once(
    claims: &Api<PersistentVolumeClaim>,
    volumes: &Api<PersistentVolume>,
    root: &std::path::Path,
) -> Result<(), kube::Error> {
    let existing = volumes.list(&ListParams::default()).await?;
    for claim in claims.list(&ListParams::default()).await? {
        let spec = claim.spec.clone().unwrap_or_default();
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound");
        if spec.storage_class_name.as_deref() != Some(STORAGE_CLASS) || spec.volume_name.is_some() || !pending {
            continue;
        }
        let uid = claim.uid().unwrap_or_default();
        let name = format!("pvc-{uid}");
        if existing.items.iter().any(|v| v.name_any() == name) {
            continue;
        }
        let path: PathBuf = root.join(&name);
        if let Err(e) = std::fs::create_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "creating a volume directory");
            continue;
        }
        let size = spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .unwrap_or_else(|| quantity("1Gi"));
        let volume = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                annotations: Some(BTreeMap::from([(
                    "pv.kubernetes.io/provisioned-by".to_string(),
                    PROVISIONER.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(BTreeMap::from([("storage".to_string(), size)])),
                access_modes: spec.access_modes.clone(),
                host_path: Some(HostPathVolumeSource {
                    path: path.to_string_lossy().into_owned(),
                    type_: Some("Directory".into()),
                }),
                claim_ref: Some(ObjectReference {
                    kind: Some("PersistentVolumeClaim".into()),
                    api_version: Some("v1".into()),
                    namespace: claim.namespace(),
                    name: Some(claim.name_any()),
                    uid: Some(uid),
                    ..Default::default()
                }),
                persistent_volume_reclaim_policy: Some("Delete".into()),
                storage_class_name: Some(STORAGE_CLASS.into()),
                volume_mode: spec.volume_mode.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match volumes.create(&PostParams::default(), &volume).await {
            Ok(_) => {
                tracing::info!(claim = %format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any()), volume = %name, "provisioned")
            }
            Err(e) => tracing::warn!(volume = %name, error = %e, "creating a volume"),
        }
    }
    for volume in existing.items {
        let ours = volume.annotations().get("pv.kubernetes.io/provisioned-by").map(String::as_str) == Some(PROVISIONER);
        let released = matches!(volume.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Released" | "Failed"));
        if ours && released {
            if let Some(path) = volume.spec.as_ref().and_then(|s| s.host_path.as_ref()).map(|h| PathBuf::from(&h.path))
                && path.starts_with(root)
            {
                let _ = std::fs::remove_dir_all(&path);
            }
            let _ = volumes.delete(&volume.name_any(), &DeleteParams::default()).await;
            tracing::info!(volume = %volume.name_any(), "deleted with its claim");
        }
    }
    Ok(())
}
