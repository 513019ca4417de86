//! WebSocket through the real proxy (plain HTTP Upgrade): an echo upstream written with tokio (handshake
//! by hand), text, fragmented, masked and deflated messages both ways, byte-exact; a malformed frame
//! closes only its own connection. 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};
use http::StatusCode;
use picoclaw_traffic_guardian::detect::{Direction, Location, ThreatType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::*;

const T: Duration = Duration::from_secs(5);
pub const MASK: [u8; 4] = [0x5d, 0x13, 0xa7, 0x02];

/// One frame, masked when `mask` is given.
pub fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().zip(k.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Reads a head up to its blank line, byte by byte (nothing after it is consumed).
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(T, s.read_exact(&mut b)).await.expect("head in time").expect("read head");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// What the echo upstream received and sent after its handshake.
#[derive(Default)]
pub struct Wire {
    pub received: Vec<u8>,
    pub sent: Vec<u8>,
}

/// An echo upstream on 127.0.0.1 (see [`echo_session`]).
async fn echo_upstream(extensions: Option<&'static str>) -> (SocketAddr, Arc<Mutex<Wire>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let wire = Arc::new(Mutex::new(Wire::default()));
    let w = wire.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(echo_session(s, extensions, w.clone()));
        }
    });
    (addr, wire)
}

/// One echo connection: answers the upgrade with `101` (and `extensions` in `Sec-WebSocket-Extensions`, if
/// given), then sends every frame back unmasked with its first byte unchanged (so fragments, RSV1 and
/// compressed payloads come back as they went), and closes after echoing a close frame. It does not check
/// frames: a malformed one is echoed too, so only the proxy decides about it.
pub async fn echo_session<S>(mut s: S, extensions: Option<&'static str>, w: Arc<Mutex<Wire>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = read_head(&mut s).await;
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    // No client here checks the accept value.
    let mut resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n".to_owned();
    if let Some(ext) = extensions {
        resp.push_str(&format!("Sec-WebSocket-Extensions: {ext}\r\n"));
    }
    resp.push_str("\r\n");
    // Flushed at once: a TLS stream holds written records until then.
    if s.write_all(resp.as_bytes()).await.is_err() || s.flush().await.is_err() {
        return;
    }
    loop {
        let mut h = [0u8; 2];
        if s.read_exact(&mut h).await.is_err() {
            return;
        }
        let mut len = u64::from(h[1] & 0x7f);
        let mut raw = h.to_vec();
        if len == 126 {
            let mut b = [0u8; 2];
            if s.read_exact(&mut b).await.is_err() {
                return;
            }
            raw.extend_from_slice(&b);
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            if s.read_exact(&mut b).await.is_err() {
                return;
            }
            raw.extend_from_slice(&b);
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        if h[1] & 0x80 != 0 {
            if s.read_exact(&mut mask).await.is_err() {
                return;
            }
            raw.extend_from_slice(&mask);
        }
        let mut payload = vec![0u8; len as usize];
        if s.read_exact(&mut payload).await.is_err() {
            return;
        }
        raw.extend_from_slice(&payload);
        if h[1] & 0x80 != 0 {
            payload.iter_mut().zip(mask.iter().cycle()).for_each(|(b, k)| *b ^= k);
        }
        let back = frame(h[0] & 0x80 != 0, h[0] & 0x40 != 0, h[0] & 0x0f, &payload, None);
        // Keep the first byte exactly (RSV2/RSV3 and reserved opcodes included).
        let mut back = back;
        back[0] = h[0];
        {
            let mut w = w.lock().unwrap();
            w.received.extend_from_slice(&raw);
            w.sent.extend_from_slice(&back);
        }
        if s.write_all(&back).await.is_err() || s.flush().await.is_err() {
            return;
        }
        if h[0] & 0x0f == 0x8 {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// Opens a WebSocket to `up` through the proxy (absolute-form GET with the upgrade headers); returns the
/// stream right after the `101` head and the head.
async fn open(p: &TestProxy, up: SocketAddr, deflate: bool) -> (TcpStream, String) {
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut req = format!(
        "GET http://{up}/gateway HTTP/1.1\r\nHost: {up}\r\nProxy-Authorization: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        p.auth().expect("auth")
    );
    if deflate {
        req.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write upgrade");
    let head = read_head(&mut s).await;
    (s, head)
}

/// Raw deflate of one message with a sync flush and the `00 00 ff ff` tail stripped (RFC 7692).
pub fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).expect("deflate");
    out.truncate(out.len() - 4);
    out
}

pub fn delta(text: &str) -> Vec<u8> {
    serde_json::json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": text})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_fragmented_masked_and_deflated_messages_both_ways_byte_exact() {
    let (payload, pattern) = hostile();
    let (up, wire) = echo_upstream(Some("permessage-deflate")).await;
    let p = TestProxy::start(|_| {}).await;
    let (mut s, head) = open(&p, up, true).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket") && lower.contains("connection: upgrade"), "{head}");
    assert!(lower.contains("sec-websocket-extensions: permessage-deflate"), "{head}");

    let mut c = Compress::new(Compression::default(), false);
    let (k1, k2) = SECRET.split_at(11);
    let (h1, h2) = payload.split_at(payload.len() / 2);
    let note = format!("deploy key {SECRET} now");
    let mut sent = Vec::new();
    // A plain text message, fragmented across three frames with a ping between them.
    sent.extend(frame(false, false, 1, &note.as_bytes()[..9], Some(MASK)));
    sent.extend(frame(true, false, 9, b"hb", Some(MASK)));
    sent.extend(frame(false, false, 0, &note.as_bytes()[9..20], Some(MASK)));
    sent.extend(frame(true, false, 0, &note.as_bytes()[20..], Some(MASK)));
    // A key spelled over two compressed JSON deltas (context takeover).
    sent.extend(frame(true, true, 1, &deflate(&mut c, &delta(&format!(" {k1}"))), Some(MASK)));
    sent.extend(frame(true, true, 1, &deflate(&mut c, &delta(k2)), Some(MASK)));
    // The hostile payload in two deltas, the second one compressed and fragmented.
    sent.extend(frame(true, false, 1, &delta(&format!(" {h1}")), Some(MASK)));
    let z = deflate(&mut c, &delta(h2));
    sent.extend(frame(false, true, 1, &z[..z.len() / 2], Some(MASK)));
    sent.extend(frame(true, false, 0, &z[z.len() / 2..], Some(MASK)));
    // A binary message, then the close.
    sent.extend(frame(true, false, 2, &pattern_bytes(), Some(MASK)));
    sent.extend(frame(true, false, 8, &1000u16.to_be_bytes(), Some(MASK)));
    // Written in uneven pieces, so frames are cut across TCP writes.
    for piece in cut(&sent, 13) {
        s.write_all(&piece).await.unwrap();
    }
    let mut got = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut got)).await.expect("closed in time").expect("read");
    // The client closes its side too; the bridge (and its inspection) ends once both sides have.
    drop(s);
    {
        let w = wire.lock().unwrap();
        assert_eq!(sha256(&w.received), sha256(&sent), "upstream got the client's bytes exactly");
        assert_eq!(sha256(&got), sha256(&w.sent), "client got the upstream's bytes exactly");
    }
    let found = p.findings().await;
    let ws: Vec<_> = found.iter().filter(|f| f.location == Some(Location::WebSocket)).collect();
    let out: Vec<_> =
        ws.iter().filter(|f| f.direction == Direction::Outbound && f.pattern == "aws_access_key").collect();
    assert!(!out.is_empty(), "{found:?}");
    assert!(out.iter().all(|f| f.threat_type == ThreatType::Exfil && f.dest == up.to_string()), "{out:?}");
    assert!(ws.iter().any(|f| f.direction == Direction::Inbound && f.pattern == pattern), "{found:?}");
    let log = std::fs::read_to_string(p.dir.path().join("findings.jsonl")).unwrap();
    assert!(!log.contains(SECRET), "the log holds the secret");
}

/// Some binary bytes that are not UTF-8.
fn pattern_bytes() -> Vec<u8> {
    let mut b = pattern(300);
    b[0] = 0xff;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_its_own_connection() {
    let (up, _) = echo_upstream(None).await;
    let p = TestProxy::start(|_| {}).await;
    let (mut good, head) = open(&p, up, false).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (mut bad, head) = open(&p, up, false).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Opcode 3 is reserved: the proxy stops inspecting and closes this connection.
    bad.write_all(&frame(true, false, 3, b"nope", Some(MASK))).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(T, bad.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_)) | Ok(Err(_))), "the bad connection was closed");
    // The other WebSocket still echoes, and plain HTTP is still served.
    let msg = frame(true, false, 1, b"still here", Some(MASK));
    good.write_all(&msg).await.unwrap();
    let mut back = vec![0u8; 12];
    tokio::time::timeout(T, good.read_exact(&mut back)).await.expect("echo in time").expect("echo");
    assert_eq!(back, frame(true, false, 1, b"still here", None));
    let http = upstream().await;
    let mut c = client(p.addr()).await;
    assert_eq!(send(&mut c, p.request("GET", &format!("http://{}/", http.addr), full(""))).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_extension_is_forwarded_uninspected() {
    let (up, wire) = echo_upstream(Some("x-custom-compress")).await;
    let p = TestProxy::start(|_| {}).await;
    let (mut s, head) = open(&p, up, false).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let sent = [frame(true, false, 1, SECRET.as_bytes(), Some(MASK)), frame(true, false, 8, b"", Some(MASK))].concat();
    s.write_all(&sent).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut got)).await.expect("closed in time").expect("read");
    assert_eq!(got, wire.lock().unwrap().sent, "forwarded all the same");
    let ws: Vec<_> = p.findings().await.into_iter().filter(|f| f.location == Some(Location::WebSocket)).collect();
    assert!(ws.is_empty(), "{ws:?}");
    assert!(p.counters.snapshot().bytes_unscanned >= sent.len() as u64);
}
