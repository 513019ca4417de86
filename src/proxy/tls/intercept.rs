//! One intercepted CONNECT: read the client's ClientHello, verify the upstream, only then mint and serve a
//! leaf.
//!
//! The order is the point: the guardian must never make a bad upstream look trusted, so no leaf exists for a
//! host until its real certificate has verified. When it does not, the client gets a fatal TLS alert and the
//! caller gets [`InterceptError::UpstreamTlsInvalid`] (an EGRESS `upstream_tls_invalid` info finding).

use std::fmt;
use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use rustls::client::ClientConfig;
use rustls::server::{Acceptor, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use super::configs::{server_config_for, server_config_template, ConnectionCert, TlsSetupError};
use super::leaf::{LeafCache, LeafName, MintError};

/// Default bound on each handshake (client ClientHello, upstream handshake, client handshake).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is at fault for a failed interception, for the proxy's one rescue point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The monitored client (bad or slow TLS, refuses the guardian CA).
    Client,
    /// The upstream server (certificate does not verify, TLS failure, too slow).
    Upstream,
    /// This machine (the CA, minting).
    Local,
}

/// A flat, countable kind of [`InterceptError`] (for status counters and log rate limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterceptErrorKind {
    /// No valid ClientHello arrived.
    ClientHello,
    /// The client's SNI (or the CONNECT host) is no host name.
    InvalidName,
    /// The upstream certificate did not verify: `upstream_tls_invalid`.
    UpstreamTlsInvalid,
    /// The upstream TLS handshake failed for another reason.
    UpstreamHandshake,
    /// The client refused the guardian leaf: it does not trust the guardian CA.
    ClientRejectedLeaf,
    /// The client handshake failed for another reason.
    ClientHandshake,
    /// A handshake took longer than the limit.
    Timeout,
    /// The leaf could not be minted.
    Mint,
}

impl InterceptErrorKind {
    /// A stable snake_case name for logs, counters and findings.
    pub fn as_str(self) -> &'static str {
        match self {
            InterceptErrorKind::ClientHello => "client_hello",
            InterceptErrorKind::InvalidName => "invalid_name",
            InterceptErrorKind::UpstreamTlsInvalid => "upstream_tls_invalid",
            InterceptErrorKind::UpstreamHandshake => "upstream_handshake",
            InterceptErrorKind::ClientRejectedLeaf => "client_rejected_leaf",
            InterceptErrorKind::ClientHandshake => "client_handshake",
            InterceptErrorKind::Timeout => "tls_timeout",
            InterceptErrorKind::Mint => "leaf_mint",
        }
    }
}

/// Which handshake timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the client's ClientHello.
    ClientHello,
    /// The upstream handshake.
    Upstream,
    /// The client handshake with the guardian leaf.
    Client,
}

/// Why an interception failed. Nothing here carries traffic content; `host` is the SNI or CONNECT host.
#[derive(Debug)]
#[non_exhaustive]
pub enum InterceptError {
    /// The client sent no valid ClientHello (plain bytes, truncation, EOF).
    ClientHello(io::Error),
    /// The name to mint for is not a host name or address.
    InvalidName(String),
    /// The upstream certificate did not verify (unknown issuer, expired, wrong name, ...). No leaf was
    /// minted; the client got a fatal alert.
    UpstreamTlsInvalid { host: String, reason: String },
    /// The upstream handshake failed otherwise (reset, protocol error, no common version).
    UpstreamHandshake { host: String, source: io::Error },
    /// The client aborted the handshake with a certificate alert after seeing the leaf: it does not trust
    /// the guardian CA. Log it once per host per window ([`OncePerWindow`]) with the fix the message carries.
    ClientRejectedLeaf { host: String, alert: String },
    /// The client handshake failed otherwise.
    ClientHandshake { host: String, source: io::Error },
    /// A stage took longer than the handshake timeout.
    Timeout { host: Option<String>, stage: Stage },
    /// Minting failed (expired CA: a local fault).
    Mint { host: String, source: MintError },
}

impl InterceptError {
    /// The countable kind.
    pub fn kind(&self) -> InterceptErrorKind {
        match self {
            InterceptError::ClientHello(_) => InterceptErrorKind::ClientHello,
            InterceptError::InvalidName(_) => InterceptErrorKind::InvalidName,
            InterceptError::UpstreamTlsInvalid { .. } => InterceptErrorKind::UpstreamTlsInvalid,
            InterceptError::UpstreamHandshake { .. } => InterceptErrorKind::UpstreamHandshake,
            InterceptError::ClientRejectedLeaf { .. } => InterceptErrorKind::ClientRejectedLeaf,
            InterceptError::ClientHandshake { .. } => InterceptErrorKind::ClientHandshake,
            InterceptError::Timeout { .. } => InterceptErrorKind::Timeout,
            InterceptError::Mint { .. } => InterceptErrorKind::Mint,
        }
    }

    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            InterceptError::ClientHello(_)
            | InterceptError::InvalidName(_)
            | InterceptError::ClientRejectedLeaf { .. }
            | InterceptError::ClientHandshake { .. } => Fault::Client,
            InterceptError::UpstreamTlsInvalid { .. } | InterceptError::UpstreamHandshake { .. } => Fault::Upstream,
            InterceptError::Timeout { stage: Stage::Upstream, .. } => Fault::Upstream,
            InterceptError::Timeout { .. } => Fault::Client,
            InterceptError::Mint { source: MintError::InvalidName(_), .. } => Fault::Client,
            InterceptError::Mint { .. } => Fault::Local,
        }
    }

    /// The host concerned, when known.
    pub fn host(&self) -> Option<&str> {
        match self {
            InterceptError::ClientHello(_) => None,
            InterceptError::InvalidName(h) => Some(h),
            InterceptError::Timeout { host, .. } => host.as_deref(),
            InterceptError::UpstreamTlsInvalid { host, .. }
            | InterceptError::UpstreamHandshake { host, .. }
            | InterceptError::ClientRejectedLeaf { host, .. }
            | InterceptError::ClientHandshake { host, .. }
            | InterceptError::Mint { host, .. } => Some(host),
        }
    }
}

impl fmt::Display for InterceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterceptError::ClientHello(e) => write!(f, "client sent no valid TLS ClientHello: {e}"),
            InterceptError::InvalidName(h) => write!(f, "client asked for {h:?}, which is not a host name"),
            InterceptError::UpstreamTlsInvalid { host, reason } => {
                write!(f, "upstream {host} presented a certificate that does not verify ({reason}); the client was refused")
            }
            InterceptError::UpstreamHandshake { host, source } => write!(f, "TLS with upstream {host} failed: {source}"),
            InterceptError::ClientRejectedLeaf { host, alert } => write!(
                f,
                "the client refused the guardian certificate for {host} ({alert}): it does not trust the guardian CA; start the process with `picoclaw-traffic-guardian run --https-inspection`, or give it SSL_CERT_FILE=<bundle> (see `ca show`)"
            ),
            InterceptError::ClientHandshake { host, source } => write!(f, "TLS with the client for {host} failed: {source}"),
            InterceptError::Timeout { host, stage } => {
                write!(f, "TLS {stage:?} stage timed out (host {})", host.as_deref().unwrap_or("unknown"))
            }
            InterceptError::Mint { host, source } => write!(f, "leaf for {host}: {source}"),
        }
    }
}

impl std::error::Error for InterceptError {}

/// Both halves of an intercepted connection, handshakes done, ready for the HTTP exchange.
#[derive(Debug)]
pub struct Intercepted<C, U> {
    /// TLS toward the monitored client, serving the guardian leaf.
    pub client: tokio_rustls::server::TlsStream<C>,
    /// TLS toward the verified upstream.
    pub upstream: tokio_rustls::client::TlsStream<U>,
    /// The name the upstream was verified for and the leaf was minted for.
    pub host: String,
}

/// Everything an interception needs, built once at start and shared by every connection.
#[derive(Clone)]
pub struct Interceptor {
    leaves: Arc<LeafCache>,
    upstream: TlsConnector,
    server_template: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interceptor")
            .field("leaves", &self.leaves)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// An interceptor minting from `leaves` and verifying upstreams with `upstream` (see
    /// [`upstream_client_config`](super::configs::upstream_client_config)).
    pub fn new(leaves: Arc<LeafCache>, upstream: Arc<ClientConfig>) -> Result<Interceptor, TlsSetupError> {
        Ok(Interceptor {
            leaves,
            upstream: TlsConnector::from(upstream),
            server_template: server_config_template()?,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// Replaces the per-stage handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Interceptor {
        self.handshake_timeout = timeout;
        self
    }

    /// The leaf cache (for status: size, mints).
    pub fn leaves(&self) -> &Arc<LeafCache> {
        &self.leaves
    }

    /// Intercepts one CONNECT tunnel. `client` is the client side after the proxy answered 200;
    /// `upstream` is a TCP connection the proxy already opened to the CONNECT target; `connect_host` is the
    /// CONNECT host (no port), used when the client sends no SNI.
    ///
    /// Steps: (1) read the ClientHello; (2) handshake with the upstream and verify its certificate for the
    /// SNI name (else `connect_host`); (3) only if that verified, mint or reuse the leaf for that name; (4)
    /// finish the client handshake with it. On an upstream failure the client receives a fatal alert and no
    /// leaf is minted.
    pub async fn intercept<C, U>(
        &self,
        client: C,
        upstream: U,
        connect_host: &str,
    ) -> Result<Intercepted<C, U>, InterceptError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let start = self
            .bounded(LazyConfigAcceptor::new(Acceptor::default(), client), None, Stage::ClientHello)
            .await?
            .map_err(InterceptError::ClientHello)?;
        let requested = start.client_hello().server_name().unwrap_or(connect_host).to_owned();
        let name = match LeafName::parse(&requested) {
            Ok(n) => n,
            Err(_) => {
                self.refuse(start).await;
                return Err(InterceptError::InvalidName(requested.chars().take(80).collect()));
            }
        };
        let host = name.to_string();
        let upstream = match self.verified_upstream(&name, upstream).await {
            Ok(tls) => tls,
            Err(e) => {
                self.refuse(start).await;
                return Err(e);
            }
        };

        let leaf = match self.leaves.get_or_mint(&name).await {
            Ok(leaf) => leaf,
            Err(source) => {
                self.refuse(start).await;
                return Err(InterceptError::Mint { host, source });
            }
        };
        let config = server_config_for(&self.server_template, ConnectionCert::serve(leaf));
        let client = match self.bounded(start.into_stream(config), Some(&host), Stage::Client).await? {
            Ok(tls) => tls,
            Err(e) => {
                return Err(match certificate_alert(&e) {
                    Some(alert) => InterceptError::ClientRejectedLeaf { host, alert },
                    None => InterceptError::ClientHandshake { host, source: e },
                })
            }
        };
        Ok(Intercepted { client, upstream, host })
    }

    /// Opens TLS to `host` over `upstream` with the same strict verification and timeout as
    /// [`Interceptor::intercept`]. For the next connection of an intercepted tunnel whose upstream closed:
    /// every new upstream connection is verified again.
    pub async fn connect_upstream<U>(
        &self,
        host: &str,
        upstream: U,
    ) -> Result<tokio_rustls::client::TlsStream<U>, InterceptError>
    where
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let name = LeafName::parse(host).map_err(|_| InterceptError::InvalidName(host.chars().take(80).collect()))?;
        self.verified_upstream(&name, upstream).await
    }

    async fn verified_upstream<U>(
        &self,
        name: &LeafName,
        upstream: U,
    ) -> Result<tokio_rustls::client::TlsStream<U>, InterceptError>
    where
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let host = name.to_string();
        let server_name = match name {
            LeafName::Dns(n) => ServerName::try_from(n.clone()),
            LeafName::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        };
        let Ok(server_name) = server_name else {
            return Err(InterceptError::InvalidName(host));
        };
        match self.bounded(self.upstream.connect(server_name, upstream), Some(&host), Stage::Upstream).await? {
            Ok(tls) => Ok(tls),
            Err(e) => Err(match certificate_error(&e) {
                Some(reason) => InterceptError::UpstreamTlsInvalid { host, reason },
                None => InterceptError::UpstreamHandshake { host, source: e },
            }),
        }
    }

    async fn bounded<F: Future>(&self, f: F, host: Option<&str>, stage: Stage) -> Result<F::Output, InterceptError> {
        tokio::time::timeout(self.handshake_timeout, f)
            .await
            .map_err(|_| InterceptError::Timeout { host: host.map(str::to_owned), stage })
    }

    /// Ends the client's handshake with a fatal alert (no certificate is served).
    async fn refuse<C: AsyncRead + AsyncWrite + Unpin>(&self, start: tokio_rustls::StartHandshake<C>) {
        let config = server_config_for(&self.server_template, ConnectionCert::refuse());
        // The handshake fails by design; only the alert it sends matters.
        let _ = tokio::time::timeout(self.handshake_timeout, start.into_stream(config)).await;
    }
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// The reason, when the error is a failed certificate verification.
fn certificate_error(e: &io::Error) -> Option<String> {
    match rustls_error(e)? {
        rustls::Error::InvalidCertificate(c) => Some(format!("{c:?}")),
        rustls::Error::NoCertificatesPresented => Some("no certificate presented".into()),
        _ => None,
    }
}

/// The alert the client sent, when it ended the handshake with one that rejects our certificate. The
/// alerts differ by stack: Go sends `bad_certificate`, rustls and OpenSSL `unknown_ca`, Java
/// `certificate_unknown`. Any other alert is an ordinary handshake failure.
fn certificate_alert(e: &io::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    match rustls_error(e)? {
        rustls::Error::AlertReceived(
            a @ (A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied),
        ) => Some(format!("{a:?}")),
        _ => None,
    }
}

/// Says yes once per key per window: for one log line per host when clients keep refusing the guardian CA.
/// Bounded: at most `capacity` keys are remembered (least recently seen forgotten first).
#[derive(Debug)]
pub struct OncePerWindow {
    window: Duration,
    seen: Mutex<LruCache<String, Instant>>,
}

impl OncePerWindow {
    /// A limiter with the given window and capacity.
    pub fn new(window: Duration, capacity: NonZeroUsize) -> OncePerWindow {
        OncePerWindow { window, seen: Mutex::new(LruCache::new(capacity)) }
    }

    /// Whether to log for `key` at `now`: true the first time and again once `window` has passed.
    pub fn should_log(&self, key: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get(key) {
            Some(last) if now.saturating_duration_since(*last) < self.window => false,
            _ => {
                seen.put(key.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_window_limits_per_key() {
        let limiter = OncePerWindow::new(Duration::from_secs(60), NonZeroUsize::new(2).unwrap());
        let t0 = Instant::now();
        assert!(limiter.should_log("a", t0));
        assert!(!limiter.should_log("a", t0 + Duration::from_secs(59)));
        assert!(limiter.should_log("b", t0));
        assert!(limiter.should_log("a", t0 + Duration::from_secs(60)));
        // Capacity 2: a third key pushes out the least recent, which then logs again.
        assert!(limiter.should_log("c", t0 + Duration::from_secs(61)));
        assert!(limiter.should_log("b", t0 + Duration::from_secs(61)));
    }

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(InterceptErrorKind::UpstreamTlsInvalid.as_str(), "upstream_tls_invalid");
        let e = InterceptError::UpstreamTlsInvalid { host: "h".into(), reason: "r".into() };
        assert_eq!(
            (e.kind(), e.fault(), e.host()),
            (InterceptErrorKind::UpstreamTlsInvalid, Fault::Upstream, Some("h"))
        );
    }
}
