//! The data path: reading a consistent copy of a server's files ([`method`]) into content-addressed
//! chunks ([`chunk`]), and reading them back verified ([`restore`], [`verify`], [`pitr`]).

pub mod chunk;
pub mod drill;
pub mod method;
pub mod pitr;
pub mod progress;
pub mod restore;
pub mod verify;
