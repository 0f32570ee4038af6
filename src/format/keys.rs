//! The object-key layout under a storage prefix — part of the compatibility promise (see
//! `docs/storage-format.md`). Every key the data path reads or writes is made here, relative to the
//! prefix; [`crate::storage`] only joins them to it.
//!
//! ```text
//! backups/<backup-id>/manifest.json     written last: a backup exists iff this exists
//! backups/<backup-id>/drill.json        the backup's last restore drill (after the manifest)
//! chunks/<hh>/<blake3-hex>               one chunk, shared by every backup under the prefix
//! locks/<name>.json                      a running backup's or chunk sweep's lock
//! binlogs/<archive>/<seq>-<hash>.binlog.zst   one segment of a continuous binary-log archive
//! binlogs/<archive>/<seq>.json           its index entry, written after it
//! encryption.json                        the keys of an encrypted prefix (the one object in the clear)
//! ```

use crate::format::manifest::ChunkHash;

/// Where the backups' manifests are.
pub const BACKUPS: &str = "backups";
/// Where the chunks are.
pub const CHUNKS: &str = "chunks";
/// Where the locks are.
pub const LOCKS: &str = "locks";
/// Where the binary-log archives are.
pub const BINLOGS: &str = "binlogs";
/// The key history of an encrypted prefix.
pub const ENCRYPTION: &str = "encryption.json";
/// The file name of a manifest in its backup's folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Key of backup `backup_id`'s manifest.
pub fn manifest(backup_id: &str) -> String {
    format!("{BACKUPS}/{backup_id}/{MANIFEST_FILE}")
}

/// The file name of a drill record in its backup's folder.
pub const DRILL_FILE: &str = "drill.json";

/// Key of backup `backup_id`'s last drill record.
pub fn drill(backup_id: &str) -> String {
    format!("{BACKUPS}/{backup_id}/{DRILL_FILE}")
}

/// Key of a chunk: under the first two hex digits of its hash, so no folder holds millions.
pub fn chunk(hash: &ChunkHash) -> String {
    let hex = hash.to_string();
    format!("{CHUNKS}/{}/{hex}", &hex[..2])
}

/// Key of lock `name` (`backup-<id>` or `sweep-<random>`).
pub fn lock(name: &str) -> String {
    format!("{LOCKS}/{name}.json")
}

/// Folder of binary-log archive `archive`, or of every archive with `None`.
pub fn archive_dir(archive: Option<&str>) -> String {
    match archive {
        Some(a) => format!("{BINLOGS}/{a}"),
        None => BINLOGS.to_string(),
    }
}

/// Key of object `name` of binary-log archive `archive` (names in [`crate::format::archive_index`]).
pub fn archive_object(archive: &str, name: &str) -> String {
    format!("{BINLOGS}/{archive}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_promised_one() {
        let hash: ChunkHash = "ab".repeat(32).parse().unwrap();
        assert_eq!(manifest("20261130T020000Z-00abcd"), "backups/20261130T020000Z-00abcd/manifest.json");
        assert_eq!(drill("20261130T020000Z-00abcd"), "backups/20261130T020000Z-00abcd/drill.json");
        assert_eq!(chunk(&hash), format!("chunks/ab/{}", "ab".repeat(32)));
        assert_eq!(lock("sweep-00ff"), "locks/sweep-00ff.json");
        assert_eq!(archive_dir(Some("db.nightly")), "binlogs/db.nightly");
        assert_eq!(archive_dir(None), "binlogs");
        assert_eq!(archive_object("db.nightly", "000000000042.json"), "binlogs/db.nightly/000000000042.json");
    }
}
