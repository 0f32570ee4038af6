//! The objects of a MySQLRestore: the target claim made from its template, and the restore Job.

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{
            Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec,
            Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::controller::build::{
    AGENT_DIR, BuildError, RESTORE_WORK, agent_job_spec, agent_runtime, child_name, credentials_env, install_container,
    labels, name_and_namespace, owner_reference, storage_args,
};
use crate::crd::{MySQLRestore, StorageSpec};
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
    let (name, namespace) = name_and_namespace(restore)?;
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
