//! The compatibility promise: every document one side writes and another reads — across processes,
//! releases and years — each one typed struct, versioned, serialized and parsed by both sides.

pub mod archive_index;
pub mod archiver_status;
pub mod drill;
pub mod fingerprint;
pub mod key_history;
pub mod keys;
pub mod lock;
pub mod manifest;
pub mod position;
pub mod summary;
