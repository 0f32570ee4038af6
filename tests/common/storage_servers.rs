//! Object storage servers: s3s-fs in-process (S3) and Azure's emulator Azurite.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use super::*;

/// An S3-protocol server (s3s-fs) on a loopback port, in this process on its own runtime thread.
pub struct S3Server {
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    /// Directory holding the buckets.
    pub root: tempfile::TempDir,
    /// While true, uploads of chunks wait: a backup holds still at its first new chunk.
    pub hold_chunk_uploads: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While true, downloads of chunks wait: a restore holds still at its first chunk.
    pub hold_chunk_reads: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While true the server is down: new connections are closed as they come, and requests on open
    /// ones are dropped without an answer.
    pub down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Access key of the test S3 server.
pub const S3_ACCESS_KEY: &str = "test-access-key";

/// Secret key of the test S3 server.
pub const S3_SECRET_KEY: &str = "test-secret-key-0123456789";

impl S3Server {
    /// Starts a server with one bucket named `bucket`.
    pub fn start() -> Self {
        use hyper_util::{
            rt::{TokioExecutor, TokioIo},
            server::conn::auto::Builder,
        };
        let root = tempdir();
        std::fs::create_dir(root.path().join("bucket")).expect("bucket directory");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = hold.clone();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_down = down.clone();
        let hold_reads = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reads_held = hold_reads.clone();
        std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let mut b = s3s::service::S3ServiceBuilder::new(fs);
                b.set_auth(s3s::auth::SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
                let service = b.build();
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                                drop(socket);
                                continue;
                            }
                            let gates = (held.clone(), reads_held.clone(), is_down.clone());
                            let service = service.clone();
                            let gated = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                                let (service, (held, reads_held, is_down)) = (service.clone(), gates.clone());
                                async move {
                                    let gate = match *req.method() {
                                        http::Method::PUT => Some(held),
                                        http::Method::GET => Some(reads_held),
                                        _ => None,
                                    };
                                    if let Some(gate) = gate.filter(|_| req.uri().path().contains("/chunks/")) {
                                        while gate.load(std::sync::atomic::Ordering::SeqCst) {
                                            tokio::time::sleep(Duration::from_millis(20)).await;
                                        }
                                    }
                                    if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                                        // An error closes the connection with no response, as a dying server does.
                                        return Err(s3s::HttpError::new("the server is down".into()));
                                    }
                                    hyper::service::Service::call(&service, req).await
                                }
                            });
                            tokio::spawn(async move {
                                let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), gated).await;
                            });
                        }
                        _ = &mut rx => break,
                    }
                }
            });
        });
        Self { endpoint, root, hold_chunk_uploads: hold, hold_chunk_reads: hold_reads, down, shutdown: Some(tx) }
    }

    /// Agent arguments for storage `s3://bucket/<prefix>` on this server.
    pub fn storage_args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--storage".into(),
            format!("s3://bucket/{prefix}"),
            "--storage-option".into(),
            format!("endpoint={}", self.endpoint),
            "--storage-option".into(),
            "allow_http=true".into(),
            "--storage-option".into(),
            "region=us-east-1".into(),
        ]
    }

    /// Environment with this server's credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()), ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into())]
    }

    /// Local path of an object.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join("bucket").join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Azure's emulator Azurite on a loopback port, stopped when dropped.
pub struct Azurite {
    child: std::process::Child,
    /// Blob endpoint including the account, `http://127.0.0.1:port/devstoreaccount1`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// Azurite's well-known development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    /// Starts Azurite from the repository's tool directory (installed by the test script) or from
    /// `AZURITE_BLOB`, and creates `container`.
    pub async fn start(container: &str) -> Self {
        let bin = std::env::var("AZURITE_BLOB")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/azurite-blob"));
        assert!(bin.exists(), "Azurite not found at {}: run ./scripts/test, which installs it from npm", bin.display());
        let dir = tempdir();
        let port = free_port();
        let child = std::process::Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
            .arg(dir.path())
            .args(["--disableTelemetry", "--silent", "--skipApiVersionCheck"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite");
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "Azurite did not listen within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let me = Self { child, endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"), _dir: dir };
        me.create_container(port, container).await;
        me
    }

    /// Creates a container with one SharedKey-signed request (object_store cannot create containers).
    async fn create_container(&self, port: u16, container: &str) {
        use base64::Engine;
        use hmac::Mac;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let date = jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let version = "2021-08-06";
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY).expect("key");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac");
        mac.update(string_to_sign.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let request = format!(
            "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect azurite");
        s.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        s.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 201"), "creating container {container}: {response}");
    }

    /// Agent arguments for storage `az://<container>/<prefix>` on this emulator.
    pub fn storage_args(&self, container: &str, prefix: &str) -> Vec<String> {
        vec![
            "--storage".into(),
            format!("az://{container}/{prefix}"),
            "--storage-option".into(),
            format!("endpoint={}", self.endpoint),
            "--storage-option".into(),
            "allow_http=true".into(),
        ]
    }

    /// Environment with the emulator's account.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), AZURITE_ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
