//! `run -- COMMAND [ARGS...]`: an embedded monitor private to one child process.
//!
//! The monitor (the same [`Monitor`] as `start`, on an ephemeral loopback port unless `--listen`) takes no
//! run lock and writes no state: it belongs to its child, so it runs beside a shared `start` monitor and
//! beside other `run`s, and `status`, `stop` and `env` do not see it. The child gets the proxy variables
//! (and with HTTPS inspection the trust variables) in its own environment only; the guardian's environment
//! is never changed.
//!
//! Signals reach the child exactly once. When the guardian runs in the foreground of a terminal (typed at a
//! prompt), the child stays in the guardian's process group: it can read the terminal, job control (Ctrl-Z,
//! `fg`) works, and the terminal's SIGINT and SIGHUP reach it directly, so the guardian forwards only
//! SIGTERM (which terminals never send). Otherwise (a service manager, a script, a pipe) the child gets a
//! process group of its own and the guardian forwards SIGINT, SIGTERM and SIGHUP. SIGHUP also reopens the
//! findings log. When the child exits, the monitor drains, flushes and stops; the exit code is the child's,
//! or 128 + the signal number when a signal killed it.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use time::OffsetDateTime;

use rustix::process::{kill_process, Pid};

use super::env::child_vars;
use super::run::{Monitor, Options, Sig, Signals};
use crate::config::Config;
use crate::proxy::tls::{ca, cmd, CaPaths, GuardianCa};

/// Exit code when COMMAND cannot be found (as shells do).
pub const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when COMMAND exists but cannot be started (as shells do).
pub const EXIT_CANNOT_EXECUTE: u8 = 126;

/// Runs `command` under a private monitor. `ca_bundle` is the trust bundle when inspecting HTTPS (already
/// checked to exist), `ca_fingerprint` the CA's, for the banner. Returns the exit code.
pub fn run(cfg: &Config, opts: Options, command: &[OsString], ca_bundle: Option<&Path>) -> io::Result<u8> {
    let Some((program, args)) = command.split_first() else {
        eprintln!(
            "picoclaw-traffic-guardian run: give the command to monitor after `--`, e.g. `run -- picoclaw gateway`"
        );
        return Ok(2);
    };
    let name = Path::new(program).file_name().unwrap_or(program).to_string_lossy().into_owned();
    let fingerprint = opts.ca_fingerprint.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut signals = Signals::new()?;
        let mut monitor = match Monitor::start(cfg, Options { shared: false, ..opts }).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("picoclaw-traffic-guardian: {e}");
                return Ok(1);
            }
        };
        // Before the child starts, so its own output follows the banner.
        let ca = fingerprint.map(|f| format!("; CA sha256 {f}")).unwrap_or_default();
        eprintln!(
            "picoclaw-traffic-guardian: monitoring `{name}` through {} ({}); findings: {}{ca}",
            monitor.public_url(),
            monitor.secrets_summary(),
            monitor.findings_file().display()
        );
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).envs(child_vars(&monitor.client_url(), ca_bundle));
        let shares_terminal = in_terminal_foreground();
        if !shares_terminal {
            cmd.process_group(0);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let hint = if e.kind() == io::ErrorKind::NotFound {
                    " (is it installed and on PATH? Without Picoclaw, `picoclaw-traffic-guardian start` runs the guardian alone)"
                } else {
                    ""
                };
                eprintln!("picoclaw-traffic-guardian run: cannot start {}: {e}{hint}", program.to_string_lossy());
                monitor.stop(std::future::ready(())).await;
                return Ok(if e.kind() == io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_EXECUTE });
            }
        };
        let pid = child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                sig = signals.next() => {
                    if sig == Sig::Hup {
                        monitor.reopen_logs();
                    }
                    // In the terminal's group the child got SIGINT/SIGHUP from the terminal already.
                    let forward = !shares_terminal || sig == Sig::Term;
                    if let (true, Some(pid)) = (forward, pid) {
                        // The child may just have exited; its status arrives on the next turn.
                        let _ = kill_process(pid, sig.raw());
                    }
                }
                () = monitor.next_update() => {}
            }
        };
        // The child is gone; a signal now only cuts the drain short (findings are flushed either way).
        monitor.stop(signals.next_stop()).await;
        match status {
            Ok(s) => Ok(exit_code(s)),
            Err(e) => {
                eprintln!("picoclaw-traffic-guardian run: lost track of {name}: {e}");
                Ok(1)
            }
        }
    })
}

/// The trust an inspecting `run` hands its child: the configured bundle, rewritten (system roots + the
/// current CA, as `ca bundle` does) when it is missing or was made for another CA, and the CA's SHA-256
/// fingerprint for the banner and the state. `Err` is the exit code after the reason went to `err`: 2 when
/// there is no usable CA (`ca init` makes one), 1 when the bundle cannot be written.
pub fn prepare_trust(cfg: &Config, err: &mut dyn Write) -> io::Result<Result<(PathBuf, String), u8>> {
    let paths = CaPaths::of(&cfg.home);
    let guardian_ca = match GuardianCa::load(&paths).and_then(|c| {
        c.check_valid_at(OffsetDateTime::now_utc(), &paths.cert)?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            writeln!(err, "picoclaw-traffic-guardian run: --https-inspection needs a usable guardian CA: {e}")?;
            return Ok(Err(2));
        }
    };
    let fingerprint = guardian_ca.fingerprint_sha256();
    match ca::bundle_holds(&cfg.ca_bundle, guardian_ca.cert_der()) {
        Ok(Some(true)) => {}
        Ok(found) => {
            // The bundle writer's own report is for `ca bundle`; here one line says what happened.
            let mut report = Vec::new();
            if cmd::write_bundle(cfg, &ca::load_system_roots(), &mut report, err)? != 0 {
                writeln!(
                    err,
                    "picoclaw-traffic-guardian run: cannot write the trust bundle {}",
                    cfg.ca_bundle.display()
                )?;
                return Ok(Err(1));
            }
            let why = if found.is_none() { "it did not exist" } else { "it did not hold the current CA" };
            writeln!(err, "picoclaw-traffic-guardian: wrote the trust bundle {} ({why})", cfg.ca_bundle.display())?;
        }
        Err(e) => {
            writeln!(
                err,
                "picoclaw-traffic-guardian run: cannot read the trust bundle {}: {e}",
                cfg.ca_bundle.display()
            )?;
            return Ok(Err(1));
        }
    }
    Ok(Ok((cfg.ca_bundle.clone(), fingerprint)))
}

/// Whether this process is in the foreground process group of the terminal on its stdin.
fn in_terminal_foreground() -> bool {
    rustix::termios::tcgetpgrp(io::stdin()).is_ok_and(|group| group == rustix::process::getpgrp())
}

/// The child's exit code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
