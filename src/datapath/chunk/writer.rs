//! The backup side of the data path: files are cut into fixed-size chunks; each chunk is hashed
//! (BLAKE3 of the original bytes), and unless storage already holds that hash, zstd-compressed and
//! uploaded under it. Hashing, compression and uploads run concurrently, with at most
//! `max_in_flight` chunks held in memory at any time whatever the size of the data.
//!
//! Producers (a backup method) open one [`FileWriter`] per file and feed it bytes in order; several
//! files may be written at once (parallel readers, or the interleaved files of an mbstream).
//! [`ChunkWriter::finish`] waits for every chunk and returns the manifest's file list and totals.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::{Bytes, BytesMut};
use tokio::{sync::Semaphore, task::JoinSet};

use crate::datapath::progress::Progress;
use crate::format::manifest::{Base, ChunkHash, ChunkRef, FileEntry, Totals};
use crate::storage::{Storage, StorageError};

/// Errors of the chunk pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ChunkWriteError {
    /// Compressing a chunk failed.
    #[error("compressing chunk at offset {offset} of {path}: {source}")]
    Compress { path: String, offset: u64, source: std::io::Error },
    /// Uploading a chunk failed.
    #[error("uploading chunk at offset {offset} of {path}: {source}")]
    Upload { path: String, offset: u64, source: StorageError },
    /// A worker task panicked or was cancelled.
    #[error("chunk worker failed: {0}")]
    Worker(String),
    /// The same file was written twice.
    #[error("file {0:?} appears twice in the backup")]
    DuplicateFile(String),
}

/// Chunking parameters.
#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    /// Maximum chunk length.
    pub chunk_size: usize,
    /// zstd level for new chunks.
    pub level: i32,
    /// Maximum number of chunks buffered, compressing or uploading at once.
    pub max_in_flight: usize,
    /// Bytes a second read into the backup, over every file together (what comes from storage unread
    /// does not count).
    pub max_read_rate: Option<crate::throttle::ByteRate>,
}

struct ChunkDone {
    file: usize,
    chunk: ChunkRef,
    uploaded: bool,
}

struct FileMeta {
    base: Base,
    path: String,
    mode: u32,
    size: Option<u64>,
    tail: Option<String>,
}

struct Shared {
    storage: Storage,
    /// Names chunks: keyed when the storage encrypts.
    namer: crate::encryption::ChunkNamer,
    params: ChunkParams,
    /// Chunks storage holds (with their stored length) or that this run is uploading (`None` until done).
    known: Mutex<HashMap<ChunkHash, Option<u64>>>,
    permits: Arc<Semaphore>,
    tasks: Mutex<JoinSet<Result<ChunkDone, ChunkWriteError>>>,
    done: Mutex<Vec<ChunkDone>>,
    files: Mutex<Vec<FileMeta>>,
    paths: Mutex<std::collections::HashSet<(Base, String)>>,
    uploaded_bytes: AtomicU64,
    taken_over_bytes: AtomicU64,
    progress: Arc<Progress>,
    read_limit: Option<crate::throttle::RateLimit>,
}

/// Accepts files and turns them into stored chunks.
#[derive(Clone)]
pub struct ChunkWriter {
    shared: Arc<Shared>,
}

/// One file being written; bytes must arrive in file order.
pub struct FileWriter {
    shared: Arc<Shared>,
    index: usize,
    buf: BytesMut,
    offset: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a worker panicked while holding it; the data is still consistent for our
    // use (plain inserts), and the panic itself surfaces through the JoinSet.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ChunkWriter {
    /// Starts a writer. `known` maps the hashes storage already holds to their stored length.
    pub fn new(storage: Storage, params: ChunkParams, known: HashMap<ChunkHash, u64>, progress: Arc<Progress>) -> Self {
        let known = known.into_iter().map(|(k, v)| (k, Some(v))).collect();
        Self {
            shared: Arc::new(Shared {
                namer: storage.chunk_namer(),
                storage,
                params,
                known: Mutex::new(known),
                permits: Arc::new(Semaphore::new(params.max_in_flight.max(1))),
                tasks: Mutex::new(JoinSet::new()),
                done: Mutex::new(Vec::new()),
                files: Mutex::new(Vec::new()),
                paths: Mutex::new(Default::default()),
                uploaded_bytes: AtomicU64::new(0),
                taken_over_bytes: AtomicU64::new(0),
                progress,
                read_limit: params.max_read_rate.map(crate::throttle::RateLimit::new),
            }),
        }
    }

    /// Opens a new file of the backup.
    pub fn open(&self, base: Base, path: &str, mode: u32) -> Result<FileWriter, ChunkWriteError> {
        if !lock(&self.shared.paths).insert((base, path.to_string())) {
            return Err(ChunkWriteError::DuplicateFile(path.to_string()));
        }
        let mut files = lock(&self.shared.files);
        files.push(FileMeta { base, path: path.to_string(), mode, size: None, tail: None });
        Ok(FileWriter { shared: self.shared.clone(), index: files.len() - 1, buf: BytesMut::new(), offset: 0 })
    }

    /// Adds a file of `size` bytes made of `chunks` (an earlier backup's, in offset order) without
    /// reading it — when every chunk is one storage holds. Returns false, adding nothing, when one is
    /// not (the caller then reads the file).
    pub fn take_over(
        &self,
        base: Base,
        path: &str,
        mode: u32,
        size: u64,
        chunks: &[ChunkRef],
        tail: Option<String>,
    ) -> Result<bool, ChunkWriteError> {
        let covered = chunks.iter().try_fold(0u64, |at, c| (c.offset == at).then_some(at + c.length)) == Some(size);
        let held = {
            let known = lock(&self.shared.known);
            chunks.iter().all(|c| matches!(known.get(&c.hash), Some(Some(_))))
        };
        if !covered || !held {
            return Ok(false);
        }
        if !lock(&self.shared.paths).insert((base, path.to_string())) {
            return Err(ChunkWriteError::DuplicateFile(path.to_string()));
        }
        let file = {
            let mut files = lock(&self.shared.files);
            files.push(FileMeta { base, path: path.to_string(), mode, size: Some(size), tail });
            files.len() - 1
        };
        let mut done = lock(&self.shared.done);
        done.extend(chunks.iter().map(|c| ChunkDone { file, chunk: c.clone(), uploaded: false }));
        self.shared.taken_over_bytes.fetch_add(size, Ordering::Relaxed);
        self.shared.progress.add_done(size);
        Ok(true)
    }

    /// Waits for every chunk, then returns the files (in the order they were opened) and the totals.
    pub async fn finish(self) -> Result<(Vec<FileEntry>, Totals), ChunkWriteError> {
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        let mut done = std::mem::take(&mut *lock(&self.shared.done));
        while let Some(res) = tasks.join_next().await {
            done.push(res.map_err(|e| ChunkWriteError::Worker(e.to_string()))??);
        }
        let files = std::mem::take(&mut *lock(&self.shared.files));
        let mut chunks: Vec<Vec<ChunkRef>> = vec![Vec::new(); files.len()];
        let mut totals = Totals::default();
        let mut distinct: HashMap<ChunkHash, u64> = HashMap::new();
        for d in done {
            totals.chunks += 1;
            if !d.uploaded {
                totals.reused_chunks += 1;
            }
            distinct.insert(d.chunk.hash, d.chunk.stored_length);
            chunks[d.file].push(d.chunk);
        }
        totals.stored_bytes = distinct.values().sum();
        totals.uploaded_bytes = self.shared.uploaded_bytes.load(Ordering::Relaxed);
        totals.taken_over_bytes = self.shared.taken_over_bytes.load(Ordering::Relaxed);
        let entries = files
            .into_iter()
            .zip(chunks)
            .map(|(meta, mut chunks)| {
                chunks.sort_by_key(|c| c.offset);
                let size = meta.size.unwrap_or_else(|| chunks.iter().map(|c| c.length).sum());
                totals.files += 1;
                totals.data_bytes += size;
                FileEntry { base: meta.base, path: meta.path, size, mode: meta.mode, chunks, tail: meta.tail }
            })
            .collect();
        Ok((entries, totals))
    }
}

impl FileWriter {
    /// Records the file's [`FileEntry::tail`].
    pub fn set_tail(&self, tail: String) {
        lock(&self.shared.files)[self.index].tail = Some(tail);
    }

    /// Bytes written to the file so far.
    pub fn offset(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    /// Appends bytes to the file.
    pub async fn write(&mut self, mut data: Bytes) -> Result<(), ChunkWriteError> {
        // Whoever read `data` reads on when this returns: waiting here holds all reading to the rate.
        if let Some(limit) = &self.shared.read_limit {
            limit.take(data.len() as u64).await;
        }
        let size = self.shared.params.chunk_size;
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= size {
                let piece = data.split_to(size);
                self.submit(piece).await?;
                continue;
            }
            let take = (size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            if self.buf.len() == size {
                let piece = self.buf.split().freeze();
                self.submit(piece).await?;
            }
        }
        Ok(())
    }

    /// Ends the file, submitting its last partial chunk.
    pub async fn close(mut self) -> Result<(), ChunkWriteError> {
        if !self.buf.is_empty() {
            let piece = self.buf.split().freeze();
            self.submit(piece).await?;
        }
        lock(&self.shared.files)[self.index].size = Some(self.offset);
        Ok(())
    }

    /// Hands one chunk to a worker once a slot is free; surfaces any earlier worker failure.
    async fn submit(&mut self, data: Bytes) -> Result<(), ChunkWriteError> {
        let permit =
            self.shared.permits.clone().acquire_owned().await.map_err(|e| ChunkWriteError::Worker(e.to_string()))?;
        {
            let mut tasks = lock(&self.shared.tasks);
            while let Some(res) = tasks.try_join_next() {
                let done = res.map_err(|e| ChunkWriteError::Worker(e.to_string()))??;
                lock(&self.shared.done).push(done);
            }
        }
        let offset = self.offset;
        self.offset += data.len() as u64;
        let shared = self.shared.clone();
        let file = self.index;
        let path = lock(&self.shared.files)[file].path.clone();
        lock(&self.shared.tasks).spawn(async move {
            let _permit = permit;
            let length = data.len() as u64;
            let namer = shared.namer.clone();
            let (hash, data) = tokio::task::spawn_blocking(move || (namer.hash(&data), data))
                .await
                .map_err(|e| ChunkWriteError::Worker(e.to_string()))?;
            let seen = {
                let mut known = lock(&shared.known);
                match known.get(&hash) {
                    Some(len) => Some(*len),
                    None => {
                        known.insert(hash, None);
                        None
                    }
                }
            };
            let chunk = |stored_length| ChunkRef { offset, length, stored_length, hash };
            if let Some(Some(stored_length)) = seen {
                shared.progress.add_done(length);
                return Ok(ChunkDone { file, chunk: chunk(stored_length), uploaded: false });
            }
            let level = shared.params.level;
            let compressed = tokio::task::spawn_blocking(move || crate::datapath::chunk::codec::compress(&data, level))
                .await
                .map_err(|e| ChunkWriteError::Worker(e.to_string()))?
                .map_err(|source| ChunkWriteError::Compress { path: path.clone(), offset, source })?;
            let stored_length = shared.storage.stored_len(compressed.len());
            let uploaded = seen.is_none();
            if uploaded {
                // Another file may hold the same bytes (runs of zeros are common): only the first uploads.
                shared
                    .storage
                    .put(&shared.storage.chunk_key(&hash), Bytes::from(compressed))
                    .await
                    .map_err(|source| ChunkWriteError::Upload { path, offset, source })?;
                lock(&shared.known).insert(hash, Some(stored_length));
                shared.uploaded_bytes.fetch_add(stored_length, Ordering::Relaxed);
            }
            shared.progress.add_done(length);
            Ok(ChunkDone { file, chunk: chunk(stored_length), uploaded })
        });
        Ok(())
    }
}
