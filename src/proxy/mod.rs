//! The proxy engine: listener → auth → CONNECT (blind tunnel, or HTTPS inspection in [`mitm`] when
//! [`Settings::mitm`] is set) or absolute-form exchange → upstream, with taps copying each message to an
//! inspector beside the forwarding path. Intercepted requests go through the same [`forward::exchange`].
//!
//! Start one in-process with [`Proxy::bind`] inside a tokio runtime; it returns a [`ProxyHandle`] with the
//! bound address, the per-start credential, the live counters, and a graceful [`ProxyHandle::shutdown`]
//! (stop accepting, let in-flight exchanges finish, wait for their inspection, flush the findings).
//!
//! ```no_run
//! # async fn demo(cfg: picoclaw_traffic_guardian::config::Config) -> std::io::Result<()> {
//! use std::sync::{Arc, RwLock};
//! use picoclaw_traffic_guardian::{detect, findings, proxy};
//! let detector = detect::Detector::new(detect::DetectorOptions::default()).map_err(std::io::Error::other)?;
//! let writer = findings::FindingsWriter::open(&cfg, Arc::new(findings::Counters::default()))?;
//! let handle = proxy::Proxy::bind(proxy::Settings::from_config(&cfg), detector, writer.sink()).await?;
//! eprintln!("listening on http://{}", handle.local_addr());
//! handle.shutdown().await;
//! writer.close();
//! # Ok(()) }
//! ```

pub mod auth;
pub mod body;
pub mod connect;
pub mod error;
pub mod forward;
pub mod mitm;
pub mod rewind;
pub mod tls;
pub mod upstream;
pub mod websocket;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

pub use auth::Credential;
use body::ProxyBody;
use error::{rescue, ProxyError};
use forward::{PlainConnector, Upstream, UpstreamConnector};
use tls::{Interceptor, MitmStartError, OncePerWindow};

use crate::config::{Config, HostPattern};
use crate::detect::Detector;
use crate::findings::{Counters, FindingSink};

/// Time allowed to resolve and connect to an upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for an upstream's response head after the request was sent. Long, because a
/// non-streaming model call sends nothing until the whole answer is ready.
pub const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Time a client has to send a complete request head; slower clients are disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (start line and headers) accepted; larger ones get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a foreground `start` waits for in-flight exchanges after SIGINT/SIGTERM: less than the 10 s
/// `stop` allows before SIGKILL, so the findings flush still happens in time.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// Most request headers accepted; more get 431.
pub const MAX_HEADERS: usize = 200;
/// How long an inspecting proxy waits for a client's first bytes after answering CONNECT. TLS clients send
/// their ClientHello at once; silence means a server-speaks-first protocol, which is then tunnelled blind.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(3);
/// A host whose clients keep refusing the guardian leaf is logged once per this window (a misconfigured
/// agent retries constantly; one line with the fix is enough).
pub const CLIENT_TLS_WARN_WINDOW: Duration = Duration::from_secs(600);
/// Hosts remembered for [`CLIENT_TLS_WARN_WINDOW`].
pub const CLIENT_TLS_WARN_HOSTS: usize = 256;

/// What the proxy needs from the configuration, plus the timeouts (constants by default; tests shorten them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to bind (port 0: any free port).
    pub listen: SocketAddr,
    /// Whether clients must present the credential.
    pub proxy_auth: bool,
    /// Per-message scan budget.
    pub max_scan_bytes: usize,
    /// Host name pins.
    pub resolve: BTreeMap<String, IpAddr>,
    /// Expected destinations (empty: no allow-list findings).
    pub egress_allow: Vec<HostPattern>,
    /// See [`CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`RESPONSE_HEAD_TIMEOUT`].
    pub response_timeout: Duration,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// HTTPS inspection: the interceptor shared by every tunnel, or `None` to tunnel every CONNECT blind.
    /// Set by [`Settings::with_mitm_from_config`] (tests may set it directly).
    pub mitm: Option<Arc<Interceptor>>,
    /// Hosts tunnelled blind even when inspecting (certificate-pinning clients).
    pub mitm_skip_hosts: Vec<HostPattern>,
    /// The trust bundle named in the fix when a client refuses the guardian leaf.
    pub ca_bundle: Option<PathBuf>,
}

impl Settings {
    /// Defaults for `listen`: auth on, the default budget, no pins, no allow-list, the named timeouts.
    pub fn new(listen: SocketAddr) -> Settings {
        Settings {
            listen,
            proxy_auth: true,
            max_scan_bytes: 65536,
            resolve: BTreeMap::new(),
            egress_allow: Vec::new(),
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_HEAD_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            mitm: None,
            mitm_skip_hosts: Vec::new(),
            ca_bundle: None,
        }
    }

    /// The settings of a validated configuration.
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            proxy_auth: cfg.proxy_auth,
            max_scan_bytes: cfg.max_scan_bytes,
            resolve: cfg.resolve.clone(),
            egress_allow: cfg.egress_allow.clone(),
            mitm_skip_hosts: cfg.mitm_skip_hosts.clone(),
            ca_bundle: Some(cfg.ca_bundle.clone()),
            ..Settings::new(cfg.listen.0)
        }
    }

    /// Turns HTTPS inspection on when `cfg.https_inspection` is set: loads the guardian CA (an error that says
    /// to run `ca init` when it is missing, or `ca init --force` when expired), the system roots plus
    /// `upstream_ca_file` for strict upstream verification, and the leaf cache. Without `https_inspection`
    /// it returns the settings unchanged, so a runner can call it unconditionally:
    /// `Settings::from_config(&cfg).with_mitm_from_config(&cfg)?`.
    pub fn with_mitm_from_config(mut self, cfg: &Config) -> Result<Settings, MitmStartError> {
        if cfg.https_inspection {
            let interceptor = tls::interceptor_for(cfg, &tls::ca::load_system_roots())?;
            self.mitm = Some(Arc::new(interceptor));
        }
        Ok(self)
    }

    /// Whether a CONNECT to `host` is decrypted (see [`tls::should_intercept`]).
    pub fn intercepts(&self, host: &str) -> bool {
        tls::intercepts(self.mitm.is_some(), &self.mitm_skip_hosts, host)
    }
}

/// State shared by every connection of one proxy.
#[derive(Debug)]
pub struct Shared {
    /// The settings it was started with.
    pub settings: Settings,
    /// The detector (clones share compiled rules); replaceable while running (known secrets reload).
    detector: RwLock<Detector>,
    /// Where findings go; also carries the counters.
    pub sink: FindingSink,
    /// The credential, when auth is on.
    pub credential: Option<Credential>,
    /// The bound address.
    pub local: SocketAddr,
    /// Turns true when the proxy shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Limits the "client refused the guardian leaf" warning to one line per host per window.
    pub client_tls_warnings: OncePerWindow,
}

impl Shared {
    /// The current detector; each message keeps the one it started with.
    pub fn detector(&self) -> Detector {
        self.detector.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Whether `addr` is the proxy's own listener (a request there would loop).
    pub fn is_self(&self, addr: SocketAddr) -> bool {
        let (ip, local) = (addr.ip(), self.local.ip());
        addr.port() == self.local.port()
            && (ip == local
                || ip.is_unspecified()
                || local.is_unspecified()
                || (ip.is_loopback() && local.is_loopback()))
    }
}

/// Held by every connection and inspection task; shutdown waits until all are dropped.
pub type DrainGuard = mpsc::Sender<()>;

/// One client connection's context, cloned into each exchange on it.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    /// The proxy's shared state.
    pub shared: Arc<Shared>,
    /// The client's address.
    pub client_ip: IpAddr,
    /// `http` for plain requests, `https` for requests inside an intercepted CONNECT.
    pub protocol: &'static str,
    /// The upstream connection kept for this client connection's next request.
    pub upstream: Arc<Mutex<Option<Upstream>>>,
    /// Keeps shutdown waiting while this connection or its inspection runs.
    pub guard: DrainGuard,
    /// Opens upstream connections ([`forward::PlainConnector`] on the plain path).
    pub connector: Arc<dyn UpstreamConnector>,
}

impl ConnCtx {
    /// Checks the credential, when auth is on.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        match &self.shared.credential {
            Some(c) if !c.verify(headers) => Err(ProxyError::AuthRequired),
            _ => Ok(()),
        }
    }
}

/// The proxy server.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Binds `settings.listen` and serves in the background on the current tokio runtime.
    pub async fn bind(settings: Settings, detector: Detector, sink: FindingSink) -> io::Result<ProxyHandle> {
        let listener = TcpListener::bind(settings.listen).await?;
        let local = listener.local_addr()?;
        let credential = if settings.proxy_auth { Some(Credential::generate()?) } else { None };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (guard, drained) = mpsc::channel(1);
        let counters = sink.counters().clone();
        let shared = Arc::new(Shared {
            settings,
            detector: RwLock::new(detector),
            sink: sink.clone(),
            credential: credential.clone(),
            local,
            shutdown: stop_rx,
            client_tls_warnings: OncePerWindow::new(
                CLIENT_TLS_WARN_WINDOW,
                NonZeroUsize::new(CLIENT_TLS_WARN_HOSTS).unwrap_or(NonZeroUsize::MIN),
            ),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), guard));
        Ok(ProxyHandle { local, credential, counters, sink, shared, stop: stop_tx, accept, drained })
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    local: SocketAddr,
    credential: Option<Credential>,
    counters: Arc<Counters>,
    sink: FindingSink,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
    drained: mpsc::Receiver<()>,
}

impl ProxyHandle {
    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The per-start credential, when auth is on. Never log it.
    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// The URL a client should use: with the credential when auth is on. Never log it.
    pub fn proxy_url(&self) -> String {
        match &self.credential {
            Some(c) => c.proxy_url(self.local),
            None => format!("http://{}", self.local),
        }
    }

    /// Swaps in a new detector (e.g. reloaded known secrets); messages already started keep the old one.
    pub fn replace_detector(&self, detector: Detector) {
        *self.shared.detector.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = detector;
    }

    /// The live counters (`counters().snapshot()` for status).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Graceful stop: stop accepting, ask every connection to finish its in-flight exchange and close,
    /// end blind tunnels, wait for all of it and for the inspection of every message, then flush the
    /// findings to disk.
    pub async fn shutdown(self) {
        self.shutdown_within(None).await;
    }

    /// [`ProxyHandle::shutdown`] with the wait for in-flight exchanges bounded by `limit` (an endless
    /// stream would otherwise hold it forever). The findings queued by then are flushed either way.
    /// Returns whether everything drained within the limit.
    pub async fn shutdown_within(mut self, limit: Option<Duration>) -> bool {
        let _ = self.stop.send(true);
        let _ = (&mut self.accept).await;
        // `recv` returns `None` once every guard (connections, tunnels, inspection tasks) is dropped.
        let drained = match limit {
            Some(limit) => tokio::time::timeout(limit, self.drained.recv()).await.is_ok(),
            None => {
                let _ = self.drained.recv().await;
                true
            }
        };
        let sink = self.sink.clone();
        let _ = tokio::task::spawn_blocking(move || sink.flush()).await;
        drained
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, guard: DrainGuard) {
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(stream, peer, shared.clone(), guard.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut stop) => return,
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, guard: DrainGuard) {
    shared.sink.counters().connection();
    let _ = stream.set_nodelay(true);
    let mut stop = shared.shutdown.clone();
    let ctx = ConnCtx {
        shared: shared.clone(),
        // A v4 client on a dual-stack listener shows up as ::ffff:a.b.c.d; findings name it as a.b.c.d.
        client_ip: peer.ip().to_canonical(),
        protocol: "http",
        upstream: Arc::new(Mutex::new(None)),
        guard,
        connector: Arc::new(PlainConnector),
    };
    let service = service_fn(move |req| handle(ctx.clone(), req));
    let conn = http1_server(&shared.settings).serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("client connection from {peer} ended: {}", error::chain(&e));
    }
}

/// The HTTP/1.1 server every client connection is served with (plain listener and intercepted tunnels
/// alike): the header timeout (which needs the timer), head size and header count limits, keep-alive.
pub fn http1_server(settings: &Settings) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
}

/// Resolves once the proxy is shutting down (at once if it already is).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the handle is gone: that is a stop too.
    let _ = rx.wait_for(|s| *s).await;
}

/// One exchange: every error goes through [`rescue`].
async fn handle(ctx: ConnCtx, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    ctx.shared.sink.counters().exchange();
    let result = if req.method() == Method::CONNECT {
        connect::connect(&ctx, req).await
    } else {
        forward::forward(&ctx, req).await
    };
    Ok(result.unwrap_or_else(|e| rescue(&e)))
}
