//! The custom resources of group `mysqlbackup.dev`, version `v1alpha1`: `MySQLBackup` (one backup run),
//! `MySQLRestore` (one restore) and `BackupSchedule` (backups on a cron schedule, with retention).
//! Their CRDs are generated from these types (`mysql-backup-operator crd`) and committed under `crds/`;
//! every field's doc comment becomes its `kubectl explain` text.

pub mod backup;
pub mod common;
pub mod restore;
pub mod schedule;

use kube::CustomResourceExt;

pub use self::backup::*;
pub use self::common::*;
pub use self::restore::*;
pub use self::schedule::*;

/// API group of the resources.
pub const GROUP: &str = "mysqlbackup.dev";

/// The CRDs of every resource, in a stable order, as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    [MySQLBackup::crd(), MySQLRestore::crd(), BackupSchedule::crd()]
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("CRDs always serialise"))
        .collect::<Vec<_>>()
        .join("---\n")
}
