//! What a lock object holds (`locks/<name>.json`). Readers decide by the object's last-modified time
//! alone — a lock not rewritten for ten minutes is stale — so the body is for people: who holds the
//! lock and since when.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The body of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The lock's name: `backup-<id>` or `sweep-<random>`.
    pub lock: String,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// When the holder took it.
    pub since: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_previous_release_wrote() {
        // As 0.1.0 wrote it: the same fields, in another order.
        let text =
            r#"{"host":"db-0","lock":"backup-20261130T020000Z-00abcd","pid":7,"since":"2026-11-30T02:00:00.5Z"}"#;
        let record: LockRecord = serde_json::from_str(text).unwrap();
        assert_eq!((record.pid, record.since.as_millisecond()), (7, 1_796_004_000_500));
        assert_eq!(serde_json::from_str::<LockRecord>(&serde_json::to_string(&record).unwrap()).unwrap(), record);
    }
}
