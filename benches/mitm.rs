//! HTTPS keep-alive requests: direct TLS to the upstream, through a blind CONNECT tunnel, and through HTTPS
//! inspection (MITM), in one criterion group so the baseline sits beside the cost.
//!
//! Each iteration is one request on an already open keep-alive connection (the handshakes happen once,
//! before timing): `POST /echo` with a 1 KiB JSON body echoed back (both directions tapped and inspected
//! under MITM), and `GET /bytes/65536` (a 64 KiB response). Everything runs on 127.0.0.1 in one process with
//! a two-worker tokio runtime. Before timing, each path checks its answer: the echoed body is exact, and the
//! MITM path really intercepted (one leaf minted, no blind tunnel, every message inspected).
//!
//! Run: `cargo bench --bench mitm` (release profile).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use picoclaw_traffic_guardian::detect::{Detector, DetectorOptions};
use picoclaw_traffic_guardian::findings::{Counters, FileStore, FindingsWriter, WriterOptions};
use picoclaw_traffic_guardian::proxy::tls::{self, GuardianCa, Interceptor, LeafCache};
use picoclaw_traffic_guardian::proxy::{Proxy, ProxyHandle, Settings};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::RootCertStore;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const HOST: &str = "api.test";
const BIG: usize = 64 * 1024;

type Body = Full<Bytes>;

/// A 1 KiB chat-like JSON body with nothing to find.
fn small_json() -> Bytes {
    let mut s = String::from(r#"{"model":"gpt-4o","stream":false,"messages":[{"role":"user","content":""#);
    while s.len() < 1024 - 4 {
        s.push_str("lorem ipsum ");
    }
    s.truncate(1024 - 4);
    s.push_str(r#""}]}"#);
    Bytes::from(s)
}

fn test_ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Bench Upstream CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("ca");
    (cert.der().clone(), Issuer::new(params, key))
}

/// A TLS upstream for [`HOST`]: `/echo` echoes the body, `/bytes/N` sends N bytes.
async fn upstream(issuer: &Issuer<'static, KeyPair>) -> SocketAddr {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![HOST.to_string()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer).expect("cert");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let resp = if req.uri().path() == "/echo" {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Response::new(Full::new(body))
                    } else {
                        Response::new(Full::new(Bytes::from(vec![b'x'; BIG])))
                    };
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    addr
}

fn client_config(root: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// TLS as `HOST` over `tcp`, then an HTTP/1.1 client.
async fn https(tcp: TcpStream, root: &CertificateDer<'static>) -> SendRequest<Body> {
    let tls = client_config(root).connect(ServerName::try_from(HOST).expect("name"), tcp).await.expect("tls");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

/// TCP to the proxy and a CONNECT to `HOST:port`.
async fn connect_via(proxy: &ProxyHandle, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(proxy.local_addr()).await.expect("proxy");
    s.set_nodelay(true).expect("nodelay");
    let auth = proxy.credential().map(|c| c.header_value()).unwrap_or_default();
    let head = format!("CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\nProxy-Authorization: {auth}\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n\r\n") {
        reply.push(s.read_u8().await.expect("read"));
    }
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    s
}

async fn call(sender: &mut SendRequest<Body>, method: &str, path: &str, body: Bytes) -> Bytes {
    sender.ready().await.expect("ready");
    let req = Request::builder().method(method).uri(path).header("host", HOST).body(Full::new(body)).expect("req");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.expect("body").to_bytes()
}

struct Setup {
    direct: SendRequest<Body>,
    tunnel: SendRequest<Body>,
    mitm: SendRequest<Body>,
    counters: Arc<Counters>,
    interceptor: Arc<Interceptor>,
    _proxies: (ProxyHandle, ProxyHandle),
    _writer: FindingsWriter,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (upstream_ca, issuer) = test_ca();
    let up = upstream(&issuer).await;
    let now = OffsetDateTime::now_utc();
    let guardian = Arc::new(GuardianCa::generate("bench", 30, now).expect("guardian CA"));
    // The upstream CA as the only root: the machine's store plays no part.
    let roots = tls::upstream_roots(std::slice::from_ref(&upstream_ca), None).expect("roots");
    let leaves = Arc::new(LeafCache::new(guardian.clone(), NonZeroUsize::new(16).expect("16")));
    let interceptor = Arc::new(
        Interceptor::new(leaves, tls::upstream_client_config(roots).expect("client config")).expect("interceptor"),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let counters = Arc::new(Counters::default());
    let store = FileStore::new(dir.path(), 1 << 20, 2);
    let writer = FindingsWriter::start(
        Box::new(store),
        WriterOptions { dedup_window: Duration::from_secs(60) },
        counters.clone(),
    )
    .expect("writer");
    let detector = Detector::new(DetectorOptions::default()).expect("detector");
    let settings = |mitm: bool| {
        let mut s = Settings::new("127.0.0.1:0".parse().expect("addr"));
        s.resolve.insert(HOST.into(), "127.0.0.1".parse().expect("ip"));
        if mitm {
            s.mitm = Some(interceptor.clone());
        }
        s
    };
    let blind = Proxy::bind(settings(false), detector.clone(), writer.sink()).await.expect("bind");
    let inspecting = Proxy::bind(settings(true), detector, writer.sink()).await.expect("bind");

    let direct = {
        let tcp = TcpStream::connect(up).await.expect("upstream");
        tcp.set_nodelay(true).expect("nodelay");
        https(tcp, &upstream_ca).await
    };
    let tunnel = https(connect_via(&blind, up.port()).await, &upstream_ca).await;
    let mitm = https(connect_via(&inspecting, up.port()).await, guardian.cert_der()).await;
    Setup {
        direct,
        tunnel,
        mitm,
        counters: inspecting.counters().clone(),
        interceptor,
        _proxies: (blind, inspecting),
        _writer: writer,
        _dir: dir,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut s = rt.block_on(setup());
    let json = small_json();

    // Check the answers before timing: exact echoes on every path, and the MITM path inspected both messages.
    rt.block_on(async {
        for sender in [&mut s.direct, &mut s.tunnel, &mut s.mitm] {
            assert_eq!(call(sender, "POST", "/echo", json.clone()).await, json);
            assert_eq!(call(sender, "GET", "/bytes/big", Bytes::new()).await.len(), BIG);
        }
        let idle = async {
            while s.counters.snapshot().inspections_in_flight > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), idle).await.expect("inspection finishes");
    });
    let snap = s.counters.snapshot();
    assert_eq!((s.interceptor.leaves().minted(), snap.tunnels), (1, 1), "one leaf; the blind proxy's one tunnel");
    assert_eq!(snap.messages_inspected, 4, "both requests and both responses through MITM inspected");

    let mut g = c.benchmark_group("https_keepalive_echo_1k");
    g.throughput(Throughput::Bytes(json.len() as u64 * 2));
    for (name, sender) in [("direct_tls", &mut s.direct), ("blind_tunnel", &mut s.tunnel), ("mitm", &mut s.mitm)] {
        g.bench_function(name, |b| b.iter(|| rt.block_on(call(sender, "POST", "/echo", json.clone()))));
    }
    g.finish();

    let mut g = c.benchmark_group("https_keepalive_get_64k");
    g.throughput(Throughput::Bytes(BIG as u64));
    for (name, sender) in [("direct_tls", &mut s.direct), ("blind_tunnel", &mut s.tunnel), ("mitm", &mut s.mitm)] {
        g.bench_function(name, |b| b.iter(|| rt.block_on(call(sender, "GET", "/bytes/big", Bytes::new()))));
    }
    g.finish();
    drop(s);
    shutdown(rt);
}

fn shutdown(rt: Runtime) {
    rt.shutdown_timeout(Duration::from_secs(1));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
