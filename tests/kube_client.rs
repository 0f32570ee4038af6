//! The controller's Kubernetes client over real TLS: a loopback HTTPS server with a certificate made
//! for the test answers `/version`. rustls is built with two crypto providers in this program, and a
//! client built without choosing one panicked before its first request; this binary installs no
//! provider of its own, so only the program's client code can make it pass.
//! The controller's first request names what stops it: an untrusted server, missing CRDs, missing RBAC.

use std::sync::Arc;

use kube::Config;
use mysql_backup_operator::agent::error_chain;
use mysql_backup_operator::controller::run::check_api;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VERSION: &str = r#"{"major":"1","minor":"36","gitVersion":"v1.36.3","gitCommit":"","gitTreeState":"clean","buildDate":"","goVersion":"go1.26","compiler":"gc","platform":"linux/amd64"}"#;

/// An HTTPS server on a free loopback port answering every request with `status` (an HTTP status
/// line's code and reason) and `body`; returns its URL and the CA certificate (the self-signed server
/// certificate) to trust.
async fn serve(status: &'static str, body: &'static str) -> (String, Vec<u8>) {
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
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
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
    let (url, ca) = serve("200 OK", VERSION).await;
    let mut config = Config::new(url.parse().expect("a URL"));
    config.root_cert = Some(vec![ca]);
    let client = mysql_backup_operator::controller::context::from_config(config).expect("a client");
    let version = client.apiserver_version().await.expect("GET /version over TLS");
    assert_eq!(version.git_version, "v1.36.3");
}

/// The controller's first request, against a server answering `status` and `body`, trusted or not.
async fn first_request(status: &'static str, body: &'static str, trusted: bool) -> (String, String) {
    let (url, ca) = serve(status, body).await;
    let mut config = Config::new(url.parse().expect("a URL"));
    if trusted {
        config.root_cert = Some(vec![ca]);
    }
    let client = mysql_backup_operator::controller::context::from_config(config).expect("a client");
    let error = check_api(&client, &url).await.expect_err("refused");
    (url, error_chain(&error))
}

#[tokio::test]
async fn an_untrusted_api_server_is_named_with_the_certificate_error() {
    let (url, chain) = first_request("200 OK", VERSION, false).await;
    let head = format!("reaching the Kubernetes API server at {url}: ");
    assert!(chain.starts_with(&head), "{chain}");
    assert!(chain.contains("invalid peer certificate: UnknownIssuer"), "{chain}");
}

#[tokio::test]
async fn missing_crds_and_missing_permissions_are_told_apart() {
    const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;
    let (url, chain) = first_request("404 Not Found", NOT_FOUND, true).await;
    assert_eq!(
        chain,
        format!("the API server at {url} does not serve MySQLBackups; install crds/crds.yaml or the Helm chart first")
    );
    const FORBIDDEN: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"mysqlbackups.mysqlbackup.dev is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"mysqlbackups\"","reason":"Forbidden","code":403}"#;
    let (url, chain) = first_request("403 Forbidden", FORBIDDEN, true).await;
    assert_eq!(
        chain,
        format!(
            "listing MySQLBackups at {url} is forbidden (mysqlbackups.mysqlbackup.dev is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"mysqlbackups\"); run as the operator's ServiceAccount, with the chart's RBAC"
        )
    );
}
