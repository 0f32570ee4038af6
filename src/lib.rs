//! mysql-backup-operator: physical backups of MySQL and MariaDB to object storage, restored verified.
//!
//! The library holds everything; `main.rs` only parses the command line and dispatches. The agent's
//! data path: a [`method`] reads a consistent copy of the server's files into the [`chunk_writer`],
//! which stores content-addressed zstd chunks through [`storage`]; the [`manifest`], written last,
//! lists every file with its chunks and the [`position`]s of the consistent point. [`restore`] and
//! [`verify`] read it back through [`chunk_reader`], checking every hash; [`gc`] removes backups (by id or
//! by [`retention`]) and sweeps the chunks no manifest references, kept apart from backups by [`lock`].

pub mod agent;
pub mod archive;
pub mod controller;
pub mod crd;
pub mod datapath;
pub mod format;
pub mod gc;
pub mod install;
pub mod mysql;
pub mod shutdown;
pub mod storage;

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
