//! Dedup: the same finding (pattern, destination, direction, fingerprint) is written once per window.
//! The table is bounded: expired entries are swept as it grows, and when it is full of live entries the
//! oldest is evicted (a repeat then gets written again, which is the safe direction to err).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Finding;
use crate::detect::ThreatType;

/// Most keys remembered at once.
pub const MAX_ENTRIES: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    pattern: String,
    dest: String,
    direction: crate::detect::Direction,
    fingerprint: String,
}

/// Remembers recently written findings.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    seen: HashMap<Key, Instant>,
}

impl Dedup {
    /// A table for `window` (zero: everything passes).
    pub fn new(window: Duration) -> Dedup {
        Dedup { window, seen: HashMap::new() }
    }

    /// Whether `f` should be written at `now`; remembers it when so.
    pub fn admit(&mut self, f: &Finding, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        // Destination findings are about the host: one per host and window, whatever the port.
        let dest = if f.threat_type == ThreatType::Egress { host_of(&f.dest).to_owned() } else { f.dest.clone() };
        let key = Key { pattern: f.pattern.clone(), dest, direction: f.direction, fingerprint: f.fingerprint.clone() };
        if let Some(at) = self.seen.get(&key) {
            if now.saturating_duration_since(*at) < self.window {
                return false;
            }
        }
        if self.seen.len() >= MAX_ENTRIES {
            let window = self.window;
            self.seen.retain(|_, at| now.saturating_duration_since(*at) < window);
            if self.seen.len() >= MAX_ENTRIES {
                if let Some(oldest) = self.seen.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()) {
                    self.seen.remove(&oldest);
                }
            }
        }
        self.seen.insert(key, now);
        true
    }
}

fn host_of(dest: &str) -> &str {
    dest.rsplit_once(':').map_or(dest, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Direction, Severity};

    fn finding(pattern: &str, dest: &str, fp: &str, threat: ThreatType) -> Finding {
        Finding {
            schema_version: String::new(),
            platform: String::new(),
            direction: Direction::Outbound,
            protocol: "http".into(),
            threat_type: threat,
            pattern: pattern.into(),
            severity: Severity::High,
            source: "127.0.0.1".into(),
            dest: dest.into(),
            snippet: String::new(),
            timestamp: String::new(),
            location: None,
            fingerprint: fp.into(),
            decoded: None,
        }
    }

    #[test]
    fn same_finding_once_per_window() {
        let mut d = Dedup::new(Duration::from_secs(60));
        let t = Instant::now();
        let f = finding("aws_access_key", "a:80", "abcd", ThreatType::Exfil);
        assert!(d.admit(&f, t));
        assert!(!d.admit(&f, t + Duration::from_secs(59)));
        assert!(d.admit(&f, t + Duration::from_secs(61)));
        assert!(d.admit(&finding("aws_access_key", "a:80", "other", ThreatType::Exfil), t));
        assert!(d.admit(&finding("aws_access_key", "b:80", "abcd", ThreatType::Exfil), t));
    }

    #[test]
    fn egress_is_per_host_and_zero_window_admits_all() {
        let mut d = Dedup::new(Duration::from_secs(60));
        let t = Instant::now();
        assert!(d.admit(&finding("egress_not_allowlisted", "x.example:80", "f", ThreatType::Egress), t));
        assert!(!d.admit(&finding("egress_not_allowlisted", "x.example:443", "f", ThreatType::Egress), t));
        let mut none = Dedup::new(Duration::ZERO);
        let f = finding("p", "a:1", "f", ThreatType::Exfil);
        assert!(none.admit(&f, t) && none.admit(&f, t));
    }

    #[test]
    fn table_stays_bounded() {
        let mut d = Dedup::new(Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            assert!(d.admit(&finding("p", "a:1", &i.to_string(), ThreatType::Exfil), t));
        }
        assert!(d.seen.len() <= MAX_ENTRIES);
    }
}
