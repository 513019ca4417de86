//! Argument parsing and dispatch. Each subcommand is a plain function over typed inputs that tests can call;
//! clap types stay in this module.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::config::{self, Config, Flags, Loaded};
use crate::detect::{Detector, DetectorOptions, Direction, Severity, ThreatType};
use crate::findings::reader;
use crate::home::{self, EnvVars, Home};
use crate::{monitor, scan};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad usage or an invalid configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `scan`: a finding at or above `--fail-on`.
pub const EXIT_FINDINGS: u8 = 3;

/// Local traffic monitor for one Picoclaw gateway: detects and logs, never blocks.
#[derive(Debug, Parser)]
#[command(name = "picoclaw-traffic-guardian", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an embedded monitor around COMMAND: the proxy variables go into COMMAND's environment only.
    ///
    /// Exit code: COMMAND's (128+N when signal N killed it); 2 for bad usage or config, 127 when COMMAND
    /// is not found, 1 when the monitor cannot start. SIGTERM is forwarded to COMMAND, and SIGINT and SIGHUP
    /// too unless COMMAND shares the guardian's terminal (the terminal sends those to both).
    Run(RunArgs),
    /// Run the shared monitor: in the foreground until SIGINT or SIGTERM (prints
    /// `listening on http://HOST:PORT (known secrets: N)` to stderr once it accepts connections), or with
    /// --background detached, logging to <home>/logs/guardian.log.
    Start {
        #[command(flatten)]
        config: ConfigArgs,
        /// Detach and return once the proxy listens; prints its URL (without the credential) and PID.
        #[arg(long)]
        background: bool,
        /// Internal: this process is the detached child of `start --background`.
        #[arg(long, hide = true, conflicts_with = "background")]
        detached: bool,
    },
    /// Stop the shared monitor (SIGTERM, up to 10 s to drain, then SIGKILL). Exit 1 when none runs.
    Stop,
    /// Show whether the shared monitor runs, its counters and its last findings. Exit 0 running, 1 not.
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON (schema picoclaw-traffic-guardian-status/v1).
        #[arg(long)]
        json: bool,
    },
    /// Print the proxy variables of the running shared monitor for a shell; edits no file.
    ///
    /// Use it in a subshell: ( eval "$(picoclaw-traffic-guardian env)"; exec picoclaw gateway )
    Env {
        #[command(flatten)]
        config: ConfigArgs,
        /// Output syntax.
        #[arg(long, value_enum, default_value_t = ShellArg::Sh)]
        shell: ShellArg,
    },
    /// Validate the configuration without binding a socket or writing a file.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show recorded findings, newest first (current log and rotations).
    Threats(ThreatsArgs),
    /// Scan a raw HTTP/1.1 message, plain text or a HAR file offline; print findings as JSONL.
    ///
    /// Writes nothing but the findings to stdout (no log, no state). Exit 0, 3 when a finding is at or
    /// above --fail-on, 2 for bad usage. Offline findings carry `"source": "offline"`.
    Scan(ScanArgs),
    /// Write the posture fragment for picoclaw-security-guardian (byte-stable while the posture is).
    ///
    /// Stdout is one compact JSON line {"canonical_sha256","message","output"}; without --json a human
    /// summary also goes to stderr. Exit 0 written, 1 when it could not be written.
    Profile(ProfileArgs),
    /// Report which of Picoclaw's outbound clients the guardian will see, and what to fix.
    Doctor {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the report as JSON (schema picoclaw-traffic-guardian-doctor/v1).
        #[arg(long)]
        json: bool,
    },
    /// Show the guardian at work in a few seconds, without Picoclaw: a fake LLM upstream, three exchanges
    /// (a clean chat, a key posted to a paste site, a streamed reply carrying a reverse shell) and the
    /// findings. Everything stays on 127.0.0.1 in a temporary home, removed at the end. Exit 0, 1 on failure.
    Demo,
    /// Manage the guardian CA for HTTPS inspection (trusted per process, never installed system-wide).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

/// `profile` options.
#[derive(Debug, Args)]
struct ProfileArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to write (default: $PICOCLAW_TRAFFIC_GUARDIAN_PROFILE_OUTPUT, else profile_output).
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Use this time as generated_at (RFC 3339) instead of the time the posture last changed.
    #[arg(long, value_name = "RFC3339")]
    generated_at: Option<String>,
    /// Print only the JSON line (no human summary on stderr).
    #[arg(long)]
    json: bool,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The command to monitor and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND", value_parser = clap::value_parser!(OsString))]
    command: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ShellArg {
    Sh,
    Fish,
    Powershell,
    Json,
}

/// `threats` filters and output.
#[derive(Debug, Args)]
struct ThreatsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Show at most N findings.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
    /// Only this threat type.
    #[arg(long = "type", value_name = "EXFIL|INJECTION|EGRESS", value_parser = parse_threat_type)]
    threat_type: Option<ThreatType>,
    /// Only findings at or above this severity (info, low, medium, high, critical).
    #[arg(long, value_name = "MIN", value_parser = parse_severity)]
    severity: Option<Severity>,
    /// Only findings since a duration ago (10m, 2h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only destinations (host:port) matching this glob, e.g. '*.example.com:*'.
    #[arg(long, value_name = "GLOB")]
    dest: Option<String>,
    /// Print JSON Lines (the findings as stored).
    #[arg(long)]
    json: bool,
}

fn parse_threat_type(s: &str) -> Result<ThreatType, String> {
    reader::parse_threat_type(s).ok_or_else(|| format!("{s:?} is not EXFIL, INJECTION or EGRESS"))
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    reader::parse_severity(s).ok_or_else(|| format!("{s:?} is not info, low, medium, high or critical"))
}

/// Arguments of `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Scan as requests (outbound) or responses (inbound); default: from the start line (plain text: both).
    #[arg(long, value_enum)]
    direction: Option<DirectionArg>,
    /// Destination HOST:PORT for the findings (default: Host header or HAR URL, else unknown:0).
    #[arg(long, value_name = "HOST:PORT")]
    dest: Option<String>,
    /// Read a HAR file instead of a raw message.
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    har: Option<PathBuf>,
    /// Exit 3 when a finding has this severity or higher.
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    fail_on: Option<Severity>,
    /// Bytes inspected per message (default and maximum: 16777216).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(config::MIN_SCAN_BYTES..=config::MAX_SCAN_BYTES))]
    max_scan_bytes: Option<u64>,
    /// Input file, or - for stdin (the default).
    #[arg(value_name = "FILE|-")]
    input: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DirectionArg {
    Outbound,
    Inbound,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Make the guardian CA (ECDSA P-256) under <home>/ca; prints its SHA-256 fingerprint.
    Init {
        #[command(flatten)]
        config: ConfigArgs,
        /// Replace an existing CA (processes trusting the old one need the new bundle).
        #[arg(long)]
        force: bool,
    },
    /// Write the trust bundle (system roots + guardian CA) handed to the monitored process.
    Bundle {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show the CA: paths, fingerprint, validity, and whether the bundle holds it.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print how to add the CA to the system trust store by hand (needs --system; runs nothing).
    TrustInstructions {
        /// Confirm that you want the system-wide instructions.
        #[arg(long)]
        system: bool,
    },
}

/// Flags that override configuration keys (flag > environment > file > default).
#[derive(Debug, Args, Default, Clone)]
pub struct ConfigArgs {
    /// Config file (default: $PICOCLAW_TRAFFIC_GUARDIAN_CONFIG, else <home>/config.json).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on, host:port (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Bytes inspected per HTTP message.
    #[arg(long, value_name = "BYTES")]
    pub max_scan_bytes: Option<u64>,
    /// Findings log directory.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Decrypt HTTPS with the guardian CA (the monitored process must trust it).
    #[arg(long)]
    pub https_inspection: bool,
}

impl ConfigArgs {
    /// The flags as config overrides.
    pub fn to_flags(&self) -> Flags {
        let mut values = Vec::new();
        if let Some(v) = &self.listen {
            values.push(("listen", json!(v), "--listen"));
        }
        if let Some(v) = self.max_scan_bytes {
            values.push(("max_scan_bytes", json!(v), "--max-scan-bytes"));
        }
        if let Some(v) = &self.log_dir {
            values.push(("log_dir", json!(v.display().to_string()), "--log-dir"));
        }
        if self.https_inspection {
            values.push(("https_inspection", json!(true), "--https-inspection"));
        }
        Flags { config: self.config.clone(), values }
    }

    /// The same flags as arguments, for the detached child of `start --background`.
    fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |flag: &str, value: OsString| {
            args.push(flag.into());
            args.push(value);
        };
        if let Some(p) = &self.config {
            push("--config", p.clone().into_os_string());
        }
        if let Some(v) = &self.listen {
            push("--listen", v.into());
        }
        if let Some(v) = self.max_scan_bytes {
            push("--max-scan-bytes", v.to_string().into());
        }
        if let Some(p) = &self.log_dir {
            push("--log-dir", p.clone().into_os_string());
        }
        if self.https_inspection {
            args.push("--https-inspection".into());
        }
        args
    }
}

/// Entry point of the binary: parse the process arguments, run, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = EnvVars::from_process();
    let mut out = io::stdout().lock();
    match run(cli, &env, &mut out) {
        Ok(code) => ExitCode::from(code),
        // `threats | head` closes the pipe early; that is a success.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("picoclaw-traffic-guardian: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Runs one parsed command, writing its result to `out`; returns the exit code.
pub fn run(cli: Cli, env: &EnvVars, out: &mut dyn Write) -> io::Result<u8> {
    match cli.command {
        Command::CheckConfig { config, json } => check_config(env, &config.to_flags(), json, out),
        Command::Threats(args) => {
            let color = !args.json && env.get("NO_COLOR").is_none() && io::stdout().is_terminal();
            threats(env, &args, color, out)
        }
        Command::Scan(args) => scan(&args, out),
        Command::Profile(args) => profile(env, &args, out),
        Command::Doctor { config, json } => doctor(env, &config.to_flags(), json, out),
        Command::Start { config, background, detached } => start(env, &config, background, detached, out),
        Command::Stop => stop(env, out),
        Command::Status { config, json } => status(env, &config.to_flags(), json, out),
        Command::Env { config, shell } => {
            let shell = match shell {
                ShellArg::Sh => monitor::env::Shell::Sh,
                ShellArg::Fish => monitor::env::Shell::Fish,
                ShellArg::Powershell => monitor::env::Shell::Powershell,
                ShellArg::Json => monitor::env::Shell::Json,
            };
            env_vars(env, &config.to_flags(), shell, out)
        }
        Command::Run(args) => run_command(env, args),
        Command::Demo => crate::demo::run(out),
        Command::Ca { command } => run_ca(command, env, out, &mut io::stderr().lock()),
    }
}

fn run_ca(command: CaCommand, env: &EnvVars, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    use crate::proxy::tls::cmd;
    match command {
        CaCommand::Init { config, force } => cmd::init(env, &config.to_flags(), force, out, err),
        CaCommand::Bundle { config } => cmd::bundle(env, &config.to_flags(), out, err),
        CaCommand::Show { config, json } => cmd::show(env, &config.to_flags(), json, out, err),
        CaCommand::TrustInstructions { system } => cmd::trust_instructions(env, system, out, err),
    }
}

/// `profile`: gather the posture, write the fragment atomically, print the digest line.
fn profile(env: &EnvVars, args: &ProfileArgs, out: &mut dyn Write) -> io::Result<u8> {
    use crate::picoclaw::profile as p;
    let cfg = match load_config(env, &args.config.to_flags()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let generated_at = match args.generated_at.as_deref().map(p::parse_generated_at).transpose() {
        Ok(g) => g,
        Err(msg) => {
            eprintln!("picoclaw-traffic-guardian: {msg}");
            return Ok(EXIT_USAGE);
        }
    };
    let output = args.output.clone().unwrap_or_else(|| cfg.profile_output.clone());
    let written = (|| {
        if output.starts_with(cfg.home.root()) {
            home::ensure_private_dir(output.parent().unwrap_or(cfg.home.root())).map_err(io::Error::other)?;
        }
        let posture = p::Posture::gather(&cfg, crate::proxy::tls::ca::stored_fingerprint(&cfg.home))?;
        let state = cfg.home.root().join(p::STATE_FILE);
        p::export(&posture, &output, generated_at.as_deref(), &state, time::OffsetDateTime::now_utc())
    })();
    match written {
        Ok(e) => {
            let message = if e.changed { "profile written" } else { "profile unchanged" };
            let line = json!({"canonical_sha256": e.canonical_sha256, "message": message, "output": e.output.display().to_string()});
            writeln!(out, "{line}")?;
            if !args.json {
                eprintln!("{message}: {} (sha256 of the canonical JSON {})", e.output.display(), e.canonical_sha256);
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("picoclaw-traffic-guardian: cannot write the profile to {}: {e}", output.display());
            Ok(EXIT_FAILURE)
        }
    }
}

/// `doctor`: the coverage report. Exit 0 whatever it finds; 2 when the guardian's own config is invalid.
pub fn doctor(env: &EnvVars, flags: &Flags, as_json: bool, out: &mut dyn Write) -> io::Result<u8> {
    let cfg = match load_config(env, flags) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let report = crate::picoclaw::doctor::report(&cfg);
    if as_json {
        writeln!(out, "{}", crate::picoclaw::doctor::to_json(&report))?;
    } else {
        crate::picoclaw::doctor::write_text(&report, out)?;
    }
    Ok(EXIT_OK)
}

/// Loads the config or explains every problem on stderr; `Err(code)` is the exit code to use.
fn load_config(env: &EnvVars, flags: &Flags) -> Result<Config, u8> {
    config::load(env, flags).into_config().map_err(|e| {
        eprintln!("picoclaw-traffic-guardian: {e}");
        EXIT_USAGE
    })
}

fn threats(env: &EnvVars, args: &ThreatsArgs, color: bool, out: &mut dyn Write) -> io::Result<u8> {
    let cfg = match load_config(env, &args.config.to_flags()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let since = match args.since.as_deref().map(|s| reader::parse_since(s, time::OffsetDateTime::now_utc())) {
        Some(Err(msg)) => {
            eprintln!("picoclaw-traffic-guardian: {msg}");
            return Ok(EXIT_USAGE);
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let query = reader::Query {
        limit: Some(args.limit),
        threat_type: args.threat_type,
        min_severity: args.severity,
        since,
        dest_glob: args.dest.clone(),
    };
    let result = reader::read(&cfg.log_dir, &query)?;
    if args.json {
        for f in &result.findings {
            writeln!(out, "{f}")?;
        }
    } else {
        write_threats_table(&result.findings, color, out)?;
    }
    if result.skipped_lines > 0 {
        eprintln!(
            "picoclaw-traffic-guardian: skipped {} corrupt or truncated line(s) in {}",
            result.skipped_lines,
            cfg.log_dir.display()
        );
    }
    Ok(EXIT_OK)
}

/// The `threats` table (also printed by `demo`).
pub(crate) fn write_threats_table(findings: &[Value], color: bool, out: &mut dyn Write) -> io::Result<()> {
    if findings.is_empty() {
        return writeln!(out, "no findings");
    }
    writeln!(
        out,
        "{:<24} {:<8} {:<9} {:<22} {:<3} {:<28} SNIPPET",
        "TIME (UTC)", "SEVERITY", "TYPE", "PATTERN", "DIR", "DEST"
    )?;
    for f in findings {
        let field = |k: &str| f[k].as_str().unwrap_or("").to_owned();
        let severity = field("severity");
        let (on, off) = match (color, severity.as_str()) {
            (true, "critical") => ("\x1b[1;31m", "\x1b[0m"),
            (true, "high") => ("\x1b[31m", "\x1b[0m"),
            (true, "medium") => ("\x1b[33m", "\x1b[0m"),
            _ => ("", ""),
        };
        let dir = if field("direction") == "inbound" { "in" } else { "out" };
        // Stored snippets are redacted already; redacting again costs little and guards old logs.
        let snippet: String =
            crate::detect::redact(&field("snippet")).chars().filter(|c| !c.is_control()).take(100).collect();
        writeln!(
            out,
            "{:<24} {on}{:<8}{off} {:<9} {:<22} {:<3} {:<28} {snippet}",
            field("timestamp").replace('T', " ").trim_end_matches('Z'),
            severity,
            field("threat_type"),
            field("pattern"),
            dir,
            field("dest"),
        )?;
    }
    Ok(())
}

/// `scan`: findings as JSONL to `out`, problems to stderr. Touches no file but its input.
pub fn scan(args: &ScanArgs, out: &mut dyn Write) -> io::Result<u8> {
    let usage = |msg: String| {
        eprintln!("picoclaw-traffic-guardian scan: {msg}");
        Ok(EXIT_USAGE)
    };
    let dest = match args.dest.as_deref().map(scan::parse_dest).transpose() {
        Ok(d) => d,
        Err(e) => return usage(format!("--dest: {e}")),
    };
    let opts = scan::ScanOptions {
        direction: args.direction.map(|d| match d {
            DirectionArg::Outbound => Direction::Outbound,
            DirectionArg::Inbound => Direction::Inbound,
        }),
        dest,
        max_scan_bytes: usize::try_from(args.max_scan_bytes.unwrap_or(config::MAX_SCAN_BYTES)).unwrap_or(usize::MAX),
    };
    let detector = match Detector::new(DetectorOptions::default()) {
        Ok(d) => d,
        Err(e) => return usage(format!("cannot build the detector: {e}")),
    };
    let (path, har) = match (&args.har, &args.input) {
        (Some(p), _) => (Some(p.clone()), true),
        (None, Some(p)) if p.as_os_str() != "-" => (Some(p.clone()), false),
        _ => (None, false),
    };
    let name = path.as_ref().map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    let mut input: Box<dyn io::Read> = match &path {
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(f),
            Err(e) => return usage(format!("{name}: cannot open: {e}")),
        },
        None => Box::new(io::stdin().lock()),
    };
    let result = if har {
        scan::scan_har(&detector, &opts, &mut input)
    } else {
        scan::scan_raw(&detector, &opts, &mut input, &mut |w| eprintln!("picoclaw-traffic-guardian scan: {name}: {w}"))
    };
    let findings = match result {
        Ok(f) => f,
        Err(e) => return usage(format!("{name}: {e}")),
    };
    for f in &findings {
        writeln!(out, "{}", scan::finding_json(f, time::OffsetDateTime::now_utc()))?;
    }
    out.flush()?;
    let failed = args.fail_on.is_some_and(|t| scan::any_at_or_above(&findings, t));
    Ok(if failed { EXIT_FINDINGS } else { EXIT_OK })
}

/// `check-config`: load, validate, report every problem. Exit 0 when valid, 2 when not.
pub fn check_config(env: &EnvVars, flags: &Flags, as_json: bool, out: &mut dyn Write) -> io::Result<u8> {
    let loaded = config::load(env, flags);
    if as_json {
        writeln!(out, "{}", check_config_json(&loaded))?;
    } else {
        write_check_config_text(env, &loaded, out)?;
    }
    Ok(if loaded.errors.is_empty() { EXIT_OK } else { EXIT_USAGE })
}

/// `start`: the shared monitor, in the foreground or (`background`) detached. `detached` marks the child of
/// `start --background`, which leaves the parent's session first. Exit 2 on an invalid config, 1 when a
/// monitor already runs or something cannot be set up, 0 after a clean stop (foreground) or once the
/// background monitor listens.
pub fn start(
    env: &EnvVars,
    args: &ConfigArgs,
    background: bool,
    detached: bool,
    out: &mut dyn Write,
) -> io::Result<u8> {
    if detached {
        if let Err(e) = monitor::background::detach() {
            eprintln!("picoclaw-traffic-guardian: cannot start a new session for the background monitor: {e}");
            return Ok(EXIT_FAILURE);
        }
    }
    let (cfg, config_warnings) = match load_config_and_warnings(env, &args.to_flags()) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if background {
        let exe = std::env::current_exe()?;
        let mut child_args: Vec<OsString> = vec!["start".into(), monitor::background::DETACHED_FLAG.into()];
        child_args.extend(args.to_args());
        return monitor::background::start(&cfg.home, &exe, &child_args, out, &mut io::stderr().lock());
    }
    init_tracing();
    let daemon_log = detached.then(|| monitor::background::guardian_log(&cfg.home));
    let ca_fingerprint = cfg.https_inspection.then(|| crate::proxy::tls::ca::stored_fingerprint(&cfg.home)).flatten();
    let opts = monitor::run::Options { shared: true, ca_fingerprint, daemon_log, config_warnings };
    monitor::run::serve_foreground(&cfg, opts)
}

/// Quiet by default so stderr carries the one startup line; RUST_LOG=info shows per-error lines.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_writer(io::stderr).with_env_filter(filter).try_init();
}

/// Loads the config (exit 2 on errors, explained on stderr) and keeps its warnings as lines.
fn load_config_and_warnings(env: &EnvVars, flags: &Flags) -> Result<(Config, Vec<String>), u8> {
    let loaded = config::load(env, flags);
    let warnings = loaded.warnings.iter().map(ToString::to_string).collect();
    match loaded.into_config() {
        Ok(cfg) => Ok((cfg, warnings)),
        Err(e) => {
            eprintln!("picoclaw-traffic-guardian: {e}");
            Err(EXIT_USAGE)
        }
    }
}

/// `stop`: exit 0 when it stopped a monitor, 1 when none was running.
pub fn stop(env: &EnvVars, out: &mut dyn Write) -> io::Result<u8> {
    let home = match Home::resolve(env) {
        Ok((home, _)) => home,
        Err(e) => {
            eprintln!("picoclaw-traffic-guardian: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    monitor::background::stop(&home, out, &mut io::stderr().lock())
}

/// `status [--json]`: exit 0 when the shared monitor runs, 1 when stopped or stale. An invalid config does
/// not hide the monitor: its problems become warnings and the default home and log directory are used.
pub fn status(env: &EnvVars, flags: &Flags, as_json: bool, out: &mut dyn Write) -> io::Result<u8> {
    let loaded = config::load(env, flags);
    let mut warnings: Vec<String> = loaded.errors.iter().map(|p| format!("config error: {p}")).collect();
    warnings.extend(loaded.warnings.iter().map(|p| format!("config: {p}")));
    let (home, log_dir) = match &loaded.config {
        Some(cfg) => (cfg.home.clone(), cfg.log_dir.clone()),
        None => match Home::resolve(env) {
            Ok((home, _)) => {
                let logs = home.logs_dir();
                (home, logs)
            }
            Err(e) => {
                eprintln!("picoclaw-traffic-guardian: {e}");
                return Ok(EXIT_USAGE);
            }
        },
    };
    let s = monitor::status::collect(&home, &log_dir, warnings);
    if as_json {
        writeln!(out, "{}", serde_json::to_string(&s).map_err(io::Error::other)?)?;
    } else {
        monitor::status::write_text(&s, out)?;
    }
    Ok(s.exit_code())
}

/// `env`: the proxy variables of the running shared monitor. Exit 1 when none runs.
pub fn env_vars(env: &EnvVars, flags: &Flags, shell: monitor::env::Shell, out: &mut dyn Write) -> io::Result<u8> {
    let cfg = match load_config(env, flags) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    monitor::env::print(&cfg.home, &cfg.ca_bundle, shell, out, &mut io::stderr().lock())
}

/// `run -- COMMAND`: the monitor listens on an ephemeral loopback port unless `--listen` says otherwise.
fn run_command(env: &EnvVars, mut args: RunArgs) -> io::Result<u8> {
    if args.config.listen.is_none() {
        args.config.listen = Some("127.0.0.1:0".into());
    }
    let (cfg, config_warnings) = match load_config_and_warnings(env, &args.config.to_flags()) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let (ca_bundle, ca_fingerprint) = if cfg.https_inspection {
        match monitor::child::prepare_trust(&cfg, &mut io::stderr().lock())? {
            Ok((bundle, fingerprint)) => (Some(bundle), Some(fingerprint)),
            Err(code) => return Ok(code),
        }
    } else {
        (None, None)
    };
    init_tracing();
    let opts = monitor::run::Options { shared: false, ca_fingerprint, daemon_log: None, config_warnings };
    monitor::child::run(&cfg, opts, &args.command, ca_bundle.as_deref())
}

fn check_config_json(l: &Loaded) -> Value {
    json!({
        "valid": l.errors.is_empty(),
        "errors": l.errors,
        "warnings": l.warnings,
        "effective": l.effective,
        "config_file": l.config_file.display().to_string(),
        "config_file_found": l.config_file_found,
    })
}

fn write_check_config_text(env: &EnvVars, l: &Loaded, out: &mut dyn Write) -> io::Result<()> {
    if let Ok((home, source)) = Home::resolve(env) {
        writeln!(out, "home:        {} (from {})", home.root().display(), config::home_source_phrase(source))?;
    }
    let found = if l.config_file_found { "" } else { " (not found: defaults apply)" };
    writeln!(out, "config file: {}{found}", l.config_file.display())?;
    for e in &l.errors {
        writeln!(out, "error:   {e}")?;
    }
    for w in &l.warnings {
        writeln!(out, "warning: {w}")?;
    }
    if l.errors.is_empty() {
        writeln!(out, "effective configuration:")?;
        for (key, e) in &l.effective {
            writeln!(
                out,
                "  {key:<20} {} ({})",
                e.value,
                serde_json::to_value(e.source).unwrap_or_default().as_str().unwrap_or("")
            )?;
        }
        writeln!(out, "configuration is valid")?;
    } else {
        let n = l.errors.len();
        writeln!(out, "configuration is NOT valid: {n} error{}", if n == 1 { "" } else { "s" })?;
    }
    Ok(())
}
