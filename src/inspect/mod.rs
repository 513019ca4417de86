//! Turns HTTP messages into text for the detector: the request target, header values, and the body after
//! transfer and content decoding, routed by content type. Decides nothing about threats.
//!
//! One [`MessageInspector`] per message. The proxy (or `scan`) hands it the head, then the body chunks as
//! they are forwarded, then `finish`. It is synchronous, does no I/O and never panics on peer bytes.
//!
//! ```text
//! head ─▶ target (Location::Target), each header value (Location::Header(name)) ─────────────┐
//! body chunks (already de-chunked) ─▶ decode::BodyDecoder (Content-Encoding, bounded)          ▼
//!                                   ─▶ route::Router (Content-Type: text / UTF-8 gate / multipart) ─▶ detect::Scanner
//! ```
//!
//! What is decoded where:
//! - `Transfer-Encoding: chunked`: by hyper in the proxy, by [`chunked::ChunkedDecoder`] in `scan`; the
//!   inspector receives de-chunked bytes.
//! - `Content-Encoding` gzip / deflate (zlib or raw) / br / zstd, stacked: [`decode`], as chunks arrive.
//!   Unknown codings: the body is scanned as it is.
//! - Content types: [`route`] (JSON, forms, text, XML, JS and unknown types are fed as they are; multipart is
//!   split into parts; images, audio, video and `application/octet-stream` are skipped unless valid UTF-8).
//! - JSON string escapes, percent-encoding and base64: inside the detector, not here.
//!
//! The budget: at most `max_scan_bytes` are inspected per message, counting the start line, the header
//! lines and the DECODED body bytes. Once it is spent (or decoding stopped: a bomb or corrupt data) the
//! inspector takes no more, [`MessageInspector::wants_more`] turns false, and further body bytes are counted
//! in [`InspectStats::unscanned`] as received (before decompression).
//!
//! Limits (each a documented constant): the budget itself (`max_scan_bytes`, at most 16 MiB by config);
//! decoded output at most [`decode::MAX_EXPANSION_RATIO`] times the compressed input plus
//! [`decode::EXPANSION_ALLOWANCE`]; at most [`decode::MAX_CODINGS`] stacked codings; zstd windows up to
//! 8 MiB ([`decode::ZSTD_WINDOW_LOG_MAX`]); multipart part headers up to [`route::MAX_PART_HEADERS`] and
//! boundaries up to [`route::MAX_BOUNDARY`]; chunk-size lines up to [`chunked::MAX_CHUNK_LINE`] and
//! trailers up to [`chunked::MAX_TRAILERS`]. Memory per message is the fixed decoder buffers plus at most
//! one feed's decoded output (never more than the budget).
//!
//! Skipped, on purpose: bodies of images, audio, video and `application/octet-stream` from their first
//! invalid UTF-8 byte on ([`BodyNotes::skipped_binary`] counts them); bodies with an unknown coding are
//! scanned as received, not decoded ([`BodyNotes::unsupported_coding`]); after corrupt compressed data
//! nothing more of that message is decoded ([`BodyNotes::decode_stopped`]).
//!
//! ```
//! use http::{HeaderMap, Method};
//! use picoclaw_traffic_guardian::detect::{Destination, Detector, DetectorOptions};
//! use picoclaw_traffic_guardian::inspect::MessageInspector;
//!
//! let detector = Detector::new(DetectorOptions::default()).unwrap();
//! let dest = Destination::new("paste.example", 443);
//! let mut m = MessageInspector::request(&detector, dest, &Method::POST, "/upload", &HeaderMap::new(), 65536);
//! m.feed_body(b"key=AKIAZ7QW3E");
//! m.feed_body(b"RTY5UIOPLK");
//! m.finish();
//! assert_eq!(m.take_detections()[0].pattern, "aws_access_key");
//! ```

pub mod accumulate;
pub mod chunked;
pub mod decode;
pub mod ndjson;
pub mod route;
pub mod sse;
pub mod ws;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};

use crate::detect::{Destination, Detection, Detector, Direction, Location, ScanContext, Scanner};

use self::decode::{BodyDecoder, Stop, Unsupported};
use self::route::{BodyKind, Router};

/// Headers whose values are framing, not content: counted in the budget, not scanned.
const FRAMING_HEADERS: &[&str] =
    &["content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive", "date"];

/// Counters of one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InspectStats {
    /// Bytes taken in for inspection: the head, and body bytes as received (before content decoding).
    pub scanned: u64,
    /// Body bytes (as received) left uninspected because the budget was spent or decoding stopped.
    pub unscanned: u64,
}

/// What happened to a body beyond the counters: why decoding stopped, what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyNotes {
    /// Decoding stopped early: budget, expansion ratio (a bomb), or corrupt data.
    pub decode_stopped: Option<Stop>,
    /// The `Content-Encoding` was not decoded (the body was scanned as it is).
    pub unsupported_coding: Option<Unsupported>,
    /// Decoded bytes skipped as binary (not valid UTF-8 in a binary content type).
    pub skipped_binary: u64,
}

/// The start line of a message.
#[derive(Debug, Clone, Copy)]
pub enum StartLine<'a> {
    /// A request: method and target as received (origin or absolute form).
    Request(&'a Method, &'a str),
    /// A response: its status.
    Response(StatusCode),
}

/// Inspects one HTTP message within its budget.
#[derive(Debug)]
pub struct MessageInspector {
    body: Scanner,
    found: Vec<Detection>,
    budget: usize,
    /// Bytes counted against the budget: head plus decoded body.
    used: usize,
    stats: InspectStats,
    decoder: Option<BodyDecoder>,
    router: Router,
    notes: BodyNotes,
    finished: bool,
}

impl MessageInspector {
    /// Starts on a request: scans the target and headers at once.
    pub fn request(
        detector: &Detector,
        dest: Destination,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        max_scan_bytes: usize,
    ) -> MessageInspector {
        let start = StartLine::Request(method, target);
        MessageInspector::message(detector, Direction::Outbound, dest, start, headers, max_scan_bytes)
    }

    /// Starts on a response: scans the headers at once.
    pub fn response(
        detector: &Detector,
        dest: Destination,
        status: StatusCode,
        headers: &HeaderMap,
        max_scan_bytes: usize,
    ) -> MessageInspector {
        let start = StartLine::Response(status);
        MessageInspector::message(detector, Direction::Inbound, dest, start, headers, max_scan_bytes)
    }

    /// Starts on any message with the direction given (`scan --direction` can override what the start line
    /// says): scans the target, if any, and headers at once.
    pub fn message(
        detector: &Detector,
        direction: Direction,
        dest: Destination,
        start: StartLine<'_>,
        headers: &HeaderMap,
        max_scan_bytes: usize,
    ) -> MessageInspector {
        let kind = route::classify(headers.get(CONTENT_TYPE).map(|v| v.as_bytes()));
        let mut me = MessageInspector::new(detector, direction, dest.clone(), kind, max_scan_bytes);
        match decode::parse_codings(headers.get_all(CONTENT_ENCODING).iter().map(|v| v.as_bytes())) {
            Ok(codings) if codings.is_empty() => {}
            Ok(codings) => me.decoder = Some(BodyDecoder::new(&codings)),
            Err(unsupported) => me.notes.unsupported_coding = Some(unsupported),
        }
        match start {
            StartLine::Request(method, target) => {
                // "METHOD target HTTP/1.1\r\n": the target is scanned within what is left of the budget.
                let room = me.room();
                me.charge(method.as_str().len() + target.len() + 12);
                let part = prefix(target.as_bytes(), room.saturating_sub(method.as_str().len() + 1));
                if !part.is_empty() {
                    let ctx = ScanContext::new(direction, dest.clone(), Location::Target);
                    me.found.extend(detector.scan(ctx, part));
                }
            }
            StartLine::Response(status) => me.charge(format!("HTTP/1.1 {status}\r\n").len()),
        }
        me.scan_headers(detector, direction, &dest, headers);
        me
    }

    /// Starts on a bare body with no head (plain text given to `scan`): fed as text, no decoding.
    pub fn text(
        detector: &Detector,
        direction: Direction,
        dest: Destination,
        max_scan_bytes: usize,
    ) -> MessageInspector {
        MessageInspector::new(detector, direction, dest, BodyKind::Text, max_scan_bytes)
    }

    fn new(
        detector: &Detector,
        direction: Direction,
        dest: Destination,
        kind: BodyKind,
        budget: usize,
    ) -> MessageInspector {
        MessageInspector {
            body: detector.scanner(ScanContext::new(direction, dest, Location::Body)),
            found: Vec::new(),
            budget,
            used: 0,
            stats: InspectStats::default(),
            decoder: None,
            router: Router::new(kind),
            notes: BodyNotes::default(),
            finished: false,
        }
    }

    fn room(&self) -> usize {
        self.budget.saturating_sub(self.used)
    }

    /// Counts head bytes: against the budget (capped at it) and as scanned.
    fn charge(&mut self, n: usize) {
        let n = n.min(self.room());
        self.used += n;
        self.stats.scanned += n as u64;
    }

    fn scan_headers(&mut self, detector: &Detector, direction: Direction, dest: &Destination, headers: &HeaderMap) {
        for (name, value) in headers {
            let room = self.room();
            if room == 0 {
                break;
            }
            let name = name.as_str();
            // "name: value\r\n"
            self.charge(name.len() + value.len() + 4);
            if FRAMING_HEADERS.contains(&name) {
                continue;
            }
            let part = prefix(value.as_bytes(), room.saturating_sub(name.len() + 2));
            if !part.is_empty() {
                let ctx = ScanContext::new(direction, dest.clone(), Location::Header(name.to_owned()));
                self.found.extend(detector.scan(ctx, part));
            }
        }
    }

    /// Feeds body bytes as forwarded (after transfer decoding, before content decoding).
    pub fn feed_body(&mut self, chunk: &[u8]) {
        if !self.wants_more() {
            self.stats.unscanned += chunk.len() as u64;
            return;
        }
        let room = self.room();
        let Self { body, found, router, decoder, .. } = self;
        let mut emit = |text: &[u8]| body.feed(text, found);
        match decoder {
            None => {
                let (take, rest) = chunk.split_at(chunk.len().min(room));
                router.push(take, &mut emit);
                self.used += take.len();
                self.stats.scanned += take.len() as u64;
                self.stats.unscanned += rest.len() as u64;
            }
            Some(d) => {
                let mut decoded = Vec::new();
                d.feed(chunk, room, &mut decoded);
                router.push(&decoded, &mut emit);
                self.used += decoded.len();
                self.stats.scanned += chunk.len() as u64;
                self.notes.decode_stopped = d.stopped();
            }
        }
        self.notes.skipped_binary = self.router.skipped();
    }

    /// The message ended.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let Self { body, found, router, .. } = self;
        router.finish(&mut |text: &[u8]| body.feed(text, found));
        body.finish(found);
        self.notes.skipped_binary = self.router.skipped();
    }

    /// Whether more body bytes would still be inspected (false once the budget is spent or decoding
    /// stopped).
    pub fn wants_more(&self) -> bool {
        !self.finished && self.room() > 0 && self.notes.decode_stopped.is_none()
    }

    /// Detections found since the last call.
    pub fn take_detections(&mut self) -> Vec<Detection> {
        std::mem::take(&mut self.found)
    }

    /// Counters so far.
    pub fn stats(&self) -> InspectStats {
        self.stats
    }

    /// Why decoding stopped and what was skipped, so far.
    pub fn notes(&self) -> &BodyNotes {
        &self.notes
    }
}

fn prefix(bytes: &[u8], n: usize) -> &[u8] {
    bytes.get(..n.min(bytes.len())).unwrap_or_default()
}

#[cfg(test)]
mod tests;
