//! Which binary log files an incremental backup needs: a pure choice over the GTID state at the start
//! of each file (MariaDB's `Gtid_list`, MySQL's `Previous_gtids`), so that the files cover every
//! transaction after a given position, and a clear error when the ones needed were purged.
//!
//! File `i` holds the transactions between its start state and the next file's; it is needed when the
//! next file's start state holds something the `from` position does not. The first file needed must
//! start at a state `from` already holds — otherwise the transactions between `from` and that file are
//! gone from the server (purged), and no incremental can be taken from `from`.

use crate::mysql::gtid::MariaGtidPos;
use crate::mysql::position::GtidState;

/// A binary log file and the GTID state at its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStart {
    /// File name (`mysql-bin.000042`).
    pub name: String,
    /// GTID state at its start.
    pub start: GtidState,
}

/// Why no range can be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The server has no closed binary log.
    #[error("the server has no closed binary log to back up")]
    NoFiles,
    /// The binary logs after `from` were purged.
    #[error(
        "the binary logs after {from} were purged: the oldest, {oldest}, starts at {oldest_start}; take a full \
         backup, then incrementals from it"
    )]
    Purged { from: String, oldest: String, oldest_start: String },
    /// `from` and the files are of different server families.
    #[error("position {from} is not of the same server family as the binary logs ({file})")]
    Flavor { from: String, file: String },
}

/// Whether state `a` holds every transaction state `b` holds.
pub fn holds(a: &GtidState, b: &GtidState) -> Option<bool> {
    match (a, b) {
        (GtidState::Mariadb { binlog_pos: a, .. }, GtidState::Mariadb { binlog_pos: b, .. }) => {
            Some(b.gtids().all(|g| a.contains(g)))
        }
        (GtidState::Mysql { executed: a, .. }, GtidState::Mysql { executed: b, .. }) => Some(a.contains_set(b)),
        _ => None,
    }
}

fn short(state: &GtidState) -> String {
    match state {
        GtidState::Mariadb { binlog_pos, .. } if binlog_pos.is_empty() => "(no transaction)".into(),
        GtidState::Mariadb { binlog_pos, .. } => binlog_pos.to_string(),
        GtidState::Mysql { executed, .. } if executed.is_empty() => "(no transaction)".into(),
        GtidState::Mysql { executed, .. } => executed.to_string(),
    }
}

/// The files to back up after `from`, given the closed files (oldest first) and the state at the start
/// of the current file (`to`: where the incremental ends). Empty when nothing was written since `from`.
pub fn files_after(closed: &[FileStart], to: &GtidState, from: &GtidState) -> Result<Vec<String>, RangeError> {
    let Some(oldest) = closed.first() else { return Err(RangeError::NoFiles) };
    let flavor_err = |file: &str| RangeError::Flavor { from: short(from), file: file.to_string() };
    if holds(from, to).ok_or_else(|| flavor_err(&oldest.name))? {
        return Ok(Vec::new());
    }
    if !holds(from, &oldest.start).ok_or_else(|| flavor_err(&oldest.name))? {
        return Err(RangeError::Purged {
            from: short(from),
            oldest: oldest.name.clone(),
            oldest_start: short(&oldest.start),
        });
    }
    let mut needed = Vec::new();
    for (i, file) in closed.iter().enumerate() {
        let next = closed.get(i + 1).map(|f| &f.start).unwrap_or(to);
        if !holds(from, next).ok_or_else(|| flavor_err(&file.name))? {
            needed.push(file.name.clone());
        }
    }
    Ok(needed)
}

/// A MariaDB state from a position string, for callers and tests.
pub fn mariadb(pos: &str) -> Result<GtidState, crate::mysql::gtid::GtidError> {
    let p: MariaGtidPos = pos.parse()?;
    Ok(GtidState::Mariadb { binlog_pos: p, current_pos: None, purged: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::gtid::MysqlGtidSet;

    fn m(pos: &str) -> GtidState {
        mariadb(pos).unwrap()
    }

    fn files(starts: &[(&str, &str)]) -> Vec<FileStart> {
        starts.iter().map(|(n, s)| FileStart { name: n.to_string(), start: m(s) }).collect()
    }

    #[test]
    fn picks_the_files_holding_transactions_after_from() {
        let closed = files(&[("b.1", ""), ("b.2", "0-1-10"), ("b.3", "0-1-20"), ("b.4", "0-1-30")]);
        let to = m("0-1-40");
        assert_eq!(files_after(&closed, &to, &m("0-1-25")).unwrap(), ["b.3", "b.4"]);
        assert_eq!(files_after(&closed, &to, &m("0-1-20")).unwrap(), ["b.3", "b.4"], "b.2 ends exactly at from");
        assert_eq!(files_after(&closed, &to, &m("0-1-19")).unwrap(), ["b.2", "b.3", "b.4"]);
        assert_eq!(
            files_after(&closed, &to, &m("")).unwrap(),
            ["b.1", "b.2", "b.3", "b.4"],
            "from nothing, every file"
        );
        assert!(files_after(&closed, &to, &m("0-1-40")).unwrap().is_empty(), "nothing since from");
    }

    #[test]
    fn several_domains_must_all_be_held() {
        let closed = files(&[("b.1", "0-1-5,1-2-100"), ("b.2", "0-1-9,1-2-100"), ("b.3", "0-1-9,1-2-150")]);
        let to = m("0-1-12,1-2-150");
        // Domain 1 moved in b.2, domain 0 in b.1 and b.3.
        assert_eq!(files_after(&closed, &to, &m("0-1-9,1-2-120")).unwrap(), ["b.2", "b.3"]);
        assert_eq!(files_after(&closed, &to, &m("0-1-9,1-2-150")).unwrap(), ["b.3"]);
    }

    #[test]
    fn purged_binlogs_are_named() {
        let closed = files(&[("mysql-bin.000005", "0-1-50"), ("mysql-bin.000006", "0-1-60")]);
        assert_eq!(
            files_after(&closed, &m("0-1-70"), &m("0-1-42")).unwrap_err().to_string(),
            "the binary logs after 0-1-42 were purged: the oldest, mysql-bin.000005, starts at 0-1-50; take a full \
             backup, then incrementals from it"
        );
        assert_eq!(files_after(&[], &m("0-1-70"), &m("0-1-42")).unwrap_err(), RangeError::NoFiles);
    }

    #[test]
    fn mysql_sets_work_the_same_way() {
        let s = |t: &str| GtidState::Mysql { executed: t.parse::<MysqlGtidSet>().unwrap(), purged: None };
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let closed = vec![
            FileStart { name: "b.1".into(), start: s(&format!("{u}:1-10")) },
            FileStart { name: "b.2".into(), start: s(&format!("{u}:1-20")) },
        ];
        let to = s(&format!("{u}:1-30"));
        assert_eq!(files_after(&closed, &to, &s(&format!("{u}:1-15"))).unwrap(), ["b.1", "b.2"]);
        assert_eq!(files_after(&closed, &to, &s(&format!("{u}:1-20"))).unwrap(), ["b.2"]);
        assert!(matches!(files_after(&closed, &to, &s(&format!("{u}:1-5"))), Err(RangeError::Purged { .. })));
        assert!(matches!(files_after(&closed, &to, &m("0-1-1")), Err(RangeError::Flavor { .. })));
    }
}
