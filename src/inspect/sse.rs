//! Server-sent events (`text/event-stream`): an incremental event parser, and [`SseText`], which routes the
//! events' JSON through the [`JsonAccumulator`] so that a model's streamed reply reaches the detector as
//! joined logical texts.
//!
//! # Flow
//! Body bytes (after transfer and content decoding) go to [`SseParser::feed`] in chunks of any size. Lines
//! end in LF, CRLF or a lone CR (a CRLF split across two chunks counts once). A line starting with `:` is a
//! comment; `data:` lines are joined with `\n`; `event:`, `id:` and `retry:` are kept; an empty line
//! dispatches the event as an [`SseEvent`]. [`SseParser::finish`] dispatches an event still open at the end
//! of the body: a spec client would drop it, but clients that act on each `data:` line as it arrives (many
//! SDKs do) have already seen it, so the monitor must too.
//!
//! [`SseText`] hands each event's data to the accumulator: JSON data is walked by path, other data (plain
//! text tokens) is joined under the key [`DATA_KEY`], and `[DONE]` completes pending tool-call arguments.
//!
//! # Limits
//! A line is kept up to [`MAX_LINE_BYTES`] and an event's data up to [`MAX_EVENT_BYTES`]; the rest is
//! dropped, the event is marked `truncated` and counted. Nothing else is buffered.
//!
//! ```
//! use picoclaw_traffic_guardian::inspect::sse::SseText;
//! use picoclaw_traffic_guardian::inspect::accumulate::PieceKind;
//! let mut sse = SseText::new();
//! let mut text = String::new();
//! let mut sink = |p: picoclaw_traffic_guardian::inspect::accumulate::TextPiece<'_>| {
//!     if p.kind == PieceKind::Stream { text.push_str(p.text) }
//! };
//! sse.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"rm -\"}}]}\r\n\r\nda", &mut sink);
//! sse.feed(b"ta: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"rf /\"}}]}\n\ndata: [DONE]\n\n", &mut sink);
//! sse.finish(&mut sink);
//! assert_eq!(text, "rm -rf /");
//! ```

use super::accumulate::{JsonAccumulator, PieceKind, TextPiece};

/// Most data bytes kept per event; the rest is dropped and the event marked truncated. LLM deltas are
/// well under 1 KiB; only end-of-response summaries come near this, and they repeat the deltas.
pub const MAX_EVENT_BYTES: usize = 128 << 10;
/// Longest line kept (an event's worth of data plus its field name); the rest of a longer line is dropped
/// and its event marked truncated.
pub const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES + 64;
/// The UTF-8 byte order mark a stream may start with.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Longest `event:` type kept.
const MAX_EVENT_TYPE: usize = 128;
/// The key under which data that is not JSON is joined.
pub const DATA_KEY: &str = "data";

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` type, `message` when none was given.
    pub event: &'a str,
    /// The data lines joined with `\n` (without the last line end).
    pub data: &'a [u8],
    /// The last event id seen so far, if any.
    pub id: Option<&'a str>,
    /// Some of the event's lines or data were dropped over the limits.
    pub truncated: bool,
    /// The body ended before the blank line that would have dispatched this event.
    pub unterminated: bool,
}

impl SseEvent<'_> {
    /// Whether this is the OpenAI-style end marker `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim_ascii() == b"[DONE]"
    }
}

/// Counters of one parser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SseStats {
    /// Events dispatched.
    pub events: u64,
    /// Comment lines.
    pub comments: u64,
    /// Events dispatched with `truncated` set.
    pub truncated_events: u64,
    /// Bytes dropped over the limits.
    pub dropped: u64,
}

/// Incremental `text/event-stream` parser. One per body.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    line_truncated: bool,
    /// The previous chunk ended in CR: an LF at the start of the next one ends nothing.
    after_cr: bool,
    /// Still on the first line, where a UTF-8 byte order mark is skipped.
    at_start: bool,
    data: Vec<u8>,
    has_data: bool,
    event: String,
    id: Option<String>,
    retry: Option<u64>,
    truncated: bool,
    stats: SseStats,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new()
    }
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser {
            line: Vec::new(),
            line_truncated: false,
            after_cr: false,
            at_start: true,
            data: Vec::new(),
            has_data: false,
            event: String::new(),
            id: None,
            retry: None,
            truncated: false,
            stats: SseStats::default(),
        }
    }

    /// Feeds the next chunk; each event completed by it goes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(SseEvent<'_>)) {
        self.feed_lines(chunk, out);
    }

    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut impl FnMut(SseEvent<'_>)) {
        if chunk.is_empty() {
            // An empty chunk (a body frame may be empty) says nothing about an LF after a CR.
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (part, rest) = chunk.split_at(end);
            self.push_line_bytes(part);
            let (eol, mut rest) = rest.split_at(1);
            if eol == b"\r" {
                match rest.strip_prefix(b"\n") {
                    Some(after) => rest = after,
                    None if rest.is_empty() => self.after_cr = true,
                    None => {}
                }
            }
            self.end_line(out);
            chunk = rest;
        }
        self.push_line_bytes(chunk);
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
        let (keep, drop) = bytes.split_at(bytes.len().min(room));
        self.line.extend_from_slice(keep);
        if !drop.is_empty() {
            self.line_truncated = true;
            self.stats.dropped += drop.len() as u64;
        }
    }

    fn end_line(&mut self, out: &mut impl FnMut(SseEvent<'_>)) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.line_truncated) {
            self.truncated = true;
        }
        // The whole first line is held here whatever the chunking, so a byte order mark split across
        // chunks is still recognised.
        let field = if std::mem::take(&mut self.at_start) { line.strip_prefix(BOM).unwrap_or(&line) } else { &line };
        self.field(field, out);
        // Keep the allocation for the next line, unless a long line made it big.
        if line.capacity() <= 4096 {
            self.line = line;
            self.line.clear();
        }
    }

    fn field(&mut self, line: &[u8], out: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            self.dispatch(false, out);
            return;
        }
        if line.starts_with(b":") {
            self.stats.comments += 1;
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (name, rest) = line.split_at(colon);
                let value = rest.get(1..).unwrap_or_default();
                (name, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.push_data(b"\n");
                }
                self.has_data = true;
                self.push_data(value);
            }
            b"event" => {
                let value = String::from_utf8_lossy(value);
                self.event = super::accumulate::floor_char_boundary(&value, MAX_EVENT_TYPE).to_owned();
            }
            // An id holding NUL is ignored (the spec's rule).
            b"id" if !value.contains(&0) => self.id = Some(String::from_utf8_lossy(value).into_owned()),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }

    fn push_data(&mut self, bytes: &[u8]) {
        let room = MAX_EVENT_BYTES.saturating_sub(self.data.len());
        let (keep, drop) = bytes.split_at(bytes.len().min(room));
        self.data.extend_from_slice(keep);
        if !drop.is_empty() {
            self.truncated = true;
            self.stats.dropped += drop.len() as u64;
        }
    }

    fn dispatch(&mut self, unterminated: bool, out: &mut impl FnMut(SseEvent<'_>)) {
        if self.has_data {
            let event = if self.event.is_empty() { "message" } else { &self.event };
            self.stats.events += 1;
            if self.truncated {
                self.stats.truncated_events += 1;
            }
            out(SseEvent { event, data: &self.data, id: self.id.as_deref(), truncated: self.truncated, unterminated });
        }
        self.has_data = false;
        self.truncated = false;
        self.event.clear();
        if self.data.capacity() > 4096 {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
    }

    /// The body ended: a last line without its line end counts, and an event still open is dispatched
    /// with `unterminated` set.
    pub fn finish(&mut self, out: &mut impl FnMut(SseEvent<'_>)) {
        if !self.line.is_empty() || self.line_truncated {
            self.end_line(out);
        }
        self.dispatch(true, out);
        self.after_cr = false;
    }

    /// The last `retry:` value (milliseconds), if any.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id, if any.
    pub fn last_event_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Counters so far.
    pub fn stats(&self) -> SseStats {
        self.stats
    }

    /// Bytes held between calls (the open line and the open event's data); bounded by the limits.
    pub fn buffered(&self) -> usize {
        self.line.len() + self.data.len()
    }
}

/// An SSE body turned into text pieces: [`SseParser`] + [`JsonAccumulator`]. One per body.
#[derive(Debug, Default)]
pub struct SseText {
    parser: SseParser,
    acc: JsonAccumulator,
    done: bool,
}

impl SseText {
    /// A decoder at the start of a body.
    pub fn new() -> SseText {
        SseText::default()
    }

    /// Feeds the next body chunk; text pieces go to `out` as events complete.
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(TextPiece<'_>)) {
        let SseText { parser, acc, done } = self;
        parser.feed(chunk, &mut |ev| route(acc, done, ev, out));
    }

    /// The body ended: the open event is dispatched and pending tool-call arguments are decoded.
    pub fn finish(&mut self, out: &mut impl FnMut(TextPiece<'_>)) {
        let SseText { parser, acc, done } = self;
        parser.finish(&mut |ev| route(acc, done, ev, out));
        acc.finish(out);
    }

    /// Whether `data: [DONE]` was seen.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The event parser's counters.
    pub fn sse_stats(&self) -> SseStats {
        self.parser.stats()
    }

    /// The accumulator's counters.
    pub fn accumulator_stats(&self) -> super::accumulate::AccumulatorStats {
        self.acc.stats()
    }
}

fn route(acc: &mut JsonAccumulator, done: &mut bool, ev: SseEvent<'_>, out: &mut impl FnMut(TextPiece<'_>)) {
    if ev.is_done() {
        *done = true;
        acc.finish(out);
        return;
    }
    let trimmed = ev.data.trim_ascii_start();
    let looks_json = trimmed.starts_with(b"{") || trimmed.starts_with(b"[");
    if looks_json && acc.push_json(ev.data, out) {
        return;
    }
    let text = String::from_utf8_lossy(ev.data);
    if looks_json {
        // Broken or truncated JSON: its text is still scanned, as a whole.
        out(TextPiece { key: DATA_KEY, kind: PieceKind::Whole, text: &text });
    } else {
        acc.push_stream(DATA_KEY, &text, out);
    }
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
