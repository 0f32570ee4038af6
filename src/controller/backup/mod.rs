//! MySQLBackup: what it needs (pure), and deleting it.

pub mod build;
pub mod decide;
pub mod deletion;
pub mod drill;
pub mod reconcile;
