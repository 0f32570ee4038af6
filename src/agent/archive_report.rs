//! `agent binlog status`: an archive's extent and gaps.

use jiff::Timestamp;
use serde::Serialize;

use crate::agent::AgentError;
use crate::storage::Storage;

/// An archive's extent and gaps, as `agent binlog status` reports them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    /// The archive.
    pub archive: String,
    /// The storage.
    pub storage: String,
    /// Segments with data.
    pub segments: u64,
    /// Transactions in them.
    pub transactions: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// Where the first segment starts.
    pub start: Option<crate::mysql::position::GtidState>,
    /// Where the last segment ends.
    pub end: Option<crate::mysql::position::GtidState>,
    /// Time of the first event.
    pub first_event_time: Option<Timestamp>,
    /// Time of the last event.
    pub last_event_time: Option<Timestamp>,
    /// Every gap.
    pub gaps: Vec<crate::format::archive_index::Gap>,
}

impl ArchiveReport {
    /// The report for people.
    pub fn text(&self) -> String {
        let pos = |p: &Option<crate::mysql::position::GtidState>| match p {
            Some(crate::mysql::position::GtidState::Mariadb { binlog_pos, .. }) => binlog_pos.to_string(),
            Some(crate::mysql::position::GtidState::Mysql { executed, .. }) => executed.to_string(),
            None => "-".into(),
        };
        let time = |t: &Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
        let mut out = format!(
            "archive {} in {}: {} segments, {} transactions, {} bytes stored\nfrom {} ({})\nto   {} ({})\n",
            self.archive,
            self.storage,
            self.segments,
            self.transactions,
            self.stored_bytes,
            pos(&self.start),
            time(&self.first_event_time),
            pos(&self.end),
            time(&self.last_event_time),
        );
        for gap in &self.gaps {
            out.push_str(&format!("{gap}\n"));
        }
        out
    }
}

/// Reads archive `name`'s extent and gaps.
pub async fn archive_status(storage: &Storage, name: &str) -> Result<ArchiveReport, AgentError> {
    let tl = crate::archive::timeline::read_timeline(storage, name).await?;
    Ok(ArchiveReport {
        archive: name.to_string(),
        storage: storage.url().to_string(),
        segments: tl.segments.len() as u64,
        transactions: tl.segments.iter().map(|s| s.transactions).sum(),
        stored_bytes: tl.segments.iter().map(|s| s.stored_bytes).sum(),
        start: tl.segments.first().map(|s| s.start.clone()),
        end: tl.segments.last().map(|s| s.end.clone()),
        first_event_time: tl.segments.first().map(|s| s.first_event_time),
        last_event_time: tl.segments.last().map(|s| s.last_event_time),
        gaps: tl.gaps,
    })
}
