//! Prometheus metrics of the controller, served on `/metrics`: reconciles and their errors by
//! category, backups finished by phase, per source (namespace and pod) the time, size and duration of
//! the last successful backup, and per schedule the last success, the seconds since, the
//! recoverability window and missed slots — so that "no backup for a day" is one line of PromQL.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

/// Labels naming a resource kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `MySQLBackup`, `MySQLRestore`, …
    pub kind: String,
}

/// Labels of a reconcile error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Resource kind.
    pub kind: String,
    /// Stable error category.
    pub category: String,
}

/// Labels of a finished backup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `Complete` or `Failed`.
    pub phase: String,
}

/// Labels naming a backup source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Namespace of the database pod.
    pub namespace: String,
    /// Name of the database pod.
    pub pod: String,
}

/// Labels naming a BackupSchedule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ScheduleLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub schedule: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    /// Unix time of the last successful backup of a schedule.
    pub schedule_last_success: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    /// Seconds since then, computed when scraped.
    pub schedule_since_success: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    /// Earliest point in time a restore can reach, per schedule.
    pub window_start: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    /// Latest point in time a restore can reach, per schedule.
    pub window_end: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    /// Slots that took no backup, per schedule.
    pub missed_slots: Family<ScheduleLabels, Gauge>,
    /// Archiver lag in seconds, per schedule.
    pub archive_lag: Family<ScheduleLabels, Gauge>,
    /// Time of the newest archived event, per schedule.
    pub archive_last_event: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    /// Gaps in the archive, per schedule.
    pub archive_gaps: Family<ScheduleLabels, Gauge>,
    /// 1 while the archiver streams, per schedule.
    pub archive_up: Family<ScheduleLabels, Gauge>,
    successes: std::sync::Mutex<std::collections::BTreeMap<ScheduleLabels, f64>>,
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Family<KindLabels, Counter>,
    /// Reconciles that failed, by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Backups that finished, by phase.
    pub backups_finished: Family<PhaseLabels, Counter>,
    /// Unix time of the last successful backup of a source.
    pub last_success: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    /// Data bytes of the last successful backup of a source.
    pub last_bytes: Family<SourceLabels, Gauge>,
    /// Seconds the last successful backup of a source took.
    pub last_duration: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    /// Unix time the last passed restore drill of a source's backups finished.
    pub drill_last_success: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    /// Restore drills of a source's backups that failed.
    pub drill_failures: Family<SourceLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mysql_backup_operator");
        let m = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            backups_finished: Family::default(),
            last_success: Family::default(),
            last_bytes: Family::default(),
            last_duration: Family::default(),
            drill_last_success: Family::default(),
            drill_failures: Family::default(),
            schedule_last_success: Family::default(),
            schedule_since_success: Family::default(),
            window_start: Family::default(),
            window_end: Family::default(),
            missed_slots: Family::default(),
            archive_lag: Family::default(),
            archive_last_event: Family::default(),
            archive_gaps: Family::default(),
            archive_up: Family::default(),
            successes: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "schedule_last_success_timestamp_seconds",
            "Unix time of the last successful backup of a schedule",
            m.schedule_last_success.clone(),
        );
        registry.register(
            "schedule_seconds_since_last_success",
            "Seconds since the last successful backup of a schedule",
            m.schedule_since_success.clone(),
        );
        registry.register(
            "recoverability_window_start_timestamp_seconds",
            "Earliest point in time a restore can reach with a schedule's backups",
            m.window_start.clone(),
        );
        registry.register(
            "recoverability_window_end_timestamp_seconds",
            "Latest point in time a restore can reach with a schedule's backups",
            m.window_end.clone(),
        );
        registry.register("schedule_missed_slots", "Slots of a schedule that took no backup", m.missed_slots.clone());
        registry.register(
            "archive_lag_seconds",
            "Seconds of a schedule's transactions not yet in its binary-log archive",
            m.archive_lag.clone(),
        );
        registry.register(
            "archive_last_event_timestamp_seconds",
            "Time of the newest event in a schedule's binary-log archive",
            m.archive_last_event.clone(),
        );
        registry.register("archive_gaps", "Gaps in a schedule's binary-log archive", m.archive_gaps.clone());
        registry.register("archive_up", "1 while a schedule's binary-log archiver streams", m.archive_up.clone());
        registry.register("reconciles", "Reconciles run", m.reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by error category", m.errors.clone());
        registry.register("backups_finished", "Backups that finished, by phase", m.backups_finished.clone());
        registry.register(
            "last_successful_backup_timestamp_seconds",
            "Unix time of the last successful backup of a source",
            m.last_success.clone(),
        );
        registry.register("last_backup_data_bytes", "Data bytes of the last successful backup", m.last_bytes.clone());
        registry.register(
            "last_backup_duration_seconds",
            "Seconds the last successful backup took",
            m.last_duration.clone(),
        );
        registry.register(
            "drill_last_success_timestamp_seconds",
            "Unix time the last passed restore drill of a source's backups finished",
            m.drill_last_success.clone(),
        );
        registry.register(
            "drill_failures",
            "Restore drills of a source's backups that failed",
            m.drill_failures.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Records the state of a schedule.
    pub fn record_schedule(&self, labels: ScheduleLabels, status: &crate::crd::BackupScheduleStatus) {
        let secs = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| t.0.as_millisecond() as f64 / 1000.0;
        if let Some(t) = status.last_successful_backup.as_ref().and_then(|b| b.time.as_ref()) {
            self.schedule_last_success.get_or_create(&labels).set(secs(t));
            self.successes.lock().unwrap_or_else(|p| p.into_inner()).insert(labels.clone(), secs(t));
        }
        if let Some(w) = &status.recoverability_window {
            self.window_start.get_or_create(&labels).set(secs(&w.from));
            self.window_end.get_or_create(&labels).set(secs(&w.to));
        }
        self.missed_slots.get_or_create(&labels).set(status.missed_slots);
        match &status.binlog_archive {
            Some(a) => {
                self.archive_lag.get_or_create(&labels).set(a.lag_seconds);
                if let Some(t) = &a.last_event_time {
                    self.archive_last_event.get_or_create(&labels).set(secs(t));
                }
                self.archive_gaps.get_or_create(&labels).set(a.gaps);
                self.archive_up.get_or_create(&labels).set(i64::from(a.phase == "Streaming"));
            }
            None => self.forget_archive(&labels),
        }
    }

    fn forget_archive(&self, labels: &ScheduleLabels) {
        for family in [&self.archive_lag, &self.archive_gaps, &self.archive_up] {
            family.remove(labels);
        }
        self.archive_last_event.remove(labels);
    }

    /// Forgets a deleted schedule.
    pub fn forget_schedule(&self, labels: &ScheduleLabels) {
        for family in [&self.schedule_last_success, &self.schedule_since_success, &self.window_start, &self.window_end]
        {
            family.remove(labels);
        }
        self.missed_slots.remove(labels);
        self.forget_archive(labels);
        self.successes.lock().unwrap_or_else(|p| p.into_inner()).remove(labels);
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        for (labels, at) in self.successes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            self.schedule_since_success.get_or_create(labels).set((now - at).max(0.0));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_prefix_and_labels() {
        let m = Metrics::default();
        m.errors.get_or_create(&ErrorLabels { kind: "MySQLBackup".into(), category: "apply".into() }).inc();
        m.last_success.get_or_create(&SourceLabels { namespace: "db".into(), pod: "db-0".into() }).set(1.5e9);
        let text = m.encode();
        assert!(
            text.contains("mysql_backup_operator_reconcile_errors_total{kind=\"MySQLBackup\",category=\"apply\"} 1"),
            "{text}"
        );
        assert!(text.contains("mysql_backup_operator_last_successful_backup_timestamp_seconds{namespace=\"db\",pod=\"db-0\"} 1500000000.0"), "{text}");
    }
}
