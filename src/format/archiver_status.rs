//! The archiver's status, as its `/status` endpoint serves it and the controller reads it into the
//! BackupSchedule's `status.binlogArchive`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::archive_index::Gap;

/// What the archiver is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ArchiverState {
    /// Connecting, or reading where the archive ends.
    #[default]
    Starting,
    /// Receiving the server's stream.
    Streaming,
    /// The connection broke; retrying.
    Reconnecting,
    /// Stopped on request (the process is exiting).
    Stopped,
}

/// What the archiver is doing, as `/status` serves it (and the controller reads it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ArchiverStatus {
    /// What it is doing.
    pub state: ArchiverState,
    /// The archive.
    pub archive: String,
    /// The position stored last (every transaction up to it is in the archive).
    pub archived_position: String,
    /// Time of the newest event stored.
    pub last_event_time: Option<Timestamp>,
    /// When a segment was last stored.
    pub last_segment_time: Option<Timestamp>,
    /// Number of the newest segment stored.
    pub last_segment: Option<u64>,
    /// Seconds of received transactions not yet stored, or since the connection was lost: what a loss
    /// of the archiver now could leave out of the archive.
    pub lag_seconds: f64,
    /// A time at which the server had sent everything it had: every transaction committed before it is
    /// received (stored once `lagSeconds` is zero). Taken from a heartbeat the archiver waited for, never
    /// from one that sat in a buffer while a segment was being stored.
    pub caught_up_at: Option<Timestamp>,
    /// Segments stored by this process.
    pub segments: u64,
    /// Transactions stored by this process.
    pub transactions: u64,
    /// Transactions received twice and dropped.
    pub duplicates: u64,
    /// Reconnections so far.
    pub reconnects: u64,
    /// Server id of the server streamed from.
    pub server_id: Option<u32>,
    /// The last connection or storage error, while it lasts.
    pub last_error: Option<String>,
    /// Gaps in the archive (found at start-up and while streaming).
    pub gaps: Vec<Gap>,
    /// Since when received transactions wait to be stored (for the lag; not served).
    #[serde(skip)]
    pub unstored_since: Option<Timestamp>,
}

impl ArchiverStatus {
    /// The status as of `now` (the lag is computed then).
    pub fn at(&self, now: Timestamp) -> Self {
        let mut s = self.clone();
        s.lag_seconds =
            s.unstored_since.map(|t| now.duration_since(t).as_millis().max(0) as f64 / 1000.0).unwrap_or(0.0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_served_as_the_previous_release_served_them() {
        for (text, state) in [
            ("starting", ArchiverState::Starting),
            ("streaming", ArchiverState::Streaming),
            ("reconnecting", ArchiverState::Reconnecting),
            ("stopped", ArchiverState::Stopped),
        ] {
            let json = format!(r#"{{"state": "{text}", "archive": "shop", "lagSeconds": 1.5}}"#);
            let status: ArchiverStatus = serde_json::from_str(&json).unwrap();
            assert_eq!((status.state, status.lag_seconds), (state, 1.5));
            assert!(serde_json::to_string(&status).unwrap().contains(&format!(r#""state":"{text}""#)));
        }
        let err = serde_json::from_str::<ArchiverStatus>(r#"{"state": "paused"}"#).unwrap_err().to_string();
        assert!(err.starts_with("unknown variant `paused`"), "{err}");
    }
}
