//! Throttled backups: `--max-upload-rate` holds every upload together to the rate (a 500 MB datadir
//! into the S3 server takes no less than its size ÷ rate), `--max-read-rate` holds what is read from
//! the server's files (cold, and `mariabackup` on a real MariaDB), and the progress lines report a
//! rate within the limit and the ETA at that rate. Durations and rates are bounded on one side only:
//! a slow machine cannot make them fail.

mod common;

use std::time::{Duration, Instant};

use common::*;

const MIB: f64 = 1024.0 * 1024.0;

/// Held by each test for its whole run: each measures rates and ETAs, so the other must not share the
/// machine's cores with it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A datadir of `files` files of `mib` MiB each that zstd cannot shrink.
fn random_datadir(dir: &std::path::Path, files: usize, mib: usize) -> std::path::PathBuf {
    let datadir = dir.join("files");
    std::fs::create_dir_all(datadir.join("app")).unwrap();
    for i in 0..files {
        std::fs::write(datadir.join(format!("app/t{i}.ibd")), random_bytes(mib << 20, 7 + 2 * i as u64)).unwrap();
    }
    datadir
}

fn cold(datadir: &std::path::Path, storage: &[String], extra: &[&str]) -> Vec<String> {
    let mut a = args(&["backup", "--method", "cold", "--progress-interval", "1", "--datadir"]);
    a.push(datadir.display().to_string());
    a.extend(storage.iter().cloned());
    a.extend(args(extra));
    a
}

/// A `key=value` field of a log line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split(&format!("{key}=")).nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Checks the progress lines between 20% and 80% under a limit of `limit_mib` MiB/s: their median rate
/// does not pass the limit by more than 15% (one-second lines see chunks complete a few at a time), and
/// each `eta_s` is the bytes left at the line's rate (`rate_mib_s` is rounded to a tenth, `eta_s` to a
/// second). Only upper bounds and agreement: a machine slower than the limit cannot make them fail.
/// How well an ETA predicts the end is the unit test of `datapath::progress`, on a synthetic clock.
fn progress_holds(stderr: &str, limit_mib: f64) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rate_mib_s=") && field(l, "percent").is_some_and(|p| (20.0..=80.0).contains(&p)))
        .collect();
    assert!(lines.len() >= 2, "progress lines mid-run:\n{stderr}");
    let mut rates: Vec<f64> = lines.iter().map(|l| field(l, "rate_mib_s").unwrap()).collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    assert!(median <= 1.15 * limit_mib, "median rate {median} MiB/s over the {limit_mib} MiB/s limit: {rates:?}");
    for l in lines {
        let rate = field(l, "rate_mib_s").unwrap();
        let left = field(l, "bytes_total").unwrap() - field(l, "bytes_done").unwrap();
        let expected = left / (rate * MIB);
        let eta = field(l, "eta_s").unwrap_or_else(|| panic!("no eta_s: {l}"));
        assert!(
            (eta - expected).abs() <= 1.0 + expected * 0.05 / rate,
            "eta_s {eta}, bytes left at the rate {expected:.1}: {l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_limit_holds_every_upload_together_to_the_rate() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempdir();
    let datadir = random_datadir(dir.path(), 10, 50);
    let s3 = S3Server::start();
    let storage = s3.storage_args("limited");
    let started = Instant::now();
    let run = agent(&cold(&datadir, &storage, &["--max-upload-rate", "20MiB", "--parallel", "4"]), &s3.env()).await;
    let took = started.elapsed().as_secs_f64();
    let summary = run.summary();
    let uploaded = summary["totals"]["uploadedBytes"].as_u64().unwrap() as f64;
    assert!(uploaded >= 500.0 * MIB, "incompressible: {uploaded}");
    let floor = uploaded / (20.0 * MIB);
    eprintln!("uploaded {:.0} MiB in {took:.1} s; size ÷ rate is {floor:.1} s", uploaded / MIB);
    assert!(took >= floor * 0.9, "took {took:.1} s, less than {floor:.1} s - 10%");
    progress_holds(&run.stderr, 20.0);

    // The same data again: nothing is uploaded, so the limit costs nothing.
    let started = Instant::now();
    let again = agent(&cold(&datadir, &storage, &["--max-upload-rate", "20MiB"]), &s3.env()).await.summary();
    assert_eq!(again["totals"]["uploadedBytes"], 0);
    assert!(started.elapsed() < Duration::from_secs_f64(floor / 2.0), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_limit_holds_cold_and_mariabackup_reads_to_the_rate() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempdir();
    let datadir = random_datadir(dir.path(), 4, 25);
    let storage = vec!["--storage".to_string(), format!("file://{}", dir.path().join("b").display())];
    let started = Instant::now();
    let run = agent(&cold(&datadir, &storage, &["--max-read-rate", "20Mi"]), &[]).await;
    let took = started.elapsed().as_secs_f64();
    let data = run.summary()["totals"]["dataBytes"].as_u64().unwrap() as f64;
    let floor = data / (20.0 * MIB);
    eprintln!("cold: read {:.0} MiB in {took:.1} s; size ÷ rate is {floor:.1} s", data / MIB);
    assert!(took >= floor * 0.9, "cold took {took:.1} s, less than {floor:.1} s - 10%");
    progress_holds(&run.stderr, 20.0);

    // mariabackup: its stream is read at the rate, and it is given --throttle.
    let db = MariaDb::start(dir.path(), 31).await;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id INT PRIMARY KEY, v LONGBLOB)").await;
    for i in 0..8 {
        db.exec(&format!("INSERT INTO app.t SELECT {i} * 1000 + seq, RANDOM_BYTES(1024) FROM app.seq_1_to_1000")).await;
    }
    let mut hot = mariabackup_args(&db.url(), &db.datadir, &storage);
    hot.extend(args(&["--max-read-rate", "8MiB", "--progress-interval", "1"]));
    let started = Instant::now();
    let run = agent(&hot, &[]).await;
    let took = started.elapsed().as_secs_f64();
    let summary = run.summary();
    let data = summary["totals"]["dataBytes"].as_u64().unwrap() as f64;
    let floor = data / (8.0 * MIB);
    eprintln!("mariabackup: read {:.0} MiB in {took:.1} s; size ÷ rate is {floor:.1} s", data / MIB);
    assert!(took >= floor * 0.9, "mariabackup took {took:.1} s, less than {floor:.1} s - 10%");
    assert_eq!(summary["method"], "mariabackup");
}
