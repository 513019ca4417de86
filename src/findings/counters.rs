//! Counters since start, shared by the proxy, the inspection tasks and the findings writer. Plain atomics:
//! a status request reads them with [`Counters::snapshot`] without stopping anything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::detect::{Severity, ThreatType};

/// Live counters. All increments are relaxed: each counter is independent and read only for status.
#[derive(Debug, Default)]
pub struct Counters {
    connections: AtomicU64,
    exchanges: AtomicU64,
    bytes_scanned: AtomicU64,
    bytes_unscanned: AtomicU64,
    messages_inspected: AtomicU64,
    inspections_in_flight: AtomicU64,
    tunnels: AtomicU64,
    tunnel_bytes_up: AtomicU64,
    tunnel_bytes_down: AtomicU64,
    findings_exfil: AtomicU64,
    findings_injection: AtomicU64,
    findings_egress: AtomicU64,
    severity: [AtomicU64; 5],
    dedup_suppressed: AtomicU64,
    dropped: AtomicU64,
    client_tls_handshake_failures: AtomicU64,
}

/// A copy of the counters at one moment, for `status` (JSON field names are part of its schema).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// Client connections accepted.
    pub connections: u64,
    /// HTTP exchanges (requests) seen, CONNECT included.
    pub exchanges: u64,
    /// Bytes handed to the inspector (heads and bodies).
    pub bytes_scanned: u64,
    /// Body bytes forwarded without inspection because a budget was spent.
    pub bytes_unscanned: u64,
    /// HTTP messages (requests and responses) whose inspection has finished.
    pub messages_inspected: u64,
    /// Messages being inspected right now (a gauge, not a total).
    pub inspections_in_flight: u64,
    /// CONNECT tunnels forwarded blind (not inspected).
    pub tunnels: u64,
    /// Bytes from clients to upstreams through blind tunnels.
    pub tunnel_bytes_up: u64,
    /// Bytes from upstreams to clients through blind tunnels.
    pub tunnel_bytes_down: u64,
    /// Findings recorded (after dedup), by threat type (`EXFIL`, `INJECTION`, `EGRESS`).
    pub findings_by_threat_type: BTreeMap<String, u64>,
    /// Findings recorded (after dedup), by severity.
    pub findings_by_severity: BTreeMap<String, u64>,
    /// Findings not written because the same one was written within the dedup window.
    pub dedup_suppressed: u64,
    /// Findings lost because the log could not be written (or the writer queue was full).
    pub dropped: u64,
    /// Client TLS handshakes that failed (HTTPS inspection).
    pub client_tls_handshake_failures: u64,
}

const SEVERITIES: [Severity; 5] = [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// One accepted client connection.
    pub fn connection(&self) {
        add(&self.connections, 1);
    }

    /// One request seen.
    pub fn exchange(&self) {
        add(&self.exchanges, 1);
    }

    /// Bytes inspected and bytes left uninspected.
    pub fn scan(&self, scanned: u64, unscanned: u64) {
        add(&self.bytes_scanned, scanned);
        add(&self.bytes_unscanned, unscanned);
    }

    /// A message's inspection started.
    pub fn inspection_started(&self) {
        add(&self.inspections_in_flight, 1);
    }

    /// A message's inspection finished (its findings are queued for the writer).
    pub fn inspection_finished(&self) {
        self.inspections_in_flight.fetch_sub(1, Ordering::Relaxed);
        add(&self.messages_inspected, 1);
    }

    /// One blind tunnel opened.
    pub fn tunnel(&self) {
        add(&self.tunnels, 1);
    }

    /// Bytes carried by a blind tunnel (client to upstream, upstream to client).
    pub fn tunnel_bytes(&self, up: u64, down: u64) {
        add(&self.tunnel_bytes_up, up);
        add(&self.tunnel_bytes_down, down);
    }

    /// One finding recorded.
    pub fn finding(&self, threat: ThreatType, severity: Severity) {
        add(
            match threat {
                ThreatType::Exfil => &self.findings_exfil,
                ThreatType::Injection => &self.findings_injection,
                ThreatType::Egress => &self.findings_egress,
            },
            1,
        );
        let i = SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0);
        add(&self.severity[i], 1);
    }

    /// One finding suppressed by dedup.
    pub fn suppressed(&self) {
        add(&self.dedup_suppressed, 1);
    }

    /// One finding lost.
    pub fn dropped(&self) {
        add(&self.dropped, 1);
    }

    /// One failed client TLS handshake.
    pub fn client_tls_handshake_failure(&self) {
        add(&self.client_tls_handshake_failures, 1);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by_type = [
            (ThreatType::Exfil, &self.findings_exfil),
            (ThreatType::Injection, &self.findings_injection),
            (ThreatType::Egress, &self.findings_egress),
        ];
        CounterSnapshot {
            connections: get(&self.connections),
            exchanges: get(&self.exchanges),
            bytes_scanned: get(&self.bytes_scanned),
            bytes_unscanned: get(&self.bytes_unscanned),
            messages_inspected: get(&self.messages_inspected),
            inspections_in_flight: get(&self.inspections_in_flight),
            tunnels: get(&self.tunnels),
            tunnel_bytes_up: get(&self.tunnel_bytes_up),
            tunnel_bytes_down: get(&self.tunnel_bytes_down),
            findings_by_threat_type: by_type.iter().map(|(t, c)| (t.as_str().to_owned(), get(c))).collect(),
            findings_by_severity: SEVERITIES
                .iter()
                .zip(&self.severity)
                .map(|(s, c)| (s.as_str().to_owned(), get(c)))
                .collect(),
            dedup_suppressed: get(&self.dedup_suppressed),
            dropped: get(&self.dropped),
            client_tls_handshake_failures: get(&self.client_tls_handshake_failures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_every_type_and_severity() {
        let c = Counters::default();
        c.finding(ThreatType::Exfil, Severity::High);
        c.finding(ThreatType::Egress, Severity::Low);
        c.scan(10, 3);
        let s = c.snapshot();
        assert_eq!(s.findings_by_threat_type["EXFIL"], 1);
        assert_eq!(s.findings_by_threat_type["INJECTION"], 0);
        assert_eq!(s.findings_by_severity["high"], 1);
        assert_eq!(s.findings_by_severity["low"], 1);
        assert_eq!(s.findings_by_severity.len(), 5);
        assert_eq!((s.bytes_scanned, s.bytes_unscanned), (10, 3));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["findings_by_severity"]["critical"], 0);
    }
}
