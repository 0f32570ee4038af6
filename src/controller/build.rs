//! Builders of the agent Jobs: pure functions from a custom resource and the objects observed around
//! it to typed Kubernetes objects. No client here; every rule is unit-tested.
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
            Affinity, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, KeyToPath, NodeAffinity, NodeSelector,
            NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod,
            PodSpec, PodTemplateSpec, SecretEnvSource, SecretVolumeSource, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;

use crate::crd::{BackupMethod, MySQLBackup, MySQLRestore, StorageSpec};

/// Where the operator binary sits in the operator image.
pub const OPERATOR_BINARY: &str = "/mysql-backup-operator";
/// Where the init container puts the binary for the agent container.
pub const AGENT_DIR: &str = "/opt/mysql-backup-operator";
/// The restore Job's work directory (`TMPDIR`), an `emptyDir`.
pub const RESTORE_WORK: &str = "/var/tmp/mysql-backup-operator";
/// Where the server password file is mounted.
pub const PASSWORD_DIR: &str = "/var/run/secrets/mysql-backup-operator/mysql";
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
}

impl BuildError {
    /// Whether waiting may fix it (the pod is still starting) rather than a change of spec or pod.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::PodNotScheduled { .. } | Self::PodNoAddress { .. })
    }
}

/// The method a backup runs with, `auto` resolved. MariaDB images are the only ones testable here; the
/// pod's image name decides until the agent can ask the server.
pub fn resolve_method(method: BackupMethod) -> crate::format::manifest::MethodKind {
    match method {
        BackupMethod::Cold => crate::format::manifest::MethodKind::Cold,
        BackupMethod::Auto | BackupMethod::Mariabackup => crate::format::manifest::MethodKind::Mariabackup,
        BackupMethod::Binlog => crate::format::manifest::MethodKind::Binlog,
    }
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

fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference, BuildError> {
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
fn install_container(operator_image: &str) -> Container {
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
fn agent_runtime(needs_server_tools: bool, database_image: &str, operator_image: &str) -> (String, String) {
    if needs_server_tools {
        (database_image.to_string(), format!("{AGENT_DIR}/mysql-backup-operator"))
    } else {
        (operator_image.to_string(), OPERATOR_BINARY.to_string())
    }
}

/// The Job spec around an agent pod: retries, deadline and clean-up from the resource's job options
/// (defaults: 1 retry, 6 hours, kept one day), the pod labelled like the Job, never restarted in place.
fn agent_job_spec(options: &crate::crd::JobOptions, labels: BTreeMap<String, String>, pod: PodSpec) -> JobSpec {
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

/// Storage arguments, volume and mount of the agent for `storage`.
fn storage_args(
    storage: &crate::crd::StorageSpec,
    args: &mut Vec<String>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    args.push(format!("--storage={}", storage.url));
    for (k, v) in &storage.options {
        args.push(format!("--storage-option={k}={v}"));
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

fn credentials_env(storage: &crate::crd::StorageSpec) -> Option<Vec<EnvFromSource>> {
    storage.credentials_secret.as_ref().map(|s| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: s.clone(), optional: None }),
            ..Default::default()
        }]
    })
}

/// The datadir volume of a pod: the claim, and the mount that holds the datadir (the deepest one at or
/// above it).
fn datadir_mount<'a>(
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
fn mysql_url(conn: &crate::crd::ConnectionSpec, pod: &Pod, pod_name: &str, stable: bool) -> Result<String, BuildError> {
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

/// The server password of `conn`, as a file from its Secret.
fn password_file(
    conn: &crate::crd::ConnectionSpec,
    args: &mut Vec<String>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    if let Some(secret) = &conn.password_secret {
        volumes.push(Volume {
            name: "mysql-password".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath { key: secret.key.clone(), path: "password".into(), mode: None }]),
                default_mode: Some(0o400),
                optional: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "mysql-password".into(),
            mount_path: PASSWORD_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.push(format!("--mysql-password-file={PASSWORD_DIR}/password"));
    }
}

/// Builds the backup Job of `backup`, whose source pod is `pod`, with the operator image `operator_image`.
pub fn backup_job(backup: &MySQLBackup, pod: &Pod, operator_image: &str) -> Result<Job, BuildError> {
    let spec = &backup.spec;
    let name = backup.metadata.name.clone().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = backup.metadata.namespace.clone().ok_or(BuildError::MissingMetadata("namespace"))?;
    let pod_name = spec.source.pod.clone();
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let node = pod_spec.node_name.clone().ok_or_else(|| BuildError::PodNotScheduled { pod: pod_name.clone() })?;
    let container = match &spec.source.container {
        Some(c) => pod_spec.containers.iter().find(|x| &x.name == c),
        None => pod_spec.containers.first(),
    }
    .ok_or_else(|| BuildError::ContainerNotFound {
        pod: pod_name.clone(),
        container: spec.source.container.clone().unwrap_or_default(),
    })?;
    let datadir = spec.source.datadir.trim_end_matches('/').to_string();
    let (mount, claim) = datadir_mount(&pod_name, pod, container, &datadir)?;
    let method = resolve_method(spec.method);
    // mariadb-backup comes with the database image; binlog and cold read files with the operator's own.
    let needs_server = method == crate::format::manifest::MethodKind::Mariabackup;
    let needs_connection = method != crate::format::manifest::MethodKind::Cold;

    let mut args: Vec<String> = vec![
        "agent".into(),
        "backup".into(),
        format!("--method={}", method.as_str()),
        format!("--datadir={datadir}"),
        format!("--compression-level={}", spec.storage.compression_level),
        format!("--parallel={}", spec.storage.parallelism),
        "--summary-file=/dev/termination-log".into(),
        "--log-format=json".into(),
        format!("--tag={LABEL_BACKUP}={namespace}/{name}"),
    ];
    // A schedule's backups carry its tag: its retention applies to them only.
    if let Some(schedule) = backup.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SCHEDULE)) {
        args.push(format!("--tag={LABEL_SCHEDULE}={namespace}/{schedule}"));
    }
    let mut volumes = vec![
        Volume {
            name: "datadir".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim, read_only: None }),
            ..Default::default()
        },
        Volume { name: "agent".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "datadir".into(),
            mount_path: mount.mount_path.clone(),
            sub_path: mount.sub_path.clone(),
            ..Default::default()
        },
        VolumeMount { name: "agent".into(), mount_path: AGENT_DIR.into(), ..Default::default() },
    ];
    storage_args(&spec.storage, &mut args, &mut volumes, &mut mounts);
    if needs_connection {
        args.push(format!("--mysql-url={}", mysql_url(&spec.source.connection, pod, &pod_name, false)?));
        password_file(&spec.source.connection, &mut args, &mut volumes, &mut mounts);
    }
    let (image, command) = agent_runtime(needs_server, container.image.as_deref().unwrap_or_default(), operator_image);
    let agent = Container {
        name: "agent".into(),
        image: Some(image.clone()),
        command: Some(vec![command]),
        args: Some(args),
        env_from: credentials_env(&spec.storage),
        volume_mounts: Some(mounts),
        resources: spec.job.resources.clone(),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let install = install_container(operator_image);
    let pod_labels = labels("backup", &name);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(child_name("backup", &name)),
            namespace: Some(namespace),
            labels: Some(pod_labels.clone()),
            annotations: Some(BTreeMap::from([(
                "mysqlbackup.dev/database-image".to_string(),
                container.image.clone().unwrap_or_default(),
            )])),
            owner_references: Some(vec![owner_reference(backup)?]),
            ..Default::default()
        },
        spec: Some(agent_job_spec(
            &spec.job,
            pod_labels,
            PodSpec {
                affinity: Some(Affinity {
                    node_affinity: Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                            node_selector_terms: vec![NodeSelectorTerm {
                                match_fields: Some(vec![NodeSelectorRequirement {
                                    key: "metadata.name".into(),
                                    operator: "In".into(),
                                    values: Some(vec![node]),
                                }]),
                                ..Default::default()
                            }],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                tolerations: pod_spec.tolerations.clone(),
                security_context: pod_spec.security_context.clone(),
                image_pull_secrets: pod_spec.image_pull_secrets.clone(),
                init_containers: Some(vec![install]),
                containers: vec![agent],
                volumes: Some(volumes),
                ..Default::default()
            },
        )),
        ..Default::default()
    })
}

/// The PersistentVolumeClaim a restore creates from its template, if it has one. It has no owner: a
/// restored volume outlives the MySQLRestore that filled it.
pub fn restore_claim(restore: &MySQLRestore) -> Result<Option<PersistentVolumeClaim>, BuildError> {
    let Some(template) = &restore.spec.target.volume_claim_template else { return Ok(None) };
    let name = restore.metadata.name.clone().ok_or(BuildError::MissingMetadata("name"))?;
    Ok(Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(child_name("restore", &name)),
            namespace: restore.metadata.namespace.clone(),
            labels: Some(labels("restore", &name)),
            ..Default::default()
        },
        spec: Some(template.clone()),
        ..Default::default()
    }))
}

/// The claim a MySQLRestore writes into: `spec.target.persistentVolumeClaim`, or the one made from its
/// `volumeClaimTemplate` (named like its Job). Always the same for the same spec, so a status read from a
/// stale cache can be rebuilt without losing it.
pub fn restore_target_claim(restore: &MySQLRestore) -> String {
    match &restore.spec.target.persistent_volume_claim {
        Some(existing) => existing.clone(),
        None => child_name("restore", restore.metadata.name.as_deref().unwrap_or_default()),
    }
}

/// What a restore Job needs beyond the MySQLRestore: resolved from the referenced MySQLBackup or the spec.
#[derive(Debug, Clone)]
pub struct RestorePlan<'a> {
    /// Storage holding the backup.
    pub storage: &'a StorageSpec,
    /// Backup id, or `latest`.
    pub backup_id: String,
    /// Image with `mariadb-backup`, when the backup needs preparing.
    pub database_image: Option<String>,
    /// The claim to write into.
    pub claim: String,
}

/// Where the target volume is mounted in a restore Job.
pub const RESTORE_MOUNT: &str = "/var/lib/mysql-restore";

/// Builds the restore Job of `restore`.
pub fn restore_job(restore: &MySQLRestore, plan: &RestorePlan, operator_image: &str) -> Result<Job, BuildError> {
    let name = restore.metadata.name.clone().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = restore.metadata.namespace.clone().ok_or(BuildError::MissingMetadata("namespace"))?;
    let target = &restore.spec.target;
    let datadir = match &target.sub_path {
        Some(sub) => format!("{RESTORE_MOUNT}/{}", sub.trim_matches('/')),
        None => RESTORE_MOUNT.to_string(),
    };
    let what = match &restore.spec.point_in_time {
        Some(pit) => format!("--until={}", pit.gtid.clone().or(pit.time.clone()).unwrap_or_default()),
        None => format!("--backup={}", plan.backup_id),
    };
    let mut args = vec![
        "agent".to_string(),
        "restore".into(),
        what,
        format!("--datadir={datadir}"),
        "--summary-file=/dev/termination-log".into(),
        "--log-format=json".into(),
    ];
    if let Some(pit) = &restore.spec.point_in_time {
        if let Some(archive) = &pit.archive {
            args.push(format!("--archive={archive}"));
        }
        if pit.force {
            args.push("--force".into());
        }
    }
    if target.overwrite {
        args.push("--overwrite".into());
    }
    let mut volumes = vec![
        Volume {
            name: "target".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: plan.claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        },
        Volume { name: "agent".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        // Where a point-in-time restore keeps the binary logs it replays (TMPDIR): the node's disk, not
        // the image's file system; the target's parent is the image's and not writable.
        Volume { name: "work".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    let mut mounts = vec![
        VolumeMount { name: "target".into(), mount_path: RESTORE_MOUNT.into(), ..Default::default() },
        VolumeMount { name: "agent".into(), mount_path: AGENT_DIR.into(), ..Default::default() },
        VolumeMount { name: "work".into(), mount_path: RESTORE_WORK.into(), ..Default::default() },
    ];
    storage_args(plan.storage, &mut args, &mut volumes, &mut mounts);
    let (image, command) = agent_runtime(
        plan.database_image.is_some(),
        plan.database_image.as_deref().unwrap_or_default(),
        operator_image,
    );
    let agent = Container {
        name: "agent".into(),
        image: Some(image),
        command: Some(vec![command]),
        args: Some(args),
        env_from: credentials_env(plan.storage),
        env: Some(vec![EnvVar { name: "TMPDIR".into(), value: Some(RESTORE_WORK.into()), ..Default::default() }]),
        volume_mounts: Some(mounts),
        resources: restore.spec.job.resources.clone(),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let job_labels = labels("restore", &name);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(child_name("restore", &name)),
            namespace: Some(namespace),
            labels: Some(job_labels.clone()),
            owner_references: Some(vec![owner_reference(restore)?]),
            ..Default::default()
        },
        spec: Some(agent_job_spec(
            &restore.spec.job,
            job_labels,
            PodSpec {
                security_context: restore.spec.security_context.clone(),
                init_containers: Some(vec![install_container(operator_image)]),
                containers: vec![agent],
                volumes: Some(volumes),
                ..Default::default()
            },
        )),
        ..Default::default()
    })
}

/// A Job that runs the agent in the operator image alone, against storage only (no datadir, no database
/// tools): cleanup and prune.
struct OperatorJob {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
    ttl_seconds: i32,
}

impl OperatorJob {
    fn build(
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

/// Builds the Job that deletes the stored backup `backup_id` of `backup` (`deletionPolicy: Delete`). It
/// runs the operator image alone (no database tools, no datadir), as `security_context` when given (the
/// source pod's, so it can delete what the backup Job wrote to a `file://` volume). It has no owner:
/// while its MySQLBackup is being deleted the garbage collector could remove an owned Job before it
/// finishes; `ttlSecondsAfterFinished` removes it instead.
pub fn cleanup_job(
    backup: &MySQLBackup,
    backup_id: &str,
    security_context: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
    operator_image: &str,
) -> Result<Job, BuildError> {
    let name = backup.metadata.name.clone().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = backup.metadata.namespace.clone().ok_or(BuildError::MissingMetadata("namespace"))?;
    let args = vec![
        "agent".to_string(),
        "delete".into(),
        format!("--backup={backup_id}"),
        "--ignore-missing".into(),
        "--summary-file=/dev/termination-log".into(),
        "--log-format=json".into(),
    ];
    let job = OperatorJob {
        name: child_name("cleanup", &name),
        namespace,
        labels: labels("cleanup", &name),
        // No owner: see above.
        owner: None,
        ttl_seconds: 3600,
    };
    Ok(job.build(args, &backup.spec.storage, security_context, operator_image))
}

/// Builds the Job that applies `schedule`'s retention to its backups in storage (`agent prune`), after
/// the complete MySQLBackup `after`. Operator image only; as `security_context` when given (the source
/// pod's, for `file://` volumes); owned by the schedule.
pub fn prune_job(
    schedule: &crate::crd::BackupSchedule,
    after: &str,
    security_context: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
    operator_image: &str,
) -> Result<Job, BuildError> {
    let name = schedule.metadata.name.clone().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = schedule.metadata.namespace.clone().ok_or(BuildError::MissingMetadata("namespace"))?;
    let retention = schedule.spec.retention.clone().unwrap_or_default();
    let mut args = vec!["agent".to_string(), "prune".into()];
    for (flag, value) in [
        ("keep-last", retention.keep_last),
        ("keep-hourly", retention.keep_hourly),
        ("keep-daily", retention.keep_daily),
        ("keep-weekly", retention.keep_weekly),
        ("keep-monthly", retention.keep_monthly),
    ] {
        if let Some(v) = value.filter(|v| *v > 0) {
            args.push(format!("--{flag}={v}"));
        }
    }
    if let Some(age) = &retention.max_age {
        args.push(format!("--max-age={age}"));
    }
    if let Some(zone) = &schedule.spec.time_zone {
        args.push(format!("--time-zone={zone}"));
    }
    args.push(format!("--tag={LABEL_SCHEDULE}={namespace}/{name}"));
    if schedule.spec.binlog_archive.is_some() {
        args.push(format!("--archive={}", archive_name(&namespace, &name)));
    }
    args.push("--summary-file=/dev/termination-log".into());
    args.push("--log-format=json".into());
    let mut job_labels = labels("prune", &name);
    job_labels.insert(LABEL_SCHEDULE.into(), name.clone());
    let job = OperatorJob {
        name: child_name("prune", after),
        namespace,
        labels: job_labels,
        owner: Some(owner_reference(schedule)?),
        ttl_seconds: 86400,
    };
    Ok(job.build(args, &schedule.spec.backup_template.storage, security_context, operator_image))
}

/// Port of the archiver's `/status`, `/metrics` and `/healthz`.
pub const ARCHIVER_PORT: i32 = 8081;

/// Name of the archiver container's port that serves `/status`.
pub const ARCHIVER_PORT_NAME: &str = "status";

/// Where to read the status of an archiver: `http://<ip>:<port>/status` of the first running pod in
/// `pods` that has an IP, with the port its archiver container declares under [`ARCHIVER_PORT_NAME`]
/// (pods built by an older operator may differ) or else [`ARCHIVER_PORT`]. `None` while no pod runs.
pub fn archiver_status_url(pods: &[Pod]) -> Option<String> {
    let pod = pods
        .iter()
        .find(|p| p.status.as_ref().is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some()))?;
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    let port = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(ARCHIVER_PORT_NAME))
        .map_or(ARCHIVER_PORT, |p| p.container_port);
    Some(format!("http://{host}:{port}/status"))
}

/// The archive name of a schedule: `<namespace>.<schedule>`.
pub fn archive_name(namespace: &str, schedule: &str) -> String {
    format!("{namespace}.{schedule}")
}

/// Builds the binary-log archiver of `schedule` (`spec.binlogArchive`), whose server runs in `pod`: a
/// Deployment of one replica (none while suspended) with the `Recreate` strategy, so two archivers never
/// stream the same archive at once. It streams over the network, so it needs neither the datadir nor the
/// database's node, and restarts wherever it can. Operator image; the pod's security context (for
/// `file://` volumes); owned by the schedule.
pub fn archiver_deployment(
    schedule: &crate::crd::BackupSchedule,
    pod: &Pod,
    operator_image: &str,
) -> Result<k8s_openapi::api::apps::v1::Deployment, BuildError> {
    use k8s_openapi::{
        api::{
            apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
            core::v1::{ContainerPort, HTTPGetAction, Probe},
        },
        apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
    };
    let name = schedule.metadata.name.clone().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = schedule.metadata.namespace.clone().ok_or(BuildError::MissingMetadata("namespace"))?;
    let spec = schedule.spec.binlog_archive.clone().unwrap_or_default();
    let template = &schedule.spec.backup_template;
    let mut args = vec![
        "agent".to_string(),
        "binlog".into(),
        "archive".into(),
        format!("--archive={}", archive_name(&namespace, &name)),
        format!("--mysql-url={}", mysql_url(&template.source.connection, pod, &template.source.pod, true)?),
        format!("--segment-seconds={}", spec.segment_seconds.unwrap_or(5)),
        format!("--listen=0.0.0.0:{ARCHIVER_PORT}"),
        "--log-format=json".into(),
    ];
    if let Some(id) = spec.replica_server_id {
        args.push(format!("--replica-server-id={id}"));
    }
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    password_file(&template.source.connection, &mut args, &mut volumes, &mut mounts);
    storage_args(&template.storage, &mut args, &mut volumes, &mut mounts);
    let mut pod_labels = labels("archiver", &name);
    pod_labels.insert(LABEL_SCHEDULE.into(), name.clone());
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ARCHIVER_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let container = Container {
        name: "archiver".into(),
        image: Some(operator_image.to_string()),
        command: Some(vec![OPERATOR_BINARY.into()]),
        args: Some(args),
        env_from: credentials_env(&template.storage),
        ports: Some(vec![ContainerPort {
            name: Some(ARCHIVER_PORT_NAME.into()),
            container_port: ARCHIVER_PORT,
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10)),
        volume_mounts: Some(mounts).filter(|m| !m.is_empty()),
        resources: spec.resources.clone(),
        ..Default::default()
    };
    let pod_spec = pod.spec.clone().unwrap_or_default();
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(child_name("archiver", &name)),
            namespace: Some(namespace),
            labels: Some(pod_labels.clone()),
            owner_references: Some(vec![owner_reference(schedule)?]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(if schedule.spec.suspend { 0 } else { 1 }),
            selector: LabelSelector { match_labels: Some(pod_labels.clone()), ..Default::default() },
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes).filter(|v| !v.is_empty()),
                    security_context: pod_spec.security_context.clone(),
                    image_pull_secrets: pod_spec.image_pull_secrets.clone(),
                    // SIGTERM stores the open segment first.
                    termination_grace_period_seconds: Some(60),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKUP: &str = r#"
apiVersion: mysqlbackup.dev/v1alpha1
kind: MySQLBackup
metadata: {name: nightly-1, namespace: db, uid: 1234-abcd}
spec:
  source:
    pod: db-0
    container: mariadb
    connection: {user: backup, passwordSecret: {name: db-backup-user, key: password}}
  storage:
    url: s3://backups/prod
    options: {region: eu-west-1}
    credentialsSecret: s3-creds
"#;

    const POD: &str = r#"
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

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn build(backup: &str, pod: &str) -> Result<Job, BuildError> {
        backup_job(&parse(backup), &parse(pod), "ghcr.io/example/mysql-backup-operator:0.1.0")
    }

    fn pod_spec(job: &Job) -> &PodSpec {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn pins_to_the_pods_node_mounts_its_datadir_and_runs_as_its_user() {
        let job = build(BACKUP, POD).unwrap();
        let spec = pod_spec(&job);
        let terms = &spec.affinity.as_ref().unwrap().node_affinity.as_ref().unwrap();
        let field = &terms.required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms[0]
            .match_fields
            .as_ref()
            .unwrap()[0];
        assert_eq!((field.key.as_str(), field.values.as_deref()), ("metadata.name", Some(&["node-7".to_string()][..])));
        assert_eq!(spec.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
        let sc = spec.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group, sc.fs_group), (Some(999), Some(999), Some(999)));
        let data = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "datadir").unwrap();
        assert_eq!(data.persistent_volume_claim.as_ref().unwrap().claim_name, "data-db-0");
        let agent = &spec.containers[0];
        let mount = agent.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "datadir").unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.sub_path.as_deref()), ("/var/lib/mysql", Some("mysql")));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(job.metadata.name.as_deref(), Some("backup-nightly-1"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("MySQLBackup", "1234-abcd", Some(true))
        );
        assert_eq!(job.metadata.labels.as_ref().unwrap()[LABEL_BACKUP], "nightly-1");
        let js = job.spec.as_ref().unwrap();
        assert_eq!(
            (js.backoff_limit, js.active_deadline_seconds, js.ttl_seconds_after_finished),
            (Some(1), Some(21600), Some(86400))
        );
    }

    #[test]
    fn mariabackup_runs_in_the_database_image_with_secrets_from_files_and_env() {
        let job = build(BACKUP, POD).unwrap();
        let spec = pod_spec(&job);
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("ghcr.io/example/mysql-backup-operator:0.1.0"));
        assert_eq!(init.args.as_ref().unwrap(), &["install", "--to=/opt/mysql-backup-operator"]);
        let agent = &spec.containers[0];
        assert_eq!(agent.image.as_deref(), Some("mariadb:10.11"));
        assert_eq!(agent.command.as_ref().unwrap(), &["/opt/mysql-backup-operator/mysql-backup-operator"]);
        assert_eq!(
            agent.args.as_ref().unwrap(),
            &[
                "agent",
                "backup",
                "--method=mariabackup",
                "--datadir=/var/lib/mysql",
                "--compression-level=3",
                "--parallel=2",
                "--summary-file=/dev/termination-log",
                "--log-format=json",
                "--tag=mysqlbackup.dev/backup=db/nightly-1",
                "--storage=s3://backups/prod",
                "--storage-option=region=eu-west-1",
                "--mysql-url=mysql://backup@10.1.2.3:3306",
                "--mysql-password-file=/var/run/secrets/mysql-backup-operator/mysql/password",
            ]
        );
        assert_eq!(agent.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3-creds");
        assert!(agent.env.is_none(), "no secret value is ever written into the Job");
        let secret = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "mysql-password").unwrap();
        let s = secret.secret.as_ref().unwrap();
        assert_eq!((s.secret_name.as_deref(), s.default_mode), (Some("db-backup-user"), Some(0o400)));
        let json = serde_json::to_string(&job).unwrap();
        assert!(!json.contains("hunter2") && !json.contains("password\":\""), "{json}");
    }

    #[test]
    fn cold_runs_in_the_operator_image_without_a_connection() {
        let backup = BACKUP.replace("  storage:", "  method: cold\n  storage:");
        let job = build(&backup, POD).unwrap();
        let agent = &pod_spec(&job).containers[0];
        assert_eq!(agent.image.as_deref(), Some("ghcr.io/example/mysql-backup-operator:0.1.0"));
        assert_eq!(agent.command.as_ref().unwrap(), &["/mysql-backup-operator"]);
        assert!(agent.args.as_ref().unwrap().iter().all(|a| !a.starts_with("--mysql")));
    }

    #[test]
    fn binlog_runs_in_the_operator_image_with_a_connection() {
        let backup = BACKUP.replace("  storage:", "  method: binlog\n  storage:");
        let job = build(&backup, POD).unwrap();
        let agent = &pod_spec(&job).containers[0];
        assert_eq!(agent.image.as_deref(), Some("ghcr.io/example/mysql-backup-operator:0.1.0"));
        let args = agent.args.as_ref().unwrap();
        assert!(args.contains(&"--method=binlog".to_string()));
        assert!(args.contains(&"--mysql-url=mysql://backup@10.1.2.3:3306".to_string()), "{args:?}");
        assert!(
            pod_spec(&job).volumes.as_ref().unwrap().iter().any(|v| v.name == "datadir"),
            "reads the binlogs from the volume"
        );
    }

    #[test]
    fn bad_sources_are_named() {
        let unscheduled = POD.replace("  nodeName: node-7\n", "");
        assert_eq!(build(BACKUP, &unscheduled).unwrap_err(), BuildError::PodNotScheduled { pod: "db-0".into() });
        assert!(build(BACKUP, &unscheduled).unwrap_err().is_transient());
        let no_ip = POD.replace("status: {podIP: 10.1.2.3}", "status: {}");
        assert_eq!(
            build(BACKUP, &no_ip).unwrap_err().to_string(),
            "pod db-0 has no IP address yet; set spec.source.connection.host or wait for the pod to start"
        );
        let wrong_container = BACKUP.replace("container: mariadb", "container: mysql");
        assert_eq!(
            build(&wrong_container, POD).unwrap_err().to_string(),
            "pod db-0 has no container \"mysql\" (spec.source.container)"
        );
        let other_datadir =
            BACKUP.replace("    container: mariadb\n", "    container: mariadb\n    datadir: /data/mysql\n");
        let err = build(&other_datadir, POD).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container \"mariadb\" of pod db-0 mounts no volume at or above the datadir /data/mysql (spec.source.datadir)"
        );
        assert!(!err.is_transient());
        let empty_dir = POD.replace("persistentVolumeClaim: {claimName: data-db-0}", "emptyDir: {}");
        assert_eq!(
            build(BACKUP, &empty_dir).unwrap_err(),
            BuildError::DatadirNotOnClaim { pod: "db-0".into(), volume: "data".into() }
        );
    }

    #[test]
    fn default_container_is_the_first_and_deepest_mount_wins() {
        let pod = POD.replace(
            "    - {name: data, mountPath: /var/lib/mysql, subPath: mysql}",
            "    - {name: data, mountPath: /var/lib/mysql, subPath: mysql}\n    - {name: other, mountPath: /var/lib}",
        );
        let job = build(BACKUP, &pod).unwrap();
        let mount = pod_spec(&job).containers[0].volume_mounts.as_ref().unwrap()[0].clone();
        assert_eq!(mount.mount_path, "/var/lib/mysql");
        let first = BACKUP.replace("    container: mariadb\n", "");
        let err = build(&first, POD).unwrap_err();
        assert_eq!(
            err,
            BuildError::NoDatadirMount {
                pod: "db-0".into(),
                container: "sidecar".into(),
                datadir: "/var/lib/mysql".into()
            }
        );
    }

    #[test]
    fn long_names_are_shortened_stably_and_distinctly() {
        let a = child_name("backup", &"x".repeat(80));
        let b = child_name("backup", &format!("{}y", "x".repeat(79)));
        assert_eq!(a.len(), 63);
        assert_ne!(a, b);
        assert_eq!(a, child_name("backup", &"x".repeat(80)));
        assert_eq!(child_name("backup", "short"), "backup-short");
    }

    #[test]
    fn the_archiver_is_one_recreated_replica_streaming_into_the_schedules_archive() {
        let schedule: crate::crd::BackupSchedule = parse(
            r#"
apiVersion: mysqlbackup.dev/v1alpha1
kind: BackupSchedule
metadata: {name: nightly, namespace: db, uid: s-1}
spec:
  schedule: "0 2 * * *"
  binlogArchive: {segmentSeconds: 2, replicaServerId: 4000000001}
  backupTemplate:
    source:
      pod: db-0
      connection: {user: repl, passwordSecret: {name: db-repl, key: password}}
    storage: {url: s3://backups/prod, credentialsSecret: s3-creds, options: {region: eu-west-1}}
"#,
        );
        let mut pod: Pod = parse(POD);
        let image = "ghcr.io/example/mysql-backup-operator:0.1.0";
        let dep = archiver_deployment(&schedule, &pod, image).unwrap();
        assert_eq!(dep.metadata.name.as_deref(), Some("archiver-nightly"));
        assert_eq!(dep.metadata.owner_references.as_ref().unwrap()[0].uid, "s-1");
        let spec = dep.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.as_ref().unwrap().type_.as_deref(), Some("Recreate"));
        let pod_spec = spec.template.spec.as_ref().unwrap();
        let c = &pod_spec.containers[0];
        assert_eq!(c.image.as_deref(), Some(image));
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "agent",
                "binlog",
                "archive",
                "--archive=db.nightly",
                "--mysql-url=mysql://repl@10.1.2.3:3306",
                "--segment-seconds=2",
                "--listen=0.0.0.0:8081",
                "--log-format=json",
                "--replica-server-id=4000000001",
                "--mysql-password-file=/var/run/secrets/mysql-backup-operator/mysql/password",
                "--storage=s3://backups/prod",
                "--storage-option=region=eu-west-1",
            ]
        );
        assert_eq!(c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3-creds");
        assert_eq!(pod_spec.security_context.as_ref().unwrap().run_as_user, Some(999));
        assert!(pod_spec.affinity.is_none(), "not pinned: it streams over the network");
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert_eq!(selector.get("app.kubernetes.io/component").map(String::as_str), Some("archiver"));
        assert_eq!(selector.get(LABEL_SCHEDULE).map(String::as_str), Some("nightly"));
        // A StatefulSet pod is reached by its stable DNS name, which survives its restarts.
        let spec = pod.spec.as_mut().unwrap();
        spec.hostname = Some("db-0".into());
        spec.subdomain = Some("db".into());
        let dep = archiver_deployment(&schedule, &pod, image).unwrap();
        let args = dep.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.contains(&"--mysql-url=mysql://repl@db-0.db:3306".to_string()), "{args:?}");
        // Suspended: scaled to zero.
        let mut suspended = schedule.clone();
        suspended.spec.suspend = true;
        assert_eq!(archiver_deployment(&suspended, &pod, image).unwrap().spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn the_archivers_status_is_read_from_its_running_pod_on_the_declared_port() {
        let schedule: crate::crd::BackupSchedule = parse(
            "{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {name: nightly, namespace: db, uid: s-1}, \
             spec: {schedule: '0 2 * * *', binlogArchive: {}, backupTemplate: {source: {pod: db-0}, storage: {url: 's3://b/p'}}}}",
        );
        let dep = archiver_deployment(&schedule, &parse(POD), "op:1").unwrap();
        // An archiver pod as the Deployment makes it.
        let pod = |phase: &str, ip: Option<&str>| Pod {
            spec: dep.spec.as_ref().unwrap().template.spec.clone(),
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(archiver_status_url(&[]), None);
        assert_eq!(archiver_status_url(&[pod("Pending", None), pod("Running", None)]), None);
        assert_eq!(
            archiver_status_url(&[pod("Pending", None), pod("Running", Some("10.0.0.7"))]).as_deref(),
            Some("http://10.0.0.7:8081/status")
        );
        assert_eq!(
            archiver_status_url(&[pod("Running", Some("fd00::7"))]).as_deref(),
            Some("http://[fd00::7]:8081/status")
        );
        let mut moved = pod("Running", Some("10.0.0.8"));
        moved.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap()[0].container_port = 9100;
        assert_eq!(archiver_status_url(&[moved]).as_deref(), Some("http://10.0.0.8:9100/status"));
        let mut unnamed = pod("Running", Some("10.0.0.9"));
        unnamed.spec = None;
        assert_eq!(archiver_status_url(&[unnamed]).as_deref(), Some("http://10.0.0.9:8081/status"));
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;

    const RESTORE: &str = r#"
apiVersion: mysqlbackup.dev/v1alpha1
kind: MySQLRestore
metadata: {name: restore-1, namespace: db, uid: r-1}
spec:
  source: {backup: nightly-1}
  target:
    volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 20Gi}}}
    subPath: mysql
  securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}
"#;

    fn storage() -> StorageSpec {
        serde_yaml::from_str("{url: 's3://backups/prod', credentialsSecret: s3-creds, options: {region: eu-west-1}}")
            .unwrap()
    }

    #[test]
    fn template_claim_is_named_after_the_restore_and_owned_by_nobody() {
        let restore: MySQLRestore = serde_yaml::from_str(RESTORE).unwrap();
        let claim = restore_claim(&restore).unwrap().expect("a claim from the template");
        assert_eq!(claim.metadata.name.as_deref(), Some("restore-restore-1"));
        assert!(claim.metadata.owner_references.is_none(), "deleting the MySQLRestore must not delete the data");
        assert_eq!(claim.spec.unwrap().access_modes.unwrap(), ["ReadWriteOnce"]);
        let existing = RESTORE.replace(
            "volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 20Gi}}}",
            "persistentVolumeClaim: data-db-1",
        );
        assert!(restore_claim(&serde_yaml::from_str(&existing).unwrap()).unwrap().is_none());
    }

    #[test]
    fn restore_job_writes_the_claim_as_the_database_user_and_prepares_in_its_image() {
        let restore: MySQLRestore = serde_yaml::from_str(RESTORE).unwrap();
        let storage = storage();
        let plan = RestorePlan {
            storage: &storage,
            backup_id: "20261122T020001Z-00abcd".into(),
            database_image: Some("mariadb:10.11".into()),
            claim: "restore-restore-1".into(),
        };
        let job = restore_job(&restore, &plan, "op:1").unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("restore-restore-1"));
        assert_eq!(job.metadata.owner_references.as_ref().unwrap()[0].kind, "MySQLRestore");
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.as_ref().unwrap().run_as_user, Some(999));
        let agent = &pod.containers[0];
        assert_eq!(agent.image.as_deref(), Some("mariadb:10.11"));
        assert_eq!(
            agent.args.as_ref().unwrap(),
            &[
                "agent",
                "restore",
                "--backup=20261122T020001Z-00abcd",
                "--datadir=/var/lib/mysql-restore/mysql",
                "--summary-file=/dev/termination-log",
                "--log-format=json",
                "--storage=s3://backups/prod",
                "--storage-option=region=eu-west-1",
            ]
        );
        assert_eq!(agent.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3-creds");
        let target = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "target").unwrap();
        assert_eq!(target.persistent_volume_claim.as_ref().unwrap().claim_name, "restore-restore-1");
        assert_eq!(pod.init_containers.as_ref().unwrap()[0].image.as_deref(), Some("op:1"));
        // A point-in-time replay works in TMPDIR, a volume of the Job's own: the target's parent is the
        // image's file system, which the database user cannot write.
        let tmpdir = agent.env.as_ref().unwrap().iter().find(|e| e.name == "TMPDIR").unwrap();
        assert_eq!(tmpdir.value.as_deref(), Some("/var/tmp/mysql-backup-operator"));
        let work = agent.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "work").unwrap();
        assert_eq!(work.mount_path, "/var/tmp/mysql-backup-operator");
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "work").unwrap();
        assert!(volume.empty_dir.is_some());
    }

    #[test]
    fn overwrite_is_passed_only_when_asked_and_cold_backups_need_no_database_image() {
        let restore: MySQLRestore =
            serde_yaml::from_str(&RESTORE.replace("    subPath: mysql", "    overwrite: true")).unwrap();
        let storage = storage();
        let plan =
            RestorePlan { storage: &storage, backup_id: "latest".into(), database_image: None, claim: "c".into() };
        let job = restore_job(&restore, &plan, "op:1").unwrap();
        let agent = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(agent.image.as_deref(), Some("op:1"));
        let args = agent.args.as_ref().unwrap();
        assert!(
            args.contains(&"--overwrite".to_string()) && args.contains(&"--datadir=/var/lib/mysql-restore".to_string())
        );
    }
}
