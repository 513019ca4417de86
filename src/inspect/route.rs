//! Body routing by `Content-Type`: which decoded bytes reach the detector.
//!
//! | content type | what the detector gets |
//! |---|---|
//! | `text/event-stream` | [`BodyKind::EventStream`]: the events' text pieces, joined per JSON path ([`super::stream`]) |
//! | NDJSON (`application/x-ndjson`, `application/ndjson`, `application/jsonl`, `application/x-jsonlines`) | [`BodyKind::Ndjson`]: each line's text pieces, joined per JSON path ([`super::stream`]) |
//! | JSON (`application/json`, `*+json`), form-urlencoded, other `text/*`, XML, JavaScript, none, anything not listed | the bytes as they are (JSON escapes, percent-encoding and base64 are undone inside the detector) |
//! | `multipart/*` with a boundary | each part's headers and body, parts split on the boundary; a part whose own type is binary goes through the UTF-8 gate; the preamble and epilogue are fed too (a wrong boundary must not hide a body) |
//! | `image/*`, `audio/*`, `video/*`, `application/octet-stream` | the UTF-8 gate: bytes are fed while they are valid UTF-8; at the first invalid sequence the rest is skipped (a mislabelled text body is still scanned, a real image is skipped at its first bytes) |
//!
//! Everything streams: the router keeps at most [`MAX_PART_HEADERS`] (or one boundary) between pushes.

/// Longest header block of one multipart part; past it the body is treated as text without parts.
pub const MAX_PART_HEADERS: usize = 8 * 1024;
/// Longest multipart boundary accepted (RFC 2046 allows 70 characters).
pub const MAX_BOUNDARY: usize = 200;

/// How a body is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// Fed as it is.
    Text,
    /// Fed only while valid UTF-8.
    Binary,
    /// Split into parts on this boundary.
    Multipart(Vec<u8>),
    /// Server-sent events: decoded into text pieces by the inspector, not by a [`Router`].
    EventStream,
    /// Newline-delimited JSON: decoded into text pieces by the inspector, not by a [`Router`].
    Ndjson,
}

/// NDJSON media types (`application/x-ndjson` is Ollama's).
const NDJSON_TYPES: &[&str] =
    &["application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"];

/// The lowercase media type (`type/subtype`) of a `Content-Type` value.
fn media_type(ct: &[u8]) -> String {
    let end = ct.iter().position(|&b| b == b';').unwrap_or(ct.len());
    String::from_utf8_lossy(ct.get(..end).unwrap_or_default()).trim().to_ascii_lowercase()
}

/// The `boundary` parameter of a `Content-Type` value, unquoted.
fn boundary(ct: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(ct);
    for param in text.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim().trim_matches('"');
            if value.is_empty() || value.len() > MAX_BOUNDARY {
                return None;
            }
            return Some(value.as_bytes().to_vec());
        }
    }
    None
}

/// Routes a body by its `Content-Type` value (None when absent).
pub fn classify(content_type: Option<&[u8]>) -> BodyKind {
    let Some(ct) = content_type else { return BodyKind::Text };
    let media = media_type(ct);
    let (top, _) = media.split_once('/').unwrap_or((media.as_str(), ""));
    if top == "multipart" {
        return boundary(ct).map_or(BodyKind::Text, BodyKind::Multipart);
    }
    if matches!(top, "image" | "audio" | "video") || media == "application/octet-stream" {
        return BodyKind::Binary;
    }
    if media == "text/event-stream" {
        return BodyKind::EventStream;
    }
    if NDJSON_TYPES.contains(&media.as_str()) {
        return BodyKind::Ndjson;
    }
    BodyKind::Text
}

/// Feeds bytes on while they are valid UTF-8; after the first invalid sequence it skips the rest.
#[derive(Debug, Default)]
pub struct Utf8Gate {
    /// The start of a character split across pushes (at most 3 bytes).
    pending: Vec<u8>,
    bad: bool,
    skipped: u64,
}

impl Utf8Gate {
    /// Pushes bytes; valid text goes to `emit`.
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        if self.bad {
            self.skipped += data.len() as u64;
            return;
        }
        while !self.pending.is_empty() {
            let Some((&b, rest)) = data.split_first() else { return };
            data = rest;
            self.pending.push(b);
            match std::str::from_utf8(&self.pending) {
                Ok(_) => {
                    emit(&self.pending);
                    self.pending.clear();
                }
                Err(e) if e.error_len().is_some() || self.pending.len() >= 4 => {
                    self.bad = true;
                    self.skipped += (self.pending.len() + data.len()) as u64;
                    self.pending.clear();
                    return;
                }
                Err(_) => {}
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => emit(data),
            Err(e) => {
                let (good, rest) = data.split_at(e.valid_up_to());
                emit(good);
                if e.error_len().is_none() {
                    self.pending = rest.to_vec();
                } else {
                    self.bad = true;
                    self.skipped += rest.len() as u64;
                }
            }
        }
    }

    /// The body ended: a character cut at the end is skipped.
    pub fn finish(&mut self) {
        self.skipped += self.pending.len() as u64;
        self.pending.clear();
    }

    /// Bytes skipped as binary.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[derive(Debug)]
enum PartSink {
    Text,
    Gate(Utf8Gate),
}

#[derive(Debug)]
enum Mp {
    /// Before the first boundary (ignored) or inside a part body.
    Seek { in_part: bool },
    /// Right after a delimiter: `--` ends the body, CRLF starts a part.
    AfterDelimiter,
    /// Reading a part's header block.
    Headers,
    /// After the closing delimiter (ignored).
    Epilogue,
    /// Malformed multipart: the rest is fed as text.
    Fallback,
}

/// A streaming `multipart/*` splitter.
#[derive(Debug)]
struct Multipart {
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    state: Mp,
    carry: Vec<u8>,
    part: PartSink,
    skipped: u64,
    /// Some preamble text was fed (so a separator goes before the first part).
    preamble: bool,
    /// Bytes of the pretend CRLF before the body not yet passed (they are not the peer's text).
    pretend: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Multipart {
    fn new(boundary: &[u8]) -> Multipart {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        // The first delimiter may open the body without a CRLF before it: pretend there was one.
        Multipart {
            delimiter,
            state: Mp::Seek { in_part: false },
            carry: b"\r\n".to_vec(),
            part: PartSink::Text,
            skipped: 0,
            preamble: false,
            pretend: 2,
        }
    }

    fn emit_part(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        match &mut self.part {
            PartSink::Text => emit(data),
            PartSink::Gate(g) => g.push(data, emit),
        }
    }

    fn emit_preamble(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        let cut = self.pretend.min(data.len());
        self.pretend -= cut;
        let data = data.get(cut..).unwrap_or_default();
        if !data.is_empty() {
            self.preamble = true;
            emit(data);
        }
    }

    fn end_part(&mut self) {
        if let PartSink::Gate(g) = &mut self.part {
            g.finish();
            self.skipped += g.skipped();
        }
        self.part = PartSink::Text;
    }

    fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(data);
        let mut pos = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            match self.state {
                Mp::Fallback => {
                    emit(rest);
                    return;
                }
                // The preamble and epilogue are scanned too: a wrong boundary must not hide a body.
                Mp::Epilogue => {
                    emit(rest);
                    return;
                }
                Mp::Seek { in_part } => match find(rest, &self.delimiter) {
                    Some(i) => {
                        if in_part {
                            self.emit_part(rest.get(..i).unwrap_or_default(), emit);
                            self.end_part();
                        } else {
                            self.emit_preamble(rest.get(..i).unwrap_or_default(), emit);
                        }
                        // Keeps the texts of two parts from running together in the detector.
                        if in_part || self.preamble {
                            emit(b"\n");
                        }
                        pos += i + self.delimiter.len();
                        self.state = Mp::AfterDelimiter;
                    }
                    None => {
                        // Hold back what could be the start of a delimiter.
                        let safe = rest.len().saturating_sub(self.delimiter.len() - 1);
                        if in_part {
                            self.emit_part(rest.get(..safe).unwrap_or_default(), emit);
                        } else {
                            self.emit_preamble(rest.get(..safe).unwrap_or_default(), emit);
                        }
                        self.carry = rest.get(safe..).unwrap_or_default().to_vec();
                        return;
                    }
                },
                Mp::AfterDelimiter => {
                    let trimmed = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
                    let after = rest.get(trimmed..).unwrap_or_default();
                    match after {
                        [b'-', b'-', ..] => self.state = Mp::Epilogue,
                        [b'\r', b'\n', ..] => {
                            pos += trimmed + 2;
                            self.state = Mp::Headers;
                        }
                        [] | [b'-'] | [b'\r'] if trimmed <= MAX_BOUNDARY => {
                            self.carry = rest.to_vec();
                            return;
                        }
                        _ => self.state = Mp::Fallback,
                    }
                }
                Mp::Headers => {
                    let end = if rest.starts_with(b"\r\n") { Some(0) } else { find(rest, b"\r\n\r\n").map(|i| i + 2) };
                    match end {
                        Some(i) => {
                            let head = rest.get(..i).unwrap_or_default();
                            emit(head);
                            self.part = match classify(part_content_type(head).as_deref()) {
                                BodyKind::Binary => PartSink::Gate(Utf8Gate::default()),
                                _ => PartSink::Text,
                            };
                            pos += i + 2;
                            self.state = Mp::Seek { in_part: true };
                        }
                        None if rest.len() > MAX_PART_HEADERS => self.state = Mp::Fallback,
                        None => {
                            self.carry = rest.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        // A body cut short: what was held back is still text of the part, preamble or headers.
        let carry = std::mem::take(&mut self.carry);
        match self.state {
            Mp::Seek { in_part: true } => self.emit_part(&carry, emit),
            Mp::Seek { in_part: false } => self.emit_preamble(&carry, emit),
            Mp::Headers => emit(&carry),
            Mp::AfterDelimiter | Mp::Epilogue | Mp::Fallback => {}
        }
        self.end_part();
    }
}

/// The `Content-Type` value in a part's header block.
fn part_content_type(head: &[u8]) -> Option<Vec<u8>> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        name.eq_ignore_ascii_case(b"content-type").then(|| value.get(1..).unwrap_or_default().trim_ascii().to_vec())
    })
}

/// Routes one decoded body to the detector.
#[derive(Debug)]
pub struct Router {
    inner: RouterKind,
}

#[derive(Debug)]
enum RouterKind {
    Text,
    Binary(Utf8Gate),
    Multipart(Box<Multipart>),
}

impl Router {
    /// A router for a body of this kind. The stream kinds pass through as text here: the inspector routes
    /// them through [`super::stream`] instead, so a router only sees them when used on its own.
    pub fn new(kind: BodyKind) -> Router {
        let inner = match kind {
            BodyKind::Text | BodyKind::EventStream | BodyKind::Ndjson => RouterKind::Text,
            BodyKind::Binary => RouterKind::Binary(Utf8Gate::default()),
            BodyKind::Multipart(b) => RouterKind::Multipart(Box::new(Multipart::new(&b))),
        };
        Router { inner }
    }

    /// Pushes decoded body bytes; the text to scan goes to `emit`.
    pub fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        match &mut self.inner {
            RouterKind::Text => emit(data),
            RouterKind::Binary(g) => g.push(data, emit),
            RouterKind::Multipart(m) => m.push(data, emit),
        }
    }

    /// The body ended.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        match &mut self.inner {
            RouterKind::Text => {}
            RouterKind::Binary(g) => g.finish(),
            RouterKind::Multipart(m) => m.finish(emit),
        }
    }

    /// Decoded bytes skipped as binary so far (whole parts count once they end).
    pub fn skipped(&self) -> u64 {
        match &self.inner {
            RouterKind::Text => 0,
            RouterKind::Binary(g) => g.skipped(),
            RouterKind::Multipart(m) => m.skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(kind: BodyKind, body: &[u8], split: usize) -> (Vec<u8>, u64) {
        let mut r = Router::new(kind);
        let mut out = Vec::new();
        for part in body.chunks(split.max(1)) {
            r.push(part, &mut |d| out.extend_from_slice(d));
        }
        r.finish(&mut |d| out.extend_from_slice(d));
        (out, r.skipped())
    }

    #[test]
    fn classifies_content_types() {
        let c = |s: &str| classify(Some(s.as_bytes()));
        assert_eq!(classify(None), BodyKind::Text);
        for text in [
            "application/json",
            "application/vnd.api+json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/xml",
            "application/javascript",
            "text/events",
            "application/weird",
        ] {
            assert_eq!(c(text), BodyKind::Text, "{text}");
        }
        assert_eq!(c("text/event-stream; charset=utf-8"), BodyKind::EventStream);
        assert_eq!(c("Text/Event-Stream"), BodyKind::EventStream);
        for nd in ["application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"] {
            assert_eq!(c(nd), BodyKind::Ndjson, "{nd}");
        }
        for bin in ["image/png", "Audio/ogg", "video/mp4", "application/octet-stream"] {
            assert_eq!(c(bin), BodyKind::Binary, "{bin}");
        }
        assert_eq!(c("multipart/form-data; boundary=\"ab c\""), BodyKind::Multipart(b"ab c".to_vec()));
        assert_eq!(c("multipart/form-data"), BodyKind::Text, "no boundary: fed as text");
        assert_eq!(c(&format!("multipart/form-data; boundary={}", "x".repeat(MAX_BOUNDARY + 1))), BodyKind::Text);
    }

    #[test]
    fn utf8_gate_feeds_text_and_skips_binary() {
        let text = "héllo wörld ✓ 🦀".as_bytes();
        for split in 1..=text.len() {
            assert_eq!(route(BodyKind::Binary, text, split), (text.to_vec(), 0), "split {split}");
        }
        let png = b"\x89PNG\r\n\x1a\n AKIA...";
        assert_eq!(route(BodyKind::Binary, png, 3), (Vec::new(), png.len() as u64));
        let mixed = b"text first \xff\xfe then binary";
        let (out, skipped) = route(BodyKind::Binary, mixed, 4);
        assert_eq!(out, b"text first ");
        assert_eq!(skipped, (mixed.len() - 11) as u64);
        // A character cut at the very end is skipped, not fed.
        assert_eq!(route(BodyKind::Binary, b"ok \xe2\x9c", 1), (b"ok ".to_vec(), 2));
    }

    const MP: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nfirst value\r\n--XyZ\r\nContent-Disposition: form-data; name=\"img\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\x00\x01binary\r\n--XyZ\r\nContent-Type: image/svg+xml\r\n\r\n<svg>text</svg>\r\n--XyZ--\r\nepilogue";

    #[test]
    fn multipart_feeds_text_parts_and_skips_binary_ones() {
        let kind = BodyKind::Multipart(b"XyZ".to_vec());
        let (whole, skipped) = route(kind.clone(), MP, MP.len());
        let text = String::from_utf8_lossy(&whole);
        assert!(text.contains("first value"), "{text}");
        assert!(text.contains("name=\"img\""), "part headers are scanned: {text}");
        assert!(text.contains("<svg>text</svg>"), "valid UTF-8 image part is scanned: {text}");
        assert!(!text.contains("PNG") && !text.contains("binary"), "{text}");
        assert!(text.contains("preamble") && text.contains("epilogue"), "a wrong boundary hides nothing: {text}");
        assert!(!text.contains("XyZ"), "{text}");
        assert_eq!(skipped, b"\x89PNG\x00\x01binary".len() as u64);
        for split in 1..MP.len() {
            assert_eq!(route(kind.clone(), MP, split), (whole.clone(), skipped), "split {split}");
        }
    }

    #[test]
    fn multipart_without_preamble_and_cut_short() {
        let body = b"--b\r\n\r\nsecret part text";
        let (out, _) = route(BodyKind::Multipart(b"b".to_vec()), body, 2);
        assert_eq!(out, b"secret part text");
        // No boundary in the body at all (a wrong Content-Type): all of it is still fed.
        for split in 1..8 {
            assert_eq!(route(BodyKind::Multipart(b"zzz".to_vec()), b"{\"k\":\"v\"}", split).0, b"{\"k\":\"v\"}");
        }
        for end in 0..MP.len() {
            route(BodyKind::Multipart(b"XyZ".to_vec()), &MP[..end], 5);
        }
    }

    #[test]
    fn malformed_multipart_falls_back_to_text() {
        let (out, _) = route(BodyKind::Multipart(b"b".to_vec()), b"--bJUNK after the boundary", 3);
        assert_eq!(out, b"JUNK after the boundary");
        let mut long = b"--b\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'h', MAX_PART_HEADERS + 10));
        let (out, _) = route(BodyKind::Multipart(b"b".to_vec()), &long, 1000);
        assert_eq!(out.len(), MAX_PART_HEADERS + 10);
    }
}
