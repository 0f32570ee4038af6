//! A reader of the mbstream (xbstream) format that `mariadb-backup --stream=mbstream` writes, so the
//! backup is parsed in-process as it streams, with no staging copy on disk.
//!
//! A stream is a sequence of chunks, each `XBSTCK01`, a flags byte, a type byte (`P` payload, `E` end of
//! file), a little-endian u32 path length and the path; a payload chunk then carries a u64 length, the
//! u64 offset of the data in its file, a CRC-32 (zlib polynomial) of the data, and the data. Chunks of
//! several files interleave when mariadb-backup copies in parallel. Unknown chunk types are skipped
//! when their "ignorable" flag is set and are an error otherwise.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

const MAGIC: &[u8; 8] = b"XBSTCK01";
const FLAG_IGNORABLE: u8 = 0x01;
/// Largest path mariadb-backup writes (FN_REFLEN).
const MAX_PATH: usize = 512;
/// Largest payload accepted in one chunk; mariadb-backup writes at most 10 MiB plus one write.
const MAX_PAYLOAD: u64 = 256 * 1024 * 1024;

/// Errors reading a stream; each names the byte offset in the stream.
#[derive(Debug, thiserror::Error)]
pub enum MbstreamError {
    /// Reading from the stream failed.
    #[error("mbstream: read failed at stream offset {offset}: {source}")]
    Read { offset: u64, source: std::io::Error },
    /// The stream ended inside a chunk.
    #[error("mbstream: stream ends inside a chunk at stream offset {offset}")]
    Truncated { offset: u64 },
    /// A chunk does not start with the magic bytes.
    #[error("mbstream: no chunk magic at stream offset {offset}")]
    Magic { offset: u64 },
    /// A chunk has a type this reader does not know and may not skip.
    #[error("mbstream: unknown chunk type {kind:#04x} at stream offset {offset}")]
    ChunkType { offset: u64, kind: u8 },
    /// A path or payload length is out of range.
    #[error("mbstream: {what} {len} out of range at stream offset {offset}")]
    Length { offset: u64, what: &'static str, len: u64 },
    /// A path is not UTF-8.
    #[error("mbstream: path is not UTF-8 at stream offset {offset}")]
    Path { offset: u64 },
    /// A payload's CRC-32 does not match its data.
    #[error("mbstream: checksum mismatch in {path} at stream offset {offset}")]
    Checksum { offset: u64, path: String },
}

/// One chunk of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamChunk {
    /// Data of `path` at `offset`.
    Payload { path: String, offset: u64, data: Bytes },
    /// `path` is complete.
    EndOfFile { path: String },
}

/// Reads chunks from an mbstream.
pub struct MbstreamReader<R> {
    inner: R,
    offset: u64,
}

impl<R: AsyncRead + Unpin> MbstreamReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> Self {
        Self { inner, offset: 0 }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    async fn fill(&mut self, buf: &mut [u8]) -> Result<usize, MbstreamError> {
        let mut n = 0;
        while n < buf.len() {
            let r = self
                .inner
                .read(&mut buf[n..])
                .await
                .map_err(|source| MbstreamError::Read { offset: self.offset + n as u64, source })?;
            if r == 0 {
                break;
            }
            n += r;
        }
        Ok(n)
    }

    async fn exact(&mut self, buf: &mut [u8]) -> Result<(), MbstreamError> {
        let start = self.offset;
        let n = self.fill(buf).await?;
        self.offset += n as u64;
        if n < buf.len() {
            return Err(MbstreamError::Truncated { offset: start });
        }
        Ok(())
    }

    /// The next chunk, or `None` at a clean end of stream.
    pub async fn next_chunk(&mut self) -> Result<Option<StreamChunk>, MbstreamError> {
        loop {
            let start = self.offset;
            let mut head = [0u8; 14];
            let n = self.fill(&mut head).await?;
            if n == 0 {
                return Ok(None);
            }
            self.offset += n as u64;
            if n < head.len() {
                return Err(MbstreamError::Truncated { offset: start });
            }
            if &head[..8] != MAGIC {
                return Err(MbstreamError::Magic { offset: start });
            }
            let flags = head[8];
            let kind = head[9];
            let path_len = u32::from_le_bytes([head[10], head[11], head[12], head[13]]) as usize;
            if path_len >= MAX_PATH {
                return Err(MbstreamError::Length { offset: start, what: "path length", len: path_len as u64 });
            }
            let mut path = vec![0u8; path_len];
            self.exact(&mut path).await?;
            let path = String::from_utf8(path).map_err(|_| MbstreamError::Path { offset: start })?;
            match kind {
                b'E' => return Ok(Some(StreamChunk::EndOfFile { path })),
                b'P' => {}
                _ if flags & FLAG_IGNORABLE != 0 => {
                    // An ignorable chunk of a newer writer: it has a payload header like 'P'; skip it.
                    let (len, _, _) = self.payload_header(start).await?;
                    let mut skip = vec![0u8; len as usize];
                    self.exact(&mut skip).await?;
                    continue;
                }
                _ => return Err(MbstreamError::ChunkType { offset: start, kind }),
            }
            let (len, offset, crc) = self.payload_header(start).await?;
            let mut data = BytesMut::zeroed(len as usize);
            self.exact(&mut data).await?;
            if crc32fast::hash(&data) != crc {
                return Err(MbstreamError::Checksum { offset: start, path });
            }
            return Ok(Some(StreamChunk::Payload { path, offset, data: data.freeze() }));
        }
    }

    async fn payload_header(&mut self, start: u64) -> Result<(u64, u64, u32), MbstreamError> {
        let mut h = [0u8; 20];
        self.exact(&mut h).await?;
        let len = u64::from_le_bytes(h[0..8].try_into().unwrap_or_default());
        let offset = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(h[16..20].try_into().unwrap_or_default());
        if len > MAX_PAYLOAD {
            return Err(MbstreamError::Length { offset: start, what: "payload length", len });
        }
        Ok((len, offset, crc))
    }
}

/// Encodes chunks in the stream format (used by tests, and handy to build fixtures).
pub fn encode(chunks: &[StreamChunk]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(MAGIC);
        out.push(0);
        let path = match c {
            StreamChunk::Payload { path, .. } => {
                out.push(b'P');
                path
            }
            StreamChunk::EndOfFile { path } => {
                out.push(b'E');
                path
            }
        };
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        if let StreamChunk::Payload { offset, data, .. } = c {
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
            out.extend_from_slice(data);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8]) -> Result<Vec<StreamChunk>, MbstreamError> {
        let mut r = MbstreamReader::new(bytes);
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().await? {
            out.push(c);
        }
        Ok(out)
    }

    fn sample() -> Vec<StreamChunk> {
        vec![
            StreamChunk::Payload { path: "ibdata1".into(), offset: 0, data: Bytes::from_static(b"abc") },
            StreamChunk::Payload { path: "app/t.ibd".into(), offset: 0, data: Bytes::from_static(b"xyz") },
            StreamChunk::Payload { path: "ibdata1".into(), offset: 3, data: Bytes::from_static(b"def") },
            StreamChunk::EndOfFile { path: "ibdata1".into() },
            StreamChunk::EndOfFile { path: "empty".into() },
        ]
    }

    #[tokio::test]
    async fn round_trips_interleaved_chunks() {
        assert_eq!(read_all(&encode(&sample())).await.unwrap(), sample());
    }

    #[tokio::test]
    async fn detects_corruption_truncation_and_bad_magic() {
        let mut bytes = encode(&sample());
        let last = 14 + 7 + 20 + 2; // inside the first payload
        bytes[last] ^= 0xff;
        assert_eq!(
            read_all(&bytes).await.unwrap_err().to_string(),
            "mbstream: checksum mismatch in ibdata1 at stream offset 0"
        );
        let bytes = encode(&sample());
        let err = read_all(&bytes[..bytes.len() - 3]).await.unwrap_err();
        assert!(matches!(err, MbstreamError::Truncated { .. }), "{err}");
        let err = read_all(b"NOTMAGIC00000000").await.unwrap_err();
        assert_eq!(err.to_string(), "mbstream: no chunk magic at stream offset 0");
    }

    #[tokio::test]
    async fn skips_ignorable_unknown_chunks_and_rejects_others() {
        let mut unknown = Vec::new();
        unknown.extend_from_slice(MAGIC);
        unknown.extend_from_slice(&[FLAG_IGNORABLE, b'X', 1, 0, 0, 0, b'f']);
        unknown.extend_from_slice(&2u64.to_le_bytes());
        unknown.extend_from_slice(&0u64.to_le_bytes());
        unknown.extend_from_slice(&0u32.to_le_bytes());
        unknown.extend_from_slice(b"zz");
        let mut bytes = unknown.clone();
        bytes.extend(encode(&sample()));
        assert_eq!(read_all(&bytes).await.unwrap(), sample());
        unknown[8] = 0;
        assert_eq!(
            read_all(&unknown).await.unwrap_err().to_string(),
            "mbstream: unknown chunk type 0x58 at stream offset 0"
        );
    }
}
