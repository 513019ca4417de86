use std::path::{Path, PathBuf};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/picoclaw").join(name)
}

fn load_fixture(name: &str) -> Inventory {
    let home = fixture(name);
    load(&Sources::new(&home, &home.join("config.json")))
}

fn uses(inv: &Inventory, label: &str) -> Vec<(String, String)> {
    let s = inv.by_label(label).unwrap_or_else(|| panic!("no secret labelled {label}: {:?}", inv.labels()));
    s.allowed.iter().map(|u| (u.host.clone(), u.header.clone())).collect()
}

fn pair(h: &str, w: &str) -> (String, String) {
    (h.to_owned(), w.to_owned())
}

#[test]
fn v3_model_list_api_keys_array_and_old_api_key() {
    let inv = load_fixture("full");
    assert_eq!(inv.by_label("model_list[0].api_keys[0]").map(|s| s.value.as_str()), Some("sk-fixture-openai-0001"));
    assert_eq!(inv.by_label("model_list[0].api_keys[1]").map(|s| s.value.as_str()), Some("sk-fixture-openai-0002"));
    // Prefix default: openai/ → api.openai.com with the bearer header.
    assert_eq!(uses(&inv, "model_list[0].api_keys[1]"), [pair("api.openai.com", "authorization")]);
    // The older single `api_key`; its api_base host wins over the anthropic default, with Anthropic's headers.
    assert_eq!(
        uses(&inv, "model_list[1].api_key"),
        [pair("llm-gw.corp.test", "x-api-key"), pair("llm-gw.corp.test", "authorization")]
    );
}

#[test]
fn placeholders_empty_and_wrong_types_are_not_secrets() {
    let inv = load_fixture("full");
    let labels = inv.labels();
    assert!(!labels.iter().any(|l| l.starts_with("model_list[3]")), "{labels:?}");
    assert!(!labels.iter().any(|l| l.starts_with("model_list[4]")), "[NOT_HERE] is Picoclaw's marker: {labels:?}");
    assert!(!labels.iter().any(|l| l.starts_with("model_list[6]")), "{labels:?}");
    // YOUR_API_KEY and [NOT_HERE] counted as placeholders; the empty string is not even that.
    assert_eq!(inv.counts.placeholders, 2);
    assert!(inv.warnings.iter().any(|w| w.contains("model_list[7] is not an object")), "{:?}", inv.warnings);
    for v in
        ["", "short", "YOUR_API_KEY", "sk-your-openai-key", "<token>", "${OPENAI_KEY}", "xxxxxxxxxxxx", "[NOT_HERE]"]
    {
        assert_eq!(classify(v), ValueKind::Placeholder, "{v:?}");
    }
    assert_eq!(classify("sk-proj-a1B2c3D4e5"), ValueKind::Secret);
}

#[test]
fn security_yml_merges_by_model_name_and_dedups() {
    let inv = load_fixture("full");
    // `gem` gets its destination from the config entry named gem (gemini prefix).
    assert_eq!(
        inv.by_label(".security.yml:model_list.gem.api_keys[0]").map(|s| s.value.as_str()),
        Some("AIzaFixtureGeminiKey0010")
    );
    assert_eq!(
        uses(&inv, ".security.yml:model_list.gem.api_keys[0]"),
        [
            pair("generativelanguage.googleapis.com", "authorization"),
            pair("generativelanguage.googleapis.com", "x-goog-api-key")
        ]
    );
    // The same OpenAI key in both files is one secret, labelled where it was first seen.
    assert_eq!(inv.secrets.iter().filter(|s| s.value == "sk-fixture-openai-0001").count(), 1);
    // A key for a model the config does not have: loaded, no destination, and a warning says so.
    assert!(uses(&inv, ".security.yml:model_list.ghost:0.api_keys[0]").is_empty());
    assert!(inv.warnings.iter().any(|w| w.contains("model_list.ghost:0")));
    // Tools keys at the top level of .security.yml.
    assert_eq!(uses(&inv, ".security.yml:web.perplexity.api_keys[0]"), [pair("api.perplexity.ai", "authorization")]);
    assert_eq!(
        uses(&inv, ".security.yml:channel_list.slack.settings.bot_token"),
        [pair("slack.com", "authorization"), pair("slack.com", "body")]
    );
}

#[test]
fn encrypted_and_references_are_skipped_and_counted() {
    let inv = load_fixture("full");
    assert!(inv.secrets.iter().all(|s| !s.value.starts_with("enc://") && !s.value.starts_with("file://")));
    // feishu app_secret + the second gem key.
    assert_eq!(inv.counts.encrypted, 2);
    // clawhub file:// + glm_search env://.
    assert_eq!(inv.counts.references, 2);
}

#[test]
fn channels_web_skills_mcp_destinations() {
    let inv = load_fixture("full");
    assert_eq!(uses(&inv, "channel_list.telegram.settings.token"), [pair("api.telegram.org", "path")]);
    assert!(uses(&inv, "channel_list.discord.settings.token").contains(&pair("discord.com", "authorization")));
    assert!(uses(&inv, "channel_list.discord.settings.token").contains(&pair("gateway.discord.gg", "body")));
    assert_eq!(uses(&inv, "tools.web.brave.api_keys[0]"), [pair("api.search.brave.com", "x-subscription-token")]);
    // Tavily's key rides in the JSON body: the `body` way.
    assert!(uses(&inv, "tools.web.tavily.api_key").contains(&pair("api.tavily.com", "body")));
    assert!(uses(&inv, "tools.skills.github.token").contains(&pair("api.github.com", "authorization")));
    // An MCP header value, without its `Bearer ` scheme, allowed in that header to that server only.
    let mcp = inv.by_label("tools.mcp.servers.remote.headers.Authorization").map(|s| s.value.as_str());
    assert_eq!(mcp, Some("fixture-mcp-bearer-0009"));
    assert_eq!(uses(&inv, "tools.mcp.servers.remote.headers.Authorization"), [pair("mcp.corp.test", "authorization")]);
    assert!(inv.by_label("tools.mcp.servers.remote.headers.Accept").is_none());
}

#[test]
fn auth_json_tokens_and_gateway_token() {
    let inv = load_fixture("full");
    assert_eq!(
        uses(&inv, "auth.json:credentials.anthropic.access_token"),
        [pair("api.anthropic.com", "authorization")]
    );
    assert!(
        uses(&inv, "auth.json:credentials.anthropic.refresh_token").contains(&pair("console.anthropic.com", "body"))
    );
    let gw = inv.by_label(".picoclaw.pid:token").map(|s| (s.value.as_str(), s.allowed.len()));
    // Any sighting of the gateway's own token through the proxy is a leak: no allowed use at all.
    assert_eq!(gw, Some(("fixture-gateway-token-0016", 0)));
}

#[test]
fn counts_by_source() {
    let inv = load_fixture("full");
    let c = &inv.counts.by_source;
    assert_eq!(c.get("config.json"), Some(&9), "{:?}", inv.labels());
    assert_eq!(c.get(".security.yml"), Some(&4), "{:?}", inv.labels());
    assert_eq!(c.get("auth.json"), Some(&2));
    assert_eq!(c.get(".picoclaw.pid"), Some(&1));
    assert_eq!(inv.secrets.len(), 16);
    assert!(inv.files.values().all(|f| *f == FileState::Loaded), "{:?}", inv.files);
}

#[test]
fn legacy_providers_and_flat_channels() {
    let inv = load_fixture("legacy");
    assert_eq!(uses(&inv, "providers.openrouter.api_key"), [pair("openrouter.ai", "authorization")]);
    assert_eq!(uses(&inv, "providers.zhipu.api_key"), [pair("open.bigmodel.cn", "authorization")]);
    assert_eq!(uses(&inv, "providers.vllm.api_key"), [pair("127.0.0.1", "authorization")]);
    assert_eq!(uses(&inv, "channels.telegram.token"), [pair("api.telegram.org", "path")]);
    assert!(inv.by_label("channels.slack.app_token").is_some());
    assert!(inv.by_label("tools.web.brave.api_key").is_some());
    assert_eq!(inv.secrets.len(), 7, "{:?}", inv.labels());
    assert_eq!(inv.files.get(".security.yml"), Some(&FileState::Missing));
}

#[test]
fn broken_files_are_warnings_not_errors() {
    let inv = load_fixture("broken");
    assert!(inv.secrets.is_empty());
    for name in ["config.json", ".security.yml", "auth.json", ".picoclaw.pid"] {
        assert_eq!(inv.files.get(name), Some(&FileState::Unusable), "{name}");
    }
    assert_eq!(inv.warnings.len(), 4, "{:?}", inv.warnings);
    assert!(inv.warnings[0].contains("not valid JSON"));
    assert!(inv.warnings[1].contains("not valid YAML"));
    // Nothing in a warning quotes a value.
    assert!(inv.warnings.iter().all(|w| !w.contains("sk-broken")));
}

#[test]
fn missing_everything_is_empty_and_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = load(&Sources::new(tmp.path(), &tmp.path().join("config.json")));
    assert!(inv.secrets.is_empty() && inv.warnings.is_empty());
    assert!(inv.files.values().all(|f| *f == FileState::Missing));
}

#[test]
fn wrong_shapes_anywhere_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.json");
    for text in [
        r#"{"model_list": 3, "channel_list": [], "tools": "x", "providers": {"openai": 1}}"#,
        r#"{"model_list": [{"api_keys": [1, null, {"a": 1}], "api_base": 7, "model": false, "proxy": []}]}"#,
        r#"{"channel_list": {"telegram": {"settings": 1, "enabled": "yes"}}, "tools": {"web": {"brave": []}}}"#,
        r#"{"tools": {"mcp": {"servers": {"a": {"headers": {"Authorization": 5}, "url": 1}}}}}"#,
        "[]",
    ] {
        std::fs::write(&cfg, text).unwrap();
        let inv = load(&Sources::new(tmp.path(), &cfg));
        assert!(inv.secrets.is_empty(), "{text}: {:?}", inv.labels());
    }
    std::fs::write(tmp.path().join(".security.yml"), "a: &x [1, *x]\n? [complex]\n: key\n- not a map").unwrap();
    let inv = load(&Sources::new(tmp.path(), &cfg));
    assert_eq!(inv.files.get(".security.yml"), Some(&FileState::Unusable));
}

#[test]
fn oversized_file_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.json");
    std::fs::write(&cfg, vec![b' '; (MAX_FILE_BYTES + 1) as usize]).unwrap();
    let inv = load(&Sources::new(tmp.path(), &cfg));
    assert_eq!(inv.files.get("config.json"), Some(&FileState::Unusable));
    assert!(inv.warnings[0].contains("larger than"));
}

#[test]
fn routes_for_doctor() {
    let inv = load_fixture("full");
    let route = |name: &str| inv.clients.iter().find(|c| c.name.starts_with(name)).map(|c| c.route.clone());
    assert_eq!(route("model_list[0]"), Some(Route::Guardian));
    assert_eq!(route("model_list[2]"), Some(Route::Loopback));
    assert_eq!(route("model_list[3]"), Some(Route::ProxyOverride { key: "model_list[3].proxy".into() }));
    assert_eq!(
        route("channel_list.discord"),
        Some(Route::ProxyOverride { key: "channel_list.discord.settings.proxy".into() })
    );
    assert_eq!(route("channel_list.telegram"), Some(Route::Guardian));
    assert_eq!(route("tools.web (web_search"), Some(Route::ProxyOverride { key: "tools.web.proxy".into() }));
    assert_eq!(route("tools.web.searxng"), Some(Route::Loopback));
    assert_eq!(route("tools.skills.github"), Some(Route::ProxyOverride { key: "tools.skills.github.proxy".into() }));
    assert_eq!(route("tools.mcp.servers.remote"), Some(Route::Guardian));
    assert!(route("channel_list.feishu").is_none(), "disabled channels are not clients");
    assert!(route("model_list[6]").is_none(), "no key, no api_base: Picoclaw builds no client");
    assert_eq!(inv.mcp_stdio, ["tools.mcp.servers.files"]);
    assert_eq!(inv.cli_models, ["model_list[5] (codex-cli/gpt-5)"]);
    assert!(inv.telegram_enabled && inv.clawhub_enabled);
}

#[test]
fn debug_never_prints_values() {
    let inv = load_fixture("full");
    let dbg = format!("{inv:?}");
    for s in &inv.secrets {
        assert!(!dbg.contains(&s.value), "{} leaked through Debug", s.label);
    }
}

#[test]
fn watcher_picks_up_changes_and_stays_quiet_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.json");
    std::fs::write(&cfg, r#"{"model_list": [{"model": "openai/x", "api_key": "sk-watch-first-0001"}]}"#).unwrap();
    let (mut w, inv) = SecretsWatcher::new(Sources::new(tmp.path(), &cfg));
    assert_eq!(inv.secrets.len(), 1);
    assert!(w.poll().is_none());
    // Same length, new value: caught by mtime/ctime, even within the same second on coarse filesystems
    // through the inode of an atomic rename.
    let next = tmp.path().join("config.json.tmp");
    std::fs::write(&next, r#"{"model_list": [{"model": "openai/x", "api_key": "sk-watch-other-0002"}]}"#).unwrap();
    std::fs::rename(&next, &cfg).unwrap();
    let inv = w.poll().expect("a change");
    assert_eq!(inv.secrets[0].value, "sk-watch-other-0002");
    assert!(w.poll().is_none());
    // A file appearing counts as a change.
    std::fs::write(tmp.path().join(".picoclaw.pid"), r#"{"pid": 1, "token": "gateway-token-watch-0003"}"#).unwrap();
    let inv = w.poll().expect("a new file");
    assert_eq!(inv.secrets.len(), 2);
    // And one disappearing.
    std::fs::remove_file(tmp.path().join(".picoclaw.pid")).unwrap();
    assert_eq!(w.poll().map(|i| i.secrets.len()), Some(1));
}

#[test]
fn yaml_conversion_keeps_strings_and_types() {
    let v = yaml_to_json("a: 1\nb: [x, 'y']\nc: {d: true}\n'e': ~\n12: twelve\n").unwrap();
    assert_eq!(v, serde_json::json!({"a": 1, "b": ["x", "y"], "c": {"d": true}, "e": null, "12": "twelve"}));
    assert_eq!(yaml_to_json("").unwrap(), Value::Null);
    assert!(yaml_to_json("a: [").is_err());
}

#[test]
fn security_yml_channels_take_their_type_and_hosts_from_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"channel_list": {"mybot": {"enabled": true, "type": "telegram",
            "settings": {"base_url": "https://tg-mirror.corp.test", "token": "[NOT_HERE]"}}}}"#,
    )
    .unwrap();
    // Both the nested and the older flat form of a channel entry.
    std::fs::write(
        tmp.path().join(".security.yml"),
        "channel_list:\n  mybot:\n    token: 111111111:AAflatTelegramToken\n    settings:\n      token: 222222222:AAnestedTelegramToken\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("auth.json"),
        r#"{"credentials": {"mystery": {"access_token": "mystery-access-token-01"}}}"#,
    )
    .unwrap();
    let inv = load(&Sources::new(tmp.path(), &cfg));
    let want = [pair("api.telegram.org", "path"), pair("tg-mirror.corp.test", "path")];
    assert_eq!(uses(&inv, ".security.yml:channel_list.mybot.settings.token"), want);
    assert_eq!(uses(&inv, ".security.yml:channel_list.mybot.token"), want);
    assert!(uses(&inv, "auth.json:credentials.mystery.access_token").is_empty());
    assert!(inv.warnings.iter().any(|w| w.contains("credentials.mystery")), "{:?}", inv.warnings);
}

#[test]
fn destination_per_provider_prefix_and_api_base_wins() {
    let cases = [
        ("gpt-4o", None, "api.openai.com", "authorization"),
        ("openrouter/anthropic/claude", None, "openrouter.ai", "authorization"),
        ("groq/llama", None, "api.groq.com", "authorization"),
        ("deepseek/deepseek-chat", None, "api.deepseek.com", "authorization"),
        ("zhipu/glm-4.7", None, "open.bigmodel.cn", "authorization"),
        ("qwen/qwen3-max", None, "dashscope.aliyuncs.com", "authorization"),
        ("moonshot/kimi-k2", None, "api.moonshot.cn", "authorization"),
        ("volcengine/doubao", None, "ark.cn-beijing.volces.com", "authorization"),
        ("mistral/mistral-large", None, "api.mistral.ai", "authorization"),
        ("nvidia/nemotron", None, "integrate.api.nvidia.com", "authorization"),
        ("cerebras/llama", None, "api.cerebras.ai", "authorization"),
        ("anthropic/claude", None, "api.anthropic.com", "x-api-key"),
        ("gemini/gemini-2.5-pro", None, "generativelanguage.googleapis.com", "x-goog-api-key"),
        ("azure/gpt-4o", Some("https://res.openai.azure.com"), "res.openai.azure.com", "api-key"),
        ("openai/gpt-4o", Some("https://api.together.xyz/v1"), "api.together.xyz", "authorization"),
        ("groq/llama", Some("http://10.0.0.5:8080/v1"), "10.0.0.5", "authorization"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.json");
    for (i, (model, base, host, header)) in cases.iter().enumerate() {
        let mut entry = serde_json::json!({"model": model, "api_key": format!("sk-provider-case-{i:04}")});
        if let Some(b) = base {
            entry["api_base"] = (*b).into();
        }
        std::fs::write(&cfg, serde_json::json!({"model_list": [entry]}).to_string()).unwrap();
        let inv = load(&Sources::new(tmp.path(), &cfg));
        let got = uses(&inv, "model_list[0].api_key");
        assert!(got.contains(&pair(host, header)), "{model}: {got:?}");
        assert!(got.iter().all(|(h, _)| h == host), "{model}: only {host}: {got:?}");
    }
    // Unknown prefix, no api_base: loaded, no destination, one warning naming the entry.
    std::fs::write(&cfg, r#"{"model_list": [{"model": "nonesuch/x", "api_key": "sk-provider-unknown-01"}]}"#).unwrap();
    let inv = load(&Sources::new(tmp.path(), &cfg));
    assert!(uses(&inv, "model_list[0].api_key").is_empty());
    assert!(inv.warnings[0].contains("\"nonesuch\" is unknown"), "{:?}", inv.warnings);
}

#[test]
fn detector_options_carry_the_secrets_and_their_credential_hosts() {
    let inv = load_fixture("full");
    let opts = inv.detector_options();
    assert_eq!(opts.known_secrets.len(), inv.secrets.len());
    assert!(opts.provider_hosts.contains(&"llm-gw.corp.test".to_string()), "{:?}", opts.provider_hosts);
    // Telegram's token travels in the path, not a credential header: no provider host from it.
    assert!(!opts.provider_hosts.contains(&"api.telegram.org".to_string()));
    // The real detector accepts every value the adapter hands it.
    crate::detect::Detector::new(opts).unwrap();
}

#[test]
fn values_longer_than_the_detector_takes_are_skipped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "k".repeat(300) + &"Q9".repeat(200);
    let cfg = serde_json::json!({"version": 3, "model_list": [{"model": "openai/gpt-4o", "api_keys": [long, "sk-fine-0123456789"]}]});
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let inv = load(&Sources::new(tmp.path(), &tmp.path().join("config.json")));
    assert_eq!(inv.labels(), ["model_list[0].api_keys[1]"]);
    assert!(
        inv.warnings.iter().any(|w| w.contains("model_list[0].api_keys[0]") && w.contains("512")),
        "{:?}",
        inv.warnings
    );
    assert!(inv.warnings.iter().all(|w| !w.contains("kkkk")));
}
