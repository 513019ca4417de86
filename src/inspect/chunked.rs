//! An incremental decoder for HTTP/1.1 `Transfer-Encoding: chunked` (RFC 9112 §7.1), for the offline
//! `scan` command (the proxy gets de-chunked bodies from hyper).
//!
//! It is push-based: [`ChunkedDecoder::decode`] takes whatever bytes arrived, hands the chunk data to a
//! callback as slices of that input (nothing is copied or buffered whole) and keeps only a bounded line
//! buffer between calls. Peer bytes are read through a checked cursor; sizes use checked arithmetic.

use std::fmt;

/// Longest chunk-size line accepted, extensions included (hyper allows far less; 4 KiB is generous).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Longest trailer section accepted, all trailer lines together.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// The chunk-size line is not a hexadecimal size.
    BadSize,
    /// The chunk size does not fit in 64 bits.
    SizeOverflow,
    /// A chunk-size line or the trailer section is longer than its limit.
    TooLong,
    /// Chunk data is not followed by CRLF.
    MissingCrlf,
    /// The input ended before the last chunk and its trailer section.
    Incomplete,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "chunked body: bad chunk size",
            ChunkError::SizeOverflow => "chunked body: chunk size overflows",
            ChunkError::TooLong => "chunked body: chunk-size line or trailers too long",
            ChunkError::MissingCrlf => "chunked body: chunk data not followed by CRLF",
            ChunkError::Incomplete => "chunked body: input ended before the last chunk",
        })
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line (kept in `line`).
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// After chunk data: expecting CR (or a bare LF).
    DataCr,
    /// After chunk data and CR: expecting LF.
    DataLf,
    /// After the last chunk: reading trailer lines until an empty one.
    Trailer,
    /// The body is complete; further bytes belong to the next message.
    Done,
}

/// The decoder state of one chunked body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

/// A cursor over peer bytes: every read is checked, nothing indexes the buffer directly.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<u8> {
        let b = self.buf.get(self.pos).copied()?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let n = n.min(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or_default()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder { state: State::Size, line: Vec::new(), trailer_bytes: 0 }
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, handing chunk data to `data`. Returns how many input bytes belong to the body
    /// (less than `input.len()` only once the body is complete).
    pub fn decode(&mut self, input: &[u8], data: &mut dyn FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut cur = Cursor { buf: input, pos: 0 };
        loop {
            match self.state {
                State::Done => return Ok(cur.pos),
                State::Data(left) => {
                    let want = usize::try_from(left).unwrap_or(usize::MAX);
                    let got = cur.take(want);
                    if got.is_empty() {
                        return Ok(cur.pos);
                    }
                    data(got);
                    let left = left - got.len() as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data(left) };
                }
                State::DataCr => match cur.next() {
                    None => return Ok(cur.pos),
                    Some(b'\r') => self.state = State::DataLf,
                    // A bare LF is tolerated, as most HTTP/1.1 parsers do.
                    Some(b'\n') => self.state = State::Size,
                    Some(_) => return Err(ChunkError::MissingCrlf),
                },
                State::DataLf => match cur.next() {
                    None => return Ok(cur.pos),
                    Some(b'\n') => self.state = State::Size,
                    Some(_) => return Err(ChunkError::MissingCrlf),
                },
                State::Size => {
                    let Some(line) = self.read_line(&mut cur, MAX_CHUNK_LINE)? else {
                        return Ok(cur.pos);
                    };
                    let size = parse_size(&line)?;
                    self.state = if size == 0 { State::Trailer } else { State::Data(size) };
                }
                State::Trailer => {
                    let room = MAX_TRAILERS.saturating_sub(self.trailer_bytes);
                    let Some(line) = self.read_line(&mut cur, room)? else {
                        return Ok(cur.pos);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// The input ended: an error unless the body was complete.
    pub fn finish(&self) -> Result<(), ChunkError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(ChunkError::Incomplete)
        }
    }

    /// Reads up to and including LF into the line buffer; returns the line without CRLF once complete.
    fn read_line(&mut self, cur: &mut Cursor<'_>, max: usize) -> Result<Option<Vec<u8>>, ChunkError> {
        while let Some(b) = cur.next() {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.line.len() >= max {
                return Err(ChunkError::TooLong);
            }
            self.line.push(b);
        }
        Ok(None)
    }
}

/// Parses `1a;ext=1` → 26: hex digits, optional whitespace, optional extensions (ignored).
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = line.get(..end).unwrap_or_default();
    let digits = trim(digits);
    if digits.is_empty() {
        return Err(ChunkError::BadSize);
    }
    let mut size: u64 = 0;
    for &b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(ChunkError::BadSize),
        };
        size = size.checked_mul(16).and_then(|s| s.checked_add(u64::from(d))).ok_or(ChunkError::SizeOverflow)?;
    }
    Ok(size)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";

    fn run(dec: &mut ChunkedDecoder, input: &[u8]) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut out = Vec::new();
        let used = dec.decode(input, &mut |d| out.extend_from_slice(d))?;
        Ok((out, used))
    }

    #[test]
    fn decodes_whole_body_and_stops_at_its_end() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"NEXT");
        let mut dec = ChunkedDecoder::new();
        let (out, used) = run(&mut dec, &input).unwrap();
        assert_eq!(out, b"hello, world");
        assert_eq!(used, BODY.len());
        assert!(dec.finish().is_ok());
    }

    #[test]
    fn split_at_every_byte_gives_the_same_data() {
        for cut in 0..=BODY.len() {
            let mut dec = ChunkedDecoder::new();
            let mut out = Vec::new();
            for part in [&BODY[..cut], &BODY[cut..]] {
                dec.decode(part, &mut |d| out.extend_from_slice(d)).unwrap();
            }
            assert_eq!(out, b"hello, world", "cut at {cut}");
            assert!(dec.is_done());
        }
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        for b in BODY {
            dec.decode(std::slice::from_ref(b), &mut |d| out.extend_from_slice(d)).unwrap();
        }
        assert_eq!(out, b"hello, world");
    }

    #[test]
    fn every_prefix_is_incomplete_never_a_panic() {
        for end in 0..BODY.len() {
            let mut dec = ChunkedDecoder::new();
            run(&mut dec, &BODY[..end]).unwrap();
            assert_eq!(dec.finish(), Err(ChunkError::Incomplete), "prefix of {end} bytes");
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        for bad in [&b"zz\r\n"[..], b"\r\n", b"-1\r\n", b";x\r\n", b"0x10\r\n"] {
            assert_eq!(run(&mut ChunkedDecoder::new(), bad).unwrap_err(), ChunkError::BadSize, "{bad:?}");
        }
        let huge = b"1ffffffffffffffff\r\n";
        assert_eq!(run(&mut ChunkedDecoder::new(), huge).unwrap_err(), ChunkError::SizeOverflow);
        // The largest size that fits is accepted; its data is simply incomplete.
        let mut dec = ChunkedDecoder::new();
        run(&mut dec, b"ffffffffffffffff\r\nab").unwrap();
        assert_eq!(dec.finish(), Err(ChunkError::Incomplete));
    }

    #[test]
    fn chunk_line_limit_exactly_and_one_past() {
        // The limit counts the line with its CR: MAX-1 digits plus CR fit, MAX digits plus CR do not.
        let mut at = vec![b'0'; MAX_CHUNK_LINE - 2];
        at.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        let mut dec = ChunkedDecoder::new();
        assert_eq!(run(&mut dec, &at).unwrap().0, b"hello");
        assert!(dec.is_done());
        let mut past = vec![b'0'; MAX_CHUNK_LINE - 1];
        past.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(run(&mut ChunkedDecoder::new(), &past).unwrap_err(), ChunkError::TooLong);
    }

    #[test]
    fn missing_crlf_after_data_is_an_error() {
        assert_eq!(run(&mut ChunkedDecoder::new(), b"2\r\nabX").unwrap_err(), ChunkError::MissingCrlf);
        assert_eq!(run(&mut ChunkedDecoder::new(), b"2\r\nab\rX").unwrap_err(), ChunkError::MissingCrlf);
    }

    /// Decoded data, body bytes consumed or the first error, and whether the body completed.
    fn run_parts(parts: &[&[u8]]) -> (Vec<u8>, Result<usize, ChunkError>, bool) {
        let mut dec = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut used = 0;
        for part in parts {
            match dec.decode(part, &mut |d| data.extend_from_slice(d)) {
                Ok(n) => used += n,
                Err(e) => return (data, Err(e), dec.is_done()),
            }
        }
        (data, Ok(used), dec.is_done())
    }

    /// The `chunked` fuzz target's property: decoded data never longer than the input, and every split gives
    /// the same data, consumed count, error and end state as one call.
    fn check_arbitrary(body: &[u8], split: usize) {
        let whole = run_parts(&[body]);
        assert!(whole.0.len() <= body.len());
        let parts: Vec<&[u8]> = body.chunks(split.max(1)).collect();
        assert_eq!(run_parts(&parts), whole, "split every {split}");
    }

    #[test]
    fn fuzz_seeds_replay() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        for sub in ["corpus/chunked", "artifacts/chunked"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap();
                for split in [1, 2, 3, 7, 64] {
                    check_arbitrary(&bytes, split);
                }
                n += 1;
            }
        }
        assert!(n > 0, "no fuzz seeds under {}", dir.display());
    }

    #[test]
    fn arbitrary_bytes_are_split_invariant() {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"0".to_vec()),
            Just(b"5".to_vec()),
            Just(b";e=1".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest!(|(pieces in proptest::collection::vec(piece, 0..30), split in 1usize..10)| {
            check_arbitrary(&pieces.concat(), split);
        });
    }

    #[test]
    fn oversize_trailers_are_an_error() {
        let mut body = b"0\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_TRAILERS + 1));
        assert_eq!(run(&mut ChunkedDecoder::new(), &body).unwrap_err(), ChunkError::TooLong);
    }
}
