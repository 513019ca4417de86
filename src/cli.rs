//! Argument parsing and dispatch. Each subcommand is a plain function over typed inputs that tests can call;
//! clap types stay in this module.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::config::{self, Flags, Loaded};
use crate::home::{EnvVars, Home};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad usage or an invalid configuration.
pub const EXIT_USAGE: u8 = 2;

/// Local traffic monitor for one Picoclaw gateway: detects and logs, never blocks.
#[derive(Debug, Parser)]
#[command(name = "picoclaw-traffic-guardian", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration without binding a socket or writing a file.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage the guardian CA for HTTPS inspection (trusted per process, never installed system-wide).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
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
