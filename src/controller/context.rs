//! The Kubernetes client, over TLS with one process-wide crypto provider.
//!
//! rustls is built with two providers here (`ring` for kube and mysql_async, `aws-lc-rs` for
//! object_store), and then refuses to guess: a client built without a process default panics on its
//! first TLS configuration. Every Kubernetes client of this program comes from this module.

use kube::{Client, Config};

/// Makes `ring` the process's TLS provider, once; later calls, and a provider someone else installed
/// first, leave it as it is.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for `config`.
pub fn from_config(config: Config) -> Result<Client, kube::Error> {
    install_tls_provider();
    Client::try_from(config)
}

/// A client from the environment: in-cluster service account, else `KUBECONFIG` or `~/.kube/config`.
pub async fn infer() -> Result<Client, kube::Error> {
    from_config(Config::infer().await.map_err(kube::Error::InferConfig)?)
}
