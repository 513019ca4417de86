//! `doctor`: a coverage report for the operator's Picoclaw install. Which outbound clients pass through the
//! guardian and which bypass it (and why), whether HTTPS can be inspected, whether a monitor runs, and how
//! many known secrets were loaded (counts only; never a value, never a proxy URL).
//!
//! [`report`] gathers the facts from the files; [`build`] turns facts into a [`Report`] (pure, so tests
//! feed it directly); [`write_text`] and [`to_json`] are the two views of one report.
//!
//! # JSON (`doctor --json`, schema `picoclaw-traffic-guardian-doctor/v1`)
//! ```json
//! {"schema_version": "picoclaw-traffic-guardian-doctor/v1",
//!  "picoclaw_home": "/home/u/.picoclaw", "picoclaw_config": "/home/u/.picoclaw/config.json",
//!  "checks": [{"id": "proxy_override", "status": "warn", "message": "...", "fix": "..."}],
//!  "clients": [{"name": "model_list[0] (openai/gpt-4o)", "host": "api.openai.com",
//!               "route": "guardian", "proxy_key": null}],
//!  "known_secrets": {"total": 3, "by_source": {"config.json": 2, "auth.json": 1},
//!                    "encrypted_skipped": 0, "references_skipped": 0, "placeholders_ignored": 1},
//!  "warnings": ["..."]}
//! ```
//! `status` is `ok`, `warn` or `info`; `fix` is null when there is nothing to do; `route` is `guardian`,
//! `proxy_override` (then `proxy_key` names the key) or `loopback`. Check ids are stable; readers ignore
//! unknown keys and ids.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::secrets::{self, Client, FileState, Inventory, Route, SourceKind, Sources};
use crate::config::Config;
use crate::monitor::state::{self, Observed};

/// Schema of the JSON report.
pub const SCHEMA: &str = "picoclaw-traffic-guardian-doctor/v1";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// A gap or a problem the operator should act on.
    Warn,
    /// Worth knowing; nothing is broken.
    Info,
}

impl Status {
    fn tag(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Info => "info",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id (`picoclaw_config`, `known_secrets`, `proxy_override`, `loopback`, `covered`, `clawhub`,
    /// `mcp_stdio`, `exec_children`, `telegram_proxy_case`, `https_inspection`, `ca_bundle`, `monitor`,
    /// `picoclaw_file`).
    pub id: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do, if anything.
    pub fix: Option<String>,
}

/// One outbound client in the JSON view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRow {
    /// What it is (`model_list[0] (openai/gpt-4o)`).
    pub name: String,
    /// Host it talks to, when known.
    pub host: Option<String>,
    /// `guardian`, `proxy_override` or `loopback`.
    pub route: &'static str,
    /// The config key that overrides the proxy (`proxy_override` only).
    pub proxy_key: Option<String>,
}

/// Known-secret counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretCounts {
    /// Distinct known secrets.
    pub total: usize,
    /// By the file each was first found in.
    pub by_source: BTreeMap<&'static str, usize>,
    /// `enc://` values the guardian cannot read.
    pub encrypted_skipped: usize,
    /// `file://`, `env://`, `ref:` values not followed.
    pub references_skipped: usize,
    /// Empty-looking or placeholder values.
    pub placeholders_ignored: usize,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema_version: &'static str,
    /// Picoclaw's home as configured.
    pub picoclaw_home: String,
    /// Picoclaw's config file as configured.
    pub picoclaw_config: String,
    /// The checks, in reading order.
    pub checks: Vec<Check>,
    /// The outbound clients found in the config.
    pub clients: Vec<ClientRow>,
    /// Known-secret counts.
    pub known_secrets: SecretCounts,
    /// Problems reading the Picoclaw files (no values).
    pub warnings: Vec<String>,
}

/// What the trust side looks like on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// No CA at `<home>/ca/ca.pem`.
    NoCa,
    /// A CA, but the bundle file is missing or unreadable.
    NoBundle,
    /// A CA and a bundle that does not contain it.
    BundleLacksCa,
    /// The bundle holds the current CA.
    Ok,
}

/// Everything [`build`] needs, gathered from the system.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The effective configuration.
    pub config: Config,
    /// What the Picoclaw files hold.
    pub inventory: Inventory,
    /// The monitor's run directory.
    pub monitor: Observed,
    /// The CA and bundle.
    pub trust: Trust,
}

/// Gathers the facts for `cfg` (reads files, changes nothing) and builds the report.
pub fn report(cfg: &Config) -> Report {
    let facts = Facts {
        config: cfg.clone(),
        inventory: secrets::load(&Sources::from_config(cfg)),
        monitor: state::observe(&cfg.home),
        trust: trust(&ca_path(cfg), &cfg.ca_bundle),
    };
    build(&facts)
}

/// The guardian CA certificate, `<home>/ca/ca.pem`.
pub fn ca_path(cfg: &Config) -> PathBuf {
    cfg.home.ca_dir().join("ca.pem")
}

/// Whether `bundle` holds the certificate(s) of the PEM file at `ca`, compared block by block with line
/// endings and surrounding blanks ignored.
pub fn trust(ca: &Path, bundle: &Path) -> Trust {
    let Ok(ca_text) = fs::read_to_string(ca) else { return Trust::NoCa };
    let blocks = pem_blocks(&ca_text);
    if blocks.is_empty() {
        return Trust::NoCa;
    }
    let Ok(bundle_text) = fs::read_to_string(bundle) else { return Trust::NoBundle };
    let have = pem_blocks(&bundle_text);
    if blocks.iter().all(|b| have.contains(b)) {
        Trust::Ok
    } else {
        Trust::BundleLacksCa
    }
}

fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            cur = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b) = cur.take() {
                out.push(b);
            }
        } else if let Some(b) = cur.as_mut() {
            b.push_str(line);
        }
    }
    out
}

fn check(id: &'static str, status: Status, message: String, fix: Option<&str>) -> Check {
    Check { id, status, message, fix: fix.map(str::to_owned) }
}

fn client_label(c: &Client) -> String {
    match &c.host {
        Some(h) => format!("{} → {h}", c.name),
        None => c.name.clone(),
    }
}

/// Turns facts into the report.
pub fn build(f: &Facts) -> Report {
    let cfg = &f.config;
    let inv = &f.inventory;
    let mut checks = Vec::new();
    let config_path = cfg.picoclaw_config.display().to_string();

    match inv.files.get("config.json") {
        Some(FileState::Loaded) => {
            checks.push(check("picoclaw_config", Status::Ok, format!("Picoclaw config read: {config_path}"), None))
        }
        Some(FileState::Unusable) => checks.push(check(
            "picoclaw_config",
            Status::Warn,
            format!(
                "Picoclaw config {config_path} could not be used (see warnings): its secrets and clients are unknown"
            ),
            Some("fix the file (Picoclaw would reject it too); the guardian keeps going without it"),
        )),
        _ => checks.push(check(
            "picoclaw_config",
            Status::Warn,
            format!("Picoclaw config {config_path} not found: no model or channel secrets known, coverage unknown"),
            Some("set PICOCLAW_HOME / PICOCLAW_CONFIG (or picoclaw_home / picoclaw_config) to the Picoclaw install"),
        )),
    }

    let total = inv.secrets.len();
    if total > 0 {
        let order = [SourceKind::Config, SourceKind::Security, SourceKind::Auth, SourceKind::Pid];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|k| inv.counts.by_source.get(k.as_str()).map(|n| format!("{} {n}", k.as_str())))
            .collect();
        checks.push(check(
            "known_secrets",
            Status::Ok,
            format!(
                "{total} known secret{} loaded ({}); each is matched in any encoding and never shown",
                plural(total),
                parts.join(", ")
            ),
            None,
        ));
    } else {
        checks.push(check(
            "known_secrets",
            Status::Warn,
            "no known secrets loaded: only the generic key patterns will catch a leaked key".into(),
            Some("point picoclaw_home / picoclaw_config at the Picoclaw install that holds the keys"),
        ));
    }
    if inv.counts.encrypted > 0 {
        let n = inv.counts.encrypted;
        checks.push(check(
            "known_secrets",
            Status::Info,
            format!(
                "{n} enc:// value{} skipped: the guardian does not decrypt them, so those keys are caught only by \
                 the generic patterns",
                plural(n)
            ),
            Some("nothing required: by design the guardian never reads ~/.ssh/picoclaw_ed25519.key"),
        ));
    }
    if inv.counts.references > 0 {
        let n = inv.counts.references;
        checks.push(check(
            "known_secrets",
            Status::Info,
            format!("{n} file://, env:// or ref: value{} not followed: those keys are not known secrets", plural(n)),
            None,
        ));
    }

    let mut covered = Vec::new();
    for c in &inv.clients {
        match &c.route {
            Route::ProxyOverride { key } => checks.push(check(
                "proxy_override",
                Status::Warn,
                format!(
                    "{}: `{key}` is set, so this client uses that proxy instead of the guardian; its traffic is not seen",
                    client_label(c)
                ),
                Some(&format!("remove `{key}` from the Picoclaw config (the environment proxy from `run` then applies)")),
            )),
            Route::Loopback => checks.push(check(
                "loopback",
                Status::Info,
                format!("{}: loopback target; Go never proxies loopback, so this traffic is not seen", client_label(c)),
                Some(
                    "nothing to do for a server on this machine; if it forwards to the internet (LiteLLM, SearXNG, \
                     a gateway), start it with the guardian's proxy variables too",
                ),
            )),
            Route::Guardian => covered.push(client_label(c)),
        }
    }
    if !covered.is_empty() {
        checks.push(check(
            "covered",
            Status::Ok,
            format!(
                "{} client{} will pass through the guardian: {}",
                covered.len(),
                plural(covered.len()),
                covered.join("; ")
            ),
            None,
        ));
    }

    checks.push(check(
        "clawhub",
        Status::Info,
        format!(
            "the ClawHub skill registry client (clawhub.ai) always connects directly{}: skill searches and \
             downloads bypass the guardian",
            if inv.clawhub_enabled { " and is enabled" } else { "" }
        ),
        Some("review a skill before installing it; the guardian cannot see that download"),
    ));
    if !inv.mcp_stdio.is_empty() {
        checks.push(check(
            "mcp_stdio",
            Status::Info,
            format!(
                "MCP stdio servers start as child processes ({}): they inherit the proxy variables but may ignore \
                 them (Node's built-in fetch does unless NODE_USE_ENV_PROXY=1)",
                inv.mcp_stdio.join(", ")
            ),
            Some("check that each server honours HTTPS_PROXY; set NODE_USE_ENV_PROXY=1 in its env for Node servers"),
        ));
    }
    let mut exec_msg =
        "commands the agent runs (exec tool, cron jobs) inherit the proxy variables: curl, git, pip and \
                        Go programs honour them, programs that ignore them connect directly"
            .to_owned();
    if !inv.cli_models.is_empty() {
        exec_msg.push_str(&format!("; so do the model CLIs started as children ({})", inv.cli_models.join(", ")));
    }
    checks.push(check("exec_children", Status::Info, exec_msg, None));
    if inv.telegram_enabled {
        checks.push(check(
            "telegram_proxy_case",
            Status::Info,
            "Telegram's client reads only the UPPERCASE HTTP_PROXY / HTTPS_PROXY".into(),
            Some("`run` sets both cases; when you start the gateway yourself, take the variables from `env`, which prints both"),
        ));
    }

    let ca = ca_path(cfg).display().to_string();
    let bundle = cfg.ca_bundle.display().to_string();
    if cfg.https_inspection {
        checks.push(match f.trust {
            Trust::Ok => check("ca_bundle", Status::Ok, format!("trust bundle {bundle} holds the current CA ({ca})"), None),
            Trust::NoCa => check(
                "ca_bundle",
                Status::Warn,
                format!("https_inspection is on but there is no CA at {ca}: HTTPS cannot be inspected"),
                Some("run `picoclaw-traffic-guardian ca init`"),
            ),
            Trust::NoBundle => check(
                "ca_bundle",
                Status::Warn,
                format!("trust bundle {bundle} is missing: the gateway would reject the guardian's certificates"),
                Some("run `picoclaw-traffic-guardian ca init` to write the bundle (system roots + guardian CA)"),
            ),
            Trust::BundleLacksCa => check(
                "ca_bundle",
                Status::Warn,
                format!("trust bundle {bundle} does not hold the current CA ({ca}): the gateway would reject the guardian's certificates"),
                Some("run `picoclaw-traffic-guardian ca init` to rewrite the bundle"),
            ),
        });
    } else {
        let fix = match f.trust {
            Trust::NoCa => "run `picoclaw-traffic-guardian ca init`, then set https_inspection (trust is per process; nothing is installed system-wide)",
            _ => "set https_inspection (or pass --https-inspection); the CA already exists and trust stays per process",
        };
        checks.push(check(
            "https_inspection",
            Status::Info,
            "HTTPS inspection is off: HTTPS is tunnelled blind, so only destinations are seen, not the secrets inside"
                .into(),
            Some(fix),
        ));
    }

    checks.push(match &f.monitor {
        Observed::Running(s) => {
            check("monitor", Status::Ok, format!("a monitor runs (pid {}, listening on {})", s.pid, s.listen), None)
        }
        Observed::Stopped => check(
            "monitor",
            Status::Info,
            "no monitor runs".into(),
            Some("`picoclaw-traffic-guardian run -- picoclaw gateway` starts one around the gateway"),
        ),
        Observed::Stale(st) => {
            check("monitor", Status::Warn, format!("{st}"), Some("starting a new monitor cleans up the leftovers"))
        }
    });

    for w in &inv.warnings {
        checks.push(check(
            "picoclaw_file",
            Status::Warn,
            w.clone(),
            Some("fix or remove it; everything else still loads"),
        ));
    }

    let clients = inv
        .clients
        .iter()
        .map(|c| {
            let (route, proxy_key) = match &c.route {
                Route::Guardian => ("guardian", None),
                Route::ProxyOverride { key } => ("proxy_override", Some(key.clone())),
                Route::Loopback => ("loopback", None),
            };
            ClientRow { name: c.name.clone(), host: c.host.clone(), route, proxy_key }
        })
        .collect();

    Report {
        schema_version: SCHEMA,
        picoclaw_home: cfg.picoclaw_home.display().to_string(),
        picoclaw_config: config_path,
        checks,
        clients,
        known_secrets: SecretCounts {
            total,
            by_source: inv.counts.by_source.clone(),
            encrypted_skipped: inv.counts.encrypted,
            references_skipped: inv.counts.references,
            placeholders_ignored: inv.counts.placeholders,
        },
        warnings: inv.warnings.clone(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The JSON view.
pub fn to_json(r: &Report) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// The human view: one line per check, its fix indented below it, then a summary line.
pub fn write_text(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "picoclaw home:   {}", r.picoclaw_home)?;
    writeln!(out, "picoclaw config: {}", r.picoclaw_config)?;
    writeln!(out)?;
    for c in &r.checks {
        writeln!(out, "[{:<4}] {}", c.status.tag(), c.message)?;
        if let Some(fix) = &c.fix {
            writeln!(out, "       fix: {fix}")?;
        }
    }
    let warn = r.checks.iter().filter(|c| c.status == Status::Warn).count();
    writeln!(out)?;
    if warn == 0 {
        writeln!(out, "no problems found")
    } else {
        writeln!(out, "{warn} thing{} to look at", plural(warn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_ignore_line_endings() {
        let a = "-----BEGIN CERTIFICATE-----\r\nAAAA\r\nBBBB\r\n-----END CERTIFICATE-----\r\n";
        let b = "junk\n-----BEGIN CERTIFICATE-----\nZZZZ\n-----END CERTIFICATE-----\n\n-----BEGIN CERTIFICATE-----\n  AAAA\nBBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_blocks(a), ["AAAABBBB"]);
        assert!(pem_blocks(b).contains(&"AAAABBBB".to_owned()));
        assert!(pem_blocks("-----BEGIN CERTIFICATE-----\nAAAA").is_empty(), "unterminated block");
    }

    #[test]
    fn trust_states() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca.pem");
        let bundle = tmp.path().join("bundle.pem");
        assert_eq!(trust(&ca, &bundle), Trust::NoCa);
        fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        assert_eq!(trust(&ca, &bundle), Trust::NoBundle);
        fs::write(&bundle, "-----BEGIN CERTIFICATE-----\nOTHER\n-----END CERTIFICATE-----\n").unwrap();
        assert_eq!(trust(&ca, &bundle), Trust::BundleLacksCa);
        fs::write(&bundle, "-----BEGIN CERTIFICATE-----\nOTHER\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\r\nAAAA\r\n-----END CERTIFICATE-----\r\n").unwrap();
        assert_eq!(trust(&ca, &bundle), Trust::Ok);
    }
}
