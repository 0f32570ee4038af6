//! Segments from synthetic event streams: whole transactions, bounds, gaps, both server families.

use super::*;
use crate::mysql::binlog::event::event_bytes;
use crate::mysql::binlog::event::kind::*;

/// MariaDB GTID flag: DDL.
const FL_STANDALONE: u8 = 1;
use crate::mysql::binlog::range::mariadb;

const BOUNDS: Bounds = Bounds { max_bytes: 1 << 20, max_age: Duration::from_secs(5) };

struct Ev {
    kind: u8,
    ts: u32,
    server: u32,
    body: Vec<u8>,
    bytes: Vec<u8>,
}

fn ev(kind: u8, ts: u32, server: u32, body: Vec<u8>) -> Ev {
    let bytes = event_bytes(kind, ts, server, &body);
    Ev { kind, ts, server, body, bytes }
}

fn feed(b: &mut SegmentBuilder, e: &Ev, now: Instant) {
    let raw = RawEvent { kind: e.kind, timestamp: e.ts, server_id: e.server, body: &e.body, bytes: &e.bytes };
    b.feed(&raw, now).unwrap();
}

fn fde(server: u32, version: &str) -> Ev {
    ev(FORMAT_DESCRIPTION, 100, server, crate::mysql::binlog::event::format_description_body(version))
}

fn maria_gtid(seq: u64, domain: u32, server: u32, standalone: bool, ts: u32) -> Ev {
    let mut body = seq.to_le_bytes().to_vec();
    body.extend(domain.to_le_bytes());
    body.push(if standalone { FL_STANDALONE } else { 0 });
    body.extend([0; 6]);
    ev(MARIA_GTID, ts, server, body)
}

fn query(text: &str, ts: u32, server: u32) -> Ev {
    let mut body = vec![0; 8];
    body.push(3); // db length
    body.extend([0, 0]); // error code
    body.extend(0u16.to_le_bytes()); // status vars
    body.extend(b"app\0");
    body.extend(text.as_bytes());
    ev(QUERY, ts, server, body)
}

fn rows(ts: u32) -> Ev {
    ev(30, ts, 1, vec![7; 20])
}

fn xid(ts: u32) -> Ev {
    ev(XID, ts, 1, 9u64.to_le_bytes().to_vec())
}

/// One MariaDB row transaction.
fn maria_trx(b: &mut SegmentBuilder, seq: u64, ts: u32, now: Instant) {
    for e in [maria_gtid(seq, 0, 1, false, ts), ev(19, ts, 1, vec![1; 10]), rows(ts), xid(ts)] {
        feed(b, &e, now);
    }
}

#[test]
fn segments_hold_whole_transactions_and_parse_as_binary_logs() {
    let t0 = Instant::now();
    let mut b = SegmentBuilder::new(mariadb("0-1-3").unwrap(), BOUNDS);
    feed(&mut b, &ev(ROTATE, 0, 1, vec![0; 12]), t0);
    feed(&mut b, &fde(1, "10.11.19-MariaDB-log"), t0);
    feed(&mut b, &ev(MARIA_GTID_LIST, 0, 1, vec![0; 4]), t0);
    maria_trx(&mut b, 4, 1000, t0);
    // DDL: a standalone GTID and its one query.
    feed(&mut b, &maria_gtid(5, 0, 1, true, 1001), t0);
    feed(&mut b, &query("CREATE TABLE t (a INT)", 1001, 1), t0);
    // A transaction left open when the stream breaks is not archived.
    feed(&mut b, &maria_gtid(6, 0, 1, false, 1002), t0);
    feed(&mut b, &rows(1002), t0);
    b.drop_partial().unwrap();
    assert!(b.take_sealed().is_empty(), "nothing sealed before a bound");
    b.seal();
    let sealed = b.take_sealed();
    assert_eq!(sealed.len(), 1);
    let s = &sealed[0];
    assert_eq!((s.first.to_string(), s.last.to_string(), s.transactions), ("0-1-4".into(), "0-1-5".into(), 2));
    assert_eq!(s.start, mariadb("0-1-3").unwrap());
    assert_eq!(s.end, mariadb("0-1-5").unwrap());
    assert_eq!((s.first_event_time.as_second(), s.last_event_time.as_second()), (1000, 1001));
    assert_eq!((s.server_id, s.server_version.as_str()), (1, "10.11.19-MariaDB-log"));
    let info = crate::mysql::binlog::file::parse(std::path::Path::new("segment"), &s.bytes.to_vec().unwrap()).unwrap();
    assert_eq!(info.end_offset as usize, s.bytes.len(), "every event complete");
    assert_eq!(info.end, mariadb("0-1-5").unwrap(), "the segment's GTIDs, read back as a binary log");
}

#[test]
fn commit_and_rollback_queries_end_transactions_and_duplicates_are_dropped() {
    let t0 = Instant::now();
    let mut b = SegmentBuilder::new(mariadb("0-1-3").unwrap(), BOUNDS);
    feed(&mut b, &fde(1, "10.11.19-MariaDB-log"), t0);
    // A non-transactional table's statement ends with a COMMIT query.
    feed(&mut b, &maria_gtid(4, 0, 1, false, 10), t0);
    feed(&mut b, &query("INSERT INTO myisam VALUES (1)", 10, 1), t0);
    assert_eq!(b.state(), &mariadb("0-1-3").unwrap(), "still open after its statement");
    feed(&mut b, &query("COMMIT", 10, 1), t0);
    assert_eq!(b.state(), &mariadb("0-1-4").unwrap());
    // A resumed stream sends 0-1-4 again: dropped.
    maria_trx(&mut b, 4, 10, t0);
    assert_eq!(b.duplicates(), 1);
    b.seal();
    assert_eq!(b.take_sealed()[0].transactions, 1);
}

#[test]
fn bounds_seal_by_size_and_age() {
    let t0 = Instant::now();
    let mut b =
        SegmentBuilder::new(mariadb("0-1-0").unwrap(), Bounds { max_bytes: 400, max_age: Duration::from_secs(5) });
    feed(&mut b, &fde(1, "10.11.19-MariaDB-log"), t0);
    for seq in 1..=6 {
        maria_trx(&mut b, seq, 100 + seq as u32, t0);
    }
    b.seal();
    let by_size = b.take_sealed();
    assert!(by_size.len() >= 2, "{} segments", by_size.len());
    assert!(by_size.iter().all(|s| s.bytes.len() >= 400));
    for pair in by_size.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "consecutive segments meet");
    }
    let t1 = t0 + Duration::from_secs(1);
    maria_trx(&mut b, 7, 107, t1);
    assert!(b.take_sealed().is_empty());
    b.tick(t1 + Duration::from_secs(4));
    let open = b.take_sealed().len();
    b.tick(t1 + Duration::from_secs(5));
    let aged = b.take_sealed();
    assert_eq!((open, aged.len()), (0, 1), "sealed at 5 s, not before");
    assert_eq!(aged[0].end, mariadb("0-1-7").unwrap());
    assert_eq!(b.deadline(), None, "nothing open");
}

#[test]
fn a_sequence_jump_is_a_gap_recorded_on_the_next_segment() {
    let t0 = Instant::now();
    let mut b = SegmentBuilder::new(mariadb("0-1-3").unwrap(), BOUNDS);
    feed(&mut b, &fde(1, "10.11.19-MariaDB-log"), t0);
    maria_trx(&mut b, 4, 10, t0);
    maria_trx(&mut b, 9, 11, t0);
    b.seal();
    let s = b.take_sealed();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].gap_before, None);
    assert_eq!(
        s[1].gap_before.as_deref(),
        Some("the stream jumps from 0-1-4 to 0-1-9 in domain 0: transactions 5..8 are missing")
    );
    // Restarting elsewhere (purged logs, another server) is a gap too, and merges the states.
    b.restart_from(&mariadb("0-1-20,1-2-5").unwrap(), "purged".into()).unwrap();
    maria_trx(&mut b, 21, 12, t0);
    b.seal();
    let s = b.take_sealed();
    assert_eq!(s[0].gap_before.as_deref(), Some("purged"));
    assert_eq!(s[0].start, mariadb("0-1-20,1-2-5").unwrap());
}

#[test]
fn mysql_transactions_begin_commit_and_ddl() {
    let t0 = Instant::now();
    let uuid = [0x3eu8; 16];
    let gtid = |n: u64| {
        let mut body = vec![1];
        body.extend(uuid);
        body.extend(n.to_le_bytes());
        body.extend([0; 20]);
        ev(MYSQL_GTID, 50, 7, body)
    };
    let state =
        GtidState::Mysql { executed: "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:1-10".parse().unwrap(), purged: None };
    let mut b = SegmentBuilder::new(state, BOUNDS);
    feed(&mut b, &fde(7, "8.0.36"), t0);
    // Row transaction: BEGIN … Xid.
    for e in [gtid(11), query("BEGIN", 50, 7), rows(50), xid(50)] {
        feed(&mut b, &e, t0);
    }
    // DDL: its first query is the whole transaction.
    feed(&mut b, &gtid(12), t0);
    feed(&mut b, &query("CREATE TABLE t (a INT)", 50, 7), t0);
    // Duplicate.
    for e in [gtid(12), query("DROP TABLE t", 50, 7)] {
        feed(&mut b, &e, t0);
    }
    // BEGIN … COMMIT (non-transactional engine).
    for e in [gtid(13), query("BEGIN", 50, 7), query("INSERT INTO m VALUES (1)", 50, 7), query("COMMIT", 50, 7)] {
        feed(&mut b, &e, t0);
    }
    // A tagged GTID (MySQL 8.4, type 0x2a) opens a transaction like a plain one.
    let mut tagged = Vec::new();
    mysql_common::proto::MySerialize::serialize(
        &mysql_common::binlog::events::GtidEvent::new_tagged(
            uuid,
            mysql_common::packets::Tag::new("nightly").unwrap(),
            1,
        ),
        &mut tagged,
    );
    for e in [ev(MYSQL_GTID_TAGGED, 50, 7, tagged), query("BEGIN", 50, 7), rows(50), xid(50)] {
        feed(&mut b, &e, t0);
    }
    b.seal();
    let s = b.take_sealed();
    assert_eq!(s[0].transactions, 4);
    assert_eq!(b.duplicates(), 1);
    assert_eq!(
        s[0].end,
        GtidState::Mysql {
            executed: "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:1-13:nightly:1".parse().unwrap(),
            purged: None
        }
    );
    assert_eq!(s[0].last.to_string(), "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:nightly:1");
    assert_eq!(s[0].first.to_string(), "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:11");
}
