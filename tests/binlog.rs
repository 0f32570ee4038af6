//! Incremental backups of binary logs (`--method binlog`) from a real MariaDB server: after a full
//! backup, the closed binary logs holding every later transaction are stored, byte for byte, with the
//! positions they reach; an incremental with nothing new stores nothing; purged binary logs are named.

mod common;

use common::*;

fn storage(dir: &std::path::Path) -> Vec<String> {
    vec!["--storage".into(), format!("file://{}", dir.join("backups").display())]
}

/// A server in a fresh directory, with file storage there and an empty table `app.m`.
async fn server_with_table_m() -> (tempfile::TempDir, MariaDb, Vec<String>) {
    let dir = tempdir();
    let db = MariaDb::start(dir.path(), 1).await;
    let st = storage(dir.path());
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.m (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB").await;
    (dir, db, st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incrementals_store_the_closed_binlogs_after_the_newest_backup() {
    let (dir, db, st) = server_with_table_m().await;
    let datadir = db.datadir.display().to_string();
    for id in 1..=10 {
        db.exec(&format!("INSERT INTO app.m VALUES ({id}, 'before the full backup')")).await;
    }

    // No backup yet: auto has nothing to continue from.
    let binlog = |extra: &[&str]| {
        let mut a = args(&["backup", "--method", "binlog", "--mysql-url", &db.url(), "--datadir", &datadir]);
        a.extend(args(extra));
        [a, st.clone()].concat()
    };
    assert_eq!(
        agent(&binlog(&[]), &[]).await.error(),
        format!(
            "error: --from: there is no backup in file://{}/backups to continue from: take a full backup first, or give --from <GTID position>",
            dir.path().display()
        )
    );

    let full = full_backup(&db, &st, &[]).await;
    let full_id = full["backupId"].as_str().unwrap().to_string();
    let full_pos = full["positions"]["gtid"]["binlogPos"].as_str().unwrap().to_string();
    assert_eq!(full_pos, db.value("SELECT @@gtid_binlog_pos").await);

    for id in 11..=25 {
        db.exec(&format!("INSERT INTO app.m VALUES ({id}, 'after the full backup')")).await;
    }
    let after = db.value("SELECT @@gtid_binlog_pos").await;
    let inc = agent(&binlog(&[]), &[]).await.summary();
    assert_eq!(inc["method"], "binlog");
    assert_eq!(inc["positions"]["gtid"]["binlogPos"], after.as_str(), "ends where the server was at the flush");
    let inc_id = inc["backupId"].as_str().unwrap().to_string();
    assert_eq!(inc["incremental"]["base"], full_id.as_str(), "the summary says what it builds on");
    let manifest = manifest_at(&dir.path().join(format!("backups/backups/{inc_id}/manifest.json")));
    assert_eq!(manifest["incremental"]["base"], full_id.as_str());
    assert_eq!(manifest["incremental"]["from"]["binlogPos"], full_pos.as_str());
    // Every stored file is a closed binary log of the server, byte for byte, and together they hold the
    // rows written after the full backup.
    let files = manifest["files"].as_array().unwrap();
    assert!(!files.is_empty());
    let mut stored_text = Vec::new();
    for f in files {
        assert_eq!(f["base"], "binlogDir");
        let name = f["path"].as_str().unwrap();
        assert!(name.starts_with("mysql-bin.0"), "{name}");
        let mut bytes = Vec::new();
        for c in f["chunks"].as_array().unwrap() {
            let hash = c["hash"].as_str().unwrap();
            let stored = std::fs::read(dir.path().join(format!("backups/chunks/{}/{hash}", &hash[..2]))).unwrap();
            bytes.extend(zstd::decode_all(&stored[..]).unwrap());
        }
        assert!(bytes == std::fs::read(db.datadir.join(name)).unwrap(), "{name} stored whole");
        stored_text.extend(bytes);
    }
    let text = String::from_utf8_lossy(&stored_text);
    // MariaDB annotates row events with their statement: each INSERT after the full backup once.
    for id in 11..=25 {
        let statement = format!("INSERT INTO app.m VALUES ({id}, 'after the full backup')");
        assert_eq!(text.matches(&statement).count(), 1, "{statement}");
    }
    // Whole files: from the one the full backup ended in, to the last one closed by the flush.
    let full_file = full["positions"]["binlog"]["file"].as_str().unwrap().to_string();
    let logs: Vec<String> = db.rows("SHOW BINARY LOGS").await.into_iter().map(|r| r[0].clone()).collect();
    let current = logs.last().unwrap().clone();
    let expected: Vec<&String> = logs.iter().filter(|n| **n >= full_file && **n < current).collect();
    let stored: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(stored, expected);
    assert_eq!(inc["positions"]["binlog"]["file"], current.as_str());
    agent(&[args(&["verify", "--backup", &inc_id]), st.clone()].concat(), &[]).await.summary();

    // A schedule's incremental continues only that schedule's backups.
    assert_eq!(
        agent(&binlog(&["--tag", "mysqlbackup.dev/schedule=db/other"]), &[]).await.error(),
        format!(
            "error: --from: there is no backup in file://{}/backups to continue from: take a full backup first, or give --from <GTID position>",
            dir.path().display()
        )
    );

    // Nothing new since: an incremental that stores nothing and reaches the same point.
    let empty = agent(&binlog(&[]), &[]).await.summary();
    assert_eq!(empty["totals"]["files"], 0);
    assert_eq!(empty["positions"]["gtid"]["binlogPos"], after.as_str());

    // An incremental cannot be restored on its own; latest means the newest full backup.
    let target = dir.path().join("restored");
    let refused = agent(
        &[args(&["restore", "--backup", &inc_id, "--datadir", target.to_str().unwrap()]), st.clone()].concat(),
        &[],
    )
    .await;
    assert_eq!(
        refused.error(),
        format!(
            "error: backup {inc_id} is an incremental (binary logs); restore the full backup it builds on, or a point in time with --until"
        )
    );
    let restored = agent(
        &[args(&["restore", "--backup", "latest", "--datadir", target.to_str().unwrap()]), st.clone()].concat(),
        &[],
    )
    .await
    .summary();
    assert_eq!(restored["backupId"], full_id.as_str());

    // Binary logs purged past the full backup's position: named, nothing stored.
    db.exec("FLUSH BINARY LOGS").await;
    db.exec("INSERT INTO app.m VALUES (26, 'after the purge')").await;
    let current: String = db.rows("SHOW MASTER STATUS").await[0][0].clone();
    // The server keeps a file an earlier command's connection still reads (its thread may outlive
    // the command for a moment on a loaded machine): purge until the current file is the oldest.
    for _ in 0..100 {
        db.exec(&format!("PURGE BINARY LOGS TO '{current}'")).await;
        if db.rows("SHOW BINARY LOGS").await[0][0] == current {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let purged = agent(&binlog(&["--from", &full_pos]), &[]).await.error();
    assert!(
        purged.starts_with(&format!(
            "error: the binary logs after {full_pos} were purged: the oldest, {current}, starts at "
        )),
        "{purged}"
    );
    db.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_restore_replays_exactly_up_to_the_target() {
    let (dir, db, st) = server_with_table_m().await;
    let datadir = db.datadir.display().to_string();
    let full = full_backup(&db, &st, &[]).await;
    let pool = db.pool();
    let mut gtids = vec![String::new()];
    for id in 1..=7 {
        gtids.push(marker(&pool, id).await);
    }
    // A time between marker 7 and marker 8, a second apart from both.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let between = jiff::Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for id in 8..=10 {
        gtids.push(marker(&pool, id).await);
    }
    let inc_args =
        [args(&["backup", "--method", "binlog", "--mysql-url", &db.url(), "--datadir", &datadir]), st.clone()].concat();
    agent(&inc_args, &[]).await.summary();

    let restore_until = |target: &std::path::Path, until: &str| {
        [
            args(&[
                "restore",
                "--until",
                until,
                "--datadir",
                target.to_str().unwrap(),
                "--mariabackup-path",
                "mariadb-backup",
            ]),
            st.clone(),
        ]
        .concat()
    };
    // To a GTID: markers 1..5 exactly, and the position recorded for replication.
    let to_gtid = dir.path().join("to-gtid");
    let summary = agent(&restore_until(&to_gtid, &gtids[5]), &[]).await.summary();
    assert_eq!(summary["backupId"], full["backupId"]);
    assert_eq!(summary["until"]["transactions"], 5);
    assert_eq!(summary["positions"]["gtid"]["binlogPos"], gtids[5].as_str());
    let restored = MariaDb::start_on(&to_gtid, 2).await;
    let rows = restored.rows("SELECT id FROM app.m ORDER BY id").await;
    assert_eq!(rows.iter().map(|r| r[0].parse::<u32>().unwrap()).collect::<Vec<_>>(), (1..=5).collect::<Vec<_>>());
    assert_eq!(restored.value("SELECT @@gtid_slave_pos").await, gtids[5]);
    restored.stop().await;

    // To a time: everything committed at or before it, nothing after.
    let to_time = dir.path().join("to-time");
    let summary = agent(&restore_until(&to_time, &between.to_string()), &[]).await.summary();
    assert_eq!(summary["until"]["transactions"], 7);
    let restored = MariaDb::start_on(&to_time, 3).await;
    let rows = restored.rows("SELECT id FROM app.m ORDER BY id").await;
    assert_eq!(rows.iter().map(|r| r[0].parse::<u32>().unwrap()).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    restored.stop().await;

    // Past what the backups reach: refused, naming where they end.
    let past = agent(&restore_until(&dir.path().join("past"), "0-1-9999"), &[]).await.error();
    assert!(past.starts_with("error: GTID 0-1-9999 is past what the backups reach: after full backup "), "{past}");
    // A missing incremental is a gap: a target beyond it is refused rather than restored short.
    let listed = agent(&[args(&["list", "--json"]), st.clone()].concat(), &[]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let inc = listed.as_array().unwrap().iter().find(|b| b["method"] == "binlog").unwrap()["backupId"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(dir.path().join(format!("backups/backups/{inc}/manifest.json"))).unwrap();
    let gap = agent(&restore_until(&dir.path().join("gap"), &gtids[5]), &[]).await.error();
    let full_pos = full["positions"]["gtid"]["binlogPos"].as_str().unwrap();
    assert!(
        gap.starts_with(&format!(
            "error: GTID {} is past what the backups reach: after full backup {}, the incrementals end at {full_pos} (",
            gtids[5],
            full["backupId"].as_str().unwrap()
        )),
        "{gap}"
    );
    db.stop().await;
}

/// A stand-in for `tool` that records, when started, how many of its environment variables and which
/// of its open regular files hold one of `secrets` (kept in `<wrapper>.needle`, never in the script,
/// which the shell holds open), then runs the real tool.
fn recording_wrapper(dir: &std::path::Path, tool: &str, secrets: &[&str]) -> std::path::PathBuf {
    let wrapper = dir.join(tool);
    std::fs::write(dir.join(format!("{tool}.needle")), secrets.join("\n")).unwrap();
    let real = require(tool);
    let script = format!(
        r#"#!/bin/sh
needle="$0.needle"
report="$0.report"
env | grep -c -F -f "$needle" > "$report.env"
: > "$report.fds"
for f in /proc/$$/fd/*; do
  if [ -f "$f" ] && grep -q -F -f "$needle" "$f" 2>/dev/null; then basename "$f" >> "$report.fds"; fi
done
exec {} "$@"
"#,
        real.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// What the wrapper of `tool` recorded: (environment variables holding the secret, descriptors of
/// files holding it).
fn recorded(dir: &std::path::Path, tool: &str) -> (String, String) {
    let read = |what: &str| {
        std::fs::read_to_string(dir.join(format!("{tool}.report.{what}")))
            .unwrap_or_else(|e| panic!("{tool} was not run through its wrapper ({what}: {e})"))
    };
    (read("env").trim().to_string(), read("fds").trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_tools_get_no_password_beyond_the_option_file_mariadb_backup_reads() {
    let (dir, db, st) = server_with_table_m().await;
    let password = "pw-s3cr3t-4b7e91";
    let storage_key = "aws-s3cr3t-c0ffee";
    db.exec(&format!("CREATE USER bk@'%' IDENTIFIED BY '{password}'")).await;
    db.exec("GRANT ALL ON *.* TO bk@'%'").await;
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let url = db.url().replacen("mysql://root@", "mysql://bk@", 1);
    assert_ne!(url, db.url());
    // The agent holds the password in MYSQL_PWD and a storage key in its environment.
    let env = vec![
        ("MYSQL_PWD".to_string(), password.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), storage_key.to_string()),
    ];
    let secrets = [password, storage_key];
    let backup_tool = recording_wrapper(&tools, "mariadb-backup", &secrets);
    let datadir = db.datadir.display().to_string();
    let backup =
        [mariabackup_args(&url, &db.datadir, &st), args(&["--mariabackup-path", backup_tool.to_str().unwrap()])]
            .concat();
    agent(&backup, &env).await.summary();
    assert_eq!(
        recorded(&tools, "mariadb-backup"),
        ("0".to_string(), "0".to_string()),
        "only its stdin, the option file"
    );
    let marker_gtid = marker(&db.pool(), 1).await;
    let inc =
        [args(&["backup", "--method", "binlog", "--mysql-url", &url, "--datadir", &datadir]), st.clone()].concat();
    agent(&inc, &env).await.summary();

    // A point-in-time restore runs mariadb-backup, mariadbd, mariadb-binlog and mariadb: none holds a
    // secret of the agent's, in its environment or an open file.
    let mut wrapped = Vec::new();
    for (tool, flag) in [
        ("mariadb-backup", "--mariabackup-path"),
        ("mariadbd", "--mariadbd-path"),
        ("mariadb-binlog", "--mariadb-binlog-path"),
        ("mariadb", "--mariadb-client-path"),
    ] {
        let restore_tools = dir.path().join(format!("restore-{tool}"));
        std::fs::create_dir(&restore_tools).unwrap();
        let w = recording_wrapper(&restore_tools, tool, &secrets);
        wrapped.extend(args(&[flag, w.to_str().unwrap()]));
    }
    let target = dir.path().join("restored");
    let restore =
        [args(&["restore", "--until", &marker_gtid, "--datadir", target.to_str().unwrap()]), wrapped, st.clone()]
            .concat();
    agent(&restore, &env).await.summary();
    for tool in ["mariadb-backup", "mariadbd", "mariadb-binlog", "mariadb"] {
        let restore_tools = dir.path().join(format!("restore-{tool}"));
        assert_eq!(recorded(&restore_tools, tool), ("0".to_string(), String::new()), "{tool}");
    }
    let restored = MariaDb::start_on(&target, 2).await;
    assert_eq!(restored.rows("SELECT id FROM app.m").await, vec![vec!["1".to_string()]]);
    restored.stop().await;
}

/// An executable script `name` in `dir` running `body` (POSIX sh).
fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_client_warns_a_mebibyte_completes_and_a_failing_one_reports_no_row_values() {
    let (dir, db, st) = server_with_table_m().await;
    let datadir = db.datadir.display().to_string();
    full_backup(&db, &st, &[]).await;
    // More SQL than a pipe holds (1 KiB notes), so a client that is not read while it runs would stop
    // the replay.
    for id in 1..=300 {
        db.exec(&format!("INSERT INTO app.m VALUES ({id}, REPEAT('n', 40))")).await;
    }
    db.exec("ALTER TABLE app.m ADD COLUMN big TEXT").await;
    db.exec("UPDATE app.m SET big = REPEAT('b', 1024)").await;
    let last = db.value("SELECT @@gtid_binlog_pos").await;
    let inc =
        [args(&["backup", "--method", "binlog", "--mysql-url", &db.url(), "--datadir", &datadir]), st.clone()].concat();
    agent(&inc, &[]).await.summary();
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let client = require("mariadb").display().to_string();
    let binlog = require("mariadb-binlog").display().to_string();
    // A client that prints 1 MiB of warnings before it reads a byte.
    let noisy = script(
        &tools,
        "noisy-mariadb",
        &format!(
            "s=$(printf '%0.sw' $(seq 1 60)); i=0; while [ $i -lt 16384 ]; do echo \"Warning (Code 1265): $s\" >&2; i=$((i+1)); done; exec {client} \"$@\""
        ),
    );
    let target = dir.path().join("noisy");
    let restore = [
        args(&["restore", "--until", &last, "--datadir", target.to_str().unwrap(), "--mariadb-client-path", &noisy]),
        st.clone(),
    ]
    .concat();
    let summary = tokio::time::timeout(std::time::Duration::from_secs(120), agent(&restore, &[]))
        .await
        .expect("the replay finishes")
        .summary();
    assert_eq!(summary["positions"]["gtid"]["binlogPos"], last.as_str());
    let restored = MariaDb::start_on(&target, 2).await;
    assert_eq!(restored.value("SELECT COUNT(*) FROM app.m WHERE LENGTH(big) = 1024").await, "300");
    restored.stop().await;

    // A replay the server refuses (a duplicate key): the error says so, without the row's values.
    let duplicate = script(
        &tools,
        "duplicating-mariadb-binlog",
        &format!(
            "{binlog} \"$@\" || exit $?; echo \"INSERT INTO app.m (id, note) VALUES (987654, 'alice@example.com'), (987654, 'bob@example.com');\""
        ),
    );
    let target = dir.path().join("failing");
    let restore = [
        args(&[
            "restore",
            "--until",
            &last,
            "--datadir",
            target.to_str().unwrap(),
            "--mariadb-binlog-path",
            &duplicate,
        ]),
        st.clone(),
    ]
    .concat();
    let run = agent(&restore, &[]).await;
    let error = run.error();
    assert!(error.contains("replaying into the server failed"), "{error}");
    assert!(run.stderr.contains("ERROR 1062 (23000) at line "), "{}", run.stderr);
    assert!(run.stderr.contains(": Duplicate entry '…' for key '…'"), "{}", run.stderr);
    for value in ["987654", "alice@example.com", "bob@example.com"] {
        assert!(!run.stderr.contains(value), "{value} in:\n{}", run.stderr);
    }

    // A client that dies part way (its server killed for memory, say): the replay fails, it does not
    // wait for mariadb-binlog, which nobody reads any more.
    let dying = script(
        &tools,
        "dying-mariadb",
        "head -c 10000 > /dev/null; echo 'ERROR 2013 (HY000): Lost connection' >&2; exit 1",
    );
    let target = dir.path().join("dying");
    let restore = [
        args(&["restore", "--until", &last, "--datadir", target.to_str().unwrap(), "--mariadb-client-path", &dying]),
        st.clone(),
    ]
    .concat();
    let run = tokio::time::timeout(std::time::Duration::from_secs(120), agent(&restore, &[])).await.expect("no hang");
    let error = run.error();
    assert!(
        error.starts_with(
            "error: replaying into the server failed (exit status: 1): ERROR 2013 (HY000): Lost connection"
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_imitates_an_event_header_does_not_move_the_position_reached() {
    let (_dir, db, st) = server_with_table_m().await;
    let datadir = db.datadir.display().to_string();
    full_backup(&db, &st, &[]).await;
    let pool = db.pool();
    let first = marker(&pool, 1).await;
    // mariadb-binlog prints a statement's text as it is: this one holds a line like its event headers.
    db.exec(
        "CREATE TABLE app.decoy (id INT) COMMENT '\n#261122  8:55:12 server id 1  end_log_pos 982 CRC32 0x1a2b3c4d \tGTID 0-1-99999 trans\n'",
    )
    .await;
    let ddl = db.value("SELECT @@gtid_binlog_pos").await;
    let last = marker(&pool, 2).await;
    let inc =
        [args(&["backup", "--method", "binlog", "--mysql-url", &db.url(), "--datadir", &datadir]), st.clone()].concat();
    agent(&inc, &[]).await.summary();
    for (until, transactions, ids) in
        [(&ddl, 2, vec![vec!["1".to_string()]]), (&last, 3, vec![vec!["1".into()], vec!["2".into()]])]
    {
        let target = _dir.path().join(format!("to-{transactions}"));
        let restore =
            [args(&["restore", "--until", until, "--datadir", target.to_str().unwrap()]), st.clone()].concat();
        let summary = agent(&restore, &[]).await.summary();
        assert_eq!(summary["positions"]["gtid"]["binlogPos"], until.as_str(), "not the decoy's 0-1-99999");
        assert_eq!(summary["until"]["transactions"], transactions);
        let restored = MariaDb::start_on(&target, 2).await;
        assert_eq!(restored.value("SELECT @@gtid_slave_pos").await, *until);
        assert_eq!(restored.rows("SELECT id FROM app.m ORDER BY id").await, ids);
        restored.stop().await;
    }
    assert_ne!(first, last);
}
