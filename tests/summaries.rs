//! The agent's summary is the contract between a Job and the controller, and it crosses upgrades: a
//! Job started by one release reports to the operator of the next. Summaries exactly as release 0.1.0
//! wrote them (`tests/fixtures/agent-summaries-0.1.0.jsonl`, one per operation) must parse into the
//! one `Summary` type and serialize back to the same document: renaming, removing or retyping a field
//! fails here.

use mysql_backup_operator::format::summary::{Failure, Summary};

const RELEASE_0_1_0: &str = include_str!("fixtures/agent-summaries-0.1.0.jsonl");

#[test]
fn summaries_of_the_previous_release_parse_and_round_trip() {
    let mut operations = Vec::new();
    for line in RELEASE_0_1_0.lines().filter(|l| !l.trim().is_empty()) {
        let summary = Summary::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        operations.push(summary.operation());
        let written: serde_json::Value = serde_json::to_value(&summary).unwrap();
        let expected: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(written, expected, "a {} summary no longer writes what it reads", summary.operation());
    }
    operations.sort();
    operations.dedup();
    assert_eq!(operations, ["backup", "binlogArchive", "delete", "prune", "restore", "verify"]);
}

#[test]
fn a_renamed_field_is_refused_naming_it() {
    let backup = RELEASE_0_1_0.lines().next().unwrap();
    let renamed = backup.replace("\"backupId\"", "\"id\"");
    let err = Summary::parse(&renamed).unwrap_err().to_string();
    assert!(err.starts_with("missing field `backupId`"), "{err}");
}

#[test]
fn a_failure_is_its_error() {
    let failure: Failure =
        serde_json::from_str(r#"{"error":"storage s3://b/p: writing chunks/ab/…: timed out"}"#).unwrap();
    assert_eq!(failure.error, "storage s3://b/p: writing chunks/ab/…: timed out");
    assert_eq!(
        serde_json::to_string(&failure).unwrap(),
        r#"{"error":"storage s3://b/p: writing chunks/ab/…: timed out"}"#
    );
}

/// What a pod's termination message holds; the controller reads nothing past it.
const TERMINATION_MESSAGE: usize = 4096;

/// Positions at the largest shape a summary carries: four replication domains in each MariaDB state
/// (a server that was a replica of three primaries), a long version string and binary-log name.
fn largest_positions() -> serde_json::Value {
    let domains = (0..4).map(|d| format!("{d}-4294967295-18446744073709551615")).collect::<Vec<_>>().join(",");
    serde_json::json!({"flavor": "mariadb", "version": "10.11.19-MariaDB-0+deb12u1-log-a-long-distribution-suffix",
        "serverId": 4294967295u32, "serverUuid": "3e11fa47-71ca-11e1-9e33-c80aa9429562",
        "gtid": {"flavor": "mariadb", "binlogPos": domains, "currentPos": domains, "purged": domains},
        "binlog": {"file": format!("{}.000123", "b".repeat(64)), "position": 18446744073709551615u64}})
}

/// A storage URL of 200 bytes: a 63-character bucket and a deep prefix.
fn long_url() -> String {
    let url = format!("s3://{}/{}", "b".repeat(63), "team/prod/eu-west-1/".repeat(7));
    url[..200].to_string()
}

#[test]
fn every_summary_kind_at_its_largest_shape_fits_a_termination_message() {
    use mysql_backup_operator::format::summary::{LISTED_IDS, PitrSummary};
    let url = long_url();
    let id = "20261130T170734Z-b53906";
    let ids: Vec<String> = (0..LISTED_IDS).map(|n| format!("20261130T{:06}Z-{n:06x}", n)).collect();
    let locks: Vec<String> = (0..100).map(|n| format!("backup-20261130T{:06}Z-{n:06x}", n)).collect();
    let (listed_locks, lock_count) = mysql_backup_operator::format::summary::listed(locks, 10);
    // 700 incrementals (a */15 binary-log schedule between weekly fulls) and 700 crossed gaps, each
    // described at length.
    let until = PitrSummary::new(
        "2026-11-30T17:07:34.123456789Z".into(),
        (0..700).map(|n| format!("20261130T{:06}Z-{n:06x}", n)),
        2100,
        Some(format!("{}.{}", "n".repeat(63), "s".repeat(63))),
        100_000,
        (0..700).map(|n| format!("gap before segment {n}: {}", "the server's binary logs were purged; ".repeat(10))),
        18446744073709551615,
    );
    let kinds = [
        serde_json::json!({"operation": "backup", "backupId": id, "storage": url,
            "manifest": format!("{url}/backups/{id}/manifest.json"), "method": "mariabackup",
            "positions": largest_positions(),
            "totals": {"files": u64::MAX, "dataBytes": u64::MAX, "storedBytes": u64::MAX, "uploadedBytes": u64::MAX,
                "chunks": u64::MAX, "reusedChunks": u64::MAX, "takenOverBytes": u64::MAX},
            "startedAt": "2026-11-30T17:07:34.322143094Z", "completedAt": "2026-11-30T17:07:34.336262067Z",
            "durationSeconds": 123456.123456789, "peakRssBytes": u64::MAX,
            "memory": {"childrenBytes": u64::MAX, "cgroupBytes": u64::MAX},
            "incremental": {"base": id, "from": largest_positions()["gtid"]},
            "catchup": {"base": id, "source": format!("{}:3306", "h".repeat(253)), "from": largest_positions()["gtid"]["binlogPos"],
                "reached": largest_positions()["gtid"]["binlogPos"], "readDatadir": format!("/{}", "d".repeat(120)),
                "restoreSeconds": 123456.123456789, "replicationSeconds": 123456.123456789}}),
        serde_json::json!({"operation": "restore", "backupId": id, "storage": url, "datadir": format!("/{}", "d".repeat(120)),
            "method": "mariabackup", "positions": largest_positions(), "files": u64::MAX, "bytes": u64::MAX,
            "transferSeconds": 123456.123456789, "prepareSeconds": 123456.123456789, "durationSeconds": 123456.123456789,
            "peakRssBytes": u64::MAX, "memory": {"childrenBytes": u64::MAX, "cgroupBytes": u64::MAX}, "until": until}),
        serde_json::json!({"operation": "delete", "backupId": id, "storage": url, "alreadyDeleted": false,
            "deletedChunks": u64::MAX, "freedBytes": u64::MAX, "keptChunks": u64::MAX, "deferredBy": listed_locks,
            "deferredByCount": lock_count, "durationSeconds": 123456.123456789}),
        serde_json::json!({"operation": "prune", "storage": url, "dryRun": false, "considered": u64::MAX, "kept": u64::MAX,
            "deleted": ids, "deletedCount": u64::MAX,
            "window": {"from": "2026-11-30T17:07:34.322143094Z", "to": "2026-11-30T17:07:34.322143094Z"},
            "sweep": {"deletedChunks": u64::MAX, "freedBytes": u64::MAX, "keptChunks": u64::MAX,
                "deferredBy": listed_locks, "deferredByCount": lock_count},
            "archiveSegmentsDeleted": u64::MAX, "durationSeconds": 123456.123456789}),
        serde_json::json!({"operation": "binlogArchive", "archive": format!("{}.{}", "n".repeat(63), "s".repeat(63)),
            "storage": url, "archivedPosition": largest_positions()["gtid"]["binlogPos"], "lastSegment": u64::MAX,
            "segments": u64::MAX, "transactions": u64::MAX, "duplicates": u64::MAX, "reconnects": u64::MAX, "gaps": u64::MAX,
            "durationSeconds": 123456.123456789}),
        serde_json::json!({"operation": "verify", "backupId": id, "storage": url,
            "report": {"chunksChecked": u64::MAX, "bytesChecked": u64::MAX, "damaged": []}, "durationSeconds": 123456.123456789}),
        serde_json::json!({"operation": "drill", "storage": url, "backupId": id, "until": "2026-11-30T17:07:34.322143094Z",
            "passed": true, "startedAt": "2026-11-30T17:07:34.322143094Z", "completedAt": "2026-11-30T17:07:34.322143094Z",
            "serverVersion": "10.11.19-MariaDB-0+deb12u1-log-a-long-distribution-suffix", "tablesChecked": u64::MAX,
            "engines": {"Aria": u64::MAX, "CSV": u64::MAX, "InnoDB": u64::MAX, "MEMORY": u64::MAX, "MyISAM": u64::MAX,
                "MRG_MyISAM": u64::MAX, "ROCKSDB": u64::MAX, "SEQUENCE": u64::MAX},
            "rows": u64::MAX, "position": {"source": "replicaPosition", "server": largest_positions()["gtid"]["binlogPos"],
                "manifest": largest_positions()["gtid"]["binlogPos"], "matches": true},
            "scratchBytes": u64::MAX, "peakRssBytes": u64::MAX,
            "memory": {"childrenBytes": u64::MAX, "cgroupBytes": u64::MAX}, "durations": {"restoreSeconds": 1.5, "startSeconds": 1.5, "checkSeconds": 1.5, "stopSeconds": 1.5, "totalSeconds": 1.5}}),
    ];
    let mut operations = Vec::new();
    for kind in kinds {
        // Each is a summary this release reads, whole: every field above is one of its.
        let summary = Summary::parse(&kind.to_string()).unwrap_or_else(|e| panic!("{e}: {kind}"));
        let written = serde_json::to_string(&summary).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&written).unwrap(), kind, "{}", summary.operation());
        assert!(written.len() < TERMINATION_MESSAGE, "a {} summary takes {} bytes", summary.operation(), written.len());
        eprintln!("largest {} summary: {} bytes", summary.operation(), written.len());
        operations.push(summary.operation());
    }
    operations.sort();
    assert_eq!(operations, ["backup", "binlogArchive", "delete", "drill", "prune", "restore", "verify"]);
    // The 700 are counted, 20 listed; the gaps likewise (5), each cut short.
    assert_eq!((until.incrementals.len(), until.incrementals_total()), (20, 700));
    assert_eq!((until.gaps_crossed.len(), until.gaps_crossed_total()), (5, 700));
    assert!(until.gaps_crossed.iter().all(|g| g.len() <= 160 && g.ends_with('…')), "{:?}", until.gaps_crossed);
    // A longest failure is cut to fit, too.
    let failure = serde_json::to_string(&Failure::of(&"x".repeat(100_000))).unwrap();
    assert!(failure.len() < TERMINATION_MESSAGE, "{}", failure.len());
}
