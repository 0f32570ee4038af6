//! Cutting a replication stream into archive segments: whole transactions only, each segment a valid
//! binary log file that `mariadb-binlog` / `mysqlbinlog` read as they read the server's own.
//!
//! [`SegmentBuilder`] is fed the events of the stream, one at a time, in order. It keeps the format
//! description event (written at the head of every segment, after the magic number), collects the
//! events of the open transaction, and appends a transaction to the open segment only when its last
//! event arrives: a segment never holds half a transaction, so a stream that breaks mid-transaction
//! loses nothing that was archived and repeats nothing when it resumes. A segment is sealed when its
//! size or age bound is reached ([`SegmentBuilder::tick`]) or on demand ([`SegmentBuilder::seal`]).
//!
//! Transaction boundaries:
//! - MariaDB: a `Gtid` event (162) opens a transaction; it ends at the `Xid` event, or at a `COMMIT` /
//!   `ROLLBACK` query, or — for a standalone GTID (DDL, flag 1) — at its one query.
//! - MySQL: a `Gtid` event (33) opens it; if the next query is `BEGIN` it ends at `Xid` or `COMMIT`,
//!   otherwise that first query is the whole transaction (DDL). The MySQL path is tested on
//!   constructed events only (no MySQL server is available here).
//!
//! A transaction the state already holds is dropped (a duplicate after a resume). A MariaDB sequence
//! number that jumps within a domain is a gap: the open segment is sealed and the next one records it.
//! Rotate, heartbeat, GTID-list and checkpoint events describe the stream, not the data: not stored.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::archive::spool::Spool;
use crate::mysql::binlog::event::{self, MAGIC, StateEvent, kind};
use crate::mysql::gtid::{MariaGtid, MysqlSid};
use crate::mysql::position::GtidState;

/// One event of the stream.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    /// Event type code.
    pub kind: u8,
    /// Seconds since the epoch, from the event header (0 for artificial events).
    pub timestamp: u32,
    /// Server id in the event header.
    pub server_id: u32,
    /// The event body, after the 19-byte header and without its checksum.
    pub body: &'a [u8],
    /// The whole event as a binary log file holds it (header, body, checksum).
    pub bytes: &'a [u8],
}

/// One transaction's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txid {
    /// MariaDB `domain-server-sequence`.
    Maria(MariaGtid),
    /// MySQL `uuid:number`.
    Mysql(MysqlSid, u64),
}

impl std::fmt::Display for Txid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Maria(g) => write!(f, "{g}"),
            Self::Mysql(sid, n) if sid.tag.is_empty() => write!(f, "{}:{n}", sid.uuid),
            Self::Mysql(sid, n) => write!(f, "{}:{}:{n}", sid.uuid, sid.tag),
        }
    }
}

/// Whether `state` holds transaction `tx`.
pub fn holds_tx(state: &GtidState, tx: &Txid) -> bool {
    match (state, tx) {
        (GtidState::Mariadb { binlog_pos, .. }, Txid::Maria(g)) => binlog_pos.contains(g),
        (GtidState::Mysql { executed, .. }, Txid::Mysql(sid, n)) => executed.contains(sid, *n),
        _ => false,
    }
}

/// `state` with `tx` applied.
pub fn apply_tx(state: &mut GtidState, tx: &Txid) {
    match (state, tx) {
        (GtidState::Mariadb { binlog_pos, .. }, Txid::Maria(g)) => binlog_pos.apply(*g),
        (GtidState::Mysql { executed, .. }, Txid::Mysql(sid, n)) => executed.add(sid.clone(), *n),
        _ => {}
    }
}

/// Errors of the stream's content.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// An event that carries state could not be decoded.
    #[error(transparent)]
    Event(#[from] event::EventError),
    /// A transaction's events arrived before any format description event.
    #[error("the stream sent a transaction before its format description event")]
    NoFormatDescription,
    /// A transaction of the other server family.
    #[error("a {got} transaction in a {state} stream")]
    Flavor { got: &'static str, state: &'static str },
    /// The open segment could not be written to its temporary file.
    #[error("spilling the open segment to a temporary file ($TMPDIR): {0}")]
    Spill(#[from] std::io::Error),
}

/// A sealed segment, ready to upload.
#[derive(Debug)]
pub struct Sealed {
    /// A binary log file: magic, format description, whole transactions (in memory, or spilled to a
    /// temporary file when large).
    pub bytes: Spool,
    /// State before its first transaction.
    pub start: GtidState,
    /// State after its last transaction.
    pub end: GtidState,
    /// First and last transaction.
    pub first: Txid,
    /// Last transaction.
    pub last: Txid,
    /// Transactions it holds.
    pub transactions: u64,
    /// Header time of the first event of its first transaction.
    pub first_event_time: Timestamp,
    /// Header time of the last event of its last transaction.
    pub last_event_time: Timestamp,
    /// Server id of the format description event (the server that streamed it).
    pub server_id: u32,
    /// Server version of the format description event.
    pub server_version: String,
    /// Why the stream before this segment is incomplete, when it is.
    pub gap_before: Option<String>,
}

/// The transaction being received. Its events go straight into the open segment, after the segment's
/// `committed` bytes; one that never ends is cut off again.
struct OpenTrx {
    tx: Txid,
    /// A transaction the archive holds already: its events are not kept.
    duplicate: bool,
    first_time: u32,
    /// MariaDB standalone, or MySQL's first query not yet seen.
    ends_at_next_query: bool,
    mysql_awaiting_first_query: bool,
}

struct OpenSegment {
    bytes: Spool,
    /// Bytes of whole transactions (and the head); past them, the open transaction's events.
    committed: usize,
    start: GtidState,
    first: Option<Txid>,
    last: Option<Txid>,
    transactions: u64,
    first_time: u32,
    last_time: u32,
    opened: Instant,
    gap_before: Option<String>,
}

/// Size and age bounds of a segment.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Seal once this many bytes are held.
    pub max_bytes: usize,
    /// Seal once the first transaction is this old (by the archiver's clock).
    pub max_age: Duration,
}

/// Cuts a stream into segments (see the module documentation).
pub struct SegmentBuilder {
    bounds: Bounds,
    state: GtidState,
    fde: Option<Vec<u8>>,
    server_id: u32,
    server_version: String,
    trx: Option<OpenTrx>,
    seg: Option<OpenSegment>,
    sealed: Vec<Sealed>,
    pending_gap: Option<String>,
    duplicates: u64,
}

fn time(secs: u32) -> Timestamp {
    Timestamp::from_second(i64::from(secs)).ok().unwrap_or_default()
}

fn is_query(body: &[u8], words: &[&str]) -> bool {
    event::with_query(body, |q| {
        let q = q.trim().trim_end_matches(';').trim();
        words.iter().any(|w| q.eq_ignore_ascii_case(w))
    })
    .unwrap_or(false)
}

impl SegmentBuilder {
    /// A builder continuing from `state` (the archive's end, or where the stream starts).
    pub fn new(state: GtidState, bounds: Bounds) -> Self {
        Self {
            bounds,
            state,
            fde: None,
            server_id: 0,
            server_version: String::new(),
            trx: None,
            seg: None,
            sealed: Vec::new(),
            pending_gap: None,
            duplicates: 0,
        }
    }

    /// The state after the last transaction accepted (sealed or not).
    pub fn state(&self) -> &GtidState {
        &self.state
    }

    /// Duplicates dropped so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// When the oldest transaction not yet sealed was accepted.
    pub fn oldest_unsealed(&self) -> Option<Instant> {
        self.seg.as_ref().filter(|s| s.transactions > 0).map(|s| s.opened)
    }

    /// Feeds one event; `now` is the archiver's clock.
    pub fn feed(&mut self, ev: &RawEvent<'_>, now: Instant) -> Result<(), SegmentError> {
        match event::decode(ev.kind, ev.server_id, ev.body)? {
            Some(StateEvent::FormatDescription { server_version }) => {
                // A new file of the stream: a transaction cannot span it.
                self.abandon()?;
                self.server_version = server_version;
                self.server_id = ev.server_id;
                self.fde = Some(ev.bytes.to_vec());
            }
            Some(StateEvent::MariaGtid { gtid, standalone }) => {
                self.open(Txid::Maria(gtid), ev, standalone, false, now)?
            }
            Some(StateEvent::MysqlGtid { sid, gno }) => self.open(Txid::Mysql(sid, gno), ev, false, true, now)?,
            // They describe the stream, not the data.
            Some(StateEvent::MariaGtidList(_) | StateEvent::MysqlPreviousGtids(_)) => {}
            None if matches!(
                ev.kind,
                kind::ROTATE | kind::HEARTBEAT | kind::STOP | kind::MARIA_CHECKPOINT | kind::MYSQL_ANONYMOUS_GTID
            ) => {}
            None => {
                let Some(trx) = self.trx.as_mut() else { return Ok(()) };
                if !trx.duplicate
                    && let Some(seg) = self.seg.as_mut()
                {
                    seg.bytes.append(ev.bytes)?;
                }
                let ends = match ev.kind {
                    kind::XID => true,
                    kind::QUERY if trx.mysql_awaiting_first_query => {
                        trx.mysql_awaiting_first_query = false;
                        !is_query(ev.body, &["BEGIN"])
                    }
                    kind::QUERY => trx.ends_at_next_query || is_query(ev.body, &["COMMIT", "ROLLBACK"]),
                    _ => false,
                };
                if ends {
                    self.commit(ev.timestamp, now)?;
                }
            }
        }
        self.tick(now);
        Ok(())
    }

    /// Opens transaction `tx` at its GTID event `ev`. What the archive does with it is decided here,
    /// from its GTID alone: a duplicate is dropped, a jump in its domain is a gap (the open segment is
    /// sealed first), and its events then go straight into the open segment.
    fn open(
        &mut self,
        tx: Txid,
        ev: &RawEvent<'_>,
        standalone: bool,
        mysql: bool,
        now: Instant,
    ) -> Result<(), SegmentError> {
        self.abandon()?;
        match (&self.state, &tx) {
            (GtidState::Mariadb { .. }, Txid::Maria(_)) | (GtidState::Mysql { .. }, Txid::Mysql(..)) => {}
            (GtidState::Mariadb { .. }, _) => return Err(SegmentError::Flavor { got: "MySQL", state: "MariaDB" }),
            (GtidState::Mysql { .. }, _) => return Err(SegmentError::Flavor { got: "MariaDB", state: "MySQL" }),
        }
        let duplicate = holds_tx(&self.state, &tx);
        if !duplicate
            && let (GtidState::Mariadb { binlog_pos, .. }, Txid::Maria(g)) = (&self.state, &tx)
            && let Some(prev) = binlog_pos.domain(g.domain)
            && g.seq > prev.seq + 1
        {
            let reason = format!(
                "the stream jumps from {prev} to {g} in domain {}: transactions {}..{} are missing",
                g.domain,
                prev.seq + 1,
                g.seq - 1
            );
            self.mark_gap(reason);
        }
        if !duplicate {
            let Some(fde) = self.fde.as_ref() else { return Err(SegmentError::NoFormatDescription) };
            if self.seg.is_none() {
                let mut bytes = Spool::new();
                bytes.append(MAGIC)?;
                bytes.append(fde)?;
                self.seg = Some(OpenSegment {
                    committed: bytes.len(),
                    bytes,
                    start: self.state.clone(),
                    first: None,
                    last: None,
                    transactions: 0,
                    first_time: ev.timestamp,
                    last_time: ev.timestamp,
                    opened: now,
                    gap_before: self.pending_gap.take(),
                });
            }
            if let Some(seg) = self.seg.as_mut() {
                seg.bytes.append(ev.bytes)?;
            }
        }
        self.trx = Some(OpenTrx {
            tx,
            duplicate,
            first_time: ev.timestamp,
            ends_at_next_query: standalone,
            mysql_awaiting_first_query: mysql,
        });
        Ok(())
    }

    /// Cuts the open transaction's events off the open segment: it will not end in this stream.
    fn abandon(&mut self) -> Result<(), SegmentError> {
        if self.trx.take().is_some_and(|t| !t.duplicate)
            && let Some(seg) = self.seg.as_mut()
        {
            seg.bytes.truncate(seg.committed)?;
        }
        Ok(())
    }

    fn commit(&mut self, last_time: u32, _now: Instant) -> Result<(), SegmentError> {
        let Some(trx) = self.trx.take() else { return Ok(()) };
        if trx.duplicate {
            self.duplicates += 1;
            tracing::debug!(gtid = %trx.tx, "transaction already archived; dropped");
            return Ok(());
        }
        let Some(seg) = self.seg.as_mut() else { return Ok(()) };
        seg.committed = seg.bytes.len();
        if seg.transactions == 0 {
            seg.first_time = trx.first_time;
        }
        seg.first.get_or_insert_with(|| trx.tx.clone());
        seg.last = Some(trx.tx.clone());
        seg.transactions += 1;
        seg.last_time = last_time.max(seg.last_time);
        apply_tx(&mut self.state, &trx.tx);
        Ok(())
    }

    /// Records that the stream is incomplete before the next transaction: the open segment is sealed
    /// and the next one carries `reason`.
    pub fn mark_gap(&mut self, reason: String) {
        tracing::warn!(%reason, "gap in the binary-log stream");
        self.seal();
        self.pending_gap = Some(reason);
    }

    /// Continues from `state` after the stream could not resume where it was (`reason`): a gap.
    /// Transactions `state` and the archive both hold are then dropped as duplicates.
    pub fn restart_from(&mut self, state: &GtidState, reason: String) -> Result<(), SegmentError> {
        self.abandon()?;
        self.mark_gap(reason);
        if let (GtidState::Mariadb { binlog_pos: ours, .. }, GtidState::Mariadb { binlog_pos: theirs, .. }) =
            (&mut self.state, state)
        {
            for g in theirs.gtids() {
                if !ours.contains(g) {
                    ours.apply(*g);
                }
            }
        } else if let (GtidState::Mysql { executed: ours, .. }, GtidState::Mysql { executed: theirs, .. }) =
            (&mut self.state, state)
        {
            *ours = ours.union(theirs);
        }
        Ok(())
    }

    /// Drops the open transaction (the stream broke in its middle; the server sends it again).
    pub fn drop_partial(&mut self) -> Result<(), SegmentError> {
        self.abandon()
    }

    /// Seals the open segment if a bound is reached, between transactions (a segment holds whole ones).
    pub fn tick(&mut self, now: Instant) {
        if self.trx.as_ref().is_some_and(|t| !t.duplicate) {
            return;
        }
        if let Some(seg) = &self.seg
            && (seg.committed >= self.bounds.max_bytes || now.duration_since(seg.opened) >= self.bounds.max_age)
        {
            self.seal();
        }
    }

    /// Seals the open segment, if it holds a transaction. An open transaction's events, if any, are
    /// not part of it: the transaction is abandoned (only [`Self::mark_gap`] seals mid-stream, before
    /// the transaction it is called for has written anything).
    pub fn seal(&mut self) {
        let Some(mut seg) = self.seg.take() else { return };
        if self.trx.take_if(|t| !t.duplicate).is_some() && seg.bytes.truncate(seg.committed).is_err() {
            tracing::warn!("could not cut an open transaction off a segment; the segment is not stored");
            return;
        }
        let (Some(first), Some(last)) = (seg.first, seg.last) else { return };
        self.sealed.push(Sealed {
            bytes: seg.bytes,
            start: seg.start,
            end: self.state.clone(),
            first,
            last,
            transactions: seg.transactions,
            first_event_time: time(seg.first_time),
            last_event_time: time(seg.last_time),
            server_id: self.server_id,
            server_version: self.server_version.clone(),
            gap_before: seg.gap_before,
        });
    }

    /// Takes the sealed segments, oldest first.
    pub fn take_sealed(&mut self) -> Vec<Sealed> {
        std::mem::take(&mut self.sealed)
    }

    /// When the open segment must be sealed by age, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.seg.as_ref().map(|s| s.opened + self.bounds.max_age)
    }
}

#[cfg(test)]
mod tests;
