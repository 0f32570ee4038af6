//! The controller's Kubernetes client over real TLS: a loopback HTTPS server with a certificate made
//! for the test answers `/version`. rustls is built with two crypto providers in this program, and a
//! client built without choosing one panicked before its first request; this binary installs no
//! provider of its own, so only the program's client code can make it pass.

use std::sync::Arc;

use kube::Config;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VERSION: &str = r#"{"major":"1","minor":"36","gitVersion":"v1.36.3","gitCommit":"","gitTreeState":"clean","buildDate":"","goVersion":"go1.26","compiler":"gc","platform":"linux/amd64"}"#;

/// An HTTPS server on a free loopback port answering every request with `VERSION`; returns its URL
/// and the CA certificate (the self-signed server certificate) to trust.
async fn serve_version() -> (String, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let der = cert.cert.der().to_vec();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    // The server chooses its provider explicitly: it must not install the process default.
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(der.clone())], key)
        .expect("server TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{VERSION}",
                    VERSION.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://{addr}"), der)
}

#[tokio::test]
async fn the_client_talks_tls_to_an_api_server() {
    let (url, ca) = serve_version().await;
    let mut config = Config::new(url.parse().expect("a URL"));
    config.root_cert = Some(vec![ca]);
    let client = mysql_backup_operator::controller::context::from_config(config).expect("a client");
    let version = client.apiserver_version().await.expect("GET /version over TLS");
    assert_eq!(version.git_version, "v1.36.3");
}
