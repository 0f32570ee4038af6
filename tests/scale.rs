//! The data path at production shapes, against real MariaDB servers: thousands of tables under a
//! container's open-files limit, a gigabyte binary log under a memory budget, binary logs kept outside
//! the datadir. Each restore is started as a server and read back.

mod common;

use common::*;
use mysql_async::prelude::Queryable;

/// Tables of the many-tables tests: three times a container's usual open-files limit.
const TABLES: usize = 3_000;
/// The open-files limit the agent runs under, soft and hard.
const OPEN_FILES: u64 = 1024;
/// The memory budget of an agent Job: peak resident memory must stay below it.
const MEMORY_BUDGET: u64 = 256 * 1024 * 1024;
/// The memory limit a point-in-time restore Job needs: the agent, the private server (128 MiB buffer
/// pool) and the replay's tools, in one container.
const PITR_MEMORY: u64 = 512 * 1024 * 1024;
/// What the README promises of the archiver's resident memory, whatever a transaction's size.
const ARCHIVER_MEMORY: u64 = 96 * 1024 * 1024;

/// Server options that make thousands of DDL statements quick; durability is not under test here.
fn fast_ddl() -> Vec<String> {
    args(&["--innodb-flush-log-at-trx-commit=0", "--sync-binlog=0", "--innodb-doublewrite=0"])
}

/// Creates `many.t0` … `many.t{n-1}`, one row each (`id` 1, `v` = the table's number), over four
/// connections in batches.
async fn create_tables(db: &MariaDb, n: usize) {
    db.exec("CREATE DATABASE many").await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let pool = db.pool();
        tasks.spawn(async move {
            let mut conn = pool.get_conn().await.expect("connect");
            let tables: Vec<usize> = (worker..n).step_by(4).collect();
            for batch in tables.chunks(50) {
                let sql: String = batch
                    .iter()
                    .map(|t| {
                        format!(
                            "CREATE TABLE many.t{t} (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; INSERT INTO many.t{t} VALUES (1, {t});"
                        )
                    })
                    .collect();
                conn.query_drop(sql).await.expect("create tables");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("creating tables");
    }
}

/// The number of tables in `many` and the sum of every table's `v`, read table by table (a table
/// that did not come back fails the query that names it).
async fn read_tables(db: &MariaDb, n: usize) -> (usize, u64) {
    let count: usize =
        db.value("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'many'").await.parse().unwrap();
    let mut sum = 0u64;
    let tables: Vec<usize> = (0..n).collect();
    for batch in tables.chunks(250) {
        let union: Vec<String> = batch.iter().map(|t| format!("SELECT v FROM many.t{t}")).collect();
        let part: u64 =
            db.value(&format!("SELECT SUM(v) FROM ({}) AS a", union.join(" UNION ALL "))).await.parse().unwrap();
        sum += part;
    }
    (count, sum)
}

fn expected_sum(n: usize) -> u64 {
    (n as u64) * (n as u64 - 1) / 2
}

fn file_storage(dir: &std::path::Path) -> Vec<String> {
    vec!["--storage".into(), format!("file://{}", dir.join("backups").display())]
}

fn restore_args(target: &std::path::Path, storage: &[String], backup: &str) -> Vec<String> {
    let target = target.display().to_string();
    [args(&["restore", "--backup", backup, "--datadir", &target]), storage.to_vec()].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_tables_back_up_and_restore_cold_under_1024_open_files() {
    let dir = tempdir();
    let db = MariaDb::start_with(dir.path(), 1, &fast_ddl()).await;
    create_tables(&db, TABLES).await;
    let datadir = db.datadir.clone();
    db.stop().await;
    let st = file_storage(dir.path());

    let datadir_arg = datadir.display().to_string();
    let backup = [args(&["backup", "--method", "cold", "--datadir", &datadir_arg]), st.clone()].concat();
    let summary = agent_with_open_files(OPEN_FILES, Some(OPEN_FILES), &backup, &[]).await.summary();
    assert!(summary["totals"]["files"].as_u64().unwrap() > 2 * TABLES as u64, "{summary}");

    let target = dir.path().join("restored");
    let id = summary["backupId"].as_str().unwrap();
    let restored =
        agent_with_open_files(OPEN_FILES, Some(OPEN_FILES), &restore_args(&target, &st, id), &[]).await.summary();
    assert_eq!(restored["files"], summary["totals"]["files"]);
    let copy = MariaDb::start_on(&target, 1).await;
    assert_eq!(read_tables(&copy, TABLES).await, (TABLES, expected_sum(TABLES)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_tables_back_up_and_restore_with_mariabackup_under_1024_open_files() {
    let dir = tempdir();
    let db = MariaDb::start_with(dir.path(), 1, &fast_ddl()).await;
    create_tables(&db, TABLES).await;
    let st = file_storage(dir.path());

    let backup = mariabackup_args(&db.url(), &db.datadir, &st);
    // mariadb-backup opens every tablespace at once: it needs the headroom the agent raises its soft
    // limit to (the hard one stays as the machine has it, as in a container).
    // In a container of the Job's memory budget, mariadb-backup included.
    let group = MemoryCgroup::new(MEMORY_BUDGET);
    let summary = agent_limited(Some((OPEN_FILES, None)), Some(&group), &backup, &[]).await.summary();
    assert!(summary["totals"]["files"].as_u64().unwrap() > TABLES as u64, "{summary}");
    eprintln!(
        "mariabackup backup of {TABLES} tables under a {} MiB limit: agent {} MiB, mariadb-backup {} MiB, cgroup peak {} MiB",
        MEMORY_BUDGET >> 20,
        summary["peakRssBytes"].as_u64().unwrap() >> 20,
        summary["memory"]["childrenBytes"].as_u64().unwrap() >> 20,
        group.peak() >> 20
    );
    assert_eq!(group.oom_kills(), 0);
    db.stop().await;

    let target = dir.path().join("restored");
    let id = summary["backupId"].as_str().unwrap();
    // So does its --prepare; the agent's own writes are bounded (the cold test holds it to 1024).
    agent_with_open_files(OPEN_FILES, None, &restore_args(&target, &st, id), &[]).await.summary();
    let copy = MariaDb::start_on(&target, 1).await;
    assert_eq!(read_tables(&copy, TABLES).await, (TABLES, expected_sum(TABLES)));
}

/// Writes about `mib` MiB of row events into the current binary log, in transactions of 8 MiB of
/// distinct rows (1,000 rows of 8 KiB).
async fn write_binlog(db: &MariaDb, mib: u64) {
    db.exec("CREATE DATABASE IF NOT EXISTS big").await;
    db.exec("CREATE TABLE big.rows (id BIGINT PRIMARY KEY, payload BLOB) ENGINE=InnoDB").await;
    let mut conn = db.pool().get_conn().await.expect("connect");
    for batch in 0..mib / 8 {
        let first = batch * 1_000;
        conn.query_drop(format!(
            "INSERT INTO big.rows SELECT {first} + seq, REPEAT(SHA2({first} + seq, 256), 128) FROM big.seq_1_to_1000"
        ))
        .await
        .expect("insert");
        // Keep the table small: the binary log, not the datadir, is what grows.
        conn.query_drop(format!("DELETE FROM big.rows WHERE id <= {first}")).await.expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_backup_of_a_gigabyte_binary_log_stays_within_the_memory_budget() {
    let dir = tempdir();
    // A first binary log of more than a gigabyte (it rotates past the largest max_binlog_size): the
    // backup reads the state at its start and copies it whole.
    let mut opts = fast_ddl();
    opts.extend(args(&["--max-binlog-size=1073741824"]));
    let db = MariaDb::start_with(dir.path(), 5, &opts).await;
    write_binlog(&db, 1088).await;
    let gtid = db.value("SELECT @@gtid_binlog_pos").await;
    let (file, offset) = {
        let rows = db.rows("SHOW MASTER STATUS").await;
        (rows[0][0].clone(), rows[0][1].parse::<u64>().unwrap())
    };
    let datadir = db.datadir.clone();
    db.stop().await;
    let first_len = std::fs::metadata(datadir.join("mysql-bin.000001")).unwrap().len();
    assert!(first_len > 1 << 30, "the first binary log holds {first_len} bytes");
    let binlog_len = std::fs::metadata(datadir.join(&file)).unwrap().len();

    let st = file_storage(dir.path());
    let datadir_arg = datadir.display().to_string();
    let backup = [args(&["backup", "--method", "cold", "--datadir", &datadir_arg]), st.clone()].concat();
    // In a container of the Job's memory budget: the agent, and what it reads through the page cache.
    let group = MemoryCgroup::new(MEMORY_BUDGET);
    let summary = agent_in_cgroup(&group, &backup, &[]).await.summary();
    let peak = summary["peakRssBytes"].as_u64().unwrap();
    eprintln!(
        "cold backup with a {} MiB binary log under a {} MiB limit: peak RSS {} MiB, cgroup peak {} MiB",
        first_len >> 20,
        MEMORY_BUDGET >> 20,
        peak >> 20,
        group.peak() >> 20
    );
    assert!(peak <= MEMORY_BUDGET, "peak RSS {} MiB", peak >> 20);
    assert_eq!((group.oom_kills(), summary["memory"]["cgroupBytes"].as_u64()), (0, Some(group.peak())));
    assert_eq!(summary["positions"]["gtid"]["binlogPos"], gtid.as_str());
    assert_eq!(summary["positions"]["binlog"]["file"], file.as_str());
    // The server's own shutdown appends a stop event after the last transaction.
    assert!(summary["positions"]["binlog"]["position"].as_u64().unwrap() >= offset, "{summary}");
    assert_eq!(summary["positions"]["binlog"]["position"], binlog_len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_backups_find_the_logs_where_the_server_keeps_them() {
    let dir = tempdir();
    let elsewhere = dir.path().join("binlogs");
    std::fs::create_dir(&elsewhere).unwrap();
    let log_bin = format!("--log-bin={}/db-bin", elsewhere.display());
    let db = MariaDb::start_with(dir.path(), 1, &[log_bin]).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.m (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB").await;
    let st = file_storage(dir.path());
    let full = full_backup(&db, &st, &[]).await;
    for id in 1..=20 {
        db.exec(&format!("INSERT INTO app.m VALUES ({id}, 'after the full backup')")).await;
    }
    let after = db.value("SELECT @@gtid_binlog_pos").await;

    // No --binlog-dir: the server says where its logs are.
    let datadir = db.datadir.display().to_string();
    let inc =
        [args(&["backup", "--method", "binlog", "--mysql-url", &db.url(), "--datadir", &datadir]), st.clone()].concat();
    let summary = agent(&inc, &[]).await.summary();
    assert_eq!(summary["positions"]["gtid"]["binlogPos"], after.as_str());
    assert_eq!(summary["incremental"]["base"], full["backupId"]);
    assert!(summary["totals"]["files"].as_u64().unwrap() >= 1, "{summary}");
    let id = summary["backupId"].as_str().unwrap();
    let manifest = manifest_at(&dir.path().join(format!("backups/backups/{id}/manifest.json")));
    for f in manifest["files"].as_array().unwrap() {
        assert!(f["path"].as_str().unwrap().starts_with("db-bin.0"), "{f}");
    }

    // A --binlog-dir that holds no logs is used as given, and named.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    db.exec("INSERT INTO app.m VALUES (21, 'one more')").await;
    let wrong = [inc.clone(), args(&["--binlog-dir", &empty.display().to_string()])].concat();
    let err = agent(&wrong, &[]).await.error();
    assert!(err.contains(&format!("{}/db-bin.0", empty.display())), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_in_time_restore_through_a_gigabyte_segment_stays_within_the_memory_budget() {
    let dir = tempdir();
    let db = MariaDb::start_with(dir.path(), 1, &fast_ddl()).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.m (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB").await;
    let st = file_storage(dir.path());
    full_backup(&db, &st, &[]).await;

    // One segment of a gigabyte: the archiver seals it by size, not age.
    let port = free_port();
    let a = [
        args(&["binlog", "archive", "--mysql-url", &db.url(), "--archive", "big"]),
        args(&["--segment-mib", "1024", "--segment-seconds", "300", "--listen", &format!("127.0.0.1:{port}")]),
        st.clone(),
    ]
    .concat();
    let archiver = agent_command(&a, &[]).spawn().expect("start the archiver");
    write_binlog(&db, 1088).await;
    let pool = db.pool();
    let target_gtid = marker(&pool, 1).await;
    marker(&pool, 2).await;
    let want = db.value("SELECT @@gtid_binlog_pos").await;
    // The gigabyte segment is stored once sealed; the rest on SIGTERM.
    let first = dir.path().join("backups/binlogs/big/000000000000.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !first.exists() {
        assert!(std::time::Instant::now() < deadline, "no segment stored in 300 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    let segment_bytes = index["bytes"].as_u64().unwrap();
    assert!(segment_bytes > 1 << 30, "{index}");
    // Caught up (the server said it had nothing more since the markers), it stores the rest on SIGTERM.
    let written = jiff::Timestamp::now();
    while caught_up_at(port).await.is_none_or(|t| t <= written) {
        assert!(std::time::Instant::now() < deadline, "the archiver did not catch up in 300 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let pid = nix::unistd::Pid::from_raw(archiver.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = archiver.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = [args(&["binlog", "status", "--archive", "big", "--json"]), st.clone()].concat();
    let report: serde_json::Value = serde_json::from_str(&agent(&status, &[]).await.stdout).unwrap();
    assert_eq!(
        report["end"]["binlogPos"],
        want.as_str(),
        "{report}\narchiver:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let target = dir.path().join("restored");
    let t = target.display().to_string();
    let restore = [args(&["restore", "--until", &target_gtid, "--datadir", &t]), st.clone()].concat();
    // In a container with the private server and the replay's tools: a point-in-time Job needs more
    // than the agent's budget (the server replaying 2 GiB of row events was killed at 256 MiB).
    let group = MemoryCgroup::new(PITR_MEMORY);
    let summary = agent_in_cgroup(&group, &restore, &[]).await.summary();
    let peak = summary["peakRssBytes"].as_u64().unwrap();
    let tools = summary["memory"]["childrenBytes"].as_u64().unwrap();
    eprintln!(
        "point-in-time restore through a {} MiB segment under a {} MiB limit: peak RSS {} MiB, largest tool {} MiB, cgroup peak {} MiB",
        segment_bytes >> 20,
        PITR_MEMORY >> 20,
        peak >> 20,
        tools >> 20,
        group.peak() >> 20
    );
    assert!(peak <= MEMORY_BUDGET, "peak RSS {} MiB", peak >> 20);
    assert!(tools > 0 && tools <= PITR_MEMORY, "the largest tool's peak: {} MiB", tools >> 20);
    assert_eq!(group.oom_kills(), 0);
    db.stop().await;
    let copy = MariaDb::start_on(&target, 1).await;
    assert_eq!(copy.rows("SELECT id, note FROM app.m").await, vec![vec!["1", "marker 1"]]);
}

/// The `/status` of the archiver listening on `port`, if it answers.
async fn archiver_status(port: u16) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /status HTTP/1.0\r\nHost: x\r\n\r\n").await.ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

/// When the archiver listening on `port` last heard from the server that it had nothing more to send.
async fn caught_up_at(port: u16) -> Option<jiff::Timestamp> {
    archiver_status(port).await?["caughtUpAt"].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_under_a_256_mib_limit_archives_a_gigabyte_transaction_and_keeps_running() {
    let dir = tempdir();
    let mut opts = fast_ddl();
    // BLACKHOLE keeps nothing but logs every row: a gigabyte transaction without a gigabyte table.
    opts.extend(args(&["--plugin-load-add=ha_blackhole"]));
    let db = MariaDb::start_with(dir.path(), 1, &opts).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.m (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB").await;
    db.exec("CREATE TABLE app.hole (id BIGINT, payload BLOB) ENGINE=BLACKHOLE").await;
    let s3 = S3Server::start();
    let st = s3.storage_args("arch");
    let group = MemoryCgroup::new(MEMORY_BUDGET);
    let port = free_port();
    let a = [
        args(&["binlog", "archive", "--mysql-url", &db.url(), "--archive", "big", "--segment-seconds", "2"]),
        args(&["--listen", &format!("127.0.0.1:{port}")]),
        st.clone(),
    ]
    .concat();
    let mut archiver = limited_command(agent_command(&a, &s3.env()), None, Some(&group)).spawn().expect("start");
    marker(&db.pool(), 1).await;

    // One transaction of a gigabyte: 131,072 rows of 8 KiB in one statement.
    db.exec("INSERT INTO app.hole SELECT seq, REPEAT(SHA2(seq, 256), 128) FROM app.seq_1_to_131072").await;
    marker(&db.pool(), 2).await;
    let want = db.value("SELECT @@gtid_binlog_pos").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        assert!(
            archiver.try_wait().unwrap().is_none(),
            "the archiver died (OOM kills in its group: {})",
            group.oom_kills()
        );
        if archived_position(port).await.as_deref() == Some(want.as_str()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the archiver did not reach {want} in 600 s");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // It goes on: a later transaction is archived too.
    let after = marker(&db.pool(), 3).await;
    while archived_position(port).await.as_deref() != Some(after.as_str()) {
        assert!(std::time::Instant::now() < deadline, "the archiver stopped following the server");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(archiver.try_wait().unwrap().is_none(), "still running");
    assert_eq!(group.oom_kills(), 0);
    // Its own peak resident memory: the working set, which the page cache of its spill file is not.
    let pid = archiver.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "archiver with a 1 GiB transaction under a 256 MiB limit: peak RSS {} MiB, cgroup peak (page cache included) {} MiB",
        hwm_kib >> 10,
        group.peak() >> 20
    );
    assert!(hwm_kib << 10 < ARCHIVER_MEMORY, "peak RSS {} MiB", hwm_kib >> 10);
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = archiver.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = [args(&["binlog", "status", "--archive", "big", "--json"]), st.clone()].concat();
    let report: serde_json::Value = serde_json::from_str(&agent(&status, &s3.env()).await.stdout).unwrap();
    assert_eq!(report["end"]["binlogPos"], after.as_str(), "{report}");
    assert_eq!(report["gaps"], serde_json::json!([]));
    let largest = walk_files(&s3.object_path("arch/binlogs/big"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap()["bytes"].as_u64().unwrap()
        })
        .max()
        .unwrap();
    assert!(largest > 1 << 30, "the transaction's segment holds {largest} bytes");
}

/// What the archiver listening on `port` has archived up to.
async fn archived_position(port: u16) -> Option<String> {
    archiver_status(port).await?["archivedPosition"].as_str().map(str::to_string)
}
