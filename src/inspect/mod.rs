//! Turns HTTP messages into text for the detector: the request target, header values, and the body after
//! transfer and content decoding, routed by content type. Decides nothing about threats.
//!
//! One [`MessageInspector`] per message. The proxy (or `scan`) hands it the head, then the body chunks as
//! they are forwarded, then `finish`. It enforces the per-message scan budget: once `max_scan_bytes` have
//! been inspected (start line and headers included) it takes no more and counts the rest as unscanned.

pub mod accumulate;
pub mod ndjson;
pub mod sse;
pub mod ws;

use http::{HeaderMap, Method, StatusCode};

use crate::detect::{Destination, Detection, Detector, Direction, Location, ScanContext, Scanner};

/// Counters of one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InspectStats {
    /// Bytes handed to the detector (head and body, before decoding).
    pub scanned: u64,
    /// Body bytes left uninspected because the budget was spent.
    pub unscanned: u64,
}

/// Inspects one HTTP message within its budget.
#[derive(Debug)]
pub struct MessageInspector {
    body: Scanner,
    found: Vec<Detection>,
    budget: usize,
    stats: InspectStats,
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
        let head = format!("{method} {target} HTTP/1.1\r\n");
        let mut me = MessageInspector::new(detector, Direction::Outbound, dest.clone(), max_scan_bytes);
        me.scan_head(detector, Direction::Outbound, &dest, Some(target), &head, headers);
        me
    }

    /// Starts on a response: scans the headers at once.
    pub fn response(
        detector: &Detector,
        dest: Destination,
        status: StatusCode,
        headers: &HeaderMap,
        max_scan_bytes: usize,
    ) -> MessageInspector {
        let head = format!("HTTP/1.1 {status}\r\n");
        let mut me = MessageInspector::new(detector, Direction::Inbound, dest.clone(), max_scan_bytes);
        me.scan_head(detector, Direction::Inbound, &dest, None, &head, headers);
        me
    }

    fn new(detector: &Detector, direction: Direction, dest: Destination, budget: usize) -> MessageInspector {
        let body = detector.scanner(ScanContext::new(direction, dest, Location::Body));
        MessageInspector { body, found: Vec::new(), budget, stats: InspectStats::default() }
    }

    fn scan_head(
        &mut self,
        detector: &Detector,
        direction: Direction,
        dest: &Destination,
        target: Option<&str>,
        start_line: &str,
        headers: &HeaderMap,
    ) {
        self.stats.scanned += start_line.len() as u64;
        if let Some(target) = target {
            let ctx = ScanContext::new(direction, dest.clone(), Location::Target);
            self.found.extend(detector.scan(ctx, target.as_bytes()));
        }
        for (name, value) in headers {
            self.stats.scanned += (name.as_str().len() + value.len() + 4) as u64;
            let ctx = ScanContext::new(direction, dest.clone(), Location::Header(name.as_str().to_owned()));
            self.found.extend(detector.scan(ctx, value.as_bytes()));
        }
    }

    /// Feeds body bytes as forwarded (after transfer decoding, before content decoding).
    pub fn feed_body(&mut self, chunk: &[u8]) {
        let room = self.budget.saturating_sub(self.stats.scanned as usize);
        let (take, rest) = chunk.split_at(chunk.len().min(room));
        if !take.is_empty() {
            self.stats.scanned += take.len() as u64;
            self.body.feed(take, &mut self.found);
        }
        self.stats.unscanned += rest.len() as u64;
    }

    /// The message ended.
    pub fn finish(&mut self) {
        self.body.finish(&mut self.found);
    }

    /// Whether more body bytes would still be inspected (false once the budget is spent).
    pub fn wants_more(&self) -> bool {
        (self.stats.scanned as usize) < self.budget
    }

    /// Detections found since the last call.
    pub fn take_detections(&mut self) -> Vec<Detection> {
        std::mem::take(&mut self.found)
    }

    /// Counters so far.
    pub fn stats(&self) -> InspectStats {
        self.stats
    }
}
