//! The streaming scanner: raw chunks → normalised stream → windowed matching, plus a base64 lane.
//!
//! Work per byte is bounded: each normalised byte is matched at most `1 + LAG / STEP` times (the window
//! keeps `LAG` bytes of overlap and is matched every `STEP` new bytes), and a base64 run is decoded once.
//! Detections are released in stream order (by their position in the normalised stream), and a value is
//! reported once per scanner, so the output never depends on how the input was chunked.

use std::collections::HashSet;

use super::engine::{Cand, LaneState, Window};
use super::normalize::{decode_run, is_b64, Decoded, Unescaper, MAX_BASE64_RUN, MIN_BASE64_RUN};
use super::redact::CONTEXT_MAX;
use super::{Detection, Detector, ScanContext};

/// New normalised bytes gathered before the window is matched again.
const STEP: usize = 32 * 1024;
/// Bytes kept before the accept limit: context for `\b` and for snippets.
const KEEP_BEFORE: u64 = CONTEXT_MAX as u64 + 8;

/// Scans one stream of bytes fed in chunks; a match split across chunks is found.
#[derive(Debug)]
pub struct Scanner {
    det: Detector,
    ctx: ScanContext,
    budget: Option<u64>,
    scanned: u64,
    skipped: u64,
    finished: bool,
    unescaper: Unescaper,
    /// The normalised stream from `base` on.
    win: Vec<u8>,
    base: u64,
    /// Decoded stretches inside `win`.
    marks: Vec<(u64, u64, Decoded)>,
    lane: LaneState,
    /// Normalised offset up to which matches have been accepted.
    limit: u64,
    /// End of the window at the last match pass.
    matched_to: u64,
    /// Overlap kept past `limit`.
    lag: u64,
    /// The open base64 run: its start offset and the characters gathered so far.
    run: Option<(u64, Vec<u8>)>,
    pending: Vec<Cand>,
    seen: HashSet<(&'static str, String)>,
}

impl Scanner {
    pub(crate) fn new(det: Detector, ctx: ScanContext) -> Scanner {
        let rules = det.inner.engine.rules.len();
        let lag = (det.inner.engine.max_len + CONTEXT_MAX + 16) as u64;
        Scanner {
            det,
            ctx,
            budget: None,
            scanned: 0,
            skipped: 0,
            finished: false,
            unescaper: Unescaper::default(),
            win: Vec::new(),
            base: 0,
            marks: Vec::new(),
            lane: LaneState::new(rules),
            limit: 0,
            matched_to: 0,
            lag,
            run: None,
            pending: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Caps the raw bytes this scanner looks at; bytes fed past the cap are counted by [`Scanner::skipped`]
    /// and ignored, as if the stream had ended there.
    pub fn with_budget(mut self, max_bytes: u64) -> Scanner {
        self.budget = Some(max_bytes);
        self
    }

    /// Feeds the next chunk; detections found so far are pushed to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Detection>) {
        if self.finished {
            self.skipped += chunk.len() as u64;
            return;
        }
        let room = self.budget.map_or(chunk.len() as u64, |b| b.saturating_sub(self.scanned));
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
        self.skipped += (chunk.len() - take) as u64;
        self.scanned += take as u64;
        if take == 0 {
            return;
        }
        let from = self.win.len();
        self.unescaper.feed(&chunk[..take], &mut self.win, &mut self.marks, false);
        self.track_runs(from, false);
        if self.base + self.win.len() as u64 >= self.matched_to + STEP as u64 {
            self.match_window(false);
        }
        self.release(false, out);
    }

    /// Ends the stream; anything still pending is pushed to `out`. Later feeds are ignored.
    pub fn finish(&mut self, out: &mut Vec<Detection>) {
        if self.finished {
            return;
        }
        let from = self.win.len();
        self.unescaper.feed(&[], &mut self.win, &mut self.marks, true);
        self.track_runs(from, true);
        self.match_window(true);
        self.release(true, out);
        self.finished = true;
        self.win = Vec::new();
        self.marks = Vec::new();
    }

    /// Raw bytes scanned so far (within the budget).
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Raw bytes fed past the budget (or after `finish`) and not scanned.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Matches the window; unless `last`, keeps only the overlap afterwards.
    fn match_window(&mut self, last: bool) {
        let end = self.base + self.win.len() as u64;
        let limit = if last { u64::MAX } else { end.saturating_sub(self.lag) };
        let engine = &self.det.inner.engine;
        let w = Window { bytes: &self.win, base: self.base, limit, marks: &self.marks, base64_at: None, at_end: last };
        engine.scan_window(&mut self.lane, &w, &self.ctx, &mut self.pending);
        self.matched_to = end;
        self.limit = limit;
        if !last {
            let keep_from = limit.saturating_sub(KEEP_BEFORE);
            if keep_from > self.base {
                let cut = usize::try_from(keep_from - self.base).unwrap_or(self.win.len()).min(self.win.len());
                self.win.drain(..cut);
                self.base += cut as u64;
                let base = self.base;
                self.marks.retain(|m| m.1 > base);
            }
        }
    }

    /// Follows base64 runs through the normalised bytes `win[from..]`, decoding each closed run.
    ///
    /// Only runs of at least `MIN_BASE64_RUN` characters matter, and any such run starting in
    /// `[i, i + MIN)` covers byte `i + MIN - 1`; so when that byte is not base64 the search jumps `MIN`
    /// bytes ahead. Ordinary text (short words) is skimmed, not walked.
    fn track_runs(&mut self, from: usize, last: bool) {
        let len = self.win.len();
        let mut i = from;
        // First extend a run left open by the previous piece.
        if let Some((_, buf)) = &mut self.run {
            let end = self.win[i..].iter().position(|b| !is_b64(*b)).map_or(len, |k| i + k);
            buf.extend_from_slice(&self.win[i..end]);
            self.cut_full_segments();
            i = end;
            if end < len {
                self.close_run();
            }
        }
        // Invariant from here on: no run is open, and the byte before `i` (if any) is not base64.
        while self.run.is_none() && i < len {
            let probe = i + MIN_BASE64_RUN - 1;
            if probe >= len {
                // Fewer than MIN bytes left: only a run reaching the end can still grow long enough.
                let start = self.win[i..].iter().rposition(|b| !is_b64(*b)).map_or(i, |k| i + k + 1);
                if start < len {
                    self.run = Some((self.base + start as u64, self.win[start..].to_vec()));
                }
                break;
            }
            if !is_b64(self.win[probe]) {
                i = probe + 1;
                continue;
            }
            let start = self.win[i..probe].iter().rposition(|b| !is_b64(*b)).map_or(i, |k| i + k + 1);
            let end = self.win[probe..].iter().position(|b| !is_b64(*b)).map_or(len, |k| probe + k);
            if end == len {
                self.run = Some((self.base + start as u64, self.win[start..].to_vec()));
                self.cut_full_segments();
                break;
            }
            if end - start >= MIN_BASE64_RUN {
                self.decode_segments(self.base + start as u64, start, end);
            }
            i = end + 1;
        }
        if last {
            self.close_run();
        }
    }

    /// Decodes full `MAX_BASE64_RUN` pieces of the open run as soon as they are complete.
    fn cut_full_segments(&mut self) {
        while let Some((start, buf)) = &mut self.run {
            if buf.len() < MAX_BASE64_RUN {
                return;
            }
            let rest = buf.split_off(MAX_BASE64_RUN);
            let seg = std::mem::replace(buf, rest);
            let at = *start;
            *start += MAX_BASE64_RUN as u64;
            self.scan_base64(at, &seg);
        }
    }

    fn close_run(&mut self) {
        if let Some((start, buf)) = self.run.take() {
            if buf.len() >= MIN_BASE64_RUN {
                self.scan_base64(start, &buf);
            }
        }
    }

    /// A run entirely inside `win[i..end]`, cut into `MAX_BASE64_RUN` pieces.
    fn decode_segments(&mut self, start: u64, i: usize, end: usize) {
        let mut s = i;
        while s < end {
            let e = (s + MAX_BASE64_RUN).min(end);
            if e - s >= MIN_BASE64_RUN {
                let seg = self.win[s..e].to_vec();
                self.scan_base64(start + (s - i) as u64, &seg);
            }
            s = e;
        }
    }

    /// Decodes one base64 piece and matches the decoded bytes.
    fn scan_base64(&mut self, at: u64, seg: &[u8]) {
        // Hex digests and plain identifiers are not base64 anyone wrote; decoding them only costs time.
        let upper = seg.iter().any(u8::is_ascii_uppercase);
        let lower = seg.iter().any(u8::is_ascii_lowercase);
        if !(upper && lower) {
            return;
        }
        let Some(decoded) = decode_run(seg) else { return };
        let engine = &self.det.inner.engine;
        let mut lane = LaneState::new(engine.rules.len());
        let w = Window { bytes: &decoded, base: 0, limit: u64::MAX, marks: &[], base64_at: Some(at), at_end: true };
        engine.scan_window(&mut lane, &w, &self.ctx, &mut self.pending);
    }

    /// Pushes the pending detections that no later match can precede, in stream order, once per value.
    fn release(&mut self, all: bool, out: &mut Vec<Detection>) {
        if self.pending.is_empty() {
            return;
        }
        let frontier = if all {
            u64::MAX
        } else {
            // An open base64 run may still yield detections anchored at its start.
            self.run.as_ref().map_or(self.limit, |(start, _)| self.limit.min(*start))
        };
        self.pending.sort_by_key(Cand::key);
        let n = self.pending.partition_point(|c| c.anchor < frontier);
        for c in self.pending.drain(..n) {
            if self.seen.insert((c.det.pattern, c.det.fingerprint.clone())) {
                out.push(c.det);
            }
        }
    }
}
