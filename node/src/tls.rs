//! TLS for the three ports, from one PEM certificate, key and CA per node.
//!
//! - client port (gRPC): server TLS; clients verify the node against the CA.
//! - peer port (gRPC and the peer stream, `raft::wire`): mutual TLS; a peer without a
//!   certificate signed by the CA is refused during the handshake, and this node presents
//!   its own certificate when it dials peers. The node terminates TLS on this port itself
//!   (`server::peer_stream`) and then tells the two protocols apart.
//! - admin port (HTTP): server TLS through tokio-rustls.
//!
//! The certificate must name every address others dial (IP or DNS SANs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Loaded PEM material, checked to parse at start so a bad file fails the start, not the
/// first connection.
#[derive(Clone)]
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    admin: Arc<rustls::ServerConfig>,
    peer_server: Arc<rustls::ServerConfig>,
    peer_client: Arc<rustls::ClientConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl Tls {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let (cert_pem, key_pem, ca_pem) = (read(&files.cert)?, read(&files.key)?, read(&files.ca)?);
        let pem_err = |p: &Path, reason: String| TlsError::Pem {
            path: p.display().to_string(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(&files.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(pem_err(&files.cert, "no certificate found".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_err(&files.key, e.to_string()))?;
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(&files.ca, e.to_string()))?;
        if cas.is_empty() {
            return Err(pem_err(&files.ca, "no CA certificate found".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config_err = |e: rustls::Error| TlsError::Config(e.to_string());
        let key_err =
            |e: rustls::Error| TlsError::Config(format!("certificate and key do not match: {e}"));
        let admin = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(key_err)?;

        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| pem_err(&files.ca, format!("unusable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Config(format!("peer client verifier: {e}")))?;
        let mut peer_server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(key_err)?;
        // gRPC peers (this release's fallback, earlier releases) require HTTP/2 by ALPN; the
        // peer stream's dialer offers no protocol, which rustls accepts.
        peer_server.alpn_protocols = vec![b"h2".to_vec()];
        let peer_client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(key_err)?;
        Ok(Tls {
            cert_pem,
            key_pem,
            ca_pem,
            admin: Arc::new(admin),
            peer_server: Arc::new(peer_server),
            peer_client: Arc::new(peer_client),
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Client port: server authentication only.
    pub fn client_port(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity())
    }

    /// Dialing a peer: verify it against the CA and present our own certificate.
    pub fn peer_client(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(host.to_string())
    }

    /// Peer port, accepting: mutual TLS with the CA, for both gRPC and the peer stream.
    pub fn peer_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.peer_server.clone())
    }

    /// Dialing a peer's stream: verify it against the CA and present our own certificate.
    pub fn peer_connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.peer_client.clone())
    }

    pub fn admin_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.admin.clone())
    }
}

/// The host part of `host:port` (IPv6 brackets removed), used as the TLS server name.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A TCP listener that completes a TLS handshake before handing a connection to axum.
/// A failed handshake is logged and the listener waits for the next connection.
pub struct TlsListener {
    pub tcp: tokio::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// How long a client may take to finish the TLS handshake on the admin port.
const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handshake = self.acceptor.accept(stream);
            match tokio::time::timeout(
                std::time::Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
                handshake,
            )
            .await
            {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "admin TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "admin TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(super::host_of("127.0.0.1:7501"), "127.0.0.1");
        assert_eq!(super::host_of("[::1]:7501"), "::1");
        assert_eq!(super::host_of("node-0.store.svc:7501"), "node-0.store.svc");
    }
}
