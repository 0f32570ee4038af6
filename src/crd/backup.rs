//! `MySQLBackup`: one backup run of a server into object storage.

// kube's derive takes one `printcolumn(name = …, type_ = …)` entry per column; clippy reads the
// repeated keys of those entries as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::crd::common::*;

/// The transition rule keeping a MySQLBackup's spec as created, but for `deletionPolicy`: each other
/// field is equal to its old value, or absent in both (the defaults make them present).
const BACKUP_SPEC_IMMUTABLE: &str = "(has(self.spec.source) == has(oldSelf.spec.source) && (!has(self.spec.source) || self.spec.source == oldSelf.spec.source)) \
    && (has(self.spec.method) == has(oldSelf.spec.method) && (!has(self.spec.method) || self.spec.method == oldSelf.spec.method)) \
    && (has(self.spec.storage) == has(oldSelf.spec.storage) && (!has(self.spec.storage) || self.spec.storage == oldSelf.spec.storage)) \
    && (has(self.spec.job) == has(oldSelf.spec.job) && (!has(self.spec.job) || self.spec.job == oldSelf.spec.job)) \
    && (has(self.spec.scratch) == has(oldSelf.spec.scratch) && (!has(self.spec.scratch) || self.spec.scratch == oldSelf.spec.scratch))";

/// One backup run of a MySQL or MariaDB server into object storage.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "mysqlbackup.dev",
    version = "v1alpha1",
    kind = "MySQLBackup",
    doc = "One backup run of a MySQL or MariaDB server into object storage, by an agent Job next to the database pod.",
    plural = "mysqlbackups",
    shortname = "mybk",
    category = "mysqlbackup",
    namespaced,
    status = "MySQLBackupStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Method", type_ = "string", json_path = ".status.method"),
    printcolumn(name = "Size", type_ = "integer", format = "int64", json_path = ".status.sizes.dataBytes"),
    printcolumn(name = "Position", type_ = "string", json_path = ".status.positions.gtidExecuted"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // On the object, not on the spec's type: the type is also the BackupSchedule's template, which
    // users edit. deletionPolicy stays mutable (the finalizer follows it).
    validation = Rule::new(BACKUP_SPEC_IMMUTABLE)
        .message("spec is immutable except deletionPolicy: create a new MySQLBackup")
        .field_path(".spec")
)]
#[serde(rename_all = "camelCase")]
pub struct MySQLBackupSpec {
    /// The database server to back up.
    pub source: SourceSpec,
    /// How to read the server's files: `auto` (default; chosen by the Job from the server: `myrocks` for
    /// a MariaDB whose RocksDB engine holds most of the datadir, `mariabackup` for any other MariaDB),
    /// `cold` (file copy of a datadir nothing writes to: a stopped server or a volume restored from a
    /// snapshot), `mariabackup`, `binlog` (an incremental: the closed binary logs after the newest backup
    /// in the same storage), `catchup` (the newest full backup restored into scratch space and caught up
    /// by replication: the server's files are not read), `myrocks` (RocksDB checkpoints; SST files the
    /// previous backup holds are not read again).
    #[serde(default)]
    pub method: BackupMethod,
    /// Where the backup is stored.
    pub storage: StorageSpec,
    /// What happens to the stored backup when this object is deleted: `Retain` (default) keeps it;
    /// `Delete` removes its manifest and every chunk no other backup uses, through a cleanup Job, behind
    /// the finalizer `mysqlbackup.dev/delete-data`. While the cleanup fails (e.g. storage unreachable) the
    /// object stays, with condition `CleanupFailed` saying why; the annotation
    /// `mysqlbackup.dev/skip-cleanup: "true"` lets it go and keeps the data.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// How the agent's Job runs.
    #[serde(default)]
    pub job: JobOptions,
    /// For method `catchup`: the Job's scratch space, which holds the restored datadir. Default: an
    /// `emptyDir` without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<ScratchSpec>,
}

/// Observed state of a MySQLBackup.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MySQLBackupStatus {
    /// Where the run stands: `Pending`, `Running`, `Complete` or `Failed`.
    pub phase: Option<Phase>,
    /// `Complete`, `Failed`, `Blocked` and their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    pub observed_generation: Option<i64>,
    /// The method used: what `auto` resolved to, once the Job has chosen.
    pub method: Option<String>,
    /// Name of the agent Job.
    pub job_name: Option<String>,
    /// Id of the backup in storage.
    pub backup_id: Option<String>,
    /// Location of the backup's manifest.
    pub manifest: Option<String>,
    /// Image of the database container, used by restores that must prepare the backup.
    pub database_image: Option<String>,
    /// Replication positions at the backup's consistent point.
    pub positions: Option<PositionsStatus>,
    /// For a `binlog` incremental: what it builds on.
    pub incremental: Option<IncrementalStatus>,
    /// For an encrypted backup: the fingerprint of the key that sealed it (16 hex digits, never the
    /// key). A key must stay in the key Secret while a backup shows its fingerprint here.
    pub encryption_key: Option<String>,
    /// Sizes of the backup.
    pub sizes: Option<SizesStatus>,
    /// When the Job started.
    pub start_time: Option<Time>,
    /// When the backup completed or failed.
    pub completion_time: Option<Time>,
    /// Seconds the agent took.
    pub duration_seconds: Option<f64>,
    /// The last restore drill of this backup (run by its schedule's `spec.drill`): a server was started on
    /// a restore of it and every table checked. Condition `Drilled` says the same.
    pub drill: Option<DrillStatus>,
}

impl DrillStatus {
    /// A drill whose Job `job` runs.
    pub fn running(job: &str) -> Self {
        Self {
            job: job.to_string(),
            phase: Phase::Running,
            reason: None,
            completion_time: None,
            tables_checked: None,
            rows: None,
            server_version: None,
            duration_seconds: None,
            scratch_bytes: None,
        }
    }
}

/// A restore drill of a backup, as its Job reported it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillStatus {
    /// The drill Job.
    pub job: String,
    /// `Running`, `Complete` (every check passed) or `Failed`.
    pub phase: Phase,
    /// What failed: the table `CHECK TABLE` found damaged, the position that disagreed, the restore's
    /// error.
    pub reason: Option<String>,
    /// When it finished.
    pub completion_time: Option<Time>,
    /// Tables checked.
    pub tables_checked: Option<i64>,
    /// Rows counted over every table.
    pub rows: Option<i64>,
    /// Version of the server started on the restored data.
    pub server_version: Option<String>,
    /// Seconds the drill took, restore included.
    pub duration_seconds: Option<f64>,
    /// Bytes of scratch space the restored data took.
    pub scratch_bytes: Option<i64>,
}

/// Where an incremental starts.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncrementalStatus {
    /// Id of the backup it continues, when known.
    pub base_backup_id: Option<String>,
    /// The GTID position it starts after; `positions` holds where it ends.
    pub from_gtid: Option<String>,
}
