use super::*;
use serde_json::json;

/// A scratch home with an optional config file; the environment holds only what the test names.
struct Fixture {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    env: EnvVars,
}

impl Fixture {
    fn new(file: Option<Value>) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let env = EnvVars::from_pairs([
            (home::HOME_ENV, home.display().to_string()),
            ("HOME", tmp.path().display().to_string()),
        ]);
        if let Some(v) = file {
            std::fs::create_dir(&home).unwrap();
            std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
            std::fs::write(home.join("config.json"), serde_json::to_vec(&v).unwrap()).unwrap();
        }
        Fixture { _tmp: tmp, home, env }
    }

    fn load(&self) -> Loaded {
        load(&self.env, &Flags::default())
    }

    fn load_flags(&self, values: Vec<(&'static str, Value, &'static str)>) -> Loaded {
        load(&self.env, &Flags { config: None, values })
    }
}

fn error_paths(l: &Loaded) -> Vec<&str> {
    l.errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn no_file_means_all_defaults() {
    let f = Fixture::new(None);
    let l = f.load();
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    assert!(!l.config_file_found);
    let c = l.config.unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:18795");
    assert_eq!(c.mode, Mode::Detect);
    assert_eq!(c.max_scan_bytes, 65536);
    assert_eq!(c.log_dir, f.home.join("logs"));
    assert_eq!((c.log_max_bytes, c.log_keep, c.dedup_window_secs), (16 << 20, 5, 60));
    assert!(c.proxy_auth && !c.https_inspection && !c.allow_non_loopback);
    assert_eq!(c.ca_bundle, f.home.join("ca/trust-bundle.pem"));
    assert_eq!(c.upstream_ca_file, None);
    assert!(c.mitm_skip_hosts.is_empty() && c.egress_allow.is_empty() && c.resolve.is_empty());
    assert_eq!(c.picoclaw_home, f._tmp.path().join(".picoclaw"));
    assert_eq!(c.picoclaw_config, f._tmp.path().join(".picoclaw/config.json"));
    assert_eq!(c.profile_output, f.home.join("profile.json"));
    assert!(l.effective.values().all(|e| e.source == Source::Default));
    assert_eq!(l.effective.len(), KEYS.len());
}

#[test]
fn file_then_env_then_flag() {
    let mut f =
        Fixture::new(Some(json!({"listen": "127.0.0.1:2001", "max_scan_bytes": 2048, "log_dir": "/file/logs"})));
    let l = f.load();
    let c = l.config.unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:2001");
    assert_eq!(c.max_scan_bytes, 2048);
    assert_eq!(l.effective["listen"].source, Source::File);

    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_PROXY_URL", "http://127.0.0.1:2002/");
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES", "4096");
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_LOG_DIR", "/env/logs");
    let l = f.load();
    let c = l.config.unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:2002");
    assert_eq!(c.max_scan_bytes, 4096);
    assert_eq!(c.log_dir, PathBuf::from("/env/logs"));
    assert_eq!(l.effective["max_scan_bytes"].source, Source::Env);

    let l = f.load_flags(vec![
        ("listen", json!("127.0.0.1:2003"), "--listen"),
        ("max_scan_bytes", json!(8192), "--max-scan-bytes"),
        ("log_dir", json!("/flag/logs"), "--log-dir"),
    ]);
    let c = l.config.unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:2003");
    assert_eq!(c.max_scan_bytes, 8192);
    assert_eq!(c.log_dir, PathBuf::from("/flag/logs"));
    assert_eq!(l.effective["log_dir"].source, Source::Flag);
}

#[test]
fn every_env_variable_overrides_its_key() {
    let mut f = Fixture::new(None);
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_MODE", "detect");
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_CA_BUNDLE", "/env/bundle.pem");
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_PROFILE_OUTPUT", "/env/profile.json");
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_REDACT_SNIPPETS", "true");
    f.env.set("PICOCLAW_HOME", "/pc");
    let l = f.load();
    let c = l.config.unwrap();
    assert_eq!(c.ca_bundle, PathBuf::from("/env/bundle.pem"));
    assert_eq!(c.profile_output, PathBuf::from("/env/profile.json"));
    assert_eq!(c.picoclaw_home, PathBuf::from("/pc"));
    assert_eq!(c.picoclaw_config, PathBuf::from("/pc/config.json"));
    for key in ["mode", "ca_bundle", "profile_output", "redact_snippets", "picoclaw_home"] {
        assert_eq!(l.effective[key].source, Source::Env, "{key}");
    }
    f.env.set("PICOCLAW_CONFIG", "/elsewhere/pc.json");
    assert_eq!(f.load().config.unwrap().picoclaw_config, PathBuf::from("/elsewhere/pc.json"));
}

#[test]
fn config_file_from_variable_and_flag() {
    let f = Fixture::new(None);
    let other = f._tmp.path().join("other.json");
    std::fs::write(&other, br#"{"log_keep": 7}"#).unwrap();
    let mut env = f.env.clone();
    env.set(CONFIG_ENV, other.display().to_string());
    let l = load(&env, &Flags::default());
    assert_eq!(l.config.unwrap().log_keep, 7);
    assert_eq!(l.config_file, other);

    let third = f._tmp.path().join("third.json");
    std::fs::write(&third, br#"{"log_keep": 9}"#).unwrap();
    let l = load(&env, &Flags { config: Some(third), values: vec![] });
    assert_eq!(l.config.unwrap().log_keep, 9);
}

#[test]
fn a_named_config_file_that_is_missing_is_an_error() {
    let f = Fixture::new(None);
    let l = load(&f.env, &Flags { config: Some(f._tmp.path().join("nope.json")), values: vec![] });
    assert_eq!(error_paths(&l), ["--config"]);
    assert!(l.errors[0].message.contains("nope.json"));
}

#[test]
fn listen_rules() {
    for good in ["127.0.0.1:0", "127.0.0.2:80", "[::1]:9000", "localhost:18795", "LOCALHOST:1"] {
        let l = Fixture::new(Some(json!({"listen": good}))).load();
        assert!(l.errors.is_empty(), "{good}: {:?}", l.errors);
    }
    for bad in ["127.0.0.1", "127.0.0.1:99999", "example.com:80", "", "10.0.0.1:80", "0.0.0.0:8080"] {
        let l = Fixture::new(Some(json!({"listen": bad}))).load();
        assert_eq!(error_paths(&l), ["listen"], "{bad}");
    }
    let l = Fixture::new(Some(json!({"listen": "10.0.0.1:80"}))).load();
    assert!(l.errors[0].message.contains("allow_non_loopback"), "{}", l.errors[0].message);
    let l = Fixture::new(Some(json!({"listen": "10.0.0.1:80", "allow_non_loopback": true}))).load();
    assert!(l.errors.is_empty());
    assert!(l.warnings.iter().any(|w| w.path == "listen"));
}

#[test]
fn proxy_url_variable_must_be_a_plain_http_url() {
    for bad in ["127.0.0.1:1", "https://127.0.0.1:1", "http://u:p@127.0.0.1:1", "http://127.0.0.1:1/x"] {
        let mut f = Fixture::new(None);
        f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_PROXY_URL", bad);
        assert_eq!(error_paths(&f.load()), ["PICOCLAW_TRAFFIC_GUARDIAN_PROXY_URL"], "{bad}");
    }
}

#[test]
fn mode_block_does_not_exist() {
    let l = Fixture::new(Some(json!({"mode": "block"}))).load();
    assert_eq!(error_paths(&l), ["mode"]);
    assert!(l.errors[0].message.contains("blocking does not exist"));
    let l = Fixture::new(Some(json!({"mode": "audit"}))).load();
    assert_eq!(error_paths(&l), ["mode"]);
    let mut f = Fixture::new(None);
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_MODE", "block");
    assert_eq!(error_paths(&f.load()), ["PICOCLAW_TRAFFIC_GUARDIAN_MODE"]);
}

#[test]
fn integer_ranges_at_and_past_each_bound() {
    let cases: [(&str, u64, u64); 5] = [
        ("max_scan_bytes", 1024, 16_777_216),
        ("log_max_bytes", 4096, 1 << 30),
        ("log_keep", 0, 100),
        ("dedup_window_secs", 0, 86_400),
        ("ca_validity_days", 1, 3650),
    ];
    for (key, lo, hi) in cases {
        for ok in [lo, hi] {
            let l = Fixture::new(Some(json!({ key: ok }))).load();
            assert!(l.errors.is_empty(), "{key}={ok}: {:?}", l.errors);
        }
        let mut bad = vec![json!(hi + 1), json!("12"), json!(-1), json!(1.5)];
        if lo > 0 {
            bad.push(json!(lo - 1));
        }
        for v in bad {
            let l = Fixture::new(Some(json!({ key: v.clone() }))).load();
            assert_eq!(error_paths(&l), [key], "{key}={v}");
        }
    }
}

#[test]
fn unparsable_env_values_name_the_variable() {
    let mut f = Fixture::new(None);
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES", "64k");
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_REDACT_SNIPPETS", "maybe");
    let l = f.load();
    assert_eq!(
        error_paths(&l),
        ["PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES", "PICOCLAW_TRAFFIC_GUARDIAN_REDACT_SNIPPETS"]
    );
    assert!(l.errors[0].message.contains("64k"));
    let mut f = Fixture::new(None);
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES", "512");
    assert_eq!(error_paths(&f.load()), ["PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES"]);
}

#[test]
fn redaction_cannot_be_turned_off() {
    let l = Fixture::new(Some(json!({"redact_snippets": false}))).load();
    assert_eq!(error_paths(&l), ["redact_snippets"]);
    let mut f = Fixture::new(None);
    f.env.set("PICOCLAW_TRAFFIC_GUARDIAN_REDACT_SNIPPETS", "0");
    assert_eq!(error_paths(&f.load()), ["PICOCLAW_TRAFFIC_GUARDIAN_REDACT_SNIPPETS"]);
}

#[test]
fn booleans_must_be_booleans() {
    for key in ["allow_non_loopback", "proxy_auth", "https_inspection"] {
        let l = Fixture::new(Some(json!({ key: "yes" }))).load();
        assert_eq!(error_paths(&l), [key]);
        let l = Fixture::new(Some(json!({ key: true }))).load();
        assert!(l.errors.is_empty(), "{key}");
    }
}

#[test]
fn unknown_keys_get_a_suggestion() {
    let l = Fixture::new(Some(json!({"max_scan_byte": 2048, "lisen": "127.0.0.1:1", "zzz": 1}))).load();
    assert_eq!(error_paths(&l), ["lisen", "max_scan_byte", "zzz"]);
    assert!(l.errors[0].message.contains("did you mean \"listen\""), "{}", l.errors[0].message);
    assert!(l.errors[1].message.contains("did you mean \"max_scan_bytes\""));
    assert!(!l.errors[2].message.contains("did you mean"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let l = Fixture::new(Some(json!({"mode": "block", "max_scan_bytes": 1, "listen": "nope", "log_keep": 1000, "resolve": {"a.example": "x"}}))).load();
    assert_eq!(error_paths(&l), ["listen", "mode", "max_scan_bytes", "log_keep", "resolve.a.example"]);
    assert!(l.config.is_none());
}

#[test]
fn host_lists_and_patterns() {
    let l = Fixture::new(Some(
        json!({"mitm_skip_hosts": ["*.Example.com", "pinned.example.org."], "egress_allow": ["api.openai.com"]}),
    ))
    .load();
    let c = l.config.unwrap();
    let p = &c.mitm_skip_hosts[0];
    assert!(
        p.matches("a.example.com")
            && p.matches("A.B.EXAMPLE.COM.")
            && !p.matches("example.com")
            && !p.matches("badexample.com")
    );
    assert!(c.mitm_skip_hosts[1].matches("pinned.example.org"));
    assert!(c.egress_allow[0].matches("API.openai.com") && !c.egress_allow[0].matches("openai.com"));
    let l = Fixture::new(Some(json!({"mitm_skip_hosts": ["bad host", 3], "egress_allow": "x"}))).load();
    assert_eq!(error_paths(&l), ["mitm_skip_hosts[0]", "mitm_skip_hosts[1]", "egress_allow"]);
}

#[test]
fn resolve_pins() {
    let l = Fixture::new(Some(json!({"resolve": {"API.Example.com": "127.0.0.1", "v6.example": "::1"}}))).load();
    let c = l.config.unwrap();
    assert_eq!(c.resolve["api.example.com"].to_string(), "127.0.0.1");
    assert_eq!(c.resolve["v6.example"].to_string(), "::1");
    let l = Fixture::new(Some(json!({"resolve": {"a b": "127.0.0.1", "ok.example": 5}}))).load();
    assert_eq!(error_paths(&l), ["resolve.a b", "resolve.ok.example"]);
    let l = Fixture::new(Some(json!({"resolve": ["x"]}))).load();
    assert_eq!(error_paths(&l), ["resolve"]);
}

#[test]
fn upstream_ca_file_must_exist() {
    let f = Fixture::new(Some(json!({"upstream_ca_file": "roots.pem"})));
    let l = f.load();
    assert_eq!(error_paths(&l), ["upstream_ca_file"]);
    // Relative paths in the file are read against the file's directory.
    std::fs::write(f.home.join("roots.pem"), b"").unwrap();
    assert_eq!(f.load().config.unwrap().upstream_ca_file, Some(f.home.join("roots.pem")));
}

#[test]
fn paths_expand_tilde_and_reject_empty() {
    let f = Fixture::new(Some(json!({"log_dir": "~/g/logs", "ca_bundle": ""})));
    let l = f.load();
    assert_eq!(error_paths(&l), ["ca_bundle"]);
    let f = Fixture::new(Some(json!({"log_dir": "~/g/logs"})));
    assert_eq!(f.load().config.unwrap().log_dir, f._tmp.path().join("g/logs"));
}

#[test]
fn broken_json_and_non_objects() {
    let f = Fixture::new(None);
    std::fs::create_dir(&f.home).unwrap();
    std::fs::write(f.home.join("config.json"), b"{\n \"listen\": }").unwrap();
    let l = f.load();
    assert_eq!(l.errors.len(), 1);
    assert!(l.errors[0].message.contains("line 2"), "{}", l.errors[0].message);
    std::fs::write(f.home.join("config.json"), b"[1]").unwrap();
    assert!(f.load().errors[0].message.contains("one JSON object"));
}

#[test]
fn risky_settings_warn() {
    let l =
        Fixture::new(Some(json!({"https_inspection": true, "proxy_auth": false, "listen": "127.0.0.1:18790"}))).load();
    assert!(l.errors.is_empty());
    let paths: Vec<_> = l.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["https_inspection", "proxy_auth", "listen"]);
    assert!(l.warnings[0].message.contains("SSL_CERT_FILE"));
    assert!(Fixture::new(None).load().warnings.is_empty());
}

#[test]
fn unsafe_home_and_log_dir_are_refused() {
    let f = Fixture::new(Some(json!({})));
    std::fs::set_permissions(&f.home, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let l = f.load();
    assert_eq!(error_paths(&l), [home::HOME_ENV]);
    let f = Fixture::new(None);
    let logs = f._tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, std::os::unix::fs::PermissionsExt::from_mode(0o775)).unwrap();
    let l = f.load_flags(vec![("log_dir", json!(logs.display().to_string()), "--log-dir")]);
    assert_eq!(error_paths(&l), ["log_dir"]);
}

#[test]
fn missing_user_home_is_one_clear_error() {
    let l = load(&EnvVars::default(), &Flags::default());
    assert_eq!(error_paths(&l), [home::HOME_ENV]);
}

#[test]
fn every_documented_key_has_a_default_and_is_read() {
    let l = Fixture::new(None).load();
    for k in KEYS {
        assert!(l.effective.contains_key(k.name), "{} has no default", k.name);
    }
    // A key in the file that the table lists is never reported unknown.
    let all: Map<String, Value> = l.effective.iter().map(|(k, e)| (k.to_string(), e.value.clone())).collect();
    let mut all = all;
    all.insert("picoclaw_config".into(), json!("/x/config.json"));
    let l = Fixture::new(Some(Value::Object(all))).load();
    assert!(l.errors.is_empty(), "{:?}", l.errors);
}

#[test]
fn canonical_config_ignores_formatting_but_not_values() {
    let a = Fixture::new(None);
    std::fs::create_dir(&a.home).unwrap();
    std::fs::write(a.home.join("config.json"), b"{\"log_keep\": 7, \"listen\": \"127.0.0.1:2001\"}").unwrap();
    let first = a.load().config.unwrap();
    std::fs::write(a.home.join("config.json"), b"{\n  \"listen\":\"127.0.0.1:2001\",\n\n  \"log_keep\":7 }\n").unwrap();
    let second = a.load().config.unwrap();
    assert_eq!(first.sha256(), second.sha256());
    std::fs::write(a.home.join("config.json"), b"{\"log_keep\": 8, \"listen\": \"127.0.0.1:2001\"}").unwrap();
    assert_ne!(first.sha256(), a.load().config.unwrap().sha256());
    let keys: Vec<String> = first.canonical_json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), KEYS.len(), "every key is part of the canonical form");
}
