//! mysql-backup-operator: physical backups of MySQL and MariaDB to object storage, restored verified.
//!
//! The library holds everything; `main.rs` only parses the command line and dispatches. The folders are
//! the layers (see `docs/design.md`): [`format`](mod@format) is the compatibility promise (object keys, manifest,
//! archive index, locks, the agent's summary, the archiver's status); [`storage`] wraps object stores,
//! sealing what it writes with the keys of [`encryption`] when given;
//! [`mysql`] is what we know of the servers; [`datapath`] reads a consistent copy into content-addressed
//! chunks and reads it back verified; [`archive`] streams binary logs into storage; [`gc`] deletes
//! backups and sweeps chunks under [`gc::lock`]s; [`throttle`] bounds the bytes read and uploaded a
//! second; [`agent`] runs these as the command line and Jobs do.
//! [`crd`] and [`controller`] are the Kubernetes side; nothing else imports them or Kubernetes code.

pub mod agent;
pub mod archive;
pub mod controller;
pub mod crd;
pub mod datapath;
pub mod encryption;
pub mod format;
pub mod gc;
pub mod install;
pub mod mysql;
pub mod shutdown;
pub mod storage;
pub mod throttle;

/// FNV-1a of the parts in order: a hash that stays the same across builds and Rust versions, for
/// values that must not move when the operator is upgraded (schedule jitter, generated names, the
/// archiver's replica id).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    for part in parts {
        h.write(part);
    }
    h.finish()
}
