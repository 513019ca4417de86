//! Reading the findings log back for `threats`: the current file and its rotations, newest first, with
//! filters. A corrupt or truncated line is skipped and counted, never fatal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::detect::{Severity, ThreatType};

/// File name of the current findings log; rotations are `findings.jsonl.1` (newest) to `.N`.
pub const LOG_FILE: &str = "findings.jsonl";

/// Filters of a query; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// At most this many findings.
    pub limit: Option<usize>,
    /// Only this threat type.
    pub threat_type: Option<ThreatType>,
    /// Only findings at or above this severity.
    pub min_severity: Option<Severity>,
    /// Only findings at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only destinations (`host:port`) matching this glob (`*`, `?`).
    pub dest_glob: Option<String>,
}

/// What a read found.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Matching findings as stored, newest first.
    pub findings: Vec<Value>,
    /// Lines that were not a valid finding.
    pub skipped_lines: u64,
}

/// The log files of `log_dir`, newest first: `findings.jsonl`, `findings.jsonl.1`, `.2` ...
pub fn log_files(log_dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix(LOG_FILE)?.strip_prefix('.')?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort();
    let current = log_dir.join(LOG_FILE);
    current.exists().then_some(current).into_iter().chain(rotated.into_iter().map(|(_, p)| p)).collect()
}

/// Reads matching findings, newest first, stopping once `limit` are found.
pub fn read(log_dir: &Path, q: &Query) -> io::Result<ReadResult> {
    let mut out = ReadResult::default();
    for file in log_files(log_dir) {
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            // Rotated away between listing and reading.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
        };
        for line in bytes.split(|b| *b == b'\n').rev().filter(|l| !l.is_empty()) {
            let Some((finding, time)) = parse_line(line) else {
                out.skipped_lines += 1;
                continue;
            };
            if matches(&finding, time, q) {
                out.findings.push(finding);
                if q.limit.is_some_and(|n| out.findings.len() >= n) {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

fn parse_line(line: &[u8]) -> Option<(Value, OffsetDateTime)> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let time = OffsetDateTime::parse(v.get("timestamp")?.as_str()?, &Rfc3339).ok()?;
    for key in ["threat_type", "severity", "pattern", "dest", "direction"] {
        v.get(key)?.as_str()?;
    }
    Some((v, time))
}

fn matches(v: &Value, time: OffsetDateTime, q: &Query) -> bool {
    if let Some(t) = q.threat_type {
        if v["threat_type"] != t.as_str() {
            return false;
        }
    }
    if let Some(min) = q.min_severity {
        match parse_severity(v["severity"].as_str().unwrap_or("")) {
            Some(s) if s >= min => {}
            _ => return false,
        }
    }
    if q.since.is_some_and(|since| time < since) {
        return false;
    }
    if let Some(glob) = &q.dest_glob {
        if !glob_match(glob.as_bytes(), v["dest"].as_str().unwrap_or("").as_bytes()) {
            return false;
        }
    }
    true
}

/// Parses a severity name.
pub fn parse_severity(s: &str) -> Option<Severity> {
    Some(match s.to_ascii_lowercase().as_str() {
        "info" => Severity::Info,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => return None,
    })
}

/// Parses a threat type name (any case).
pub fn parse_threat_type(s: &str) -> Option<ThreatType> {
    Some(match s.to_ascii_uppercase().as_str() {
        "EXFIL" => ThreatType::Exfil,
        "INJECTION" => ThreatType::Injection,
        "EGRESS" => ThreatType::Egress,
        _ => return None,
    })
}

/// Parses `--since`: a duration back from `now` (`90s`, `10m`, `2h`, `7d`) or an RFC 3339 time.
pub fn parse_since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let err = || format!("--since {text:?}: use a duration like 10m, 2h, 7d, or an RFC 3339 time");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| err())?;
    let d = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(err()),
    };
    now.checked_sub(d).ok_or_else(err)
}

/// Glob match with `*` (any run) and `?` (one byte), case-insensitive.
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with one backtrack point: linear for the patterns people type.
    let (mut p, mut t, mut star, mut mark) = (0, 0, None, 0);
    while t < text.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some(p);
                mark = t;
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some(s) => {
                    p = s + 1;
                    mark += 1;
                    t = mark;
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn rec(ts: &str, tt: &str, sev: &str, dest: &str) -> String {
        json!({"schema_version":"clawsec-traffic-finding/v1","platform":"picoclaw","direction":"outbound",
            "protocol":"http","threat_type":tt,"pattern":"p","severity":sev,"source":"127.0.0.1","dest":dest,
            "snippet":"[REDACTED]","timestamp":ts})
        .to_string()
    }

    fn fixture() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // .2 is oldest, then .1, then the current file; a corrupt line sits in the middle.
        fs::write(d.join("findings.jsonl.2"), rec("2026-01-01T00:00:00.000Z", "EXFIL", "high", "a.example:443") + "\n")
            .unwrap();
        fs::write(
            d.join("findings.jsonl.1"),
            format!(
                "{}\n{{\"truncated\n{}\n",
                rec("2026-01-02T00:00:00.000Z", "INJECTION", "critical", "b.example:443"),
                rec("2026-01-03T00:00:00.000Z", "EGRESS", "low", "169.254.169.254:80")
            ),
        )
        .unwrap();
        fs::write(
            d.join("findings.jsonl"),
            rec("2026-01-04T00:00:00.000Z", "EXFIL", "medium", "paste.example:443") + "\n",
        )
        .unwrap();
        fs::write(d.join("findings.jsonl.x"), "ignored").unwrap();
        tmp
    }

    fn days(r: &ReadResult) -> Vec<String> {
        r.findings.iter().map(|f| f["timestamp"].as_str().unwrap()[8..10].to_string()).collect()
    }

    #[test]
    fn newest_first_across_rotations_and_corrupt_lines_counted() {
        let tmp = fixture();
        let r = read(tmp.path(), &Query::default()).unwrap();
        assert_eq!(days(&r), ["04", "03", "02", "01"]);
        assert_eq!(r.skipped_lines, 1);
    }

    #[test]
    fn filters() {
        let tmp = fixture();
        let q = |f: fn(&mut Query)| {
            let mut q = Query::default();
            f(&mut q);
            days(&read(tmp.path(), &q).unwrap())
        };
        assert_eq!(q(|q| q.limit = Some(2)), ["04", "03"]);
        assert_eq!(q(|q| q.threat_type = Some(ThreatType::Exfil)), ["04", "01"]);
        assert_eq!(q(|q| q.min_severity = Some(Severity::High)), ["02", "01"]);
        assert_eq!(q(|q| q.since = Some(datetime!(2026-01-03 00:00 UTC))), ["04", "03"]);
        assert_eq!(q(|q| q.dest_glob = Some("*.example:443".into())), ["04", "02", "01"]);
        assert_eq!(q(|q| q.dest_glob = Some("169.254.*".into())), ["03"]);
    }

    #[test]
    fn missing_dir_reads_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let r = read(&tmp.path().join("none"), &Query::default()).unwrap();
        assert!(r.findings.is_empty() && r.skipped_lines == 0);
    }

    #[test]
    fn since_parsing() {
        let now = datetime!(2026-01-01 12:00 UTC);
        assert_eq!(parse_since("10m", now).unwrap(), datetime!(2026-01-01 11:50 UTC));
        assert_eq!(parse_since("2h", now).unwrap(), datetime!(2026-01-01 10:00 UTC));
        assert_eq!(parse_since("1d", now).unwrap(), datetime!(2025-12-31 12:00 UTC));
        assert_eq!(parse_since("2026-01-01T00:00:00Z", now).unwrap(), datetime!(2026-01-01 0:00 UTC));
        for bad in ["", "m", "10", "10w", "-1h", "soon"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"api.*.com:443", b"API.openai.com:443"));
        assert!(glob_match(b"?.b", b"a.b"));
        assert!(!glob_match(b"?.b", b"aa.b"));
        assert!(glob_match(b"*a*a*a*b", b"aaaaaaaaaaab"));
        assert!(!glob_match(b"*a*a*a*b", b"aaaaaaaaaaaa"));
    }
}
