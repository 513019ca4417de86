//! The detector: pure, synchronous, no I/O. Bytes go in (in chunks of any size), [`Detection`]s come out.
//!
//! The proxy, the offline `scan` command, the benchmarks and the fuzz targets all use this one API:
//! build a [`Detector`] once (it is cheap to clone), open a [`Scanner`] per piece of a message (the request
//! target, one header value, a body) with a [`ScanContext`], feed it chunks, then finish it.
//!
//! ```
//! use picoclaw_traffic_guardian::detect::*;
//! let detector = Detector::new(DetectorOptions::default()).unwrap();
//! let ctx = ScanContext::new(Direction::Outbound, Destination::new("paste.example", 443), Location::Body);
//! let mut scanner = detector.scanner(ctx);
//! let mut found = Vec::new();
//! scanner.feed(b"key=AKIAZ7QW3ERTY5UIOPLK", &mut found);
//! scanner.finish(&mut found);
//! assert_eq!(found[0].pattern, "aws_access_key");
//! assert!(!found[0].snippet.contains("AKIAZ7QW3ERTY5UIOPLK"));
//! ```
//!
//! ## The flow inside a scanner
//! raw chunk → JSON/percent unescape (one streaming pass) → normalised window → keyword prefilter
//! (Aho-Corasick) → the regexes of the rules whose keyword is in the window → validators (entropy, example
//! values, provider host + credential header, known secrets win) → redacted [`Detection`]. In parallel,
//! base64 runs of the normalised stream are decoded once and go through the same rules. Detections are
//! released in stream order and each (pattern, value) once per scanner, so the output does not depend on
//! how the input was chunked. EXFIL rules and known secrets run on outbound text, INJECTION rules on
//! inbound text.
//!
//! ## Evasions and where they are handled
//! | evasion | handled in | test (in `tests.rs`) |
//! |---|---|---|
//! | secret or command split across chunks | `scanner`: overlap of the longest rule match | `run_all` (every split), `chunking_never_changes_the_result` |
//! | JSON string escapes (`\n`, `\"`, `\/`, `\uXXXX`, surrogates) | `normalize::Unescaper` | `json_escapes_are_undone` |
//! | percent-encoding | `normalize::Unescaper` | `percent_encoding_is_undone` |
//! | base64 (one level) | `scanner::track_runs` + `normalize::decode_run` | `base64_runs_are_decoded_and_the_same_value_is_one_detection` |
//! | known secret as hex, base64 at any alignment, percent | `known::KnownSet` | `known_secrets_in_every_encoding` |
//! | invalid UTF-8, binary | matching is on bytes (`(?-u)`) | `invalid_utf8_and_binary_are_fine`, `arbitrary_bytes_never_panic` |
//! | gzip/br, chunked transfer, SSE, WebSocket frames | not here: the inspector hands over decoded text | |
//!
//! Limits: a base64 run is decoded in pieces of [`MAX_BASE64_RUN`] characters (a secret straddling two
//! pieces of one huge run is missed); base64 inside base64 and escapes inside base64 are not decoded again.

pub mod egress;

mod engine;
mod known;
mod normalize;
mod redact;
mod rules;
mod scanner;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, OnceLock};

use engine::Engine;
use known::KnownSet;

pub use known::{KNOWN_SECRET_MAX_LEN, KNOWN_SECRET_MIN_LEN};
pub use normalize::{MAX_BASE64_RUN, MIN_BASE64_RUN};
pub use redact::{CONTEXT_MAX, MATCH_SHOWN_MAX, SNIPPET_HARD_MAX, SNIPPET_MAX};
pub use rules::MAX_RULE_LEN;
pub use scanner::Scanner;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A request, from the agent to the network.
    Outbound,
    /// A response, from the network to the agent.
    Inbound,
}

/// The threat types of CONTRACT §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ThreatType {
    /// A secret or sensitive file leaving.
    #[serde(rename = "EXFIL")]
    Exfil,
    /// Hostile commands arriving.
    #[serde(rename = "INJECTION")]
    Injection,
    /// A risky destination.
    #[serde(rename = "EGRESS")]
    Egress,
}

impl ThreatType {
    /// The wire name (`EXFIL`, `INJECTION`, `EGRESS`).
    pub fn as_str(self) -> &'static str {
        match self {
            ThreatType::Exfil => "EXFIL",
            ThreatType::Injection => "INJECTION",
            ThreatType::Egress => "EGRESS",
        }
    }
}

/// Severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Where in a message the scanned text came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Location {
    /// The request target (path and query).
    Target,
    /// One header value; the name is lowercase.
    Header(String),
    /// A message body (after transfer and content decoding).
    Body,
    /// A WebSocket message.
    WebSocket,
}

/// The upstream a message goes to or comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    /// Lowercase host name or IP literal, without brackets or a trailing dot.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Destination {
    /// A destination, with the host normalised (lowercase, no brackets, no trailing dot).
    pub fn new(host: &str, port: u16) -> Destination {
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
        Destination { host: host.to_ascii_lowercase(), port }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a [`Scanner`] needs to know about the text it is fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanContext {
    /// Request or response.
    pub direction: Direction,
    /// The upstream.
    pub dest: Destination,
    /// Which part of the message.
    pub location: Location,
}

impl ScanContext {
    /// A context.
    pub fn new(direction: Direction, dest: Destination, location: Location) -> ScanContext {
        ScanContext { direction, dest, location }
    }
}

/// One match, already redacted: nothing in here carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// Rule id (`ai_api_key`, `pipe_to_shell`, `known_secret` ...).
    pub pattern: &'static str,
    /// Threat type.
    pub threat_type: ThreatType,
    /// Severity.
    pub severity: Severity,
    /// Up to ~120 characters of context with every secret replaced by `[REDACTED:<pattern>:<fp>]`.
    pub snippet: String,
    /// First 8 hex digits of the sha256 of the matched value (stable across encodings).
    pub fingerprint: String,
    /// Where in the message.
    pub location: Location,
    /// How the text was decoded before it matched (`base64`, `percent`, `json`; `hex` for a known secret),
    /// if at all.
    pub decoded: Option<&'static str>,
}

/// A secret the operator's own configuration holds, with where it may legitimately go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSecret {
    /// The exact value (kept in memory only).
    pub value: String,
    /// A label for messages, never the value (`model_list[0].api_keys[0]`).
    pub label: String,
    /// Destinations where sending it in the named header is normal.
    pub allowed: Vec<AllowedUse>,
}

/// One legitimate use of a known secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedUse {
    /// Host name, or `*.domain`.
    pub host: String,
    /// Lowercase header name (`authorization`, `x-api-key` ...), or `path` for a token in the URL path
    /// (Telegram's `/bot<token>/`).
    pub header: String,
}

/// Options for building a [`Detector`].
#[derive(Debug, Clone, Default)]
pub struct DetectorOptions {
    /// Exact secrets to find in any encoding, with their legitimate uses. Each value must be
    /// [`KNOWN_SECRET_MIN_LEN`] to [`KNOWN_SECRET_MAX_LEN`] bytes long.
    pub known_secrets: Vec<KnownSecret>,
    /// Extra hosts (or `*.domain`) where an AI provider key in a credential header (`authorization`,
    /// `x-api-key`, `x-goog-api-key`, `x-subscription-token`, `api-key`, the Telegram path) is normal:
    /// the `api_base` hosts of the Picoclaw config. The built-in provider hosts need not be listed.
    pub provider_hosts: Vec<String>,
}

/// Why a detector could not be built (a bad rule or option; never the scanned bytes).
#[derive(Debug)]
pub struct DetectError(pub String);

impl fmt::Display for DetectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DetectError {}

/// The compiled rules and known secrets. Build once; clones share the compiled state.
///
/// Cost: building compiles about 40 regexes and three automata, so do it once (at startup or reload) and
/// clone. A [`Scanner`] holds, by construction, a window of at most 32 KiB plus the longest rule match
/// (about 1.4 KiB), plus an open base64 run of at most [`MAX_BASE64_RUN`] bytes. Scan throughput is in
/// `docs/PERFORMANCE.md` (about 300 MiB/s of ordinary chat JSON on one loaded core).
#[derive(Debug, Clone)]
pub struct Detector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: DetectorOptions,
    engine: Engine,
}

impl Detector {
    /// Compiles the rules. Fails only on a bad option, never later on input.
    pub fn new(options: DetectorOptions) -> Result<Detector, DetectError> {
        let known = KnownSet::new(&options.known_secrets)?;
        let engine = Engine::new(known, options.provider_hosts.clone())?;
        Ok(Detector { inner: Arc::new(Inner { options, engine }) })
    }

    /// The options it was built with.
    pub fn options(&self) -> &DetectorOptions {
        &self.inner.options
    }

    /// A streaming scanner for one piece of a message.
    pub fn scanner(&self, ctx: ScanContext) -> Scanner {
        Scanner::new(self.clone(), ctx)
    }

    /// Scans a whole buffer at once (same result as feeding it in chunks).
    pub fn scan(&self, ctx: ScanContext, text: &[u8]) -> Vec<Detection> {
        let mut out = Vec::new();
        let mut s = self.scanner(ctx);
        s.feed(text, &mut out);
        s.finish(&mut out);
        out
    }

    /// Like [`redact`], and also redacts this detector's known secrets in every encoding.
    pub fn redact(&self, text: &str) -> String {
        self.inner.engine.redactor.redact(text)
    }
}

/// Redacts every secret the rules recognise in `text` (and every URL query and credential), for any text
/// that is about to be written or shown. The one redaction function of every output path. Known secrets
/// need the detector that knows them: use [`Detector::redact`] there.
pub fn redact(text: &str) -> String {
    static DEFAULT: OnceLock<Option<Detector>> = OnceLock::new();
    match DEFAULT.get_or_init(|| Detector::new(DetectorOptions::default()).ok()) {
        Some(d) => d.redact(text),
        // Fail closed: the built-in rules always compile (a test proves it), but never show text unredacted.
        None => "[REDACTED]".to_owned(),
    }
}

/// One rule as seen from outside: what it reports and how badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// Pattern id as it appears in [`Detection::pattern`].
    pub id: &'static str,
    /// Threat type.
    pub threat_type: ThreatType,
    /// Severity.
    pub severity: Severity,
    /// The direction whose text it is matched against.
    pub direction: Direction,
}

/// Every pattern id the detector can report (`known_secret` included), once each, in table order.
pub fn rule_table() -> Vec<RuleInfo> {
    let mut out: Vec<RuleInfo> = Vec::new();
    for r in rules::EXFIL.iter().chain(rules::INJECTION) {
        if !out.iter().any(|o| o.id == r.id) {
            let direction = if r.threat == ThreatType::Injection { Direction::Inbound } else { Direction::Outbound };
            out.push(RuleInfo { id: r.id, threat_type: r.threat, severity: r.severity, direction });
        }
    }
    out.push(RuleInfo {
        id: "known_secret",
        threat_type: ThreatType::Exfil,
        severity: Severity::Critical,
        direction: Direction::Outbound,
    });
    out
}

/// First 8 hex digits of the sha256 of `value`: names a secret without revealing it.
pub fn fingerprint(value: &[u8]) -> String {
    hex::encode(&Sha256::digest(value)[..4])
}

/// One default detector per test binary: building compiles every rule, which in a debug build is slow
/// enough that tests looping over split points must not do it per iteration.
#[cfg(test)]
pub(crate) fn shared_default() -> Detector {
    static SHARED: std::sync::OnceLock<Detector> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| Detector::new(DetectorOptions::default()).expect("the built-in rules compile")).clone()
}
