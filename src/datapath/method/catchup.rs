//! The `catchup` method's copy: a cold copy of a scratch datadir that a private server caught up with
//! the source by replication (see `crate::agent`'s catch-up), stopped cleanly. Its positions are the
//! ones replication reached, not the stale binary logs of the backup it was restored from (those are
//! removed before the copy).

use super::cold::Cold;
use super::{BackupMethod, MethodError};
use crate::datapath::chunk::writer::ChunkWriter;
use crate::format::manifest::{MethodKind, Prepare};
use crate::mysql::position::Positions;

/// A cold copy of a caught-up scratch datadir, recorded at `positions`.
#[derive(Debug, Clone)]
pub struct CatchupCopy {
    /// The copy of the scratch datadir.
    pub cold: Cold,
    /// The positions replication reached.
    pub positions: Positions,
}

impl BackupMethod for CatchupCopy {
    const KIND: MethodKind = MethodKind::Catchup;
    const PREPARE: Prepare = Prepare::None;

    async fn estimated_bytes(&self) -> u64 {
        self.cold.estimated_bytes().await
    }

    async fn run(&self, writer: &ChunkWriter) -> Result<Positions, MethodError> {
        self.cold.run(writer).await?;
        Ok(self.positions.clone())
    }
}
