//! WebSocket (RFC 6455) frames of one direction of a connection, with permessage-deflate (RFC 7692), turned
//! into the text messages the detector scans.
//!
//! # Flow
//! After the `101 Switching Protocols`, the proxy reads the negotiated `Sec-WebSocket-Extensions` response
//! header with [`DeflateParams::from_response_header`] and opens one [`WsDecoder`] per direction. Each
//! forwarded chunk (any size, any split) goes to [`WsDecoder::feed`], which reads frame headers through a
//! checked cursor, unmasks payloads, inflates compressed messages, and reassembles fragments (control frames
//! may sit between them). Each finished data message goes to the callback as a [`WsMessage`]: text
//! messages always, binary messages only when they are valid UTF-8 (anything else is not text a rule could
//! match, and is counted). A protocol error puts the decoder in a failed state: `feed` returns the
//! [`WsError`] from then on, and the proxy stops inspecting (and closes) that connection only.
//!
//! The decoder is lenient where leniency costs nothing and helps inspection: it unmasks a masked frame from
//! either side and accepts an unmasked client frame (the real endpoint enforces masking), and it does not
//! check that text is valid UTF-8. It is strict where the framing itself would be ambiguous: the errors of
//! [`WsError`].
//!
//! # permessage-deflate
//! RSV1 on the first frame marks a compressed message. Its payload is raw deflate; the `00 00 ff ff` tail
//! the sender stripped is appended at the end of the message. With context takeover the inflater keeps its
//! window from message to message; with `*_no_context_takeover` for the sending side (or after a final
//! deflate block) it is reset for each message. The inflater always uses a 32 KiB window, which decodes
//! every `*_max_window_bits` a peer may agree on (8 to 15), so those values are only validated.
//!
//! # Limits
//! A message is kept up to the cap ([`DEFAULT_MAX_MESSAGE_BYTES`], at most [`MAX_MESSAGE_BYTES`]); the rest is
//! dropped and the message marked `truncated`. A declared frame length is never allocated: payload bytes
//! are handled as they arrive. Inflating stops once a message's output passes [`MAX_INFLATE_RATIO`] times its
//! compressed input plus [`INFLATE_SLACK_BYTES`]; with context takeover the inflater is then out of step, so
//! later compressed messages of that direction are counted as undecoded instead of guessed at.
//!
//! Past the cap a message is still inflated (into a scratch buffer, up to the ratio), so corrupt data is
//! noticed wherever it sits and, with context takeover, the window stays in step. Everything the decoder
//! hands on or fails on is independent of how the bytes were split into chunks, with one exception: the
//! exact point where the ratio limit cuts a message (and so whether corrupt data after it is noticed)
//! depends on how much compressed input had arrived when it was checked.
//!
//! ```
//! use picoclaw_traffic_guardian::inspect::ws::{DeflateParams, Sender, WsDecoder};
//! let params = DeflateParams::from_response_header("permessage-deflate; server_no_context_takeover").unwrap();
//! let mut down = WsDecoder::new(Sender::Server, params.as_ref());
//! let mut texts = Vec::new();
//! // An unmasked server text frame, split across two reads.
//! down.feed(b"\x81\x0acurl -sS ", &mut |m| texts.push(m.data.to_vec())).unwrap();
//! down.feed(b"x", &mut |m| texts.push(m.data.to_vec())).unwrap();
//! assert_eq!(texts, vec![b"curl -sS x".to_vec()]);
//! ```

use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};

/// Message cap a decoder starts with.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 10;
/// Highest message cap [`WsDecoder::with_max_message`] accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Longest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Most inflated bytes per compressed byte of one message (plus [`INFLATE_SLACK_BYTES`]).
pub const MAX_INFLATE_RATIO: u64 = 100;
/// Inflated bytes allowed on top of the ratio, so short messages of repetitive text are not cut.
pub const INFLATE_SLACK_BYTES: u64 = 64 << 10;
/// The tail a permessage-deflate sender strips from each message (RFC 7692 §7.2.1).
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Payload bytes unmasked and inflated per step, on the stack.
const STEP: usize = 4096;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Which endpoint sends the frames a decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The client (the agent): outbound frames, masked.
    Client,
    /// The server: inbound frames.
    Server,
}

/// The negotiated permessage-deflate parameters (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor for every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor for every message.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, 8 to 15 bits.
    pub server_max_window_bits: Option<u8>,
    /// The client's LZ77 window, 8 to 15 bits.
    pub client_max_window_bits: Option<u8>,
}

/// Why a negotiated extension header cannot be inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionError {
    /// An extension other than permessage-deflate was agreed; its frames cannot be decoded.
    Unsupported(String),
    /// A permessage-deflate parameter that is unknown, repeated, or has a bad value.
    BadParameter(String),
}

impl fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionError::Unsupported(name) => write!(f, "unsupported WebSocket extension {name:?}"),
            ExtensionError::BadParameter(p) => write!(f, "bad permessage-deflate parameter {p:?}"),
        }
    }
}

impl std::error::Error for ExtensionError {}

impl DeflateParams {
    /// Reads the `Sec-WebSocket-Extensions` header of the 101 response: `Ok(None)` when no extension was
    /// agreed, the parameters when permessage-deflate was.
    pub fn from_response_header(value: &str) -> Result<Option<DeflateParams>, ExtensionError> {
        let mut found = None;
        for ext in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = ext.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            if !name.eq_ignore_ascii_case("permessage-deflate") || found.is_some() {
                return Err(ExtensionError::Unsupported(name.chars().take(64).collect()));
            }
            let mut params = DeflateParams::default();
            let mut seen: Vec<String> = Vec::new();
            for param in parts.filter(|p| !p.is_empty()) {
                let (key, val) = match param.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                    None => (param, None),
                };
                let key = key.to_ascii_lowercase();
                let bad = || ExtensionError::BadParameter(param.chars().take(64).collect());
                if seen.contains(&key) {
                    return Err(bad());
                }
                match (key.as_str(), val) {
                    ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
                    ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
                    ("server_max_window_bits", Some(v)) => {
                        params.server_max_window_bits = Some(window_bits(v).ok_or_else(bad)?)
                    }
                    ("client_max_window_bits", Some(v)) => {
                        params.client_max_window_bits = Some(window_bits(v).ok_or_else(bad)?)
                    }
                    // Only an offer may leave the client's value out; tolerate it in a response too.
                    ("client_max_window_bits", None) => {}
                    _ => return Err(bad()),
                }
                seen.push(key);
            }
            found = Some(params);
        }
        Ok(found)
    }

    /// Whether `sender` resets its compressor for every message.
    pub fn no_context_takeover(&self, sender: Sender) -> bool {
        match sender {
            Sender::Client => self.client_no_context_takeover,
            Sender::Server => self.server_no_context_takeover,
        }
    }
}

fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// A framing error: the stream cannot be read further, and the proxy stops inspecting the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsError {
    /// An opcode RFC 6455 reserves (3-7, 0xB-0xF).
    ReservedOpcode(u8),
    /// RSV2 or RSV3 set, or RSV1 without permessage-deflate, on a control frame or on a continuation.
    ReservedBits,
    /// A control frame with a payload over 125 bytes.
    ControlTooLong,
    /// A control frame without FIN.
    FragmentedControl,
    /// A 64-bit payload length with the most significant bit set.
    LengthOverflow,
    /// A continuation frame with no message started.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open.
    UnfinishedMessage,
    /// Compressed payload that is not valid deflate.
    BadDeflate,
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::ReservedOpcode(op) => write!(f, "reserved WebSocket opcode {op:#x}"),
            WsError::ReservedBits => f.write_str("WebSocket RSV bits set without an extension that defines them"),
            WsError::ControlTooLong => f.write_str("WebSocket control frame longer than 125 bytes"),
            WsError::FragmentedControl => f.write_str("fragmented WebSocket control frame"),
            WsError::LengthOverflow => f.write_str("WebSocket frame length with the most significant bit set"),
            WsError::UnexpectedContinuation => f.write_str("WebSocket continuation frame without a message"),
            WsError::UnfinishedMessage => f.write_str("WebSocket data frame inside an unfinished fragmented message"),
            WsError::BadDeflate => f.write_str("invalid permessage-deflate data"),
        }
    }
}

impl std::error::Error for WsError {}

/// What a data message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Opcode 1.
    Text,
    /// Opcode 2, handed on only when valid UTF-8.
    Binary,
}

/// A finished data message (reassembled, unmasked, inflated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsMessage<'a> {
    /// Text or binary.
    pub kind: MessageKind,
    /// The payload, up to the cap.
    pub data: &'a [u8],
    /// The payload went past the cap (or the inflate ratio) and the rest was dropped.
    pub truncated: bool,
    /// The message was sent compressed.
    pub compressed: bool,
}

/// Counters of one decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WsStats {
    /// Frames read (headers complete).
    pub frames: u64,
    /// Data messages finished.
    pub messages: u64,
    /// Ping, pong and close frames.
    pub control_frames: u64,
    /// Messages cut at the cap or the inflate ratio.
    pub truncated_messages: u64,
    /// Binary messages not handed on because they are not UTF-8.
    pub skipped_binary: u64,
    /// Compressed messages not decoded because the inflater's context was lost to an earlier cut.
    pub undecoded_messages: u64,
    /// Compressed messages whose inflating stopped at [`MAX_INFLATE_RATIO`].
    pub ratio_stops: u64,
}

/// A read-only cursor over peer bytes: every read is checked, nothing is indexed.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// Up to `n` bytes, fewer when fewer are left.
    fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.buf.len());
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        head
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: u8,
    fin: bool,
    remaining: u64,
    mask: Option<[u8; 4]>,
    mask_pos: usize,
}

/// The data message being reassembled.
#[derive(Debug)]
struct Message {
    kind: MessageKind,
    compressed: bool,
    buf: Vec<u8>,
    truncated: bool,
    /// Compressed bytes fed to the inflater for this message.
    deflated: u64,
    /// Bytes the inflater produced for this message.
    inflated: u64,
    /// Inflating this message was given up (ratio passed).
    inflate_stopped: bool,
    /// The inflater's context was already lost when this message started: nothing of it is decoded.
    undecodable: bool,
    /// Inflating stopped at the ratio limit.
    over_ratio: bool,
}

#[derive(Debug)]
struct Inflater {
    z: Decompress,
    reset_each: bool,
    /// The deflate stream ended (a final block): the rest of the message is ignored and the next one
    /// starts a new stream.
    ended: bool,
    /// Context takeover, and a message was cut at the ratio limit: later messages cannot be decoded.
    lost: bool,
}

/// Decoder for the frames of one direction of one WebSocket connection.
#[derive(Debug)]
pub struct WsDecoder {
    max_message: usize,
    inflater: Option<Inflater>,
    header: [u8; 14],
    header_len: usize,
    frame: Option<Frame>,
    message: Option<Message>,
    control: Vec<u8>,
    close_code: Option<u16>,
    closed: bool,
    error: Option<WsError>,
    stats: WsStats,
}

impl WsDecoder {
    /// A decoder for the frames `sender` sends, with the agreed permessage-deflate parameters if any.
    pub fn new(sender: Sender, deflate: Option<&DeflateParams>) -> WsDecoder {
        WsDecoder {
            max_message: DEFAULT_MAX_MESSAGE_BYTES,
            inflater: deflate.map(|p| Inflater {
                z: Decompress::new(false),
                reset_each: p.no_context_takeover(sender),
                ended: false,
                lost: false,
            }),
            header: [0; 14],
            header_len: 0,
            frame: None,
            message: None,
            // Allocated once at its fixed maximum, so control frames never grow it.
            control: Vec::with_capacity(MAX_CONTROL_PAYLOAD),
            close_code: None,
            closed: false,
            error: None,
            stats: WsStats::default(),
        }
    }

    /// Sets the message cap (the proxy passes its per-message scan budget), at most [`MAX_MESSAGE_BYTES`].
    pub fn with_max_message(mut self, bytes: usize) -> WsDecoder {
        self.max_message = bytes.min(MAX_MESSAGE_BYTES);
        self
    }

    /// Feeds the next chunk of the direction's bytes; each message it finishes goes to `out`. After an
    /// error, every call returns that error and reads nothing.
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(WsMessage<'_>)) -> Result<(), WsError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let result = self.feed_inner(chunk, out);
        if let Err(e) = result {
            self.error = Some(e);
            // Nothing more is read: drop what was held.
            self.message = None;
            self.control = Vec::new();
        }
        result
    }

    fn feed_inner(&mut self, chunk: &[u8], out: &mut impl FnMut(WsMessage<'_>)) -> Result<(), WsError> {
        let mut cur = Cursor::new(chunk);
        loop {
            match self.frame {
                None => {
                    if !self.read_header(&mut cur)? {
                        return Ok(());
                    }
                }
                Some(mut frame) => {
                    let want = usize::try_from(frame.remaining).unwrap_or(usize::MAX);
                    let bytes = cur.take_up_to(want);
                    self.payload(&mut frame, bytes)?;
                    frame.remaining -= bytes.len() as u64;
                    if frame.remaining == 0 {
                        self.frame = None;
                        self.end_frame(&frame, out)?;
                    } else {
                        self.frame = Some(frame);
                    }
                    if self.frame.is_some() && cur.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Gathers header bytes; true once a frame header is complete and `self.frame` is set.
    fn read_header(&mut self, cur: &mut Cursor<'_>) -> Result<bool, WsError> {
        loop {
            let need = header_len(self.header.get(..self.header_len).unwrap_or_default());
            if self.header_len >= need {
                break;
            }
            if cur.is_empty() {
                return Ok(false);
            }
            let got = cur.take_up_to(need - self.header_len);
            if let Some(dst) = self.header.get_mut(self.header_len..self.header_len + got.len()) {
                dst.copy_from_slice(got);
            }
            self.header_len += got.len();
            if self.header_len >= 2 {
                // Reject what the first two bytes already show, before waiting for a length.
                self.check_start()?;
            }
        }
        let header = self.header;
        let mut h = Cursor::new(header.get(..self.header_len).unwrap_or_default());
        self.header_len = 0;
        let (Some(b0), Some(b1)) = (h.u8(), h.u8()) else { return Ok(false) };
        let len = match b1 & 0x7f {
            126 => h.array::<2>().map(|b| u64::from(u16::from_be_bytes(b))),
            127 => h.array::<8>().map(u64::from_be_bytes),
            n => Some(u64::from(n)),
        }
        .unwrap_or(0);
        if len >> 63 != 0 {
            return Err(WsError::LengthOverflow);
        }
        let mask = if b1 & 0x80 != 0 { h.array::<4>() } else { None };
        let opcode = b0 & 0x0f;
        let fin = b0 & 0x80 != 0;
        self.stats.frames += 1;
        if opcode == OP_TEXT || opcode == OP_BINARY {
            self.start_message(opcode, b0 & 0x40 != 0);
        }
        // A frame without payload ends at once, in the caller's next step.
        self.frame = Some(Frame { opcode, fin, remaining: len, mask, mask_pos: 0 });
        Ok(true)
    }

    /// Checks the first two header bytes against the framing rules.
    fn check_start(&self) -> Result<(), WsError> {
        let (Some(&b0), Some(&b1)) = (self.header.first(), self.header.get(1)) else { return Ok(()) };
        if b0 & 0x30 != 0 {
            return Err(WsError::ReservedBits);
        }
        let rsv1 = b0 & 0x40 != 0;
        let fin = b0 & 0x80 != 0;
        match b0 & 0x0f {
            OP_CONTINUATION => {
                if self.message.is_none() {
                    return Err(WsError::UnexpectedContinuation);
                }
                if rsv1 {
                    // RFC 7692 §6.1: RSV1 only on a message's first frame.
                    return Err(WsError::ReservedBits);
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.message.is_some() {
                    return Err(WsError::UnfinishedMessage);
                }
                if rsv1 && self.inflater.is_none() {
                    return Err(WsError::ReservedBits);
                }
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(WsError::FragmentedControl);
                }
                if usize::from(b1 & 0x7f) > MAX_CONTROL_PAYLOAD {
                    return Err(WsError::ControlTooLong);
                }
                if rsv1 {
                    return Err(WsError::ReservedBits);
                }
            }
            op => return Err(WsError::ReservedOpcode(op)),
        }
        Ok(())
    }

    fn start_message(&mut self, opcode: u8, compressed: bool) {
        let kind = if opcode == OP_TEXT { MessageKind::Text } else { MessageKind::Binary };
        let undecodable = compressed && self.inflater.as_ref().is_some_and(|i| i.lost);
        self.message = Some(Message {
            kind,
            compressed,
            buf: Vec::new(),
            truncated: false,
            deflated: 0,
            inflated: 0,
            inflate_stopped: false,
            undecodable,
            over_ratio: false,
        });
    }

    fn payload(&mut self, frame: &mut Frame, bytes: &[u8]) -> Result<(), WsError> {
        let mut step = [0u8; STEP];
        for part in bytes.chunks(STEP) {
            let Some(buf) = step.get_mut(..part.len()) else { continue };
            buf.copy_from_slice(part);
            if let Some(mask) = frame.mask {
                for (b, k) in buf.iter_mut().zip(mask.iter().cycle().skip(frame.mask_pos % 4)) {
                    *b ^= k;
                }
                frame.mask_pos = (frame.mask_pos + part.len()) % 4;
            }
            match frame.opcode {
                OP_CLOSE | OP_PING | OP_PONG => {
                    // At most 125 bytes, checked at the header.
                    self.control.extend_from_slice(buf);
                }
                _ => self.message_bytes(buf)?,
            }
        }
        Ok(())
    }

    fn message_bytes(&mut self, bytes: &[u8]) -> Result<(), WsError> {
        let max = self.max_message;
        let Some(msg) = self.message.as_mut() else { return Ok(()) };
        if msg.compressed {
            match self.inflater.as_mut() {
                Some(inf) => inflate(inf, msg, max, bytes),
                None => Ok(()),
            }
        } else {
            append_capped(msg, bytes, max);
            Ok(())
        }
    }

    fn end_frame(&mut self, frame: &Frame, out: &mut impl FnMut(WsMessage<'_>)) -> Result<(), WsError> {
        match frame.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                self.stats.control_frames += 1;
                if frame.opcode == OP_CLOSE {
                    self.closed = true;
                    let mut c = Cursor::new(&self.control);
                    self.close_code = c.array::<2>().map(u16::from_be_bytes);
                }
                self.control.clear();
                Ok(())
            }
            _ if frame.fin => self.end_message(out),
            _ => Ok(()),
        }
    }

    fn end_message(&mut self, out: &mut impl FnMut(WsMessage<'_>)) -> Result<(), WsError> {
        let max = self.max_message;
        let Some(mut msg) = self.message.take() else { return Ok(()) };
        if msg.compressed {
            if let Some(inf) = self.inflater.as_mut() {
                inflate(inf, &mut msg, max, &DEFLATE_TAIL)?;
                if inf.reset_each || inf.ended {
                    inf.z.reset(false);
                    inf.ended = false;
                }
            }
        }
        self.stats.messages += 1;
        if msg.undecodable {
            self.stats.undecoded_messages += 1;
            return Ok(());
        }
        if msg.truncated {
            self.stats.truncated_messages += 1;
        }
        if msg.over_ratio {
            self.stats.ratio_stops += 1;
        }
        if msg.buf.is_empty() {
            return Ok(());
        }
        let text_like = match msg.kind {
            MessageKind::Text => true,
            MessageKind::Binary => match std::str::from_utf8(&msg.buf) {
                Ok(_) => true,
                // A cut may split the last character.
                Err(e) => msg.truncated && e.error_len().is_none(),
            },
        };
        if text_like {
            out(WsMessage { kind: msg.kind, data: &msg.buf, truncated: msg.truncated, compressed: msg.compressed });
        } else {
            self.stats.skipped_binary += 1;
        }
        Ok(())
    }

    /// Whether the decoder is inside a frame or a fragmented message (the bytes so far are an incomplete
    /// prefix, not an error).
    pub fn in_progress(&self) -> bool {
        self.header_len > 0 || self.frame.is_some() || self.message.is_some()
    }

    /// The error the decoder stopped on, if any.
    pub fn error(&self) -> Option<WsError> {
        self.error
    }

    /// Whether a close frame was read, and its status code if it had one.
    pub fn close(&self) -> Option<Option<u16>> {
        self.closed.then_some(self.close_code)
    }

    /// Bytes held for the open message and control frame: at most the message cap plus 125.
    pub fn buffered(&self) -> usize {
        self.message.as_ref().map_or(0, |m| m.buf.capacity()) + self.control.capacity()
    }

    /// Counters so far.
    pub fn stats(&self) -> WsStats {
        self.stats
    }
}

/// Header length known from the bytes so far: 2 until the second byte is in, then the full length.
fn header_len(h: &[u8]) -> usize {
    let Some(&b1) = h.get(1) else { return 2 };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

fn append_capped(msg: &mut Message, bytes: &[u8], max: usize) {
    let room = max.saturating_sub(msg.buf.len());
    let keep = bytes.get(..room.min(bytes.len())).unwrap_or_default();
    if msg.buf.capacity() - msg.buf.len() < keep.len() {
        // Grow by doubling like Vec does, but never past the cap: memory stays at the cap, not twice it.
        msg.buf.reserve_exact(keep.len().max(msg.buf.capacity()).min(room));
    }
    msg.buf.extend_from_slice(keep);
    if keep.len() < bytes.len() {
        msg.truncated = true;
    }
}

fn inflate(inf: &mut Inflater, msg: &mut Message, max: usize, mut input: &[u8]) -> Result<(), WsError> {
    if msg.undecodable || msg.inflate_stopped || inf.ended {
        return Ok(());
    }
    msg.deflated += input.len() as u64;
    let mut step = [0u8; STEP];
    loop {
        let (in_before, out_before) = (inf.z.total_in(), inf.z.total_out());
        let status = inf.z.decompress(input, &mut step, FlushDecompress::None).map_err(|_| WsError::BadDeflate)?;
        let used = usize::try_from(inf.z.total_in() - in_before).unwrap_or(usize::MAX);
        let made = usize::try_from(inf.z.total_out() - out_before).unwrap_or(usize::MAX);
        input = input.get(used..).unwrap_or_default();
        append_capped(msg, step.get(..made).unwrap_or_default(), max);
        msg.inflated += made as u64;
        if msg.inflated > msg.deflated.saturating_mul(MAX_INFLATE_RATIO).saturating_add(INFLATE_SLACK_BYTES) {
            // A bomb, or at least no text worth the work: stop, and with context takeover the window is
            // now unknown for the messages that follow.
            msg.truncated = true;
            msg.inflate_stopped = true;
            msg.over_ratio = true;
            inf.lost = !inf.reset_each;
            return Ok(());
        }
        if status == Status::StreamEnd {
            inf.ended = true;
            return Ok(());
        }
        if (used == 0 && made == 0) || (input.is_empty() && made < step.len()) {
            return Ok(());
        }
    }
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
