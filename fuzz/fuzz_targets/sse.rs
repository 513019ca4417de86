//! Fuzz target for the streaming text decoders: `SseText` (server-sent events) and `NdjsonText` (JSON lines),
//! each event parser plus the JSON accumulator.
//!
//! Properties: no panic; the pieces handed to the detector, the stats and the `[DONE]` flag do not depend
//! on how the body is split; every event stays within `MAX_EVENT_BYTES` (every line within
//! `ndjson::MAX_LINE_BYTES`), and what a parser holds between calls stays within its limits.
//! Run: `cargo +nightly fuzz run sse`. `cargo test` replays `fuzz/corpus/{sse,ndjson}/` and
//! `fuzz/artifacts/{sse,ndjson}/` (each file is the body bytes) in `src/inspect/{sse,ndjson}_tests.rs`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use picoclaw_traffic_guardian::inspect::accumulate::{PieceKind, TextPiece};
use picoclaw_traffic_guardian::inspect::ndjson::{self, NdjsonParser, NdjsonText};
use picoclaw_traffic_guardian::inspect::sse::{SseParser, SseText, MAX_EVENT_BYTES, MAX_LINE_BYTES};

#[derive(Debug, Arbitrary)]
struct Case<'a> {
    ndjson: bool,
    cuts: Vec<u16>,
    body: &'a [u8],
}

type Pieces = Vec<(String, PieceKind, String)>;

fn own(p: TextPiece<'_>) -> (String, PieceKind, String) {
    (p.key.to_owned(), p.kind, p.text.to_owned())
}

fn sse(parts: &[&[u8]]) -> (Pieces, bool, String) {
    let mut t = SseText::new();
    let mut got = Vec::new();
    for part in parts {
        t.feed(part, &mut |p| got.push(own(p)));
    }
    t.finish(&mut |p| got.push(own(p)));
    (got, t.done(), format!("{:?} {:?}", t.sse_stats(), t.accumulator_stats()))
}

fn nd(parts: &[&[u8]]) -> (Pieces, bool, String) {
    let mut t = NdjsonText::new();
    let mut got = Vec::new();
    for part in parts {
        t.feed(part, &mut |p| got.push(own(p)));
    }
    t.finish(&mut |p| got.push(own(p)));
    (got, false, format!("{:?} {:?}", t.ndjson_stats(), t.accumulator_stats()))
}

fuzz_target!(|case: Case<'_>| {
    let body = case.body;
    let mut cuts: Vec<usize> = case.cuts.iter().map(|c| usize::from(*c) % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parts = Vec::new();
    let mut at = 0;
    for c in cuts {
        parts.push(&body[at..c]);
        at = c;
    }
    parts.push(&body[at..]);

    if case.ndjson {
        assert_eq!(nd(&parts), nd(&[body]));
        let mut p = NdjsonParser::new();
        for part in &parts {
            p.feed(part, &mut |line, _| assert!(line.len() <= ndjson::MAX_LINE_BYTES));
            assert!(p.buffered() <= ndjson::MAX_LINE_BYTES);
        }
        p.finish(&mut |line, _| assert!(line.len() <= ndjson::MAX_LINE_BYTES));
    } else {
        assert_eq!(sse(&parts), sse(&[body]));
        let mut p = SseParser::new();
        for part in &parts {
            p.feed(part, &mut |e| assert!(e.data.len() <= MAX_EVENT_BYTES));
            assert!(p.buffered() <= MAX_LINE_BYTES + MAX_EVENT_BYTES);
        }
        p.finish(&mut |e| assert!(e.data.len() <= MAX_EVENT_BYTES));
    }
});
