//! The custom resources of group `mysqlbackup.dev`, version `v1alpha1`: `MySQLBackup` (one backup run),
//! `MySQLRestore` (one restore) and `BackupSchedule` (backups on a cron schedule, with retention).
//! Their CRDs are generated from these types (`mysql-backup-operator crd`) and committed under `crds/`;
//! every field's doc comment becomes its `kubectl explain` text.

// kube's derive takes one `printcolumn(name = …, type_ = …)` entry per column; clippy reads the
// repeated keys of those entries as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod common;

use k8s_openapi::{
    api::core::v1::PersistentVolumeClaimSpec,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

pub use self::common::*;

/// API group of the resources.
pub const GROUP: &str = "mysqlbackup.dev";

/// How a backup reads the server's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupMethod {
    /// The best method the server supports: `mariabackup` for MariaDB.
    #[default]
    Auto,
    /// File copy of a datadir nothing writes to (a stopped server, or a volume restored from a snapshot).
    Cold,
    /// `mariadb-backup --backup --stream=mbstream`, run in the database's own image.
    Mariabackup,
    /// An incremental: the closed binary logs after the newest backup in the same storage.
    Binlog,
}

/// What happens to the stored backup when the MySQLBackup object is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the backup in storage.
    #[default]
    Retain,
    /// Delete the manifest and every chunk no other backup uses.
    Delete,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Phase {
    /// Accepted; the Job is not running yet.
    Pending,
    /// The Job is running.
    Running,
    /// Finished successfully.
    Complete,
    /// Finished unsuccessfully; see the conditions.
    Failed,
}

/// The transition rule keeping a MySQLBackup's spec as created, but for `deletionPolicy`: each other
/// field is equal to its old value, or absent in both (the defaults make them present).
const BACKUP_SPEC_IMMUTABLE: &str = "(has(self.spec.source) == has(oldSelf.spec.source) && (!has(self.spec.source) || self.spec.source == oldSelf.spec.source)) \
    && (has(self.spec.method) == has(oldSelf.spec.method) && (!has(self.spec.method) || self.spec.method == oldSelf.spec.method)) \
    && (has(self.spec.storage) == has(oldSelf.spec.storage) && (!has(self.spec.storage) || self.spec.storage == oldSelf.spec.storage)) \
    && (has(self.spec.job) == has(oldSelf.spec.job) && (!has(self.spec.job) || self.spec.job == oldSelf.spec.job))";

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
    /// How to read the server's files: `auto` (default; `mariabackup` for MariaDB), `cold` (file copy of a
    /// datadir nothing writes to: a stopped server or a volume restored from a snapshot), `mariabackup`,
    /// `binlog` (an incremental: the closed binary logs after the newest backup in the same storage).
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
}

/// Observed state of a MySQLBackup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MySQLBackupStatus {
    /// Where the run stands: `Pending`, `Running`, `Complete` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Complete`, `Failed`, `Blocked` and their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The method used (what `auto` resolved to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Name of the agent Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Id of the backup in storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Location of the backup's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Image of the database container, used by restores that must prepare the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_image: Option<String>,
    /// Replication positions at the backup's consistent point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<PositionsStatus>,
    /// For a `binlog` incremental: what it builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalStatus>,
    /// Sizes of the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<SizesStatus>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the backup completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Seconds the agent took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

/// Where an incremental starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncrementalStatus {
    /// Id of the backup it continues, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backup_id: Option<String>,
    /// The GTID position it starts after; `positions` holds where it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_gtid: Option<String>,
}

/// Which backup a restore reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.backup) != has(self.storage)").message("set exactly one of backup or storage"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// Name of a complete MySQLBackup in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Storage to read from, when not naming a MySQLBackup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Backup id in `storage`, or `latest`. Default: `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
}

/// The volume a restore writes the datadir into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.persistentVolumeClaim) != has(self.volumeClaimTemplate)").message("set exactly one of persistentVolumeClaim or volumeClaimTemplate"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// An existing PersistentVolumeClaim; it must be empty unless `overwrite` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<String>,
    /// A PersistentVolumeClaim to create, named after the MySQLRestore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim_template: Option<PersistentVolumeClaimSpec>,
    /// Directory inside the volume that becomes the datadir. Default: the volume's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Delete what the target holds before restoring. Without it a non-empty target is refused.
    #[serde(default)]
    pub overwrite: bool,
}

/// One restore of a backup into a volume.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTime>,
    /// Database image providing `mariadb-backup` for the prepare step (and `mariadbd`, `mariadb-binlog`
    /// and `mariadb` for `pointInTime`). Default: the image recorded in the referenced MySQLBackup's
    /// status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// User and group the restore runs as, and so the owner of the restored files: those of the server
    /// that will use the datadir (e.g. `runAsUser: 999`, `fsGroup: 999` for the official MariaDB image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<k8s_openapi::api::core::v1::PodSecurityContext>,
    /// How the agent's Job runs.
    #[serde(default)]
    pub job: JobOptions,
}

/// A point in time to restore to: exactly one of `gtid` and `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.gtid) != has(self.time)").message("set exactly one of gtid or time"))]
#[serde(rename_all = "camelCase")]
pub struct PointInTime {
    /// Up to and including this transaction, e.g. `0-1-4242`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// Up to and including the last transaction at or before this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The binary-log archive whose segments continue the incrementals: `<namespace>.<schedule>` of the
    /// BackupSchedule that archives. Default: the storage's only archive, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Restore across gaps in the archive. The transactions in a gap are lost; the status lists the gaps
    /// crossed. Default: false — a gap before the target fails the restore, naming it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Observed state of a MySQLRestore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MySQLRestoreStatus {
    /// Where the restore stands: `Pending`, `Running`, `Complete` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Complete`, `Failed`, `Blocked` and their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the agent Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Name of the PersistentVolumeClaim written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<String>,
    /// Id of the restored backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Replication positions of the restored data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<PositionsStatus>,
    /// Bytes written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the restore completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Seconds the agent took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// For a point-in-time restore: what was replayed on the restored backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<ReplayedStatus>,
}

/// What a point-in-time restore replayed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayedStatus {
    /// Transactions replayed.
    #[serde(default)]
    pub transactions: i64,
    /// Incrementals whose binary logs were replayed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incrementals: Vec<String>,
    /// The archive whose segments were replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Archive segments replayed.
    #[serde(default)]
    pub segments: i64,
    /// Gaps crossed by a forced restore: their transactions are missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps_crossed: Vec<String>,
}

/// What to do when a slot comes while the previous backup still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the new slot.
    #[default]
    Forbid,
    /// Stop the running backup and start the new one.
    Replace,
    /// Run both.
    Allow,
}

/// How many backups to keep; a backup is kept if any rule keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep the newest N complete backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_last: Option<i32>,
    /// Keep the newest backup of each of the last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_hourly: Option<i32>,
    /// Keep the newest backup of each of the last N days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_daily: Option<i32>,
    /// Keep the newest backup of each of the last N weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_weekly: Option<i32>,
    /// Keep the newest backup of each of the last N months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_monthly: Option<i32>,
    /// Keep every backup younger than this duration (e.g. `720h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

impl RetentionSpec {
    /// The rules the retention policy is checked from.
    pub fn rules(&self) -> crate::gc::retention::Rules<'_> {
        crate::gc::retention::Rules {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            max_age: self.max_age.as_deref(),
        }
    }
}

/// Backups on a cron schedule, kept by a retention policy.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "mysqlbackup.dev",
    version = "v1alpha1",
    kind = "BackupSchedule",
    doc = "MySQLBackups created on a cron schedule and kept by a retention policy.",
    plural = "backupschedules",
    shortname = "mybs",
    category = "mysqlbackup",
    namespaced,
    status = "BackupScheduleStatus",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    printcolumn(name = "Last success", type_ = "date", json_path = ".status.lastSuccessfulBackup.time"),
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextScheduleTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// Standard 5-field cron expression, or a shorthand such as `@daily`.
    pub schedule: String,
    /// IANA time zone the schedule is read in. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Create no new backups while true.
    #[serde(default)]
    pub suspend: bool,
    /// What to do when a slot comes while the previous backup still runs: `Forbid` (default) skips the
    /// slot, `Replace` stops the running backup, `Allow` runs both.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Slots missed by more than this many seconds are skipped (and counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// A second cron (same `timeZone`) for `binlog` incrementals between full backups: each slot backs up
    /// the binary logs closed since the newest backup, so a point-in-time restore can reach that close.
    /// Slots are skipped while a backup runs and until a first full backup is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_schedule: Option<String>,
    /// Continuous binary-log archiving: a Deployment (`archiver-<schedule>`, one replica) streams the
    /// server's binary log as a replica into the same storage, under `binlogs/<namespace>.<schedule>/`,
    /// in segments stored within `segmentSeconds`, so a point-in-time restore can reach seconds before
    /// a failure. Its lag, gaps and health appear in `status.binlogArchive`, in Events and in metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_archive: Option<BinlogArchiveSpec>,
    /// Start each slot's backup up to this many seconds late, by an amount fixed per schedule and slot,
    /// so that many schedules on one cron do not all start at once. Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub jitter_seconds: Option<i64>,
    /// Change this value (a date, a ticket id) to take one backup now, outside the schedule; the same
    /// value never takes a second one. Declarative: works from Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Failed MySQLBackups kept as objects; older ones are deleted. Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failed_backups_history_limit: Option<i32>,
    /// Complete MySQLBackups kept as objects; older ones are deleted (their data stays, under
    /// `retention`, unless the template's `deletionPolicy` is `Delete`). Default: no limit — with
    /// `retention`, the objects are exactly the backups kept in storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub successful_backups_history_limit: Option<i32>,
    /// The MySQLBackup each slot creates. Its backups are tagged with this schedule in storage, and
    /// `retention` applies to them only.
    pub backup_template: MySQLBackupSpec,
    /// How many backups to keep, applied after each successful backup by a prune Job. Without it every
    /// backup is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
}

/// Observed state of a BackupSchedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// Conditions, e.g. `Blocked` for an invalid schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The newest slot that came due (a backup was created for it, or it was missed): the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The cursor of `binlogSchedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_binlog_schedule_time: Option<Time>,
    /// When the next slot's backup starts (jitter included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The newest complete backup of this schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<ScheduledBackupStatus>,
    /// MySQLBackups of this schedule still running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Slots that came due and took no backup (past the starting deadline, controller away, a running
    /// backup under `Forbid`, a name taken by another object), since the schedule was created.
    #[serde(default)]
    pub missed_slots: i64,
    /// The first and last points in time a restore can reach with the backups of this schedule that
    /// exist (complete MySQLBackups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverability_window: Option<WindowStatus>,
    /// The `spec.trigger` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<String>,
    /// The last retention run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prune: Option<PruneStatus>,
    /// The continuous binary-log archiver, when `spec.binlogArchive` asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_archive: Option<BinlogArchiveStatus>,
}

/// Continuous binary-log archiving of a schedule's server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinlogArchiveSpec {
    /// Store a segment once its first transaction is this many seconds old: the most that losing the
    /// archiver's node together with the server can leave out of the archive. Default: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub segment_seconds: Option<i32>,
    /// Server id the archiver registers with as a replica; it must differ from every server and replica
    /// of the topology. Default: derived from the archive name, in 3000000000..3999999999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295_i64))]
    pub replica_server_id: Option<i64>,
    /// CPU and memory of the archiver container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

/// The archiver as the controller last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinlogArchiveStatus {
    /// `Starting`, `Streaming`, `Reconnecting` (the server is unreachable), `Unreachable` (the
    /// archiver's status endpoint does not answer) or `Suspended`.
    pub phase: String,
    /// The archive in storage: `binlogs/<archive>/`.
    pub archive: String,
    /// Every transaction up to this position is archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_position: Option<String>,
    /// Time of the newest archived event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<Time>,
    /// Seconds of transactions received, or possibly written while disconnected, that are not archived
    /// yet.
    #[serde(default)]
    pub lag_seconds: i64,
    /// Gaps in the archive: a restore cannot cross them unless forced.
    #[serde(default)]
    pub gaps: i64,
    /// The newest gap, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gap: Option<String>,
    /// The archiver's last error, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A backup of a schedule, as its status reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupStatus {
    /// The MySQLBackup.
    pub name: String,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Its id in storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Its replication positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<PositionsStatus>,
}

/// A range of points in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowStatus {
    /// The earliest point a restore can reach.
    pub from: Time,
    /// The latest point a restore can reach.
    pub to: Time,
}

/// The outcome of a retention run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneStatus {
    /// The prune Job.
    pub job: String,
    /// The complete MySQLBackup it ran after.
    pub after: String,
    /// `Running`, `Complete` or `Failed`.
    pub phase: Phase,
    /// Backups it kept.
    #[serde(default)]
    pub kept: i64,
    /// Backups it deleted.
    #[serde(default)]
    pub deleted: i64,
    /// Chunks its sweep deleted.
    #[serde(default)]
    pub deleted_chunks: i64,
    /// Why it failed, or why its sweep was deferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The CRDs of every resource, in a stable order, as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    [MySQLBackup::crd(), MySQLRestore::crd(), BackupSchedule::crd()]
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("CRDs always serialise"))
        .collect::<Vec<_>>()
        .join("---\n")
}
