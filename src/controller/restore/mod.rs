//! MySQLRestore: what it needs (pure).

pub mod decide;
