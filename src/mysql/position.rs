//! The server identity and replication positions recorded with every backup, taken at the method's
//! consistent point: the stored types are in [`crate::format::position`]; reading them from a
//! server's files is here.

use crate::mysql::gtid::MariaGtidPos;

pub use crate::format::position::{BinlogCoordinate, Flavor, GtidState, Positions};

/// Parses the position line mariadb-backup writes to `xtrabackup_binlog_info`:
/// `file<TAB>offset[<TAB>gtid]`. Returns `None` when the file is empty (binary logging off).
pub fn parse_xtrabackup_binlog_info(text: &str) -> Result<Option<(BinlogCoordinate, MariaGtidPos)>, String> {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let mut fields = line.split('\t');
    let file = fields.next().unwrap_or("").to_string();
    let position = fields
        .next()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("xtrabackup_binlog_info: no byte offset in {line:?}"))?;
    let gtid = fields.next().unwrap_or("").parse().map_err(|e| format!("xtrabackup_binlog_info: {e}"))?;
    Ok(Some((BinlogCoordinate { file, position }, gtid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_from_version() {
        assert_eq!(Flavor::from_version("10.11.19-MariaDB-0+deb12u1-log"), Flavor::Mariadb);
        assert_eq!(Flavor::from_version("8.0.36"), Flavor::Mysql);
    }

    #[test]
    fn parses_binlog_info_written_by_mariadb_backup() {
        let (coord, gtid) = parse_xtrabackup_binlog_info("mysql-bin.000001\t1287\t0-1-5\n").unwrap().unwrap();
        assert_eq!(coord, BinlogCoordinate { file: "mysql-bin.000001".into(), position: 1287 });
        assert_eq!(gtid.to_string(), "0-1-5");
        assert_eq!(parse_xtrabackup_binlog_info("").unwrap(), None);
        assert_eq!(
            parse_xtrabackup_binlog_info("mysql-bin.000001\n").unwrap_err(),
            "xtrabackup_binlog_info: no byte offset in \"mysql-bin.000001\""
        );
    }

    #[test]
    fn positions_serialise_with_flavor_tagged_gtids() {
        let p = Positions {
            flavor: Some(Flavor::Mariadb),
            gtid: Some(GtidState::Mariadb {
                binlog_pos: "0-1-5".parse().unwrap(),
                current_pos: None,
                purged: Some("".parse().unwrap()),
            }),
            binlog: Some(BinlogCoordinate { file: "b.000001".into(), position: 4 }),
            ..Default::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"flavor":"mariadb","gtid":{"flavor":"mariadb","binlogPos":"0-1-5","purged":""},"binlog":{"file":"b.000001","position":4}}"#
        );
        assert_eq!(serde_json::from_str::<Positions>(&json).unwrap(), p);
        assert_eq!(p.short(), "0-1-5");
    }
}
