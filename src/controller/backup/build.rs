//! The Jobs of a MySQLBackup: the backup Job next to the database pod, and the cleanup Job that
//! deletes a stored backup.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{
            Affinity, Container, EmptyDirVolumeSource, NodeAffinity, NodeSelector, NodeSelectorRequirement,
            NodeSelectorTerm, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::controller::build::{
    AGENT_DIR, BuildError, LABEL_BACKUP, LABEL_SCHEDULE, OperatorJob, SCRATCH_DIR, agent_job_spec, agent_runtime,
    child_name, credentials_env, datadir_mount, install_container, labels, method_kind, method_name, mysql_url,
    name_and_namespace, owner_reference, password_file, scratch_volume, storage_args,
};
use crate::crd::MySQLBackup;
use crate::format::manifest::MethodKind;

/// Builds the backup Job of `backup`, whose source pod is `pod`, with the operator image `operator_image`.
pub fn backup_job(backup: &MySQLBackup, pod: &Pod, operator_image: &str) -> Result<Job, BuildError> {
    let spec = &backup.spec;
    let (name, namespace) = name_and_namespace(backup)?;
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
    let method = method_kind(spec.method);
    // A catch-up backup reads no file of the server: no datadir, any node, its own scratch space.
    let catchup = method == Some(MethodKind::Catchup);
    // mariadb-backup and mariadbd come with the database image; binlog and cold read files with the
    // operator's own.
    let needs_server = !matches!(method, Some(MethodKind::Cold | MethodKind::Binlog));
    let needs_connection = method != Some(MethodKind::Cold);

    let mut args: Vec<String> = vec![
        "agent".into(),
        "backup".into(),
        format!("--method={}", method_name(spec.method)),
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
    let mut volumes =
        vec![Volume { name: "agent".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }];
    let mut mounts = vec![VolumeMount { name: "agent".into(), mount_path: AGENT_DIR.into(), ..Default::default() }];
    let mut env = None;
    if catchup {
        let (volume, mount, tmpdir) = scratch_volume(spec.scratch.as_ref());
        volumes.push(volume);
        mounts.push(mount);
        env = Some(vec![tmpdir]);
        args.push(format!("--scratch={SCRATCH_DIR}"));
    } else {
        args.insert(3, format!("--datadir={datadir}"));
        if let Some(rate) = &spec.source.read_rate {
            args.push(format!("--max-read-rate={rate}"));
        }
        let (mount, claim) = datadir_mount(&pod_name, pod, container, &datadir)?;
        volumes.insert(
            0,
            Volume {
                name: "datadir".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim, read_only: None }),
                ..Default::default()
            },
        );
        mounts.insert(
            0,
            VolumeMount {
                name: "datadir".into(),
                mount_path: mount.mount_path.clone(),
                sub_path: mount.sub_path.clone(),
                ..Default::default()
            },
        );
    }
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
        env,
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
                affinity: (!catchup).then(|| node_affinity(node)),
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

/// Required scheduling onto `node`, the database pod's.
fn node_affinity(node: String) -> Affinity {
    Affinity {
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
    let (name, namespace) = name_and_namespace(backup)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{POD, parse};

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

    fn build(backup: &str, pod: &str) -> Result<Job, BuildError> {
        backup_job(&parse(backup), &parse(pod), "ghcr.io/example/mysql-backup-operator:0.1.0")
    }

    /// The Job of a `method` backup, checked to run in the operator's image.
    fn in_operator_image(method: &str) -> Job {
        let job = build(&BACKUP.replace("  storage:", &format!("  method: {method}\n  storage:")), POD).unwrap();
        assert_eq!(pod_spec(&job).containers[0].image.as_deref(), Some("ghcr.io/example/mysql-backup-operator:0.1.0"));
        job
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
    fn auto_runs_in_the_database_image_with_secrets_from_files_and_env() {
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
                "--method=auto",
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
    fn catchup_runs_on_any_node_in_the_database_image_with_scratch_and_no_datadir() {
        let yaml = BACKUP.replace(
            "  storage:",
            "  method: catchup\n  scratch: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 50Gi}}}}}\n  storage:",
        );
        let job = build(&yaml, POD).unwrap();
        let spec = pod_spec(&job);
        assert!(spec.affinity.is_none(), "not pinned to the database node");
        let agent = &spec.containers[0];
        assert_eq!(agent.image.as_deref(), Some("mariadb:10.11"));
        let args = agent.args.as_ref().unwrap();
        assert!(args.contains(&"--method=catchup".to_string()), "{args:?}");
        assert!(args.contains(&format!("--scratch={SCRATCH_DIR}")), "{args:?}");
        assert!(args.contains(&"--mysql-url=mysql://backup@10.1.2.3:3306".to_string()), "{args:?}");
        assert!(!args.iter().any(|a| a.starts_with("--datadir")), "{args:?}");
        let volumes = spec.volumes.as_ref().unwrap();
        assert!(!volumes.iter().any(|v| v.persistent_volume_claim.is_some()), "the datadir is not mounted");
        let scratch = volumes.iter().find(|v| v.name == "scratch").unwrap();
        assert!(scratch.ephemeral.is_some(), "its own claim, made and removed with the pod");
        assert_eq!(agent.env.as_ref().unwrap()[0].name, "TMPDIR");
    }

    #[test]
    fn cold_runs_in_the_operator_image_without_a_connection() {
        let job = in_operator_image("cold");
        let agent = &pod_spec(&job).containers[0];
        assert_eq!(agent.command.as_ref().unwrap(), &["/mysql-backup-operator"]);
        assert!(agent.args.as_ref().unwrap().iter().all(|a| !a.starts_with("--mysql")));
    }

    #[test]
    fn myrocks_runs_like_mariabackup_in_the_database_image_on_the_datadir() {
        let job = build(&BACKUP.replace("  storage:", "  method: myrocks\n  storage:"), POD).unwrap();
        let auto = build(BACKUP, POD).unwrap();
        let (spec, auto) = (pod_spec(&job), pod_spec(&auto));
        let args = spec.containers[0].args.as_ref().unwrap();
        assert_eq!(&args[..4], ["agent", "backup", "--method=myrocks", "--datadir=/var/lib/mysql"]);
        assert_eq!(args[4..], auto.containers[0].args.as_ref().unwrap()[4..], "the same options as auto's");
        assert_eq!(spec.containers[0].image.as_deref(), Some("mariadb:10.11"));
        assert_eq!(spec.volumes, auto.volumes, "the datadir's claim and the password file");
        assert_eq!(spec.affinity, auto.affinity, "on the database's node");
    }

    #[test]
    fn rate_limits_become_the_agents_options() {
        let limited = BACKUP
            .replace("  storage:", "  storage:\n    rateLimit: 50Mi")
            .replace("    pod: db-0", "    pod: db-0\n    readRate: 100M");
        let job = build(&limited, POD).unwrap();
        let args = pod_spec(&job).containers[0].args.clone().unwrap();
        assert!(args.contains(&"--max-upload-rate=50Mi".to_string()), "{args:?}");
        assert!(args.contains(&"--max-read-rate=100M".to_string()), "{args:?}");
        let args = pod_spec(&build(BACKUP, POD).unwrap()).containers[0].args.clone().unwrap();
        assert!(!args.iter().any(|a| a.starts_with("--max-")), "no limit unless asked: {args:?}");
    }

    #[test]
    fn encryption_keys_reach_the_agent_as_files_the_sealing_key_first() {
        let encrypted =
            BACKUP.replace("  storage:", "  storage:\n    encryption: {keySecret: {name: backup-keys, key: current}}");
        let job = build(&encrypted, POD).unwrap();
        let spec = pod_spec(&job);
        let agent = &spec.containers[0];
        let args = agent.args.clone().unwrap();
        let dir = crate::controller::build::ENCRYPTION_KEYS_DIR;
        let keys: Vec<&String> = args.iter().filter(|a| a.starts_with("--encryption-key")).collect();
        assert_eq!(keys, [&format!("--encryption-key-file={dir}/current"), &format!("--encryption-key-dir={dir}")]);
        // The whole Secret, so the keys it held before a rotation come along.
        let volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "encryption-keys").unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(
            (secret.secret_name.as_deref(), secret.items.as_ref(), secret.default_mode),
            (Some("backup-keys"), None, Some(0o444))
        );
        let mount = agent.volume_mounts.iter().flatten().find(|m| m.name == "encryption-keys").unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (dir, Some(true)));
        let plain = pod_spec(&build(BACKUP, POD).unwrap()).containers[0].args.clone().unwrap();
        assert!(!plain.iter().any(|a| a.starts_with("--encryption")), "no key unless asked: {plain:?}");
    }

    #[test]
    fn binlog_runs_in_the_operator_image_with_a_connection() {
        let job = in_operator_image("binlog");
        let agent = &pod_spec(&job).containers[0];
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
}
