//! MySQLBackup: what it needs (pure), and deleting it.

pub mod decide;
pub mod deletion;
