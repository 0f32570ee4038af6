//! Binary logs: reading positions from files on disk, and choosing which files an incremental backup
//! needs.

pub mod event;
pub mod file;
pub mod range;
