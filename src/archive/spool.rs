//! Bytes of a segment being built, in memory while they are few and in an unnamed temporary file (in
//! `$TMPDIR`) once they pass [`SPILL_AT`]: the archiver's memory stays bounded whatever the size of a
//! transaction or a segment, and a gigabyte transaction costs a gigabyte of local disk instead.
//!
//! Appends past the threshold write to the file through a small buffer. They are the archiver's
//! only file writes on an async thread; every read of a spilled spool (hashing, compressing,
//! uploading) runs on a blocking thread.

use std::io::{Read, Seek, SeekFrom, Write};

/// Bytes held in memory at most before a spool moves to a file.
pub const SPILL_AT: usize = 8 * 1024 * 1024;

/// Size of the reads and writes of a spilled spool.
pub const BLOCK: usize = 1024 * 1024;

/// Bytes appended in order, in memory or in a temporary file.
#[derive(Debug)]
pub struct Spool {
    mem: Vec<u8>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    len: usize,
}

impl Default for Spool {
    fn default() -> Self {
        Self::new()
    }
}

impl Spool {
    /// An empty spool, in memory.
    pub fn new() -> Self {
        Self { mem: Vec::new(), file: None, len: 0 }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it moved to a file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends `bytes`, moving to a file when the spool passes [`SPILL_AT`].
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() && self.mem.len() + bytes.len() > SPILL_AT {
            let mut file = std::io::BufWriter::with_capacity(BLOCK, tempfile::tempfile()?);
            file.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(bytes)?,
            None => self.mem.extend_from_slice(bytes),
        }
        self.len += bytes.len();
        Ok(())
    }

    /// Drops everything after the first `len` bytes.
    pub fn truncate(&mut self, len: usize) -> std::io::Result<()> {
        if len >= self.len {
            return Ok(());
        }
        match &mut self.file {
            Some(file) => {
                file.flush()?;
                file.get_mut().set_len(len as u64)?;
                file.get_mut().seek(SeekFrom::Start(len as u64))?;
            }
            None => self.mem.truncate(len),
        }
        self.len = len;
        Ok(())
    }

    /// The bytes, written out: in memory, or the whole file.
    pub fn into_stored(self) -> std::io::Result<Stored> {
        match self.file {
            None => Ok(Stored::Mem(self.mem)),
            Some(file) => Ok(Stored::File(file.into_inner().map_err(|e| e.into_error())?, self.len as u64)),
        }
    }

    /// The bytes, for reading from the start: in memory, or the file (blocking reads).
    pub fn into_reader(self) -> std::io::Result<SpoolReader> {
        match self.into_stored()? {
            Stored::Mem(mem) => Ok(SpoolReader::Mem(std::io::Cursor::new(mem))),
            Stored::File(mut file, _) => {
                file.seek(SeekFrom::Start(0))?;
                Ok(SpoolReader::File(file))
            }
        }
    }

    /// Every byte, in memory (tests and small spools).
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        match &self.file {
            None => Ok(self.mem.clone()),
            Some(file) => {
                let mut copy = file.get_ref().try_clone()?;
                let mut out = Vec::with_capacity(self.len);
                // The buffered tail is not in the file yet.
                copy.seek(SeekFrom::Start(0))?;
                copy.take((self.len - file.buffer().len()) as u64).read_to_end(&mut out)?;
                out.extend_from_slice(file.buffer());
                Ok(out)
            }
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A spool's bytes once written: in memory, or a file of that many bytes.
#[derive(Debug)]
pub enum Stored {
    /// Held in memory.
    Mem(Vec<u8>),
    /// Spilled to a file.
    File(std::fs::File, u64),
}

/// A spool being read.
#[derive(Debug)]
pub enum SpoolReader {
    /// Held in memory.
    Mem(std::io::Cursor<Vec<u8>>),
    /// Spilled to a file.
    File(std::fs::File),
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Mem(c) => c.read(buf),
            Self::File(f) => f.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_moves_to_a_file_past_its_threshold_and_reads_back_exactly() {
        let mut s = Spool::new();
        let piece: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 7).collect();
        for _ in 0..3 {
            s.append(&piece).unwrap();
        }
        assert!(s.spilled() && s.len() == 3 * piece.len());
        assert_eq!(s.to_vec().unwrap(), piece.repeat(3));
        // A transaction abandoned mid-way is cut off again.
        s.truncate(2 * piece.len() + 5).unwrap();
        s.append(b"end").unwrap();
        let mut expected = piece.repeat(2);
        expected.extend_from_slice(&piece[..5]);
        expected.extend_from_slice(b"end");
        assert_eq!(s.to_vec().unwrap(), expected);
        let mut back = Vec::new();
        s.into_reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, expected);
        // A small one stays in memory.
        let mut small = Spool::new();
        small.append(b"abc").unwrap();
        small.truncate(1).unwrap();
        assert!(!small.spilled());
        assert_eq!(small.to_vec().unwrap(), b"a");
    }
}
