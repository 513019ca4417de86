//! Normalisation before matching.
//!
//! [`Unescaper`] turns the raw stream into one normalised stream in a single pass: JSON string escapes
//! (`\n`, `\"`, `\/`, `\uXXXX` with surrogate pairs) and percent escapes (`%2F`) are decoded, everything else
//! is copied. It works on any text, JSON or not: an escape that is not well formed is copied as it is. It is
//! streaming: an escape split across chunks is held (at most 12 bytes) until it is complete, so the output
//! never depends on how the input was chunked. Decoding is single-pass on purpose (`%255C` gives `%5C`,
//! not `\`), which keeps the work per byte constant.
//!
//! [`Base64Runs`] finds runs of base64 characters in the normalised stream; the scanner decodes each run
//! once and scans the decoded bytes too (gitleaks' "decoded:base64", at depth one).

use base64::engine::general_purpose::GeneralPurposeConfig;
use base64::engine::{DecodePaddingMode, GeneralPurpose};
use base64::Engine as _;

/// How a stretch of the normalised stream was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    Json,
    Percent,
}

impl Decoded {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Decoded::Json => "json",
            Decoded::Percent => "percent",
        }
    }
}

/// Streaming JSON-string and percent unescaper.
#[derive(Debug, Default)]
pub(crate) struct Unescaper {
    /// An escape that has started but is not complete yet.
    pending: Vec<u8>,
    /// Output offset of the next byte produced.
    out_pos: u64,
}

/// How many input bytes are joined to a held-back escape: more than the longest escape (12 bytes,
/// a surrogate pair `\uD83D\uDE00`), so the joined piece always settles it.
const JOIN: usize = 16;

impl Unescaper {
    /// Decodes `input`, appending to `out` and recording every decoded stretch (absolute output offsets)
    /// in `marks`. With `last`, a partial escape at the end is copied as literal text.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, marks: &mut Vec<(u64, u64, Decoded)>, last: bool) {
        let mut from = 0;
        if !self.pending.is_empty() {
            let k = input.len().min(JOIN);
            let held = self.pending.len();
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(&input[..k]);
            let whole = k == input.len();
            let r = self.run(&joined, out, marks, last && whole);
            if r < joined.len() {
                if whole {
                    self.pending = joined.split_off(r);
                    return;
                }
                // An escape needs at most 12 bytes, so with JOIN input bytes joined the unsettled one
                // starts inside `input`.
                from = r.saturating_sub(held);
            } else {
                from = k;
            }
        }
        let rest = &input[from..];
        let r = self.run(rest, out, marks, last);
        self.pending = rest[r..].to_vec();
    }

    /// Decodes `data` up to an escape that needs more input; returns how many bytes were consumed.
    fn run(&mut self, data: &[u8], out: &mut Vec<u8>, marks: &mut Vec<(u64, u64, Decoded)>, last: bool) -> usize {
        let mut i = 0;
        while i < data.len() {
            let Some(k) = memchr::memchr2(b'\\', b'%', &data[i..]) else {
                out.extend_from_slice(&data[i..]);
                self.out_pos += (data.len() - i) as u64;
                return data.len();
            };
            out.extend_from_slice(&data[i..i + k]);
            self.out_pos += k as u64;
            i += k;
            match decode_escape(&data[i..]) {
                Step::Done(consumed, bytes, kind) => {
                    let n = bytes.len();
                    out.extend_from_slice(&bytes.buf[..n]);
                    marks.push((self.out_pos, self.out_pos + n as u64, kind));
                    self.out_pos += n as u64;
                    i += consumed;
                }
                Step::Literal(consumed) => {
                    out.extend_from_slice(&data[i..i + consumed]);
                    self.out_pos += consumed as u64;
                    i += consumed;
                }
                Step::NeedMore if last => {
                    out.push(data[i]);
                    self.out_pos += 1;
                    i += 1;
                }
                Step::NeedMore => return i,
            }
        }
        data.len()
    }
}

/// Up to four output bytes (one UTF-8 character).
#[derive(Debug, Clone, Copy)]
struct Small {
    buf: [u8; 4],
    len: u8,
}

impl Small {
    fn byte(b: u8) -> Small {
        Small { buf: [b, 0, 0, 0], len: 1 }
    }
    fn char(c: char) -> Small {
        let mut buf = [0u8; 4];
        let len = c.encode_utf8(&mut buf).len() as u8;
        Small { buf, len }
    }
    fn len(&self) -> usize {
        usize::from(self.len)
    }
}

enum Step {
    /// An escape of this many input bytes decoded to these bytes.
    Done(usize, Small, Decoded),
    /// Not an escape: copy this many bytes literally.
    Literal(usize),
    /// Could be an escape; more input is needed to tell.
    NeedMore,
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Reads four hex digits at `s[at..]`.
fn hex4(s: &[u8], at: usize) -> Option<Result<u16, ()>> {
    let mut v: u16 = 0;
    for k in 0..4 {
        let b = *s.get(at + k)?;
        match hex_val(b) {
            Some(h) => v = (v << 4) | u16::from(h),
            None => return Some(Err(())),
        }
    }
    Some(Ok(v))
}

/// Decodes the escape at the start of `s` (which starts with `\` or `%`).
fn decode_escape(s: &[u8]) -> Step {
    match s.first() {
        Some(b'%') => {
            let (Some(a), Some(b)) = (s.get(1), s.get(2)) else {
                // `%` then end of input: only more input can tell, unless what we have is not hex.
                return match s.get(1) {
                    Some(a) if hex_val(*a).is_none() => Step::Literal(1),
                    _ => Step::NeedMore,
                };
            };
            match (hex_val(*a), hex_val(*b)) {
                (Some(h), Some(l)) => Step::Done(3, Small::byte((h << 4) | l), Decoded::Percent),
                _ => Step::Literal(1),
            }
        }
        Some(b'\\') => {
            let Some(c) = s.get(1) else { return Step::NeedMore };
            let simple = match c {
                b'n' => Some(b'\n'),
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                b'b' => Some(0x08),
                b'f' => Some(0x0c),
                b'"' => Some(b'"'),
                b'/' => Some(b'/'),
                b'\\' => Some(b'\\'),
                _ => None,
            };
            if let Some(b) = simple {
                return Step::Done(2, Small::byte(b), Decoded::Json);
            }
            if *c != b'u' {
                return Step::Literal(1);
            }
            let hi = match hex4(s, 2) {
                None => return Step::NeedMore,
                Some(Err(())) => return Step::Literal(1),
                Some(Ok(v)) => v,
            };
            if (0xD800..0xDC00).contains(&hi) {
                // A high surrogate wants `\uDC00`..`\uDFFF` right after it.
                match (s.get(6), s.get(7)) {
                    (None, _) | (Some(b'\\'), None) => return Step::NeedMore,
                    (Some(b'\\'), Some(b'u')) => {}
                    _ => return Step::Literal(1),
                }
                let lo = match hex4(s, 8) {
                    None => return Step::NeedMore,
                    Some(Err(())) => return Step::Literal(1),
                    Some(Ok(v)) => v,
                };
                if !(0xDC00..0xE000).contains(&lo) {
                    return Step::Literal(1);
                }
                let cp = 0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                return match char::from_u32(cp) {
                    Some(ch) => Step::Done(12, Small::char(ch), Decoded::Json),
                    None => Step::Literal(1),
                };
            }
            match char::from_u32(u32::from(hi)) {
                Some(ch) => Step::Done(6, Small::char(ch), Decoded::Json),
                // A lone low surrogate: not text, keep it as written.
                None => Step::Literal(1),
            }
        }
        _ => Step::Literal(1),
    }
}

/// Shortest base64 run that is decoded (24 characters = 18 bytes; shorter runs are words and ids).
pub const MIN_BASE64_RUN: usize = 24;
/// Longest stretch decoded as one unit; a longer run is cut into pieces of this size (a multiple of 4, so
/// the pieces stay aligned). Bounds the memory a scanner holds for a large base64 image.
pub const MAX_BASE64_RUN: usize = 16 * 1024;

/// Characters of the standard and URL-safe base64 alphabets.
pub(crate) fn is_b64(b: u8) -> bool {
    B64_CHARS[usize::from(b)]
}

/// Lookup table behind [`is_b64`]: this test runs on every byte of a run.
static B64_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'-' || b == b'_';
        i += 1;
    }
    t
};

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a run of base64 characters (either alphabet, no padding) starting at its first character.
/// Returns `None` when the run does not decode (e.g. a length of 4k+1).
pub(crate) fn decode_run(run: &[u8]) -> Option<Vec<u8>> {
    let mut std: Vec<u8> = run
        .iter()
        .map(|b| match b {
            b'-' => b'+',
            b'_' => b'/',
            other => *other,
        })
        .collect();
    if std.len() % 4 == 1 {
        std.pop();
    }
    B64.decode(&std).ok()
}
