//! BackupSchedule: when it fires (pure) and what it needs (pure).

pub mod archiving;
pub mod build;
pub mod decide;
pub mod drills;
pub mod reconcile;
pub mod retention;
pub mod slots;
