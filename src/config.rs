//! The configuration model: a JSON file, overlaid by environment variables, overlaid by command-line flags.
//!
//! Loading never stops at the first problem. [`load`] walks every key, collects every error with the key path
//! (or variable, or flag) it came from, and reports where each effective value came from, so that
//! `check-config` can show an operator everything at once. Nothing here writes a file or opens a socket.
//!
//! [`KEYS`] is the one list of keys; the README's configuration reference is generated from it
//! ([`reference_markdown`]) and a test keeps the two equal.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::home::{self, EnvVars, Home, HomeSource};

/// Variable naming the config file.
pub const CONFIG_ENV: &str = "PICOCLAW_TRAFFIC_GUARDIAN_CONFIG";
/// Smallest allowed `max_scan_bytes`.
pub const MIN_SCAN_BYTES: u64 = 1024;
/// Hard upper bound of `max_scan_bytes` (16 MiB): the scan budget is bounded by construction.
pub const MAX_SCAN_BYTES: u64 = 16 * 1024 * 1024;
/// Ports Picoclaw itself uses (gateway, launcher, OAuth callbacks); the guardian must not take them.
pub const PICOCLAW_PORTS: [u16; 4] = [18790, 18800, 1455, 51121];

/// One documented configuration key.
#[derive(Debug)]
pub struct Key {
    /// The JSON key.
    pub name: &'static str,
    /// The environment variable that sets it, if any.
    pub env: Option<&'static str>,
    /// The default, as a reader should see it.
    pub default_doc: &'static str,
    /// What it does and what values are allowed.
    pub doc: &'static str,
}

/// Every configuration key, in the order the reference lists them.
pub const KEYS: &[Key] = &[
    Key { name: "listen", env: Some("PICOCLAW_TRAFFIC_GUARDIAN_PROXY_URL"), default_doc: "`127.0.0.1:18795`", doc: "`host:port` the proxy listens on (IP literal or `localhost`; port 0 picks a free one). The variable takes a URL, `http://host:port`. A non-loopback host is an error unless `allow_non_loopback` is true." },
    Key { name: "allow_non_loopback", env: None, default_doc: "`false`", doc: "Allow `listen` on a non-loopback address (other machines could then use the proxy)." },
    Key { name: "mode", env: Some("PICOCLAW_TRAFFIC_GUARDIAN_MODE"), default_doc: "`detect`", doc: "The only mode is `detect`: findings are logged, traffic is never blocked or changed." },
    Key { name: "max_scan_bytes", env: Some("PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES"), default_doc: "`65536`", doc: "Bytes inspected per HTTP message, start line and headers included; 1024 to 16777216. The rest is forwarded untouched and counted as unscanned." },
    Key { name: "log_dir", env: Some("PICOCLAW_TRAFFIC_GUARDIAN_LOG_DIR"), default_doc: "`<home>/logs`", doc: "Directory of the findings log `findings.jsonl`." },
    Key { name: "log_max_bytes", env: None, default_doc: "`16777216`", doc: "Size at which the findings log is rotated; 4096 to 1073741824." },
    Key { name: "log_keep", env: None, default_doc: "`5`", doc: "Rotated findings logs kept (`findings.jsonl.1` ...); 0 to 100." },
    Key { name: "dedup_window_secs", env: None, default_doc: "`60`", doc: "The same finding (pattern, destination, direction, value) is written once per window; 0 disables dedup; at most 86400." },
    Key { name: "proxy_auth", env: None, default_doc: "`true`", doc: "Demand a per-start credential from clients (handed to the monitored process inside its proxy URL)." },
    Key { name: "https_inspection", env: None, default_doc: "`false`", doc: "Decrypt HTTPS with the guardian CA. Only the monitored process trusts it, through its own environment." },
    Key { name: "ca_bundle", env: Some("PICOCLAW_TRAFFIC_GUARDIAN_CA_BUNDLE"), default_doc: "`<home>/ca/trust-bundle.pem`", doc: "Trust bundle (system roots + guardian CA) the monitored process is told to trust." },
    Key { name: "ca_validity_days", env: None, default_doc: "`365`", doc: "Validity of a CA made by `ca init`; 1 to 3650." },
    Key { name: "upstream_ca_file", env: None, default_doc: "none", doc: "Extra PEM roots for verifying upstream servers (private endpoints, tests); the file must exist." },
    Key { name: "mitm_skip_hosts", env: None, default_doc: "`[]`", doc: "Host patterns (`example.com`, `*.example.com`) tunnelled blind even when inspecting." },
    Key { name: "resolve", env: None, default_doc: "`{}`", doc: "Pin host names to IP addresses, like curl's `--resolve`: `{\"api.example.com\": \"127.0.0.1\"}`." },
    Key { name: "picoclaw_home", env: Some("PICOCLAW_HOME"), default_doc: "`~/.picoclaw`", doc: "Picoclaw's home, read for known secrets and the coverage report." },
    Key { name: "picoclaw_config", env: Some("PICOCLAW_CONFIG"), default_doc: "`<picoclaw_home>/config.json`", doc: "Picoclaw's config file." },
    Key { name: "egress_allow", env: None, default_doc: "`[]`", doc: "Host patterns the agent is expected to reach; when non-empty, other hosts give an `egress_not_allowlisted` finding." },
    Key { name: "profile_output", env: Some("PICOCLAW_TRAFFIC_GUARDIAN_PROFILE_OUTPUT"), default_doc: "`<home>/profile.json`", doc: "Where `profile` writes the posture fragment." },
    Key { name: "redact_snippets", env: Some("PICOCLAW_TRAFFIC_GUARDIAN_REDACT_SNIPPETS"), default_doc: "`true`", doc: "Redaction cannot be turned off; `false` is an error." },
];

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Built-in default.
    Default,
    /// The config file.
    File,
    /// An environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

/// One problem or warning, with the key path, variable or flag it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `listen`, `resolve.api.example.com`, `PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES`, `--listen` ...
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The only mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Detect and log; never block.
    Detect,
}

/// The address the proxy listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub SocketAddr);

impl Listen {
    /// Parses `host:port` where host is an IP literal (`[::1]` for IPv6) or `localhost`.
    pub fn parse(text: &str) -> Result<Listen, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Listen(addr));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not host:port; write it like \"127.0.0.1:18795\""))?;
        let port: u16 =
            port.parse().map_err(|_| format!("port {port:?} in {text:?} is not a number from 0 to 65535"))?;
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(Listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
        }
        Err(format!(
            "host {host:?} in {text:?} must be an IP address or \"localhost\" (IPv6 goes in brackets: \"[::1]:18795\")"
        ))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The validated, effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The state home everything else defaults into.
    pub home: Home,
    /// Where the proxy listens.
    pub listen: Listen,
    /// Whether `listen` may be non-loopback.
    pub allow_non_loopback: bool,
    /// Always [`Mode::Detect`].
    pub mode: Mode,
    /// Per-message scan budget in bytes.
    pub max_scan_bytes: usize,
    /// Findings log directory.
    pub log_dir: PathBuf,
    /// Rotation size of the findings log.
    pub log_max_bytes: u64,
    /// Rotated files kept.
    pub log_keep: u32,
    /// Dedup window in seconds (0: no dedup).
    pub dedup_window_secs: u64,
    /// Whether clients must present the per-start credential.
    pub proxy_auth: bool,
    /// Whether HTTPS is decrypted with the guardian CA.
    pub https_inspection: bool,
    /// Trust bundle handed to the monitored process.
    pub ca_bundle: PathBuf,
    /// Validity of a new CA.
    pub ca_validity_days: u32,
    /// Extra upstream roots.
    pub upstream_ca_file: Option<PathBuf>,
    /// Hosts tunnelled blind.
    pub mitm_skip_hosts: Vec<HostPattern>,
    /// Pinned addresses by lowercase host name.
    pub resolve: BTreeMap<String, IpAddr>,
    /// Picoclaw's home.
    pub picoclaw_home: PathBuf,
    /// Picoclaw's config file.
    pub picoclaw_config: PathBuf,
    /// Expected destinations (empty: no allow-list findings).
    pub egress_allow: Vec<HostPattern>,
    /// Profile fragment path.
    pub profile_output: PathBuf,
}

impl Config {
    /// The effective configuration as canonical JSON (every key, resolved values, keys sorted), so that a
    /// whitespace or key-order edit of the file does not change it but any real change does.
    pub fn canonical_json(&self) -> Value {
        let path = |p: &Path| Value::String(p.display().to_string());
        let hosts = |h: &[HostPattern]| Value::Array(h.iter().map(|p| Value::String(p.0.clone())).collect());
        let mut m = Map::new();
        m.insert("listen".into(), Value::String(self.listen.to_string()));
        m.insert("allow_non_loopback".into(), Value::Bool(self.allow_non_loopback));
        m.insert("mode".into(), Value::String("detect".into()));
        m.insert("max_scan_bytes".into(), Value::from(self.max_scan_bytes));
        m.insert("log_dir".into(), path(&self.log_dir));
        m.insert("log_max_bytes".into(), Value::from(self.log_max_bytes));
        m.insert("log_keep".into(), Value::from(self.log_keep));
        m.insert("dedup_window_secs".into(), Value::from(self.dedup_window_secs));
        m.insert("proxy_auth".into(), Value::Bool(self.proxy_auth));
        m.insert("https_inspection".into(), Value::Bool(self.https_inspection));
        m.insert("ca_bundle".into(), path(&self.ca_bundle));
        m.insert("ca_validity_days".into(), Value::from(self.ca_validity_days));
        m.insert("upstream_ca_file".into(), self.upstream_ca_file.as_deref().map(path).unwrap_or(Value::Null));
        m.insert("mitm_skip_hosts".into(), hosts(&self.mitm_skip_hosts));
        m.insert(
            "resolve".into(),
            Value::Object(self.resolve.iter().map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect()),
        );
        m.insert("picoclaw_home".into(), path(&self.picoclaw_home));
        m.insert("picoclaw_config".into(), path(&self.picoclaw_config));
        m.insert("egress_allow".into(), hosts(&self.egress_allow));
        m.insert("profile_output".into(), path(&self.profile_output));
        m.insert("redact_snippets".into(), Value::Bool(true));
        Value::Object(m)
    }

    /// sha256 (hex) of the compact [`Config::canonical_json`].
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.canonical_json().to_string().as_bytes()))
    }
}

/// A host name, or `*.` followed by a domain that matches any name below it (not the domain itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    /// Parses and lowercases a pattern, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        if !is_host_name(name) {
            return Err(format!(
                "{text:?} is not a host name or \"*.domain\" pattern (letters, digits, '-' and '.', optionally starting with \"*.\")"
            ));
        }
        Ok(HostPattern(lower))
    }

    /// Whether `host` (any case, trailing dot allowed) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        match self.0.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len() + 1
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
            None => host.eq_ignore_ascii_case(&self.0),
        }
    }

    /// The pattern as written (lowercased).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Values given on the command line, by config key. Commands build this from their flags.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config PATH`.
    pub config: Option<PathBuf>,
    /// `(key, value, flag spelling)` triples, e.g. `("listen", "127.0.0.1:0", "--listen")`.
    pub values: Vec<(&'static str, Value, &'static str)>,
}

/// Everything [`load`] found out.
#[derive(Debug)]
pub struct Loaded {
    /// The config, when there were no errors.
    pub config: Option<Config>,
    /// Every error.
    pub errors: Vec<Problem>,
    /// Legal but risky settings.
    pub warnings: Vec<Problem>,
    /// Each key's effective value (as JSON) and its source.
    pub effective: BTreeMap<&'static str, Effective>,
    /// The config file that was (or would have been) read.
    pub config_file: PathBuf,
    /// Whether that file existed.
    pub config_file_found: bool,
}

/// One effective value and its source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    /// The value as JSON.
    pub value: Value,
    /// Where it came from.
    pub source: Source,
}

/// Loading failed hard: the config is unusable. Carries every problem.
#[derive(Debug)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the configuration is not valid (run `picoclaw-traffic-guardian check-config`):")?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Loaded {
    /// The config, or every error at once.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.config.ok_or(ConfigError(self.errors))
    }
}

/// One layered raw value and how to report it.
struct Raw {
    value: Value,
    source: Source,
    /// Key path, variable or flag, for messages.
    origin: String,
    /// Directory relative paths are resolved against (the config file's), if any.
    base: Option<PathBuf>,
}

/// Loads the effective config from defaults, the config file, `env` and `flags`, checking all of it.
pub fn load(env: &EnvVars, flags: &Flags) -> Loaded {
    let mut errors = Vec::new();
    let home = match Home::resolve(env) {
        Ok((home, _)) => Some(home),
        Err(e) => {
            errors.push(Problem { path: home::HOME_ENV.into(), message: e.to_string() });
            None
        }
    };
    let config_file = match (&flags.config, env.get(CONFIG_ENV)) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => env.expand_tilde(p).unwrap_or_else(|_| PathBuf::from(p)),
        (None, None) => home.as_ref().map(Home::config_file).unwrap_or_default(),
    };
    let origin = if flags.config.is_some() {
        "--config"
    } else if env.get(CONFIG_ENV).is_some() {
        CONFIG_ENV
    } else {
        "config file"
    };

    let mut layers: BTreeMap<&'static str, Raw> = BTreeMap::new();
    if let Some(home) = &home {
        defaults(home, env, &mut layers);
    }

    let mut config_file_found = false;
    match std::fs::read(&config_file) {
        Ok(bytes) => {
            config_file_found = true;
            read_file_layer(&config_file, &bytes, &mut layers, &mut errors);
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && flags.config.is_none() && env.get(CONFIG_ENV).is_none() => {}
        Err(e) => errors.push(Problem {
            path: origin.into(),
            message: format!("cannot read {}: {e}; fix the path or create the file", config_file.display()),
        }),
    }
    env_layer(env, &mut layers, &mut errors);
    for (key, value, flag) in &flags.values {
        layers.insert(key, Raw { value: value.clone(), source: Source::Flag, origin: (*flag).into(), base: None });
    }

    let mut effective: BTreeMap<&'static str, Effective> =
        layers.iter().map(|(k, r)| (*k, Effective { value: r.value.clone(), source: r.source })).collect();
    let mut b = Builder { layers, env, errors };
    let config = home.and_then(|home| b.build(home));
    if let (Some(cfg), Some(e)) = (&config, effective.get_mut("picoclaw_config")) {
        if e.value.is_null() {
            e.value = Value::String(cfg.picoclaw_config.display().to_string());
        }
    }
    let Builder { mut errors, .. } = b;
    let warnings = config.as_ref().map(warnings).unwrap_or_default();
    if let Some(cfg) = &config {
        for (dir, path) in [(cfg.home.root(), home::HOME_ENV), (cfg.log_dir.as_path(), "log_dir")] {
            if let Err(e) = home::check_private_dir(dir) {
                errors.push(Problem { path: path.into(), message: e.to_string() });
            }
        }
    }
    Loaded {
        config: if errors.is_empty() { config } else { None },
        errors,
        warnings,
        effective,
        config_file,
        config_file_found,
    }
}

fn defaults(home: &Home, env: &EnvVars, layers: &mut BTreeMap<&'static str, Raw>) {
    let path = |p: &Path| Value::String(p.display().to_string());
    let picoclaw_home = match env.get(home::PICOCLAW_HOME_ENV) {
        Some(p) => (Value::String(p.into()), Source::Env, home::PICOCLAW_HOME_ENV),
        None => (Value::String("~/.picoclaw".into()), Source::Default, "picoclaw_home"),
    };
    let picoclaw_config = match env.get("PICOCLAW_CONFIG") {
        Some(p) => (Value::String(p.into()), Source::Env, "PICOCLAW_CONFIG"),
        // Filled in by the builder from the effective `picoclaw_home`.
        None => (Value::Null, Source::Default, "picoclaw_config"),
    };
    let table = [
        ("listen", Value::from("127.0.0.1:18795")),
        ("allow_non_loopback", Value::from(false)),
        ("mode", Value::from("detect")),
        ("max_scan_bytes", Value::from(65536)),
        ("log_dir", path(&home.logs_dir())),
        ("log_max_bytes", Value::from(16 * 1024 * 1024)),
        ("log_keep", Value::from(5)),
        ("dedup_window_secs", Value::from(60)),
        ("proxy_auth", Value::from(true)),
        ("https_inspection", Value::from(false)),
        ("ca_bundle", path(&home.default_ca_bundle())),
        ("ca_validity_days", Value::from(365)),
        ("upstream_ca_file", Value::Null),
        ("mitm_skip_hosts", Value::Array(vec![])),
        ("resolve", Value::Object(Map::new())),
        ("egress_allow", Value::Array(vec![])),
        ("profile_output", path(&home.default_profile_output())),
        ("redact_snippets", Value::from(true)),
    ];
    for (key, value) in table {
        layers.insert(key, Raw { value, source: Source::Default, origin: key.into(), base: None });
    }
    for (key, (value, source, origin)) in [("picoclaw_home", picoclaw_home), ("picoclaw_config", picoclaw_config)] {
        layers.insert(key, Raw { value, source, origin: origin.into(), base: None });
    }
}

fn read_file_layer(file: &Path, bytes: &[u8], layers: &mut BTreeMap<&'static str, Raw>, errors: &mut Vec<Problem>) {
    let origin = file.display().to_string();
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            errors.push(Problem {
                path: origin,
                message: format!("not valid JSON at line {} column {}: {e}; fix the syntax", e.line(), e.column()),
            });
            return;
        }
    };
    let Value::Object(map) = value else {
        errors.push(Problem { path: origin, message: "the config file must hold one JSON object of keys".into() });
        return;
    };
    let base = file.parent().map(Path::to_path_buf);
    for (key, value) in map {
        match KEYS.iter().find(|k| k.name == key) {
            Some(k) => {
                layers.insert(k.name, Raw { value, source: Source::File, origin: k.name.into(), base: base.clone() });
            }
            None => errors.push(Problem { path: key.clone(), message: unknown_key_message(&key) }),
        }
    }
}

fn unknown_key_message(key: &str) -> String {
    let best = KEYS
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k.name), k.name))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score >= 0.8);
    match best {
        Some((_, name)) => format!("unknown key; did you mean \"{name}\"?"),
        None => "unknown key; the README lists the keys (Configuration)".into(),
    }
}

fn env_layer(env: &EnvVars, layers: &mut BTreeMap<&'static str, Raw>, errors: &mut Vec<Problem>) {
    for key in KEYS {
        let Some(var) = key.env else { continue };
        // PICOCLAW_HOME / PICOCLAW_CONFIG already shaped the defaults.
        if var.starts_with("PICOCLAW_") && !var.starts_with("PICOCLAW_TRAFFIC_GUARDIAN_") {
            continue;
        }
        let Some(text) = env.get(var) else { continue };
        let value = match key.name {
            "listen" => match listen_from_url(text) {
                Ok(v) => Value::String(v),
                Err(msg) => {
                    errors.push(Problem { path: var.into(), message: msg });
                    continue;
                }
            },
            "max_scan_bytes" => match text.trim().parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => {
                    errors.push(Problem {
                        path: var.into(),
                        message: format!("{text:?} is not a whole number of bytes; use e.g. 65536"),
                    });
                    continue;
                }
            },
            "redact_snippets" => match parse_bool(text) {
                Some(b) => Value::Bool(b),
                None => {
                    errors.push(Problem { path: var.into(), message: format!("{text:?} is not true or false") });
                    continue;
                }
            },
            _ => Value::String(text.into()),
        };
        layers.insert(key.name, Raw { value, source: Source::Env, origin: var.into(), base: None });
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `http://host:port[/]` to `host:port`.
fn listen_from_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text:?} must be an http:// URL like http://127.0.0.1:18795"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) {
        return Err(format!("{text:?} must be just http://host:port, without credentials or a path"));
    }
    Ok(rest.to_string())
}

struct Builder<'a> {
    layers: BTreeMap<&'static str, Raw>,
    env: &'a EnvVars,
    errors: Vec<Problem>,
}

impl Builder<'_> {
    fn raw(&self, key: &str) -> &Raw {
        // Every key has a default layer, so this cannot miss for a key of `KEYS`.
        &self.layers[key]
    }

    fn fail(&mut self, key: &str, message: String) {
        let origin = self.raw(key).origin.clone();
        self.errors.push(Problem { path: origin, message });
    }

    fn bool(&mut self, key: &str) -> bool {
        match self.raw(key).value {
            Value::Bool(b) => b,
            ref other => {
                let msg = format!("expected true or false, found {other}");
                self.fail(key, msg);
                false
            }
        }
    }

    fn int(&mut self, key: &str, lo: u64, hi: u64) -> u64 {
        match self.raw(key).value.as_u64() {
            Some(n) if (lo..=hi).contains(&n) => n,
            Some(n) => {
                self.fail(key, format!("{n} is out of range; use a value from {lo} to {hi}"));
                lo
            }
            None => {
                let msg = format!("expected a whole number from {lo} to {hi}, found {}", self.raw(key).value);
                self.fail(key, msg);
                lo
            }
        }
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match &self.raw(key).value {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            other => {
                let msg = format!("expected a non-empty string, found {other}");
                self.fail(key, msg);
                None
            }
        }
    }

    fn path(&mut self, key: &str) -> PathBuf {
        let Some(text) = self.string(key) else { return PathBuf::new() };
        self.resolve_path(key, &text)
    }

    fn resolve_path(&mut self, key: &str, text: &str) -> PathBuf {
        match self.env.expand_tilde(text) {
            Ok(p) if p.is_relative() => match &self.raw(key).base {
                Some(base) => base.join(p),
                None => p,
            },
            Ok(p) => p,
            Err(e) => {
                self.fail(key, e.to_string());
                PathBuf::new()
            }
        }
    }

    fn hosts(&mut self, key: &str) -> Vec<HostPattern> {
        let Value::Array(items) = self.raw(key).value.clone() else {
            let msg = format!("expected a list of host patterns, found {}", self.raw(key).value);
            self.fail(key, msg);
            return vec![];
        };
        let origin = self.raw(key).origin.clone();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().map(HostPattern::parse) {
                Some(Ok(p)) => out.push(p),
                Some(Err(msg)) => self.errors.push(Problem { path: format!("{origin}[{i}]"), message: msg }),
                None => self.errors.push(Problem {
                    path: format!("{origin}[{i}]"),
                    message: format!("expected a string, found {item}"),
                }),
            }
        }
        out
    }

    fn build(&mut self, home: Home) -> Option<Config> {
        let allow_non_loopback = self.bool("allow_non_loopback");
        let listen = match self.string("listen").map(|s| Listen::parse(&s)) {
            Some(Ok(l)) => {
                if !l.0.ip().is_loopback() && !allow_non_loopback {
                    self.fail("listen", format!("{l} is not a loopback address: other machines could use the proxy; listen on 127.0.0.1, or set allow_non_loopback to true if you mean it"));
                }
                l
            }
            Some(Err(msg)) => {
                self.fail("listen", msg);
                Listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            }
            None => Listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
        };
        let mode = match self.string("mode").as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("detect") | None => Mode::Detect,
            Some("block") => {
                self.fail("mode", "blocking does not exist in this version: the guardian only detects and logs; set mode to \"detect\"".into());
                Mode::Detect
            }
            Some(other) => {
                self.fail("mode", format!("{other:?} is not a mode; the only mode is \"detect\""));
                Mode::Detect
            }
        };
        let max_scan_bytes = self.int("max_scan_bytes", MIN_SCAN_BYTES, MAX_SCAN_BYTES) as usize;
        let log_dir = self.path("log_dir");
        let log_max_bytes = self.int("log_max_bytes", 4096, 1 << 30);
        let log_keep = self.int("log_keep", 0, 100) as u32;
        let dedup_window_secs = self.int("dedup_window_secs", 0, 86_400);
        let proxy_auth = self.bool("proxy_auth");
        let https_inspection = self.bool("https_inspection");
        let ca_bundle = self.path("ca_bundle");
        let ca_validity_days = self.int("ca_validity_days", 1, 3650) as u32;
        let upstream_ca_file = match self.raw("upstream_ca_file").value {
            Value::Null => None,
            _ => {
                let p = self.path("upstream_ca_file");
                if !p.as_os_str().is_empty() && !p.is_file() {
                    self.fail(
                        "upstream_ca_file",
                        format!("{} does not exist or is not a file; give a PEM file of CA certificates", p.display()),
                    );
                }
                Some(p)
            }
        };
        let mitm_skip_hosts = self.hosts("mitm_skip_hosts");
        let egress_allow = self.hosts("egress_allow");
        let resolve = self.resolve_map();
        let picoclaw_home = self.path("picoclaw_home");
        let picoclaw_config = match self.raw("picoclaw_config").value {
            Value::Null => picoclaw_home.join("config.json"),
            _ => self.path("picoclaw_config"),
        };
        let profile_output = self.path("profile_output");
        if !self.bool("redact_snippets") {
            self.fail("redact_snippets", "redaction cannot be turned off: secrets are always redacted before anything is written; remove this setting".into());
        }
        Some(Config {
            home,
            listen,
            allow_non_loopback,
            mode,
            max_scan_bytes,
            log_dir,
            log_max_bytes,
            log_keep,
            dedup_window_secs,
            proxy_auth,
            https_inspection,
            ca_bundle,
            ca_validity_days,
            upstream_ca_file,
            mitm_skip_hosts,
            resolve,
            picoclaw_home,
            picoclaw_config,
            egress_allow,
            profile_output,
        })
    }

    fn resolve_map(&mut self) -> BTreeMap<String, IpAddr> {
        let Value::Object(map) = self.raw("resolve").value.clone() else {
            let msg = format!("expected an object of host name to IP address, found {}", self.raw("resolve").value);
            self.fail("resolve", msg);
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (host, addr) in map {
            let path = format!("resolve.{host}");
            if !is_host_name(&host.to_ascii_lowercase()) {
                self.errors.push(Problem { path, message: format!("{host:?} is not a host name") });
                continue;
            }
            match addr.as_str().and_then(|a| a.parse::<IpAddr>().ok()) {
                Some(ip) => {
                    out.insert(host.to_ascii_lowercase(), ip);
                }
                None => self.errors.push(Problem {
                    path,
                    message: format!("{addr} is not an IP address; write it like \"127.0.0.1\""),
                }),
            }
        }
        out
    }
}

fn warnings(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut warn = |path: &str, message: String| out.push(Problem { path: path.into(), message });
    if cfg.https_inspection {
        warn("https_inspection", format!(
            "HTTPS is decrypted: the monitored process must trust {}; start it with `picoclaw-traffic-guardian run`, which sets SSL_CERT_FILE for it alone, and make the CA first with `ca init`",
            cfg.ca_bundle.display()
        ));
    }
    if !cfg.proxy_auth {
        warn("proxy_auth", "off: any local process can send traffic through the proxy in your name".into());
    }
    if !cfg.listen.0.ip().is_loopback() {
        warn("listen", format!("{} is reachable from other machines", cfg.listen));
    }
    if PICOCLAW_PORTS.contains(&cfg.listen.0.port()) {
        warn(
            "listen",
            format!("port {} is one Picoclaw uses itself; pick another (the default is 18795)", cfg.listen.0.port()),
        );
    }
    out
}

/// The configuration reference table, as it appears in the README.
pub fn reference_markdown() -> String {
    let mut out = String::from("| key | variable | default | meaning |\n|---|---|---|---|\n");
    for k in KEYS {
        let var = k.env.map(|v| format!("`{v}`")).unwrap_or_default();
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", k.name, var, k.default_doc, k.doc));
    }
    out
}

/// Which rule picked the state home, as a short phrase.
pub fn home_source_phrase(source: HomeSource) -> &'static str {
    match source {
        HomeSource::GuardianHomeEnv => "PICOCLAW_TRAFFIC_GUARDIAN_HOME",
        HomeSource::PicoclawHomeEnv => "$PICOCLAW_HOME/security/clawsec/traffic-guardian",
        HomeSource::Default => "~/.picoclaw/security/clawsec/traffic-guardian",
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
