//! Sealing and opening, key files, fingerprints and chunk names.

use super::*;

fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; KEY_LEN])
}

fn ring(keys: &[u8]) -> Arc<Keyring> {
    Arc::new(Keyring::new(keys.iter().map(|b| key(*b)).collect()).unwrap())
}

#[test]
fn seals_and_opens_at_every_frame_boundary_and_streamed() {
    let k = ring(&[7]);
    for len in [0, 1, FRAME - 1, FRAME, FRAME + 1, 2 * FRAME, 2 * FRAME + 5] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let sealed = k.sealing().seal("chunks/ab/x", &plain);
        assert_eq!(sealed.len(), sealed_len(len), "{len}");
        assert_eq!(open(Some(&k), "chunks/ab/x", Bytes::from(sealed.clone())).unwrap(), plain, "{len}");
        // Streamed in odd pieces, the same content comes out.
        let mut opener = Opener::new(Some(k.clone()), "chunks/ab/x");
        let mut out = Vec::new();
        for piece in sealed.chunks(70_001) {
            out.extend_from_slice(&opener.push(Bytes::copy_from_slice(piece)).unwrap());
        }
        out.extend_from_slice(&opener.finish().unwrap());
        assert_eq!(out, plain, "{len}");
    }
}

#[test]
fn refuses_another_name_a_cut_an_alteration_and_the_wrong_key() {
    let k = ring(&[7]);
    let plain = vec![42u8; FRAME + 10];
    let sealed = k.sealing().seal("backups/a/manifest.json", &plain);
    let fp = k.sealing().fingerprint();
    let opened = |name: &str, bytes: &[u8], ring: Option<&Arc<Keyring>>| {
        open(ring, name, Bytes::copy_from_slice(bytes)).unwrap_err().to_string()
    };
    let refused = format!("it does not open with key {fp}: it was altered, cut off or moved from another name");
    assert_eq!(opened("backups/b/manifest.json", &sealed, Some(&k)), format!("backups/b/manifest.json: {refused}"));
    // Cut after the first frame: the first frame alone is not a last frame.
    let cut = &sealed[..HEADER_LEN + FRAME + TAG_LEN];
    assert_eq!(opened("backups/a/manifest.json", cut, Some(&k)), format!("backups/a/manifest.json: {refused}"));
    let mut altered = sealed.clone();
    altered[HEADER_LEN + 3] ^= 1;
    assert_eq!(opened("backups/a/manifest.json", &altered, Some(&k)), format!("backups/a/manifest.json: {refused}"));
    let other = ring(&[8, 9]);
    let (f8, f9) = (key(8).fingerprint(), key(9).fingerprint());
    assert_eq!(
        opened("backups/a/manifest.json", &sealed, Some(&other)),
        format!(
            "backups/a/manifest.json: it is encrypted with key {fp}, which is not among the keys given ({f8}, {f9})"
        )
    );
    assert_eq!(
        opened("backups/a/manifest.json", &sealed, None),
        format!(
            "backups/a/manifest.json: it is encrypted with key {fp}, and no encryption key was given \
             (--encryption-key-file)"
        )
    );
    assert_eq!(
        opened("x", b"{\"plain\": true}", Some(&k)),
        "x: it is not encrypted, but objects read with an encryption key must be"
    );
    assert_eq!(open(None, "x", Bytes::from_static(b"plain")).unwrap(), Bytes::from_static(b"plain"));
}

#[test]
fn keys_parse_from_base64_and_hex_and_name_chunks_apart() {
    let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let (a, b) = (Key::parse(b64).unwrap(), Key::parse(hex).unwrap());
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.namer().hash(b"x"), b.namer().hash(b"x"));
    assert_ne!(a.namer().hash(b"x"), ChunkHash::of(b"x"));
    assert_ne!(a.namer().hash(b"x"), key(1).namer().hash(b"x"));
    assert_eq!(Key::parse("c2hvcnQ=").unwrap_err(), "the key is 5 bytes long; it must be 32 (openssl rand -base64 32)");
    assert_eq!(
        Key::parse("not a key!").unwrap_err(),
        "expected 32 random bytes as base64 (openssl rand -base64 32) or as 64 hex digits"
    );
    let fp = a.fingerprint();
    assert_eq!(fp.to_string().len(), 16);
    assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(format!("{a:?}"), format!("Key {{ fingerprint: {fp}, .. }}"));
    let err = Keyring::new(vec![Key::parse(b64).unwrap(), Key::parse(hex).unwrap()]).unwrap_err();
    assert_eq!(err.to_string(), format!("encryption key {fp} is given twice"));
}

#[test]
fn a_sealer_fed_in_pieces_writes_what_one_seal_would_and_it_opens() {
    let key = Key::from_bytes(&[7; KEY_LEN]);
    let ring = Arc::new(Keyring::new(vec![Key::from_bytes(&[7; KEY_LEN])]).unwrap());
    for len in [0, 5, FRAME, FRAME + 1, 3 * FRAME + 17] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut sealer = key.sealer("binlogs/a/x");
        let mut stored = Vec::new();
        for piece in plain.chunks(300_001) {
            stored.extend(sealer.push(piece));
        }
        stored.extend(sealer.finish());
        assert_eq!(stored.len(), sealed_len(len), "{len}");
        assert_eq!(open(Some(&ring), "binlogs/a/x", Bytes::from(stored)).unwrap(), plain, "{len}");
    }
}
