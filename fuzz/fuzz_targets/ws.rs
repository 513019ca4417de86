//! Fuzz target for the WebSocket frame decoder (`inspect::ws::WsDecoder`), both senders, with and without
//! permessage-deflate (either context-takeover setting) and with message caps from 0 to the default.
//!
//! Properties: no panic; what the decoder holds stays within the message cap plus one control frame; every
//! message handed on is non-empty and within the cap; the error reported matches `error()`; and the
//! messages and the error do not depend on how the bytes are split, except where a compressed message
//! hit the inflate ratio (where the ratio cuts depends on how much had arrived: the documented exception).
//! The input is raw frames, or payloads the target frames itself (masked for the client, compressed when
//! deflate is on) so that the fuzzer reaches reassembly and inflating without learning the framing.
//! Run: `cargo +nightly fuzz run ws`. `cargo test` replays `fuzz/corpus/ws/` and `fuzz/artifacts/ws/` in
//! `src/inspect/ws_tests.rs` (first byte: options, the rest: frames).
#![no_main]

use std::io::Write;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use picoclaw_traffic_guardian::inspect::ws::{
    DeflateParams, MessageKind, Sender, WsDecoder, WsError, DEFAULT_MAX_MESSAGE_BYTES, MAX_CONTROL_PAYLOAD,
};

#[derive(Debug, Arbitrary)]
struct Frame<'a> {
    fin: bool,
    opcode: u8,
    rsv1: bool,
    payload: &'a [u8],
}

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    Raw(&'a [u8]),
    Frames(Vec<Frame<'a>>),
}

#[derive(Debug, Arbitrary)]
struct Case<'a> {
    server: bool,
    deflate: Option<(bool, bool)>,
    cap: u8,
    cuts: Vec<u16>,
    input: Input<'a>,
}

type Messages = Vec<(MessageKind, Vec<u8>, bool, bool)>;

fn run(dec: &mut WsDecoder, parts: &[&[u8]]) -> (Messages, Result<(), WsError>) {
    let mut got = Vec::new();
    for part in parts {
        let r = dec.feed(part, &mut |m| got.push((m.kind, m.data.to_vec(), m.truncated, m.compressed)));
        if r.is_err() {
            return (got, r);
        }
    }
    (got, Ok(()))
}

/// Frames payloads: masked when the client sends, deflated (stripped of the sync tail) when RSV1 is set.
fn frame(frames: &[Frame<'_>], client: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let payload = if f.rsv1 {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(f.payload).unwrap();
            let mut z = e.flush_finish_sync();
            z.truncate(z.len().saturating_sub(4));
            z
        } else {
            f.payload.to_vec()
        };
        out.push(u8::from(f.fin) << 7 | u8::from(f.rsv1) << 6 | f.opcode & 0x0f);
        let mask = if client { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(mask | n as u8),
            n @ 126..=0xffff => {
                out.push(mask | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if client {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(&payload);
        }
    }
    out
}

trait SyncFinish {
    fn flush_finish_sync(self) -> Vec<u8>;
}

impl SyncFinish for flate2::write::DeflateEncoder<Vec<u8>> {
    /// A sync flush, as permessage-deflate senders end each message (RFC 7692 §7.2.1).
    fn flush_finish_sync(mut self) -> Vec<u8> {
        self.flush().unwrap();
        self.get_ref().clone()
    }
}

fuzz_target!(|case: Case<'_>| {
    let sender = if case.server { Sender::Server } else { Sender::Client };
    let params = case.deflate.map(|(server_nct, client_nct)| DeflateParams {
        server_no_context_takeover: server_nct,
        client_no_context_takeover: client_nct,
        ..DeflateParams::default()
    });
    let cap = [DEFAULT_MAX_MESSAGE_BYTES, 0, 1, 100, 5000][usize::from(case.cap % 5)];
    let bytes = match &case.input {
        Input::Raw(b) => b.to_vec(),
        Input::Frames(f) => frame(f, !case.server),
    };
    let new = || WsDecoder::new(sender, params.as_ref()).with_max_message(cap);

    let mut whole_dec = new();
    let whole = run(&mut whole_dec, &[&bytes]);
    let mut cuts: Vec<usize> = case.cuts.iter().map(|c| usize::from(*c) % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parts = Vec::new();
    let mut at = 0;
    for c in cuts {
        parts.push(&bytes[at..c]);
        at = c;
    }
    parts.push(&bytes[at..]);
    let mut dec = new();
    let split = run(&mut dec, &parts);
    if whole_dec.stats().ratio_stops + dec.stats().ratio_stops == 0 {
        assert_eq!(split, whole);
        assert_eq!(dec.stats(), whole_dec.stats());
    }
    for d in [&whole_dec, &dec] {
        assert!(d.buffered() <= cap + MAX_CONTROL_PAYLOAD);
    }
    assert!(whole.0.iter().all(|m| m.1.len() <= cap && !m.1.is_empty()));
    assert_eq!(dec.error(), split.1.err());
    assert_eq!(whole_dec.error(), whole.1.err());
});
