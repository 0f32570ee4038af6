//! The key history of an encrypted storage prefix: `encryption.json`, the one object stored in the
//! clear there. It lists the fingerprints of the keys that sealed the prefix's objects, oldest first;
//! the last one seals what is written now. Writers read it to refuse mixing keys or mixing encrypted
//! and clear objects under one prefix, and append to it when keys are rotated.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::fingerprint::Fingerprint;

/// The format version this build writes and reads.
pub const KEY_HISTORY_FORMAT: u32 = 1;

/// The keys of a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyHistory {
    /// Format version; see [`KEY_HISTORY_FORMAT`].
    pub format_version: u32,
    /// Every key used, oldest first; the last is current.
    pub keys: Vec<KeyUse>,
}

/// One key of a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUse {
    /// The key's fingerprint.
    pub fingerprint: Fingerprint,
    /// When it first sealed an object here.
    pub since: Timestamp,
}

impl KeyHistory {
    /// A history of one key, first used now.
    pub fn start(fingerprint: Fingerprint) -> Self {
        Self { format_version: KEY_HISTORY_FORMAT, keys: vec![KeyUse { fingerprint, since: Timestamp::now() }] }
    }

    /// The key sealing new objects.
    pub fn current(&self) -> Option<Fingerprint> {
        self.keys.last().map(|k| k.fingerprint)
    }

    /// Parses the stored history.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let h: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if h.format_version > KEY_HISTORY_FORMAT {
            return Err(format!(
                "format version {} is newer than this build reads ({KEY_HISTORY_FORMAT}); upgrade mysql-backup-operator",
                h.format_version
            ));
        }
        if h.keys.is_empty() {
            return Err("it lists no key".into());
        }
        Ok(h)
    }
}
