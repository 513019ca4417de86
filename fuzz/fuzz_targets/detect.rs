//! Fuzz target for the detector: arbitrary bytes, chunking, direction, location and options.
//!
//! Properties checked, not just "no crash": chunked feeding finds exactly what one feed finds, the
//! detection count and snippet sizes are bounded, and no snippet holds the planted known secret.
//! Run: `cargo +nightly fuzz run detect` from the repository root. Inputs worth keeping go to
//! `fuzz/corpus/detect/` or `fuzz/artifacts/detect/`; `cargo test` replays both.
#![no_main]

use arbitrary::Arbitrary;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use picoclaw_traffic_guardian::detect::{
    AllowedUse, Destination, Detection, Detector, DetectorOptions, Direction, KnownSecret, Location, ScanContext,
    SNIPPET_HARD_MAX,
};

#[derive(Debug, Arbitrary)]
struct Case<'a> {
    text: &'a [u8],
    cuts: Vec<u16>,
    inbound: bool,
    location: u8,
    host: u8,
    known: bool,
}

const SECRET: &str = "Zq9vRt7Lp2Wx8Kd4Hs6Jm3Nb";

/// Built once: compiling the rules per input would make the fuzzer a regex-compiler benchmark.
fn detector(known: bool) -> &'static Detector {
    static PLAIN: OnceLock<Detector> = OnceLock::new();
    static KNOWN: OnceLock<Detector> = OnceLock::new();
    if known {
        KNOWN.get_or_init(|| {
            let options = DetectorOptions {
                known_secrets: vec![KnownSecret {
                    value: SECRET.into(),
                    label: "fuzz".into(),
                    allowed: vec![AllowedUse { host: "api.openai.com".into(), header: "authorization".into() }],
                }],
                ..Default::default()
            };
            Detector::new(options).expect("fuzz detector")
        })
    } else {
        PLAIN.get_or_init(|| Detector::new(DetectorOptions::default()).expect("default detector"))
    }
}

fuzz_target!(|case: Case<'_>| {
    let det = detector(case.known);
    let location = match case.location % 4 {
        0 => Location::Body,
        1 => Location::Target,
        2 => Location::Header("authorization".into()),
        _ => Location::WebSocket,
    };
    let host = ["api.openai.com", "paste.example", "api.telegram.org"][usize::from(case.host % 3)];
    let dir = if case.inbound { Direction::Inbound } else { Direction::Outbound };
    let ctx = ScanContext::new(dir, Destination::new(host, 443), location);

    let whole = det.scan(ctx.clone(), case.text);
    let mut cuts: Vec<usize> = case.cuts.iter().map(|c| usize::from(*c) % (case.text.len() + 1)).collect();
    cuts.sort_unstable();
    let mut s = det.scanner(ctx);
    let mut chunked: Vec<Detection> = Vec::new();
    let mut at = 0;
    for c in cuts {
        s.feed(&case.text[at..c], &mut chunked);
        at = c;
    }
    s.feed(&case.text[at..], &mut chunked);
    s.finish(&mut chunked);

    assert_eq!(whole, chunked);
    assert!(whole.len() <= case.text.len() / 4 + 1);
    for d in &whole {
        assert!(d.snippet.chars().count() <= SNIPPET_HARD_MAX + 1);
        // Only a detector that knows the secret can hide it; without it, it is ordinary text.
        assert!(!case.known || !d.snippet.contains(SECRET));
    }
});
