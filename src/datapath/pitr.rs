//! Point-in-time restore (MariaDB): restore the newest full backup before the target, then replay the
//! binary logs of the incrementals that follow it, up to and including the target, on a private server.
//!
//! The chain is chosen here, purely: the newest full backup whose position does not yet hold the target
//! GTID (or that completed at or before the target time), then the incrementals that build on it one
//! after the other (`incremental.base`) until one reaches the target. A target the chain does not reach
//! is refused: it lies outside what the backups can restore.
//!
//! The replay ([`replay`]) starts `mariadbd` on the restored datadir with no network, no grant checks
//! and no binary log. What it replays is decided from the binary logs' own events, read with this
//! crate's parser ([`crate::mysql::binlog::file::maria_transactions`]), never from a tool's text (a
//! statement's text could imitate an event header): every transaction after the full backup's GTID
//! position, up to and including the target GTID (or the last one that began at or before the target
//! second). The file that holds the end is cut just before the first transaction past it (these are
//! the replay's own downloaded copies), and `mariadb-binlog --start-position=<position>` of the files
//! is piped into the `mariadb` client. The position reached — the full backup's, advanced by exactly
//! those GTIDs — is stored as `gtid_slave_pos`, and the server is shut down cleanly. Both tools'
//! standard error is read while they run (a replay that warns a lot never stalls) and kept redacted
//! of quoted values: a client error quotes row data, which must not reach a status or an Event.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    str::FromStr,
};

use jiff::Timestamp;

use crate::archive::timeline::{Reach, Timeline};
use crate::format::archive_index::SegmentIndex;
use crate::format::manifest::{Manifest, MethodKind};
use crate::mysql::gtid::{MariaGtid, MariaGtidPos};
use crate::mysql::position::GtidState;
use crate::mysql::private_server::{PrivateServer, PrivateServerError, PrivateServerOptions};
use crate::mysql::tools::{Redaction, collect_output, tail_text};

/// What to restore to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Up to and including this transaction.
    Gtid(MariaGtid),
    /// Up to and including the last transaction at or before this time (second precision, as binary
    /// logs record it).
    Time(Timestamp),
}

/// Errors of point-in-time restore.
#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    /// The target does not parse.
    #[error("--until {0:?} is neither a MariaDB GTID (domain-server-sequence) nor an RFC 3339 time")]
    Target(String),
    /// No full backup lies before the target.
    #[error("no full backup before {0}: the target is older than every backup")]
    NoFullBefore(String),
    /// The incrementals after the full backup do not reach the target.
    #[error(
        "{target} is past what the backups reach: after full backup {full}, the incrementals end at {reached}; \
         take an incremental backup first"
    )]
    NotReached { target: String, full: String, reached: String },
    /// Neither the incrementals nor the archive reach the target.
    #[error(
        "{target} is past what the backups reach: after full backup {full}, the incrementals end at {reached}, and {archive}"
    )]
    NotCovered { target: String, full: String, reached: String, archive: crate::archive::timeline::CoverError },
    /// A process of the replay failed.
    #[error("{what}: {detail}")]
    Replay { what: String, detail: String },
    /// The replay server failed.
    #[error(transparent)]
    Server(#[from] PrivateServerError),
}

impl FromStr for Target {
    type Err = PitrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(t) = s.parse::<Timestamp>() {
            return Ok(Self::Time(t));
        }
        s.parse::<MariaGtid>().map(Self::Gtid).map_err(|_| PitrError::Target(s.to_string()))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gtid(g) => write!(f, "GTID {g}"),
            Self::Time(t) => write!(f, "{t}"),
        }
    }
}

fn end_pos(m: &Manifest) -> Option<&MariaGtidPos> {
    match &m.positions.gtid {
        Some(GtidState::Mariadb { binlog_pos, .. }) => Some(binlog_pos),
        _ => None,
    }
}

fn reaches(m: &Manifest, target: &Target) -> bool {
    match target {
        Target::Gtid(g) => end_pos(m).is_some_and(|p| p.contains(g)),
        Target::Time(t) => m.completed_at >= *t,
    }
}

/// The full backup and the incrementals to replay, oldest first, for `target`, among `manifests`.
pub fn plan<'a>(manifests: &'a [Manifest], target: &Target) -> Result<(&'a Manifest, Vec<&'a Manifest>), PitrError> {
    let p = plan_with_archive(manifests, target, None, false)?;
    Ok((p.full, p.incrementals))
}

/// What a point-in-time restore replays.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The full backup restored.
    pub full: &'a Manifest,
    /// Incrementals replayed after it, oldest first.
    pub incrementals: Vec<&'a Manifest>,
    /// Archive segments replayed after those, in order.
    pub segments: Vec<&'a SegmentIndex>,
    /// Where the replay of the segments starts: the end of the full backup or of the last incremental.
    pub segments_from: Option<MariaGtidPos>,
    /// Gaps crossed (only when forced): their transactions are missing from the result.
    pub gaps_crossed: Vec<crate::format::archive_index::Gap>,
}

fn describe_end(m: &Manifest) -> String {
    match end_pos(m) {
        Some(p) => format!("{p} ({})", m.completed_at),
        None => m.completed_at.to_string(),
    }
}

/// The full backup, then the incrementals that build on it as far as they reach `target`, then — if
/// they do not reach it — the segments of `archive` (name and timeline) after them. Gaps in the
/// archive are crossed only with `force`.
pub fn plan_with_archive<'a>(
    manifests: &'a [Manifest],
    target: &Target,
    archive: Option<(&str, &'a Timeline)>,
    force: bool,
) -> Result<Plan<'a>, PitrError> {
    let full = manifests
        .iter()
        .filter(|m| m.method != MethodKind::Binlog)
        .filter(|m| match target {
            Target::Gtid(g) => end_pos(m).is_some_and(|p| !p.contains(g)),
            Target::Time(t) => m.completed_at <= *t,
        })
        .max_by_key(|m| (m.completed_at, m.backup_id.clone()))
        .ok_or_else(|| PitrError::NoFullBefore(target.to_string()))?;
    let mut chain = Vec::new();
    let mut last = full;
    while !reaches(last, target) || std::ptr::eq(last, full) {
        let next = manifests
            .iter()
            .filter(|m| m.method == MethodKind::Binlog)
            .filter(|m| m.incremental.as_ref().and_then(|i| i.base.as_deref()) == Some(last.backup_id.as_str()))
            .max_by_key(|m| (m.completed_at, m.backup_id.clone()));
        match next {
            Some(n) => {
                chain.push(n);
                last = n;
            }
            None => break,
        }
    }
    let plan = |segments, segments_from, gaps_crossed| Plan {
        full,
        incrementals: chain.clone(),
        segments,
        segments_from,
        gaps_crossed,
    };
    if reaches(last, target) && !std::ptr::eq(last, full) {
        return Ok(plan(Vec::new(), None, Vec::new()));
    }
    let Some((name, timeline)) = archive else {
        return Err(PitrError::NotReached {
            target: target.to_string(),
            full: full.backup_id.clone(),
            reached: describe_end(last),
        });
    };
    let from = last.positions.gtid.clone().ok_or_else(|| PitrError::NoFullBefore(target.to_string()))?;
    let reach = match target {
        Target::Gtid(g) => Reach::Gtid(*g),
        // Binary logs keep whole seconds: a segment ending after the target's second proves that every
        // transaction of that second is in the segments up to it.
        Target::Time(t) => Reach::Time(t.with_nanosecond_floor() + jiff::SignedDuration::from_secs(1)),
    };
    match crate::archive::timeline::segments_for(name, timeline, &from, &reach, force) {
        Ok((segments, crossed)) => {
            let GtidState::Mariadb { binlog_pos, .. } = from else {
                return Err(PitrError::NoFullBefore(target.to_string()));
            };
            Ok(plan(segments, Some(binlog_pos), crossed))
        }
        Err(archive) => Err(PitrError::NotCovered {
            target: target.to_string(),
            full: full.backup_id.clone(),
            reached: describe_end(last),
            archive,
        }),
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// Transactions replayed.
    pub transactions: u64,
    /// The position reached: the full backup's, advanced by every replayed GTID.
    pub reached: MariaGtidPos,
}

/// Paths of the server's tools.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `mariadbd`.
    pub server: String,
    /// `mariadb-binlog`.
    pub binlog: String,
    /// `mariadb`.
    pub client: String,
}

fn replay_err(what: &str) -> impl Fn(std::io::Error) -> PitrError + '_ {
    move |e| PitrError::Replay { what: what.to_string(), detail: e.to_string() }
}

/// Starts `cmd` with no input, killed if the replay is dropped; `what` names the step in errors.
fn spawn(cmd: &mut tokio::process::Command, what: &str) -> Result<tokio::process::Child, PitrError> {
    cmd.stdin(Stdio::null()).kill_on_drop(true).spawn().map_err(replay_err(what))
}

/// One `mariadb-binlog` run of a replay: these files, after this position.
#[derive(Debug, Clone)]
pub struct ReplayStep {
    /// Binary log files, in order.
    pub files: Vec<PathBuf>,
    /// Replay the transactions after this position.
    pub from: MariaGtidPos,
}

/// Replays `steps` (in order) onto the restored `datadir`, each after its position, up to `target`.
pub async fn replay(
    datadir: &Path,
    work: &Path,
    steps: &[ReplayStep],
    target: &Target,
    tools: &Tools,
) -> Result<Replayed, PitrError> {
    let server = PrivateServer::start(&PrivateServerOptions {
        tool: tools.server.clone(),
        datadir: datadir.to_path_buf(),
        work: work.to_path_buf(),
        extra_args: Vec::new(),
    })
    .await?;
    let mut replayed = Replayed { transactions: 0, reached: steps.first().map(|s| s.from.clone()).unwrap_or_default() };
    for step in steps.iter().filter(|s| !s.files.is_empty()) {
        if replay_step(server.socket(), step, target, tools, &mut replayed).await? {
            break;
        }
    }
    if let Target::Gtid(g) = target
        && !replayed.reached.contains(g)
    {
        return Err(PitrError::Replay {
            what: format!("the binary logs end before GTID {g}"),
            detail: format!("replay reached {}", replayed.reached),
        });
    }

    // The restored server continues from here as a replica: record the position, then stop cleanly.
    server.exec("setting gtid_slave_pos", &format!("SET GLOBAL gtid_slave_pos = '{}'", replayed.reached)).await?;
    server.shutdown().await?;
    Ok(replayed)
}

/// What one step replays, decided from the files' events: the files (the last one possibly cut), the
/// GTIDs applied, and whether the target's end lies in it (later steps are then not replayed).
#[derive(Debug, Default)]
struct StepPlan {
    files: Vec<PathBuf>,
    cut: Option<(PathBuf, u64)>,
    gtids: Vec<MariaGtid>,
    ends: bool,
}

/// Reads `step`'s files and decides what replaying them after `step.from` up to `target` applies.
fn plan_step(step: &ReplayStep, target: &Target) -> Result<StepPlan, PitrError> {
    let mut plan = StepPlan::default();
    for file in &step.files {
        let (_, txs) = crate::mysql::binlog::file::maria_transactions(file)
            .map_err(|e| PitrError::Replay { what: format!("reading {}", file.display()), detail: e.to_string() })?;
        plan.files.push(file.clone());
        let mut past_target = None;
        for (n, tx) in txs.iter().enumerate() {
            if step.from.contains(&tx.gtid) {
                continue;
            }
            match target {
                Target::Time(t) if i64::from(tx.timestamp) > t.as_second() => past_target = Some(tx.offset),
                Target::Gtid(g) if tx.gtid.domain == g.domain && tx.gtid.seq > g.seq => past_target = Some(tx.offset),
                Target::Gtid(g) if tx.gtid == *g => {
                    plan.gtids.push(tx.gtid);
                    plan.ends = true;
                    if let Some(next) = txs.get(n + 1) {
                        plan.cut = Some((file.clone(), next.offset));
                    }
                    return Ok(plan);
                }
                _ => {}
            }
            if let Some(offset) = past_target {
                plan.cut = Some((file.clone(), offset));
                plan.ends = true;
                return Ok(plan);
            }
            plan.gtids.push(tx.gtid);
        }
    }
    Ok(plan)
}

/// One `mariadb-binlog | mariadb` pipe into the replay server; returns whether the target's end was
/// in this step.
async fn replay_step(
    socket: &Path,
    step: &ReplayStep,
    target: &Target,
    tools: &Tools,
    replayed: &mut Replayed,
) -> Result<bool, PitrError> {
    let plan = {
        let (step, target) = (step.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            let plan = plan_step(&step, &target)?;
            if let Some((file, at)) = &plan.cut {
                let cut = |e: std::io::Error| PitrError::Replay {
                    what: format!("cutting {}", file.display()),
                    detail: e.to_string(),
                };
                std::fs::OpenOptions::new().write(true).open(file).and_then(|f| f.set_len(*at)).map_err(cut)?;
            }
            Ok::<_, PitrError>(plan)
        })
        .await
        .map_err(|e| PitrError::Replay { what: "planning the replay".into(), detail: e.to_string() })??
    };
    if plan.gtids.is_empty() {
        return Ok(plan.ends);
    }
    let mut binlog = crate::mysql::tools::command(&tools.binlog);
    binlog.env("TZ", "UTC").arg(format!("--start-position={}", step.from));
    let mut reader =
        spawn(binlog.args(&plan.files).stdout(Stdio::piped()).stderr(Stdio::piped()), "starting mariadb-binlog")?;
    let mut client = crate::mysql::tools::command(&tools.client)
        .arg(format!("--socket={}", socket.display()))
        .args(["--user=root", "--binary-mode", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(replay_err("starting mariadb"))?;
    let (Some(mut out), Some(mut sink), Some(read_err), Some(apply_err)) =
        (reader.stdout.take(), client.stdin.take(), reader.stderr.take(), client.stderr.take())
    else {
        return Err(PitrError::Replay { what: "connecting mariadb-binlog to mariadb".into(), detail: String::new() });
    };
    let (read_tail, read_task) = collect_output(read_err, "mariadb-binlog", Redaction::Values);
    let (apply_tail, apply_task) = collect_output(apply_err, "mariadb", Redaction::Client);
    let piped = tokio::io::copy(&mut out, &mut sink).await;
    drop((sink, out));
    if piped.is_err() {
        // The client (or its server) is gone: mariadb-binlog would wait for a reader forever.
        let _ = reader.start_kill();
    }
    let read = reader.wait().await.map_err(replay_err("mariadb-binlog"))?;
    let applied = client.wait().await.map_err(replay_err("mariadb"))?;
    let _ = tokio::join!(read_task, apply_task);
    if !applied.success() {
        let detail = tail_text(&apply_tail);
        return Err(PitrError::Replay { what: format!("replaying into the server failed ({applied})"), detail });
    }
    if !read.success() {
        let detail = tail_text(&read_tail);
        return Err(PitrError::Replay { what: format!("mariadb-binlog failed ({read})"), detail });
    }
    piped.map_err(replay_err("feeding mariadb"))?;
    for g in &plan.gtids {
        replayed.reached.apply(*g);
    }
    replayed.transactions += plan.gtids.len() as u64;
    Ok(plan.ends)
}

trait FloorSecond {
    fn with_nanosecond_floor(&self) -> Self;
}

impl FloorSecond for Timestamp {
    fn with_nanosecond_floor(&self) -> Self {
        Timestamp::from_second(self.as_second()).unwrap_or(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{Chunking, FORMAT_VERSION, Incremental, Prepare, Totals};

    fn manifest(id: &str, method: MethodKind, completed: &str, pos: &str, base: Option<&str>) -> Manifest {
        let from = crate::mysql::binlog::range::mariadb("0-1-1").unwrap();
        Manifest {
            format_version: FORMAT_VERSION,
            backup_id: id.into(),
            method,
            started_at: completed.parse().unwrap(),
            completed_at: completed.parse().unwrap(),
            positions: crate::mysql::position::Positions {
                gtid: Some(crate::mysql::binlog::range::mariadb(pos).unwrap()),
                ..Default::default()
            },
            chunking: Chunking { hash: "blake3".into(), compression: "zstd".into(), level: 3, chunk_size: 1 },
            prepare: Prepare::None,
            totals: Totals::default(),
            files: Vec::new(),
            tags: Default::default(),
            incremental: base.map(|b| Incremental { base: Some(b.into()), from }),
            encryption: None,
        }
    }

    fn history() -> Vec<Manifest> {
        vec![
            manifest("f1", MethodKind::Mariabackup, "2026-11-20T02:00:00Z", "0-1-100", None),
            manifest("i1", MethodKind::Binlog, "2026-11-20T12:00:00Z", "0-1-150", Some("f1")),
            manifest("f2", MethodKind::Mariabackup, "2026-11-21T02:00:00Z", "0-1-200", None),
            manifest("i2", MethodKind::Binlog, "2026-11-21T12:00:00Z", "0-1-250", Some("f2")),
            manifest("i3", MethodKind::Binlog, "2026-11-21T18:00:00Z", "0-1-300", Some("i2")),
        ]
    }

    fn ids(plan: (&Manifest, Vec<&Manifest>)) -> (String, Vec<String>) {
        (plan.0.backup_id.clone(), plan.1.iter().map(|m| m.backup_id.clone()).collect())
    }

    #[test]
    fn targets_parse() {
        assert_eq!("0-1-42".parse::<Target>().unwrap(), Target::Gtid("0-1-42".parse().unwrap()));
        assert!(
            matches!("2026-11-22T10:00:00+01:00".parse::<Target>().unwrap(), Target::Time(t) if t.to_string() == "2026-11-22T09:00:00Z")
        );
        assert_eq!(
            "yesterday".parse::<Target>().unwrap_err().to_string(),
            "--until \"yesterday\" is neither a MariaDB GTID (domain-server-sequence) nor an RFC 3339 time"
        );
    }

    #[test]
    fn the_newest_full_before_the_target_and_the_incrementals_that_reach_it() {
        let h = history();
        let gtid = |g: &str| Target::Gtid(g.parse().unwrap());
        assert_eq!(ids(plan(&h, &gtid("0-1-120")).unwrap()), ("f1".into(), vec!["i1".into()]));
        assert_eq!(ids(plan(&h, &gtid("0-1-260")).unwrap()), ("f2".into(), vec!["i2".into(), "i3".into()]));
        let time = |t: &str| Target::Time(t.parse().unwrap());
        assert_eq!(ids(plan(&h, &time("2026-11-21T10:00:00Z")).unwrap()), ("f2".into(), vec!["i2".into()]));
        assert_eq!(
            plan(&h, &gtid("0-1-301")).unwrap_err().to_string(),
            "GTID 0-1-301 is past what the backups reach: after full backup f2, the incrementals end at 0-1-300 \
             (2026-11-21T18:00:00Z); take an incremental backup first"
        );
        assert_eq!(
            plan(&h, &time("2026-11-19T00:00:00Z")).unwrap_err().to_string(),
            "no full backup before 2026-11-19T00:00:00Z: the target is older than every backup"
        );
        // Between f1's end and f2, but i1 ends before the target: f1's chain does not reach it.
        assert!(matches!(plan(&h, &gtid("0-1-180")), Err(PitrError::NotReached { .. })));
    }
}
