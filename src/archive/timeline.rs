//! The archive as read back: its segments in order and every gap — a missing number, a segment that
//! does not start where the one before ended, a gap the archiver recorded, an entry whose data is
//! missing — found purely; and the segments a point-in-time restore replays after a position.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;

use crate::archive::{ArchiveError, validate_name};
use crate::format::archive_index;
use crate::format::archive_index::{ArchiveObject, Gap, INDEX_FORMAT, SegmentIndex};
use crate::mysql::binlog::range::holds;
use crate::mysql::position::GtidState;
use crate::storage::Storage;

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
            if entry.format_version == 0 || entry.format_version > INDEX_FORMAT {
                return Err(bad(format!(
                    "format {} is not one this release reads (1 to {INDEX_FORMAT})",
                    entry.format_version
                )));
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
    Time(Timestamp),
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
        time: last.last_event_time.to_string(),
        seq: last.seq,
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::validate_name;
    use crate::mysql::binlog::range::mariadb;

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
            first_event_time: Timestamp::from_second(first_time).ok().unwrap(),
            last_event_time: Timestamp::from_second(last_time).ok().unwrap(),
            server_id: 1,
            server_version: "10.11".into(),
            bytes: 0,
            stored_bytes: 0,
            blake3: String::new(),
            archived_at: Timestamp::from_second(last_time).ok().unwrap(),
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
        let time = |t: i64| Reach::Time(Timestamp::from_second(t).ok().unwrap());
        assert_eq!(seqs(segments_for("a", &tl, &from, &time(112), false).unwrap()), [1, 2]);
        // Between two segments: the next one says nothing else happened before the target.
        assert_eq!(seqs(segments_for("a", &tl, &from, &time(109), false).unwrap()), [1]);
        assert_eq!(
            segments_for("a", &tl, &from, &gtid("0-1-51"), false).unwrap_err().to_string(),
            "archive a ends at 0-1-50 (1970-01-01T00:01:59Z, segment 3)"
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
