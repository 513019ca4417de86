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

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use ca::{fingerprint_sha256, CaError, CaPaths, GuardianCa};
pub use configs::{server_config_template, upstream_client_config, upstream_roots, TlsSetupError};
pub use intercept::{Fault, InterceptError, InterceptErrorKind, Intercepted, Interceptor, OncePerWindow};
pub use leaf::{LeafCache, LeafName, MintError, DEFAULT_LEAF_CACHE};

/// The ring crypto provider, built once and shared by every rustls configuration.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}
