//! Streamed bodies (`text/event-stream`, NDJSON) to the detector: the decoders' [`TextPiece`]s go to one
//! incremental [`Scanner`] per logical text, so a command a model spells out over hundreds of events is
//! matched as it completes, without rescanning what came before.
//!
//! ```text
//! decoded body ─▶ SseText / NdjsonText ─▶ TextPiece ─▶ PieceScanner ─┬▶ Stream:  scanners[key].feed (joined)
//!                                                                    └▶ Whole, Decoded: detector.scan (alone)
//! ```
//!
//! Only the pieces are scanned, not the raw event lines: every string a provider streams reaches the
//! detector as a piece (JSON escapes undone), and the rest of an event is framing and bookkeeping (ids,
//! model names, roles; see [`super::accumulate::SKIP_NAMES`]).
//!
//! Memory: one scanner per key, and the accumulator keeps at most [`MAX_KEYS`] keys (a further one is
//! handed on as [`PieceKind::Whole`]); [`PieceScanner`] also refuses to open more than `MAX_KEYS + 1`.

use std::collections::BTreeMap;

use super::accumulate::{PieceKind, TextPiece, MAX_KEYS};
use super::ndjson::NdjsonText;
use super::sse::SseText;
use crate::detect::{Detection, Detector, ScanContext, Scanner};

/// Scans text pieces: the pieces of one key through that key's incremental scanner, other pieces alone.
#[derive(Debug)]
pub struct PieceScanner {
    detector: Detector,
    ctx: ScanContext,
    scanners: BTreeMap<String, Scanner>,
}

impl PieceScanner {
    /// A scanner for pieces found in `ctx`.
    pub fn new(detector: &Detector, ctx: ScanContext) -> PieceScanner {
        PieceScanner { detector: detector.clone(), ctx, scanners: BTreeMap::new() }
    }

    /// Scans one piece; detections go to `found` as soon as a match is complete.
    pub fn piece(&mut self, p: TextPiece<'_>, found: &mut Vec<Detection>) {
        match p.kind {
            PieceKind::Stream => {
                if let Some(s) = self.scanners.get_mut(p.key) {
                    s.feed(p.text.as_bytes(), found);
                } else if self.scanners.len() <= MAX_KEYS {
                    let mut s = self.detector.scanner(self.ctx.clone());
                    s.feed(p.text.as_bytes(), found);
                    self.scanners.insert(p.key.to_owned(), s);
                } else {
                    found.extend(self.detector.scan(self.ctx.clone(), p.text.as_bytes()));
                }
            }
            PieceKind::Whole | PieceKind::Decoded => {
                found.extend(self.detector.scan(self.ctx.clone(), p.text.as_bytes()));
            }
        }
    }

    /// Ends every logical text (what a scanner still holds is reported) and starts afresh.
    pub fn finish(&mut self, found: &mut Vec<Detection>) {
        for (_, mut s) in std::mem::take(&mut self.scanners) {
            s.finish(found);
        }
    }

    /// Logical texts open.
    pub fn keys(&self) -> usize {
        self.scanners.len()
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
