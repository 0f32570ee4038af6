//! The continuous binary-log archive in storage: numbered segments, each a binary log file of whole
//! transactions, and an index entry per segment written after it — the entry's presence is what makes
//! a segment part of the archive, as a manifest does for a backup.
//!
//! The objects' names and the index entry are in [`crate::format::archive_index`]. The
//! [`archiver`] writes the archive; [`segment`] cuts its stream into segments.
//!
//! Index entries are written with a conditional create, and each data object is named by its hash, so
//! two archivers writing the same archive cannot overwrite each other's segments: the second one's
//! data lands beside the first's, its entry is refused, and it stops naming the segment.
//!
//! [`timeline::timeline`] reads the entries back and finds every gap, purely: a missing number, a segment that
//! does not start where the one before ended, a gap the archiver recorded while streaming (purged
//! binary logs, a jump in a domain's sequence, another server), and an entry whose data is missing.
//! [`timeline::segments_for`] chooses the segments a point-in-time restore replays after a backup's position,
//! and refuses to cross a gap unless forced.

pub mod archiver;
pub mod http;
pub mod segment;
pub mod spool;
pub mod timeline;

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;

use crate::archive::segment::Sealed;
use crate::archive::spool::{Spool, Stored};
use crate::archive::timeline::read_timeline;
use crate::format::archive_index;
use crate::format::archive_index::{INDEX_FORMAT, SegmentIndex};
use crate::mysql::binlog::range::holds;
use crate::mysql::position::GtidState;
use crate::storage::{Storage, StorageError};

/// Errors of the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive name is not usable as a key.
    #[error(
        "archive name {0:?} is invalid: use 1 to 128 lower-case letters, digits, '.', '-' or '_', starting with a \
         letter or digit"
    )]
    Name(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An index entry does not parse.
    #[error("archive {archive}: index entry {name} is invalid: {reason}")]
    Index { archive: String, name: String, reason: String },
    /// Another archiver wrote the same segment.
    #[error(
        "archive {archive}: segment {seq} was already written by another archiver; only one archiver may write an \
         archive"
    )]
    Conflict { archive: String, seq: u64 },
    /// A segment's data is damaged.
    #[error("archive {archive}: segment {seq} is damaged: {reason}")]
    Damaged { archive: String, seq: u64, reason: String },
}

/// Checks an archive name.
pub fn validate_name(name: &str) -> Result<(), ArchiveError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(ArchiveError::Name(name.to_string())) }
}

/// Key of the data object that `index` names.
fn data_key(storage: &Storage, archive: &str, index: &SegmentIndex) -> object_store::path::Path {
    storage.archive_key(archive, &archive_index::data_name_of(index))
}

/// Key of segment `seq`'s index entry.
fn index_key(storage: &Storage, archive: &str, seq: u64) -> object_store::path::Path {
    storage.archive_key(archive, &archive_index::index_name(seq))
}

/// A segment ready to store: its index entry and its compressed data.
#[derive(Debug)]
pub struct Prepared {
    /// The entry to write after the data.
    pub index: SegmentIndex,
    data: Data,
}

/// Compressed segment data: in memory, or a file of that many bytes.
#[derive(Debug)]
enum Data {
    Mem(Bytes),
    File(std::sync::Arc<std::fs::File>, u64),
}

/// Hashes and compresses a sealed segment as number `seq`, on a blocking thread, streaming: a segment
/// spilled to a file is read a block at a time, and its compressed copy spills the same way.
pub async fn prepare_segment(
    storage: &Storage,
    archive: &str,
    seq: u64,
    sealed: Sealed,
) -> Result<Prepared, ArchiveError> {
    let damaged = |reason: String| ArchiveError::Damaged { archive: archive.to_string(), seq, reason };
    let Sealed {
        bytes,
        start,
        end,
        first,
        last,
        transactions,
        first_event_time,
        last_event_time,
        server_id,
        server_version,
        gap_before,
    } = sealed;
    let work = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        use std::io::{Read, Write};
        let len = bytes.len() as u64;
        let mut reader = bytes.into_reader()?;
        let mut hasher = blake3::Hasher::new();
        let mut encoder = zstd::stream::write::Encoder::new(Spool::new(), 3)?;
        let mut buf = vec![0u8; crate::archive::spool::BLOCK];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            encoder.write_all(&buf[..n])?;
        }
        let compressed = encoder.finish()?;
        let compressed_len = compressed.len();
        let data = match compressed.into_stored()? {
            Stored::Mem(bytes) => Data::Mem(Bytes::from(bytes)),
            Stored::File(file, len) => Data::File(std::sync::Arc::new(file), len),
        };
        Ok((len, hasher.finalize(), compressed_len, data))
    });
    let (len, hash, compressed_len, data) = work
        .await
        .map_err(|e| damaged(format!("compressing: {e}")))?
        .map_err(|e| damaged(format!("compressing: {e}")))?;
    let index = SegmentIndex {
        format_version: INDEX_FORMAT,
        seq,
        start,
        end,
        first_gtid: first.to_string(),
        last_gtid: last.to_string(),
        transactions,
        first_event_time,
        last_event_time,
        server_id,
        server_version,
        bytes: len,
        stored_bytes: storage.stored_len(compressed_len),
        blake3: hash.to_hex().to_string(),
        archived_at: Timestamp::now(),
        gap_before,
    };
    Ok(Prepared { index, data })
}

/// Stores a prepared segment: data first, then its index entry. Safe to call again after a failure.
pub async fn store_segment(storage: &Storage, archive: &str, prepared: &Prepared) -> Result<(), ArchiveError> {
    let index = &prepared.index;
    // The key carries the hash: a second archiver's data for the same number goes beside this one.
    let key = data_key(storage, archive, index);
    match &prepared.data {
        Data::Mem(bytes) => storage.put(&key, bytes.clone()).await?,
        Data::File(file, len) => storage.put_file(&key, file, *len).await?,
    }
    let json = serde_json::to_vec_pretty(index).expect("an index entry always serialises");
    if !storage.put_new(&index_key(storage, archive, index.seq), Bytes::from(json)).await? {
        return Err(ArchiveError::Conflict { archive: archive.to_string(), seq: index.seq });
    }
    Ok(())
}

/// Stores a sealed segment as number `seq`: [`prepare_segment`], then [`store_segment`].
pub async fn write_segment(
    storage: &Storage,
    archive: &str,
    seq: u64,
    sealed: Sealed,
) -> Result<SegmentIndex, ArchiveError> {
    let prepared = prepare_segment(storage, archive, seq, sealed).await?;
    store_segment(storage, archive, &prepared).await?;
    Ok(prepared.index)
}

/// Downloads segment `index` into the file `path`, streaming: the object arrives piece by piece, is
/// decompressed, hashed and written by a blocking worker, so memory does not grow with the segment's
/// size. The file is complete and checked (length and BLAKE3) when this returns `Ok`.
pub async fn download_segment(
    storage: &Storage,
    archive: &str,
    index: &SegmentIndex,
    path: &std::path::Path,
) -> Result<(), ArchiveError> {
    use std::io::Write;
    let damaged = |reason: String| ArchiveError::Damaged { archive: archive.to_string(), seq: index.seq, reason };
    let mut stream = storage
        .get_stream(&data_key(storage, archive, index))
        .await?
        .ok_or_else(|| damaged("its data object is missing".into()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let out = path.to_path_buf();
    let worker = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&out).map_err(|e| format!("writing {}: {e}", out.display()))?;
        let mut sink = HashingWriter { inner: std::io::BufWriter::new(file), hasher: blake3::Hasher::new(), len: 0 };
        let mut decoder = zstd::stream::write::Decoder::new(&mut sink).map_err(|e| e.to_string())?;
        while let Some(piece) = rx.blocking_recv() {
            decoder.write_all(&piece).map_err(|e| format!("decompressing into {}: {e}", out.display()))?;
        }
        decoder.flush().map_err(|e| format!("decompressing into {}: {e}", out.display()))?;
        drop(decoder);
        sink.inner.flush().map_err(|e| format!("writing {}: {e}", out.display()))?;
        sink.inner.get_ref().sync_all().map_err(|e| format!("writing {}: {e}", out.display()))?;
        Ok::<_, String>((sink.len, sink.hasher.finalize().to_hex().to_string()))
    });
    let mut fed = Ok(());
    while let Some(piece) = stream.next().await {
        match piece {
            // The worker stopped early: its error says why.
            Ok(piece) => {
                if tx.send(piece).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                fed = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let written = worker.await.map_err(|e| damaged(e.to_string()))?;
    fed?;
    let (len, hash) = written.map_err(damaged)?;
    if len != index.bytes || hash != index.blake3 {
        return Err(damaged("its content does not match its index entry".into()));
    }
    Ok(())
}

/// Passes writes on, hashing and counting them.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The archives in `storage`.
pub async fn list_archives(storage: &Storage) -> Result<Vec<String>, ArchiveError> {
    Ok(storage.list_archive(None).await?.into_iter().map(|(n, _)| n).collect())
}

/// Deletes the oldest segments of `archive` that `keep_from` (the position of the oldest backup
/// retention keeps) holds entirely: no kept backup can replay them. Only a run from the first segment
/// goes, so no gap opens in the middle; each index entry goes before its data. The data objects an
/// interrupted prune left behind go too. `dry` only counts.
pub async fn prune_before(
    storage: &Storage,
    archive: &str,
    keep_from: &GtidState,
    dry: bool,
) -> Result<u64, ArchiveError> {
    let tl = read_timeline(storage, archive).await?;
    let old: Vec<u64> =
        tl.segments.iter().take_while(|s| holds(keep_from, &s.end) == Some(true)).map(|s| s.seq).collect();
    // Not behind the newest entry: the archive continues from there.
    let newest = tl.newest.as_ref().map(|n| n.seq);
    let old: Vec<u64> = old.into_iter().filter(|seq| Some(*seq) != newest).collect();
    if dry {
        return Ok(old.len() as u64);
    }
    // Every data object of a number goes with it: the entry's, and any a second archiver left beside it.
    let mut data_of: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for (name, _) in storage.list_archive(Some(archive)).await? {
        if let Some((archive_index::ArchiveObject::Data, seq)) = archive_index::parse_name(&name) {
            data_of.entry(seq).or_default().push(name);
        }
    }
    for &seq in &old {
        storage.delete(&index_key(storage, archive, seq)).await?;
        for name in data_of.get(&seq).into_iter().flatten() {
            storage.delete(&storage.archive_key(archive, name)).await?;
        }
    }
    for name in tl.orphans.iter().flat_map(|seq| data_of.get(seq).into_iter().flatten()) {
        storage.delete(&storage.archive_key(archive, name)).await?;
    }
    if !old.is_empty() || !tl.orphans.is_empty() {
        tracing::info!(
            archive,
            segments = old.len(),
            orphans = tl.orphans.len(),
            "pruned archive segments no kept backup needs"
        );
    }
    Ok(old.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::binlog::range::mariadb;
    use jiff::Timestamp;

    /// File storage in `dir` holding archive `a`: segments 0, 1, 2 with transactions 1..=10, 11..=20, 21..=30.
    async fn three_segments(dir: &tempfile::TempDir) -> Storage {
        let retry = crate::storage::RetryPolicy { timeout: std::time::Duration::from_secs(1) };
        let storage = Storage::open(dir.path().to_str().unwrap(), &[], retry).unwrap();
        for (seq, start, end) in [(0u64, 0u64, 10u64), (1, 10, 20), (2, 20, 30)] {
            write_segment(&storage, "a", seq, sealed(seq, start, end)).await.unwrap();
        }
        storage
    }

    fn tx(n: u64) -> crate::archive::segment::Txid {
        crate::archive::segment::Txid::Maria(format!("0-1-{n}").parse().unwrap())
    }

    fn spool(bytes: &[u8]) -> Spool {
        let mut s = Spool::new();
        s.append(bytes).unwrap();
        s
    }

    /// Segment `seq` holding transactions `start+1..=end`, its bytes all `seq`.
    fn sealed(seq: u64, start: u64, end: u64) -> Sealed {
        Sealed {
            bytes: spool(&[seq as u8; 10]),
            start: mariadb(&format!("0-1-{start}")).unwrap(),
            end: mariadb(&format!("0-1-{end}")).unwrap(),
            first: tx(start + 1),
            last: tx(end),
            transactions: end - start,
            first_event_time: Timestamp::from_second(100).ok().unwrap(),
            last_event_time: Timestamp::from_second(200).ok().unwrap(),
            server_id: 1,
            server_version: "10.11".into(),
            gap_before: None,
        }
    }

    #[tokio::test]
    async fn pruning_removes_only_the_segments_before_the_oldest_kept_backup() {
        let dir = tempfile::tempdir().unwrap();
        let storage = three_segments(&dir).await;
        // A second archiver writing the same number stops.
        let first = read_timeline(&storage, "a").await.unwrap().segments[0].clone();
        let again = Sealed {
            bytes: spool(&[9; 3]),
            start: first.start.clone(),
            end: first.end.clone(),
            first: tx(1),
            last: tx(10),
            transactions: 10,
            first_event_time: first.first_event_time,
            last_event_time: first.last_event_time,
            server_id: 2,
            server_version: "10.11".into(),
            gap_before: None,
        };
        assert_eq!(
            write_segment(&storage, "a", 0, again).await.unwrap_err().to_string(),
            "archive a: segment 0 was already written by another archiver; only one archiver may write an archive"
        );
        // The data the entry names is untouched: the second writer's went beside it.
        let out = dir.path().join("segment-0.bin");
        download_segment(&storage, "a", &first, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), vec![0u8; 10]);
        let loser = format!("000000000000-{}.binlog.zst", &blake3::hash(&[9u8; 3]).to_hex()[..32]);
        assert!(storage.list_archive(Some("a")).await.unwrap().iter().any(|(n, _)| *n == loser));
        // The oldest kept backup is at 0-1-25: segments 0 and 1 are no longer needed; 2 is.
        let keep = mariadb("0-1-25").unwrap();
        assert_eq!(prune_before(&storage, "a", &keep, true).await.unwrap(), 2);
        assert_eq!(read_timeline(&storage, "a").await.unwrap().segments.len(), 3, "dry deletes nothing");
        assert_eq!(prune_before(&storage, "a", &keep, false).await.unwrap(), 2);
        let tl = read_timeline(&storage, "a").await.unwrap();
        assert_eq!((tl.segments.iter().map(|s| s.seq).collect::<Vec<_>>(), tl.gaps.len()), (vec![2], 0));
        let out = dir.path().join("segment-2.bin");
        download_segment(&storage, "a", &tl.segments[0], &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), vec![2u8; 10]);
        // Bytes that are not what the index entry says are refused.
        let mut altered = tl.segments[0].clone();
        // (The same first 32 digits, so the same object: only its content disagrees.)
        altered.blake3.replace_range(63.., if altered.blake3.ends_with('0') { "1" } else { "0" });
        assert_eq!(
            download_segment(&storage, "a", &altered, &out).await.unwrap_err().to_string(),
            "archive a: segment 2 is damaged: its content does not match its index entry"
        );
        // The newest segment stays whatever the position: the archive continues from it.
        assert_eq!(prune_before(&storage, "a", &mariadb("0-1-99").unwrap(), false).await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_larger_than_memory_holds_is_stored_from_its_file_sealed_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let retry = crate::storage::RetryPolicy { timeout: std::time::Duration::from_secs(1) };
        let key = crate::encryption::Key::from_bytes(&[3; 32]);
        let ring = crate::encryption::Keyring::new(vec![key]).unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), &[], retry).unwrap().with_keyring(ring);
        // 20 MiB that zstd cannot shrink: spilled, compressed to a spilled file, uploaded in three parts.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..20 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut big = sealed(0, 0, 10);
        big.bytes = spool(&bytes);
        assert!(big.bytes.spilled());
        let index = write_segment(&storage, "a", 0, big).await.unwrap();
        assert_eq!(
            (index.bytes, index.blake3.clone()),
            (bytes.len() as u64, blake3::hash(&bytes).to_hex().to_string())
        );
        let stored = storage.list_archive(Some("a")).await.unwrap();
        let data = stored.iter().find(|(n, _)| n.ends_with(".binlog.zst")).unwrap();
        assert_eq!(data.1, index.stored_bytes, "the stored length is the sealed length of the compressed bytes");
        let out = dir.path().join("segment-0.bin");
        download_segment(&storage, "a", &index, &out).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == bytes, "the bytes read back are the segment's");
    }

    #[tokio::test]
    async fn segments_of_index_format_1_are_read_where_format_1_put_them() {
        let dir = tempfile::tempdir().unwrap();
        let storage = three_segments(&dir).await;
        // Segment 0 as the previous release stored it: data under its number alone, entry format 1.
        let mut old = read_timeline(&storage, "a").await.unwrap().segments[0].clone();
        let data = storage.get(&data_key(&storage, "a", &old)).await.unwrap();
        storage.delete(&data_key(&storage, "a", &old)).await.unwrap();
        old.format_version = 1;
        storage.put(&storage.archive_key("a", "000000000000.binlog.zst"), data).await.unwrap();
        storage.put(&index_key(&storage, "a", 0), serde_json::to_vec(&old).unwrap().into()).await.unwrap();
        let tl = read_timeline(&storage, "a").await.unwrap();
        assert_eq!((tl.segments.len(), tl.gaps.len(), tl.segments[0].format_version), (3, 0, 1));
        let out = dir.path().join("segment-0.bin");
        download_segment(&storage, "a", &tl.segments[0], &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), vec![0u8; 10]);
        // A format this release does not know is refused by name.
        old.format_version = 3;
        storage.put(&index_key(&storage, "a", 0), serde_json::to_vec(&old).unwrap().into()).await.unwrap();
        assert_eq!(
            read_timeline(&storage, "a").await.unwrap_err().to_string(),
            "archive a: index entry 000000000000.json is invalid: format 3 is not one this release reads (1 to 2)"
        );
    }

    #[tokio::test]
    async fn a_prune_interrupted_after_an_index_entry_leaves_data_the_next_prune_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = three_segments(&dir).await;
        // Interrupted after deleting segment 0's entry: its data stays, unlisted.
        storage.delete(&storage.archive_key("a", "000000000000.json")).await.unwrap();
        let tl = read_timeline(&storage, "a").await.unwrap();
        assert_eq!(
            (tl.segments.iter().map(|s| s.seq).collect::<Vec<_>>(), tl.gaps.len(), tl.orphans.clone()),
            (vec![1, 2], 0, vec![0])
        );
        // Nothing to prune at 0-1-5 but the orphan, which goes; segments 1 and 2 stay whole.
        assert_eq!(prune_before(&storage, "a", &mariadb("0-1-5").unwrap(), false).await.unwrap(), 0);
        let names: Vec<String> = storage.list_archive(Some("a")).await.unwrap().into_iter().map(|(n, _)| n).collect();
        let data = |seq: u8| format!("{:012}-{}.binlog.zst", seq, &blake3::hash(&[seq; 10]).to_hex()[..32]);
        assert_eq!(names, [data(1), "000000000001.json".into(), data(2), "000000000002.json".into()]);
        assert!(read_timeline(&storage, "a").await.unwrap().orphans.is_empty());
    }
}
