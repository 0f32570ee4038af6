//! What the data path knows of MySQL and MariaDB: talking to a running server, GTID algebra, the
//! replication positions recorded with backups, the mbstream format, binary logs, and the servers' tools
//! as child processes.

pub mod binlog;
pub mod gtid;
pub mod mbstream;
pub mod position;
pub mod private_server;
pub mod replica;
pub mod server;
pub mod tools;
