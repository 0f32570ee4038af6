//! `BackupSchedule`: MySQLBackups on a cron schedule, kept by a retention policy, with an optional
//! continuous binary-log archive.

// kube's derive takes one `printcolumn(name = …, type_ = …)` entry per column; clippy reads the
// repeated keys of those entries as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::crd::backup::*;
use crate::crd::common::*;

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
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep the newest N complete backups.
    #[schemars(range(min = 0))]
    pub keep_last: Option<i32>,
    /// Keep the newest backup of each of the last N hours.
    #[schemars(range(min = 0))]
    pub keep_hourly: Option<i32>,
    /// Keep the newest backup of each of the last N days.
    #[schemars(range(min = 0))]
    pub keep_daily: Option<i32>,
    /// Keep the newest backup of each of the last N weeks.
    #[schemars(range(min = 0))]
    pub keep_weekly: Option<i32>,
    /// Keep the newest backup of each of the last N months.
    #[schemars(range(min = 0))]
    pub keep_monthly: Option<i32>,
    /// Keep every backup younger than this duration (e.g. `720h`).
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
#[serde_with::skip_serializing_none]
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
    pub time_zone: Option<String>,
    /// Create no new backups while true.
    #[serde(default)]
    pub suspend: bool,
    /// What to do when a slot comes while the previous backup still runs: `Forbid` (default) skips the
    /// slot, `Replace` stops the running backup, `Allow` runs both.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Slots missed by more than this many seconds are skipped (and counted).
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// A second cron (same `timeZone`) for `binlog` incrementals between full backups: each slot backs up
    /// the binary logs closed since the newest backup, so a point-in-time restore can reach that close.
    /// Slots are skipped while a backup runs and until a first full backup is complete.
    pub binlog_schedule: Option<String>,
    /// Continuous binary-log archiving: a Deployment (`archiver-<schedule>`, one replica) streams the
    /// server's binary log as a replica into the same storage, under `binlogs/<namespace>.<schedule>/`,
    /// in segments stored within `segmentSeconds`, so a point-in-time restore can reach seconds before
    /// a failure. Its lag, gaps and health appear in `status.binlogArchive`, in Events and in metrics.
    pub binlog_archive: Option<BinlogArchiveSpec>,
    /// Start each slot's backup up to this many seconds late, by an amount fixed per schedule and slot,
    /// so that many schedules on one cron do not all start at once. Default: 0.
    #[schemars(range(min = 0, max = 86400))]
    pub jitter_seconds: Option<i64>,
    /// Change this value (a date, a ticket id) to take one backup now, outside the schedule; the same
    /// value never takes a second one. Declarative: works from Git.
    pub trigger: Option<String>,
    /// Failed MySQLBackups kept as objects; older ones are deleted. Default: 3.
    #[schemars(range(min = 0))]
    pub failed_backups_history_limit: Option<i32>,
    /// Complete MySQLBackups kept as objects; older ones are deleted (their data stays, under
    /// `retention`, unless the template's `deletionPolicy` is `Delete`). Default: no limit — with
    /// `retention`, the objects are exactly the backups kept in storage.
    #[schemars(range(min = 1))]
    pub successful_backups_history_limit: Option<i32>,
    /// The MySQLBackup each slot creates. Its backups are tagged with this schedule in storage, and
    /// `retention` applies to them only.
    pub backup_template: MySQLBackupSpec,
    /// How many backups to keep, applied after each successful backup by a prune Job. Without it every
    /// backup is kept.
    pub retention: Option<RetentionSpec>,
    /// Restore drills: a Job on any node restores a complete full backup into scratch space, starts a
    /// private server on it, runs `CHECK TABLE` and counts the rows of every table, and compares the
    /// server's position with the backup's. The outcome lands in the MySQLBackup's `status.drill` and
    /// condition `Drilled`; a failure is a Warning Event and a metric.
    pub drill: Option<DrillSpec>,
}

/// When and how a schedule's backups are drilled.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillSpec {
    /// Drill every Nth complete full backup (1: each one). Default: 1, unless `schedule` is set.
    #[schemars(range(min = 1))]
    pub every_nth_backup: Option<i32>,
    /// A cron (in the schedule's `timeZone`) at whose slots the newest complete full backup is drilled,
    /// if it has not been yet.
    pub schedule: Option<String>,
    /// The drill Job's scratch space: it holds the restored data.
    #[serde(default)]
    pub scratch: ScratchSpec,
    /// CPU and memory of the drill's container (it runs the restore and a server).
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Count only backups whose last drill passed in `status.recoverabilityWindow`.
    #[serde(default)]
    pub window_counts_drilled_only: bool,
}

/// Observed state of a BackupSchedule.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// Conditions, e.g. `Blocked` for an invalid schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    pub observed_generation: Option<i64>,
    /// The newest slot that came due (a backup was created for it, or it was missed): the cursor.
    pub last_schedule_time: Option<Time>,
    /// The cursor of `binlogSchedule`.
    pub last_binlog_schedule_time: Option<Time>,
    /// When the next slot's backup starts (jitter included).
    pub next_schedule_time: Option<Time>,
    /// The newest complete backup of this schedule.
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
    pub recoverability_window: Option<WindowStatus>,
    /// The `spec.trigger` value last acted on.
    pub last_trigger: Option<String>,
    /// The last retention run.
    pub last_prune: Option<PruneStatus>,
    /// The continuous binary-log archiver, when `spec.binlogArchive` asks for one.
    pub binlog_archive: Option<BinlogArchiveStatus>,
    /// The last drill started (its outcome is in that MySQLBackup's `status.drill`).
    pub last_drill: Option<LastDrillStatus>,
    /// The cursor of `spec.drill.schedule`.
    pub last_drill_schedule_time: Option<Time>,
}

/// The last drill a schedule started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDrillStatus {
    /// The MySQLBackup drilled.
    pub backup: String,
    /// The drill Job.
    pub job: String,
    /// When it was started.
    pub time: Time,
}

/// Continuous binary-log archiving of a schedule's server.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinlogArchiveSpec {
    /// Store a segment once its first transaction is this many seconds old: the most that losing the
    /// archiver's node together with the server can leave out of the archive. Default: 5.
    #[schemars(range(min = 1, max = 300))]
    pub segment_seconds: Option<i32>,
    /// Server id the archiver registers with as a replica; it must differ from every server and replica
    /// of the topology. Default: derived from the archive name, in 3000000000..3999999999.
    #[schemars(range(min = 1, max = 4294967295_i64))]
    pub replica_server_id: Option<i64>,
    /// CPU and memory of the archiver container.
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

/// The archiver as the controller last saw it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinlogArchiveStatus {
    /// `Starting`, `Streaming`, `Reconnecting` (the server is unreachable), `Unreachable` (the
    /// archiver's status endpoint does not answer) or `Suspended`.
    pub phase: String,
    /// The archive in storage: `binlogs/<archive>/`.
    pub archive: String,
    /// Every transaction up to this position is archived.
    pub archived_position: Option<String>,
    /// Time of the newest archived event.
    pub last_event_time: Option<Time>,
    /// Seconds of transactions received, or possibly written while disconnected, that are not archived
    /// yet.
    #[serde(default)]
    pub lag_seconds: i64,
    /// Gaps in the archive: a restore cannot cross them unless forced.
    #[serde(default)]
    pub gaps: i64,
    /// The newest gap, in words.
    pub last_gap: Option<String>,
    /// The archiver's last error, while it lasts.
    pub message: Option<String>,
}

/// A backup of a schedule, as its status reports it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupStatus {
    /// The MySQLBackup.
    pub name: String,
    /// When it completed.
    pub time: Option<Time>,
    /// Its id in storage.
    pub backup_id: Option<String>,
    /// Its replication positions.
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
#[serde_with::skip_serializing_none]
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
    pub message: Option<String>,
}
