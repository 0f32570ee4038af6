//! The continuous binary-log archive in storage: numbered segments, each a binary log file of whole
//! transactions, and an index entry per segment written after it — the entry's presence is what makes
//! a segment part of the archive, as a manifest does for a backup.
//!
//! ```text
//! binlogs/<archive>/000000000042.binlog.zst   zstd of the segment's bytes
//! binlogs/<archive>/000000000042.json         [`SegmentIndex`]: GTID range, event times, BLAKE3, sizes
//! ```
//!
//! Index entries are written with a conditional create, so two archivers writing the same archive
//! cannot overwrite each other's segments: the second one stops.
//!
//! [`timeline`] reads the entries back and finds every gap, purely: a missing number, a segment that
//! does not start where the one before ended, a gap the archiver recorded while streaming (purged
//! binary logs, a jump in a domain's sequence, another server), and an entry whose data is missing.
//! [`segments_for`] chooses the segments a point-in-time restore replays after a backup's position,
//! and refuses to cross a gap unless forced.

pub mod archiver;
pub mod http;
pub mod segment;

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::archive::segment::Sealed;
use crate::format::archive_index;
use crate::format::archive_index::{ArchiveObject, Gap, INDEX_FORMAT, SegmentIndex};
use crate::mysql::binlog::range::holds;
use crate::mysql::position::GtidState;
use crate::storage::{Storage, StorageError};

/// Errors of the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive name is not usable as a key.
    #[error(
        "archive name {0:?} is invalid: use 1 to 128 lower-case letters, digits, '.', '-' or '_', starting with a \
         letter or digit"
    )]
    Name(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An index entry does not parse.
    #[error("archive {archive}: index entry {name} is invalid: {reason}")]
    Index { archive: String, name: String, reason: String },
    /// Another archiver wrote the same segment.
    #[error(
        "archive {archive}: segment {seq} was already written by another archiver; only one archiver may write an \
         archive"
    )]
    Conflict { archive: String, seq: u64 },
    /// A segment's data is damaged.
    #[error("archive {archive}: segment {seq} is damaged: {reason}")]
    Damaged { archive: String, seq: u64, reason: String },
}

/// Checks an archive name.
pub fn validate_name(name: &str) -> Result<(), ArchiveError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(ArchiveError::Name(name.to_string())) }
}

/// Key of segment `seq`'s data object.
fn data_key(storage: &Storage, archive: &str, seq: u64) -> object_store::path::Path {
    storage.archive_key(archive, &archive_index::data_name(seq))
}

/// Key of segment `seq`'s index entry.
fn index_key(storage: &Storage, archive: &str, seq: u64) -> object_store::path::Path {
    storage.archive_key(archive, &archive_index::index_name(seq))
}

/// Stores a sealed segment as number `seq`: data first, then its index entry.
pub async fn write_segment(
    storage: &Storage,
    archive: &str,
    seq: u64,
    sealed: &Sealed,
) -> Result<SegmentIndex, ArchiveError> {
    let compressed = zstd::bulk::compress(&sealed.bytes, 3).map_err(|e| ArchiveError::Damaged {
        archive: archive.to_string(),
        seq,
        reason: format!("compressing: {e}"),
    })?;
    let index = SegmentIndex {
        format_version: INDEX_FORMAT,
        seq,
        start: sealed.start.clone(),
        end: sealed.end.clone(),
        first_gtid: sealed.first.to_string(),
        last_gtid: sealed.last.to_string(),
        transactions: sealed.transactions,
        first_event_time: sealed.first_event_time,
        last_event_time: sealed.last_event_time,
        server_id: sealed.server_id,
        server_version: sealed.server_version.clone(),
        bytes: sealed.bytes.len() as u64,
        stored_bytes: compressed.len() as u64,
        blake3: blake3::hash(&sealed.bytes).to_hex().to_string(),
        archived_at: Utc::now(),
        gap_before: sealed.gap_before.clone(),
    };
    storage.put(&data_key(storage, archive, seq), Bytes::from(compressed)).await?;
    let json = serde_json::to_vec_pretty(&index).expect("an index entry always serialises");
    if !storage.put_new(&index_key(storage, archive, seq), Bytes::from(json)).await? {
        return Err(ArchiveError::Conflict { archive: archive.to_string(), seq });
    }
    Ok(index)
}

/// Downloads segment `index` into the file `path`, streaming: the object arrives piece by piece, is
/// decompressed, hashed and written by a blocking worker, so memory does not grow with the segment's
/// size. The file is complete and checked (length and BLAKE3) when this returns `Ok`.
pub async fn download_segment(
    storage: &Storage,
    archive: &str,
    index: &SegmentIndex,
    path: &std::path::Path,
) -> Result<(), ArchiveError> {
    use std::io::Write;
    let damaged = |reason: String| ArchiveError::Damaged { archive: archive.to_string(), seq: index.seq, reason };
    let mut stream = storage
        .get_stream(&data_key(storage, archive, index.seq))
        .await?
        .ok_or_else(|| damaged("its data object is missing".into()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let out = path.to_path_buf();
    let worker = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&out).map_err(|e| format!("writing {}: {e}", out.display()))?;
        let mut sink = HashingWriter { inner: std::io::BufWriter::new(file), hasher: blake3::Hasher::new(), len: 0 };
        let mut decoder = zstd::stream::write::Decoder::new(&mut sink).map_err(|e| e.to_string())?;
        while let Some(piece) = rx.blocking_recv() {
            decoder.write_all(&piece).map_err(|e| format!("decompressing into {}: {e}", out.display()))?;
        }
        decoder.flush().map_err(|e| format!("decompressing into {}: {e}", out.display()))?;
        drop(decoder);
        sink.inner.flush().map_err(|e| format!("writing {}: {e}", out.display()))?;
        sink.inner.get_ref().sync_all().map_err(|e| format!("writing {}: {e}", out.display()))?;
        Ok::<_, String>((sink.len, sink.hasher.finalize().to_hex().to_string()))
    });
    let mut fed = Ok(());
    while let Some(piece) = stream.next().await {
        match piece {
            // The worker stopped early: its error says why.
            Ok(piece) => {
                if tx.send(piece).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                fed = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let written = worker.await.map_err(|e| damaged(e.to_string()))?;
    fed?;
    let (len, hash) = written.map_err(damaged)?;
    if len != index.bytes || hash != index.blake3 {
        return Err(damaged("its content does not match its index entry".into()));
    }
    Ok(())
}

/// Passes writes on, hashing and counting them.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The archives in `storage`.
pub async fn list_archives(storage: &Storage) -> Result<Vec<String>, ArchiveError> {
    Ok(storage.list_archive(None).await?.into_iter().map(|(n, _)| n).collect())
}

/// Deletes the oldest segments of `archive` that `keep_from` (the position of the oldest backup
/// retention keeps) holds entirely: no kept backup can replay them. Only a run from the first segment
/// goes, so no gap opens in the middle; each index entry goes before its data. The data objects an
/// interrupted prune left behind go too. `dry` only counts.
pub async fn prune_before(
    storage: &Storage,
    archive: &str,
    keep_from: &GtidState,
    dry: bool,
) -> Result<u64, ArchiveError> {
    let tl = read_timeline(storage, archive).await?;
    let old: Vec<u64> =
        tl.segments.iter().take_while(|s| holds(keep_from, &s.end) == Some(true)).map(|s| s.seq).collect();
    // Not behind the newest entry: the archive continues from there.
    let newest = tl.newest.as_ref().map(|n| n.seq);
    let old: Vec<u64> = old.into_iter().filter(|seq| Some(*seq) != newest).collect();
    if dry {
        return Ok(old.len() as u64);
    }
    for &seq in &old {
        storage.delete(&index_key(storage, archive, seq)).await?;
        storage.delete(&data_key(storage, archive, seq)).await?;
    }
    for &seq in &tl.orphans {
        storage.delete(&data_key(storage, archive, seq)).await?;
    }
    if !old.is_empty() || !tl.orphans.is_empty() {
        tracing::info!(
            archive,
            segments = old.len(),
            orphans = tl.orphans.len(),
            "pruned archive segments no kept backup needs"
        );
    }
    Ok(old.len() as u64)
}

/// The archive as read back: its segments in order and its gaps.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Segments with an index entry and data, by number.
    pub segments: Vec<SegmentIndex>,
    /// Every gap, in order.
    pub gaps: Vec<Gap>,
    /// The newest index entry, with or without its data: where the archive continues.
    pub newest: Option<SegmentIndex>,
    /// Data objects numbered below the oldest index entry, without an entry of their own: left by a
    /// prune interrupted between deleting an entry and its data. Nothing reads them.
    pub orphans: Vec<u64>,
}

/// A GTID state as text: the MariaDB position or the MySQL set.
pub fn state_text(s: &GtidState) -> String {
    match s {
        GtidState::Mariadb { binlog_pos, .. } => binlog_pos.to_string(),
        GtidState::Mysql { executed, .. } => executed.to_string(),
    }
}

/// Orders the entries and finds the gaps; `data` holds the numbers whose data object exists.
pub fn timeline(mut entries: Vec<SegmentIndex>, data: &BTreeSet<u64>) -> Timeline {
    entries.sort_by_key(|e| e.seq);
    let newest = entries.last().cloned();
    // Without any entry, a lone data object is the first segment being written, not an orphan.
    let orphans = entries.first().map(|oldest| data.range(..oldest.seq).copied().collect()).unwrap_or_default();
    let mut gaps = Vec::new();
    let mut segments: Vec<SegmentIndex> = Vec::new();
    let mut missing_since: Option<u64> = None;
    for e in entries {
        if !data.contains(&e.seq) {
            missing_since.get_or_insert(e.seq);
            continue;
        }
        let prev = segments.last();
        let mut reasons = Vec::new();
        if let Some(first_missing) = missing_since.take() {
            reasons.push(if first_missing + 1 == e.seq {
                format!("the data of segment {first_missing} is missing")
            } else {
                format!("the data of segments {first_missing}..{} is missing", e.seq - 1)
            });
        } else if let Some(p) = prev
            && p.seq + 1 != e.seq
        {
            reasons.push(if p.seq + 2 == e.seq {
                format!("segment {} is missing", p.seq + 1)
            } else {
                format!("segments {}..{} are missing", p.seq + 1, e.seq - 1)
            });
        }
        if let Some(p) = prev
            && reasons.is_empty()
            && p.end != e.start
            && holds(&p.end, &e.start) != Some(true)
        {
            reasons.push(format!(
                "segment {} ends at {} but segment {} starts at {}",
                p.seq,
                state_text(&p.end),
                e.seq,
                state_text(&e.start)
            ));
        }
        if let Some(g) = &e.gap_before {
            reasons.push(g.clone());
        }
        if !reasons.is_empty() {
            gaps.push(Gap { after_seq: prev.map(|p| p.seq), before_seq: e.seq, reason: reasons.join("; ") });
        }
        segments.push(e);
    }
    Timeline { segments, gaps, newest, orphans }
}

/// Reads archive `archive`'s timeline from storage.
pub async fn read_timeline(storage: &Storage, archive: &str) -> Result<Timeline, ArchiveError> {
    validate_name(archive)?;
    let names = storage.list_archive(Some(archive)).await?;
    let mut data = BTreeSet::new();
    let mut index_names = Vec::new();
    for (name, _) in names {
        match archive_index::parse_name(&name) {
            Some((ArchiveObject::Data, n)) => {
                data.insert(n);
            }
            Some((ArchiveObject::Index, n)) => index_names.push((n, name)),
            None => {}
        }
    }
    let entries: Vec<SegmentIndex> = futures::stream::iter(index_names)
        .map(|(n, name)| async move {
            let bytes = storage.get(&storage.archive_key(archive, &name)).await?;
            let bad = |reason: String| ArchiveError::Index { archive: archive.to_string(), name: name.clone(), reason };
            let entry: SegmentIndex = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            if entry.format_version != INDEX_FORMAT {
                return Err(bad(format!("format {} is not {INDEX_FORMAT}", entry.format_version)));
            }
            if entry.seq != n {
                return Err(bad(format!("it says segment {}", entry.seq)));
            }
            Ok(entry)
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(timeline(entries, &data))
}

/// Where a point-in-time replay from the archive must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The segment whose end state holds this transaction.
    Gtid(crate::mysql::gtid::MariaGtid),
    /// The first segment whose last event is at or after this time.
    Time(DateTime<Utc>),
}

/// Why the archive cannot serve a replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverError {
    /// The archive holds nothing after the position.
    #[error("archive {archive} holds nothing after {from}")]
    Empty { archive: String, from: String },
    /// The archive starts after the position.
    #[error(
        "archive {archive} starts at {start} (segment {seq}), after {from}: the transactions between are in no archive"
    )]
    StartsAfter { archive: String, start: String, seq: u64, from: String },
    /// The archive ends before the target.
    #[error("archive {archive} ends at {end} ({time}, segment {seq})")]
    EndsBefore { archive: String, end: String, time: String, seq: u64 },
    /// A gap lies between the position and the target.
    #[error("archive {archive} has a {gap}; restore to a point before it, or force the restore across it")]
    Gap { archive: String, gap: Gap },
}

/// The segments to replay after state `from` up to `reach`, in order, and the gaps crossed (only
/// with `force`).
pub fn segments_for<'a>(
    archive: &str,
    tl: &'a Timeline,
    from: &GtidState,
    reach: &Reach,
    force: bool,
) -> Result<(Vec<&'a SegmentIndex>, Vec<Gap>), CoverError> {
    let first = tl
        .segments
        .iter()
        .position(|s| holds(from, &s.end) != Some(true))
        .ok_or_else(|| CoverError::Empty { archive: archive.to_string(), from: state_text(from) })?;
    let start = &tl.segments[first];
    let mut crossed = Vec::new();
    if holds(from, &start.start) != Some(true) {
        let gap = Gap {
            after_seq: None,
            before_seq: start.seq,
            reason: format!("it starts at {}, after {}", state_text(&start.start), state_text(from)),
        };
        if !force {
            return Err(CoverError::StartsAfter {
                archive: archive.to_string(),
                start: state_text(&start.start),
                seq: start.seq,
                from: state_text(from),
            });
        }
        crossed.push(gap);
    }
    let mut out = Vec::new();
    for s in &tl.segments[first..] {
        if !out.is_empty()
            && let Some(gap) = tl.gaps.iter().find(|g| g.before_seq == s.seq)
        {
            if !force {
                return Err(CoverError::Gap { archive: archive.to_string(), gap: gap.clone() });
            }
            crossed.push(gap.clone());
        }
        out.push(s);
        let reached = match reach {
            Reach::Gtid(g) => match &s.end {
                GtidState::Mariadb { binlog_pos, .. } => binlog_pos.contains(g),
                GtidState::Mysql { .. } => false,
            },
            Reach::Time(t) => s.last_event_time >= *t,
        };
        if reached {
            return Ok((out, crossed));
        }
    }
    let last = tl.segments.last().unwrap_or(start);
    Err(CoverError::EndsBefore {
        archive: archive.to_string(),
        end: state_text(&last.end),
        time: last.last_event_time.to_rfc3339(),
        seq: last.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::binlog::range::mariadb;

    /// File storage in `dir` holding archive `a`: segments 0, 1, 2 with transactions 1..=10, 11..=20, 21..=30.
    async fn three_segments(dir: &tempfile::TempDir) -> Storage {
        let retry = crate::storage::RetryPolicy { timeout: std::time::Duration::from_secs(1) };
        let storage = Storage::open(dir.path().to_str().unwrap(), &[], retry).unwrap();
        for (seq, start, end) in [(0u64, 0u64, 10u64), (1, 10, 20), (2, 20, 30)] {
            write_segment(&storage, "a", seq, &sealed(seq, start, end)).await.unwrap();
        }
        storage
    }

    fn tx(n: u64) -> crate::archive::segment::Txid {
        crate::archive::segment::Txid::Maria(format!("0-1-{n}").parse().unwrap())
    }

    /// Segment `seq` holding transactions `start+1..=end`, its bytes all `seq`.
    fn sealed(seq: u64, start: u64, end: u64) -> Sealed {
        Sealed {
            bytes: vec![seq as u8; 10],
            start: mariadb(&format!("0-1-{start}")).unwrap(),
            end: mariadb(&format!("0-1-{end}")).unwrap(),
            first: tx(start + 1),
            last: tx(end),
            transactions: end - start,
            first_event_time: DateTime::from_timestamp(100, 0).unwrap(),
            last_event_time: DateTime::from_timestamp(200, 0).unwrap(),
            server_id: 1,
            server_version: "10.11".into(),
            gap_before: None,
        }
    }

    #[tokio::test]
    async fn pruning_removes_only_the_segments_before_the_oldest_kept_backup() {
        let dir = tempfile::tempdir().unwrap();
        let storage = three_segments(&dir).await;
        // A second archiver writing the same number stops.
        let first = read_timeline(&storage, "a").await.unwrap().segments[0].clone();
        let again = Sealed {
            bytes: vec![9; 3],
            start: first.start.clone(),
            end: first.end.clone(),
            first: tx(1),
            last: tx(10),
            transactions: 10,
            first_event_time: first.first_event_time,
            last_event_time: first.last_event_time,
            server_id: 2,
            server_version: "10.11".into(),
            gap_before: None,
        };
        assert_eq!(
            write_segment(&storage, "a", 0, &again).await.unwrap_err().to_string(),
            "archive a: segment 0 was already written by another archiver; only one archiver may write an archive"
        );
        // The oldest kept backup is at 0-1-25: segments 0 and 1 are no longer needed; 2 is.
        let keep = mariadb("0-1-25").unwrap();
        assert_eq!(prune_before(&storage, "a", &keep, true).await.unwrap(), 2);
        assert_eq!(read_timeline(&storage, "a").await.unwrap().segments.len(), 3, "dry deletes nothing");
        assert_eq!(prune_before(&storage, "a", &keep, false).await.unwrap(), 2);
        let tl = read_timeline(&storage, "a").await.unwrap();
        assert_eq!((tl.segments.iter().map(|s| s.seq).collect::<Vec<_>>(), tl.gaps.len()), (vec![2], 0));
        let out = dir.path().join("segment-2.bin");
        download_segment(&storage, "a", &tl.segments[0], &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), vec![2u8; 10]);
        // Bytes that are not what the index entry says are refused.
        let mut altered = tl.segments[0].clone();
        altered.blake3 = blake3::hash(b"other").to_hex().to_string();
        assert_eq!(
            download_segment(&storage, "a", &altered, &out).await.unwrap_err().to_string(),
            "archive a: segment 2 is damaged: its content does not match its index entry"
        );
        // The newest segment stays whatever the position: the archive continues from it.
        assert_eq!(prune_before(&storage, "a", &mariadb("0-1-99").unwrap(), false).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_prune_interrupted_after_an_index_entry_leaves_data_the_next_prune_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = three_segments(&dir).await;
        // Interrupted after deleting segment 0's entry: its data stays, unlisted.
        storage.delete(&storage.archive_key("a", "000000000000.json")).await.unwrap();
        let tl = read_timeline(&storage, "a").await.unwrap();
        assert_eq!(
            (tl.segments.iter().map(|s| s.seq).collect::<Vec<_>>(), tl.gaps.len(), tl.orphans.clone()),
            (vec![1, 2], 0, vec![0])
        );
        // Nothing to prune at 0-1-5 but the orphan, which goes; segments 1 and 2 stay whole.
        assert_eq!(prune_before(&storage, "a", &mariadb("0-1-5").unwrap(), false).await.unwrap(), 0);
        let names: Vec<String> = storage.list_archive(Some("a")).await.unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["000000000001.binlog.zst", "000000000001.json", "000000000002.binlog.zst", "000000000002.json"]
        );
        assert!(read_timeline(&storage, "a").await.unwrap().orphans.is_empty());
    }

    #[test]
    fn a_lone_data_object_is_a_first_segment_being_written_not_an_orphan() {
        let tl = timeline(vec![], &BTreeSet::from([0]));
        assert!(tl.orphans.is_empty() && tl.segments.is_empty());
        let tl = timeline(vec![seg(3, "0-1-30", "0-1-40", 1, 2)], &BTreeSet::from([1, 3, 4]));
        assert_eq!(tl.orphans, [1], "4 is above the newest entry: a segment being written");
    }

    fn seg(seq: u64, start: &str, end: &str, first_time: i64, last_time: i64) -> SegmentIndex {
        SegmentIndex {
            format_version: INDEX_FORMAT,
            seq,
            start: mariadb(start).unwrap(),
            end: mariadb(end).unwrap(),
            first_gtid: String::new(),
            last_gtid: String::new(),
            transactions: 1,
            first_event_time: DateTime::from_timestamp(first_time, 0).unwrap(),
            last_event_time: DateTime::from_timestamp(last_time, 0).unwrap(),
            server_id: 1,
            server_version: "10.11".into(),
            bytes: 0,
            stored_bytes: 0,
            blake3: String::new(),
            archived_at: DateTime::from_timestamp(last_time, 0).unwrap(),
            gap_before: None,
        }
    }

    fn all(n: u64) -> BTreeSet<u64> {
        (0..n).collect()
    }

    fn archive() -> Vec<SegmentIndex> {
        vec![
            seg(0, "0-1-10", "0-1-20", 100, 104),
            seg(1, "0-1-20", "0-1-30", 105, 109),
            seg(2, "0-1-30", "0-1-40", 110, 114),
            seg(3, "0-1-40", "0-1-50", 115, 119),
        ]
    }

    #[test]
    fn names() {
        assert!(validate_name("shop.nightly").is_ok());
        assert_eq!(
            validate_name("Shop/x").unwrap_err().to_string(),
            "archive name \"Shop/x\" is invalid: use 1 to 128 lower-case letters, digits, '.', '-' or '_', starting \
             with a letter or digit"
        );
        assert!(validate_name("").is_err() && validate_name(".x").is_err() && validate_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn a_whole_archive_has_no_gap() {
        let tl = timeline(archive().into_iter().rev().collect(), &all(4));
        assert_eq!(tl.segments.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(tl.gaps.is_empty(), "{:?}", tl.gaps);
    }

    #[test]
    fn every_kind_of_gap_is_found() {
        // A missing entry.
        let mut a = archive();
        a.remove(1);
        let tl = timeline(a, &all(4));
        assert_eq!(tl.gaps.len(), 1);
        assert_eq!(tl.gaps[0].to_string(), "gap before segment 2: segment 1 is missing");
        assert_eq!(tl.gaps[0].after_seq, Some(0));
        // An entry whose data was deleted.
        let tl = timeline(archive(), &BTreeSet::from([0, 2, 3]));
        assert_eq!(tl.gaps[0].to_string(), "gap before segment 2: the data of segment 1 is missing");
        assert_eq!(tl.segments.len(), 3);
        // Not continuous (another server, purged logs found when resuming).
        let mut a = archive();
        a[2].start = mariadb("0-1-35").unwrap();
        a[2].gap_before = Some("the server has purged the binary logs after 0-1-30".into());
        let tl = timeline(a, &all(4));
        assert_eq!(
            tl.gaps[0].to_string(),
            "gap before segment 2: segment 1 ends at 0-1-30 but segment 2 starts at 0-1-35; the server has purged \
             the binary logs after 0-1-30"
        );
        // A new domain appearing is no gap.
        let mut a = archive();
        a[2].end = mariadb("0-1-40,1-2-1").unwrap();
        a[3].start = mariadb("0-1-40,1-2-1").unwrap();
        assert!(timeline(a, &all(4)).gaps.is_empty());
    }

    #[test]
    fn replay_segments_from_a_backup_to_a_target() {
        let tl = timeline(archive(), &all(4));
        let from = mariadb("0-1-25").unwrap();
        let gtid = |g: &str| Reach::Gtid(g.parse().unwrap());
        let seqs = |r: (Vec<&SegmentIndex>, Vec<Gap>)| r.0.iter().map(|s| s.seq).collect::<Vec<_>>();
        assert_eq!(seqs(segments_for("a", &tl, &from, &gtid("0-1-35"), false).unwrap()), [1, 2]);
        assert_eq!(seqs(segments_for("a", &tl, &from, &gtid("0-1-30"), false).unwrap()), [1]);
        let time = |t: i64| Reach::Time(DateTime::from_timestamp(t, 0).unwrap());
        assert_eq!(seqs(segments_for("a", &tl, &from, &time(112), false).unwrap()), [1, 2]);
        // Between two segments: the next one says nothing else happened before the target.
        assert_eq!(seqs(segments_for("a", &tl, &from, &time(109), false).unwrap()), [1]);
        assert_eq!(
            segments_for("a", &tl, &from, &gtid("0-1-51"), false).unwrap_err().to_string(),
            "archive a ends at 0-1-50 (1970-01-01T00:01:59+00:00, segment 3)"
        );
        assert_eq!(
            segments_for("a", &tl, &mariadb("0-1-5").unwrap(), &gtid("0-1-15"), false).unwrap_err().to_string(),
            "archive a starts at 0-1-10 (segment 0), after 0-1-5: the transactions between are in no archive"
        );
        assert_eq!(
            segments_for("a", &tl, &mariadb("0-1-50").unwrap(), &gtid("0-1-51"), false).unwrap_err().to_string(),
            "archive a holds nothing after 0-1-50"
        );
    }

    #[test]
    fn a_gap_blocks_a_replay_across_it_unless_forced() {
        let tl = timeline(archive(), &BTreeSet::from([0, 1, 3]));
        let from = mariadb("0-1-12").unwrap();
        let gtid = |g: &str| Reach::Gtid(g.parse().unwrap());
        // Before the gap: fine.
        assert!(segments_for("a", &tl, &from, &gtid("0-1-25"), false).is_ok());
        assert_eq!(
            segments_for("a", &tl, &from, &gtid("0-1-45"), false).unwrap_err().to_string(),
            "archive a has a gap before segment 3: the data of segment 2 is missing; restore to a point before it, \
             or force the restore across it"
        );
        let (segs, crossed) = segments_for("a", &tl, &from, &gtid("0-1-45"), true).unwrap();
        assert_eq!(segs.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(crossed.len(), 1);
        // After the gap, from a backup taken after it: fine.
        assert!(segments_for("a", &tl, &mariadb("0-1-42").unwrap(), &gtid("0-1-45"), false).is_ok());
    }
}
