//! [`WsInspector`]: one direction of an upgraded WebSocket connection, from forwarded bytes to detections.
//!
//! ```text
//! forwarded bytes ─▶ ws::WsDecoder (frames, unmasking, permessage-deflate, fragments; cap = budget)
//!                 ─▶ each text message (or valid UTF-8 binary one):
//!                      JSON ─▶ accumulate::JsonAccumulator ─▶ stream::PieceScanner (joined per JSON path)
//!                      other ─▶ Detector::scan (alone)                                 ─▶ Location::WebSocket
//! ```
//!
//! The proxy opens one per direction after the `101` and taps each chunk it forwards into
//! [`WsInspector::feed`] (beside the forwarding, never in front of it). Outbound (client) frames are scanned
//! as outbound text, so secrets count as EXFIL; inbound (server) frames as inbound, so commands count as
//! INJECTION.
//!
//! Why JSON goes through the accumulator: realtime model APIs stream a reply as one small JSON message per
//! token (`{"type":"response.output_text.delta","delta":"cu"}`), so the pieces of one logical text must
//! join across messages, exactly as for SSE. A long-lived connection would run a key past
//! [`MAX_KEY_TEXT_BYTES`], so the join is a window: after [`JOIN_WINDOW_BYTES`] of JSON messages the
//! accumulator and its scanners are finished and started afresh (a text split exactly over that boundary
//! is not joined). A JSON message larger than the window is scanned alone as a whole.
//!
//! A protocol error ([`WsError`]) stops inspection for this direction for good: `feed` returns it, and the
//! proxy closes that connection only. Bytes after it are counted as unscanned.
//!
//! ```
//! use picoclaw_traffic_guardian::detect::{Destination, Detector, DetectorOptions, Direction, Location};
//! use picoclaw_traffic_guardian::inspect::WsInspector;
//! let detector = Detector::new(DetectorOptions::default()).unwrap();
//! let dest = Destination::new("gateway.example", 443);
//! let mut up = WsInspector::new(&detector, dest, Direction::Outbound, None, 65536);
//! // Two text frames from the agent (left unmasked here for brevity), each a JSON delta with half a key.
//! up.feed(b"\x81\x14{\"delta\":\"AKIAZ7QW\"}").unwrap();
//! up.feed(b"\x81\x18{\"delta\":\"3ERTY5UIOPLK\"}").unwrap();
//! let found = up.take_detections();
//! assert_eq!((found[0].pattern, &found[0].location), ("aws_access_key", &Location::WebSocket));
//! ```

use super::accumulate::{JsonAccumulator, MAX_KEY_TEXT_BYTES};
use super::stream::PieceScanner;
use super::ws::{DeflateParams, Sender, WsDecoder, WsError, WsMessage, WsStats};
use super::InspectStats;
use crate::detect::{Destination, Detection, Detector, Direction, Location, ScanContext};

/// JSON message bytes joined by one accumulator before it is finished and started afresh; below
/// [`MAX_KEY_TEXT_BYTES`], so no key of a long-lived connection ever reaches that limit.
pub const JOIN_WINDOW_BYTES: usize = 256 << 10;

const _: () = assert!(JOIN_WINDOW_BYTES <= MAX_KEY_TEXT_BYTES);

/// Inspects one direction of one WebSocket connection.
#[derive(Debug)]
pub struct WsInspector {
    decoder: WsDecoder,
    text: Texts,
    found: Vec<Detection>,
    stats: InspectStats,
    finished: bool,
}

/// What the decoded messages go to.
#[derive(Debug)]
struct Texts {
    detector: Detector,
    ctx: ScanContext,
    acc: JsonAccumulator,
    pieces: PieceScanner,
    /// JSON bytes pushed into the current accumulator.
    window: usize,
}

impl WsInspector {
    /// An inspector for the frames travelling `direction` (outbound: the client's, masked; inbound: the
    /// server's), with the permessage-deflate parameters the `101` agreed, if any. `budget` caps each
    /// message (the per-message scan budget); the rest of a longer message is not scanned.
    pub fn new(
        detector: &Detector,
        dest: Destination,
        direction: Direction,
        deflate: Option<&DeflateParams>,
        budget: usize,
    ) -> WsInspector {
        let sender = match direction {
            Direction::Outbound => Sender::Client,
            Direction::Inbound => Sender::Server,
        };
        let ctx = ScanContext::new(direction, dest, Location::WebSocket);
        WsInspector {
            decoder: WsDecoder::new(sender, deflate).with_max_message(budget),
            text: Texts {
                detector: detector.clone(),
                pieces: PieceScanner::new(detector, ctx.clone()),
                ctx,
                acc: JsonAccumulator::new(),
                window: 0,
            },
            found: Vec::new(),
            stats: InspectStats::default(),
            finished: false,
        }
    }

    /// Feeds the next forwarded chunk of this direction. After a protocol error it returns that error on
    /// every call and inspects nothing more.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), WsError> {
        if self.finished || self.decoder.error().is_some() {
            self.stats.unscanned += bytes.len() as u64;
            return self.decoder.error().map_or(Ok(()), Err);
        }
        let WsInspector { decoder, text, found, .. } = self;
        let result = decoder.feed(bytes, &mut |m| text.message(m, found));
        text.pieces.checkpoint(found);
        match result {
            Ok(()) => self.stats.scanned += bytes.len() as u64,
            // Where in the chunk the error sat is not tracked; the whole chunk counts as unscanned.
            Err(_) => self.stats.unscanned += bytes.len() as u64,
        }
        result
    }

    /// The connection closed: pending tool-call arguments are decoded and every scanner is finished.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.text.finish(&mut self.found);
    }

    /// Detections found since the last call.
    pub fn take_detections(&mut self) -> Vec<Detection> {
        std::mem::take(&mut self.found)
    }

    /// Bytes inspected and bytes left uninspected (after a protocol error) so far.
    pub fn stats(&self) -> InspectStats {
        self.stats
    }

    /// The frame decoder's counters (messages, truncations, skipped binary ...).
    pub fn frame_stats(&self) -> WsStats {
        self.decoder.stats()
    }

    /// The protocol error inspection stopped on, if any.
    pub fn error(&self) -> Option<WsError> {
        self.decoder.error()
    }
}

impl Texts {
    fn message(&mut self, m: WsMessage<'_>, found: &mut Vec<Detection>) {
        let trimmed = m.data.trim_ascii_start();
        let looks_json = trimmed.starts_with(b"{") || trimmed.starts_with(b"[");
        if looks_json && m.data.len() <= JOIN_WINDOW_BYTES {
            if self.window + m.data.len() > JOIN_WINDOW_BYTES {
                self.finish(found);
            }
            let Texts { acc, pieces, .. } = self;
            if acc.push_json(m.data, &mut |p| pieces.piece(p, found)) {
                self.window += m.data.len();
                return;
            }
        }
        // Not JSON, truncated JSON, or too big to join: the message alone.
        found.extend(self.detector.scan(self.ctx.clone(), m.data));
    }

    /// Ends the current join window.
    fn finish(&mut self, found: &mut Vec<Detection>) {
        let Texts { acc, pieces, .. } = self;
        acc.finish(&mut |p| pieces.piece(p, found));
        pieces.finish(found);
        self.acc = JsonAccumulator::new();
        self.window = 0;
    }
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
