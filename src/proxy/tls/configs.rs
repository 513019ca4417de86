//! rustls configurations: the server side shown to the monitored client, and the strict upstream client.
//!
//! Both are built with [`builder_with_provider`](rustls::ServerConfig::builder_with_provider) and the ring
//! provider ([`super::provider`]), never from crate features.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::provider;

/// The only application protocol offered on either side: the proxy's exchange speaks HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A TLS setup problem found while starting (a local fault: the operator fixes a file).
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// `upstream_ca_file` could not be read or holds no usable certificate.
    UpstreamCaFile { path: PathBuf, reason: String },
    /// rustls refused the configuration.
    Rustls(rustls::Error),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::UpstreamCaFile { path, reason } => {
                write!(f, "upstream_ca_file {}: {reason}; give a PEM file of CA certificates", path.display())
            }
            TlsSetupError::Rustls(e) => write!(f, "TLS setup: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

impl From<rustls::Error> for TlsSetupError {
    fn from(e: rustls::Error) -> Self {
        TlsSetupError::Rustls(e)
    }
}

/// The roots upstream servers are verified against: `system` (see
/// [`load_system_roots`](super::ca::load_system_roots)) plus every certificate in `upstream_ca_file`.
/// System roots rustls cannot parse are skipped; a bad `upstream_ca_file` is an error.
pub fn upstream_roots(
    system: &[CertificateDer<'_>],
    upstream_ca_file: Option<&Path>,
) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    // `SSL_CERT_DIR` lists each root twice or more (file and hash links): keep one copy, since small boards
    // hold the store for the whole run.
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut unique = Vec::with_capacity(system.len());
    for cert in system {
        if seen.insert(cert.as_ref()) {
            unique.push(cert.clone());
        }
    }
    roots.add_parsable_certificates(unique);
    if let Some(path) = upstream_ca_file {
        let bad = |reason: String| TlsSetupError::UpstreamCaFile { path: path.to_path_buf(), reason };
        let bytes = fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| bad(format!("bad PEM ({e})")))?;
            roots.add(cert).map_err(|e| bad(format!("not a usable trust anchor ({e})")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no certificate in it".into()));
        }
    }
    Ok(roots)
}

/// The upstream client: full WebPKI verification (chain, name, validity) against `roots`, TLS 1.2 and 1.3,
/// ALPN `http/1.1`.
pub fn upstream_client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Serves one connection's leaf, or none at all (then rustls aborts the handshake with an alert).
///
/// The leaf's name was chosen before the handshake from the client's SNI, or the CONNECT host when the
/// client sent none (Go omits SNI for IP addresses): the interceptor reads the ClientHello first with a
/// lazy acceptor, verifies the upstream, mints asynchronously, and only then builds this resolver. A
/// synchronous resolver that minted by itself could do neither the upstream check first nor the minting off
/// the handshake path.
#[derive(Debug, Clone)]
pub struct ConnectionCert {
    leaf: Option<Arc<CertifiedKey>>,
}

impl ConnectionCert {
    /// Serves `leaf`.
    pub fn serve(leaf: Arc<CertifiedKey>) -> Self {
        ConnectionCert { leaf: Some(leaf) }
    }

    /// Serves nothing: the client gets a fatal alert. Used when the upstream failed verification.
    pub fn refuse() -> Self {
        ConnectionCert { leaf: None }
    }
}

impl ResolvesServerCert for ConnectionCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.leaf.clone()
    }
}

/// The server-side template every intercepted connection copies: TLS 1.2 and 1.3, no client
/// authentication, ALPN `http/1.1`, one session cache shared across connections.
pub fn server_config_template() -> Result<Arc<ServerConfig>, TlsSetupError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ConnectionCert::refuse()));
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// A copy of `template` that serves `cert` (a clone of a few `Arc`s and the ALPN list).
pub fn server_config_for(template: &ServerConfig, cert: ConnectionCert) -> Arc<ServerConfig> {
    let mut config = template.clone();
    config.cert_resolver = Arc::new(cert);
    Arc::new(config)
}
