//! Fuzz target for content decoding with the bomb guard (`inspect::decode::BodyDecoder`).
//!
//! An input is a stack of up to six codings (more than `MAX_CODINGS`, which `parse_codings` would refuse,
//! to check the decoder copes anyway), a body cut into feeds, and a room (budget left) per feed. The body
//! is either decoded as it is (corrupt data, truncated streams, hand-made bombs) or first encoded with the
//! stack, so the real decompressors run deep.
//! Properties: no panic; each feed appends at most its room; the total output stays within
//! `MAX_EXPANSION_RATIO` times the input fed plus `EXPANSION_ALLOWANCE`; once stopped, nothing more comes
//! out; and an encoded body decodes to a prefix of the original (all of it when decoding did not stop).
//! Run: `cargo +nightly fuzz run decode`. `cargo test` replays `fuzz/corpus/decode/` and
//! `fuzz/artifacts/decode/` (each file is a body, decoded under every coding) in `src/inspect/decode.rs`.
#![no_main]

use std::io::Write;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use picoclaw_traffic_guardian::inspect::decode::{BodyDecoder, Coding, EXPANSION_ALLOWANCE, MAX_EXPANSION_RATIO};

#[derive(Debug, Clone, Copy, Arbitrary)]
enum C {
    Gzip,
    Zlib,
    RawDeflate,
    Brotli,
    Zstd,
}

impl C {
    fn coding(self) -> Coding {
        match self {
            C::Gzip => Coding::Gzip,
            C::Zlib | C::RawDeflate => Coding::Deflate,
            C::Brotli => Coding::Brotli,
            C::Zstd => Coding::Zstd,
        }
    }

    fn encode(self, data: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::fast();
        match self {
            C::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            C::Zlib => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            C::RawDeflate => {
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            C::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 1, 16);
                    w.write_all(data).unwrap();
                }
                out
            }
            C::Zstd => zstd::bulk::compress(data, 1).unwrap(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Case<'a> {
    stack: Vec<C>,
    encode: bool,
    /// (cut point, room for the feed that ends there)
    feeds: Vec<(u16, u32)>,
    last_room: u32,
    body: &'a [u8],
}

fuzz_target!(|case: Case<'_>| {
    let stack: Vec<C> = case.stack.iter().copied().take(6).collect();
    let codings: Vec<Coding> = stack.iter().map(|c| c.coding()).collect();
    let input =
        if case.encode { stack.iter().fold(case.body.to_vec(), |data, c| c.encode(&data)) } else { case.body.to_vec() };
    let mut feeds: Vec<(usize, usize)> =
        case.feeds.iter().map(|&(c, r)| (usize::from(c) % (input.len() + 1), r as usize)).collect();
    feeds.sort_unstable_by_key(|f| f.0);
    feeds.push((input.len(), case.last_room as usize));

    let mut dec = BodyDecoder::new(&codings);
    let mut out = Vec::new();
    let mut at = 0;
    let mut fed = 0u64;
    let mut exhausted = false;
    for (cut, room) in feeds {
        let before = out.len();
        let was_stopped = dec.stopped().is_some();
        dec.feed(&input[at..cut], room, &mut out);
        let made = out.len() - before;
        assert!(made <= room, "feed made {made} > room {room}");
        if was_stopped {
            assert_eq!(made, 0, "output after a stop");
        } else {
            fed += (cut - at) as u64;
        }
        // The room given was used up: later output would be a budget question, not the round trip's.
        exhausted |= made == room;
        at = cut;
    }
    assert_eq!(dec.produced(), out.len() as u64);
    assert_eq!(dec.fed(), fed);
    assert!(out.len() as u64 <= dec.fed() * MAX_EXPANSION_RATIO + EXPANSION_ALLOWANCE);
    if case.encode && !codings.is_empty() {
        assert!(case.body.starts_with(&out), "decoded bytes are not a prefix of the original");
        if dec.stopped().is_none() && !exhausted {
            assert_eq!(out.len(), case.body.len(), "{:?}", dec);
        }
    }
});
