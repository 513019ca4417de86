//! Findings: the record of CONTRACT §4, dedup, the JSONL writer, the status counters, and reading the log
//! back for `threats` ([`reader`]).
//!
//! The flow: the proxy turns each [`Detection`] into a [`Finding`] and hands it to a [`FindingSink`]; one
//! writer thread dedups it ([`dedup`]), redacts the line once more and appends it to `findings.jsonl`
//! ([`writer`]), counting what it wrote, suppressed or dropped in [`Counters`].

pub mod counters;
pub mod dedup;
pub mod reader;
pub mod writer;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::detect::{Destination, Detection, Direction, Location, Severity, ThreatType};

pub use counters::{CounterSnapshot, Counters};
pub use writer::{FileStore, FindingSink, FindingsWriter, LogStore, WriterOptions};

/// The `schema_version` of every record.
pub const SCHEMA_VERSION: &str = "clawsec-traffic-finding/v1";
/// The `platform` of every record.
pub const PLATFORM: &str = "picoclaw";

/// One finding as written to the log: the required fields of CONTRACT §4, then extras. Nothing in it carries
/// an unredacted secret: the snippet comes redacted from the detector, `dest` is `host:port` (never a URL),
/// and `location` names a header or part, never a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// Always [`PLATFORM`].
    pub platform: String,
    /// `outbound` (request) or `inbound` (response).
    pub direction: Direction,
    /// `http` or `https`.
    pub protocol: String,
    /// `EXFIL`, `INJECTION` or `EGRESS`.
    pub threat_type: ThreatType,
    /// Rule id.
    pub pattern: String,
    /// Severity.
    pub severity: Severity,
    /// The client's IP address.
    pub source: String,
    /// The upstream as `host:port`.
    pub dest: String,
    /// Redacted context.
    pub snippet: String,
    /// UTC, RFC 3339 with milliseconds and `Z`.
    pub timestamp: String,
    /// Where in the message (target, a header, body, WebSocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Short fingerprint of the matched value (first 8 hex digits of its sha256).
    #[serde(default)]
    pub fingerprint: String,
    /// How the text was decoded before it matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded: Option<String>,
}

/// Where a message was seen: what a [`Detection`] needs to become a [`Finding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Request or response.
    pub direction: Direction,
    /// `http` or `https`.
    pub protocol: &'static str,
    /// The client's IP address.
    pub source: IpAddr,
    /// The upstream.
    pub dest: Destination,
}

impl Finding {
    /// A record for `d`, seen at `origin`, stamped `now`.
    pub fn new(d: &Detection, origin: &Origin, now: OffsetDateTime) -> Finding {
        Finding {
            schema_version: SCHEMA_VERSION.into(),
            platform: PLATFORM.into(),
            direction: origin.direction,
            protocol: origin.protocol.into(),
            threat_type: d.threat_type,
            pattern: d.pattern.into(),
            severity: d.severity,
            source: origin.source.to_string(),
            dest: origin.dest.to_string(),
            snippet: d.snippet.clone(),
            timestamp: timestamp(now),
            location: Some(d.location.clone()),
            fingerprint: d.fingerprint.clone(),
            decoded: d.decoded.map(str::to_owned),
        }
    }
}

/// `2026-04-26T00:00:00.000Z`: UTC with exactly three fractional digits.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ScanContext;
    use time::macros::datetime;

    #[test]
    fn timestamp_has_millis_and_z() {
        assert_eq!(timestamp(datetime!(2026-04-26 00:00:00.0071 UTC)), "2026-04-26T00:00:00.007Z");
        assert_eq!(timestamp(datetime!(2026-04-26 02:00:00 +02:00)), "2026-04-26T00:00:00.000Z");
    }

    #[test]
    fn record_has_the_contract_fields_and_no_secret() {
        let det = crate::detect::shared_default();
        let dest = Destination::new("API.Example.com", 443);
        let ctx = ScanContext::new(Direction::Outbound, dest.clone(), Location::Body);
        let d = &det.scan(ctx, b"k=AKIAZ7QW3ERTY5UIOPLK")[0];
        let origin = Origin { direction: Direction::Outbound, protocol: "https", source: [127, 0, 0, 1].into(), dest };
        let f = Finding::new(d, &origin, datetime!(2026-04-26 00:00:00 UTC));
        let v = serde_json::to_value(&f).unwrap();
        for (k, want) in [
            ("schema_version", "clawsec-traffic-finding/v1"),
            ("platform", "picoclaw"),
            ("direction", "outbound"),
            ("protocol", "https"),
            ("threat_type", "EXFIL"),
            ("pattern", "aws_access_key"),
            ("severity", "high"),
            ("source", "127.0.0.1"),
            ("dest", "api.example.com:443"),
            ("timestamp", "2026-04-26T00:00:00.000Z"),
        ] {
            assert_eq!(v[k], want, "{k}");
        }
        assert!(!v.to_string().contains("AKIAZ7QW3ERTY5UIOPLK"));
        let back: Finding = serde_json::from_value(v).unwrap();
        assert_eq!(back, f);
    }
}
