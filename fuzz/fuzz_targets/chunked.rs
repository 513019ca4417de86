//! Fuzz target for the chunked transfer decoder (`inspect::chunked`).
//!
//! Properties: no panic; the decoded data is never longer than the input; the body bytes consumed never
//! exceed the input; and any split of the input gives the same decoded bytes, the same consumed count, the
//! same error and the same end state as one call.
//! Run: `cargo +nightly fuzz run chunked`. `cargo test` replays `fuzz/corpus/chunked/` and
//! `fuzz/artifacts/chunked/` (each file is the body bytes) in `src/inspect/chunked.rs`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use picoclaw_traffic_guardian::inspect::chunked::{ChunkError, ChunkedDecoder};

#[derive(Debug, Arbitrary)]
struct Case<'a> {
    cuts: Vec<u16>,
    body: &'a [u8],
}

/// What one decoder did with the parts: decoded bytes, body bytes consumed or the first error, and done.
fn run(parts: &[&[u8]]) -> (Vec<u8>, Result<usize, ChunkError>, bool) {
    let mut dec = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut consumed = 0;
    for part in parts {
        match dec.decode(part, &mut |d| data.extend_from_slice(d)) {
            Ok(n) => {
                assert!(n <= part.len());
                // Short only once the body is complete: the rest belongs to the next message.
                assert!(n == part.len() || dec.is_done());
                consumed += n;
            }
            Err(e) => return (data, Err(e), dec.is_done()),
        }
    }
    (data, Ok(consumed), dec.is_done())
}

fuzz_target!(|case: Case<'_>| {
    let body = case.body;
    let whole = run(&[body]);
    assert!(whole.0.len() <= body.len());
    if let Ok(n) = whole.1 {
        assert!(n <= body.len());
    }
    let mut cuts: Vec<usize> = case.cuts.iter().map(|c| usize::from(*c) % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parts = Vec::new();
    let mut at = 0;
    for c in cuts {
        parts.push(&body[at..c]);
        at = c;
    }
    parts.push(&body[at..]);
    assert_eq!(run(&parts), whole);
});
