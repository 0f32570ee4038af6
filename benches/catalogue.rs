//! The catalogue of a 10 TB backup, built synthetically: 2.6 million chunk references (10 TiB in
//! 4 MiB chunks) over 20,000 files. Each step runs in a process of its own, so each peak resident
//! memory is that step's alone; the budget is 512 MiB a step.
//!
//! ```text
//! cargo bench --bench catalogue                     # 10 TiB
//! CATALOGUE_TIB=1 cargo bench --bench catalogue     # smaller
//! ```
//!
//! Steps: write the manifest (serialize, compress, store), read it (fetch, decompress, parse,
//! validate), the restore plan (the manifest plus the files in the order restore opens them), the
//! distinct chunks a verify reads, and the known-chunk set a backup builds from a listing of storage
//! (built from generated names through the same map type; listing 2.6 million real objects is left to
//! a real bucket).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use mysql_backup_operator::format::manifest::{
    Base, ChunkHash, ChunkRef, Chunking, FileEntry, Manifest, MethodKind, Prepare, Totals,
};
use mysql_backup_operator::mysql::position::Positions;
use mysql_backup_operator::storage::{RetryPolicy, Storage};

const CHUNK: u64 = 4 << 20;
const FILES: u64 = 20_000;
const BUDGET_MIB: u64 = 512;
const BACKUP_ID: &str = "20261130T000000Z-c0ffee";

fn peak_rss_mib() -> u64 {
    mysql_backup_operator::agent::peak_rss_bytes() >> 20
}

/// The hash of chunk `n`: a real BLAKE3 hash (of `n`), as incompressible as those of real data.
fn hash_of(n: u64) -> ChunkHash {
    ChunkHash::of(&n.to_le_bytes())
}

/// The synthetic manifest: `chunks` references of 4 MiB over 20,000 files of near-equal sizes.
fn manifest(chunks: u64) -> Manifest {
    let per_file = chunks / FILES;
    let mut n = 0;
    let files = (0..FILES)
        .map(|f| {
            let count = if f == FILES - 1 { chunks - n } else { per_file };
            let refs: Vec<ChunkRef> = (0..count)
                .map(|i| {
                    let c = ChunkRef { offset: i * CHUNK, length: CHUNK, stored_length: CHUNK / 3, hash: hash_of(n) };
                    n += 1;
                    c
                })
                .collect();
            FileEntry {
                base: Base::Datadir,
                path: format!("tenant{:05}/orders.ibd", f),
                size: count * CHUNK,
                mode: 0o640,
                chunks: refs,
                tail: None,
            }
        })
        .collect();
    Manifest {
        format_version: mysql_backup_operator::format::manifest::FORMAT_VERSION,
        backup_id: BACKUP_ID.into(),
        method: MethodKind::Mariabackup,
        started_at: Timestamp::from_second(1_795_000_000).ok().unwrap_or_default(),
        completed_at: Timestamp::from_second(1_795_030_000).ok().unwrap_or_default(),
        positions: Positions::default(),
        chunking: Chunking { hash: "blake3".into(), compression: "zstd".into(), level: 3, chunk_size: CHUNK },
        prepare: Prepare::Mariabackup,
        totals: Totals { files: FILES, data_bytes: chunks * CHUNK, chunks, ..Totals::default() },
        files,
        tags: Default::default(),
        incremental: None,
        encryption: None,
    }
}

fn storage(dir: &str) -> Storage {
    Storage::open(&format!("file://{dir}"), &[], RetryPolicy { timeout: Duration::from_secs(10) })
        .expect("file storage")
}

/// Runs one step in this process; prints `seconds peak_mib detail`.
async fn step(name: &str, dir: &str, chunks: u64) {
    let st = storage(dir);
    let started = Instant::now();
    let detail = match name {
        "write" => {
            let m = manifest(chunks);
            let built = started.elapsed().as_secs_f64();
            st.write_manifest(&m).await.expect("write the manifest");
            let key = format!("{dir}/backups/{BACKUP_ID}/manifest.json");
            let stored = std::fs::metadata(&key).map(|m| m.len()).unwrap_or(0);
            let mut json = CountingWriter(0);
            serde_json::to_writer(&mut json, &m).expect("count");
            format!(
                "stored {} MiB (as format 1 JSON: {} MiB); building it took {built:.1} s",
                stored >> 20,
                json.0 >> 20
            )
        }
        "read" => {
            let m = st.read_manifest(BACKUP_ID).await.expect("read the manifest");
            format!("{} files, {} chunk references", m.files.len(), m.totals.chunks)
        }
        "restore-plan" => {
            let m = st.read_manifest(BACKUP_ID).await.expect("read the manifest");
            // The order restore opens files in, and the chunks it will fetch, lazily: walk them once.
            let (mut files, mut refs, mut bytes) = (0u64, 0u64, 0u64);
            for f in &m.files {
                files += 1;
                for c in &f.chunks {
                    refs += 1;
                    bytes += c.length;
                }
            }
            format!("{files} files, {refs} chunks, {} TiB to write", bytes >> 40)
        }
        "verify-set" => {
            let m = st.read_manifest(BACKUP_ID).await.expect("read the manifest");
            let mut distinct: BTreeMap<ChunkHash, &ChunkRef> = BTreeMap::new();
            for c in m.files.iter().flat_map(|f| &f.chunks) {
                distinct.entry(c.hash).or_insert(c);
            }
            format!("{} distinct chunks", distinct.len())
        }
        "known-set" => {
            let mut known: HashMap<ChunkHash, u64> = HashMap::new();
            for n in 0..chunks {
                // As list_chunks parses each listed object name.
                let name = hash_of(n).to_string();
                let hash: ChunkHash = name.parse().expect("a hash");
                known.insert(hash, CHUNK / 3);
            }
            format!("{} chunks known", known.len())
        }
        other => panic!("unknown step {other}"),
    };
    println!("{:.2} {} {detail}", started.elapsed().as_secs_f64(), peak_rss_mib());
}

struct CountingWriter(u64);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let tib: u64 = std::env::var("CATALOGUE_TIB").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let chunks = (tib << 40) / CHUNK;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if let Ok(name) = std::env::var("CATALOGUE_STEP") {
        let dir = std::env::var("CATALOGUE_DIR").expect("CATALOGUE_DIR");
        runtime.block_on(step(&name, &dir, chunks));
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    println!("catalogue of a {tib} TiB backup: {chunks} chunk references of 4 MiB over {FILES} files");
    println!("{:<14} {:>9} {:>13}  detail", "step", "seconds", "peak_rss_MiB");
    let mut over = Vec::new();
    for name in ["write", "read", "restore-plan", "verify-set", "known-set"] {
        let out = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
            .env("CATALOGUE_STEP", name)
            .env("CATALOGUE_DIR", dir.path())
            .env("CATALOGUE_TIB", tib.to_string())
            .output()
            .expect("run a step");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default().to_string();
        assert!(out.status.success(), "step {name} failed: {line}\n{}", String::from_utf8_lossy(&out.stderr));
        let mut parts = line.splitn(3, ' ');
        let (secs, rss, detail) =
            (parts.next().unwrap_or("?"), parts.next().unwrap_or("0"), parts.next().unwrap_or(""));
        println!("{name:<14} {secs:>9} {rss:>13}  {detail}");
        if rss.parse::<u64>().unwrap_or(u64::MAX) > BUDGET_MIB {
            over.push(name);
        }
    }
    if over.is_empty() {
        println!("every step within {BUDGET_MIB} MiB");
    } else {
        println!("OVER the {BUDGET_MIB} MiB budget: {}", over.join(", "));
        std::process::exit(1);
    }
}
