//! The continuous binary-log archiver (`agent binlog archive`): a long-running replica connection
//! that stores every transaction in the [`crate::archive`] within seconds of its commit.
//!
//! It registers as a replica with its own server id and asks for the stream after the archive's last
//! stored position (MariaDB: `@slave_connect_state`, with the GTID capability so real GTID events
//! arrive, and `@slave_gtid_strict_mode` so a position the server cannot continue from is an error,
//! never a silent jump). Events go through a [`SegmentBuilder`]; a segment is stored when it holds
//! `max_bytes` or its first transaction is `max_age` old, and whatever is whole is stored at once when
//! the connection breaks — a server that dies loses nothing the archiver had received.
//!
//! After a restart the archive's newest index entry says where to resume: nothing is stored twice and
//! nothing is skipped. When the server cannot continue from there (purged binary logs, a failover to
//! a server without that history), the archiver records a gap, resumes from the oldest binary log the
//! server still has, and reports the gap; restores refuse to cross it unless forced.
//!
//! Its state is served as JSON on `/status` and as Prometheus metrics on `/metrics`. MySQL servers
//! are refused for now: only the MariaDB replication request is implemented and tested.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use mysql_async::prelude::Queryable;

use crate::archive;
use crate::archive::ArchiveError;
use crate::archive::segment::{Bounds, RawEvent, SegmentBuilder, SegmentError};
use crate::archive::timeline::state_text;
use crate::format::archive_index::Gap;
use crate::format::archiver_status::{ArchiverState, ArchiverStatus};
use crate::mysql::position::{Flavor, GtidState};
use crate::mysql::server::{ServerConfig, ServerError};
use crate::storage::Storage;

/// MariaDB's "cannot continue from the requested position" error.
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
/// Heartbeat event type: the server has nothing more to send.
const HEARTBEAT: u8 = 27;

/// Errors that stop the archiver.
#[derive(Debug, thiserror::Error)]
pub enum ArchiverError {
    /// The archive failed (storage, a conflicting archiver, a damaged index).
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The server could not be asked.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The stream's content is not usable.
    #[error("the binary-log stream from {endpoint}: {source}")]
    Stream { endpoint: String, source: SegmentError },
    /// The server is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// The status endpoint cannot listen.
    #[error("listening on {addr} for the status endpoint: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// How to run the archiver.
#[derive(Debug, Clone)]
pub struct ArchiverOptions {
    /// The server to stream from.
    pub server: ServerConfig,
    /// Archive name in storage.
    pub archive: String,
    /// Segment bounds.
    pub bounds: Bounds,
    /// Server id this replica registers with (unique among the server's replicas).
    pub replica_id: u32,
    /// Where an empty archive starts; `None`: at the start of the oldest binary log on the server.
    pub from: Option<GtidState>,
    /// Heartbeat period asked of the server while idle.
    pub heartbeat: Duration,
    /// Address of the status endpoint, if any.
    pub listen: Option<SocketAddr>,
}

/// The default replica server id of an archive: FNV-1a of its name, in 3000000000..3999999999, far from
/// the small ids servers usually have.
pub fn default_replica_id(archive: &str) -> u32 {
    3_000_000_000 + (crate::stable_hash(&[archive.as_bytes()]) % 1_000_000_000) as u32
}

type Shared = Arc<Mutex<ArchiverStatus>>;

fn update(status: &Shared, f: impl FnOnce(&mut ArchiverStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// How one connection ended.
enum StreamEnd {
    /// Asked to stop.
    Stopped,
    /// The server cannot continue from the position asked.
    CannotContinue(String),
    /// The connection broke.
    Broken(String),
}

/// Runs until `stop` is set; returns the final status.
pub async fn run(
    storage: &Storage,
    opts: &ArchiverOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<ArchiverStatus, ArchiverError> {
    archive::validate_name(&opts.archive)?;
    let status: Shared = Arc::new(Mutex::new(ArchiverStatus {
        state: ArchiverState::Starting,
        archive: opts.archive.clone(),
        ..Default::default()
    }));
    if let Some(addr) = opts.listen {
        crate::archive::http::serve_status(addr, status.clone()).await?;
    }
    let timeline = archive::timeline::read_timeline(storage, &opts.archive).await?;
    for gap in &timeline.gaps {
        tracing::warn!(archive = %opts.archive, %gap, "gap in the archive");
    }
    let next_seq = timeline.newest.as_ref().map_or(0, |s| s.seq + 1);
    let resume = match (&timeline.newest, &opts.from) {
        (Some(newest), _) => newest.end.clone(),
        (None, Some(from)) => from.clone(),
        (None, None) => oldest_binlog_start(&opts.server).await?,
    };
    update(&status, |s| {
        s.gaps = timeline.gaps.clone();
        s.archived_position = state_text(&resume);
        s.last_segment = timeline.newest.as_ref().map(|n| n.seq);
        s.last_event_time = timeline.newest.as_ref().map(|n| n.last_event_time);
        s.server_id = timeline.newest.as_ref().map(|n| n.server_id);
    });
    tracing::info!(archive = %opts.archive, from = %state_text(&resume), segment = next_seq, "archiving binary logs");
    let builder = SegmentBuilder::new(resume, opts.bounds);
    let mut run = Session { storage, opts, builder, next_seq, status: status.clone(), stop };
    let mut backoff = Duration::from_secs(1);
    loop {
        if *run.stop.borrow() {
            break;
        }
        let started = Instant::now();
        let end = run.stream_once().await?;
        // Whatever is whole is stored now: the server may be gone for good.
        let spill = |source| ArchiverError::Stream { endpoint: opts.server.endpoint(), source };
        run.builder.drop_partial().map_err(spill)?;
        run.builder.seal();
        run.store_sealed().await?;
        match end {
            StreamEnd::Stopped => break,
            StreamEnd::CannotContinue(reason) => {
                let oldest = oldest_binlog_start(&opts.server).await?;
                let gap = format!(
                    "the server cannot continue after {} ({reason}); resuming at the start of its oldest binary log, \
                     {}",
                    state_text(run.builder.state()),
                    state_text(&oldest)
                );
                run.builder.restart_from(&oldest, gap.clone()).map_err(spill)?;
                let next_seq = run.next_seq;
                update(&status, |s| {
                    s.gaps.push(Gap { after_seq: next_seq.checked_sub(1), before_seq: next_seq, reason: gap });
                });
            }
            StreamEnd::Broken(reason) => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(archive = %opts.archive, error = %reason, retry_in = ?backoff, "binary-log stream lost");
                let lost_at = Timestamp::now();
                update(&status, |s| {
                    s.state = ArchiverState::Reconnecting;
                    s.reconnects += 1;
                    s.last_error = Some(reason);
                    s.unstored_since.get_or_insert(lost_at);
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = run.stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    update(&status, |s| s.state = ArchiverState::Stopped);
    let last = status.lock().map(|s| s.at(Timestamp::now())).unwrap_or_default();
    Ok(last)
}

/// The GTID state at the start of the server's oldest binary log.
async fn oldest_binlog_start(server: &ServerConfig) -> Result<GtidState, ArchiverError> {
    let q =
        |operation: &'static str| move |source| ServerError::Query { endpoint: server.endpoint(), operation, source };
    let mut conn = server.connect().await?;
    let version: String =
        conn.query_first("SELECT @@version").await.map_err(q("SELECT @@version"))?.unwrap_or_default();
    if Flavor::from_version(&version) != Flavor::Mariadb {
        return Err(ArchiverError::Unsupported(format!(
            "continuous archiving supports MariaDB only for now; {} runs {version}; take binlog incrementals \
             (--method binlog) instead",
            server.endpoint()
        )));
    }
    let first: Option<String> = conn
        .query_first("SHOW BINARY LOGS")
        .await
        .map_err(q("SHOW BINARY LOGS (is the binary log enabled?)"))?
        .map(|row: mysql_async::Row| row.get::<String, usize>(0).unwrap_or_default());
    let Some(first) = first else {
        return Err(ArchiverError::Unsupported(format!("{} has no binary logs", server.endpoint())));
    };
    let pos: Option<String> =
        conn.exec_first("SELECT BINLOG_GTID_POS(?, 4)", (first,)).await.map_err(q("BINLOG_GTID_POS"))?;
    let _ = conn.disconnect().await;
    let pos = pos.unwrap_or_default().parse().map_err(|e: crate::mysql::gtid::GtidError| {
        ArchiverError::Unsupported(format!("{}: the oldest binary log's position: {e}", server.endpoint()))
    })?;
    Ok(GtidState::Mariadb { binlog_pos: pos, current_pos: None, purged: None })
}

/// The archiver's state across connections.
struct Session<'a> {
    storage: &'a Storage,
    opts: &'a ArchiverOptions,
    builder: SegmentBuilder,
    next_seq: u64,
    status: Shared,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Session<'_> {
    /// One connection: streams into the self.builder, storing sealed segments, until it breaks or `stop`.
    async fn stream_once(&mut self) -> Result<StreamEnd, ArchiverError> {
        let GtidState::Mariadb { binlog_pos, .. } = self.builder.state().clone() else {
            return Err(ArchiverError::Unsupported("continuous archiving supports MariaDB only for now".into()));
        };
        let broken = |what: &str, e: mysql_async::Error| match &e {
            mysql_async::Error::Server(s) if s.code == ER_MASTER_FATAL_ERROR_READING_BINLOG => {
                StreamEnd::CannotContinue(s.message.clone())
            }
            _ => StreamEnd::Broken(format!("{what}: {e}")),
        };
        let mut conn = match self.opts.server.connect().await {
            Ok(c) => c,
            Err(e) => return Ok(StreamEnd::Broken(e.to_string())),
        };
        let heartbeat_ns = self.opts.heartbeat.as_nanos();
        let setup = [
            "SET @mariadb_slave_capability = 4".to_string(),
            format!("SET @slave_connect_state = '{binlog_pos}'"),
            "SET @slave_gtid_strict_mode = 1".to_string(),
            "SET @slave_gtid_ignore_duplicates = 0".to_string(),
            format!("SET @master_heartbeat_period = {heartbeat_ns}"),
        ];
        for sql in setup {
            if let Err(e) = conn.query_drop(&sql).await {
                return Ok(broken("preparing the replication connection", e));
            }
        }
        let request = mysql_async::BinlogStreamRequest::new(self.opts.replica_id).with_filename(b"").with_pos(4u64);
        let mut stream = match conn.get_binlog_stream(request).await {
            Ok(s) => s,
            Err(e) => return Ok(broken("requesting the binary-log stream", e)),
        };
        update(&self.status, |s| {
            s.state = ArchiverState::Streaming;
            s.last_error = None;
        });
        tracing::info!(from = %binlog_pos, "streaming");
        let silence = self.opts.heartbeat * 3 + Duration::from_secs(5);
        let mut last_heard = Instant::now();
        let mut bytes = Vec::with_capacity(64 * 1024);
        loop {
            let wake = self.builder.deadline().unwrap_or(last_heard + silence).min(last_heard + silence);
            // An event already waiting (in a buffer, while a segment was being stored) may have been sent
            // long ago; only one the loop waited for was sent after `waiting_since`.
            let (next, waiting_since) = match stream.next().now_or_never() {
                Some(event) => (Ok(event), None),
                None => {
                    let since = Timestamp::now();
                    let next = tokio::select! {
                        _ = self.stop.changed() => return Ok(StreamEnd::Stopped),
                        r = tokio::time::timeout_at(wake.into(), stream.next()) => r,
                    };
                    (next, Some(since))
                }
            };
            let now = Instant::now();
            match next {
                Err(_) if now.duration_since(last_heard) >= silence => {
                    return Ok(StreamEnd::Broken(format!("no event or heartbeat for {} s", silence.as_secs())));
                }
                Err(_) => self.builder.tick(now),
                Ok(None) => return Ok(StreamEnd::Broken("the server closed the stream".into())),
                Ok(Some(Err(e))) => return Ok(broken("reading the binary-log stream", e)),
                Ok(Some(Ok(ev))) => {
                    last_heard = now;
                    let header = ev.header();
                    bytes.clear();
                    if let Err(e) = ev.write(mysql_async::binlog::BinlogVersion::Version4, &mut bytes) {
                        return Ok(StreamEnd::Broken(format!("re-encoding an event: {e}")));
                    }
                    let raw = RawEvent {
                        kind: header.event_type_raw(),
                        timestamp: header.timestamp(),
                        server_id: header.server_id(),
                        body: ev.data(),
                        bytes: &bytes,
                    };
                    let had_unsealed = self.builder.oldest_unsealed().is_some();
                    self.builder
                        .feed(&raw, now)
                        .map_err(|source| ArchiverError::Stream { endpoint: self.opts.server.endpoint(), source })?;
                    let received = Timestamp::now();
                    let unsealed = self.builder.oldest_unsealed().is_some();
                    let duplicates = self.builder.duplicates();
                    update(&self.status, |s| {
                        // The server sends a heartbeat when it has nothing more: caught up when it was
                        // sent, which is after the loop began to wait for it, and unknown for one that
                        // was already waiting (the next heartbeat tells).
                        if raw.kind == HEARTBEAT
                            && let Some(since) = waiting_since
                        {
                            s.caught_up_at = Some(since);
                            if !unsealed {
                                s.unstored_since = None;
                            }
                        }
                        if !had_unsealed && unsealed {
                            s.unstored_since.get_or_insert(received);
                        }
                        s.duplicates = duplicates;
                    });
                }
            }
            self.store_sealed().await?;
        }
    }

    /// Stores every sealed segment, retrying storage failures until they succeed or `stop`.
    async fn store_sealed(&mut self) -> Result<(), ArchiverError> {
        for sealed in self.builder.take_sealed() {
            let mut wait = Duration::from_secs(1);
            let prepared = archive::prepare_segment(self.storage, &self.opts.archive, self.next_seq, sealed).await?;
            let index = loop {
                match archive::store_segment(self.storage, &self.opts.archive, &prepared).await {
                    Ok(()) => break prepared.index.clone(),
                    Err(e @ ArchiveError::Conflict { .. }) => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(archive = %self.opts.archive, segment = self.next_seq, error = %e, retry_in = ?wait, "storing a segment failed");
                        update(&self.status, |s| s.last_error = Some(e.to_string()));
                        if *self.stop.borrow() && wait > Duration::from_secs(30) {
                            return Err(e.into());
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            };
            self.next_seq += 1;
            tracing::info!(
                archive = %self.opts.archive,
                segment = index.seq,
                first = %index.first_gtid,
                last = %index.last_gtid,
                transactions = index.transactions,
                bytes = index.bytes,
                "segment stored"
            );
            let unsealed = self.builder.oldest_unsealed().is_some();
            update(&self.status, |s| {
                if let Some(reason) = &index.gap_before
                    && !s.gaps.iter().any(|g| g.before_seq == index.seq)
                {
                    s.gaps.push(Gap {
                        after_seq: index.seq.checked_sub(1),
                        before_seq: index.seq,
                        reason: reason.clone(),
                    });
                }
                if s.server_id.is_some_and(|id| id != index.server_id) {
                    tracing::warn!(from = ?s.server_id, to = index.server_id, "the stream now comes from another server");
                }
                s.server_id = Some(index.server_id);
                s.archived_position = state_text(&index.end);
                s.last_event_time = Some(index.last_event_time);
                s.last_segment_time = Some(index.archived_at);
                s.last_segment = Some(index.seq);
                s.segments += 1;
                s.transactions += index.transactions;
                s.last_error = None;
                if !unsealed && s.state == ArchiverState::Streaming {
                    s.unstored_since = None;
                }
            });
        }
        Ok(())
    }
}
