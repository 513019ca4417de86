//! Known secrets: exact values from the operator's configuration, found in any of the encodings an agent
//! might use to move them (raw, base64 at each of the three alignments in both alphabets, hex, and
//! percent-encoded for `redact`; in a scanned stream percent-encoding is already undone by normalisation).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use super::rules::host_matches;
use super::{fingerprint, DetectError, KnownSecret, Location};

/// Shortest known secret accepted: shorter values would match ordinary text.
pub const KNOWN_SECRET_MIN_LEN: usize = 8;
/// Longest known secret accepted: bounds the streaming overlap (its hex form is twice as long).
pub const KNOWN_SECRET_MAX_LEN: usize = 512;

/// The compiled known-secret set.
#[derive(Debug)]
pub(crate) struct KnownSet {
    /// `None` when there are no known secrets.
    pub ac: Option<AhoCorasick>,
    /// Per automaton pattern: (index into `secrets`, how it is encoded).
    pub patterns: Vec<(usize, Option<&'static str>)>,
    pub secrets: Vec<KnownSecret>,
    /// Fingerprints of the values, to let known secrets win over the format rules.
    pub fingerprints: Vec<String>,
    /// Longest pattern, in bytes.
    pub max_len: usize,
}

impl KnownSet {
    pub(crate) fn new(secrets: &[KnownSecret]) -> Result<KnownSet, DetectError> {
        let mut pats: Vec<Vec<u8>> = Vec::new();
        let mut patterns = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            let v = s.value.as_bytes();
            if v.len() < KNOWN_SECRET_MIN_LEN || v.len() > KNOWN_SECRET_MAX_LEN {
                return Err(DetectError(format!(
                    "known secret {:?} is {} bytes long; known secrets must be {KNOWN_SECRET_MIN_LEN} to {KNOWN_SECRET_MAX_LEN} bytes",
                    s.label,
                    v.len()
                )));
            }
            let mut add = |p: Vec<u8>, how: Option<&'static str>| {
                if !pats.contains(&p) {
                    pats.push(p);
                    patterns.push((i, how));
                }
            };
            add(v.to_vec(), None);
            add(hex::encode(v).into_bytes(), Some("hex"));
            add(hex::encode_upper(v).into_bytes(), Some("hex"));
            for p in base64_forms(v) {
                add(p, Some("base64"));
            }
            let pct = percent_encode(v);
            if pct != v {
                add(pct, Some("percent"));
            }
        }
        let max_len = pats.iter().map(Vec::len).max().unwrap_or(0);
        let ac = if pats.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&pats)
                .map_err(|e| DetectError(format!("known secrets: {e}")))?;
            Some(ac)
        };
        let fingerprints = secrets.iter().map(|s| fingerprint(s.value.as_bytes())).collect();
        Ok(KnownSet { ac, patterns, secrets: secrets.to_vec(), fingerprints, max_len })
    }

    /// Whether sending secret `i` at `location` to `host` is one of its allowed uses.
    pub(crate) fn allowed(&self, i: usize, location: &Location, host: &str) -> bool {
        let Some(secret) = self.secrets.get(i) else { return false };
        secret.allowed.iter().any(|a| carrier_matches(&a.header, location) && host_matches(&a.host, host))
    }
}

/// Whether a carrier name (`authorization`, `path`, `body` ...) names this location.
pub(crate) fn carrier_matches(carrier: &str, location: &Location) -> bool {
    match location {
        Location::Header(name) => carrier.eq_ignore_ascii_case(name),
        Location::Target => carrier == "path",
        Location::Body => carrier == "body",
        Location::WebSocket => false,
    }
}

/// The parts of `base64(x)` that are fixed by `v` wherever `v` sits inside `x`: for each of the three
/// alignments, the characters that depend only on bytes of `v`, in both alphabets.
fn base64_forms(v: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    for shift in 0..3usize {
        // Prefix `shift` filler bytes, encode, drop the characters touched by the filler and the last,
        // partial group (it depends on what follows `v`).
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(v);
        let full = buf.len() / 3 * 3;
        let skip_chars = match shift {
            0 => 0,
            1 => 2, // 1 filler byte: the first 4-char group has 2 characters free of it
            _ => 3, // 2 filler bytes: 3 chars touched
        };
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(&buf[..full]);
            let bytes = enc.into_bytes();
            if bytes.len() > skip_chars + 8 {
                forms.push(bytes[skip_chars..].to_vec());
            }
        }
    }
    forms.dedup();
    forms
}

/// `application/x-www-form-urlencoded`-style percent encoding of everything but unreserved characters.
fn percent_encode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for b in v {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(*b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms_are_found_at_every_alignment() {
        let v = b"s3cr3t-VALUE-0123456789";
        let forms = base64_forms(v);
        for prefix in ["", "a", "ab", "abc"] {
            for suffix in ["", "z", "zz"] {
                let mut x = prefix.as_bytes().to_vec();
                x.extend_from_slice(v);
                x.extend_from_slice(suffix.as_bytes());
                let enc = STANDARD_NO_PAD.encode(&x);
                assert!(
                    forms.iter().any(|f| enc.as_bytes().windows(f.len()).any(|w| w == f.as_slice())),
                    "prefix {prefix:?} suffix {suffix:?}: {enc}"
                );
            }
        }
    }
}
