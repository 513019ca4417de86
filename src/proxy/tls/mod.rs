//! TLS for HTTPS inspection: the guardian CA, leaf minting, the rustls configurations, and the interception
//! of one CONNECT tunnel.
//!
//! The flow for one tunnel, once the proxy has answered `200` to CONNECT and opened TCP to the target:
//!
//! ```text
//! client ──ClientHello──▶ Interceptor::intercept ──TLS, strict verify──▶ upstream
//!                                   │ verified? no ─▶ fatal alert to client, UpstreamTlsInvalid, no leaf
//!                                   ▼ yes
//!                         LeafCache::get_or_mint (LRU, spawn_blocking) ─▶ leaf for SNI / CONNECT host
//!                                   ▼
//! client ◀──handshake with the leaf── Intercepted { client, upstream, host } ─▶ the proxy's HTTP exchange
//! ```
//!
//! Trust is per process: the CA lives under `<home>/ca`, and the monitored process is given a bundle of the
//! system roots plus the CA through `SSL_CERT_FILE` (Go replaces its default roots with that file). Nothing
//! here installs anything into a system trust store.
//!
//! Exactly one crypto provider is used, ring, named in `Cargo.toml` and passed explicitly through
//! [`provider`] to every `builder_with_provider` call.

pub mod ca;
pub mod cmd;
pub mod configs;
pub mod intercept;
pub mod leaf;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use time::OffsetDateTime;

use crate::config::{Config, HostPattern};

pub use ca::{fingerprint_sha256, CaError, CaPaths, GuardianCa};
pub use configs::{server_config_template, upstream_client_config, upstream_roots, TlsSetupError};
pub use intercept::{Fault, InterceptError, InterceptErrorKind, Intercepted, Interceptor, OncePerWindow};
pub use leaf::{LeafCache, LeafName, MintError, DEFAULT_LEAF_CACHE};

/// The ring crypto provider, built once and shared by every rustls configuration.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Why HTTPS inspection cannot start. The proxy refuses to start with it (inspection was asked for).
#[derive(Debug)]
#[non_exhaustive]
pub enum MitmStartError {
    /// No usable CA (missing: run `ca init`; expired; key too open; damaged).
    Ca(CaError),
    /// The upstream roots or rustls configurations could not be built.
    Setup(TlsSetupError),
}

impl fmt::Display for MitmStartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MitmStartError::Ca(e) => write!(f, "https_inspection is on but the CA is not usable: {e}"),
            MitmStartError::Setup(e) => write!(f, "https_inspection: {e}"),
        }
    }
}

impl std::error::Error for MitmStartError {}

/// Builds the interceptor the proxy uses for its whole run: loads the CA from the config's home (refusing a
/// missing or expired one), a [`LeafCache`] of [`DEFAULT_LEAF_CACHE`] leaves, and an upstream client that
/// verifies against `system` roots (see [`ca::load_system_roots`]) plus `upstream_ca_file`.
pub fn interceptor_for(cfg: &Config, system: &ca::SystemRoots) -> Result<Interceptor, MitmStartError> {
    let paths = CaPaths::of(&cfg.home);
    let guardian_ca = GuardianCa::load(&paths).map_err(MitmStartError::Ca)?;
    guardian_ca.check_valid_at(OffsetDateTime::now_utc(), &paths.cert).map_err(MitmStartError::Ca)?;
    let roots = upstream_roots(&system.certs, cfg.upstream_ca_file.as_deref()).map_err(MitmStartError::Setup)?;
    let client = upstream_client_config(roots).map_err(MitmStartError::Setup)?;
    let capacity = NonZeroUsize::new(DEFAULT_LEAF_CACHE).unwrap_or(NonZeroUsize::MIN);
    let leaves = Arc::new(LeafCache::new(Arc::new(guardian_ca), capacity));
    Interceptor::new(leaves, client).map_err(MitmStartError::Setup)
}

/// Whether a CONNECT to `host` is decrypted: inspection is on and no `mitm_skip_hosts` pattern matches
/// (those are tunnelled blind, for certificate-pinning clients).
pub fn should_intercept(cfg: &Config, host: &str) -> bool {
    intercepts(cfg.https_inspection, &cfg.mitm_skip_hosts, host)
}

/// The rule of [`should_intercept`] on its parts (the proxy keeps them in its settings, not the config).
pub fn intercepts(enabled: bool, skip_hosts: &[HostPattern], host: &str) -> bool {
    enabled && !skip_hosts.iter().any(|p| p.matches(host))
}
