//! `profile` through the real binary: the fragment of CONTRACT §6, byte-stable, consumer-safe.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::util::{guardian, output, stdout};

/// Substrings picoclaw-security-guardian's heuristics react to (CONTRACT §6), held here independently of
/// the library's own list.
const TRIGGERS: &[&str] = &[
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

struct Env {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    out: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let out = tmp.path().join("exports/profile.json");
    std::fs::create_dir(tmp.path().join("exports")).unwrap();
    Env { _tmp: tmp, home, out }
}

fn export(e: &Env, extra: &[&str]) -> (Value, Vec<u8>) {
    let o = output(guardian(&e.home).args(["profile", "--json", "--output"]).arg(&e.out).args(extra));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let line: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    (line, std::fs::read(&e.out).unwrap())
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn field(bytes: &[u8], key: &str) -> Value {
    serde_json::from_slice::<Value>(bytes).unwrap()[key].clone()
}

#[test]
fn schema_digest_and_byte_stability() {
    let e = env();
    let (line, first) = export(&e, &[]);
    let v: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(v["schema_version"], "clawsec-traffic-posture/v1");
    assert_eq!(v["platform"], "picoclaw");
    assert_eq!(v["monitor_status"], "stopped");
    assert_eq!(v["mode"], "detect");
    assert_eq!(v["https_inspection"], false);
    assert_eq!(v["ca_fingerprint_sha256"], Value::Null);
    assert_eq!(v["finding_log_sha256"], sha(b""));
    assert_eq!(v["config_sha256"].as_str().unwrap().len(), 64);
    assert!(v["generated_at"].as_str().unwrap().ends_with('Z'));
    // The digest is the sha256 of the compact sorted JSON, recomputed here.
    let compact = serde_json::to_string(&v).unwrap();
    assert_eq!(line["canonical_sha256"], sha(compact.as_bytes()));
    assert_eq!(line["output"], e.out.display().to_string());
    // 2-space indent, trailing newline, 0600.
    let text = String::from_utf8(first.clone()).unwrap();
    assert!(text.starts_with("{\n  \"") && text.ends_with("}\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&e.out).unwrap().permissions().mode() & 0o777, 0o600);

    // Nothing changed: identical bytes, so the consumer's sha256 over the raw file does not drift.
    let (line2, second) = export(&e, &[]);
    assert_eq!(first, second);
    assert_eq!(line2["canonical_sha256"], line["canonical_sha256"]);
    assert_eq!(line2["message"], "profile unchanged");
}

#[test]
fn config_ca_and_findings_changes_move_the_right_field() {
    let e = env();
    let (_, base) = export(&e, &["--generated-at", "2026-04-26T00:00:00Z"]);
    assert_eq!(field(&base, "generated_at"), "2026-04-26T00:00:00.000Z");

    // A whitespace-only rewrite of the config file does not drift; a real change does.
    std::fs::create_dir_all(&e.home).unwrap();
    std::fs::set_permissions(&e.home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let cfg = e.home.join("config.json");
    std::fs::write(&cfg, b"{\"log_keep\": 3}").unwrap();
    let (_, a) = export(&e, &["--generated-at", "2026-04-26T00:00:00Z"]);
    std::fs::write(&cfg, b"{\n    \"log_keep\" :  3\n}\n").unwrap();
    let (_, b) = export(&e, &["--generated-at", "2026-04-26T00:00:00Z"]);
    assert_eq!(a, b);
    assert_ne!(field(&a, "config_sha256"), field(&base, "config_sha256"));
    assert_eq!(field(&a, "finding_log_sha256"), field(&base, "finding_log_sha256"));

    let o = output(guardian(&e.home).args(["ca", "init"]));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, c) = export(&e, &["--generated-at", "2026-04-26T00:00:00Z"]);
    assert!(field(&c, "ca_fingerprint_sha256").as_str().is_some_and(|f| f.len() == 95));
    assert_eq!(field(&c, "config_sha256"), field(&a, "config_sha256"));

    let logs = e.home.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::set_permissions(&logs, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let line = "{\"threat_type\":\"EXFIL\",\"severity\":\"high\"}\n";
    std::fs::write(logs.join("findings.jsonl"), line).unwrap();
    let (_, d) = export(&e, &["--generated-at", "2026-04-26T00:00:00Z"]);
    assert_eq!(field(&d, "finding_log_sha256"), sha(line.as_bytes()));
    assert_eq!(field(&d, "findings_by_threat_type")["EXFIL"], 1);
    assert_eq!(field(&d, "findings_by_severity")["high"], 1);
    assert_eq!(field(&d, "ca_fingerprint_sha256"), field(&c, "ca_fingerprint_sha256"));
}

#[test]
fn generated_at_moves_only_with_the_posture() {
    let e = env();
    let (_, a) = export(&e, &[]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (_, b) = export(&e, &[]);
    assert_eq!(field(&a, "generated_at"), field(&b, "generated_at"));
    std::thread::sleep(std::time::Duration::from_millis(5));
    std::fs::write(e.home.join("config.json"), b"{\"log_keep\": 2}").unwrap();
    let (_, c) = export(&e, &[]);
    assert_ne!(field(&c, "config_sha256"), field(&a, "config_sha256"));
    assert_ne!(field(&c, "generated_at"), field(&a, "generated_at"));
}

#[test]
fn no_consumer_trigger_in_the_fragment() {
    let e = env();
    output(guardian(&e.home).args(["ca", "init"]));
    let (_, bytes) = export(&e, &[]);
    let text = String::from_utf8(bytes).unwrap();
    for t in TRIGGERS {
        assert!(!text.contains(t), "fragment contains {t:?}:\n{text}");
    }
    let secretish = regex::Regex::new(r#"(?i)(token|secret|password|api_key)"?\s*[:=]\s*"?[^\s"]{8,}"#).unwrap();
    assert!(!secretish.is_match(&text), "{text}");
}

#[test]
fn symlink_output_is_refused() {
    let e = env();
    let real = e.out.with_file_name("real.json");
    std::fs::write(&real, b"keep").unwrap();
    std::os::unix::fs::symlink(&real, &e.out).unwrap();
    let o = output(guardian(&e.home).args(["profile", "--output"]).arg(&e.out));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("symlink"));
    assert_eq!(std::fs::read(&real).unwrap(), b"keep");
}

#[test]
fn default_output_is_in_the_home_and_the_variable_moves_it() {
    let e = env();
    let o = output(guardian(&e.home).arg("profile"));
    assert_eq!(o.status.code(), Some(0));
    assert!(e.home.join("profile.json").is_file());
    let elsewhere: &Path = &e.out;
    let o = output(guardian(&e.home).env("PICOCLAW_TRAFFIC_GUARDIAN_PROFILE_OUTPUT", elsewhere).arg("profile"));
    assert_eq!(o.status.code(), Some(0));
    assert!(elsewhere.is_file());
}
