//! `Content-Encoding` decoding, incremental and bounded.
//!
//! The codings of a message (`gzip`, `x-gzip`, `deflate` as zlib or raw, `br`, `zstd`, stacked in any order
//! up to [`MAX_CODINGS`]) become a chain of push decoders (`Write` adapters) ending in a capped sink. Each
//! [`BodyDecoder::feed`] pushes the bytes as they arrived through the chain and collects what came out.
//!
//! Bounds, so that a decompression bomb costs nothing:
//! - the sink takes at most the caller's room (the rest of the scan budget) and at most
//!   [`MAX_EXPANSION_RATIO`] times the compressed input so far plus [`EXPANSION_ALLOWANCE`]; when either cap
//!   is hit the decoders are dropped, so no more work is done for that message;
//! - every stage has a fixed buffer (32 KiB for flate2 and zstd, [`BROTLI_BUFFER`] for brotli), and zstd
//!   windows are limited to 8 MiB ([`ZSTD_WINDOW_LOG_MAX`], the limit RFC 9659 sets for HTTP).
//!
//! Corrupt or truncated data stops decoding quietly ([`Stop::Corrupt`]); what was decoded before stays
//! scanned. Unknown codings are not decoded: the body is then scanned as it is.
//!
//! zstd uses the `zstd` crate (libzstd): its streaming decoder bounds output per call and limits the window.
//! `ruzstd` 0.8 (the last release for our Rust 1.85) decodes a whole block per call with no cap on the
//! block's output, so one block could expand to gigabytes before control came back.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// Most codings decoded for one message; a longer stack is not decoded (scanned as it is).
pub const MAX_CODINGS: usize = 4;
/// Decoded output may be at most this many times the compressed input fed so far (plus the allowance).
pub const MAX_EXPANSION_RATIO: u64 = 100;
/// Decoded bytes always allowed before the ratio applies (a short, highly repetitive JSON body is normal).
pub const EXPANSION_ALLOWANCE: u64 = 64 * 1024;
/// Largest zstd window accepted, as a power of two (8 MiB, RFC 9659 §3 for HTTP content coding).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Output buffer of the brotli stage.
pub const BROTLI_BUFFER: usize = 16 * 1024;

/// One content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` / `x-gzip` (multi-member streams are decoded in turn).
    Gzip,
    /// `deflate`: zlib as RFC 9110 says, or raw deflate as some servers send; told apart by the first bytes.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// Why a message's codings are not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsupported {
    /// A coding this inspector does not know (named, lowercase).
    Unknown(String),
    /// More than [`MAX_CODINGS`] codings.
    TooMany,
}

/// Parses `Content-Encoding` values (in header order) into the codings applied, in application order.
/// `identity` is ignored. An empty result means the body is not encoded.
pub fn parse_codings<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Coding>, Unsupported> {
    let mut out = Vec::new();
    for value in values {
        for token in value.split(|&b| b == b',') {
            let token = String::from_utf8_lossy(token).trim().to_ascii_lowercase();
            let coding = match token.as_str() {
                "" | "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(Unsupported::Unknown(token)),
            };
            if out.len() == MAX_CODINGS {
                return Err(Unsupported::TooMany);
            }
            out.push(coding);
        }
    }
    Ok(out)
}

/// Why decoding ended before the body did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The caller's room (the scan budget) was used up.
    Budget,
    /// The output passed the expansion ratio: treated as a decompression bomb.
    Ratio,
    /// The compressed data is corrupt (or a stage failed to start).
    Corrupt,
}

#[derive(Debug, Default)]
struct Out {
    buf: Vec<u8>,
    /// Bytes the sink still accepts in this feed.
    room: usize,
    /// The sink refused bytes.
    full: bool,
}

/// The end of the chain: a byte buffer that refuses bytes past its room, which stops the decoders.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<Mutex<Out>>);

impl Sink {
    fn with<T>(&self, f: impl FnOnce(&mut Out) -> T) -> T {
        // A poisoned lock only means a panic elsewhere; the buffer itself is still consistent.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.with(|out| {
            let n = data.len().min(out.room);
            if n == 0 && !data.is_empty() {
                out.full = true;
                return Err(io::Error::other("inspection limit reached"));
            }
            out.buf.extend_from_slice(data.get(..n).unwrap_or_default());
            out.room -= n;
            Ok(n)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Stage = Box<dyn Write + Send>;

/// `deflate` is zlib by the RFC, raw deflate in practice too: wait for two bytes, then pick.
struct DeflateSniff {
    next: Option<Stage>,
    head: Vec<u8>,
    inner: Option<Stage>,
}

impl DeflateSniff {
    fn is_zlib(head: &[u8]) -> bool {
        // RFC 1950: CM = 8, CINFO <= 7, and the 16-bit header is a multiple of 31.
        match head {
            [cmf, flg, ..] => cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
            _ => false,
        }
    }
}

impl Write for DeflateSniff {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(inner) = &mut self.inner {
            return inner.write(data);
        }
        let want = 2 - self.head.len();
        let take = data.get(..want.min(data.len())).unwrap_or_default();
        self.head.extend_from_slice(take);
        if self.head.len() == 2 {
            let next = self.next.take().ok_or_else(|| io::Error::other("deflate stage reused"))?;
            let mut inner: Stage = if DeflateSniff::is_zlib(&self.head) {
                Box::new(flate2::write::ZlibDecoder::new(next))
            } else {
                Box::new(flate2::write::DeflateDecoder::new(next))
            };
            inner.write_all(&self.head)?;
            self.inner = Some(inner);
        }
        Ok(take.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(inner) => inner.flush(),
            None => Ok(()),
        }
    }
}

/// Turns a write that took nothing into an error. brotli's writer retries such a write forever (its own
/// `write_all`), and a stage whose stream has ended or failed takes nothing: without this, `br` over a
/// finished stream spins for good.
struct TakesSome(Stage);

impl Write for TakesSome {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.0.write(data)? {
            0 if !data.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn stage(coding: Coding, next: Stage) -> io::Result<Stage> {
    Ok(match coding {
        Coding::Gzip => Box::new(flate2::write::MultiGzDecoder::new(next)),
        Coding::Deflate => Box::new(DeflateSniff { next: Some(next), head: Vec::new(), inner: None }),
        Coding::Brotli => Box::new(brotli::DecompressorWriter::new(TakesSome(next), BROTLI_BUFFER)),
        Coding::Zstd => {
            let mut raw = zstd::stream::raw::Decoder::new()?;
            raw.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))?;
            Box::new(zstd::stream::write::Decoder::with_decoder(next, raw))
        }
    })
}

/// Decodes one body's content codings as its bytes arrive.
pub struct BodyDecoder {
    chain: Option<Stage>,
    sink: Sink,
    fed: u64,
    produced: u64,
    stop: Option<Stop>,
}

impl std::fmt::Debug for BodyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyDecoder")
            .field("fed", &self.fed)
            .field("produced", &self.produced)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl BodyDecoder {
    /// A decoder for `codings` (in the order they were applied, as [`parse_codings`] returns them).
    pub fn new(codings: &[Coding]) -> BodyDecoder {
        let sink = Sink::default();
        let mut chain: Option<Stage> = Some(Box::new(sink.clone()));
        for &coding in codings {
            chain = chain.and_then(|next| stage(coding, next).ok());
        }
        let stop = if chain.is_none() { Some(Stop::Corrupt) } else { None };
        BodyDecoder { chain, sink, fed: 0, produced: 0, stop }
    }

    /// Pushes `input` through the decoders; appends at most `room` decoded bytes to `out`.
    pub fn feed(&mut self, input: &[u8], room: usize, out: &mut Vec<u8>) {
        let Some(chain) = &mut self.chain else { return };
        self.fed += input.len() as u64;
        let by_ratio = self.fed.saturating_mul(MAX_EXPANSION_RATIO).saturating_add(EXPANSION_ALLOWANCE);
        let by_ratio = usize::try_from(by_ratio.saturating_sub(self.produced)).unwrap_or(usize::MAX);
        let cap = room.min(by_ratio);
        self.sink.with(|o| {
            o.room = cap;
            o.full = false;
        });
        let result = chain.write_all(input).and_then(|()| chain.flush());
        // Room 0 between feeds: whatever a decoder does on drop (flate2 and brotli finish their streams)
        // stops at its first output byte.
        let (decoded, full) = self.sink.with(|o| {
            o.room = 0;
            (std::mem::take(&mut o.buf), o.full)
        });
        self.produced += decoded.len() as u64;
        out.extend_from_slice(&decoded);
        if result.is_err() {
            self.stop = Some(match (full, room <= by_ratio) {
                (true, true) => Stop::Budget,
                (true, false) => Stop::Ratio,
                (false, _) => Stop::Corrupt,
            });
            // Dropping the decoders frees their buffers and makes sure no more work is done.
            self.chain = None;
        }
    }

    /// Why decoding stopped early, if it did.
    pub fn stopped(&self) -> Option<Stop> {
        self.stop
    }

    /// Compressed bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// Decoded bytes produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    pub(crate) fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
        match coding {
            Coding::Gzip => gzip(data),
            Coding::Deflate => zlib(data),
            Coding::Brotli => brotli(data),
            Coding::Zstd => zstd(data),
        }
    }

    fn decode_all(codings: &[Coding], input: &[u8], split: usize) -> (Vec<u8>, Option<Stop>) {
        let mut d = BodyDecoder::new(codings);
        let mut out = Vec::new();
        for part in input.chunks(split.max(1)) {
            d.feed(part, usize::MAX, &mut out);
        }
        (out, d.stopped())
    }

    const TEXT: &[u8] = b"{\"messages\":[{\"role\":\"user\",\"content\":\"hello there, general kenobi\"}]}";

    #[test]
    fn parses_codings() {
        assert_eq!(parse_codings([&b"gzip"[..]]), Ok(vec![Coding::Gzip]));
        assert_eq!(
            parse_codings([&b" X-GZIP , br"[..], b"identity, zstd"]),
            Ok(vec![Coding::Gzip, Coding::Brotli, Coding::Zstd])
        );
        assert_eq!(parse_codings([&b"deflate"[..]]), Ok(vec![Coding::Deflate]));
        assert_eq!(parse_codings([&b"identity"[..]]), Ok(vec![]));
        assert_eq!(parse_codings([&b"compress"[..]]), Err(Unsupported::Unknown("compress".into())));
        assert_eq!(parse_codings([&b"gzip,gzip,gzip,gzip"[..]]).map(|c| c.len()), Ok(4));
        assert_eq!(parse_codings([&b"gzip,gzip,gzip,gzip,gzip"[..]]), Err(Unsupported::TooMany));
    }

    #[test]
    fn each_coding_decodes_whole_and_split_at_every_byte() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            let enc = encode(coding, TEXT);
            for split in 1..=enc.len() {
                assert_eq!(decode_all(&[coding], &enc, split), (TEXT.to_vec(), None), "{coding:?} split {split}");
            }
        }
        let raw = raw_deflate(TEXT);
        assert_eq!(decode_all(&[Coding::Deflate], &raw, 1), (TEXT.to_vec(), None));
        assert_eq!(decode_all(&[Coding::Deflate], &raw, raw.len()), (TEXT.to_vec(), None));
    }

    #[test]
    fn stacked_codings_decode_in_reverse_order() {
        // `Content-Encoding: gzip, br, zstd`: gzip applied first, so zstd is undone first.
        let enc = zstd(&brotli(&gzip(TEXT)));
        let codings = [Coding::Gzip, Coding::Brotli, Coding::Zstd];
        for split in [1, 7, enc.len()] {
            assert_eq!(decode_all(&codings, &enc, split), (TEXT.to_vec(), None));
        }
    }

    #[test]
    fn multi_member_gzip_is_decoded_in_turn() {
        let mut enc = gzip(b"first ");
        enc.extend(gzip(b"second"));
        assert_eq!(decode_all(&[Coding::Gzip], &enc, 3).0, b"first second");
    }

    #[test]
    fn corrupt_data_stops_quietly_keeping_what_was_decoded() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            let (out, stop) = decode_all(&[coding], b"\x1f\x8b\x08\x00 this is not compressed at all, no no", 5);
            assert_eq!(stop, Some(Stop::Corrupt), "{coding:?}");
            assert!(out.len() < 64, "{coding:?}");
        }
        // A good stream followed by garbage keeps the good part.
        let mut enc = gzip(TEXT);
        enc.extend_from_slice(b"garbage garbage");
        let (out, stop) = decode_all(&[Coding::Gzip], &enc, 4);
        assert_eq!(out, TEXT);
        assert_eq!(stop, Some(Stop::Corrupt));
    }

    #[test]
    fn every_prefix_of_a_compressed_body_is_no_panic() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            let enc = encode(coding, TEXT);
            for end in 0..enc.len() {
                let (out, _) = decode_all(&[coding], &enc[..end], 3);
                assert!(TEXT.starts_with(&out), "{coding:?} prefix {end}");
            }
        }
    }

    #[test]
    fn room_caps_the_output_exactly() {
        let enc = gzip(TEXT);
        let mut d = BodyDecoder::new(&[Coding::Gzip]);
        let mut out = Vec::new();
        d.feed(&enc, 10, &mut out);
        assert_eq!(out, &TEXT[..10]);
        assert_eq!(d.stopped(), Some(Stop::Budget));
        d.feed(&enc, 100, &mut out);
        assert_eq!(out.len(), 10, "nothing after the stop");
        // Room exactly the decoded size: all of it, no stop.
        let mut d = BodyDecoder::new(&[Coding::Gzip]);
        let mut out = Vec::new();
        d.feed(&enc, TEXT.len(), &mut out);
        assert_eq!((out.as_slice(), d.stopped()), (TEXT, None));
    }

    /// A gzip stream that decodes to `mib` MiB of zeros: one member of 1 MiB (about 1 KiB compressed),
    /// repeated, so building it stays cheap in a debug build.
    pub(crate) fn gzip_zeros_mib(mib: usize) -> Vec<u8> {
        gzip(&vec![0u8; 1 << 20]).repeat(mib)
    }

    #[test]
    fn bombs_are_bounded_by_room_and_ratio() {
        // 1 GiB of zeros in about 1 MiB of gzip.
        let bomb = gzip_zeros_mib(1024);
        assert!(bomb.len() < 2 << 20);
        let mut d = BodyDecoder::new(&[Coding::Gzip]);
        let mut out = Vec::new();
        for part in bomb.chunks(64 * 1024) {
            d.feed(part, 16 << 20, &mut out);
        }
        // 64 KiB of input allows 6.4 MiB + allowance before the ratio trips.
        assert_eq!(d.stopped(), Some(Stop::Ratio));
        assert!(d.produced() <= 64 * 1024 * MAX_EXPANSION_RATIO + EXPANSION_ALLOWANCE);
        assert!(out.len() as u64 == d.produced());

        let mut d = BodyDecoder::new(&[Coding::Gzip]);
        let mut out = Vec::new();
        d.feed(&bomb, 65536, &mut out);
        assert_eq!((out.len(), d.stopped()), (65536, Some(Stop::Budget)));
    }

    #[test]
    fn brotli_and_zstd_bombs_are_bounded_too() {
        // zstd: 1 GiB of zeros as 1024 concatenated frames of 1 MiB each; brotli: 64 MiB in one stream.
        let zbomb = zstd(&vec![0u8; 1 << 20]).repeat(1024);
        let bbomb = brotli(&vec![0u8; 64 << 20]);
        for (coding, bomb) in [(Coding::Zstd, zbomb), (Coding::Brotli, bbomb)] {
            let mut d = BodyDecoder::new(&[coding]);
            let mut out = Vec::new();
            for part in bomb.chunks(1024) {
                d.feed(part, 16 << 20, &mut out);
            }
            assert_eq!(d.stopped(), Some(Stop::Ratio), "{coding:?}");
            assert!(d.produced() <= d.fed() * MAX_EXPANSION_RATIO + EXPANSION_ALLOWANCE, "{coding:?}");
        }
    }

    /// The `decode` fuzz target's bounds: each feed appends at most its room, the total stays within the
    /// ratio, nothing comes after a stop, and an encoded body decodes to a prefix of the original.
    pub(crate) fn check_arbitrary(
        codings: &[Coding],
        input: &[u8],
        split: usize,
        room: usize,
        original: Option<&[u8]>,
    ) {
        let mut d = BodyDecoder::new(codings);
        let mut out = Vec::new();
        for part in input.chunks(split.max(1)) {
            let (before, stopped) = (out.len(), d.stopped().is_some());
            d.feed(part, room, &mut out);
            assert!(out.len() - before <= room);
            assert!(!stopped || out.len() == before, "output after a stop");
        }
        assert_eq!(d.produced(), out.len() as u64);
        assert!(d.produced() <= d.fed() * MAX_EXPANSION_RATIO + EXPANSION_ALLOWANCE);
        if let Some(original) = original {
            assert!(original.starts_with(&out), "{codings:?}: not a prefix of the original");
        }
    }

    const ALL: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];

    #[test]
    fn fuzz_seeds_replay() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        for sub in ["corpus/decode", "artifacts/decode"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap();
                for coding in ALL {
                    for (split, room) in [(1, 7), (3, usize::MAX), (4096, 100), (usize::MAX, 1 << 20)] {
                        check_arbitrary(&[coding], &bytes, split, room, None);
                        // As a body too: encoded with the coding and decoded back.
                        check_arbitrary(&[coding], &encode(coding, &bytes), split, room, Some(&bytes));
                    }
                }
                check_arbitrary(&ALL, &bytes, 5, 1000, None);
                n += 1;
            }
        }
        assert!(n > 0, "no fuzz seeds under {}", dir.display());
    }

    /// Regression (fuzz `decode`, `fuzz/artifacts/decode/hang-raw`): brotli's writer retries a write that
    /// took nothing forever, and a stage whose stream has ended (or failed) takes nothing. `br` over `br`
    /// with bytes after the inner stream spun one proxy thread at full CPU for good.
    #[test]
    fn stage_that_takes_nothing_stops_decoding_instead_of_spinning() {
        let mut inner = brotli(b"hello");
        inner.extend_from_slice(b"trailing bytes after the end of the stream");
        let outer = brotli(&inner);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(decode_all(&[Coding::Brotli, Coding::Brotli], &outer, 7)).unwrap());
        let (out, stop) = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("decoding must not hang");
        assert_eq!(out, b"hello");
        assert_eq!(stop, Some(Stop::Corrupt));
    }

    #[test]
    fn zstd_window_over_the_limit_is_refused() {
        // A frame header declaring a 16 MiB window (Window_Descriptor exponent 14): not decoded.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 14 << 3];
        frame.extend_from_slice(&[0x01, 0x00, 0x00]); // last raw block, 0 bytes
        let (out, stop) = decode_all(&[Coding::Zstd], &frame, 1);
        assert!(out.is_empty());
        assert_eq!(stop, Some(Stop::Corrupt));
        // The same frame with an 8 MiB window decodes (to nothing).
        frame[5] = 13 << 3;
        assert_eq!(decode_all(&[Coding::Zstd], &frame, 1), (Vec::new(), None));
    }
}
