//! `start --background` and `stop`.
//!
//! Background start spawns this same binary with `start` and [`DETACHED_FLAG`]; that child makes itself a
//! new session ([`detach`]) and runs the ordinary foreground monitor with stdout and stderr in
//! `<home>/logs/guardian.log`. The parent returns once the state file names the child as a running monitor,
//! or prints what the child logged when it exited first.
//!
//! `stop` signals only a PID that [`observe`] confirms is a live guardian holding the run lock, so an
//! unrelated process that inherited a recorded PID is never touched.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use super::state::{clean_stale, observe, Observed};
use crate::home::{self, Home};

/// The hidden flag that tells `start` it is the detached child of `start --background`.
pub const DETACHED_FLAG: &str = "--detached";
/// File name of the detached monitor's own log (its stdout and stderr) in `<home>/logs`.
pub const GUARDIAN_LOG: &str = "guardian.log";
/// Size above which `guardian.log` is moved to `guardian.log.1` when a background monitor starts.
pub const GUARDIAN_LOG_MAX_BYTES: u64 = 1024 * 1024;
/// How long `start --background` waits for the child's listener.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before SIGKILL (the monitor drains for at most
/// [`crate::proxy::DRAIN_TIMEOUT`], less than this, so a healthy monitor always flushes in time).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of `guardian.log` shown when the child exits before listening.
const TAIL_LINES: usize = 20;
const POLL: Duration = Duration::from_millis(50);

/// `<home>/logs/guardian.log`.
pub fn guardian_log(home: &Home) -> PathBuf {
    home.logs_dir().join(GUARDIAN_LOG)
}

/// In the detached child, first thing: leave the parent's session and terminal, so a closed terminal or a
/// Ctrl-C there does not reach the monitor.
pub fn detach() -> io::Result<()> {
    rustix::process::setsid().map(|_| ()).map_err(io::Error::from)
}

/// `start --background`: refuses when a monitor runs, spawns `exe args` detached, waits for it to listen.
/// Prints `URL (PID n)` without the credential to `out`. Exit 0 when it runs, 1 otherwise.
pub fn start(home: &Home, exe: &Path, args: &[OsString], out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    match observe(home) {
        Observed::Running(s) => {
            writeln!(
                err,
                "picoclaw-traffic-guardian: a monitor is already running (PID {}, {}); stop it with `picoclaw-traffic-guardian stop`",
                s.pid,
                s.proxy_url()
            )?;
            return Ok(1);
        }
        // The child's lock cleans it; say so here, where the operator looks.
        Observed::Stale(st) => writeln!(err, "picoclaw-traffic-guardian: cleaning up {st}")?,
        Observed::Stopped => {}
    }
    for dir in [home.root().to_path_buf(), home.logs_dir()] {
        if let Err(e) = home::ensure_private_dir(&dir) {
            writeln!(err, "picoclaw-traffic-guardian: {e}")?;
            return Ok(1);
        }
    }
    let log_path = guardian_log(home);
    let (log, offset) = match open_guardian_log(&log_path) {
        Ok(x) => x,
        Err(e) => {
            writeln!(err, "picoclaw-traffic-guardian: cannot open {}: {e}", log_path.display())?;
            return Ok(1);
        }
    };
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", exe.display())))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Observed::Running(s) = observe(home) {
            if s.pid == child.id() {
                writeln!(out, "monitor running: {} (PID {})", s.proxy_url(), s.pid)?;
                return Ok(0);
            }
        }
        if let Some(status) = child.try_wait()? {
            writeln!(err, "picoclaw-traffic-guardian: the background monitor exited ({status}) before listening:")?;
            for line in tail(&log_path, offset) {
                writeln!(err, "  {line}")?;
            }
            return Ok(1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            writeln!(
                err,
                "picoclaw-traffic-guardian: the background monitor did not start listening within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log_path.display()
            )?;
            return Ok(1);
        }
        std::thread::sleep(POLL);
    }
}

/// Opens the log for appending (0600), moving a large one to `guardian.log.1` first. Returns the file and
/// its length, where this start's lines begin.
fn open_guardian_log(path: &Path) -> io::Result<(fs::File, u64)> {
    if fs::metadata(path).is_ok_and(|m| m.len() > GUARDIAN_LOG_MAX_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        fs::rename(path, old)?;
    }
    let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// The last lines written after `offset`.
fn tail(path: &Path, offset: u64) -> Vec<String> {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.take(64 * 1024).read_to_string(&mut text);
        }
    }
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].to_vec()
}

/// `stop`: SIGTERM the running monitor, wait up to [`STOP_TIMEOUT`], then SIGKILL; clean the state.
/// Exit 0 when it stopped one; 1 when none was running (stale leftovers are cleaned and reported).
pub fn stop(home: &Home, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let state = match observe(home) {
        Observed::Running(s) => s,
        Observed::Stopped => {
            writeln!(err, "picoclaw-traffic-guardian: no monitor is running")?;
            return Ok(1);
        }
        Observed::Stale(st) => {
            if clean_stale(home)? {
                writeln!(err, "picoclaw-traffic-guardian: no monitor is running; cleaned up {st}")?;
            } else {
                writeln!(
                    err,
                    "picoclaw-traffic-guardian: no monitor is running ({st}); left in place because a process still holds the run lock"
                )?;
            }
            return Ok(1);
        }
    };
    let Some(pid) = i32::try_from(state.pid).ok().and_then(Pid::from_raw) else {
        writeln!(err, "picoclaw-traffic-guardian: monitor.json records an invalid PID {}", state.pid)?;
        return Ok(1);
    };
    let still_running = || matches!(observe(home), Observed::Running(s) if s.pid == state.pid);
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while still_running() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        !still_running()
    };
    if let Err(e) = kill_process(pid, Signal::TERM) {
        writeln!(err, "picoclaw-traffic-guardian: cannot signal PID {}: {e}", state.pid)?;
        return Ok(1);
    }
    let mut how = "stopped";
    if !wait(STOP_TIMEOUT) {
        let _ = kill_process(pid, Signal::KILL);
        how = "killed (it did not stop within 10 s of SIGTERM)";
        if !wait(Duration::from_secs(5)) {
            writeln!(err, "picoclaw-traffic-guardian: PID {} is still running after SIGKILL", state.pid)?;
            return Ok(1);
        }
    }
    // A graceful stop removes its own state; after SIGKILL the leftovers are ours to clean.
    clean_stale(home)?;
    writeln!(out, "monitor {how} (PID {}, {})", state.pid, state.proxy_url())?;
    Ok(0)
}
