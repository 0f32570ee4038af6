//! The binary-log archive's index: one entry per segment, written after the segment's data, whose
//! presence is what makes the segment part of the archive; and the gaps a reader finds or the
//! archiver records.
//!
//! ```text
//! binlogs/<archive>/000000000042-<blake3>.binlog.zst   zstd of the segment's bytes (format 2)
//! binlogs/<archive>/000000000042.binlog.zst            the same, as format 1 named it
//! binlogs/<archive>/000000000042.json                  [`SegmentIndex`]
//! ```
//!
//! Since format 2 a data object's name carries the first 32 hex digits of the segment's BLAKE3: a
//! second archiver writing the same number writes another object, never over the data an entry
//! already names, and its conditional write of the entry fails.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::position::GtidState;

/// Version of the index entry format: 2 names data objects by number and hash; 1 (read still) by
/// number alone.
pub const INDEX_FORMAT: u32 = 2;

/// Hex digits of the BLAKE3 in a format-2 data object's name.
const NAME_HASH_DIGITS: usize = 32;

const DATA_SUFFIX: &str = ".binlog.zst";

const INDEX_SUFFIX: &str = ".json";

/// The index entry of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentIndex {
    /// [`INDEX_FORMAT`].
    pub format_version: u32,
    /// Number of the segment, from 0, without holes.
    pub seq: u64,
    /// GTID state before its first transaction.
    pub start: GtidState,
    /// GTID state after its last transaction.
    pub end: GtidState,
    /// Its first transaction.
    pub first_gtid: String,
    /// Its last transaction.
    pub last_gtid: String,
    /// Transactions it holds.
    pub transactions: u64,
    /// Time of the first event of its first transaction (binary logs keep whole seconds).
    pub first_event_time: Timestamp,
    /// Time of the last event of its last transaction.
    pub last_event_time: Timestamp,
    /// Server id of the server it was streamed from.
    pub server_id: u32,
    /// That server's version.
    pub server_version: String,
    /// Bytes of the segment (a binary log file).
    pub bytes: u64,
    /// Bytes stored (compressed).
    pub stored_bytes: u64,
    /// BLAKE3 of the segment's bytes, hex.
    pub blake3: String,
    /// When it was stored.
    pub archived_at: Timestamp,
    /// Why the stream before it is incomplete, when the archiver knew it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_before: Option<String>,
}

/// The file name of segment `seq`'s data object as format 1 named it.
pub fn data_name(seq: u64) -> String {
    format!("{}{DATA_SUFFIX}", seq_name(seq))
}

/// The file name of the data object that `index` names.
pub fn data_name_of(index: &SegmentIndex) -> String {
    if index.format_version < 2 {
        return data_name(index.seq);
    }
    let hash = index.blake3.get(..NAME_HASH_DIGITS).unwrap_or(&index.blake3);
    format!("{}-{hash}{DATA_SUFFIX}", seq_name(index.seq))
}

/// The file name of segment `seq`'s index entry.
pub fn index_name(seq: u64) -> String {
    format!("{}{INDEX_SUFFIX}", seq_name(seq))
}

/// What an object's file name in an archive is: segment data or an index entry, and its number.
pub fn parse_name(name: &str) -> Option<(ArchiveObject, u64)> {
    if let Some(n) = name.strip_suffix(DATA_SUFFIX) {
        let seq = n.split_once('-').map_or(n, |(seq, _)| seq);
        seq.parse().ok().map(|n| (ArchiveObject::Data, n))
    } else {
        name.strip_suffix(INDEX_SUFFIX)?.parse().ok().map(|n| (ArchiveObject::Index, n))
    }
}

/// The two kinds of object of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveObject {
    /// A segment's data.
    Data,
    /// A segment's index entry.
    Index,
}

fn seq_name(seq: u64) -> String {
    format!("{seq:012}")
}

/// A hole in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    /// The segment after which transactions are missing (`None`: before the first).
    pub after_seq: Option<u64>,
    /// The segment where the archive resumes.
    pub before_seq: u64,
    /// What is missing, in words.
    pub reason: String,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gap before segment {}: {}", self.before_seq, self.reason)
    }
}
