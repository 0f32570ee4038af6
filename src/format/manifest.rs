//! The backup manifest: the versioned JSON document, written last, whose presence is what makes a backup
//! exist. Its format is a compatibility promise (see the README's "Storage layout" section): readers
//! refuse versions they do not know, and restore refuses entries that could write outside the target.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Component, Path},
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::position::Positions;

/// The newest manifest format this build reads. Format 2 stores the same JSON document as format 1, as
/// one zstd frame: a 10 TB backup's 2.6 million chunk references take a third of the bytes, and are
/// parsed as they are decompressed. Format 1 (plain JSON) is still read. Format 3 is format 2 with a
/// method a reader of format 2 does not know (`catchup`): such a reader says a newer build wrote it
/// instead of failing on the value. Backups of the other methods are still written as format 2
/// (see [`MethodKind::format_version`]), which every earlier release reads.
pub const FORMAT_VERSION: u32 = 3;

/// The first bytes of a zstd frame: a format 2 manifest.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Errors found in a manifest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The manifest is not JSON of the expected shape.
    #[error("manifest of backup {backup}: not a valid manifest: {reason}")]
    Parse { backup: String, reason: String },
    /// The manifest was written by a newer format than this build reads.
    #[error(
        "manifest of backup {backup}: format version {found} is newer than this build reads ({FORMAT_VERSION}); upgrade mysql-backup-operator"
    )]
    UnsupportedVersion { backup: String, found: u32 },
    /// A file path is absolute, contains `..`, or is otherwise unsafe to join to a target directory.
    #[error("manifest of backup {backup}: refusing unsafe path {path:?}: {reason}")]
    UnsafePath { backup: String, path: String, reason: &'static str },
    /// A file is listed twice.
    #[error("manifest of backup {backup}: file {path:?} is listed twice")]
    DuplicatePath { backup: String, path: String },
    /// A file's chunks do not cover it exactly, in order.
    #[error("manifest of backup {backup}: chunks of file {path:?} do not cover its {size} bytes exactly")]
    ChunkLayout { backup: String, path: String, size: u64 },
}

/// The backup method that produced a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// File copy of a datadir nothing writes to.
    Cold,
    /// `mariadb-backup --backup --stream=mbstream`, prepared on restore.
    Mariabackup,
    /// Closed binary logs since a position: an incremental on top of another backup.
    Binlog,
    /// The newest backup restored into scratch space, caught up with the source by replication, then
    /// copied cold: a full backup that reads nothing of the source but its replication stream.
    Catchup,
    /// MyRocks: RocksDB checkpoints in rounds, SST files storage already holds taken over unread, the
    /// rest of the server by `mariadb-backup` under the same commit block; prepared on restore.
    Myrocks,
}

impl MethodKind {
    /// The format version of a manifest of this method: the oldest that can say it.
    pub fn format_version(self) -> u32 {
        match self {
            Self::Catchup | Self::Myrocks => 3,
            Self::Cold | Self::Mariabackup | Self::Binlog => 2,
        }
    }

    /// The lower-case name used on the command line and in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Mariabackup => "mariabackup",
            Self::Binlog => "binlog",
            Self::Catchup => "catchup",
            Self::Myrocks => "myrocks",
        }
    }
}

/// The directory a file's path is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Base {
    /// The server's datadir (for `mariabackup`, the backup directory that becomes the datadir).
    Datadir,
    /// The binary log directory, when it lies outside the datadir.
    BinlogDir,
}

/// What restore must do after the files are in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Prepare {
    /// Nothing: the files are a datadir as they are.
    None,
    /// `mariadb-backup --prepare --target-dir <datadir>`.
    Mariabackup,
}

/// How chunks were made and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunking {
    /// Content hash of the original chunk bytes; the chunk's object name: `blake3`, or `blake3-keyed`
    /// when the backup is encrypted (keyed with a key derived from the encryption key).
    pub hash: String,
    /// Compression of stored chunks. Always `zstd`.
    pub compression: String,
    /// zstd level used for newly uploaded chunks (reused chunks keep the level they were stored with).
    pub level: i32,
    /// Maximum chunk length in bytes.
    pub chunk_size: u64,
}

/// A chunk's BLAKE3 hash: 32 bytes in memory (a 10 TB backup holds millions), 64 lower-case hex
/// digits in manifests and object keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// The hash of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl std::fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 64];
        // 32 bytes always encode into 64 hex digits.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::str::FromStr for ChunkHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if !is_chunk_hash(s) || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(format!("malformed chunk hash {s:?}: expected 64 lower-case hex digits"));
        }
        Ok(Self(out))
    }
}

impl Serialize for ChunkHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChunkHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ChunkHash;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 lower-case hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ChunkHash, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// One chunk of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkRef {
    /// Offset of the chunk in the file.
    pub offset: u64,
    /// Length of the original bytes.
    pub length: u64,
    /// Length of the stored (compressed) object.
    pub stored_length: u64,
    /// BLAKE3 hash of the original bytes (lower-case hex in the manifest).
    pub hash: ChunkHash,
}

/// One file of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Directory `path` is relative to.
    pub base: Base,
    /// Relative path with `/` separators.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Chunks in offset order, covering `0..size` without gaps.
    pub chunks: Vec<ChunkRef>,
    /// BLAKE3 (hex) of the file's last [`TAIL_BYTES`] (all of it when smaller), for RocksDB SST files of
    /// the `myrocks` method: an SST's tail holds its properties block, which names the database session
    /// that wrote it and its file number — RocksDB's unique id of the file. A later backup takes the file
    /// over unread only when name, size and tail all match, so a server restored from a backup (a new
    /// session, file numbers reused) never passes its files for another's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<String>,
}

/// How much of a file's end [`FileEntry::tail`] hashes.
pub const TAIL_BYTES: u64 = 64 * 1024;

/// Sizes and counts of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Number of files.
    pub files: u64,
    /// Bytes of original data.
    pub data_bytes: u64,
    /// Bytes the backup's chunks take in storage (counting each distinct chunk once).
    pub stored_bytes: u64,
    /// Bytes this run uploaded (chunks storage did not hold yet).
    pub uploaded_bytes: u64,
    /// Number of chunk references.
    pub chunks: u64,
    /// Chunks storage already held, not uploaded again.
    pub reused_chunks: u64,
    /// Bytes of files taken over from an earlier backup without being read (the `myrocks` method's
    /// SST files that storage already holds).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub taken_over_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The manifest document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Format version; see [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Backup id: `YYYYMMDDTHHMMSSZ-xxxxxx`, sorts by start time.
    pub backup_id: String,
    /// Method that took the backup.
    pub method: MethodKind,
    /// When the backup started.
    pub started_at: Timestamp,
    /// When the last chunk was stored, just before the manifest was written.
    pub completed_at: Timestamp,
    /// Server identity and replication positions at the consistent point.
    pub positions: Positions,
    /// Chunking, hashing and compression parameters.
    pub chunking: Chunking,
    /// What restore must do after writing the files.
    pub prepare: Prepare,
    /// Sizes and counts.
    pub totals: Totals,
    /// Every file with its chunks.
    pub files: Vec<FileEntry>,
    /// Labels given at backup time (`--tag key=value`), e.g. the schedule that took it; retention
    /// applies to the backups carrying a schedule's tags. Optional: absent in older manifests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// For an incremental backup: what it builds on. Optional: absent for full backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// For an encrypted backup: the key that sealed its objects and named its chunks. Optional:
    /// absent for backups stored in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How an encrypted backup's objects are sealed (see [`crate::encryption`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// The cipher and framing: `xchacha20poly1305-stream-1mib`.
    pub cipher: String,
    /// The fingerprint of the key; never the key.
    pub key: crate::encryption::Fingerprint,
}

/// What an incremental backup builds on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incremental {
    /// The backup whose end position `from` is (`--from auto`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The GTID state the incremental starts after.
    pub from: crate::mysql::position::GtidState,
}

/// The tag naming the BackupSchedule that took a backup (`<namespace>/<name>`): retention applies to a
/// schedule's backups, and an incremental (`--from auto`) continues the newest backup of its schedule.
/// The operator labels its objects with the same key.
pub const TAG_SCHEDULE: &str = "mysqlbackup.dev/schedule";

/// Makes a new backup id from the start time and a random suffix; ids sort by start time.
pub fn new_backup_id(started_at: Timestamp) -> String {
    format!("{}-{:06x}", started_at.strftime("%Y%m%dT%H%M%SZ"), rand::random::<u32>() & 0xff_ffff)
}

/// Whether `id` has the shape of a backup id (also keeps ids usable as object-key components).
pub fn is_backup_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 23
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..].iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// Checks that `path` is a plain relative path: no root, no `..`, no `.`, no empty component.
pub fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if path.contains('\\') {
        return Err("contains a backslash");
    }
    if path.starts_with('/') {
        return Err("is absolute");
    }
    if path.split('/').any(str::is_empty) {
        return Err("has an empty component");
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
            Component::CurDir => return Err("contains '.'"),
        }
    }
    Ok(())
}

/// Whether `hash` is 64 lower-case hex digits.
pub fn is_chunk_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

impl Manifest {
    /// The stored form (format 2): the JSON document compressed as it is written, so the whole text is
    /// never held in memory.
    pub fn to_stored(&self) -> std::io::Result<Vec<u8>> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
        serde_json::to_writer(&mut encoder, self)?;
        encoder.finish()
    }

    /// Parses and validates the stored manifest of backup `backup`, in either format, decompressing
    /// as it parses.
    pub fn from_stored(backup: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.starts_with(&ZSTD_MAGIC) {
            let reader = || zstd::stream::read::Decoder::new(bytes).map(std::io::BufReader::new);
            let parse_err = |e: std::io::Error| ManifestError::Parse { backup: backup.into(), reason: e.to_string() };
            Self::parse(backup, || reader().map_err(parse_err))
        } else {
            Self::parse(backup, || Ok(bytes))
        }
    }

    /// Parses the document `open` reads. Only when that fails is it read again for its version alone,
    /// to say that a newer build wrote it rather than how its fields differ.
    fn parse<R: std::io::Read>(
        backup: &str,
        open: impl Fn() -> Result<R, ManifestError>,
    ) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct VersionOnly {
            format_version: u32,
        }
        let parse_err = |e: serde_json::Error| ManifestError::Parse { backup: backup.into(), reason: e.to_string() };
        let m: Manifest = match serde_json::from_reader(open()?) {
            Ok(m) => m,
            Err(e) => {
                return Err(match serde_json::from_reader::<_, VersionOnly>(open()?) {
                    Ok(v) if v.format_version > FORMAT_VERSION => {
                        ManifestError::UnsupportedVersion { backup: backup.into(), found: v.format_version }
                    }
                    _ => parse_err(e),
                });
            }
        };
        if m.format_version > FORMAT_VERSION {
            return Err(ManifestError::UnsupportedVersion { backup: backup.into(), found: m.format_version });
        }
        m.validate()?;
        Ok(m)
    }

    /// Checks every invariant restore relies on: safe unique paths, chunks covering each file exactly.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let backup = || self.backup_id.clone();
        let mut seen = HashSet::new();
        for f in &self.files {
            check_relative_path(&f.path).map_err(|reason| ManifestError::UnsafePath {
                backup: backup(),
                path: f.path.clone(),
                reason,
            })?;
            if !seen.insert((f.base, f.path.as_str())) {
                return Err(ManifestError::DuplicatePath { backup: backup(), path: f.path.clone() });
            }
            let mut expected = 0u64;
            for c in &f.chunks {
                if c.offset != expected || c.length == 0 {
                    return Err(ManifestError::ChunkLayout { backup: backup(), path: f.path.clone(), size: f.size });
                }
                expected += c.length;
            }
            if expected != f.size {
                return Err(ManifestError::ChunkLayout { backup: backup(), path: f.path.clone(), size: f.size });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    fn manifest(files: Vec<FileEntry>) -> Manifest {
        Manifest {
            tags: BTreeMap::new(),
            incremental: None,
            encryption: None,
            format_version: FORMAT_VERSION,
            backup_id: "20261122T041231Z-00abcd".into(),
            method: MethodKind::Cold,
            started_at: Timestamp::from_second(0).ok().unwrap(),
            completed_at: Timestamp::from_second(1).ok().unwrap(),
            positions: Positions::default(),
            chunking: Chunking { hash: "blake3".into(), compression: "zstd".into(), level: 3, chunk_size: 4 },
            prepare: Prepare::None,
            totals: Totals::default(),
            files,
        }
    }

    fn file(path: &str, sizes: &[u64]) -> FileEntry {
        let mut offset = 0;
        let chunks = sizes
            .iter()
            .map(|&length| {
                let c = ChunkRef { offset, length, stored_length: length, hash: H.parse().unwrap() };
                offset += length;
                c
            })
            .collect();
        FileEntry { base: Base::Datadir, path: path.into(), size: offset, mode: 0o640, chunks, tail: None }
    }

    #[test]
    fn backup_ids_sort_by_time_and_validate() {
        let a = new_backup_id(Timestamp::from_second(1_700_000_000).ok().unwrap());
        let b = new_backup_id(Timestamp::from_second(1_700_000_001).ok().unwrap());
        assert!(a < b, "{a} < {b}");
        assert!(is_backup_id(&a), "{a}");
        assert!(a.starts_with("20231114T221320Z-"));
        assert!(!is_backup_id("latest"));
        assert!(!is_backup_id("20231114T221320Z-../../x"));
    }

    #[test]
    fn round_trips_and_validates() {
        let m = manifest(vec![file("ibdata1", &[4, 4, 2]), file("app/t.ibd", &[3]), file("empty", &[])]);
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::from_stored(&m.backup_id, &json).unwrap(), m);
        let stored = m.to_stored().unwrap();
        assert!(stored.starts_with(&ZSTD_MAGIC));
        assert_eq!(Manifest::from_stored(&m.backup_id, &stored).unwrap(), m);
    }

    #[test]
    fn format_1_manifests_are_still_read() {
        // As format 1 wrote it: plain, pretty JSON.
        let mut v1 = manifest(vec![file("ibdata1", &[4, 1])]);
        v1.format_version = 1;
        let stored = serde_json::to_vec_pretty(&v1).unwrap();
        assert_eq!(Manifest::from_stored(&v1.backup_id, &stored).unwrap(), v1);
    }

    #[test]
    fn refuses_unsafe_paths_naming_them() {
        for (path, reason) in [
            ("/etc/passwd", "is absolute"),
            ("../x", "contains '..'"),
            ("a/../../x", "contains '..'"),
            ("a//b", "has an empty component"),
            ("./a", "contains '.'"),
            ("", "empty path"),
        ] {
            let m = manifest(vec![file(path, &[1])]);
            let err = Manifest::from_stored("b", &serde_json::to_vec(&m).unwrap()).unwrap_err();
            assert_eq!(
                err,
                ManifestError::UnsafePath { backup: m.backup_id.clone(), path: path.into(), reason },
                "{path}"
            );
        }
    }

    #[test]
    fn only_catchup_manifests_need_format_3() {
        // What a reader of format 2 (every release before catch-up backups) reads, it still gets.
        assert_eq!(MethodKind::Cold.format_version(), 2);
        assert_eq!(MethodKind::Mariabackup.format_version(), 2);
        assert_eq!(MethodKind::Binlog.format_version(), 2);
        assert_eq!(MethodKind::Catchup.format_version(), 3);
        let mut m = manifest(vec![file("f", &[1])]);
        m.method = MethodKind::Catchup;
        m.format_version = MethodKind::Catchup.format_version();
        assert_eq!(Manifest::from_stored("b1", &m.to_stored().unwrap()).unwrap(), m);
    }

    #[test]
    fn refuses_gaps_duplicates_bad_hashes_and_newer_versions() {
        let mut gap = file("f", &[4, 4]);
        gap.chunks[1].offset = 5;
        assert!(matches!(manifest(vec![gap]).validate(), Err(ManifestError::ChunkLayout { .. })));
        let mut short = file("f", &[4]);
        short.size = 5;
        assert!(matches!(manifest(vec![short]).validate(), Err(ManifestError::ChunkLayout { .. })));
        assert!(matches!(
            manifest(vec![file("f", &[1]), file("f", &[1])]).validate(),
            Err(ManifestError::DuplicatePath { .. })
        ));
        let json = serde_json::to_string(&manifest(vec![file("f", &[1])])).unwrap().replace(H, "../x");
        assert_eq!(
            Manifest::from_stored("b1", json.as_bytes()).unwrap_err().to_string(),
            "manifest of backup b1: not a valid manifest: malformed chunk hash \"../x\": expected 64 lower-case hex digits at line 1 column 468"
        );
        let mut m = manifest(vec![]);
        m.format_version = 99;
        let err = Manifest::from_stored("b1", &serde_json::to_vec(&m).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "manifest of backup b1: format version 99 is newer than this build reads (3); upgrade mysql-backup-operator"
        );
        // A newer format whose fields differ is named as newer, not as malformed.
        let newer = br#"{"formatVersion": 4, "chunkTable": "elsewhere"}"#;
        let compressed = zstd::bulk::compress(newer, 3).unwrap();
        assert_eq!(
            Manifest::from_stored("b1", &compressed).unwrap_err(),
            ManifestError::UnsupportedVersion { backup: "b1".into(), found: 4 }
        );
    }
}
