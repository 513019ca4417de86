//! `check-config` through the real binary: exit codes, JSON shape, and that it never creates anything.

use crate::util::{guardian, output, stdout};
use serde_json::Value;

#[test]
fn valid_defaults_exit_0_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let o = output(guardian(&home).arg("check-config"));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("configuration is valid"));
    assert!(!home.exists(), "check-config created the home");
    let o = output(guardian(&home).args(["check-config", "--json"]));
    assert_eq!(o.status.code(), Some(0));
    assert!(!home.exists());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"], serde_json::json!([]));
    assert_eq!(v["effective"]["listen"]["value"], "127.0.0.1:18795");
    assert_eq!(v["effective"]["listen"]["source"], "default");
}

#[test]
fn invalid_config_exits_2_with_every_error_in_json() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.json");
    std::fs::write(&cfg, br#"{"mode":"block","max_scan_bytes":10,"listn":"x"}"#).unwrap();
    let home = tmp.path().join("home");
    let o = output(guardian(&home).args(["check-config", "--json", "--config"]).arg(&cfg));
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let paths: Vec<&str> = v["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["listn", "mode", "max_scan_bytes"]);
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("did you mean \"listen\""));
    assert!(!home.exists());
}

#[test]
fn flags_env_and_file_layer_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cfg = tmp.path().join("c.json");
    std::fs::write(&cfg, br#"{"listen":"127.0.0.1:3001","max_scan_bytes":2048}"#).unwrap();
    let o = output(
        guardian(&home)
            .env("PICOCLAW_TRAFFIC_GUARDIAN_CONFIG", &cfg)
            .env("PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES", "4096")
            .args(["check-config", "--json", "--listen", "127.0.0.1:3003"]),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["effective"]["listen"], serde_json::json!({"value": "127.0.0.1:3003", "source": "flag"}));
    assert_eq!(v["effective"]["max_scan_bytes"], serde_json::json!({"value": 4096, "source": "env"}));
    assert_eq!(v["effective"]["log_keep"]["source"], "default");
}

#[test]
fn unparsable_env_value_names_the_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let o = output(
        guardian(&tmp.path().join("h")).env("PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES", "lots").arg("check-config"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains("error:   PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES: \"lots\""), "{}", stdout(&o));
}

#[test]
fn unsafe_home_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let o = output(guardian(&home).arg("check-config"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains("chmod 700"), "{}", stdout(&o));
}

#[test]
fn bad_usage_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let o = output(guardian(&tmp.path().join("h")).args(["check-config", "--no-such-flag"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn readme_opens_with_the_two_commands_and_carries_the_config_reference() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let first_block: Vec<&str> = readme.split("```").nth(1).unwrap_or_default().lines().skip(1).collect();
    assert!(
        first_block.len() == 2 && first_block[1].starts_with("cargo test --locked"),
        "README must open with the run and test commands"
    );
    let reference = picoclaw_traffic_guardian::config::reference_markdown();
    assert!(readme.contains(&reference), "README's configuration table differs from config::KEYS; paste:\n{reference}");
}
