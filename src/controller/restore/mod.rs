//! MySQLRestore: what it needs (pure).

pub mod build;
pub mod decide;
pub mod reconcile;
