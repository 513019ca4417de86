//! `bench-loadgen`: the HTTP/1.1 load generator of `bench/run.sh`.
//!
//! One client for every route the benchmark compares, so the figures differ only by the path the bytes
//! take: direct to the upstream (HTTP or TLS), absolute-form through a proxy (`GET http://host/path`), and
//! `CONNECT` through a proxy followed by TLS (tunnel or interception: the CA file decides which one the
//! client trusts). Every connection is keep-alive and sets `TCP_NODELAY`.
//!
//! It checks its answer: every response must be `200` with the expected body (byte-exact against a file,
//! or the upstream's SHA-256 of the POST body). Failures are counted by kind and printed, never a panic.
//!
//! Commands (`--key value` options):
//! - `header`: print the CSV header.
//! - `load`: `--case --figure --target URL [--proxy IP:PORT [--connect]] [--ca PEM] --concurrency N
//!   --seconds S [--warmup S] [--timeout S] [--post-bytes N] [--expect-file F]`; prints one CSV row.
//! - `hold`: open `--concurrency` keep-alive connections, one checked GET each, write `--ready-file`, hold
//!   them idle for `--seconds`, then one more checked GET on each; prints one CSV row.
//! - `gen-json`: `--bytes N --out F` writes a deterministic JSON document of exactly N bytes.
//! - `report`: `--dir D` prints the Markdown summary of a results directory (see `report.rs`).

mod report;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

/// Read buffer per connection.
const BUF: usize = 64 * 1024;
/// Largest response head we accept.
const MAX_HEAD: usize = 32 * 1024;
/// Distinct error messages printed per run.
const MAX_ERROR_LINES: usize = 5;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("usage: bench-loadgen header|load|hold|gen-json [--key value]...");
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command.as_str() {
        "header" => {
            println!("{}", Row::HEADER);
            Ok(())
        }
        "gen-json" => gen_json(&opts),
        "report" => opts.str("dir").map(|d| print!("{}", report::report(std::path::Path::new(d)))),
        "load" | "hold" => run(command == "hold", &opts),
        other => Err(format!("unknown command {other}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Options

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                return Err(format!("expected --option, got {k}"));
            };
            if key == "connect" {
                map.insert(key.to_string(), "true".to_string());
                continue;
            }
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), v.clone());
        }
        Ok(Opts(map))
    }

    fn str(&self, k: &str) -> Result<&str, String> {
        self.0.get(k).map(String::as_str).ok_or_else(|| format!("--{k} is required"))
    }

    fn opt(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn num<T: std::str::FromStr>(&self, k: &str, default: Option<T>) -> Result<T, String> {
        match (self.0.get(k), default) {
            (Some(v), _) => v.parse().map_err(|_| format!("--{k}: not a number: {v}")),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!("--{k} is required")),
        }
    }
}

/// `http://127.0.0.1:8080/1k`: loopback IP literals only (the benchmark never leaves the machine).
struct Target {
    tls: bool,
    addr: SocketAddr,
    /// `host:port` as written, for `Host` and `CONNECT`.
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url}: scheme must be http or https"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = loopback_addr(authority)?;
        Ok(Target { tls, addr, authority: authority.to_string(), path: path.to_string() })
    }

    fn host(&self) -> String {
        self.addr.ip().to_string()
    }
}

fn loopback_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|_| format!("{s}: want IP:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{s}: only loopback addresses are allowed"));
    }
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------------------
// Test data

/// Deterministic xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A chat-completion-shaped JSON document of exactly `n` bytes (n >= 64): lower-case pseudo-words, so an
/// inspecting proxy scans it as text and finds nothing.
fn json_doc(n: usize, seed: u64) -> Vec<u8> {
    let head = b"{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"";
    let tail = b"\"}]}\n";
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(head);
    let fill = n.saturating_sub(head.len() + tail.len());
    let mut rng = Rng(seed | 1);
    let mut word = 0;
    for _ in 0..fill {
        let r = rng.next();
        if word >= 3 && (r.is_multiple_of(7) || word > 10) {
            out.push(b' ');
            word = 0;
        } else {
            out.push(b'a' + ((r >> 32) % 26) as u8);
            word += 1;
        }
    }
    out.extend_from_slice(tail);
    out
}

fn gen_json(opts: &Opts) -> Result<(), String> {
    let n: usize = opts.num("bytes", None)?;
    if n < 64 {
        return Err("--bytes must be at least 64".into());
    }
    let out = opts.str("out")?;
    std::fs::write(out, json_doc(n, 0x5EED)).map_err(|e| format!("{out}: {e}"))
}

// ---------------------------------------------------------------------------------------------------------
// Run setup

/// What a response body must be.
enum Expect {
    /// Byte-exact.
    Bytes(Vec<u8>),
    /// Lower-case hex SHA-256 of the POST body (the upstream's echo), surrounding whitespace ignored.
    Sha256Hex(String),
}

struct Ctx {
    case: String,
    figure: String,
    target: Target,
    proxy: Option<SocketAddr>,
    connect: bool,
    tls: Option<TlsConnector>,
    request: Vec<u8>,
    /// Request body bytes (POST), counted into the payload throughput with the response body.
    upload: u64,
    expect: Expect,
    timeout: Duration,
    concurrency: usize,
    seconds: f64,
    warmup: f64,
    ready_file: Option<PathBuf>,
}

fn build_ctx(hold: bool, opts: &Opts) -> Result<Ctx, String> {
    let target = Target::parse(opts.str("target")?)?;
    let proxy = opts.opt("proxy").map(loopback_addr).transpose()?;
    let connect = opts.opt("connect").is_some();
    if connect && proxy.is_none() {
        return Err("--connect needs --proxy".into());
    }
    if target.tls && proxy.is_some() && !connect {
        return Err("https through a proxy needs --connect".into());
    }
    let tls = if target.tls {
        let ca = opts.str("ca")?;
        Some(tls_connector(ca)?)
    } else {
        None
    };
    // Absolute-form only for plain HTTP through a proxy; origin-form otherwise (direct or inside CONNECT).
    let request_target = if proxy.is_some() && !connect {
        format!("http://{}{}", target.authority, target.path)
    } else {
        target.path.clone()
    };
    let post_bytes: usize = opts.num("post-bytes", Some(0))?;
    let (request, expect) = if post_bytes > 0 {
        let body = json_doc(post_bytes, 0xB0D7);
        let digest = hex::encode(Sha256::digest(&body));
        let mut req = format!(
            "POST {request_target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bench-loadgen\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            target.authority,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        (req, Expect::Sha256Hex(digest))
    } else {
        let f = opts.str("expect-file")?;
        let bytes = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
        let req = format!(
            "GET {request_target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bench-loadgen\r\nAccept: */*\r\n\r\n",
            target.authority
        )
        .into_bytes();
        (req, Expect::Bytes(bytes))
    };
    let concurrency: usize = opts.num("concurrency", Some(1))?;
    if concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let seconds: f64 = opts.num("seconds", Some(10.0))?;
    let warmup: f64 = opts.num("warmup", Some(if hold { 0.0 } else { 0.5 }))?;
    let timeout: f64 = opts.num("timeout", Some(10.0))?;
    Ok(Ctx {
        case: opts.str("case")?.to_string(),
        figure: opts.str("figure")?.to_string(),
        target,
        proxy,
        connect,
        tls,
        upload: post_bytes as u64,
        request,
        expect,
        timeout: Duration::from_secs_f64(timeout),
        concurrency,
        seconds,
        warmup,
        ready_file: opts.opt("ready-file").map(PathBuf::from),
    })
}

fn tls_connector(ca: &str) -> Result<TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{ca}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{ca}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{ca}: no certificates"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

// ---------------------------------------------------------------------------------------------------------
// Errors and results

#[derive(Debug)]
enum Fail {
    /// TCP connect, CONNECT exchange, TLS handshake.
    Connect(String),
    /// Reset, EOF mid-message, malformed framing.
    Io(String),
    /// A reused keep-alive connection closed before any response byte (retried once, like a browser).
    Stale,
    Status(u16),
    Body(String),
    Timeout,
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Connect(m) => write!(f, "connect: {m}"),
            Fail::Io(m) => write!(f, "io: {m}"),
            Fail::Stale => write!(f, "io: keep-alive connection closed before the response"),
            Fail::Status(s) => write!(f, "status {s}"),
            Fail::Body(m) => write!(f, "body: {m}"),
            Fail::Timeout => write!(f, "timeout"),
        }
    }
}

#[derive(Default)]
struct Stats {
    /// Latency of each checked-OK request completed inside the window, nanoseconds.
    lat: Vec<u64>,
    body_bytes: u64,
    /// Checked-OK requests over the whole run, warm-up and tail included (for CPU per request).
    all_ok: u64,
    err_connect: u64,
    err_io: u64,
    err_status: u64,
    err_body: u64,
    err_timeout: u64,
    connects: u64,
    retries: u64,
    messages: Vec<String>,
}

impl Stats {
    fn fail(&mut self, f: Fail) {
        match &f {
            Fail::Connect(_) => self.err_connect += 1,
            Fail::Io(_) | Fail::Stale => self.err_io += 1,
            Fail::Status(_) => self.err_status += 1,
            Fail::Body(_) => self.err_body += 1,
            Fail::Timeout => self.err_timeout += 1,
        }
        let m = f.to_string();
        if self.messages.len() < MAX_ERROR_LINES && !self.messages.contains(&m) {
            self.messages.push(m);
        }
    }

    fn merge(&mut self, o: Stats) {
        self.lat.extend(o.lat);
        self.body_bytes += o.body_bytes;
        self.all_ok += o.all_ok;
        self.err_connect += o.err_connect;
        self.err_io += o.err_io;
        self.err_status += o.err_status;
        self.err_body += o.err_body;
        self.err_timeout += o.err_timeout;
        self.connects += o.connects;
        self.retries += o.retries;
        for m in o.messages {
            if self.messages.len() < MAX_ERROR_LINES && !self.messages.contains(&m) {
                self.messages.push(m);
            }
        }
    }

    fn errors(&self) -> u64 {
        self.err_connect + self.err_io + self.err_status + self.err_body + self.err_timeout
    }
}

struct Row<'a> {
    ctx: &'a Ctx,
    stats: &'a mut Stats,
    window: f64,
}

impl Row<'_> {
    const HEADER: &'static str = "case,figure,concurrency,seconds,ok,errors,err_connect,err_io,err_status,err_body,err_timeout,connects,retries,req_per_s,mb_per_s,p50_ms,p99_ms,max_ms,all_ok,client_cpu_s";

    fn print(self) {
        let s = self.stats;
        s.lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if s.lat.is_empty() {
                return f64::NAN;
            }
            // Nearest rank.
            let rank = ((p / 100.0) * s.lat.len() as f64).ceil() as usize;
            s.lat[rank.clamp(1, s.lat.len()) - 1] as f64 / 1e6
        };
        let ok = s.lat.len() as u64;
        let w = if self.window > 0.0 { self.window } else { f64::NAN };
        println!(
            "{},{},{},{:.2},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.3},{:.3},{:.3},{},{}",
            self.ctx.case,
            self.ctx.figure,
            self.ctx.concurrency,
            self.window,
            ok,
            s.errors(),
            s.err_connect,
            s.err_io,
            s.err_status,
            s.err_body,
            s.err_timeout,
            s.connects,
            s.retries,
            ok as f64 / w,
            s.body_bytes as f64 / w / 1e6,
            pct(50.0),
            pct(99.0),
            pct(100.0),
            s.all_ok,
            client_cpu_s().map(|c| format!("{c:.2}")).unwrap_or_default(),
        );
        for m in &s.messages {
            eprintln!("{} {}: {m}", self.ctx.case, self.ctx.figure);
        }
    }
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, USER_HZ = 100).
fn client_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

// ---------------------------------------------------------------------------------------------------------
// Connections

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// At least one exchange completed on it.
    used: bool,
}

async fn connect(ctx: &Ctx) -> Result<Conn, Fail> {
    let addr = ctx.proxy.unwrap_or(ctx.target.addr);
    let tcp = TcpStream::connect(addr).await.map_err(|e| Fail::Connect(format!("tcp {addr}: {e}")))?;
    tcp.set_nodelay(true).map_err(|e| Fail::Connect(format!("TCP_NODELAY: {e}")))?;
    let mut tcp = tcp;
    if ctx.connect {
        connect_tunnel(&mut tcp, &ctx.target.authority).await?;
    }
    let io: Box<dyn Io> = match &ctx.tls {
        Some(connector) => {
            let name = rustls_pki_types::ServerName::try_from(ctx.target.host())
                .map_err(|e| Fail::Connect(format!("server name: {e}")))?;
            let tls = connector.connect(name, tcp).await.map_err(|e| Fail::Connect(format!("tls: {e}")))?;
            Box::new(tls)
        }
        None => Box::new(tcp),
    };
    Ok(Conn { io, buf: vec![0u8; BUF].into_boxed_slice(), start: 0, end: 0, used: false })
}

/// `CONNECT authority`, then the proxy's head must be a 2xx and nothing may follow it (the server speaks
/// only after our ClientHello).
async fn connect_tunnel(tcp: &mut TcpStream, authority: &str) -> Result<(), Fail> {
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: bench-loadgen\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.map_err(|e| Fail::Connect(format!("CONNECT write: {e}")))?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await.map_err(|e| Fail::Connect(format!("CONNECT read: {e}")))?;
        if n == 0 {
            return Err(Fail::Connect("proxy closed during CONNECT".into()));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&head, b"\r\n\r\n") {
            if i + 4 != head.len() {
                return Err(Fail::Connect("proxy sent bytes after its CONNECT response".into()));
            }
            break;
        }
        if head.len() > MAX_HEAD {
            return Err(Fail::Connect("CONNECT response head too large".into()));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => match resp.code {
            Some(c) if (200..300).contains(&c) => Ok(()),
            Some(c) => Err(Fail::Connect(format!("CONNECT answered {c}"))),
            None => Err(Fail::Connect("CONNECT response without status".into())),
        },
        Ok(httparse::Status::Partial) => Err(Fail::Connect("CONNECT response incomplete".into())),
        Err(e) => Err(Fail::Connect(format!("CONNECT response: {e}"))),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How the body is delimited.
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
    close: bool,
}

impl Conn {
    /// Read more bytes into the buffer; 0 at EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::other("line or head larger than the buffer"));
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    async fn read_head(&mut self) -> Result<Head, Fail> {
        let mut first = true;
        loop {
            let avail = &self.buf[self.start..self.end];
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(avail) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut framing = Framing::UntilClose;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            if !matches!(framing, Framing::Chunked) {
                                let len = v.trim().parse().map_err(|_| Fail::Io(format!("content-length {v}")))?;
                                framing = Framing::Length(len);
                            }
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            if v.trim().ends_with("chunked") {
                                framing = Framing::Chunked;
                            }
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            if v.contains("close") {
                                close = true;
                            } else if v.contains("keep-alive") {
                                close = false;
                            }
                        }
                    }
                    self.start += n;
                    if (100..200).contains(&status) {
                        // Interim response (100 Continue): the real one follows.
                        continue;
                    }
                    return Ok(Head { status, framing, close });
                }
                Ok(httparse::Status::Partial) => {
                    if self.end - self.start >= MAX_HEAD {
                        return Err(Fail::Io("response head too large".into()));
                    }
                }
                Err(e) => return Err(Fail::Io(format!("response head: {e}"))),
            }
            let n = self.fill().await;
            let nothing_yet = first && self.start == self.end;
            first = false;
            match n {
                Ok(0) | Err(_) if nothing_yet && self.used => return Err(Fail::Stale),
                Ok(0) => return Err(Fail::Io("EOF in response head".into())),
                Ok(_) => {}
                Err(e) => return Err(Fail::Io(format!("read head: {e}"))),
            }
        }
    }

    /// Exactly `n` body bytes into `check`.
    async fn read_exact_into(&mut self, mut n: u64, check: &mut Check<'_>) -> Result<(), Fail> {
        while n > 0 {
            if self.start == self.end {
                match self.fill().await {
                    Ok(0) => return Err(Fail::Io(format!("EOF with {n} body bytes missing"))),
                    Ok(_) => {}
                    Err(e) => return Err(Fail::Io(format!("read body: {e}"))),
                }
            }
            let take = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            check.feed(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }

    async fn read_line(&mut self) -> Result<String, Fail> {
        loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.start..self.start + i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            match self.fill().await {
                Ok(0) => return Err(Fail::Io("EOF in chunked framing".into())),
                Ok(_) => {}
                Err(e) => return Err(Fail::Io(format!("read chunk line: {e}"))),
            }
        }
    }

    async fn read_chunked(&mut self, check: &mut Check<'_>) -> Result<(), Fail> {
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16).map_err(|_| Fail::Io(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(());
            }
            self.read_exact_into(size, check).await?;
            if !self.read_line().await?.is_empty() {
                return Err(Fail::Io("chunk data not followed by CRLF".into()));
            }
        }
    }

    async fn read_to_eof(&mut self, check: &mut Check<'_>) -> Result<(), Fail> {
        loop {
            if self.start < self.end {
                check.feed(&self.buf[self.start..self.end]);
                self.start = self.end;
            }
            match self.fill().await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(Fail::Io(format!("read body to EOF: {e}"))),
            }
        }
    }

    /// One request and its full response. `Ok(close)` when the response was checked OK.
    async fn exchange(&mut self, request: &[u8], expect: &Expect) -> Result<(u64, bool), Fail> {
        // Flush: a TLS stream may keep records buffered until then.
        let sent = match self.io.write_all(request).await {
            Ok(()) => self.io.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            return Err(if self.used { Fail::Stale } else { Fail::Io(format!("write: {e}")) });
        }
        let head = self.read_head().await?;
        let mut check = Check::new(expect);
        let close = match head.framing {
            Framing::Length(n) => {
                self.read_exact_into(n, &mut check).await?;
                head.close
            }
            Framing::Chunked => {
                self.read_chunked(&mut check).await?;
                head.close
            }
            Framing::UntilClose => {
                self.read_to_eof(&mut check).await?;
                true
            }
        };
        self.used = true;
        if head.status != 200 {
            return Err(Fail::Status(head.status));
        }
        check.finish()?;
        Ok((check.bytes, close))
    }
}

/// Streaming body check.
struct Check<'a> {
    expect: &'a Expect,
    bytes: u64,
    mismatch_at: Option<u64>,
    small: Vec<u8>,
}

impl<'a> Check<'a> {
    fn new(expect: &'a Expect) -> Check<'a> {
        Check { expect, bytes: 0, mismatch_at: None, small: Vec::new() }
    }

    fn feed(&mut self, chunk: &[u8]) {
        match self.expect {
            Expect::Bytes(want) => {
                if self.mismatch_at.is_none() {
                    let off = self.bytes as usize;
                    let ok = off + chunk.len() <= want.len() && want[off..off + chunk.len()] == *chunk;
                    if !ok {
                        self.mismatch_at = Some(self.bytes);
                    }
                }
            }
            Expect::Sha256Hex(_) => {
                if self.small.len() + chunk.len() <= 1024 {
                    self.small.extend_from_slice(chunk);
                }
            }
        }
        self.bytes += chunk.len() as u64;
    }

    fn finish(&self) -> Result<(), Fail> {
        match self.expect {
            Expect::Bytes(want) => {
                if self.bytes != want.len() as u64 {
                    return Err(Fail::Body(format!("{} bytes, want {}", self.bytes, want.len())));
                }
                if let Some(at) = self.mismatch_at {
                    return Err(Fail::Body(format!("content differs at byte {at}")));
                }
                Ok(())
            }
            Expect::Sha256Hex(want) => {
                let got = String::from_utf8_lossy(&self.small);
                if got.trim() != want {
                    return Err(Fail::Body(format!("upstream digest {:?}, want {want}", got.trim())));
                }
                Ok(())
            }
        }
    }
}

/// One request with at most one retry on a stale keep-alive connection. Returns body bytes.
async fn request(slot: &mut Option<Conn>, ctx: &Ctx, stats: &mut Stats) -> Result<u64, Fail> {
    for _ in 0..2 {
        let conn = match slot {
            Some(c) => c,
            None => {
                stats.connects += 1;
                slot.insert(connect(ctx).await?)
            }
        };
        match conn.exchange(&ctx.request, &ctx.expect).await {
            Ok((bytes, close)) => {
                if close {
                    *slot = None;
                }
                return Ok(bytes);
            }
            Err(Fail::Stale) => {
                stats.retries += 1;
                *slot = None;
            }
            Err(e) => {
                *slot = None;
                return Err(e);
            }
        }
    }
    Err(Fail::Stale)
}

// ---------------------------------------------------------------------------------------------------------
// Load and hold

fn run(hold: bool, opts: &Opts) -> Result<(), String> {
    let ctx = Arc::new(build_ctx(hold, opts)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (mut stats, window) = rt.block_on(async {
        if hold {
            hold_run(ctx.clone()).await
        } else {
            load_run(ctx.clone()).await
        }
    });
    Row { ctx: &ctx, stats: &mut stats, window }.print();
    Ok(())
}

async fn load_run(ctx: Arc<Ctx>) -> (Stats, f64) {
    let t0 = Instant::now();
    let window_start = t0 + Duration::from_secs_f64(ctx.warmup);
    let deadline = window_start + Duration::from_secs_f64(ctx.seconds);
    let mut tasks = Vec::with_capacity(ctx.concurrency);
    for _ in 0..ctx.concurrency {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut slot: Option<Conn> = None;
            while Instant::now() < deadline {
                let start = Instant::now();
                let res = tokio::time::timeout(ctx.timeout, request(&mut slot, &ctx, &mut stats)).await;
                let end = Instant::now();
                match res {
                    Ok(Ok(bytes)) => {
                        stats.all_ok += 1;
                        if start >= window_start && end <= deadline {
                            stats.lat.push((end - start).as_nanos() as u64);
                            stats.body_bytes += bytes + ctx.upload;
                        }
                    }
                    Ok(Err(f)) => {
                        stats.fail(f);
                        // Do not spin on a refused port.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => {
                        slot = None;
                        stats.fail(Fail::Timeout);
                    }
                }
            }
            stats
        }));
    }
    let mut total = Stats::default();
    for t in tasks {
        match t.await {
            Ok(s) => total.merge(s),
            Err(e) => total.fail(Fail::Io(format!("worker died: {e}"))),
        }
    }
    (total, ctx.seconds)
}

/// Open `concurrency` connections with one checked GET each, announce, hold them idle for `seconds`, then
/// one more checked GET on each. Row: ok = connections that answered both times; window = hold time.
async fn hold_run(ctx: Arc<Ctx>) -> (Stats, f64) {
    let mut tasks = Vec::with_capacity(ctx.concurrency);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(ctx.concurrency);
    let release = Arc::new(tokio::sync::Notify::new());
    for _ in 0..ctx.concurrency {
        let ctx = ctx.clone();
        let opened_tx = opened_tx.clone();
        let release = release.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut slot: Option<Conn> = None;
            // Registered before announcing, so the release after the hold cannot be missed.
            let released = release.notified();
            let first = tokio::time::timeout(ctx.timeout, request(&mut slot, &ctx, &mut stats)).await;
            let _ = opened_tx.send(()).await;
            // The announcer counts senders: ours is done.
            drop(opened_tx);
            match first {
                Ok(Ok(_)) => {}
                Ok(Err(f)) => {
                    stats.fail(f);
                    return stats;
                }
                Err(_) => {
                    stats.fail(Fail::Timeout);
                    return stats;
                }
            }
            released.await;
            let connects_before = stats.connects;
            let start = Instant::now();
            match tokio::time::timeout(ctx.timeout, request(&mut slot, &ctx, &mut stats)).await {
                Ok(Ok(bytes)) if stats.connects == connects_before => {
                    stats.lat.push(start.elapsed().as_nanos() as u64);
                    stats.body_bytes += bytes;
                }
                Ok(Ok(_)) => stats.fail(Fail::Io("held connection was closed (had to reconnect)".into())),
                Ok(Err(f)) => stats.fail(f),
                Err(_) => stats.fail(Fail::Timeout),
            }
            stats
        }));
    }
    drop(opened_tx);
    while opened_rx.recv().await.is_some() {}
    if let Some(f) = &ctx.ready_file {
        if let Err(e) = std::fs::write(f, b"ready\n") {
            eprintln!("bench-loadgen: {}: {e}", f.display());
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(ctx.seconds)).await;
    // notify_waiters wakes the ones already waiting; every task registered before signalling `opened`.
    release.notify_waiters();
    let mut total = Stats::default();
    for t in tasks {
        match t.await {
            Ok(s) => total.merge(s),
            Err(e) => total.fail(Fail::Io(format!("worker died: {e}"))),
        }
    }
    (total, ctx.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_over(bytes: &'static [u8]) -> Conn {
        let (client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            // Small writes: framing must survive any split.
            for chunk in bytes.chunks(7) {
                if server.write_all(chunk).await.is_err() {
                    return;
                }
            }
        });
        Conn { io: Box::new(client), buf: vec![0u8; BUF].into_boxed_slice(), start: 0, end: 0, used: true }
    }

    #[test]
    fn json_doc_has_the_exact_length_and_is_deterministic() {
        for n in [64, 1024, 65536] {
            let d = json_doc(n, 1);
            assert_eq!(d.len(), n);
            assert_eq!(d, json_doc(n, 1));
            assert!(d.iter().all(|b| b.is_ascii() && *b != b'\\'));
        }
    }

    #[tokio::test]
    async fn content_length_chunked_and_close_delimited_bodies_are_checked() {
        let want = Expect::Bytes(b"hello world".to_vec());
        let mut c = conn_over(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world");
        assert!(matches!(c.exchange(b"", &want).await, Ok((11, false))));

        let mut c = conn_over(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n",
        );
        assert!(matches!(c.exchange(b"", &want).await, Ok((11, false))));

        let mut c = conn_over(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world");
        assert!(matches!(c.exchange(b"", &want).await, Ok((11, true))));
    }

    #[tokio::test]
    async fn wrong_bodies_statuses_and_stale_connections_are_errors() {
        let want = Expect::Bytes(b"hello world".to_vec());
        let mut c = conn_over(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello World");
        assert!(matches!(c.exchange(b"", &want).await, Err(Fail::Body(_))));

        let mut c = conn_over(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert!(matches!(c.exchange(b"", &want).await, Err(Fail::Body(_))));

        let mut c = conn_over(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 11\r\n\r\nhello world");
        assert!(matches!(c.exchange(b"", &want).await, Err(Fail::Status(502))));

        let mut c = conn_over(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello");
        assert!(matches!(c.exchange(b"", &want).await, Err(Fail::Io(_))));

        // A reused connection closed before any byte: retried by the caller, not a body error.
        let mut c = conn_over(b"");
        assert!(matches!(c.exchange(b"", &want).await, Err(Fail::Stale)));
    }

    #[tokio::test]
    async fn the_post_digest_is_compared() {
        let body = json_doc(1000, 2);
        let good = hex::encode(Sha256::digest(&body));
        let want = Expect::Sha256Hex(good.clone());
        let resp: &'static [u8] =
            Box::leak(format!("HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n{good}").into_bytes().into_boxed_slice());
        let mut c = conn_over(resp);
        assert!(c.exchange(b"", &want).await.is_ok());
        let mut c = conn_over(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert!(matches!(c.exchange(b"", &want).await, Err(Fail::Body(_))));
    }

    #[test]
    fn only_loopback_targets() {
        assert!(Target::parse("http://127.0.0.1:8080/1k").is_ok());
        assert!(Target::parse("https://[::1]:8443/").is_ok());
        assert!(Target::parse("http://10.0.0.1:80/").is_err());
        assert!(loopback_addr("192.168.1.1:3128").is_err());
    }
}
