//! The objects of a BackupSchedule: the prune Job that applies its retention, and the archiver
//! Deployment that streams its binary logs.

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Container, Pod, PodSpec, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::controller::build::{
    BuildError, LABEL_SCHEDULE, OPERATOR_BINARY, OperatorJob, child_name, credentials_env, labels, mysql_url,
    name_and_namespace, owner_reference, password_file, scratch_volume, storage_args,
};
/// Builds the Job that applies `schedule`'s retention to its backups in storage (`agent prune`), after
/// the complete MySQLBackup `after`. Operator image only; as `security_context` when given (the source
/// pod's, for `file://` volumes); owned by the schedule.
pub fn prune_job(
    schedule: &crate::crd::BackupSchedule,
    after: &str,
    security_context: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
    operator_image: &str,
) -> Result<Job, BuildError> {
    let (name, namespace) = name_and_namespace(schedule)?;
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
    let (name, namespace) = name_and_namespace(schedule)?;
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
    // A segment or transaction too large for memory spills here ($TMPDIR), not into the image.
    let (spill, spill_mount, tmpdir) = scratch_volume(None);
    volumes.push(spill);
    mounts.push(spill_mount);
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
        env: Some(vec![tmpdir]),
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
    use crate::controller::build::fixtures::{POD, parse};

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
        // A large transaction spills to an emptyDir, which TMPDIR names (the root file system may be read-only).
        let env = c.env.as_ref().unwrap();
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_deref()),
            ("TMPDIR", Some(crate::controller::build::SCRATCH_DIR))
        );
        let mount =
            c.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == crate::controller::build::SCRATCH_DIR);
        let volume = pod_spec.volumes.as_ref().unwrap().iter().find(|v| Some(&v.name) == mount.map(|m| &m.name));
        assert!(volume.is_some_and(|v| v.empty_dir.is_some()), "{:?}", pod_spec.volumes);
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
