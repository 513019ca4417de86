//! `doctor` through the real binary on fixture Picoclaw homes: every bypass kind, text and JSON, exit codes,
//! and that no secret value ever reaches the output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::{guardian, output, stdout};
use picoclaw_traffic_guardian::picoclaw::secrets::{self, Sources};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/picoclaw").join(name)
}

/// Runs `doctor` with the guardian home in a temp dir and Picoclaw's home at `pico`.
fn doctor(pico: &Path, args: &[&str]) -> (tempfile::TempDir, Output) {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let o = output(guardian(&home).env("PICOCLAW_HOME", pico).arg("doctor").args(args));
    (tmp, o)
}

/// Every value the fixture holds in a secret slot, the unreadable ones included.
fn fixture_values(pico: &Path) -> Vec<String> {
    let inv = secrets::load(&Sources::new(pico, &pico.join("config.json")));
    let mut v: Vec<String> = inv.secrets.iter().map(|s| s.value.clone()).collect();
    v.extend(
        ["enc://AAAAfixtureEncryptedSecret", "file:///run/secrets/clawhub", "http://corp-proxy.test:3128"]
            .map(String::from),
    );
    v.extend(["socks5://127.0.0.1:1080", "http://web-proxy.test:8080", "http://gh-proxy.test:3128"].map(String::from));
    v
}

fn assert_no_values(o: &Output, values: &[String]) {
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    for v in values {
        assert!(!all.contains(v.as_str()), "output shows a secret or proxy URL ({} chars)", v.len());
    }
}

#[test]
fn text_names_every_bypass_and_what_to_do() {
    let pico = fixture("full");
    let (t, o) = doctor(&pico, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!t.path().join("home").exists(), "doctor must not create the guardian home");
    let text = stdout(&o);
    for want in [
        "16 known secrets loaded (config.json 9, .security.yml 4, auth.json 2, .picoclaw.pid 1)",
        "[warn] model_list[3] (groq/llama-3.3-70b) → api.groq.com: `model_list[3].proxy` is set",
        "`channel_list.discord.settings.proxy` is set",
        "`tools.web.proxy` is set",
        "`tools.skills.github.proxy` is set",
        "fix: remove `model_list[3].proxy` from the Picoclaw config",
        "[info] model_list[2] (ollama/llama3) → localhost: loopback target",
        "tools.web.searxng → 127.0.0.1: loopback target",
        "clawhub.ai) always connects directly",
        "MCP stdio servers start as child processes (tools.mcp.servers.files)",
        "model_list[5] (codex-cli/gpt-5)",
        "only the UPPERCASE HTTP_PROXY / HTTPS_PROXY",
        "`run` sets both cases",
        "HTTPS inspection is off",
        "no monitor runs",
        "2 enc:// values skipped",
        "model_list[0] (openai/gpt-4o) → api.openai.com",
        "channel_list.telegram (telegram) → api.telegram.org",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_no_values(&o, &fixture_values(&pico));
}

#[test]
fn json_is_the_documented_object() {
    let pico = fixture("full");
    let (_t, o) = doctor(&pico, &["--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema_version"], "picoclaw-traffic-guardian-doctor/v1");
    let ids: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.iter().filter(|i| **i == "proxy_override").count(), 4, "{ids:?}");
    assert_eq!(ids.iter().filter(|i| **i == "loopback").count(), 2, "{ids:?}");
    for id in ["picoclaw_config", "known_secrets", "covered", "clawhub", "mcp_stdio", "exec_children"] {
        assert!(ids.contains(&id), "{id} missing: {ids:?}");
    }
    for id in ["telegram_proxy_case", "https_inspection", "monitor", "picoclaw_file"] {
        assert!(ids.contains(&id), "{id} missing: {ids:?}");
    }
    for c in v["checks"].as_array().unwrap() {
        assert!(["ok", "warn", "info"].contains(&c["status"].as_str().unwrap()));
        assert!(c["message"].is_string() && (c["fix"].is_string() || c["fix"].is_null()));
    }
    assert_eq!(v["known_secrets"]["total"], 16);
    assert_eq!(v["known_secrets"]["by_source"]["auth.json"], 2);
    assert_eq!(v["known_secrets"]["encrypted_skipped"], 2);
    let discord = v["clients"].as_array().unwrap().iter().find(|c| c["name"] == "channel_list.discord (discord)");
    assert_eq!(
        discord.map(|c| (&c["route"], &c["proxy_key"])),
        Some((&"proxy_override".into(), &"channel_list.discord.settings.proxy".into()))
    );
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2);
    assert_no_values(&o, &fixture_values(&pico));
}

#[test]
fn broken_files_are_warnings_and_exit_0() {
    let (_t, o) = doctor(&fixture("broken"), &["--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 4);
    assert_eq!(v["known_secrets"]["total"], 0);
    let first = &v["checks"][0];
    assert_eq!((first["id"].as_str(), first["status"].as_str()), (Some("picoclaw_config"), Some("warn")));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("sk-broken"));
}

#[test]
fn missing_picoclaw_install_says_where_to_point() {
    let tmp = tempfile::tempdir().unwrap();
    let (_t, o) = doctor(&tmp.path().join("nowhere"), &[]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.contains("not found: no model or channel secrets known"), "{text}");
    assert!(text.contains("fix: set PICOCLAW_HOME / PICOCLAW_CONFIG"), "{text}");
    assert!(text.contains("no known secrets loaded"), "{text}");
}

#[test]
fn explicit_picoclaw_config_reads_security_yml_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let o = output(
        guardian(&home)
            .env("PICOCLAW_HOME", tmp.path().join("elsewhere"))
            .env("PICOCLAW_CONFIG", fixture("full").join("config.json"))
            .args(["doctor", "--json"]),
    );
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    // config.json and .security.yml beside it; auth.json and the pid file live in PICOCLAW_HOME (absent here).
    assert_eq!(v["known_secrets"]["by_source"], serde_json::json!({"config.json": 9, ".security.yml": 4}));
}

#[test]
fn legacy_shape_is_understood() {
    let pico = fixture("legacy");
    let (_t, o) = doctor(&pico, &["--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["known_secrets"]["total"], 7);
    let route = |name: &str| {
        v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["route"].as_str().unwrap().to_owned())
    };
    assert_eq!(route("providers.zhipu").as_deref(), Some("proxy_override"));
    assert_eq!(route("providers.vllm").as_deref(), Some("loopback"));
    assert_eq!(route("providers.openrouter").as_deref(), Some("guardian"));
    assert_no_values(&o, &fixture_values(&pico));
}

#[test]
fn invalid_guardian_config_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.json");
    std::fs::write(&cfg, br#"{"mode":"block"}"#).unwrap();
    let o = output(guardian(&tmp.path().join("home")).args(["doctor", "--config"]).arg(&cfg));
    assert_eq!(o.status.code(), Some(2));
}

fn private_dir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn ca_bundle_states_with_https_inspection() {
    const CA: &str = "-----BEGIN CERTIFICATE-----\nQ0FGSVhUVVJF\n-----END CERTIFICATE-----\n";
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let pico = fixture("minimal");
    let run = |home: &Path| {
        let o = output(guardian(home).env("PICOCLAW_HOME", &pico).args(["doctor", "--json", "--https-inspection"]));
        assert_eq!(o.status.code(), Some(0));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let c = v["checks"].as_array().unwrap().iter().find(|c| c["id"] == "ca_bundle").cloned().unwrap();
        (c["status"].as_str().unwrap().to_owned(), c["message"].as_str().unwrap().to_owned(), c["fix"].clone())
    };
    let (status, msg, fix) = run(&home);
    assert_eq!(status, "warn");
    assert!(msg.contains("no CA at"), "{msg}");
    assert!(fix.as_str().unwrap().contains("ca init"));
    private_dir(&home.join("ca"));
    std::fs::write(home.join("ca/ca.pem"), CA).unwrap();
    assert!(run(&home).1.contains("is missing"));
    std::fs::write(
        home.join("ca/trust-bundle.pem"),
        "-----BEGIN CERTIFICATE-----\nT1RIRVI=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(run(&home).1.contains("does not hold the current CA"));
    std::fs::write(
        home.join("ca/trust-bundle.pem"),
        format!("-----BEGIN CERTIFICATE-----\nT1RIRVI=\n-----END CERTIFICATE-----\n{CA}"),
    )
    .unwrap();
    assert_eq!(run(&home).0, "ok");
}
