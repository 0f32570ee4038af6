//! What every agent Job shares: names, labels, the init container, the agent's runtime image, storage
//! arguments and credentials, the datadir mount and the server's address. The builders of each kind's
//! objects (in `backup/build.rs`, `restore/build.rs`, `schedule/build.rs`) are pure functions from a
//! custom resource and the objects observed around it to typed Kubernetes objects; no client here.
//!
//! A backup Job runs next to the database pod: pinned to its node (required for ReadWriteOnce volumes)
//! and tolerating what it tolerates, mounting its datadir volume at the same path, running as its user
//! and group. An init container from the operator image copies the operator binary into an `emptyDir`;
//! the agent then runs in the database's own image when the method needs the server's tools
//! (`mariadb-backup`), else in the operator image. Credentials come only from Secrets: the server
//! password as a mounted file, storage credentials as environment variables from a Secret.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, EphemeralVolumeSource, KeyToPath,
            PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, SecretEnvSource, SecretVolumeSource,
            Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;

use crate::crd::{BackupMethod, StorageSpec};

/// The name and namespace of `obj`, which every object built for it needs.
pub fn name_and_namespace<K: Resource>(obj: &K) -> Result<(String, String), BuildError> {
    let meta = obj.meta();
    let name = meta.name.clone().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = meta.namespace.clone().ok_or(BuildError::MissingMetadata("namespace"))?;
    Ok((name, namespace))
}

/// Where the operator binary sits in the operator image.
pub const OPERATOR_BINARY: &str = "/mysql-backup-operator";
/// Where the init container puts the binary for the agent container.
pub const AGENT_DIR: &str = "/opt/mysql-backup-operator";
/// The restore Job's work directory (`TMPDIR`), an `emptyDir`.
pub const RESTORE_WORK: &str = "/var/tmp/mysql-backup-operator";
/// Where a drill's or catch-up's scratch volume is mounted (also their `TMPDIR`).
pub const SCRATCH_DIR: &str = "/var/lib/mysql-backup-operator-scratch";
/// Where the server password file is mounted.
pub const PASSWORD_DIR: &str = "/var/run/secrets/mysql-backup-operator/mysql";
/// Where the agent finds the encryption keys: the key Secret, mounted whole.
pub const ENCRYPTION_KEYS_DIR: &str = "/var/run/secrets/mysql-backup-operator/encryption";
/// Label naming the custom resource a Job belongs to.
pub const LABEL_BACKUP: &str = "mysqlbackup.dev/backup";
/// Label of the MySQLBackups a schedule creates, and tag of their backups in storage.
pub const LABEL_SCHEDULE: &str = crate::format::manifest::TAG_SCHEDULE;

/// Why a Job cannot be built (yet). Each message names the object and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The source pod has not been scheduled to a node yet (transient).
    #[error("pod {pod} is not scheduled to a node yet")]
    PodNotScheduled { pod: String },
    /// The source pod has no IP address and no host was given (transient).
    #[error("pod {pod} has no IP address yet; set spec.source.connection.host or wait for the pod to start")]
    PodNoAddress { pod: String },
    /// The named container is not in the pod.
    #[error("pod {pod} has no container {container:?} (spec.source.container)")]
    ContainerNotFound { pod: String, container: String },
    /// No volume of the container is mounted at or above the datadir.
    #[error(
        "container {container:?} of pod {pod} mounts no volume at or above the datadir {datadir} (spec.source.datadir)"
    )]
    NoDatadirMount { pod: String, container: String, datadir: String },
    /// The datadir's volume is not a PersistentVolumeClaim.
    #[error("the datadir of pod {pod} is on volume {volume:?}, which is not a PersistentVolumeClaim")]
    DatadirNotOnClaim { pod: String, volume: String },
    /// The custom resource lacks metadata the Job needs (name, namespace, uid).
    #[error("the MySQLBackup has no {0} yet")]
    MissingMetadata(&'static str),
    /// The MySQLBackup's status lacks what the Job needs (a drill needs the backup's id and image).
    #[error("the MySQLBackup has no status.{0} yet")]
    MissingStatus(&'static str),
}

impl BuildError {
    /// Whether waiting may fix it (the pod is still starting) rather than a change of spec or pod.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::PodNotScheduled { .. } | Self::PodNoAddress { .. })
    }
}

/// The method a backup runs with; `None` for `auto`, which the agent resolves by asking the server
/// (MariaDB: `myrocks` when RocksDB holds most of the datadir, `mariabackup` otherwise). Both run in the
/// database's image against its datadir, so the Job has one shape for the three.
pub fn method_kind(method: BackupMethod) -> Option<crate::format::manifest::MethodKind> {
    use crate::format::manifest::MethodKind;
    match method {
        BackupMethod::Auto => None,
        BackupMethod::Cold => Some(MethodKind::Cold),
        BackupMethod::Mariabackup => Some(MethodKind::Mariabackup),
        BackupMethod::Binlog => Some(MethodKind::Binlog),
        BackupMethod::Catchup => Some(MethodKind::Catchup),
        BackupMethod::Myrocks => Some(MethodKind::Myrocks),
    }
}

/// The name of `method` as the agent's `--method` takes it.
pub fn method_name(method: BackupMethod) -> &'static str {
    method_kind(method).map_or("auto", crate::format::manifest::MethodKind::as_str)
}

/// A Kubernetes name from a prefix and a resource name: at most 63 characters, a stable hash suffix
/// when shortened so distinct long names never collide.
pub fn child_name(prefix: &str, name: &str) -> String {
    let full = format!("{prefix}-{name}");
    if full.len() <= 63 {
        return full;
    }
    let hash = &blake3::hash(full.as_bytes()).to_hex()[..8];
    let keep = 63 - hash.len() - 1;
    format!("{}-{hash}", full[..keep].trim_end_matches('-'))
}

/// Standard labels of the objects made for resource `name`.
pub fn labels(component: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "mysql-backup-operator".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "mysql-backup-operator".to_string()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
        (LABEL_BACKUP.to_string(), name.to_string()),
    ])
}

pub(crate) fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference, BuildError> {
    Ok(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().ok_or(BuildError::MissingMetadata("name"))?,
        uid: owner.meta().uid.clone().ok_or(BuildError::MissingMetadata("uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The init container that copies the operator binary for the agent.
pub(crate) fn install_container(operator_image: &str) -> Container {
    Container {
        name: "install-agent".into(),
        image: Some(operator_image.to_string()),
        command: Some(vec![OPERATOR_BINARY.into()]),
        args: Some(vec!["install".into(), format!("--to={AGENT_DIR}")]),
        volume_mounts: Some(vec![VolumeMount {
            name: "agent".into(),
            mount_path: AGENT_DIR.into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Image and command of the agent container: the database image (with the copied binary) when the
/// server's tools are needed, else the operator image.
pub(crate) fn agent_runtime(needs_server_tools: bool, database_image: &str, operator_image: &str) -> (String, String) {
    if needs_server_tools {
        (database_image.to_string(), format!("{AGENT_DIR}/mysql-backup-operator"))
    } else {
        (operator_image.to_string(), OPERATOR_BINARY.to_string())
    }
}

/// The Job spec around an agent pod: retries, deadline and clean-up from the resource's job options
/// (defaults: 1 retry, 6 hours, kept one day), the pod labelled like the Job, never restarted in place.
pub(crate) fn agent_job_spec(
    options: &crate::crd::JobOptions,
    labels: BTreeMap<String, String>,
    pod: PodSpec,
) -> JobSpec {
    JobSpec {
        backoff_limit: Some(options.backoff_limit.unwrap_or(1)),
        active_deadline_seconds: Some(options.active_deadline_seconds.unwrap_or(6 * 3600)),
        ttl_seconds_after_finished: Some(options.ttl_seconds_after_finished.unwrap_or(86400)),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
            spec: Some(PodSpec { restart_policy: Some("Never".into()), ..pod }),
        },
        ..Default::default()
    }
}

/// The scratch volume of a Job that restores for itself, its mount, and the agent's `TMPDIR` there.
pub(crate) fn scratch_volume(scratch: Option<&crate::crd::ScratchSpec>) -> (Volume, VolumeMount, EnvVar) {
    let volume = match scratch.and_then(|s| s.volume_claim_template.clone()) {
        Some(template) => Volume {
            name: "scratch".into(),
            ephemeral: Some(EphemeralVolumeSource { volume_claim_template: Some(template) }),
            ..Default::default()
        },
        None => Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: scratch.and_then(|s| s.size_limit.clone()),
                medium: None,
            }),
            ..Default::default()
        },
    };
    let mount = VolumeMount { name: "scratch".into(), mount_path: SCRATCH_DIR.into(), ..Default::default() };
    let tmpdir = EnvVar { name: "TMPDIR".into(), value: Some(SCRATCH_DIR.into()), ..Default::default() };
    (volume, mount, tmpdir)
}

/// Storage arguments, volume and mount of the agent for `storage`.
pub(crate) fn storage_args(
    storage: &crate::crd::StorageSpec,
    args: &mut Vec<String>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    args.push(format!("--storage={}", storage.url));
    for (k, v) in &storage.options {
        args.push(format!("--storage-option={k}={v}"));
    }
    if let Some(rate) = &storage.rate_limit {
        args.push(format!("--max-upload-rate={rate}"));
    }
    if let Some(encryption) = &storage.encryption {
        // The whole Secret: its other keys open what they sealed before a rotation.
        let secret = &encryption.key_secret;
        args.push(format!("--encryption-key-file={ENCRYPTION_KEYS_DIR}/{}", secret.key));
        args.push(format!("--encryption-key-dir={ENCRYPTION_KEYS_DIR}"));
        // Readable by any user: the cleanup and prune Jobs run as the operator image's user without an
        // fsGroup, and a root-owned 0400 file would be closed to them. Only this pod mounts the volume.
        let (volume, mount) = secret_mount("encryption-keys", &secret.name, None, 0o444, ENCRYPTION_KEYS_DIR);
        volumes.push(volume);
        mounts.push(mount);
    }
    if let Some(claim) = &storage.persistent_volume_claim {
        let path = storage.url.trim_start_matches("file://").to_string();
        volumes.push(Volume {
            name: "storage".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount { name: "storage".into(), mount_path: path, ..Default::default() });
    }
}

pub(crate) fn credentials_env(storage: &crate::crd::StorageSpec) -> Option<Vec<EnvFromSource>> {
    storage.credentials_secret.as_ref().map(|s| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: s.clone(), optional: None }),
            ..Default::default()
        }]
    })
}

/// The datadir volume of a pod: the claim, and the mount that holds the datadir (the deepest one at or
/// above it).
pub(crate) fn datadir_mount<'a>(
    pod_name: &str,
    pod: &'a Pod,
    container: &'a Container,
    datadir: &str,
) -> Result<(&'a VolumeMount, String), BuildError> {
    let under = |mount: &str| {
        let m = mount.trim_end_matches('/');
        datadir == m || datadir.starts_with(&format!("{m}/")) || m.is_empty()
    };
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| under(&m.mount_path))
        .max_by_key(|m| m.mount_path.trim_end_matches('/').len())
        .ok_or_else(|| BuildError::NoDatadirMount {
            pod: pod_name.into(),
            container: container.name.clone(),
            datadir: datadir.into(),
        })?;
    let claim = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|vs| vs.iter().find(|v| v.name == mount.name))
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .ok_or_else(|| BuildError::DatadirNotOnClaim { pod: pod_name.into(), volume: mount.name.clone() })?;
    Ok((mount, claim))
}

/// The agent's `--mysql-url` for `conn`: its host, else (with `stable`) the pod's DNS name when it has
/// a hostname and subdomain (a StatefulSet pod), else the pod's IP address.
pub(crate) fn mysql_url(
    conn: &crate::crd::ConnectionSpec,
    pod: &Pod,
    pod_name: &str,
    stable: bool,
) -> Result<String, BuildError> {
    let dns = pod.spec.as_ref().and_then(|s| match (&s.hostname, &s.subdomain) {
        (Some(h), Some(d)) if stable => Some(format!("{h}.{d}")),
        _ => None,
    });
    let host = match (&conn.host, dns) {
        (Some(h), _) => h.clone(),
        (None, Some(dns)) => dns,
        (None, None) => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .ok_or_else(|| BuildError::PodNoAddress { pod: pod_name.to_string() })?,
    };
    let user = conn.user.clone().unwrap_or_else(|| "root".into());
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Ok(format!("mysql://{user}@{host}:{}", conn.port.unwrap_or(3306)))
}

/// Volume `name` of Secret `secret` (its keys `items`, or all of them), files of mode `mode`, and its
/// read-only mount at `dir`.
fn secret_mount(
    name: &str,
    secret: &str,
    items: Option<Vec<KeyToPath>>,
    mode: i32,
    dir: &str,
) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items,
            default_mode: Some(mode),
            optional: None,
        }),
        ..Default::default()
    };
    let mount = VolumeMount { name: name.into(), mount_path: dir.into(), read_only: Some(true), ..Default::default() };
    (volume, mount)
}

/// The server password of `conn`, as a file from its Secret.
pub(crate) fn password_file(
    conn: &crate::crd::ConnectionSpec,
    args: &mut Vec<String>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    if let Some(secret) = &conn.password_secret {
        let items = vec![KeyToPath { key: secret.key.clone(), path: "password".into(), mode: None }];
        let (volume, mount) = secret_mount("mysql-password", &secret.name, Some(items), 0o400, PASSWORD_DIR);
        volumes.push(volume);
        mounts.push(mount);
        args.push(format!("--mysql-password-file={PASSWORD_DIR}/password"));
    }
}

/// A Job that runs the agent in the operator image alone, against storage only (no datadir, no database
/// tools): cleanup and prune.
pub(crate) struct OperatorJob {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) owner: Option<OwnerReference>,
    pub(crate) ttl_seconds: i32,
}

impl OperatorJob {
    pub(crate) fn build(
        self,
        mut args: Vec<String>,
        storage: &StorageSpec,
        security_context: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
        operator_image: &str,
    ) -> Job {
        let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
        storage_args(storage, &mut args, &mut volumes, &mut mounts);
        let agent = Container {
            name: "agent".into(),
            image: Some(operator_image.to_string()),
            command: Some(vec![OPERATOR_BINARY.into()]),
            args: Some(args),
            env_from: credentials_env(storage),
            volume_mounts: Some(mounts).filter(|m| !m.is_empty()),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Default::default()
        };
        let options = crate::crd::JobOptions {
            backoff_limit: Some(2),
            active_deadline_seconds: Some(3600),
            ttl_seconds_after_finished: Some(self.ttl_seconds),
            resources: None,
        };
        Job {
            metadata: ObjectMeta {
                name: Some(self.name),
                namespace: Some(self.namespace),
                labels: Some(self.labels.clone()),
                owner_references: self.owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(agent_job_spec(
                &options,
                self.labels,
                PodSpec {
                    security_context,
                    containers: vec![agent],
                    volumes: Some(volumes).filter(|v| !v.is_empty()),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }
}

/// What the builders' tests build from: a database pod as a StatefulSet makes it.
#[cfg(test)]
pub mod fixtures {
    pub const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: db}
spec:
  nodeName: node-7
  securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}
  tolerations: [{key: dedicated, operator: Equal, value: db, effect: NoSchedule}]
  containers:
  - name: sidecar
    image: exporter:1
  - name: mariadb
    image: mariadb:10.11
    volumeMounts:
    - {name: config, mountPath: /etc/mysql/conf.d}
    - {name: data, mountPath: /var/lib/mysql, subPath: mysql}
  volumes:
  - {name: config, configMap: {name: db-config}}
  - {name: data, persistentVolumeClaim: {claimName: data-db-0}}
status: {podIP: 10.1.2.3}
"#;

    pub fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }
}
