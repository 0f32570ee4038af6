//! Reading replication positions from binary log files on disk, for backups of a datadir with no
//! running server to ask (the `cold` method).
//!
//! Only event headers and the few events that carry GTID state are decoded (by
//! [`crate::mysql::binlog::event`]): the format description (server version, checksum use), MariaDB
//! `Gtid_list` and `Gtid`, and MySQL `Previous_gtids` and `Gtid`, tagged or not. The executed state at the end of the newest file is the state
//! at its start plus the GTIDs in it; the purged state is the state at the start of the oldest file.
//! The MySQL paths are tested on events `mysql_common` serializes (no MySQL server is available here).

use std::{
    io::{BufReader, Read, Seek},
    path::{Path, PathBuf},
};

use crate::mysql::binlog::event::{self, HEADER, MAGIC, StateEvent};
use crate::mysql::gtid::{MariaGtid, MariaGtidPos, MysqlGtidSet};
use crate::mysql::position::{BinlogCoordinate, Flavor, GtidState, Positions};

/// Errors reading binary logs.
#[derive(Debug, thiserror::Error)]
pub enum BinlogFileError {
    /// A file could not be read.
    #[error("binary log {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A file is not a binary log or is damaged.
    #[error("binary log {path}: {reason} at byte {offset}")]
    Format { path: PathBuf, offset: u64, reason: String },
}

/// What one binary log file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogFileInfo {
    /// Server version from the format description event.
    pub server_version: String,
    /// Server id of the format description event (the server that wrote the file).
    pub server_id: u32,
    /// GTID state at the start of the file.
    pub start: GtidState,
    /// GTID state after the last complete event.
    pub end: GtidState,
    /// Byte offset just past the last complete event.
    pub end_offset: u64,
}

/// Decodes the events of one binary log held in memory.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<BinlogFileInfo, BinlogFileError> {
    parse_from(path, std::io::Cursor::new(bytes), bytes.len() as u64)
}

/// Decodes the events of a binary log of `len` bytes read from `r`. Only event headers and the few
/// events that carry GTID state are read; every other event is skipped with a seek, so memory stays at
/// one buffer and the largest of those small events, whatever the size of the log.
pub fn parse_from<R: Read + Seek>(path: &Path, r: R, len: u64) -> Result<BinlogFileInfo, BinlogFileError> {
    scan(path, r, len, |_| {})
}

/// Where a MariaDB transaction begins in a binary log file: its GTID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxStart {
    /// The transaction's GTID.
    pub gtid: MariaGtid,
    /// Byte offset of its GTID event in the file.
    pub offset: u64,
    /// Seconds since the epoch in the GTID event's header.
    pub timestamp: u32,
}

/// The MariaDB transactions of one binary log file, in file order, read from the file's own events
/// (streaming, as [`read`] does), and its summary.
pub fn maria_transactions(path: &Path) -> Result<(BinlogFileInfo, Vec<TxStart>), BinlogFileError> {
    let io = |source| BinlogFileError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut txs = Vec::new();
    let info = scan(path, file, len, |tx| txs.push(tx))?;
    Ok((info, txs))
}

fn scan<R: Read + Seek>(
    path: &Path,
    r: R,
    len: u64,
    mut on_transaction: impl FnMut(TxStart),
) -> Result<BinlogFileInfo, BinlogFileError> {
    let bad = |offset: u64, reason: &str| BinlogFileError::Format {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    };
    let io = |source| BinlogFileError::Read { path: path.to_path_buf(), source };
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut magic = [0u8; 4];
    if len < 4 || r.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(bad(0, "not a binary log (no magic number)"));
    }
    let mut at = 4u64;
    let mut checksum = false;
    let mut version = None;
    let mut server_id = 0;
    let mut maria_start: Option<MariaGtidPos> = None;
    let mut maria_end = MariaGtidPos::default();
    let mut mysql_start: Option<MysqlGtidSet> = None;
    let mut mysql_end = MysqlGtidSet::default();
    let mut buf = Vec::new();
    while at + HEADER as u64 <= len {
        let mut header = [0u8; HEADER];
        r.read_exact(&mut header).map_err(io)?;
        let size = u64::from(u32::from_le_bytes([header[9], header[10], header[11], header[12]]));
        if size < HEADER as u64 {
            return Err(bad(at, "event shorter than its header"));
        }
        if at + size > len {
            break; // a torn last event: the log ends at the last complete one
        }
        let kind = header[4];
        if !event::carries_state(kind) {
            let skip = i64::try_from(size - HEADER as u64).map_err(|_| bad(at, "event size out of range"))?;
            r.seek_relative(skip).map_err(io)?;
            at += size;
            continue;
        }
        let size = size as usize;
        buf.clear();
        buf.extend_from_slice(&header);
        buf.resize(size, 0);
        r.read_exact(&mut buf[HEADER..]).map_err(io)?;
        if kind == event::kind::FORMAT_DESCRIPTION {
            checksum = event::has_checksums(&buf);
        }
        let body_end = if checksum { size.saturating_sub(4) } else { size };
        let body = &buf[HEADER..body_end.max(HEADER)];
        let server = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        match event::decode(kind, server, body).map_err(|e| bad(at, &e.to_string()))? {
            Some(StateEvent::FormatDescription { server_version }) => {
                version = Some(server_version);
                server_id = server;
            }
            Some(StateEvent::MariaGtidList(pos)) if maria_start.is_none() => {
                maria_end = pos.clone();
                maria_start = Some(pos);
            }
            Some(StateEvent::MariaGtid { gtid, .. }) => {
                let timestamp = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                on_transaction(TxStart { gtid, offset: at, timestamp });
                maria_end.apply(gtid);
            }
            Some(StateEvent::MysqlPreviousGtids(set)) if mysql_start.is_none() => {
                mysql_end = set.clone();
                mysql_start = Some(set);
            }
            Some(StateEvent::MysqlGtid { sid, gno }) => mysql_end.add(sid, gno),
            // A later list or set repeats what the file's first one said; a format description
            // after the first is the same server's.
            Some(StateEvent::MariaGtidList(_) | StateEvent::MysqlPreviousGtids(_)) | None => {}
        }
        at += size as u64;
    }
    let server_version = version.ok_or_else(|| bad(4, "no format description event"))?;
    let (start, end) = match Flavor::from_version(&server_version) {
        Flavor::Mariadb => (
            GtidState::Mariadb { binlog_pos: maria_start.unwrap_or_default(), current_pos: None, purged: None },
            GtidState::Mariadb { binlog_pos: maria_end, current_pos: None, purged: None },
        ),
        Flavor::Mysql => (
            GtidState::Mysql { executed: mysql_start.unwrap_or_default(), purged: None },
            GtidState::Mysql { executed: mysql_end, purged: None },
        ),
    };
    Ok(BinlogFileInfo { server_version, server_id, start, end, end_offset: at })
}

/// Reads one binary log file, streaming: memory does not grow with its size.
pub fn read(path: &Path) -> Result<BinlogFileInfo, BinlogFileError> {
    let io = |source| BinlogFileError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    parse_from(path, file, len)
}

/// The binary log files named by an index file, oldest first, resolved against `dir` (entries are
/// either absolute or relative to the datadir, e.g. `./mysql-bin.000001`; only the file name is used).
pub fn files_from_index(index_text: &str, dir: &Path) -> Vec<PathBuf> {
    index_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| Path::new(l).file_name().map(|n| dir.join(n)))
        .collect()
}

/// Positions of a stopped server from its binary logs: version and server id from the newest file,
/// executed GTIDs at its end, purged GTIDs at the start of the oldest file, and the end coordinate.
pub fn positions_from_binlogs(files: &[PathBuf]) -> Result<Option<Positions>, BinlogFileError> {
    let (Some(first), Some(last)) = (files.first(), files.last()) else {
        return Ok(None);
    };
    let newest = read(last)?;
    let oldest = if first == last { newest.clone() } else { read(first)? };
    let gtid = match (newest.end, oldest.start) {
        (GtidState::Mariadb { binlog_pos, .. }, GtidState::Mariadb { binlog_pos: purged, .. }) => {
            GtidState::Mariadb { binlog_pos, current_pos: None, purged: Some(purged) }
        }
        (GtidState::Mysql { executed, .. }, GtidState::Mysql { executed: purged, .. }) => {
            GtidState::Mysql { executed, purged: Some(purged) }
        }
        (end, _) => end,
    };
    Ok(Some(Positions {
        flavor: Some(Flavor::from_version(&newest.server_version)),
        version: Some(newest.server_version),
        server_id: Some(newest.server_id),
        server_uuid: None,
        gtid: Some(gtid),
        binlog: Some(BinlogCoordinate {
            file: last.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            position: newest.end_offset,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::binlog::event::{event_bytes, kind};

    fn fde(version: &str, server_id: u32) -> Vec<u8> {
        event_bytes(
            kind::FORMAT_DESCRIPTION,
            0,
            server_id,
            &crate::mysql::binlog::event::format_description_body(version),
        )
    }

    #[test]
    fn mariadb_state_is_gtid_list_plus_gtids() {
        let mut log = MAGIC.to_vec();
        log.extend(fde("10.11.19-MariaDB-log", 7));
        let mut list = 2u32.to_le_bytes().to_vec();
        for (d, s, q) in [(0u32, 1u32, 40u64), (1, 2, 5)] {
            list.extend_from_slice(&d.to_le_bytes());
            list.extend_from_slice(&s.to_le_bytes());
            list.extend_from_slice(&q.to_le_bytes());
        }
        log.extend(event_bytes(kind::MARIA_GTID_LIST, 0, 7, &list));
        let mut gtid = 41u64.to_le_bytes().to_vec();
        gtid.extend_from_slice(&0u32.to_le_bytes());
        gtid.push(0);
        log.extend(event_bytes(kind::MARIA_GTID, 0, 7, &gtid));
        let complete = log.len() as u64;
        log.extend_from_slice(&[1, 2, 3]); // torn tail
        let info = parse(Path::new("b.000002"), &log).unwrap();
        assert_eq!(info.server_version, "10.11.19-MariaDB-log");
        assert_eq!(info.server_id, 7);
        assert_eq!(info.end_offset, complete);
        assert_eq!(
            info.end,
            GtidState::Mariadb { binlog_pos: "0-7-41,1-2-5".parse().unwrap(), current_pos: None, purged: None }
        );
        assert_eq!(
            info.start,
            GtidState::Mariadb { binlog_pos: "0-1-40,1-2-5".parse().unwrap(), current_pos: None, purged: None }
        );
    }

    #[test]
    fn mysql_state_is_previous_gtids_plus_gtids() {
        let sid: [u8; 16] = *b"\x3e\x11\xfa\x47\x71\xca\x11\xe1\x9e\x33\xc8\x0a\xa9\x42\x95\x62";
        let mut log = MAGIC.to_vec();
        log.extend(fde("8.0.36", 3));
        let mut prev = 1u64.to_le_bytes().to_vec();
        prev.extend_from_slice(&sid);
        prev.extend_from_slice(&1u64.to_le_bytes());
        prev.extend_from_slice(&1u64.to_le_bytes());
        prev.extend_from_slice(&11u64.to_le_bytes()); // 1-10
        log.extend(event_bytes(kind::MYSQL_PREVIOUS_GTIDS, 0, 3, &prev));
        let mut gtid = vec![1u8];
        gtid.extend_from_slice(&sid);
        gtid.extend_from_slice(&11u64.to_le_bytes());
        gtid.extend_from_slice(&[0; 10]);
        log.extend(event_bytes(kind::MYSQL_GTID, 0, 3, &gtid));
        let info = parse(Path::new("binlog.000001"), &log).unwrap();
        assert_eq!(
            info.end,
            GtidState::Mysql { executed: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-11".parse().unwrap(), purged: None }
        );
    }

    #[test]
    fn mysql_tagged_gtids_are_counted_under_their_tag() {
        use mysql_common::binlog::events::{GtidEvent, PreviousGtidsEvent, PreviousGtidsSid};
        use mysql_common::packets::{GnoInterval, Tag};
        use mysql_common::proto::MySerialize;
        let sid: [u8; 16] = *b"\x3e\x11\xfa\x47\x71\xca\x11\xe1\x9e\x33\xc8\x0a\xa9\x42\x95\x62";
        let tag = || Tag::new("nightly").unwrap();
        let mut log = MAGIC.to_vec();
        log.extend(fde("8.4.3", 3));
        let mut prev = Vec::new();
        PreviousGtidsEvent::new(vec![
            PreviousGtidsSid::new(sid, None, vec![GnoInterval::new(1, 11)]),
            PreviousGtidsSid::new(sid, Some(tag()), vec![GnoInterval::new(1, 3)]),
        ])
        .serialize(&mut prev);
        log.extend(event_bytes(kind::MYSQL_PREVIOUS_GTIDS, 0, 3, &prev));
        for (gtid, kind) in [
            (GtidEvent::new_tagged(sid, tag(), 3), kind::MYSQL_GTID_TAGGED),
            (GtidEvent::new(sid, 11), kind::MYSQL_GTID),
        ] {
            let mut body = Vec::new();
            gtid.serialize(&mut body);
            log.extend(event_bytes(kind, 0, 3, &body));
        }
        let info = parse(Path::new("binlog.000001"), &log).unwrap();
        let expected = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-11:nightly:1-3";
        assert_eq!(info.end, GtidState::Mysql { executed: expected.parse().unwrap(), purged: None });
        let start = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10:nightly:1-2";
        assert_eq!(info.start, GtidState::Mysql { executed: start.parse().unwrap(), purged: None });
    }

    #[test]
    fn rejects_non_binlogs_naming_the_file() {
        let err = parse(Path::new("/d/ibdata1"), b"garbage").unwrap_err();
        assert_eq!(err.to_string(), "binary log /d/ibdata1: not a binary log (no magic number) at byte 0");
    }

    #[test]
    fn index_entries_resolve_by_file_name() {
        let files = files_from_index("./mysql-bin.000001\n/old/place/mysql-bin.000002\n", Path::new("/data"));
        assert_eq!(files, vec![PathBuf::from("/data/mysql-bin.000001"), PathBuf::from("/data/mysql-bin.000002")]);
    }
}
