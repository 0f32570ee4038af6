//! Prometheus metrics of the controller, served on `/metrics`: reconciles and their errors by
//! category, backups finished by phase, and per source (namespace and pod) the time, size and
//! duration of the last successful backup, so that "no backup for a day" is one line of PromQL.

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

/// Every metric the controller exports.
pub struct Metrics {
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
            registry: Registry::default(),
        };
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
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
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
