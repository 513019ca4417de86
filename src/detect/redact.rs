//! Redaction: the one place that decides what of a text may be shown.
//!
//! Every secret any rule knows (and every known secret, in each of its encodings) becomes
//! `[REDACTED:<pattern>:<first 8 hex of its sha256>]`; so do URL userinfo and query strings, whole PEM
//! private key blocks, base64 runs whose decoded bytes hold a secret, and any long token that looks
//! random (`high_entropy`). Spans are collected from all
//! passes over the original text, merged, and replaced in one go, so overlapping secrets never leave a
//! piece behind.

use aho_corasick::AhoCorasick;
use regex::bytes::Regex;

use super::engine::Compiled;
use super::known::KnownSet;
use super::normalize::{decode_run, is_b64, MIN_BASE64_RUN};
use super::rules::entropy;
use super::{fingerprint, DetectError};

/// A snippet holds about this many characters of text (labels excluded).
pub const SNIPPET_MAX: usize = 120;
/// A snippet never exceeds this many characters, redaction labels included (then it ends in `…`).
pub const SNIPPET_HARD_MAX: usize = 3 * SNIPPET_MAX;
/// At most this many characters of context on each side of a match.
pub const CONTEXT_MAX: usize = 40;
/// A longer non-secret match (an injected command) is cut after this many bytes.
pub const MATCH_SHOWN_MAX: usize = 100;

/// Bytes that end a token: a context cut is moved to one of these so no partial token is shown. Only
/// bytes that no rule's value can contain qualify (a `,` or `;` may sit inside a password).
pub(crate) fn is_separator(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'#')
}

/// Shortest token redacted for looking random alone (a safety net for secrets no rule knows, such as a
/// line of a PEM body shown next to another finding).
const HIGH_ENTROPY_MIN: usize = 32;
/// Bits per character above which such a token counts as random (hex digests stay below 4).
const HIGH_ENTROPY_BITS: f64 = 4.2;

struct SecretRule {
    id: &'static str,
    re: Regex,
    group: Option<usize>,
}

impl std::fmt::Debug for SecretRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRule").field("id", &self.id).finish()
    }
}

/// The compiled redaction passes.
#[derive(Debug)]
pub(crate) struct Redactor {
    rules: Vec<SecretRule>,
    userinfo: Regex,
    query: Regex,
    pem: Regex,
    /// All encodings of the known secrets.
    known: Option<AhoCorasick>,
    known_fps: Vec<String>,
    known_index: Vec<usize>,
}

fn re(pattern: &str) -> Result<Regex, DetectError> {
    Regex::new(pattern).map_err(|e| DetectError(format!("redaction pattern {pattern:?}: {e}")))
}

impl Redactor {
    pub(crate) fn new(rules: &[Compiled], known: &KnownSet) -> Result<Redactor, DetectError> {
        let rules = rules
            .iter()
            .filter(|c| c.rule.secret)
            .map(|c| SecretRule { id: c.rule.id, re: c.re.clone(), group: c.group })
            .collect();
        Ok(Redactor {
            rules,
            userinfo: re(r#"(?-u)(?i)\b[a-z][a-z0-9+.\-]{1,15}://(?P<v>[^\s/?#@"'<>\[\]]{1,256})@"#)?,
            query: re(
                r#"(?-u)(?i)(?:\b[a-z][a-z0-9+.\-]{1,15}://[^\s?#"'<>]{0,1024}|/[^\s?#"'<>]{0,1024})\?(?P<v>[^\s#"'<>\\]{1,4096})"#,
            )?,
            pem: re(
                r"(?-u)(?s)-----BEGIN [A-Z ]{0,30}PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z ]{0,30}PRIVATE KEY(?: BLOCK)?-----|\z)",
            )?,
            known: known.ac.clone(),
            known_fps: known.fingerprints.clone(),
            known_index: known.patterns.iter().map(|(i, _)| *i).collect(),
        })
    }

    /// The spans of `text` to replace, with their labels.
    fn spans(&self, text: &[u8], out: &mut Vec<(usize, usize, String)>) {
        for r in &self.rules {
            for caps in r.re.captures_iter(text) {
                let v = match r.group {
                    Some(g) => caps.get(g),
                    None => caps.get(0),
                };
                if let Some(v) = v {
                    out.push((v.start(), v.end(), label(r.id, &text[v.start()..v.end()])));
                }
            }
        }
        for m in self.pem.find_iter(text) {
            out.push((m.start(), m.end(), label("private_key_pem", m.as_bytes())));
        }
        for (re, id) in [(&self.userinfo, "url_userinfo"), (&self.query, "url_query")] {
            for caps in re.captures_iter(text) {
                if let Some(v) = caps.name("v") {
                    out.push((v.start(), v.end(), label(id, v.as_bytes())));
                }
            }
        }
        if let Some(ac) = &self.known {
            for m in ac.find_iter(text) {
                let fp = self
                    .known_index
                    .get(m.pattern().as_usize())
                    .and_then(|i| self.known_fps.get(*i))
                    .cloned()
                    .unwrap_or_default();
                out.push((m.start(), m.end(), format!("[REDACTED:known_secret:{fp}]")));
            }
        }
        // Base64 runs that decode to something holding a secret go as a whole.
        let mut i = 0;
        while i < text.len() {
            if !is_b64(text[i]) {
                i += 1;
                continue;
            }
            let j = text[i..].iter().position(|b| !is_b64(*b)).map_or(text.len(), |k| i + k);
            let run = &text[i..j];
            if run.len() >= MIN_BASE64_RUN {
                if let Some(id) = decode_run(run).and_then(|d| self.holds_secret(&d)) {
                    out.push((i, j, label(id, run)));
                } else if looks_random(run) {
                    out.push((i, j, label("high_entropy", run)));
                }
            }
            i = j;
        }
    }

    /// The rule id of a secret inside `bytes`, if any.
    fn holds_secret(&self, bytes: &[u8]) -> Option<&'static str> {
        if let Some(r) = self.rules.iter().find(|r| r.re.is_match(bytes)) {
            return Some(r.id);
        }
        if self.pem.is_match(bytes) {
            return Some("private_key_pem");
        }
        match &self.known {
            Some(ac) if ac.is_match(bytes) => Some("known_secret"),
            _ => None,
        }
    }

    /// `text` with every secret replaced by its label.
    pub(crate) fn redact(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut spans = Vec::new();
        self.spans(bytes, &mut spans);
        if spans.is_empty() {
            return text.to_owned();
        }
        spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        let mut k = 0;
        while k < spans.len() {
            let (start, mut end, ref lab) = spans[k];
            let lab = lab.clone();
            // Merge every span that overlaps this one.
            let mut j = k + 1;
            while j < spans.len() && spans[j].0 < end {
                end = end.max(spans[j].1);
                j += 1;
            }
            if start >= pos {
                out.extend_from_slice(&bytes[pos..start]);
            }
            out.extend_from_slice(lab.as_bytes());
            pos = pos.max(end);
            k = j;
        }
        out.extend_from_slice(&bytes[pos.min(bytes.len())..]);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A long token of mixed case and digits with high entropy.
fn looks_random(run: &[u8]) -> bool {
    run.len() >= HIGH_ENTROPY_MIN
        && run.iter().any(u8::is_ascii_uppercase)
        && run.iter().any(u8::is_ascii_lowercase)
        && run.iter().any(u8::is_ascii_digit)
        && entropy(run) >= HIGH_ENTROPY_BITS
}

fn label(id: &str, value: &[u8]) -> String {
    format!("[REDACTED:{id}:{}]", fingerprint(value))
}
