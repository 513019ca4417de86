//! Destination rules (threat type EGRESS): cloud metadata endpoints, private networks, hosts outside the
//! operator's allow-list. Pure functions of the destination and the address it resolved to.
//!
//! Picoclaw's SSRF guard stops checking resolved targets once a proxy is in use (CONTRACT §8), so the proxy
//! checks the address it actually connects to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{fingerprint, Destination, Detection, Location, Severity, ThreatType};
use crate::config::HostPattern;

/// Host names of cloud metadata services.
pub const METADATA_HOSTS: &[&str] = &["metadata.google.internal", "metadata"];
/// IPv4 cloud metadata address (AWS, GCP, Azure, OpenStack ...).
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// IPv6 cloud metadata address (AWS).
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Every EGRESS rule for `dest`, connected (or about to connect) at `ip`, with the allow-list `allow`.
/// A metadata endpoint is reported as such, not also as a private address.
pub fn check(dest: &Destination, ip: Option<IpAddr>, allow: &[HostPattern]) -> Vec<Detection> {
    let mut out = Vec::new();
    if let Some(d) = metadata_endpoint(dest, ip) {
        out.push(d);
    } else if let Some(d) = ip.and_then(|ip| private_network(dest, ip)) {
        out.push(d);
    }
    out.extend(not_allowlisted(dest, allow));
    out
}

/// `metadata_endpoint` (high): the host is a metadata service name or the address is a metadata address.
pub fn metadata_endpoint(dest: &Destination, ip: Option<IpAddr>) -> Option<Detection> {
    let by_name = METADATA_HOSTS.contains(&dest.host.as_str()) || dest.host.parse::<IpAddr>().is_ok_and(is_metadata_ip);
    (by_name || ip.is_some_and(is_metadata_ip)).then(|| detection("metadata_endpoint", Severity::High, dest, ip))
}

/// `private_network` (medium): a loopback, private, link-local, CGNAT or unique-local address.
pub fn private_network(dest: &Destination, ip: IpAddr) -> Option<Detection> {
    is_private(ip).then(|| detection("private_network", Severity::Medium, dest, Some(ip)))
}

/// `egress_not_allowlisted` (low): the allow-list is non-empty and no pattern matches the host.
pub fn not_allowlisted(dest: &Destination, allow: &[HostPattern]) -> Option<Detection> {
    (!allow.is_empty() && !allow.iter().any(|p| p.matches(&dest.host)))
        .then(|| detection("egress_not_allowlisted", Severity::Low, dest, None))
}

/// Whether `ip` is a cloud metadata address (IPv4-mapped IPv6 included).
pub fn is_metadata_ip(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4 == METADATA_V4,
        IpAddr::V6(v6) => v6 == METADATA_V6,
    }
}

/// Whether `ip` is not a public unicast address: loopback, unspecified, RFC 1918, link-local, CGNAT
/// (100.64.0.0/10), "this network" (0.0.0.0/8), IPv6 unique-local (fc00::/7) or link-local (fe80::/10).
pub fn is_private(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn detection(pattern: &'static str, severity: Severity, dest: &Destination, ip: Option<IpAddr>) -> Detection {
    // The snippet names the destination only: host, port and the address; never a path or query.
    let snippet = match ip {
        Some(ip) if ip.to_string() != dest.host => format!("{dest} ({ip})"),
        _ => dest.to_string(),
    };
    Detection {
        pattern,
        threat_type: ThreatType::Egress,
        severity,
        snippet,
        fingerprint: fingerprint(dest.host.as_bytes()),
        location: Location::Target,
        decoded: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(h: &str) -> Destination {
        Destination::new(h, 80)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn patterns(p: &[&str]) -> Vec<HostPattern> {
        p.iter().map(|p| HostPattern::parse(p).unwrap()).collect()
    }

    fn names(d: &[Detection]) -> Vec<&str> {
        d.iter().map(|d| d.pattern).collect()
    }

    #[test]
    fn metadata_by_address_and_name() {
        for (host, addr) in [
            ("169.254.169.254", Some("169.254.169.254")),
            ("x.example", Some("169.254.169.254")),
            ("x.example", Some("fd00:ec2::254")),
            ("x.example", Some("::ffff:169.254.169.254")),
            ("metadata.google.internal", Some("127.0.0.1")),
            ("Metadata.Google.Internal.", None),
            ("[fd00:ec2::254]", None),
        ] {
            let d = check(&dest(host), addr.map(ip), &[]);
            assert_eq!(names(&d), ["metadata_endpoint"], "{host} {addr:?}");
            assert_eq!(d[0].severity, Severity::High);
            assert_eq!(d[0].threat_type, ThreatType::Egress);
        }
    }

    #[test]
    fn private_addresses_are_medium() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fd12::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            let d = check(&dest("h.example"), Some(ip(a)), &[]);
            assert_eq!(names(&d), ["private_network"], "{a}");
            assert_eq!(d[0].severity, Severity::Medium);
        }
    }

    #[test]
    fn public_addresses_are_quiet() {
        for a in ["1.1.1.1", "172.32.0.1", "100.128.0.1", "100.63.255.255", "2606:4700::1111", "fe00::1"] {
            assert!(check(&dest("h.example"), Some(ip(a)), &[]).is_empty(), "{a}");
        }
        assert!(check(&dest("h.example"), None, &[]).is_empty());
    }

    #[test]
    fn allow_list_only_when_non_empty() {
        let allow = patterns(&["api.openai.com", "*.anthropic.com"]);
        let public = Some(ip("1.1.1.1"));
        assert!(check(&dest("api.openai.com"), public, &allow).is_empty());
        assert!(check(&dest("API.anthropic.com"), public, &allow).is_empty());
        let d = check(&dest("anthropic.com"), public, &allow);
        assert_eq!(names(&d), ["egress_not_allowlisted"]);
        assert_eq!(d[0].severity, Severity::Low);
        assert_eq!(
            names(&check(&dest("evil.example"), Some(ip("10.0.0.1")), &allow)),
            ["private_network", "egress_not_allowlisted"]
        );
        assert!(check(&dest("evil.example"), public, &[]).is_empty());
    }

    #[test]
    fn snippet_names_only_the_destination() {
        let d = check(&Destination::new("h.example", 8080), Some(ip("10.0.0.1")), &[]);
        assert_eq!(d[0].snippet, "h.example:8080 (10.0.0.1)");
        assert_eq!(d[0].fingerprint, fingerprint(b"h.example"));
    }
}
