//! The compiled rule set and the windowed matcher shared by the streaming scanner and the base64 lane.
//!
//! Matching a window gives exactly the matches a scan of the whole stream gives, because of three facts:
//! every rule's match is at most `max_len` bytes long; a match is accepted only if it starts before
//! `limit`, and the window holds at least `max_len` + a margin bytes past `limit`, so the match and the
//! byte after it (for `\b`) are inside the window; and each rule resumes where its previous match ended
//! (`LaneState::next`), which is where a whole-buffer `find_iter` would resume too.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use super::known::{carrier_matches, KnownSet};
use super::normalize::Decoded;
use super::redact::{self, Redactor};
use super::rules::{self, host_matches, Rule, EXFIL, INJECTION, MAX_RULE_LEN};
use super::{DetectError, Detection, Direction, ScanContext, Severity, ThreatType};

/// Headers that carry credentials; configured provider hosts may receive keys in them.
pub(crate) const CREDENTIAL_HEADERS: &[&str] =
    &["authorization", "x-api-key", "x-goog-api-key", "x-subscription-token", "api-key", "path"];

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub rule: &'static Rule,
    pub re: Regex,
    /// Index of the `v` capture group, if the rule has one.
    pub group: Option<usize>,
    pub max_len: usize,
}

/// All rules, the keyword automaton and the known secrets.
#[derive(Debug)]
pub(crate) struct Engine {
    pub rules: Vec<Compiled>,
    /// Keyword automaton (ASCII case-insensitive); `kw_rules[pattern]` lists the rules a keyword enables.
    kw: AhoCorasick,
    kw_rules: Vec<Vec<usize>>,
    pub known: KnownSet,
    /// Longest match of any rule or known-secret pattern.
    pub max_len: usize,
    pub extra_hosts: Vec<String>,
    pub redactor: Redactor,
}

/// Where a lane's rules resume.
#[derive(Debug, Clone)]
pub(crate) struct LaneState {
    pub next: Vec<u64>,
    pub known_next: u64,
}

impl LaneState {
    pub(crate) fn new(rules: usize) -> LaneState {
        LaneState { next: vec![0; rules], known_next: 0 }
    }
}

/// A detection waiting to be released in stream order.
#[derive(Debug, Clone)]
pub(crate) struct Cand {
    /// Position in the normalised stream used to order detections.
    pub anchor: u64,
    /// 0 = the normalised stream, 1 = a decoded base64 run.
    pub lane: u8,
    /// Rule index, or `usize::MAX` for a known secret.
    pub rule: usize,
    pub end: u64,
    pub det: Detection,
}

impl Cand {
    pub(crate) fn key(&self) -> (u64, u8, usize, u64) {
        (self.anchor, self.lane, self.rule, self.end)
    }
}

/// A window of one lane.
pub(crate) struct Window<'a> {
    pub bytes: &'a [u8],
    /// Stream offset of `bytes[0]`.
    pub base: u64,
    /// Accept matches starting before this offset.
    pub limit: u64,
    /// Decoded stretches of the normalised stream (empty for base64 lanes).
    pub marks: &'a [(u64, u64, Decoded)],
    /// `Some(start)` for a decoded base64 run starting at `start` in the normalised stream.
    pub base64_at: Option<u64>,
    /// The stream ends at the end of `bytes`.
    pub at_end: bool,
}

fn direction_of(threat: ThreatType) -> Direction {
    match threat {
        ThreatType::Injection => Direction::Inbound,
        ThreatType::Exfil | ThreatType::Egress => Direction::Outbound,
    }
}

/// Compiles one rule, checking the invariants the streaming scanner relies on.
pub(crate) fn compile(rule: &'static Rule) -> Result<Compiled, DetectError> {
    let bad = |why: String| DetectError(format!("rule {:?} ({}): {why}", rule.id, rule.regex));
    if rule.id.is_empty() {
        return Err(bad("empty id".into()));
    }
    if rule.keywords.is_empty() || rule.keywords.iter().any(|k| k.is_empty() || k.to_ascii_lowercase() != *k) {
        return Err(bad("keywords must be non-empty and lowercase".into()));
    }
    if !rule.regex.starts_with("(?-u)") {
        return Err(bad("regex must start with (?-u)".into()));
    }
    let hir =
        regex_syntax::ParserBuilder::new().utf8(false).build().parse(rule.regex).map_err(|e| bad(e.to_string()))?;
    let max_len = match hir.properties().maximum_len() {
        Some(n) if n <= MAX_RULE_LEN => n,
        Some(n) => return Err(bad(format!("matches up to {n} bytes, more than {MAX_RULE_LEN}"))),
        None => return Err(bad("unbounded match length".into())),
    };
    if hir.properties().minimum_len().unwrap_or(0) == 0 {
        return Err(bad("can match the empty string".into()));
    }
    let re = RegexBuilder::new(rule.regex).size_limit(4 << 20).build().map_err(|e| bad(e.to_string()))?;
    let group = re.capture_names().position(|n| n == Some("v"));
    Ok(Compiled { rule, re, group, max_len })
}

impl Engine {
    pub(crate) fn new(known: KnownSet, extra_hosts: Vec<String>) -> Result<Engine, DetectError> {
        let mut compiled = Vec::new();
        for rule in EXFIL.iter().chain(INJECTION) {
            compiled.push(compile(rule)?);
        }
        // A keyword that contains another is dropped and its rules hang on the shorter one (which occurs
        // wherever the longer does). With no keyword inside another, a leftmost search resumed one byte
        // after each hit sees every keyword occurrence, which an overlapping search would also see, but
        // with the automaton's prefilter.
        let mut all: Vec<&'static str> = compiled.iter().flat_map(|c| c.rule.keywords.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        let keywords: Vec<&'static str> =
            all.iter().copied().filter(|k| !all.iter().any(|o| o != k && k.contains(o))).collect();
        let mut kw_rules: Vec<Vec<usize>> = vec![Vec::new(); keywords.len()];
        for (i, c) in compiled.iter().enumerate() {
            for k in c.rule.keywords {
                for (p, kept) in keywords.iter().enumerate() {
                    if k.contains(kept) && !kw_rules[p].contains(&i) {
                        kw_rules[p].push(i);
                    }
                }
            }
        }
        let kw = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            // A few dozen short keywords: the full DFA is small and the fastest to search.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&keywords)
            .map_err(|e| DetectError(format!("keywords: {e}")))?;
        let max_len = compiled.iter().map(|c| c.max_len).chain([known.max_len]).max().unwrap_or(0);
        let redactor = Redactor::new(&compiled, &known)?;
        let extra_hosts = extra_hosts.into_iter().map(|h| h.trim_end_matches('.').to_ascii_lowercase()).collect();
        Ok(Engine { rules: compiled, kw, kw_rules, known, max_len, extra_hosts, redactor })
    }

    /// Whether a provider key matched by `rule` is in its normal place (its credential header to its
    /// provider's host, or to a configured provider host).
    fn provider_allowed(&self, rule: &Rule, ctx: &ScanContext) -> bool {
        let Some(p) = rule.provider else { return false };
        let host = ctx.dest.host.as_str();
        let own = p.carriers.iter().any(|c| carrier_matches(c, &ctx.location))
            && p.hosts.iter().any(|h| host_matches(h, host));
        let configured = CREDENTIAL_HEADERS.iter().any(|c| carrier_matches(c, &ctx.location))
            && self.extra_hosts.iter().any(|h| host_matches(h, host));
        own || configured
    }

    /// Finds the matches of `w` that start in `[lane.next, w.limit)` and pushes them as candidates.
    pub(crate) fn scan_window(&self, lane: &mut LaneState, w: &Window<'_>, ctx: &ScanContext, out: &mut Vec<Cand>) {
        let end = w.base + w.bytes.len() as u64;
        // Which rules have a keyword in this window.
        let mut active = vec![false; self.rules.len()];
        let mut wanted = 0usize;
        for (i, c) in self.rules.iter().enumerate() {
            if direction_of(c.rule.threat) == ctx.direction {
                wanted += 1;
            } else {
                active[i] = true; // never run; marked so the early exit below can count
            }
        }
        let mut seen_active = 0usize;
        let mut at = 0;
        while seen_active < wanted && at < w.bytes.len() {
            let Some(m) = self.kw.find(aho_corasick::Input::new(w.bytes).span(at..w.bytes.len())) else { break };
            for &r in &self.kw_rules[m.pattern().as_usize()] {
                if !active[r] {
                    active[r] = true;
                    seen_active += 1;
                }
            }
            at = m.start() + 1;
        }
        for (i, c) in self.rules.iter().enumerate() {
            if direction_of(c.rule.threat) != ctx.direction {
                continue;
            }
            let mut pos = lane.next[i].max(w.base);
            if active[i] {
                while pos < w.limit && pos < end {
                    let at = (pos - w.base) as usize;
                    let (ms, me, vs, ve) = match c.group {
                        None => match c.re.find_at(w.bytes, at) {
                            Some(m) => (m.start(), m.end(), m.start(), m.end()),
                            None => break,
                        },
                        Some(g) => match c.re.captures_at(w.bytes, at) {
                            Some(caps) => {
                                let (Some(m), Some(v)) = (caps.get(0), caps.get(g)) else { break };
                                (m.start(), m.end(), v.start(), v.end())
                            }
                            None => break,
                        },
                    };
                    if w.base + ms as u64 >= w.limit {
                        break;
                    }
                    pos = w.base + me.max(ms + 1) as u64;
                    self.on_rule_match(i, w, ctx, (ms, me), (vs, ve), out);
                }
            }
            lane.next[i] = pos.max(w.limit.min(end));
        }
        if ctx.direction == Direction::Outbound {
            self.scan_known(lane, w, ctx, out);
        }
    }

    fn scan_known(&self, lane: &mut LaneState, w: &Window<'_>, ctx: &ScanContext, out: &mut Vec<Cand>) {
        let end = w.base + w.bytes.len() as u64;
        let Some(ac) = &self.known.ac else { return };
        let mut pos = lane.known_next.max(w.base);
        while pos < w.limit && pos < end {
            let input = aho_corasick::Input::new(w.bytes).span((pos - w.base) as usize..w.bytes.len());
            let Some(m) = ac.find(input) else { break };
            if w.base + m.start() as u64 >= w.limit {
                break;
            }
            pos = w.base + m.end() as u64;
            let Some(&(secret, how)) = self.known.patterns.get(m.pattern().as_usize()) else { continue };
            if self.known.allowed(secret, &ctx.location, &ctx.dest.host) {
                continue;
            }
            let fp = self.known.fingerprints.get(secret).cloned().unwrap_or_default();
            let decoded = how.or_else(|| self.decoded_by(w, m.start(), m.end()));
            let snippet = self.snippet(w, (m.start(), m.end()), (m.start(), m.end()), Some(("known_secret", &fp)));
            let det = Detection {
                pattern: "known_secret",
                threat_type: ThreatType::Exfil,
                severity: Severity::Critical,
                snippet,
                fingerprint: fp,
                location: ctx.location.clone(),
                decoded,
            };
            out.push(self.cand(w, m.start(), m.end(), usize::MAX, det));
        }
        lane.known_next = pos.max(w.limit.min(end));
    }

    fn on_rule_match(
        &self,
        i: usize,
        w: &Window<'_>,
        ctx: &ScanContext,
        (ms, me): (usize, usize),
        (vs, ve): (usize, usize),
        out: &mut Vec<Cand>,
    ) {
        let c = &self.rules[i];
        let value = &w.bytes[vs..ve];
        if !rules::check(c.rule.check, value) {
            return;
        }
        let fp = super::fingerprint(value);
        // A configured secret is reported (or allowed) as `known_secret`, never twice.
        if self.known.fingerprints.contains(&fp) {
            return;
        }
        if self.provider_allowed(c.rule, ctx) {
            return;
        }
        let label = if c.rule.secret { Some((c.rule.id, fp.as_str())) } else { None };
        let snippet = self.snippet(w, (ms, me), (vs, ve), label);
        let det = Detection {
            pattern: c.rule.id,
            threat_type: c.rule.threat,
            severity: c.rule.severity,
            snippet,
            fingerprint: fp.clone(),
            location: ctx.location.clone(),
            decoded: self.decoded_by(w, ms, me),
        };
        out.push(self.cand(w, ms, me, i, det));
    }

    fn cand(&self, w: &Window<'_>, start: usize, end: usize, rule: usize, det: Detection) -> Cand {
        let (anchor, lane) = match w.base64_at {
            // Four base64 characters carry three bytes.
            Some(run) => (run + (start as u64) * 4 / 3, 1),
            None => (w.base + start as u64, 0),
        };
        Cand { anchor, lane, rule, end: w.base + end as u64, det }
    }

    /// How the bytes `[s, e)` of the window were decoded, if they were.
    fn decoded_by(&self, w: &Window<'_>, s: usize, e: usize) -> Option<&'static str> {
        if w.base64_at.is_some() {
            return Some("base64");
        }
        let (s, e) = (w.base + s as u64, w.base + e as u64);
        w.marks.iter().find(|(ms, me, _)| *ms < e && *me > s).map(|(_, _, kind)| kind.name())
    }

    /// Context around a match, every secret in it redacted; at most about [`redact::SNIPPET_MAX`] characters
    /// plus the redaction labels.
    fn snippet(
        &self,
        w: &Window<'_>,
        (ms, me): (usize, usize),
        (vs, ve): (usize, usize),
        label: Option<(&str, &str)>,
    ) -> String {
        let bytes = w.bytes;
        let shown_len = (me - ms).min(redact::MATCH_SHOWN_MAX);
        let ctx = (redact::SNIPPET_MAX.saturating_sub(shown_len) / 2).min(redact::CONTEXT_MAX);
        // Before: cut at a separator so no partial token (which could be part of a secret) is shown,
        // unless the context reaches the start of the stream.
        let b0 = ms.saturating_sub(ctx);
        let mut before = &bytes[b0..ms];
        let from_stream_start = w.base == 0 && b0 == 0;
        if !from_stream_start {
            before = match before.iter().position(|b| redact::is_separator(*b)) {
                Some(p) => &before[p..],
                None => &[],
            };
        }
        let a1 = (me + ctx).min(bytes.len());
        let mut after = &bytes[me..a1];
        let to_stream_end = w.at_end && a1 == bytes.len();
        if !to_stream_end {
            after = match after.iter().rposition(|b| redact::is_separator(*b)) {
                Some(p) => &after[..=p],
                None => &[],
            };
        }
        let mut text: Vec<u8> = Vec::with_capacity(before.len() + shown_len + after.len() + 48);
        text.extend_from_slice(before);
        match label {
            Some((id, fp)) => {
                text.extend_from_slice(&bytes[ms..vs]);
                text.extend_from_slice(format!("[REDACTED:{id}:{fp}]").as_bytes());
                text.extend_from_slice(&bytes[ve..me]);
            }
            None if me - ms > redact::MATCH_SHOWN_MAX => {
                let mut cut = ms + redact::MATCH_SHOWN_MAX;
                // Do not end inside a token (the shown command shape stays, a half value does not).
                if let Some(p) = bytes[ms..cut].iter().rposition(|b| redact::is_separator(*b)) {
                    cut = ms + p + 1;
                }
                text.extend_from_slice(&bytes[ms..cut]);
                text.extend_from_slice("…".as_bytes());
            }
            None => text.extend_from_slice(&bytes[ms..me]),
        }
        text.extend_from_slice(after);
        let printable: Vec<u8> = text
            .iter()
            .map(|b| match b {
                b'\n' | b'\r' | b'\t' => b' ',
                0..=0x1f | 0x7f => b'.',
                other => *other,
            })
            .collect();
        let mut snippet = self.redactor.redact(&String::from_utf8_lossy(&printable));
        // Labels are longer than what they replace; a context dense with tiny secrets (URL queries)
        // could grow far. Cutting only removes text, so it can never reveal anything.
        if let Some((cut, _)) = snippet.char_indices().nth(redact::SNIPPET_HARD_MAX) {
            snippet.truncate(cut);
            snippet.push('…');
        }
        snippet
    }
}
