//! Binary-log events: the one table of event types the data path reads, and the decoding of the few
//! that carry replication state or end a transaction.
//!
//! MySQL's events — format description, GTID (plain and, since MySQL 8.4, tagged: type 0x2a),
//! previous GTIDs (plain and tagged), query — are parsed by `mysql_common`. MariaDB's own events
//! (checkpoint 161, GTID 162, GTID list 163), which `mysql_common` does not know, are parsed here.
//! The MySQL paths are tested on events `mysql_common` serializes (no MySQL server is available here).

use mysql_common::binlog::BinlogCtx;
use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{FormatDescriptionEvent, GtidEvent, PreviousGtidsEvent, QueryEvent};
use mysql_common::io::ParseBuf;

use crate::mysql::gtid::{MariaGtid, MariaGtidPos, MysqlGtidSet, MysqlSid};

/// The magic number every binary log file starts with.
pub const MAGIC: &[u8; 4] = b"\xfebin";
/// Length of an event header (binary log format 4).
pub const HEADER: usize = 19;

/// Event type codes: the one table every reader of events here uses.
pub mod kind {
    use super::EventType;

    /// A statement (`BEGIN`, `COMMIT`, DDL, statement-based DML).
    pub const QUERY: u8 = EventType::QUERY_EVENT as u8;
    /// The server stopped.
    pub const STOP: u8 = EventType::STOP_EVENT as u8;
    /// The next binary log file.
    pub const ROTATE: u8 = EventType::ROTATE_EVENT as u8;
    /// The format description at the head of every file.
    pub const FORMAT_DESCRIPTION: u8 = EventType::FORMAT_DESCRIPTION_EVENT as u8;
    /// A transaction's commit (transactional engines).
    pub const XID: u8 = EventType::XID_EVENT as u8;
    /// The server has nothing more to send (replication stream only).
    pub const HEARTBEAT: u8 = EventType::HEARTBEAT_EVENT as u8;
    /// MySQL: a transaction's GTID.
    pub const MYSQL_GTID: u8 = EventType::GTID_EVENT as u8;
    /// MySQL: a transaction without a GTID.
    pub const MYSQL_ANONYMOUS_GTID: u8 = EventType::ANONYMOUS_GTID_EVENT as u8;
    /// MySQL: the GTID set before this file.
    pub const MYSQL_PREVIOUS_GTIDS: u8 = EventType::PREVIOUS_GTIDS_EVENT as u8;
    /// MySQL 8.4+: a transaction's tagged GTID (`uuid:tag:n`).
    pub const MYSQL_GTID_TAGGED: u8 = EventType::GTID_TAGGED_LOG_EVENT as u8;
    /// MariaDB: a binary log checkpoint.
    pub const MARIA_CHECKPOINT: u8 = 161;
    /// MariaDB: a transaction's GTID.
    pub const MARIA_GTID: u8 = 162;
    /// MariaDB: the GTID state before this file.
    pub const MARIA_GTID_LIST: u8 = 163;
}

/// MariaDB GTID flag: the transaction is one statement with no commit event (DDL).
const MARIA_FL_STANDALONE: u8 = 1;

/// An event that carries replication state, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEvent {
    /// The format description: which server wrote the file.
    FormatDescription {
        /// Its version string.
        server_version: String,
    },
    /// MariaDB: a transaction starts.
    MariaGtid {
        /// Its GTID (the server id comes from the event header).
        gtid: MariaGtid,
        /// One statement with no commit event (DDL).
        standalone: bool,
    },
    /// MariaDB: the GTID state before this file.
    MariaGtidList(MariaGtidPos),
    /// MySQL: a transaction starts.
    MysqlGtid {
        /// Its source (uuid and tag).
        sid: MysqlSid,
        /// Its number.
        gno: u64,
    },
    /// MySQL: the GTID set before this file.
    MysqlPreviousGtids(MysqlGtidSet),
}

/// An event that should carry state could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} event of {len} bytes: {reason}")]
pub struct EventError {
    /// The event's name.
    pub what: &'static str,
    /// Its body's length.
    pub len: usize,
    /// What is wrong.
    pub reason: String,
}

/// Whether events of type `kind` carry state [`decode`] reads.
pub fn carries_state(kind: u8) -> bool {
    use kind::*;
    matches!(
        kind,
        FORMAT_DESCRIPTION | MARIA_GTID | MARIA_GTID_LIST | MYSQL_GTID | MYSQL_GTID_TAGGED | MYSQL_PREVIOUS_GTIDS
    )
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A source uuid as MySQL prints it.
fn uuid_text(b: [u8; 16]) -> String {
    mysql_common::uuid::Uuid::from_bytes(b).to_string()
}

/// Parses a MySQL event's body with `mysql_common`, in the context of a binary log format 4 file.
fn parse_mysql<'a, T>(kind: u8, body: &'a [u8], what: &'static str) -> Result<T, EventError>
where
    T: mysql_common::proto::MyDeserialize<'a, Ctx = BinlogCtx<'a>>,
{
    // The format description only lends post-header lengths, which are the version 4 defaults.
    static FDE: std::sync::LazyLock<FormatDescriptionEvent<'static>> =
        std::sync::LazyLock::new(|| FormatDescriptionEvent::new(BinlogVersion::Version4));
    let ctx = BinlogCtx::new(HEADER + body.len(), &FDE, kind);
    ParseBuf(body).parse(ctx).map_err(|e| EventError { what, len: body.len(), reason: e.to_string() })
}

/// Decodes the body (after the header, without a checksum) of an event of type `kind` whose header
/// names `server_id`. `None` for types that carry no state (see [`carries_state`]).
pub fn decode(kind: u8, server_id: u32, body: &[u8]) -> Result<Option<StateEvent>, EventError> {
    let short = |what: &'static str| EventError { what, len: body.len(), reason: "too short".into() };
    Ok(Some(match kind {
        kind::FORMAT_DESCRIPTION => {
            if body.len() < 57 {
                return Err(short("format description"));
            }
            let fde: FormatDescriptionEvent = parse_mysql(kind, body, "format description")?;
            let version = fde.server_version();
            let server_version = version.split('\0').next().unwrap_or_default().to_string();
            StateEvent::FormatDescription { server_version }
        }
        kind::MARIA_GTID => {
            // seq_no 8, domain_id 4, flags 1.
            if body.len() < 13 {
                return Err(short("GTID"));
            }
            StateEvent::MariaGtid {
                gtid: MariaGtid { seq: le_u64(body, 0), domain: le_u32(body, 8), server: server_id },
                standalone: body[12] & MARIA_FL_STANDALONE != 0,
            }
        }
        kind::MARIA_GTID_LIST => {
            // count 4 (low 28 bits), then domain 4, server 4, seq 8 each.
            if body.len() < 4 {
                return Err(short("Gtid_list"));
            }
            let count = (le_u32(body, 0) & 0x0fff_ffff) as usize;
            if body.len() < 4 + count * 16 {
                return Err(short("Gtid_list"));
            }
            let mut pos = MariaGtidPos::default();
            for e in (0..count).map(|i| 4 + i * 16) {
                pos.apply(MariaGtid { domain: le_u32(body, e), server: le_u32(body, e + 4), seq: le_u64(body, e + 8) });
            }
            StateEvent::MariaGtidList(pos)
        }
        kind::MYSQL_GTID | kind::MYSQL_GTID_TAGGED => {
            let gtid: GtidEvent = parse_mysql(kind, body, "GTID")?;
            let tag = gtid.tag().map(|t| t.to_string()).unwrap_or_default();
            StateEvent::MysqlGtid { sid: MysqlSid { uuid: uuid_text(gtid.sid()), tag }, gno: gtid.gno() }
        }
        kind::MYSQL_PREVIOUS_GTIDS => {
            let prev: PreviousGtidsEvent = parse_mysql(kind, body, "Previous_gtids")?;
            let mut set = MysqlGtidSet::default();
            for s in prev.sids() {
                let sid =
                    MysqlSid { uuid: uuid_text(s.uuid()), tag: s.tag().map(|t| t.to_string()).unwrap_or_default() };
                for i in s.intervals().iter().filter(|i| i.end() > i.start()) {
                    set.add_range(sid.clone(), i.start(), i.end() - 1);
                }
            }
            StateEvent::MysqlPreviousGtids(set)
        }
        _ => return Ok(None),
    }))
}

/// `f` of the statement of a query event's body, if it has one; the statement is borrowed from the
/// body (no copy, on the archiver's path for every `BEGIN` and `COMMIT`).
pub fn with_query<R>(body: &[u8], f: impl FnOnce(&str) -> R) -> Option<R> {
    let q: QueryEvent = parse_mysql(kind::QUERY, body, "query").ok()?;
    Some(f(&q.query()))
}

/// The statement of a query event's body, if it has one.
pub fn query_text(body: &[u8]) -> Option<String> {
    with_query(body, str::to_string)
}

/// Whether a format description event (`event`: header, body and whatever follows) ends in a CRC-32
/// checksum: then every event of its file does. With checksums on, it ends in the algorithm byte
/// (1 = CRC32) and the CRC-32 of the bytes before.
pub fn has_checksums(event: &[u8]) -> bool {
    let size = event.len();
    size >= HEADER + 57 + 5 && event[size - 5] == 1 && crc32fast::hash(&event[..size - 4]) == le_u32(event, size - 4)
}

/// Builds one event's bytes: header, body, CRC-32 (for synthetic events and tests).
pub fn event_bytes(kind: u8, timestamp: u32, server_id: u32, body: &[u8]) -> Vec<u8> {
    let size = (HEADER + body.len() + 4) as u32;
    let mut e = Vec::with_capacity(size as usize);
    e.extend_from_slice(&timestamp.to_le_bytes());
    e.push(kind);
    e.extend_from_slice(&server_id.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes()); // next position: not meaningful in a segment
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(body);
    let crc = crc32fast::hash(&e);
    e.extend_from_slice(&crc.to_le_bytes());
    e
}

/// The body of a format description event of `version` with CRC-32 checksums (for tests).
#[cfg(test)]
pub(crate) fn format_description_body(version: &str) -> Vec<u8> {
    let mut body = vec![4, 0]; // binary log format 4
    let mut v = version.as_bytes().to_vec();
    v.resize(50, 0);
    body.extend(v);
    body.extend_from_slice(&[0; 4]); // creation time
    body.push(HEADER as u8);
    body.extend_from_slice(&[0; 40]); // post-header lengths
    body.push(1); // checksum algorithm: CRC32
    body
}

#[cfg(test)]
mod tests {
    use mysql_common::binlog::events::PreviousGtidsSid;
    use mysql_common::packets::{GnoInterval, Tag};
    use mysql_common::proto::MySerialize;

    use super::*;

    const UUID: [u8; 16] =
        [0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62];
    const UUID_TEXT: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn serialized(event: &impl MySerialize) -> Vec<u8> {
        let mut buf = Vec::new();
        event.serialize(&mut buf);
        buf
    }

    #[test]
    fn mysql_gtids_plain_and_tagged() {
        let plain = serialized(&GtidEvent::new(UUID, 42));
        assert_eq!(
            decode(kind::MYSQL_GTID, 1, &plain).unwrap(),
            Some(StateEvent::MysqlGtid { sid: MysqlSid { uuid: UUID_TEXT.into(), tag: String::new() }, gno: 42 })
        );
        let tagged = GtidEvent::new_tagged(UUID, Tag::new("nightly").unwrap(), 7);
        assert_eq!(tagged.event_type() as u8, 0x2a);
        let body = serialized(&tagged);
        assert_eq!(
            decode(kind::MYSQL_GTID_TAGGED, 1, &body).unwrap(),
            Some(StateEvent::MysqlGtid { sid: MysqlSid { uuid: UUID_TEXT.into(), tag: "nightly".into() }, gno: 7 })
        );
        assert!(carries_state(0x2a));
    }

    #[test]
    fn mysql_previous_gtids_plain_and_tagged() {
        let prev = PreviousGtidsEvent::new(vec![
            PreviousGtidsSid::new(UUID, None, vec![GnoInterval::new(1, 11)]),
            PreviousGtidsSid::new(UUID, Some(Tag::new("nightly").unwrap()), vec![GnoInterval::new(1, 4)]),
        ]);
        let Some(StateEvent::MysqlPreviousGtids(set)) =
            decode(kind::MYSQL_PREVIOUS_GTIDS, 1, &serialized(&prev)).unwrap()
        else {
            panic!("not a GTID set")
        };
        assert_eq!(set.to_string(), format!("{UUID_TEXT}:1-10:nightly:1-3"));
    }

    #[test]
    fn mariadb_events_and_damage() {
        let mut body = Vec::new();
        body.extend_from_slice(&99u64.to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        body.push(MARIA_FL_STANDALONE);
        assert_eq!(
            decode(kind::MARIA_GTID, 7, &body).unwrap(),
            Some(StateEvent::MariaGtid { gtid: MariaGtid { domain: 2, server: 7, seq: 99 }, standalone: true })
        );
        assert_eq!(
            decode(kind::MARIA_GTID, 7, &body[..12]).unwrap_err().to_string(),
            "GTID event of 12 bytes: too short"
        );
        let mut list = 2u32.to_le_bytes().to_vec();
        list.extend_from_slice(&[0; 16]);
        assert_eq!(
            decode(kind::MARIA_GTID_LIST, 7, &list).unwrap_err().to_string(),
            "Gtid_list event of 20 bytes: too short"
        );
        assert_eq!(decode(kind::XID, 7, &[0; 8]).unwrap(), None);
        assert!(decode(kind::MYSQL_GTID, 1, &[0; 10]).unwrap_err().to_string().starts_with("GTID event of 10 bytes: "));
    }

    #[test]
    fn query_text_of_a_statement() {
        // thread id 4, exec time 4, db length 1, error code 2, status vars length 2, db, NUL, query.
        let mut body = vec![0u8; 8];
        body.push(4);
        body.extend_from_slice(&[0, 0, 0, 0]);
        body.extend_from_slice(b"shop\0COMMIT");
        assert_eq!(query_text(&body).as_deref(), Some("COMMIT"));
        assert_eq!(query_text(&body[..5]), None);
    }
}
