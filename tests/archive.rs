//! Continuous binary-log archiving (`agent binlog archive`) against a real MariaDB and the S3 server:
//! the archive follows the server within seconds, survives being killed without losing or repeating a
//! transaction, and restores to a GTID and to a time exactly; a deleted segment or purged binary logs
//! are gaps that are reported and that block a restore across them unless forced.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A running archiver process.
struct Archiver {
    child: tokio::process::Child,
    port: u16,
}

impl Archiver {
    fn start(db: &MariaDb, st: &[String], env: &[(String, String)]) -> Self {
        let port = free_port();
        let a = [
            args(&["binlog", "archive", "--mysql-url", &db.url(), "--archive", "shop", "--segment-seconds", "1"]),
            args(&["--listen", &format!("127.0.0.1:{port}")]),
            st.to_vec(),
        ]
        .concat();
        Self { child: agent_command(&a, env).spawn().expect("start the archiver"), port }
    }

    /// `/status`, once the endpoint answers.
    async fn status(&self) -> serde_json::Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                s.write_all(b"GET /status HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
                let mut text = String::new();
                s.read_to_string(&mut text).await.unwrap();
                let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
                return serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
            }
            assert!(Instant::now() < deadline, "the archiver's status endpoint did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until everything the server wrote is archived.
    async fn caught_up(&self, db: &MariaDb) -> serde_json::Value {
        let want = db.value("SELECT @@gtid_binlog_pos").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status().await;
            if s["archivedPosition"] == want.as_str() {
                return s;
            }
            assert!(Instant::now() < deadline, "archive stuck at {s}, server at {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it with SIGTERM; its run.
    async fn stop(self) -> AgentRun {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let out = self.child.wait_with_output().await.unwrap();
        AgentRun {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Kills it with SIGKILL.
    async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

fn ids(rows: &[Vec<String>]) -> Vec<u64> {
    rows.iter().map(|r| r[0].parse().unwrap()).collect()
}

fn restore_args(st: &[String], target: &std::path::Path, until: &str, extra: &[&str]) -> Vec<String> {
    [args(&["restore", "--until", until, "--datadir", target.to_str().unwrap()]), args(extra), st.to_vec()].concat()
}

/// `agent binlog status --json` of archive `shop`, asserting it has no gap.
async fn report(st: &[String], env: &[(String, String)]) -> serde_json::Value {
    let run = agent(&[args(&["binlog", "status", "--archive", "shop", "--json"]), st.to_vec()].concat(), env).await;
    assert!(run.status.success(), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["gaps"], serde_json::json!([]));
    report
}

fn seq_of(pos: &str) -> u64 {
    if pos.is_empty() { 0 } else { pos.rsplit('-').next().unwrap().parse().unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_restores_to_a_gtid_and_a_time_and_survives_a_kill() {
    let dir = tempdir();
    let s3 = S3Server::start();
    let env = s3.env();
    let st = s3.storage_args("db1");
    let db = MariaDb::start(dir.path(), 1).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.m (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB").await;
    db.exec("CREATE TABLE app.w (id BIGINT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB").await;
    let full = full_backup(&db, &st, &env).await;

    let archiver = Archiver::start(&db, &st, &env);
    let pool = db.pool();
    let mut gtids = vec![String::new()];
    for id in 1..=7 {
        gtids.push(marker(&pool, id).await);
    }
    // An incremental (it also rotates the binary log under the archiver): restores use it as far as it
    // reaches, then the archive.
    let datadir = db.datadir.display().to_string();
    let inc_args =
        [args(&["backup", "--method", "binlog", "--mysql-url", &db.url(), "--datadir", &datadir]), st.clone()].concat();
    let inc_id = agent(&inc_args, &env).await.summary()["backupId"].as_str().unwrap().to_string();
    // A time between marker 7 and marker 8, a second apart from both.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for id in 8..=10 {
        gtids.push(marker(&pool, id).await);
    }
    let status = archiver.caught_up(&db).await;
    assert_eq!(status["state"], "streaming");
    assert_eq!(status["gaps"], serde_json::json!([]));
    assert!(status["lastSegment"].as_u64().is_some(), "{status}");

    // Killed while a writer commits, restarted: the archive has every transaction exactly once.
    let writer = Writer::start(db.pool());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    archiver.kill9().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let archiver = Archiver::start(&db, &st, &env);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let written = writer.stop().await;
    assert!(written.len() > 20, "the writer committed {} rows", written.len());
    let status = archiver.caught_up(&db).await;
    assert_eq!(status["duplicates"], 0, "it resumes after the last stored transaction: {status}");
    let run = archiver.stop().await;
    let summary = run.summary();
    assert_eq!(summary["operation"], "binlogArchive");
    assert_eq!(summary["archivedPosition"], db.value("SELECT @@gtid_binlog_pos").await.as_str());
    // Every transaction from where the archive began (the oldest binary log's start) to the server's
    // position is stored once, and there is no gap.
    let report = report(&st, &env).await;
    let (start, end) = (report["start"]["binlogPos"].as_str().unwrap(), report["end"]["binlogPos"].as_str().unwrap());
    assert_eq!(end, db.value("SELECT @@gtid_binlog_pos").await);
    assert_eq!(report["transactions"].as_u64().unwrap(), seq_of(end) - seq_of(start));
    let last_writer_gtid = written.last().unwrap().1.clone();

    // To a GTID the incremental holds: markers 1..5 exactly, and the position recorded for replication.
    let to_gtid = dir.path().join("to-gtid");
    let summary = agent(&restore_args(&st, &to_gtid, &gtids[5], &[]), &env).await.summary();
    assert_eq!(summary["backupId"], full["backupId"]);
    assert_eq!(summary["until"]["incrementals"], serde_json::json!([inc_id]));
    assert_eq!(
        (&summary["until"]["archive"], &summary["until"]["segments"]),
        (&serde_json::Value::Null, &serde_json::json!(0))
    );
    assert_eq!(summary["until"]["transactions"], 5);
    assert_eq!(summary["positions"]["gtid"]["binlogPos"], gtids[5].as_str());
    let restored = MariaDb::start_on(&to_gtid, 2).await;
    assert_eq!(ids(&restored.rows("SELECT id FROM app.m ORDER BY id").await), (1..=5).collect::<Vec<_>>());
    assert_eq!(restored.value("SELECT @@gtid_slave_pos").await, gtids[5]);
    restored.stop().await;

    // To a time after the incremental: it, then the archive; everything committed at or before the time.
    let to_time = dir.path().join("to-time");
    let summary = agent(&restore_args(&st, &to_time, &between.to_string(), &[]), &env).await.summary();
    assert_eq!(summary["until"]["incrementals"], serde_json::json!([inc_id]));
    assert_eq!(summary["until"]["archive"], "shop");
    assert_eq!(summary["until"]["transactions"], 7);
    let restored = MariaDb::start_on(&to_time, 3).await;
    assert_eq!(ids(&restored.rows("SELECT id FROM app.m ORDER BY id").await), (1..=7).collect::<Vec<_>>());
    restored.stop().await;

    // To the writer's last row: every row the writer committed across the kill, exactly.
    let to_end = dir.path().join("to-end");
    let summary = agent(&restore_args(&st, &to_end, &last_writer_gtid, &[]), &env).await.summary();
    assert_eq!(summary["until"]["archive"], "shop");
    assert!(summary["until"]["segments"].as_u64().unwrap() > 0);
    let restored = MariaDb::start_on(&to_end, 4).await;
    let rows = restored.rows("SELECT id FROM app.w ORDER BY id").await;
    assert_eq!(ids(&rows), written.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    assert_eq!(restored.rows("SELECT COUNT(*) FROM app.m").await, vec![vec!["10".to_string()]]);
    restored.stop().await;

    // Past the archive: refused, naming where it ends.
    let past = agent(&restore_args(&st, &dir.path().join("past"), "0-1-99999", &[]), &env).await.error();
    assert!(past.starts_with("error: GTID 0-1-99999 is past what the backups reach: after full backup "), "{past}");
    assert!(past.contains(", and archive shop ends at "), "{past}");
    db.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_reported_and_block_a_restore_across_them_unless_forced() {
    let dir = tempdir();
    let st = vec!["--storage".to_string(), format!("file://{}", dir.path().join("backups").display())];
    let db = MariaDb::start(dir.path(), 1).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.m (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB").await;
    full_backup(&db, &st, &[]).await;
    let archiver = Archiver::start(&db, &st, &[]);
    let pool = db.pool();
    let mut gtids = vec![String::new()];
    // Three groups of markers, each in its own segment (segments are cut after 1 s).
    for group in [1..=3, 4..=6, 7..=9] {
        for id in group {
            gtids.push(marker(&pool, id).await);
        }
        archiver.caught_up(&db).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    archiver.stop().await.summary();
    let report = report(&st, &[]).await;
    assert_eq!(seq_of(report["end"]["binlogPos"].as_str().unwrap()), seq_of(&gtids[9]));

    // Delete the data of the segment holding marker 5.
    let archive_dir = dir.path().join("backups/binlogs/shop");
    let mut holding = None;
    for entry in std::fs::read_dir(&archive_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let (first, last) = (index["firstGtid"].as_str().unwrap(), index["lastGtid"].as_str().unwrap());
            let seq = |g: &str| g.rsplit('-').next().unwrap().parse::<u64>().unwrap();
            let five = seq(&gtids[5]);
            if seq(first) <= five && five <= seq(last) {
                holding = Some((index["seq"].as_u64().unwrap(), first.to_string(), last.to_string()));
            }
        }
    }
    let (seq, first, last) = holding.expect("a segment holds marker 5");
    assert!(first != gtids[1] && last != gtids[9], "marker 5's segment is in the middle: {first}..{last}");
    let data = walk_files(&archive_dir)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{seq:012}-")))
        .expect("the segment's data object, named by number and hash");
    std::fs::remove_file(data).unwrap();

    let status = agent(&[args(&["binlog", "status", "--archive", "shop"]), st.clone()].concat(), &[]).await;
    assert!(status.stdout.contains(&format!("gap before segment {}: the data of segment {seq} is missing\n", seq + 1)));
    assert_eq!(status.error(), "error: the archive has 1 gap(s)");

    // Before the gap: restored. Across it: refused, naming the gap. Forced: restored without the gap's rows.
    let before = dir.path().join("before");
    agent(&restore_args(&st, &before, &gtids[3], &[]), &[]).await.summary();
    let across = agent(&restore_args(&st, &dir.path().join("across"), &gtids[9], &[]), &[]).await.error();
    assert!(
        across.ends_with(&format!(
            ", and archive shop has a gap before segment {}: the data of segment {seq} is missing; restore to a point \
             before it, or force the restore across it",
            seq + 1
        )),
        "{across}"
    );
    assert!(!dir.path().join("across").exists(), "nothing is left of a refused restore");
    let forced = dir.path().join("forced");
    let summary = agent(&restore_args(&st, &forced, &gtids[9], &["--force"]), &[]).await.summary();
    assert_eq!(summary["until"]["gapsCrossed"].as_array().unwrap().len(), 1);
    let restored = MariaDb::start_on(&forced, 2).await;
    let rows = ids(&restored.rows("SELECT id FROM app.m ORDER BY id").await);
    assert_eq!(rows, [1, 2, 3, 7, 8, 9], "the gap's markers are missing, nothing else");
    restored.stop().await;

    // Purged binary logs: a restarted archiver cannot continue, records the gap and goes on.
    for id in 10..=12 {
        gtids.push(marker(&pool, id).await);
    }
    db.exec("FLUSH BINARY LOGS").await;
    let current = db.rows("SHOW MASTER STATUS").await[0][0].clone();
    // The server keeps a log until its binlog checkpoint passes it: purge until only the current one is left.
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.rows("SHOW BINARY LOGS").await.len() > 1 {
        assert!(Instant::now() < deadline, "the binary logs were not purged");
        db.exec(&format!("PURGE BINARY LOGS TO '{current}'")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gtids.push(marker(&pool, 13).await);
    let archiver = Archiver::start(&db, &st, &[]);
    let status = archiver.caught_up(&db).await;
    let gaps = status["gaps"].as_array().unwrap();
    let reason = gaps.last().unwrap()["reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("the server cannot continue after {} (", gtids[9])), "{status}");
    archiver.stop().await.summary();
    db.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_archiver_on_the_same_archive_stops_naming_the_segment_and_the_archive_stays_exact() {
    let dir = tempdir();
    let s3 = S3Server::start();
    let env = s3.env();
    let st = s3.storage_args("two");
    let db = MariaDb::start(dir.path(), 1).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.m (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB").await;
    db.exec("CREATE TABLE app.w (id BIGINT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB").await;
    full_backup(&db, &st, &env).await;
    let first = Archiver::start(&db, &st, &env);
    first.caught_up(&db).await;

    // A second archiver of the same archive (a replacement pod while the old one still runs, or a
    // hand-run one), while a writer commits: both cut segments with the same numbers.
    let second = Archiver::start(&db, &st, &env);
    let writer = Writer::start(db.pool());
    let (mut first, mut second) = (Some(first), Some(second));
    let deadline = Instant::now() + Duration::from_secs(90);
    let stopped = loop {
        assert!(Instant::now() < deadline, "neither archiver stopped within 90 s");
        if let Some(a) = first.as_mut()
            && a.child.try_wait().unwrap().is_some()
        {
            break first.take().unwrap();
        }
        if let Some(a) = second.as_mut()
            && a.child.try_wait().unwrap().is_some()
        {
            break second.take().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = stopped.child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().rfind(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error in:\n{stderr}"));
    let (head, tail) = (
        "error: archive shop: segment ",
        " was already written by another archiver; only one archiver may write an archive",
    );
    assert!(error.starts_with(head) && error.ends_with(tail), "{error}");
    error[head.len()..error.len() - tail.len()].parse::<u64>().expect("the segment's number");

    // The one left goes on; the archive is whole and replays exactly to the writer's last row.
    let survivor = first.or(second).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let written = writer.stop().await;
    let last = marker(&db.pool(), 1).await;
    survivor.caught_up(&db).await;
    survivor.stop().await.summary();
    report(&st, &env).await;
    let target = dir.path().join("restored");
    let summary = agent(&restore_args(&st, &target, &last, &[]), &env).await.summary();
    assert!(summary["until"]["segments"].as_u64().unwrap() > 0, "{summary}");
    let restored = MariaDb::start_on(&target, 2).await;
    let rows = restored.rows("SELECT id FROM app.w ORDER BY id").await;
    assert_eq!(ids(&rows), written.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    assert_eq!(ids(&restored.rows("SELECT id FROM app.m").await), vec![1]);
    assert_eq!(restored.value("SELECT @@gtid_slave_pos").await, last);
    restored.stop().await;
}
