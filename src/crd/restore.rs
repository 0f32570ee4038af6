//! `MySQLRestore`: one restore of a backup into a volume, to its end or to a point in time.

// kube's derive takes one `printcolumn(name = …, type_ = …)` entry per column; clippy reads the
// repeated keys of those entries as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::{
    api::core::v1::PersistentVolumeClaimSpec,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::crd::common::*;

/// Which backup a restore reads.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.backup) != has(self.storage)").message("set exactly one of backup or storage"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// Name of a complete MySQLBackup in the same namespace.
    pub backup: Option<String>,
    /// Storage to read from, when not naming a MySQLBackup.
    pub storage: Option<StorageSpec>,
    /// Backup id in `storage`, or `latest`. Default: `latest`.
    pub backup_id: Option<String>,
}

/// The volume a restore writes the datadir into.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.persistentVolumeClaim) != has(self.volumeClaimTemplate)").message("set exactly one of persistentVolumeClaim or volumeClaimTemplate"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// An existing PersistentVolumeClaim; it must be empty unless `overwrite` is true.
    pub persistent_volume_claim: Option<String>,
    /// A PersistentVolumeClaim to create, named after the MySQLRestore.
    pub volume_claim_template: Option<PersistentVolumeClaimSpec>,
    /// Directory inside the volume that becomes the datadir. Default: the volume's root.
    pub sub_path: Option<String>,
    /// Delete what the target holds before restoring. Without it a non-empty target is refused.
    #[serde(default)]
    pub overwrite: bool,
}

/// One restore of a backup into a volume.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "mysqlbackup.dev",
    version = "v1alpha1",
    kind = "MySQLRestore",
    doc = "One restore of a backup into a volume, verified chunk by chunk and prepared so a server starts on it.",
    plural = "mysqlrestores",
    shortname = "myrs",
    category = "mysqlbackup",
    namespaced,
    status = "MySQLRestoreStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Backup", type_ = "string", json_path = ".status.backupId"),
    printcolumn(name = "Position", type_ = "string", json_path = ".status.positions.gtidExecuted"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: create a new MySQLRestore"))]
#[serde(rename_all = "camelCase")]
pub struct MySQLRestoreSpec {
    /// Which backup to restore.
    pub source: RestoreSource,
    /// Where the datadir is written.
    pub target: RestoreTarget,
    /// Restore to a point in time instead of the backup's own: the newest full backup before it in the
    /// same storage, then the binary logs of the incrementals after it replayed up to the target
    /// (MariaDB). Refused when the backups do not reach the target.
    pub point_in_time: Option<PointInTime>,
    /// Database image providing `mariadb-backup` for the prepare step (and `mariadbd`, `mariadb-binlog`
    /// and `mariadb` for `pointInTime`). Default: the image recorded in the referenced MySQLBackup's
    /// status.
    pub image: Option<String>,
    /// User and group the restore runs as, and so the owner of the restored files: those of the server
    /// that will use the datadir (e.g. `runAsUser: 999`, `fsGroup: 999` for the official MariaDB image).
    pub security_context: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
    /// How the agent's Job runs.
    #[serde(default)]
    pub job: JobOptions,
}

/// A point in time to restore to: exactly one of `gtid` and `time`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.gtid) != has(self.time)").message("set exactly one of gtid or time"))]
#[serde(rename_all = "camelCase")]
pub struct PointInTime {
    /// Up to and including this transaction, e.g. `0-1-4242`.
    pub gtid: Option<String>,
    /// Up to and including the last transaction at or before this RFC 3339 time.
    pub time: Option<String>,
    /// The binary-log archive whose segments continue the incrementals: `<namespace>.<schedule>` of the
    /// BackupSchedule that archives. Default: the storage's only archive, if it has one.
    pub archive: Option<String>,
    /// Restore across gaps in the archive. The transactions in a gap are lost; the status lists the gaps
    /// crossed. Default: false — a gap before the target fails the restore, naming it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Observed state of a MySQLRestore.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MySQLRestoreStatus {
    /// Where the restore stands: `Pending`, `Running`, `Complete` or `Failed`.
    pub phase: Option<Phase>,
    /// `Complete`, `Failed`, `Blocked` and their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    pub observed_generation: Option<i64>,
    /// Name of the agent Job.
    pub job_name: Option<String>,
    /// Name of the PersistentVolumeClaim written.
    pub persistent_volume_claim: Option<String>,
    /// Id of the restored backup.
    pub backup_id: Option<String>,
    /// Replication positions of the restored data.
    pub positions: Option<PositionsStatus>,
    /// Bytes written.
    pub bytes: Option<i64>,
    /// When the Job started.
    pub start_time: Option<Time>,
    /// When the restore completed or failed.
    pub completion_time: Option<Time>,
    /// Seconds the agent took.
    pub duration_seconds: Option<f64>,
    /// For a point-in-time restore: what was replayed on the restored backup.
    pub replayed: Option<ReplayedStatus>,
}

/// What a point-in-time restore replayed.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayedStatus {
    /// Transactions replayed.
    #[serde(default)]
    pub transactions: i64,
    /// Incrementals whose binary logs were replayed, oldest first (the first 20; see incrementalsCount).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incrementals: Vec<String>,
    /// How many incrementals were replayed.
    #[serde(default)]
    pub incrementals_count: i64,
    /// The archive whose segments were replayed.
    pub archive: Option<String>,
    /// Archive segments replayed.
    #[serde(default)]
    pub segments: i64,
    /// Gaps crossed by a forced restore: their transactions are missing (the first 5; see
    /// gapsCrossedCount).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps_crossed: Vec<String>,
    /// How many gaps a forced restore crossed.
    #[serde(default)]
    pub gaps_crossed_count: i64,
}
