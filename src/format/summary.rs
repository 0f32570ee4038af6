//! The agent's summary: the one JSON document an agent run ends with, printed on stdout and written
//! to `--summary-file` — a Job's termination-message path, which carries it to the controller. Both
//! sides serialize and parse these types and nothing else; a Job started by one release of the
//! operator can report to the next, so a field is only ever added, with a default (see
//! `tests/summaries.rs`, which parses the summaries of the previous release).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::drill::DrillOutcome;
use crate::format::manifest::{Incremental, MethodKind, Totals};
use crate::format::position::Positions;

/// The JSON summary of an operation: printed on stdout and written to `--summary-file`, which a Job's
/// termination message carries to the controller. This one type is written by the agent and read by
/// the controller — whichever release each is (a Job started by one operator can report to the next):
/// a field is only ever added, with a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "operation")]
pub enum Summary {
    /// A backup was taken.
    #[serde(rename = "backup", rename_all = "camelCase")]
    Backup {
        backup_id: String,
        storage: String,
        manifest: String,
        method: MethodKind,
        positions: Positions,
        totals: Totals,
        started_at: Timestamp,
        completed_at: Timestamp,
        duration_seconds: f64,
        /// Peak resident memory of the agent process (not counting tools it ran), for sizing Jobs.
        peak_rss_bytes: u64,
        /// The peaks of the tools it ran and of its cgroup (absent in summaries of 0.1.0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory: Option<MemoryPeaks>,
        /// For an incremental: what it builds on.
        #[serde(skip_serializing_if = "Option::is_none")]
        incremental: Option<Incremental>,
        /// For a catch-up backup: what it restored, and how far replication took it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        catchup: Option<CatchupSummary>,
        /// For an encrypted backup: the fingerprint of the key that sealed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encryption_key: Option<crate::encryption::Fingerprint>,
    },
    /// A backup was verified.
    #[serde(rename = "verify", rename_all = "camelCase")]
    Verify { backup_id: String, storage: String, report: VerifyReport, duration_seconds: f64 },
    /// A backup was restored.
    #[serde(rename = "restore", rename_all = "camelCase")]
    Restore {
        backup_id: String,
        storage: String,
        datadir: PathBuf,
        method: MethodKind,
        positions: Positions,
        files: u64,
        bytes: u64,
        transfer_seconds: f64,
        prepare_seconds: f64,
        duration_seconds: f64,
        /// Peak resident memory of the agent process (not counting tools it ran).
        peak_rss_bytes: u64,
        /// The peaks of the tools it ran and of its cgroup (absent in summaries of 0.1.0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory: Option<MemoryPeaks>,
        /// For a point-in-time restore: what was replayed.
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<PitrSummary>,
    },
    /// A backup was deleted.
    #[serde(rename = "delete", rename_all = "camelCase")]
    Delete {
        backup_id: String,
        storage: String,
        #[serde(flatten)]
        outcome: DeleteOutcome,
        duration_seconds: f64,
    },
    /// The archiver stopped.
    #[serde(rename = "binlogArchive", rename_all = "camelCase")]
    BinlogArchive {
        archive: String,
        storage: String,
        /// Every transaction up to this position is in the archive.
        archived_position: String,
        last_segment: Option<u64>,
        segments: u64,
        transactions: u64,
        duplicates: u64,
        reconnects: u64,
        gaps: u64,
        duration_seconds: f64,
    },
    /// A restore drill ran (a failed one ends in a [`Failure`] naming its reason; its record is stored).
    #[serde(rename = "drill", rename_all = "camelCase")]
    Drill {
        storage: String,
        #[serde(flatten)]
        outcome: DrillOutcome,
        /// Peak resident memory of the agent process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peak_rss_bytes: Option<u64>,
        /// The peaks of the tools it ran (the private server) and of its cgroup.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory: Option<MemoryPeaks>,
    },
    /// A retention policy was applied.
    #[serde(rename = "prune", rename_all = "camelCase")]
    Prune {
        storage: String,
        dry_run: bool,
        #[serde(flatten)]
        outcome: PruneOutcome,
        duration_seconds: f64,
    },
}

impl Summary {
    /// The operation's name, as the summary's `operation` field has it.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Backup { .. } => "backup",
            Self::Verify { .. } => "verify",
            Self::Restore { .. } => "restore",
            Self::Delete { .. } => "delete",
            Self::BinlogArchive { .. } => "binlogArchive",
            Self::Prune { .. } => "prune",
            Self::Drill { .. } => "drill",
        }
    }

    /// Parses a summary the agent wrote (this release's or an earlier one's).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Writes the summary as JSON to `path`.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string(self).expect("summaries always serialise");
        std::fs::write(path, json)
    }
}

/// Peak memory beyond the agent's own, for sizing a Job's memory limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryPeaks {
    /// Peak resident memory of the largest tool the agent ran and waited for (mariadb-backup, the
    /// private mariadbd, mariadb-binlog, mariadb).
    pub children_bytes: u64,
    /// Peak of the whole cgroup the agent runs in (a container's: children and page cache included),
    /// where the kernel keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_bytes: Option<u64>,
}

/// What a catch-up backup restored and replicated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatchupSummary {
    /// The full backup restored into scratch space.
    pub base: String,
    /// The server replicated from (`host:port`).
    pub source: String,
    /// The position the restored data held.
    pub from: String,
    /// The position replication reached: the new backup's.
    pub reached: String,
    /// The only datadir read: the scratch copy.
    pub read_datadir: PathBuf,
    /// Seconds restoring the base.
    pub restore_seconds: f64,
    /// Seconds starting the private server, replicating and stopping it.
    pub replication_seconds: f64,
}

/// What a point-in-time restore replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PitrSummary {
    /// The target asked for.
    pub target: String,
    /// Incrementals whose binary logs were replayed, oldest first (at most [`LISTED_INCREMENTALS`] listed; see
    /// `incrementalsCount`).
    pub incrementals: Vec<String>,
    /// How many incrementals were replayed (absent in summaries of 0.1.0, which listed them all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incrementals_count: u64,
    /// Binary log files of incrementals read.
    pub binlog_files: u64,
    /// The binary-log archive whose segments were replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Archive segments replayed.
    pub segments: u64,
    /// Gaps a forced restore crossed: their transactions are missing (at most [`LISTED_GAPS`] listed;
    /// see `gapsCrossedCount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps_crossed: Vec<String>,
    /// How many gaps were crossed (absent in summaries of 0.1.0, which listed them all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gaps_crossed_count: u64,
    /// Transactions replayed.
    pub transactions: u64,
}

impl PitrSummary {
    /// What a point-in-time restore to `target` replayed: `incrementals` (ids, oldest first), and the
    /// `gaps` a forced restore crossed, each list capped with its count beside it.
    pub fn new(
        target: String,
        incrementals: impl IntoIterator<Item = String>,
        binlog_files: u64,
        archive: Option<String>,
        segments: u64,
        gaps: impl IntoIterator<Item = String>,
        transactions: u64,
    ) -> Self {
        let (incrementals, incrementals_count) = listed(incrementals, LISTED_INCREMENTALS);
        let (gaps_crossed, gaps_crossed_count) = listed(gaps.into_iter().map(|g| cut(&g, MAX_GAP_BYTES)), LISTED_GAPS);
        Self {
            target,
            incrementals,
            incrementals_count,
            binlog_files,
            archive,
            segments,
            gaps_crossed,
            gaps_crossed_count,
            transactions,
        }
    }

    /// How many incrementals were replayed, listed or not.
    pub fn incrementals_total(&self) -> u64 {
        self.incrementals_count.max(self.incrementals.len() as u64)
    }

    /// How many gaps were crossed, listed or not.
    pub fn gaps_crossed_total(&self) -> u64 {
        self.gaps_crossed_count.max(self.gaps_crossed.len() as u64)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The first `n` of `items`, and how many there were: a summary lists a bounded number of things and
/// counts the rest, so that it always fits a pod's termination message.
pub fn listed<T>(items: impl IntoIterator<Item = T>, n: usize) -> (Vec<T>, u64) {
    let mut count = 0u64;
    let mut kept = Vec::new();
    for item in items {
        if kept.len() < n {
            kept.push(item);
        }
        count += 1;
    }
    (kept, count)
}

/// Incrementals listed in a point-in-time summary at most.
pub const LISTED_INCREMENTALS: usize = 20;
/// Gaps listed in a point-in-time summary at most.
pub const LISTED_GAPS: usize = 5;
/// The longest description of a listed gap (the archiver's status has them whole).
pub const MAX_GAP_BYTES: usize = 160;

/// `text` cut to at most `max` bytes at a character boundary, ending in `…` where it was cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let end = (0..=max.saturating_sub('…'.len_utf8())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}…", &text[..end])
}
/// Locks listed as deferring a sweep at most.
pub const LISTED_LOCKS: usize = 10;
/// What a pod's termination message holds: a longer summary is cut and no longer parses.
pub const TERMINATION_MESSAGE_BYTES: usize = 4096;

/// What a failed agent leaves in its summary file: the error, with its causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The error and its causes, as printed.
    pub error: String,
}

/// The longest error a [`Failure`] carries: a pod's termination message holds 4096 bytes, and a cut
/// JSON document would not parse at all.
pub const MAX_FAILURE_BYTES: usize = 3072;

impl Failure {
    /// The failure of `error`, its middle cut out when it is too long (the first clause says what
    /// failed; the end, often a log's last lines, says why).
    pub fn of(error: &str) -> Self {
        if error.len() <= MAX_FAILURE_BYTES {
            return Self { error: error.to_string() };
        }
        let keep = MAX_FAILURE_BYTES / 2;
        let head_end = (0..=keep).rev().find(|i| error.is_char_boundary(*i)).unwrap_or(0);
        let tail_start = (error.len() - keep..error.len()).find(|i| error.is_char_boundary(*i)).unwrap_or(error.len());
        Self { error: format!("{} … {}", &error[..head_end], &error[tail_start..]) }
    }
}

/// One damaged place of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Damage {
    /// File path.
    pub path: String,
    /// Offset of the damaged chunk in the file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Result of a verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Distinct chunks read.
    pub chunks_checked: u64,
    /// Bytes of original data checked.
    pub bytes_checked: u64,
    /// Every damaged chunk, by file, in manifest order (empty in a summary: a damaged backup ends in a
    /// [`Failure`], cut to fit).
    pub damaged: Vec<Damage>,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SweepOutcome {
    /// Chunks deleted.
    pub deleted_chunks: u64,
    /// Stored bytes of the deleted chunks.
    pub freed_bytes: u64,
    /// Chunks left: those some manifest references.
    pub kept_chunks: u64,
    /// Locks of running backups that made the sweep wait for a later run (empty when it ran; at most
    /// [`LISTED_LOCKS`] listed, see `deferredByCount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred_by: Vec<String>,
    /// How many locks deferred the sweep (absent in summaries of 0.1.0, which listed them all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferred_by_count: u64,
}

/// What a deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeleteOutcome {
    /// The backup was already gone.
    pub already_deleted: bool,
    /// The sweep after it.
    #[serde(flatten)]
    pub sweep: SweepOutcome,
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PruneOutcome {
    /// Backups the policy applied to (those with the requested tags).
    pub considered: u64,
    /// Backups kept.
    pub kept: u64,
    /// Backups deleted, newest first (at most [`LISTED_IDS`] listed; see `deletedCount`).
    pub deleted: Vec<String>,
    /// How many were deleted.
    pub deleted_count: u64,
    /// The oldest and newest kept backups' points in time: the range a restore can reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// The sweep after it (none when dry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepOutcome>,
    /// Segments of the binary-log archive deleted (with `--archive`): those before the oldest kept full
    /// backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_segments_deleted: Option<u64>,
}

/// Ids listed in a prune summary at most (it must fit a pod's termination message).
pub const LISTED_IDS: usize = 50;

/// A range of points in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// The earliest point a restore can reach.
    pub from: Timestamp,
    /// The latest.
    pub to: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_failure_keeps_its_start_and_end_within_a_termination_message() {
        let long = format!("drill of backup x failed: the server stopped; its log ends with:\n{}END", "é".repeat(4000));
        let f = Failure::of(&long);
        assert!(f.error.starts_with("drill of backup x failed: "), "{}", &f.error[..40]);
        assert!(f.error.ends_with("END") && f.error.contains(" … "));
        assert!(serde_json::to_string(&f).unwrap().len() < 4096);
        assert_eq!(Failure::of("short").error, "short");
    }
}
