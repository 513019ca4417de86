//! Fuzz target for the `scan` raw-message path: head parsing (httparse), body framing (Content-Length,
//! chunked), content decoding and inspection, as `scan_raw` runs them, plus `MessageInspector` on the
//! parsed head directly to read its counters.
//!
//! Properties: no panic and no error (the input is in memory); the number of findings is bounded by the
//! input and budget; the findings do not depend on how the reads return the bytes (except with a
//! `Content-Encoding`, where the expansion-ratio cut depends on the feeds); and the counters are
//! consistent: every body byte is counted either scanned or unscanned, and without a content coding
//! no more than the budget is scanned.
//! Run: `cargo +nightly fuzz run http_head`. `cargo test` replays `fuzz/corpus/http_head/` and
//! `fuzz/artifacts/http_head/` (each file is a raw message) in `src/scan.rs`.
#![no_main]

use std::io::Read;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use picoclaw_traffic_guardian::detect::{Destination, Detector, DetectorOptions, Direction};
use picoclaw_traffic_guardian::inspect::{MessageInspector, StartLine};
use picoclaw_traffic_guardian::scan::{scan_raw, ScanOptions, MAX_HEAD, MAX_HEADERS};

#[derive(Debug, Arbitrary)]
struct Case<'a> {
    /// 0: none, 1: outbound, 2: inbound.
    direction: u8,
    dest: bool,
    budget: u16,
    big_budget: bool,
    reads: Vec<u16>,
    message: &'a [u8],
}

/// Returns the input in the read sizes given (cycled; 0 counts as 1).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    at: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = if self.sizes.is_empty() { buf.len() } else { self.sizes[self.at % self.sizes.len()].max(1) };
        self.at += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn detector() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| Detector::new(DetectorOptions::default()).expect("default detector"))
}

fn scan(opts: &ScanOptions, data: &[u8], sizes: Vec<usize>) -> Vec<String> {
    let mut input = Pieces { data, sizes, at: 0 };
    let found = scan_raw(detector(), opts, &mut input, &mut |_| {}).expect("in-memory input cannot fail");
    found.iter().map(|f| format!("{:?} {} {:?} {:?}", f.direction, f.protocol, f.dest, f.detection)).collect()
}

/// The counters of `MessageInspector` on the parsed head, with the rest fed as the body in `sizes` pieces.
fn check_counters(msg: &[u8], budget: usize, sizes: &[usize]) {
    let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let (method, target, status, headers, len);
    if msg.starts_with(b"HTTP/") {
        let mut res = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(n)) = res.parse(msg) else { return };
        let Some(s) = res.code.and_then(|c| StatusCode::from_u16(c).ok()) else { return };
        (method, target, status, headers, len) = (None, String::new(), Some(s), map(res.headers), n);
    } else {
        let mut req = httparse::Request::new(&mut slots);
        let Ok(httparse::Status::Complete(n)) = req.parse(msg) else { return };
        let Some(m) = req.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()) else { return };
        let t = req.path.unwrap_or_default().to_owned();
        (method, target, status, headers, len) = (Some(m), t, None, map(req.headers), n);
    }
    let start = match (&method, status) {
        (Some(m), _) => StartLine::Request(m, &target),
        (None, Some(s)) => StartLine::Response(s),
        (None, None) => return,
    };
    let dest = Destination::new("example.com", 443);
    let mut m = MessageInspector::message(detector(), Direction::Outbound, dest, start, &headers, budget);
    let head = m.stats().scanned;
    assert!(head <= budget as u64);
    let body = &msg[len..];
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(rest.len()).clamp(1, rest.len());
        m.feed_body(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    m.finish();
    let stats = m.stats();
    assert_eq!(stats.scanned - head + stats.unscanned, body.len() as u64, "{stats:?}");
    if !headers.contains_key(http::header::CONTENT_ENCODING) {
        assert!(stats.scanned <= budget as u64, "{stats:?} budget {budget}");
    }
}

fn map(parsed: &[httparse::Header<'_>]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for h in parsed {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) {
            map.append(n, v);
        }
    }
    map
}

fuzz_target!(|case: Case<'_>| {
    let budget = if case.big_budget { 1 << 20 } else { usize::from(case.budget) };
    let opts = ScanOptions {
        direction: match case.direction % 3 {
            0 => None,
            1 => Some(Direction::Outbound),
            _ => Some(Direction::Inbound),
        },
        dest: case.dest.then(|| Destination::new("api.openai.com", 443)),
        max_scan_bytes: budget,
    };
    let msg = case.message;
    let whole = scan(&opts, msg, Vec::new());
    // Both directions may scan plain text; each scan of n bytes finds at most n / 4 + 1, and the target and
    // every header are scans of their own.
    let bound = (msg.len() + budget) / 2 + 2 * MAX_HEADERS + 8;
    assert!(whole.len() <= bound, "{} findings", whole.len());
    let sizes: Vec<usize> = case.reads.iter().map(|&r| usize::from(r)).collect();
    let coded = msg.windows(16).any(|w| w.eq_ignore_ascii_case(b"content-encoding"));
    if msg.len() < MAX_HEAD && !coded {
        assert_eq!(scan(&opts, msg, sizes.clone()), whole);
    }
    check_counters(msg, budget, &sizes);
});
