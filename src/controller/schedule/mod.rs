//! BackupSchedule: when it fires (pure) and what it needs (pure).

pub mod decide;
pub mod slots;
