//! `status`: what the run directory, the live monitor (over the control socket) and the findings log say.
//!
//! # JSON schema `picoclaw-traffic-guardian-status/v1`
//!
//! One object ([`Status`]); every key is always present, `null` when it does not apply (a stopped monitor
//! has no PID). Readers must ignore keys they do not know: later v1 versions may add some.
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `schema_version` | string | `picoclaw-traffic-guardian-status/v1` |
//! | `state` | string | `running`, `stopped` or `stale` |
//! | `stale_reason` | string\|null | `no_lock`, `dead_pid`, `unrelated_pid`, `unreadable` (only when stale) |
//! | `message` | string | one line for people |
//! | `pid` | int\|null | the monitor's PID (also the stale PID when known) |
//! | `proxy_url` | string\|null | `http://127.0.0.1:18795`, never with the credential |
//! | `mode` | string\|null | `detect` |
//! | `version` | string\|null | the running monitor's version |
//! | `started_at` | string\|null | RFC 3339 UTC with milliseconds |
//! | `uptime_secs` | int\|null | seconds since `started_at` |
//! | `https_inspection` | bool\|null | whether HTTPS is decrypted |
//! | `ca_fingerprint_sha256` | string\|null | the CA in use, when inspecting |
//! | `ca_not_after` | string\|null | end of that CA's validity (RFC 3339), when inspecting |
//! | `config_sha256` | string\|null | sha256 of the monitor's canonical effective config |
//! | `counters` | object\|null | [`CounterSnapshot`] from the live monitor; null when not running or it did not answer |
//! | `known_secrets` | object\|null | `{"total", "by_source": {file: n}, "encrypted_skipped", "references_skipped"}`: counts, never values |
//! | `last_findings` | array | up to 5 findings as stored in the log (already redacted), newest first |
//! | `warnings` | array of strings | configuration and Picoclaw file problems, and a control socket that did not answer |
//!
//! Exit code of `status`: 0 when a monitor is running, 1 when stopped or stale (so `status && ...` only
//! continues with a live monitor). `status` changes nothing; `stop` or the next `start` cleans stale state.
//! Only the shared monitor of `start` shows here: a `run` monitor belongs to its child and has no state.

use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::control;
use super::state::{observe, MonitorState, Observed, RunDir};
use crate::findings::reader;
use crate::findings::CounterSnapshot;
use crate::home::Home;
use crate::proxy::tls::ca::rfc3339;
use crate::proxy::tls::{CaPaths, GuardianCa};

/// The `schema_version` of [`Status`].
pub const SCHEMA_VERSION: &str = "picoclaw-traffic-guardian-status/v1";
/// Findings shown by `status`.
pub const LAST_FINDINGS: usize = 5;

/// The `status` result; see the module docs for the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// `running`, `stopped` or `stale`.
    pub state: String,
    /// Why the state is stale.
    pub stale_reason: Option<String>,
    /// One line for people.
    pub message: String,
    /// PID of the monitor.
    pub pid: Option<u32>,
    /// Proxy URL without the credential.
    pub proxy_url: Option<String>,
    /// `detect`.
    pub mode: Option<String>,
    /// Version of the running monitor.
    pub version: Option<String>,
    /// Start time.
    pub started_at: Option<String>,
    /// Seconds since start.
    pub uptime_secs: Option<u64>,
    /// Whether HTTPS is decrypted.
    pub https_inspection: Option<bool>,
    /// CA fingerprint, when inspecting.
    pub ca_fingerprint_sha256: Option<String>,
    /// End of the CA's validity, when inspecting.
    pub ca_not_after: Option<String>,
    /// sha256 of the monitor's effective config.
    pub config_sha256: Option<String>,
    /// Counters since start, from the live monitor.
    pub counters: Option<CounterSnapshot>,
    /// Known-secret counts from the live monitor.
    pub known_secrets: Option<Value>,
    /// Up to [`LAST_FINDINGS`] findings as stored, newest first.
    pub last_findings: Vec<Value>,
    /// Problems worth a look.
    pub warnings: Vec<String>,
}

impl Status {
    /// Exit code: 0 running, 1 stopped or stale.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.state != "running")
    }
}

/// Collects the status of the monitor of `home`. `log_dir` is where to read findings when no monitor
/// answers (a live one names its own); `config_warnings` are the caller's configuration problems.
pub fn collect(home: &Home, log_dir: &Path, config_warnings: Vec<String>) -> Status {
    let mut s = Status {
        schema_version: SCHEMA_VERSION.into(),
        state: "stopped".into(),
        stale_reason: None,
        message: "no monitor is running".into(),
        pid: None,
        proxy_url: None,
        mode: None,
        version: None,
        started_at: None,
        uptime_secs: None,
        https_inspection: None,
        ca_fingerprint_sha256: None,
        ca_not_after: None,
        config_sha256: None,
        counters: None,
        known_secrets: None,
        last_findings: Vec::new(),
        warnings: config_warnings,
    };
    let mut log_dir = log_dir.to_path_buf();
    match observe(home) {
        Observed::Stopped => {}
        Observed::Stale(st) => {
            s.state = "stale".into();
            s.stale_reason = serde_json::to_value(st.reason).ok().and_then(|v| v.as_str().map(str::to_owned));
            s.message = format!("{st}; `picoclaw-traffic-guardian stop` cleans it up");
            s.pid = st.state.as_ref().map(|m| m.pid);
        }
        Observed::Running(m) => {
            s.state = "running".into();
            s.message = format!("running (PID {}, {})", m.pid, m.proxy_url());
            fill_running(&mut s, &m);
            if m.https_inspection {
                check_ca(&mut s, home, m.ca_fingerprint_sha256.as_deref());
            }
            match query(&RunDir::new(home).control_socket()) {
                Ok(live) => {
                    s.counters = serde_json::from_value(live["counters"].clone()).ok();
                    s.known_secrets = Some(live["known_secrets"].clone()).filter(|v| !v.is_null());
                    for key in ["config_warnings", "picoclaw_warnings"] {
                        let list = live[key].as_array().into_iter().flatten();
                        s.warnings.extend(list.filter_map(|w| w.as_str().map(|w| format!("monitor: {w}"))));
                    }
                    if let Some(dir) = live["log_dir"].as_str() {
                        log_dir = dir.into();
                    }
                }
                Err(e) => s.warnings.push(format!("the monitor did not answer on its control socket: {e}")),
            }
        }
    }
    let query = reader::Query { limit: Some(LAST_FINDINGS), ..Default::default() };
    match reader::read(&log_dir, &query) {
        Ok(r) => s.last_findings = r.findings,
        Err(e) => s.warnings.push(format!("cannot read the findings log: {e}")),
    }
    s
}

fn fill_running(s: &mut Status, m: &MonitorState) {
    s.pid = Some(m.pid);
    s.proxy_url = Some(m.proxy_url());
    s.mode = Some(m.mode.clone());
    s.version = Some(m.version.clone());
    s.started_at = Some(m.started_at.clone());
    s.uptime_secs = OffsetDateTime::parse(&m.started_at, &Rfc3339)
        .ok()
        .map(|t| (OffsetDateTime::now_utc() - t).whole_seconds().max(0).unsigned_abs());
    s.https_inspection = Some(m.https_inspection);
    s.ca_fingerprint_sha256 = m.ca_fingerprint_sha256.clone();
    s.config_sha256 = Some(m.config_sha256.clone());
}

/// The validity of the CA the monitor uses, and a warning when the CA on disk is another one (the monitor
/// must be restarted to use it) or has expired.
fn check_ca(s: &mut Status, home: &Home, running: Option<&str>) {
    let ca = match GuardianCa::load(&CaPaths::of(home)) {
        Ok(ca) => ca,
        Err(e) => return s.warnings.push(format!("HTTPS inspection: {e}")),
    };
    if running != Some(ca.fingerprint_sha256().as_str()) {
        s.warnings.push(
            "the guardian CA changed since the monitor started; restart it (`stop`, then `start`) to use the new one"
                .into(),
        );
        return;
    }
    s.ca_not_after = Some(rfc3339(ca.not_after()));
    if OffsetDateTime::now_utc() >= ca.not_after() {
        s.warnings
            .push("the guardian CA has expired: run `picoclaw-traffic-guardian ca init --force`, then restart".into());
    }
}

fn query(socket: &Path) -> io::Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(control::query_status(socket))
}

/// The human view of a [`Status`].
pub fn write_text(s: &Status, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "state:      {}", s.state)?;
    if s.state != "running" {
        writeln!(out, "            {}", s.message)?;
    }
    if let (Some(pid), Some(url)) = (s.pid, &s.proxy_url) {
        writeln!(out, "pid:        {pid}")?;
        writeln!(out, "proxy:      {url}")?;
    }
    if let Some(mode) = &s.mode {
        writeln!(out, "mode:       {mode}")?;
    }
    if let Some(up) = s.uptime_secs {
        writeln!(out, "uptime:     {} (since {})", human_duration(up), s.started_at.as_deref().unwrap_or("?"))?;
    }
    if let Some(https) = s.https_inspection {
        let ca = match (&s.ca_fingerprint_sha256, &s.ca_not_after) {
            (Some(f), Some(until)) => format!(" (CA sha256 {f}, valid until {until})"),
            (Some(f), None) => format!(" (CA sha256 {f})"),
            _ => String::new(),
        };
        writeln!(out, "https:      {}{ca}", if https { "inspected" } else { "tunnelled blind" })?;
    }
    if let Some(k) = &s.known_secrets {
        writeln!(out, "secrets:    {} known from the Picoclaw files", k["total"])?;
    }
    if let Some(c) = &s.counters {
        writeln!(
            out,
            "traffic:    {} connections, {} exchanges, {} tunnels not inspected",
            c.connections, c.exchanges, c.tunnels
        )?;
        writeln!(out, "scanned:    {} bytes ({} left unscanned by the budget)", c.bytes_scanned, c.bytes_unscanned)?;
        let by = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        };
        writeln!(out, "findings:   {}", by(&c.findings_by_threat_type))?;
        writeln!(out, "severity:   {}", by(&c.findings_by_severity))?;
        writeln!(
            out,
            "lost:       {} suppressed as duplicates, {} dropped (log not writable), {} client TLS handshakes failed",
            c.dedup_suppressed, c.dropped, c.client_tls_handshake_failures
        )?;
    }
    if s.last_findings.is_empty() {
        writeln!(out, "last findings: none")?;
    } else {
        writeln!(out, "last findings:")?;
        for f in &s.last_findings {
            let field = |k: &str| f[k].as_str().unwrap_or("").to_owned();
            // Stored snippets are redacted already; redacting again costs little and guards old logs.
            let snippet: String =
                crate::detect::redact(&field("snippet")).chars().filter(|c| !c.is_control()).take(80).collect();
            writeln!(
                out,
                "  {} {:<8} {:<9} {:<20} {} {snippet}",
                field("timestamp"),
                field("severity"),
                field("threat_type"),
                field("pattern"),
                field("dest")
            )?;
        }
    }
    for w in &s.warnings {
        writeln!(out, "warning:    {w}")?;
    }
    Ok(())
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m 5s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(human_duration(2 * 86400 + 3600), "2d 1h");
    }

    #[test]
    fn stopped_home_reports_stopped_with_exit_1() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        let s = collect(&home, &home.logs_dir(), vec!["w".into()]);
        assert_eq!((s.state.as_str(), s.exit_code()), ("stopped", 1));
        assert_eq!(s.warnings, ["w"]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert!(v["pid"].is_null() && v["counters"].is_null());
    }
}
