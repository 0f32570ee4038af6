//! Client-side encryption: the keys, and the sealed form every object takes in an encrypted storage.
//!
//! A key is 32 random bytes, kept in a file as base64 (`openssl rand -base64 32`) or 64 hex digits.
//! Three sub-keys are derived from it with BLAKE3's `derive_key`, each under its own context string,
//! so none reveals another or the key:
//!
//! - the **sealing key** of XChaCha20-Poly1305;
//! - the **naming key**: a chunk's name is the BLAKE3 hash of its content keyed with it, so names say
//!   nothing of the content, yet equal chunks still get equal names under one key (deduplication);
//! - the **fingerprint**, 8 bytes shown as 16 hex digits: it names the key in manifests, sealed
//!   objects and error messages, and reveals nothing of it.
//!
//! A sealed object is a header (magic, fingerprint, a random 19-byte nonce prefix) and the content
//! in frames of 1 MiB, each sealed on its own with the STREAM construction (`aead::stream`, the
//! nonce carries the frame's number and a last-frame flag), so a large object opens while it
//! streams in, and frames cannot be reordered, dropped or cut off unnoticed. Every frame's
//! associated data is the object's key relative to the storage prefix: a sealed object moved under
//! another name does not open. Random 192-bit nonces make a repeated nonce out of reach however
//! many objects one key seals.
//!
//! Why RustCrypto's AEAD and not `age`: one secret must give a keyed name, a seal bound to the
//! object's name, and streaming frames; `age` gives the frames but neither keyed hashing nor
//! associated data, and its per-file header would cost an X25519 exchange for every chunk.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305,
    aead::{
        Payload,
        stream::{DecryptorBE32, EncryptorBE32},
    },
};
use rand::Rng;
use zeroize::Zeroizing;

use crate::format::manifest::ChunkHash;

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;
/// The first bytes of every sealed object.
const MAGIC: &[u8; 8] = b"MBOSEAL1";
/// Length of the nonce prefix (XChaCha20's 24 bytes less STREAM's 4-byte counter and 1-byte flag).
const NONCE_PREFIX_LEN: usize = 19;
/// Length of a sealed object's header.
const HEADER_LEN: usize = MAGIC.len() + FINGERPRINT_LEN + NONCE_PREFIX_LEN;
/// Plaintext bytes in one frame; every frame but the last is full, the last is shorter (maybe empty).
const FRAME: usize = 1 << 20;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;

/// Context strings of the sub-keys (never change: they are part of the storage format).
const SEALING_CONTEXT: &str = "mysql-backup-operator 2026-12-01 object sealing key";
const NAMING_CONTEXT: &str = "mysql-backup-operator 2026-12-01 chunk naming key";
const FINGERPRINT_CONTEXT: &str = "mysql-backup-operator 2026-12-01 key fingerprint";

/// The name of the cipher as manifests record it.
pub const CIPHER: &str = "xchacha20poly1305-stream-1mib";

/// Errors of keys and sealed objects. Object names are relative to the storage prefix.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// A key file cannot be read or does not hold a key.
    #[error("encryption key file {path}: {reason}")]
    ReadKey { path: String, reason: String },
    /// The same key was given twice.
    #[error("encryption key {0} is given twice")]
    DuplicateKey(Fingerprint),
    /// The object is sealed with a key that was not given.
    #[error("{object}: it is encrypted with key {expected}, {given}")]
    MissingKey { object: String, expected: Fingerprint, given: Given },
    /// The object does not open with its key: altered, cut off, or moved from another name.
    #[error("{object}: it does not open with key {fingerprint}: it was altered, cut off or moved from another name")]
    Open { object: String, fingerprint: Fingerprint },
    /// A key was given but the object is not sealed.
    #[error("{object}: it is not encrypted, but objects read with an encryption key must be")]
    NotSealed { object: String },
}

/// The keys given, as an error message tells them.
#[derive(Debug)]
pub struct Given(Vec<Fingerprint>);

impl std::fmt::Display for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [] => write!(f, "and no encryption key was given (--encryption-key-file)"),
            keys => {
                let list: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                write!(f, "which is not among the keys given ({})", list.join(", "))
            }
        }
    }
}

use crate::format::fingerprint::FINGERPRINT_LEN;
pub use crate::format::fingerprint::Fingerprint;

/// One key's sub-keys. Its `Debug` shows the fingerprint only.
pub struct Key {
    sealing: Zeroizing<[u8; KEY_LEN]>,
    naming: Zeroizing<[u8; KEY_LEN]>,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl Key {
    /// The key made of `raw`.
    pub fn from_bytes(raw: &[u8; KEY_LEN]) -> Self {
        let fp = blake3::derive_key(FINGERPRINT_CONTEXT, raw);
        let mut fingerprint = [0u8; FINGERPRINT_LEN];
        fingerprint.copy_from_slice(&fp[..FINGERPRINT_LEN]);
        Self {
            sealing: Zeroizing::new(blake3::derive_key(SEALING_CONTEXT, raw)),
            naming: Zeroizing::new(blake3::derive_key(NAMING_CONTEXT, raw)),
            fingerprint: Fingerprint(fingerprint),
        }
    }

    /// Reads a key file: 32 bytes as base64 or as 64 hex digits, surrounding white space ignored.
    pub fn read(path: &std::path::Path) -> Result<Self, EncryptionError> {
        let err = |reason: String| EncryptionError::ReadKey { path: path.display().to_string(), reason };
        let text = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
        let text = std::str::from_utf8(&text)
            .map_err(|_| err("expected base64 or hex text, found binary data".into()))?
            .trim();
        Self::parse(text).map_err(err)
    }

    /// Parses a key's text: base64 or 64 hex digits of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        if text.len() == 2 * KEY_LEN && hex::decode_to_slice(text, &mut raw[..]).is_ok() {
            return Ok(Self::from_bytes(&raw));
        }
        let decoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| {
            "expected 32 random bytes as base64 (openssl rand -base64 32) or as 64 hex digits".to_string()
        })?);
        if decoded.len() != KEY_LEN {
            return Err(format!(
                "the key is {} bytes long; it must be {KEY_LEN} (openssl rand -base64 32)",
                decoded.len()
            ));
        }
        raw.copy_from_slice(&decoded);
        Ok(Self::from_bytes(&raw))
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// What names chunks under this key.
    pub fn namer(&self) -> ChunkNamer {
        ChunkNamer(Some(Arc::new(self.naming.clone())))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.sealing.as_ref().into())
    }

    /// A sealer of object `object` whose content arrives in pieces: the same bytes [`Key::seal`] makes
    /// of the whole, a frame at a time, so an object of any size is sealed in a frame's memory.
    pub fn sealer(&self, object: &str) -> Sealer {
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        rand::rng().fill(&mut prefix);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.fingerprint.0);
        header.extend_from_slice(&prefix);
        Sealer {
            enc: EncryptorBE32::from_aead(self.cipher(), prefix.as_ref().into()),
            aad: object.to_string(),
            pending: Vec::with_capacity(FRAME),
            header: Some(header),
        }
    }

    /// Seals `plain` as object `object` (its key relative to the storage prefix).
    pub fn seal(&self, object: &str, plain: &[u8]) -> Vec<u8> {
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        rand::rng().fill(&mut prefix);
        let mut out = Vec::with_capacity(sealed_len(plain.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.fingerprint.0);
        out.extend_from_slice(&prefix);
        let mut enc = EncryptorBE32::from_aead(self.cipher(), prefix.as_ref().into());
        let aad = object.as_bytes();
        // Full frames are never the last: a content of a whole number of frames ends with an empty one.
        let mut rest = plain;
        while rest.len() >= FRAME {
            let (frame, tail) = rest.split_at(FRAME);
            // Encryption fails only past 2^32 frames (4 PiB): not an object this program writes.
            let sealed = enc.encrypt_next(Payload { msg: frame, aad }).expect("a frame within STREAM's counter");
            out.extend_from_slice(&sealed);
            rest = tail;
        }
        let sealed = enc.encrypt_last(Payload { msg: rest, aad }).expect("a frame within STREAM's counter");
        out.extend_from_slice(&sealed);
        out
    }
}

/// Seals one object piece by piece (see [`Key::sealer`]).
pub struct Sealer {
    enc: EncryptorBE32<XChaCha20Poly1305>,
    aad: String,
    pending: Vec<u8>,
    header: Option<Vec<u8>>,
}

impl Sealer {
    /// Takes the next `plain` bytes; returns the sealed bytes now complete (the header first).
    pub fn push(&mut self, mut plain: &[u8]) -> Vec<u8> {
        let mut out = self.header.take().unwrap_or_default();
        // A full frame is sealed once a byte follows it: the last frame, sealed by `finish`, is never full.
        while !plain.is_empty() {
            self.seal_full_frame(&mut out);
            let take = (FRAME - self.pending.len()).min(plain.len());
            self.pending.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
        }
        out
    }

    /// Seals the pending frame onto `out` if it is full (it is then not the last one).
    fn seal_full_frame(&mut self, out: &mut Vec<u8>) {
        if self.pending.len() == FRAME {
            let sealed = self
                .enc
                .encrypt_next(Payload { msg: &self.pending, aad: self.aad.as_bytes() })
                .expect("a frame within STREAM's counter");
            out.extend_from_slice(&sealed);
            self.pending.clear();
        }
    }

    /// Seals what is left: the last frame.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = self.header.take().unwrap_or_default();
        self.seal_full_frame(&mut out);
        let last = self
            .enc
            .encrypt_last(Payload { msg: &self.pending, aad: self.aad.as_bytes() })
            .expect("a frame within STREAM's counter");
        out.extend_from_slice(&last);
        out
    }
}

/// Names chunks: the plain BLAKE3 hash of their content, or the hash keyed with a key's naming key.
#[derive(Clone, Default)]
pub struct ChunkNamer(Option<Arc<Zeroizing<[u8; KEY_LEN]>>>);

impl ChunkNamer {
    /// The name of a chunk with content `data`.
    pub fn hash(&self, data: &[u8]) -> ChunkHash {
        match &self.0 {
            None => ChunkHash::of(data),
            Some(key) => ChunkHash(*blake3::keyed_hash(key, data).as_bytes()),
        }
    }

    /// The manifest's name of the hash.
    pub fn algorithm(&self) -> &'static str {
        if self.0.is_some() { "blake3-keyed" } else { "blake3" }
    }
}

/// The stored length of an object of `plain_len` bytes once sealed.
pub fn sealed_len(plain_len: usize) -> usize {
    HEADER_LEN + (plain_len / FRAME + 1) * TAG_LEN + plain_len
}

/// Whether `stored` is a sealed object.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// The keys given: the first seals what is written, every one opens what it sealed.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring of `keys`, the first sealing; at least one, no key twice.
    pub fn new(keys: Vec<Key>) -> Result<Self, EncryptionError> {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.fingerprint == k.fingerprint) {
                return Err(EncryptionError::DuplicateKey(k.fingerprint));
            }
        }
        assert!(!keys.is_empty(), "a keyring holds at least one key");
        Ok(Self { keys })
    }

    /// Reads the key files `paths` (the first seals), then every file of directory `dir` but hidden
    /// ones, by name: a mounted Kubernetes Secret, which holds the sealing key's file too (a key
    /// found there again is skipped).
    pub fn read(paths: &[std::path::PathBuf], dir: Option<&std::path::Path>) -> Result<Option<Self>, EncryptionError> {
        if paths.is_empty() {
            return Ok(None);
        }
        let mut keys = paths.iter().map(|p| Key::read(p)).collect::<Result<Vec<_>, _>>()?;
        if let Some(dir) = dir {
            for path in key_files(dir)? {
                let key = Key::read(&path)?;
                if !keys.iter().any(|k| k.fingerprint == key.fingerprint) {
                    keys.push(key);
                }
            }
        }
        Self::new(keys).map(Some)
    }

    /// The key that seals new objects.
    pub fn sealing(&self) -> &Key {
        &self.keys[0]
    }

    /// The key with fingerprint `fp`, if given.
    pub fn get(&self, fp: Fingerprint) -> Option<&Key> {
        self.keys.iter().find(|k| k.fingerprint == fp)
    }

    /// The fingerprints of the keys, in the order given.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.keys.iter().map(|k| k.fingerprint).collect()
    }
}

/// The files of `dir` a key may be in: regular files (or links to them) whose names do not start with
/// a dot (a Secret volume keeps its own entries under `..data`), by name.
fn key_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, EncryptionError> {
    let err = |e: std::io::Error| EncryptionError::ReadKey { path: dir.display().to_string(), reason: e.to_string() };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The fingerprint a sealed object names, or `None` for an object that is not sealed.
pub fn fingerprint_of(stored: &[u8]) -> Option<Fingerprint> {
    if !is_sealed(stored) || stored.len() < HEADER_LEN {
        return None;
    }
    let mut fp = [0u8; FINGERPRINT_LEN];
    fp.copy_from_slice(&stored[MAGIC.len()..MAGIC.len() + FINGERPRINT_LEN]);
    Some(Fingerprint(fp))
}

/// Opens object `object` as stored: with a keyring, it must be sealed with one of its keys; without,
/// it must not be sealed.
pub fn open(ring: Option<&Arc<Keyring>>, object: &str, stored: Bytes) -> Result<Bytes, EncryptionError> {
    if ring.is_none() && !is_sealed(&stored) {
        // Storage in the clear: the bytes as they are, uncopied.
        return Ok(stored);
    }
    let mut opener = Opener::new(ring.cloned(), object);
    let head = opener.push(stored)?;
    let last = opener.finish()?;
    // An object of one frame (a chunk, a manifest) comes out whole from `finish`: no copy to join.
    if head.is_empty() {
        return Ok(last);
    }
    let mut out = BytesMut::with_capacity(head.len() + last.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&last);
    Ok(out.freeze())
}

/// Opens a sealed object as it streams in: [`Opener::push`] the pieces in order, then
/// [`Opener::finish`]. Memory holds at most one frame beyond what a push returns.
pub struct Opener {
    ring: Option<Arc<Keyring>>,
    object: String,
    state: OpenerState,
    buf: BytesMut,
}

enum OpenerState {
    /// The header has not arrived in full.
    Header,
    /// Frames follow.
    Frames { dec: Box<DecryptorBE32<XChaCha20Poly1305>>, fingerprint: Fingerprint },
    /// No keyring and the object is not sealed: bytes pass through.
    Plain,
}

impl Opener {
    /// An opener of object `object` with the keys of `ring`.
    pub fn new(ring: Option<Arc<Keyring>>, object: &str) -> Self {
        Self { ring, object: object.to_string(), state: OpenerState::Header, buf: BytesMut::new() }
    }

    /// Takes the next piece of the object; returns the content opened so far (maybe none).
    pub fn push(&mut self, piece: Bytes) -> Result<Bytes, EncryptionError> {
        if let OpenerState::Plain = self.state {
            return Ok(piece);
        }
        if self.buf.is_empty() {
            // Taken over without a copy when nothing else holds the piece.
            self.buf = piece.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        } else {
            self.buf.extend_from_slice(&piece);
        }
        if let OpenerState::Header = self.state {
            if self.buf.len() < HEADER_LEN && MAGIC.starts_with(&self.buf[..self.buf.len().min(MAGIC.len())]) {
                return Ok(Bytes::new());
            }
            self.start()?;
            if let OpenerState::Plain = self.state {
                return Ok(self.buf.split().freeze());
            }
        }
        let OpenerState::Frames { dec, fingerprint } = &mut self.state else { return Ok(Bytes::new()) };
        let mut out = BytesMut::new();
        // A full frame is never the last: open one only once more bytes follow it.
        while self.buf.len() > FRAME + TAG_LEN {
            let frame = self.buf.split_to(FRAME + TAG_LEN);
            let plain = dec
                .decrypt_next(Payload { msg: &frame, aad: self.object.as_bytes() })
                .map_err(|_| EncryptionError::Open { object: self.object.clone(), fingerprint: *fingerprint })?;
            out.extend_from_slice(&plain);
        }
        Ok(out.freeze())
    }

    /// Reads the header (or finds the object is not sealed) once enough bytes arrived.
    fn start(&mut self) -> Result<(), EncryptionError> {
        let sealed_by = fingerprint_of(&self.buf);
        let (ring, fingerprint) = match (&self.ring, sealed_by) {
            (None, None) => {
                self.state = OpenerState::Plain;
                return Ok(());
            }
            (None, Some(expected)) => {
                return Err(EncryptionError::MissingKey {
                    object: self.object.clone(),
                    expected,
                    given: Given(Vec::new()),
                });
            }
            (Some(_), None) => return Err(EncryptionError::NotSealed { object: self.object.clone() }),
            (Some(ring), Some(fingerprint)) => (ring, fingerprint),
        };
        let key = ring.get(fingerprint).ok_or_else(|| EncryptionError::MissingKey {
            object: self.object.clone(),
            expected: fingerprint,
            given: Given(ring.fingerprints()),
        })?;
        let header = self.buf.split_to(HEADER_LEN);
        let prefix = &header[MAGIC.len() + FINGERPRINT_LEN..];
        self.state =
            OpenerState::Frames { dec: Box::new(DecryptorBE32::from_aead(key.cipher(), prefix.into())), fingerprint };
        Ok(())
    }

    /// Ends the object: opens its last frame, which must be there.
    pub fn finish(mut self) -> Result<Bytes, EncryptionError> {
        if let OpenerState::Header = self.state {
            self.start()?;
        }
        match self.state {
            OpenerState::Plain => Ok(self.buf.freeze()),
            // The header is cut off: a sealed object too short to have one.
            OpenerState::Header => Err(EncryptionError::NotSealed { object: self.object }),
            OpenerState::Frames { dec, fingerprint } => dec
                .decrypt_last(Payload { msg: &self.buf, aad: self.object.as_bytes() })
                .map(Bytes::from)
                .map_err(|_| EncryptionError::Open { object: self.object, fingerprint }),
        }
    }
}

#[cfg(test)]
mod tests;
