//! The checks of a restore drill, run on a private server started on restored data: `CHECK TABLE` and
//! `COUNT(*)` on every table of every engine, and the server's own position against the manifest's.
//! Hashes prove the bytes are those copied; these prove a server can use them.

use std::{collections::BTreeMap, path::Path};

use mysql_async::prelude::Queryable;

use crate::format::drill::{PositionCheck, PositionSource, TableCount, TableProblem};
use crate::mysql::gtid::MariaGtidPos;
use crate::mysql::position::BinlogCoordinate;
use crate::mysql::private_server::{PrivateServer, PrivateServerError};

/// Errors that end a drill's checks early.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The private server failed.
    #[error(transparent)]
    Server(#[from] PrivateServerError),
    /// The server died during a check.
    #[error("the server stopped ({status}) while checking {table}; its log ends with:\n{log}")]
    Crashed { table: String, status: String, log: String },
}

/// A table of the restored server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Storage engine.
    pub engine: String,
}

impl Table {
    /// `schema.name`, for people.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `` `schema`.`name` ``, for statements.
    fn quoted(&self) -> String {
        let q = |s: &str| format!("`{}`", s.replace('`', "``"));
        format!("{}.{}", q(&self.schema), q(&self.name))
    }
}

/// What the checks found.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// Every table, with its rows (0 for a table that failed its check).
    pub counts: Vec<TableCount>,
    /// Tables that failed, with the server's message.
    pub failed: Vec<TableProblem>,
    /// Tables per engine.
    pub engines: BTreeMap<String, u64>,
    /// Rows over every table.
    pub rows: u64,
}

/// Every base table of the server, the system schemas' included (`mysql` holds the grants a restored
/// server needs); not the virtual schemas.
pub async fn inventory(server: &PrivateServer) -> Result<Vec<Table>, DrillError> {
    let mut conn = server.conn().await?;
    let sql = "SELECT table_schema, table_name, COALESCE(engine, '') FROM information_schema.tables \
               WHERE table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') \
               AND table_schema NOT IN ('information_schema', 'performance_schema') \
               ORDER BY table_schema, table_name";
    let rows: Vec<(String, String, String)> = conn
        .query(sql)
        .await
        .map_err(|source| PrivateServerError::Query { operation: "listing the tables".into(), source })?;
    Ok(rows.into_iter().map(|(schema, name, engine)| Table { schema, name, engine }).collect())
}

/// Reads `CHECK TABLE`'s result rows (`Table`, `Op`, `Msg_type`, `Msg_text`): an `error` row, or a
/// final status other than `OK`, is a failure, reported with the server's words. An engine that cannot
/// check (`note: The storage engine for the table doesn't support check`) passes: its rows are still
/// counted.
pub fn check_verdict(rows: &[(String, String)]) -> Result<(), String> {
    let errors: Vec<&str> =
        rows.iter().filter(|(kind, _)| kind.eq_ignore_ascii_case("error")).map(|(_, text)| text.as_str()).collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    match rows.iter().rev().find(|(kind, _)| kind.eq_ignore_ascii_case("status")) {
        Some((_, text)) if !text.eq_ignore_ascii_case("OK") => Err(text.clone()),
        _ => Ok(()),
    }
}

/// Runs `CHECK TABLE` and `COUNT(*)` on every table, one at a time. A damaged table is recorded and
/// the others still checked; a server that dies ends the checks, naming the table it died on.
pub async fn check_tables(server: &mut PrivateServer, tables: &[Table]) -> Result<Checked, DrillError> {
    let mut checked = Checked::default();
    for table in tables {
        *checked.engines.entry(table.engine.clone()).or_default() += 1;
        let outcome = check_one(server, table).await;
        let rows = match outcome {
            Ok(rows) => rows,
            Err(message) => {
                if let Some(status) = server.has_exited() {
                    return Err(DrillError::Crashed { table: table.display(), status, log: server.log_tail() });
                }
                tracing::warn!(table = %table.display(), %message, "table failed its check");
                checked.failed.push(TableProblem { table: table.display(), message });
                0
            }
        };
        checked.rows += rows;
        checked.counts.push(TableCount { table: table.display(), engine: table.engine.clone(), rows });
    }
    Ok(checked)
}

async fn check_one(server: &PrivateServer, table: &Table) -> Result<u64, String> {
    let mut conn = server.conn().await.map_err(|e| e.to_string())?;
    let rows: Vec<(String, String, String, String)> =
        conn.query(format!("CHECK TABLE {}", table.quoted())).await.map_err(|e| e.to_string())?;
    let verdict: Vec<(String, String)> = rows.into_iter().map(|(_, _, kind, text)| (kind, text)).collect();
    check_verdict(&verdict)?;
    let count: Option<u64> =
        conn.query_first(format!("SELECT COUNT(*) FROM {}", table.quoted())).await.map_err(|e| e.to_string())?;
    Ok(count.unwrap_or(0))
}

/// The position the restored server holds, read from `source` (InnoDB's from the file `mariadb-backup
/// --prepare` wrote with it into `datadir`); `None` when the datadir has no such record.
pub async fn server_position(
    server: &PrivateServer,
    source: PositionSource,
    datadir: &Path,
) -> Result<Option<String>, DrillError> {
    let variable = match source {
        PositionSource::BinaryLogs => "@@gtid_binlog_pos",
        PositionSource::ReplicaPosition => "@@gtid_slave_pos",
        PositionSource::Innodb => {
            let text = std::fs::read_to_string(datadir.join(INNODB_POSITION_FILE)).unwrap_or_default();
            return Ok(innodb_binlog_coordinate(&text).map(|c| c.to_string()));
        }
    };
    let mut conn = server.conn().await?;
    let value: Option<String> = conn
        .query_first(format!("SELECT {variable}"))
        .await
        .map_err(|source| PrivateServerError::Query { operation: format!("reading {variable}"), source })?;
    Ok(Some(value.unwrap_or_default()))
}

/// The file in which `mariadb-backup --prepare` records the binary-log coordinate of the last
/// transaction InnoDB committed, as InnoDB's recovery found it.
pub const INNODB_POSITION_FILE: &str = "xtrabackup_binlog_pos_innodb";

/// Parses [`INNODB_POSITION_FILE`]: `./mysql-bin.000002<TAB>1234`.
pub fn innodb_binlog_coordinate(text: &str) -> Option<BinlogCoordinate> {
    let (path, position) = text.trim().split_once(char::is_whitespace)?;
    let file = path.rsplit('/').next().unwrap_or(path).to_string();
    Some(BinlogCoordinate { file, position: position.trim().parse().ok()? })
}

/// Compares the server's position with the manifest's. GTID positions must be equal, compared as
/// sets of domains (the order a server prints them in does not matter). InnoDB's coordinate is that
/// of the last transaction InnoDB committed: a transaction of another engine (Aria, MyISAM) may follow
/// it up to the recorded position, so it must not lie past it — data past the recorded position would
/// be applied twice by a replica started there.
pub fn compare_position(source: PositionSource, server: &str, manifest: &str) -> PositionCheck {
    let matches = match source {
        PositionSource::Innodb => match (coordinate(server), coordinate(manifest)) {
            (Some(a), Some(b)) => a <= b,
            _ => false,
        },
        PositionSource::BinaryLogs | PositionSource::ReplicaPosition => {
            match (server.parse::<MariaGtidPos>(), manifest.parse::<MariaGtidPos>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => server == manifest,
            }
        }
    };
    PositionCheck { source, server: server.to_string(), manifest: manifest.to_string(), matches }
}

/// `file.000042:1234` as (42, 1234), comparable in binary-log order.
fn coordinate(text: &str) -> Option<(u64, u64)> {
    let (file, position) = text.rsplit_once(':')?;
    let (_, number) = file.rsplit_once('.')?;
    Some((number.parse().ok()?, position.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[(&str, &str)]) -> Vec<(String, String)> {
        r.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn check_table_verdicts() {
        assert_eq!(check_verdict(&rows(&[("status", "OK")])), Ok(()));
        assert_eq!(check_verdict(&rows(&[("note", "The storage engine for the table doesn't support check")])), Ok(()));
        assert_eq!(
            check_verdict(&rows(&[
                ("Warning", "InnoDB: The B-tree of index PRIMARY is corrupted."),
                ("error", "Corrupt")
            ])),
            Err("Corrupt".into())
        );
        assert_eq!(
            check_verdict(&rows(&[("status", "Table is marked as crashed")])),
            Err("Table is marked as crashed".into())
        );
    }

    #[test]
    fn innodb_coordinate_from_the_prepare_record() {
        assert_eq!(
            innodb_binlog_coordinate("./mysql-bin.000002\t1234\n"),
            Some(BinlogCoordinate { file: "mysql-bin.000002".into(), position: 1234 })
        );
        assert_eq!(innodb_binlog_coordinate(""), None);
    }

    #[test]
    fn positions_compare_as_sets_and_innodb_may_trail_the_record() {
        let check = compare_position(PositionSource::BinaryLogs, "1-1-5,0-1-42", "0-1-42,1-1-5");
        assert!(check.matches);
        assert!(!compare_position(PositionSource::ReplicaPosition, "0-1-41", "0-1-42").matches);
        let innodb = |server, manifest| compare_position(PositionSource::Innodb, server, manifest).matches;
        assert!(innodb("mysql-bin.000002:1234", "mysql-bin.000002:1234"));
        assert!(innodb("mysql-bin.000002:789", "mysql-bin.000002:1142"), "an Aria transaction came last");
        assert!(innodb("mysql-bin.000009:789", "mysql-bin.000010:4"), "the log rotated since");
        assert!(!innodb("mysql-bin.000002:1500", "mysql-bin.000002:1142"), "InnoDB data past the record");
        assert!(!innodb("", "mysql-bin.000002:1142"));
    }
}
