//! Chunks: the unit of storage — fixed-size pieces of files, hashed, compressed and stored under their
//! hash, and read back checked.

pub mod codec;
pub mod reader;
pub mod writer;
