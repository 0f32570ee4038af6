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
