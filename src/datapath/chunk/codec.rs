//! Chunk compression: zstd frames, with one compression and one decompression context kept per
//! blocking thread (building a context costs more than a small chunk's work).

use std::{cell::RefCell, io};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data` into one zstd frame at `level`.
pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some((l, c)) if *l == level => c,
            _ => &mut slot.insert((level, zstd::bulk::Compressor::new(level)?)).1,
        };
        compressor.compress(data)
    })
}

/// Decompresses one zstd frame whose content is at most `capacity` bytes.
pub fn decompress(frame: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match &mut *slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(frame, capacity)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_levels_and_refuses_oversized_content() {
        let data = b"abcabcabc".repeat(1000);
        for level in [1, 3, 19, 3] {
            let frame = compress(&data, level).unwrap();
            assert!(frame.len() < data.len());
            assert_eq!(decompress(&frame, data.len()).unwrap(), data);
            // The frames are standard: the one-shot API reads them too.
            assert_eq!(zstd::bulk::decompress(&frame, data.len()).unwrap(), data);
        }
        let frame = compress(&data, 3).unwrap();
        assert!(decompress(&frame, data.len() - 1).is_err());
    }
}
