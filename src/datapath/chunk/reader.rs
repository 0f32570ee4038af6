//! Reading chunks back: fetch the stored object (opened, when storage encrypts), decompress it, and
//! check its BLAKE3 hash (keyed, for an encrypted backup) and length against the manifest before
//! anyone uses the bytes.

use bytes::Bytes;

use crate::encryption::ChunkNamer;
use crate::format::manifest::{ChunkHash, ChunkRef};
use crate::storage::{Storage, StorageError};

/// Why a chunk could not be read back intact.
#[derive(Debug, thiserror::Error)]
pub enum ChunkReadError {
    /// The object could not be fetched.
    #[error("fetching chunk {hash}: {source}")]
    Fetch { hash: ChunkHash, source: StorageError },
    /// The object is not a valid zstd frame.
    #[error("chunk {hash} is corrupt: cannot decompress: {source}")]
    Decompress { hash: ChunkHash, source: std::io::Error },
    /// The decompressed bytes do not have the recorded length or hash.
    #[error("chunk {hash} is corrupt: {reason}")]
    Mismatch { hash: ChunkHash, reason: String },
}

/// Fetches and verifies one chunk; decompression and hashing run off the async threads.
pub async fn fetch_verified(storage: &Storage, namer: &ChunkNamer, chunk: &ChunkRef) -> Result<Bytes, ChunkReadError> {
    let stored = storage
        .get(&storage.chunk_key(&chunk.hash))
        .await
        .map_err(|source| ChunkReadError::Fetch { hash: chunk.hash, source })?;
    let (hash, chunk, namer) = (chunk.hash, chunk.clone(), namer.clone());
    tokio::task::spawn_blocking(move || verify_bytes(&namer, &chunk, &stored))
        .await
        .map_err(|e| ChunkReadError::Mismatch { hash, reason: e.to_string() })?
}

/// Decompresses `stored` and checks it against `chunk`, named by `namer`.
pub fn verify_bytes(namer: &ChunkNamer, chunk: &ChunkRef, stored: &[u8]) -> Result<Bytes, ChunkReadError> {
    let hash = || chunk.hash;
    let data = crate::datapath::chunk::codec::decompress(stored, chunk.length as usize)
        .map_err(|source| ChunkReadError::Decompress { hash: hash(), source })?;
    if data.len() as u64 != chunk.length {
        return Err(ChunkReadError::Mismatch {
            hash: hash(),
            reason: format!("{} bytes after decompression, expected {}", data.len(), chunk.length),
        });
    }
    let actual = namer.hash(&data);
    if actual != chunk.hash {
        return Err(ChunkReadError::Mismatch { hash: hash(), reason: format!("content hash is {actual}") });
    }
    Ok(Bytes::from(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_of(data: &[u8]) -> (ChunkRef, Vec<u8>) {
        let stored = zstd::bulk::compress(data, 3).unwrap();
        let c = ChunkRef {
            offset: 0,
            length: data.len() as u64,
            stored_length: stored.len() as u64,
            hash: ChunkHash::of(data),
        };
        (c, stored)
    }

    #[test]
    fn accepts_intact_and_rejects_altered_chunks() {
        let (c, stored) = chunk_of(b"hello hello hello");
        assert_eq!(&verify_bytes(&ChunkNamer::default(), &c, &stored).unwrap()[..], b"hello hello hello");
        let (_, other) = chunk_of(b"hello hello hellO");
        let err = verify_bytes(&ChunkNamer::default(), &c, &other).unwrap_err().to_string();
        assert!(err.starts_with(&format!("chunk {} is corrupt: content hash is ", c.hash)), "{err}");
        let err = verify_bytes(&ChunkNamer::default(), &c, b"not zstd").unwrap_err().to_string();
        assert!(err.contains("cannot decompress"), "{err}");
    }
}
