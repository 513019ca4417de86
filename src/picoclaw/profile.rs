//! The posture fragment for `picoclaw-security-guardian` (schema `clawsec-traffic-posture/v1`, CONTRACT §6).
//!
//! The consumer hashes the raw bytes of the file and reports ANY change as critical drift, so the same
//! posture must give identical bytes: keys sorted recursively, 2-space indent, trailing newline, and a
//! `generated_at` that only moves when the posture does. Without `--generated-at`, it is the time the
//! posture (every other field) was first exported in its current form, kept in `<home>/profile-state.json`.
//!
//! The consumer also scans watched files for risky-looking substrings ([`CONSUMER_TRIGGERS`]); the fragment
//! carries no pattern names, secrets, or paths, and a test holds that list against real output.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Config;
use crate::findings::timestamp;
use crate::home;
use crate::monitor::state::{self, Observed};

/// File in the home that remembers when the posture last changed (for a stable `generated_at`).
pub const STATE_FILE: &str = "profile-state.json";

/// Schema of the fragment.
pub const SCHEMA: &str = "clawsec-traffic-posture/v1";

/// Substrings the consumer's heuristics react to; none may appear in the fragment.
pub const CONSUMER_TRIGGERS: &[&str] = &[
    "shell",
    "filesystem",
    "code_execution",
    "cron",
    "schedule",
    "mcp",
    "allow_unsigned",
    "skip_signature",
    "insecure_skip_verify",
    "0.0.0.0",
    "\"public\": true",
];

/// What the profile says, gathered from the live system (or given by a test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    /// `running`, `stopped` or `stale`.
    pub monitor_status: &'static str,
    /// Whether HTTPS is inspected (the running monitor's setting, else the config's).
    pub https_inspection: bool,
    /// SHA-256 fingerprint of the guardian CA, when one exists.
    pub ca_fingerprint_sha256: Option<String>,
    /// sha256 of the canonical effective config.
    pub config_sha256: String,
    /// sha256 of the current findings log (of empty input when there is none).
    pub finding_log_sha256: String,
    /// Findings in the current log by threat type.
    pub findings_by_threat_type: BTreeMap<String, u64>,
    /// Findings in the current log by severity.
    pub findings_by_severity: BTreeMap<String, u64>,
    /// Whether the proxy listens on loopback only.
    pub listen_loopback_only: bool,
    /// Whether clients must present the per-start credential.
    pub proxy_auth: bool,
}

impl Posture {
    /// Gathers the posture of the guardian configured by `cfg`. `ca_fingerprint` is the current CA's, if any.
    pub fn gather(cfg: &Config, ca_fingerprint: Option<String>) -> io::Result<Posture> {
        let observed = state::observe(&cfg.home);
        let (monitor_status, https_inspection) = match &observed {
            Observed::Running(s) => ("running", s.https_inspection),
            Observed::Stopped => ("stopped", cfg.https_inspection),
            Observed::Stale(_) => ("stale", cfg.https_inspection),
        };
        let log = cfg.log_dir.join("findings.jsonl");
        let bytes = match fs::read(&log) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", log.display()))),
        };
        let (by_type, by_severity) = count_findings(&bytes);
        Ok(Posture {
            monitor_status,
            https_inspection,
            ca_fingerprint_sha256: ca_fingerprint,
            config_sha256: cfg.sha256(),
            finding_log_sha256: sha256_hex(&bytes),
            findings_by_threat_type: by_type,
            findings_by_severity: by_severity,
            listen_loopback_only: cfg.listen.0.ip().is_loopback(),
            proxy_auth: cfg.proxy_auth,
        })
    }

    /// The fragment without `generated_at`.
    fn fields(&self) -> Value {
        json!({
            "schema_version": SCHEMA,
            "platform": "picoclaw",
            "monitor_status": self.monitor_status,
            "mode": "detect",
            "https_inspection": self.https_inspection,
            "ca_fingerprint_sha256": self.ca_fingerprint_sha256,
            "config_sha256": self.config_sha256,
            "finding_log_sha256": self.finding_log_sha256,
            "findings_by_threat_type": self.findings_by_threat_type,
            "findings_by_severity": self.findings_by_severity,
            "listen_loopback_only": self.listen_loopback_only,
            "proxy_auth": self.proxy_auth,
        })
    }

    /// The complete fragment.
    pub fn fragment(&self, generated_at: &str) -> Value {
        let mut v = self.fields();
        if let Value::Object(m) = &mut v {
            m.insert("generated_at".into(), Value::String(generated_at.into()));
        }
        v
    }
}

/// Counts findings by threat type and severity; every known category is present (zero when absent) so
/// that the key set never changes. Lines that do not parse are skipped.
fn count_findings(log: &[u8]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut by_type: BTreeMap<String, u64> =
        ["EXFIL", "INJECTION", "EGRESS"].iter().map(|k| (k.to_string(), 0)).collect();
    let mut by_sev: BTreeMap<String, u64> =
        ["critical", "high", "medium", "low", "info"].iter().map(|k| (k.to_string(), 0)).collect();
    for line in log.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(line) else { continue };
        if let Some(n) = v["threat_type"].as_str().and_then(|t| by_type.get_mut(t)) {
            *n += 1;
        }
        if let Some(n) = v["severity"].as_str().and_then(|s| by_sev.get_mut(s)) {
            *n += 1;
        }
    }
    (by_type, by_sev)
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The file bytes: sorted keys (serde_json's map is ordered), 2-space indent, trailing newline.
pub fn render(fragment: &Value) -> String {
    let mut s = serde_json::to_string_pretty(fragment).unwrap_or_default();
    s.push('\n');
    s
}

/// sha256 of the compact sorted JSON.
pub fn canonical_sha256(fragment: &Value) -> String {
    sha256_hex(fragment.to_string().as_bytes())
}

/// The result of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Where it was written.
    pub output: PathBuf,
    /// sha256 of the compact sorted JSON.
    pub canonical_sha256: String,
    /// Whether the file's bytes changed.
    pub changed: bool,
}

/// Writes the fragment for `posture` to `output`. `generated_at` overrides the stable timestamp;
/// `state_file` remembers when the posture last changed.
pub fn export(
    posture: &Posture,
    output: &Path,
    generated_at: Option<&str>,
    state_file: &Path,
    now: OffsetDateTime,
) -> io::Result<Exported> {
    let digest = canonical_sha256(&posture.fields());
    let stamp = match generated_at {
        Some(given) => given.to_owned(),
        None => stable_timestamp(state_file, &digest, now)?,
    };
    let fragment = posture.fragment(&stamp);
    let bytes = render(&fragment);
    let changed = fs::read(output).map(|old| old != bytes.as_bytes()).unwrap_or(true);
    if changed {
        home::write_private_atomic(output, bytes.as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", output.display())))?;
    }
    Ok(Exported { output: output.to_path_buf(), canonical_sha256: canonical_sha256(&fragment), changed })
}

/// The time the posture with `digest` was first seen; records `now` when it is new.
fn stable_timestamp(state_file: &Path, digest: &str, now: OffsetDateTime) -> io::Result<String> {
    if let Ok(bytes) = fs::read(state_file) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            if v["posture_sha256"] == digest {
                if let Some(at) = v["generated_at"].as_str() {
                    return Ok(at.to_owned());
                }
            }
        }
    }
    let at = timestamp(now);
    if let Some(dir) = state_file.parent() {
        home::ensure_private_dir(dir).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let record = json!({"posture_sha256": digest, "generated_at": at});
    home::write_private_atomic(state_file, record.to_string().as_bytes())?;
    Ok(at)
}

/// Parses and normalises an operator-given RFC 3339 time.
pub fn parse_generated_at(text: &str) -> Result<String, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(timestamp)
        .map_err(|e| format!("--generated-at {text:?} is not an RFC 3339 time like 2026-04-26T00:00:00.000Z: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn posture() -> Posture {
        let (by_type, by_sev) = count_findings(b"");
        Posture {
            monitor_status: "stopped",
            https_inspection: false,
            ca_fingerprint_sha256: None,
            config_sha256: "c".repeat(64),
            finding_log_sha256: sha256_hex(b""),
            findings_by_threat_type: by_type,
            findings_by_severity: by_sev,
            listen_loopback_only: true,
            proxy_auth: true,
        }
    }

    #[test]
    fn timestamps_have_millis_and_z() {
        assert_eq!(timestamp(datetime!(2026-04-26 00:00:00 UTC)), "2026-04-26T00:00:00.000Z");
        assert_eq!(timestamp(datetime!(2026-04-26 01:02:03.456789 UTC)), "2026-04-26T01:02:03.456Z");
        assert_eq!(timestamp(datetime!(2026-04-26 02:00:00 +02:00)), "2026-04-26T00:00:00.000Z");
        assert_eq!(parse_generated_at("2026-04-26T00:00:00Z").unwrap(), "2026-04-26T00:00:00.000Z");
        assert!(parse_generated_at("yesterday").is_err());
    }

    #[test]
    fn counts_skip_corrupt_lines_and_keep_every_key() {
        let log = b"{\"threat_type\":\"EXFIL\",\"severity\":\"high\"}\n{broken\n{\"threat_type\":\"EGRESS\",\"severity\":\"info\"}\n";
        let (t, s) = count_findings(log);
        assert_eq!((t["EXFIL"], t["INJECTION"], t["EGRESS"]), (1, 0, 1));
        assert_eq!((s["high"], s["info"], s["critical"]), (1, 1, 0));
    }

    #[test]
    fn same_posture_same_bytes_and_stable_timestamp() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("profile.json");
        let st = tmp.path().join("state/profile-state.json");
        let p = posture();
        let a = export(&p, &out, None, &st, datetime!(2026-01-01 00:00:00 UTC)).unwrap();
        let first = fs::read(&out).unwrap();
        let b = export(&p, &out, None, &st, datetime!(2026-02-01 00:00:00 UTC)).unwrap();
        assert_eq!(first, fs::read(&out).unwrap());
        assert_eq!(a.canonical_sha256, b.canonical_sha256);
        assert!(a.changed && !b.changed);
        let v: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(v["generated_at"], "2026-01-01T00:00:00.000Z");

        let mut changed = p.clone();
        changed.monitor_status = "running";
        export(&changed, &out, None, &st, datetime!(2026-03-01 00:00:00 UTC)).unwrap();
        let v: Value = serde_json::from_slice(&fs::read(&out).unwrap()).unwrap();
        assert_eq!(v["generated_at"], "2026-03-01T00:00:00.000Z");
        assert_eq!(v["monitor_status"], "running");
    }

    #[test]
    fn format_is_sorted_indented_with_newline_and_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("p.json");
        let e = export(
            &posture(),
            &out,
            Some("2026-04-26T00:00:00.000Z"),
            &tmp.path().join("s"),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let text = fs::read_to_string(&out).unwrap();
        assert!(text.ends_with("}\n") && text.starts_with("{\n  \""));
        let keys: Vec<&str> =
            text.lines().filter(|l| l.starts_with("  \"")).map(|l| l.split('"').nth(1).unwrap()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        // The digest is the sha256 of the compact sorted JSON, recomputed here independently.
        let v: Value = serde_json::from_str(&text).unwrap();
        let compact = serde_json::to_string(&v).unwrap();
        assert_eq!(e.canonical_sha256, hex::encode(Sha256::digest(compact.as_bytes())));
        assert!(!tmp.path().join("s").exists(), "an explicit generated_at records nothing");
    }

    #[test]
    fn no_consumer_trigger_appears() {
        let mut p = posture();
        p.ca_fingerprint_sha256 = Some("ab".repeat(32));
        p.monitor_status = "running";
        let text = render(&p.fragment("2026-04-26T00:00:00.000Z"));
        for t in CONSUMER_TRIGGERS {
            assert!(!text.contains(t), "fragment contains {t:?}");
        }
        // token/secret/password/api_key followed by ':' or '=' and 8+ characters.
        let re = regex::Regex::new(r#"(?i)(token|secret|password|api_key)"?\s*[:=]\s*"?[^\s"]{8,}"#).unwrap();
        assert!(!re.is_match(&text), "{text}");
    }

    #[test]
    fn symlink_output_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.json");
        fs::write(&real, b"x").unwrap();
        let link = tmp.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(export(
            &posture(),
            &link,
            Some("2026-04-26T00:00:00.000Z"),
            &tmp.path().join("s"),
            OffsetDateTime::now_utc()
        )
        .is_err());
        assert_eq!(fs::read(&real).unwrap(), b"x");
    }
}
