//! The cluster port's transport (`../shared/CLUSTER.md` §3.3). ractor_cluster authenticates peers with a
//! cookie challenge and then sends frames with no MAC, so:
//! - on loopback the port may speak plaintext;
//! - anywhere else it must speak **mutual TLS** with a cluster CA (`INSIGHTS_CLUSTER_TLS_CERT`, `_KEY`,
//!   `_CA`): each node presents a certificate for its node name, signed by the CA, and accepts only peers
//!   that do the same; plaintext off loopback is refused at start.
//!
//! ractor_cluster's own TLS listener awaits each handshake inline with no timeout, so one client that
//! opens TCP and never completes TLS would stall every later connection. With TLS the node runs its own
//! accept loop instead: every handshake runs in its own task, bounded by [`HANDSHAKE_TIMEOUT`], and the
//! finished stream is handed to the NodeServer (whose own listener then sits, TLS-only, on an unused
//! loopback port).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::file::ClusterFile;
use crate::config::TlsFiles;

/// The longest a peer may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster port's TLS, both ways.
#[derive(Clone)]
pub struct ClusterTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

impl ClusterTls {
    /// Loads the files: a server config that requires client certificates signed by the CA, and a
    /// client config that trusts only the CA and presents the same certificate. The error is one line.
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("cannot read the cluster TLS key {}: {e}", files.key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certs(&files.ca)? {
            roots.add(ca).map_err(|e| {
                format!(
                    "the cluster CA {} is not a usable certificate: {e}",
                    files.ca.display()
                )
            })?;
        }
        let roots = Arc::new(roots);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("cannot build the cluster's client verifier: {e}"))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("the cluster TLS certificate and key do not go together: {e}"))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the cluster TLS certificate cannot authenticate this node: {e}"))?;
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let found: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if found.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(found)
}

/// Refuses a cluster whose traffic would cross a network in clear: without TLS, every member's address
/// must be a loopback address.
pub fn check(file: &ClusterFile, tls: bool) -> Result<(), String> {
    if tls {
        return Ok(());
    }
    for n in &file.nodes {
        let loopback = match n.address.parse::<SocketAddr>() {
            Ok(a) => a.ip().is_loopback(),
            Err(_) => n.address.rsplit_once(':').is_some_and(|(h, _)| h == "localhost"),
        };
        if !loopback {
            return Err(format!(
                "node {:?} has the cluster address {}, which is not a loopback address: set INSIGHTS_CLUSTER_TLS_CERT, INSIGHTS_CLUSTER_TLS_KEY and INSIGHTS_CLUSTER_TLS_CA (mutual TLS with a cluster CA); plaintext is refused off loopback",
                n.name, n.address
            ));
        }
    }
    Ok(())
}

/// Accepts cluster connections on `listener`, each handshake in its own task bounded by
/// [`HANDSHAKE_TIMEOUT`], and hands finished streams to the NodeServer.
pub fn spawn_acceptor(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    node_server: ActorRef<NodeServerMessage>,
) {
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, node_server) = (acceptor.clone(), node_server.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().unwrap_or(peer);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = node_server.cast(NodeServerMessage::ConnectionOpened {
                            stream: Box::new(NetworkStream::TlsServer {
                                peer_addr: peer,
                                local_addr: local,
                                stream,
                            }),
                            is_server: true,
                        });
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "cluster TLS handshake refused"),
                    Err(_) => tracing::warn!(%peer, "cluster TLS handshake timed out: connection dropped"),
                }
            });
        }
    });
}

/// Dials a peer over TLS, verifying that its certificate names `peer` and is signed by the cluster CA.
pub async fn dial(
    node_server: &ActorRef<NodeServerMessage>,
    address: &str,
    peer: &str,
    connector: tokio_rustls::TlsConnector,
) -> Result<(), String> {
    let name = ServerName::try_from(peer.to_owned())
        .map_err(|e| format!("{peer:?} is not a certificate name: {e}"))?;
    ractor_cluster::client_connect_enc(node_server, address, connector, name)
        .await
        .map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_refused_off_loopback_unless_tls_is_on() {
        let local = super::super::file::parse(
            "[[node]]\nname=\"a\"\naddress=\"127.0.0.2:4697\"\n[[node]]\nname=\"b\"\naddress=\"localhost:4698\"\n",
        )
        .unwrap();
        assert!(check(&local, false).is_ok());
        let remote = super::super::file::parse(
            "[[node]]\nname=\"a\"\naddress=\"127.0.0.2:4697\"\n[[node]]\nname=\"b\"\naddress=\"10.0.0.2:4697\"\n",
        )
        .unwrap();
        let err = check(&remote, false).unwrap_err();
        assert!(
            err.contains("\"b\"") && err.contains("10.0.0.2:4697") && err.contains("TLS"),
            "{err}"
        );
        assert!(check(&remote, true).is_ok());
    }
}
