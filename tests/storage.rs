//! Storage paths that datadirs rarely take: chunks large enough to go up in multipart uploads.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompressible_chunks_go_up_in_parts_and_restore_byte_exact() {
    let s3 = S3Server::start();
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("app")).unwrap();
    // 20 MiB that zstd cannot shrink: a 16 MiB chunk stays above the 8 MiB multipart threshold.
    let bytes = random_bytes(20 * 1024 * 1024 + 123, 0x9e3779b97f4a7c15);
    std::fs::write(data.join("app/big.ibd"), &bytes).unwrap();
    std::fs::write(data.join("small"), b"tiny").unwrap();
    std::fs::write(data.join("empty"), b"").unwrap();

    let storage = s3.storage_args("multipart");
    let backup = [
        args(&["backup", "--method", "cold", "--chunk-size-kib", "16384", "--datadir", data.to_str().unwrap()]),
        storage.clone(),
    ]
    .concat();
    let summary = agent(&backup, &s3.env()).await.summary();
    assert_eq!(summary["totals"]["files"], 3);
    assert_eq!(summary["totals"]["chunks"], 3, "16 MiB + 4 MiB of big.ibd, and small");
    assert!(summary["totals"]["uploadedBytes"].as_u64().unwrap() > 20 * 1024 * 1024);

    let target = dir.path().join("restored");
    agent(&[args(&["restore", "--datadir", target.to_str().unwrap()]), storage].concat(), &s3.env()).await.summary();
    assert!(std::fs::read(target.join("app/big.ibd")).unwrap() == bytes, "big.ibd restored byte for byte");
    assert_eq!(std::fs::read(target.join("small")).unwrap(), b"tiny");
    assert_eq!(std::fs::read(target.join("empty")).unwrap(), b"");
}
