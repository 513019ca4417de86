//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_picoclaw-traffic-guardian"))
}

/// A command for the binary with a scrubbed environment: only `HOME` and the guardian home are set, so the
/// machine's own variables (proxy, CA bundles, Picoclaw) never leak into a test.
pub fn guardian(home: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("HOME", home.parent().unwrap_or(home))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PICOCLAW_TRAFFIC_GUARDIAN_HOME", home);
    cmd
}

/// Runs a command to completion.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run the guardian binary")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// ---- In-process proxy, upstreams and clients on 127.0.0.1 (proxy tests) ----

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use picoclaw_traffic_guardian::detect::{Detector, DetectorOptions};
use picoclaw_traffic_guardian::findings::{Counters, Finding, FindingsWriter, LogStore, WriterOptions};
use picoclaw_traffic_guardian::proxy::{Proxy, ProxyHandle, Settings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A secret the detector finds (not the documented AWS example key).
pub const SECRET: &str = "AKIAZ7QW3ERTY5UIOPLK";

/// A body for test requests and upstream responses.
pub type TestBody = BoxBody<Bytes, io::Error>;

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).map_err(|never: Infallible| match never {}).boxed()
}

/// A body sent as the given chunks with no length, so HTTP/1.1 sends it chunked.
pub fn chunked(parts: &[&[u8]]) -> TestBody {
    Chunks(parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()).boxed()
}

struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body fed from a channel (a response that streams slowly).
pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, Chan(rx).boxed())
}

struct Chan(mpsc::Receiver<Bytes>);

impl Body for Chan {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// `n` bytes of a fixed pseudo-random pattern.
pub fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Hex sha256.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub uri: String,
    pub headers: HeaderMap,
}

/// A test upstream: a hyper server on 127.0.0.1 answering by path (see [`upstream_route`]).
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

type Route = Arc<dyn Fn(Request<Incoming>) -> Response<TestBody> + Send + Sync>;

/// Starts an upstream that answers with [`upstream_route`].
pub async fn upstream() -> Upstream {
    upstream_with(Arc::new(upstream_route)).await
}

/// Starts an upstream with a custom route.
pub async fn upstream_with(route: Route) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s, c) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (s, route) = (s.clone(), route.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    s.lock().unwrap().push(Seen { uri: req.uri().to_string(), headers: req.headers().clone() });
                    let resp = route(req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Upstream { addr, seen, connections }
}

/// The default routes: `/echo` streams the request body back (chunked when the request was), `/bytes/N`
/// sends N pattern bytes, anything else says `ok`.
pub fn upstream_route(req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    if path == "/echo" {
        return Response::new(req.into_body().map_err(io::Error::other).boxed());
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return Response::new(full(pattern(n.parse().unwrap_or(0))));
    }
    Response::new(full("ok"))
}

/// A proxy started in-process with its findings log in a temporary directory.
pub struct TestProxy {
    pub handle: ProxyHandle,
    pub writer: Option<FindingsWriter>,
    pub counters: Arc<Counters>,
    pub dir: tempfile::TempDir,
}

impl TestProxy {
    /// Starts a proxy on 127.0.0.1:0; `tweak` adjusts the settings (timeouts, budget, pins ...).
    pub async fn start(tweak: impl FnOnce(&mut Settings)) -> TestProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = picoclaw_traffic_guardian::findings::FileStore::new(dir.path(), 1 << 20, 2);
        TestProxy::start_with_store(Box::new(store), dir, tweak).await
    }

    /// Starts a proxy writing findings to `store`.
    pub async fn start_with_store(
        store: Box<dyn LogStore>,
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestProxy {
        let counters = Arc::new(Counters::default());
        let writer =
            FindingsWriter::start(store, WriterOptions { dedup_window: Duration::from_secs(60) }, counters.clone())
                .expect("writer");
        let mut settings = Settings::new("127.0.0.1:0".parse().unwrap());
        tweak(&mut settings);
        let detector = Detector::new(DetectorOptions::default()).expect("detector");
        let handle = Proxy::bind(settings, detector, writer.sink()).await.expect("bind proxy");
        TestProxy { handle, writer: Some(writer), counters, dir }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The `Proxy-Authorization` value, when auth is on.
    pub fn auth(&self) -> Option<String> {
        self.handle.credential().map(|c| c.header_value())
    }

    /// A request through this proxy with its credential.
    pub fn request(&self, method: &str, url: &str, body: TestBody) -> Request<TestBody> {
        let mut b = Request::builder().method(method).uri(url);
        if let Some(a) = self.auth() {
            b = b.header("proxy-authorization", a);
        }
        b.body(body).expect("request")
    }

    /// Every finding written so far. Inspection runs beside forwarding, so this first waits until no
    /// message is being inspected (call it once the responses are complete), then for the writer.
    pub async fn findings(&self) -> Vec<Finding> {
        let idle = async {
            while self.counters.snapshot().inspections_in_flight > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), idle).await.expect("inspection finishes");
        if let Some(w) = &self.writer {
            let sink = w.sink();
            tokio::task::spawn_blocking(move || sink.flush()).await.expect("flush");
        }
        let text = std::fs::read_to_string(self.dir.path().join("findings.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("a finding per line")).collect()
    }

    /// Findings of one pattern.
    pub async fn findings_of(&self, pattern: &str) -> Vec<Finding> {
        self.findings().await.into_iter().filter(|f| f.pattern == pattern).collect()
    }
}

/// An HTTP/1.1 client connection to `addr`.
pub async fn client(addr: SocketAddr) -> SendRequest<TestBody> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Sends a request and reads the whole response.
pub async fn send(sender: &mut SendRequest<TestBody>, req: Request<TestBody>) -> (StatusCode, HeaderMap, Bytes) {
    sender.ready().await.expect("ready");
    let resp = sender.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// Writes raw bytes to `addr` and reads until the peer closes or `limit` elapses.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    out
}

/// A store whose every write fails (a full disk).
pub struct FailingStore;

impl LogStore for FailingStore {
    fn append(&mut self, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("no space left on device"))
    }
    fn sync(&mut self) -> io::Result<()> {
        Err(io::Error::other("no space left on device"))
    }
}

/// Starts an upstream like [`upstream_with`] that speaks TLS with `config` (HTTPS inspection tests).
/// `connections` counts completed TLS handshakes; failed ones are not counted.
pub async fn upstream_tls(route: Route, config: Arc<rustls::ServerConfig>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s, c) = (seen.clone(), connections.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (s, c, route, acceptor) = (s.clone(), c.clone(), route.clone(), acceptor.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Ok(tls) = acceptor.accept(stream).await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let svc = service_fn(move |req: Request<Incoming>| {
                    s.lock().unwrap().push(Seen { uri: req.uri().to_string(), headers: req.headers().clone() });
                    let resp = route(req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    Upstream { addr, seen, connections }
}
