//! The run directory of a monitor: `<home>/run/` (0700) holds `lock` (flock, held for the monitor's whole
//! life) and `monitor.json` (0600, written atomically). The proxy credential is stored here and nowhere else.
//!
//! A state is *stale* when no process holds the lock, when the recorded PID is dead, or when that PID now
//! belongs to an unrelated program. [`observe`] tells which; [`clean_stale`] removes the leftovers.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use rustix::process::{test_kill_process, Pid};
use serde::{Deserialize, Serialize};

use crate::home::{self, write_private_atomic, Home};

/// The name our binary runs under; a recorded PID whose program does not carry it is someone else's.
pub const PROGRAM_NAME: &str = "picoclaw-traffic-guardian";

/// What a running monitor records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    /// Process id of the monitor.
    pub pid: u32,
    /// The address it listens on, `127.0.0.1:18795`.
    pub listen: String,
    /// When it started, RFC 3339 UTC with milliseconds.
    pub started_at: String,
    /// Guardian version.
    pub version: String,
    /// Always `detect`.
    pub mode: String,
    /// Whether HTTPS is decrypted.
    pub https_inspection: bool,
    /// SHA-256 fingerprint of the CA in use, when inspecting.
    pub ca_fingerprint_sha256: Option<String>,
    /// sha256 of the canonical effective config.
    pub config_sha256: String,
    /// The per-start proxy credential (user `guardian`); absent when proxy auth is off.
    pub proxy_credential: Option<String>,
}

impl MonitorState {
    /// The proxy URL without the credential.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// Paths of the run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// The run directory of `home`.
    pub fn new(home: &Home) -> RunDir {
        RunDir { dir: home.run_dir() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `monitor.json`.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("monitor.json")
    }

    /// The lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The control socket a running monitor answers status queries on.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
}

/// The lock a running monitor holds; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct RunLock {
    run: RunDir,
    _file: File,
}

impl RunLock {
    /// The run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// Writes `monitor.json` atomically with mode 0600.
    pub fn write_state(&self, state: &MonitorState) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        write_private_atomic(&self.run.state_file(), &json)
    }

    /// Removes the state file and control socket (a graceful stop), then releases the lock.
    pub fn release(self) {
        let _ = fs::remove_file(self.run.state_file());
        let _ = fs::remove_file(self.run.control_socket());
    }
}

/// Why a monitor could not take the run lock.
#[derive(Debug)]
pub enum AcquireError {
    /// Another monitor runs.
    AlreadyRunning(Box<MonitorState>),
    /// The lock is held but the state file is missing or unreadable (a monitor is starting or stopping).
    Busy,
    /// Filesystem trouble, or an unsafe home.
    Io(String),
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquireError::AlreadyRunning(s) => write!(
                f,
                "a monitor is already running (PID {}, {}); stop it with `picoclaw-traffic-guardian stop`",
                s.pid,
                s.proxy_url()
            ),
            AcquireError::Busy => {
                write!(f, "another monitor holds the run lock (starting or stopping); try again in a moment")
            }
            AcquireError::Io(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for AcquireError {}

/// Takes the run lock for a new monitor, cleaning stale state first. Returns what was cleaned, if anything,
/// so the caller can report it in one line.
pub fn acquire(home: &Home) -> Result<(RunLock, Option<Stale>), AcquireError> {
    home::ensure_private_dir(home.root()).map_err(|e| AcquireError::Io(e.to_string()))?;
    let run = RunDir::new(home);
    home::ensure_private_dir(run.dir()).map_err(|e| AcquireError::Io(e.to_string()))?;
    let file =
        open_lock(&run.lock_file()).map_err(|e| AcquireError::Io(format!("{}: {e}", run.lock_file().display())))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(match read_state(&run) {
            Some(state) => AcquireError::AlreadyRunning(Box::new(state)),
            None => AcquireError::Busy,
        });
    }
    // We hold the lock, so whatever state is on disk belongs to a monitor that is gone.
    let stale = read_state(&run).map(|state| Stale { reason: StaleReason::NoLock, state: Some(state) });
    if stale.is_some() {
        let _ = fs::remove_file(run.state_file());
        let _ = fs::remove_file(run.control_socket());
    }
    Ok((RunLock { run, _file: file }, stale))
}

fn open_lock(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)
}

fn read_state(run: &RunDir) -> Option<MonitorState> {
    let bytes = fs::read(run.state_file()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Why recorded state does not belong to a live monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleReason {
    /// No process holds the run lock.
    NoLock,
    /// The recorded PID no longer exists.
    DeadPid,
    /// The recorded PID is now another program.
    UnrelatedPid,
    /// The state file cannot be read.
    Unreadable,
}

/// Leftover state of a monitor that is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// Why it is stale.
    pub reason: StaleReason,
    /// What it recorded, when readable.
    pub state: Option<MonitorState>,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self.state.as_ref().map(|s| format!("PID {}", s.pid)).unwrap_or_else(|| "unknown PID".into());
        let why = match self.reason {
            StaleReason::NoLock => "no process holds the run lock",
            StaleReason::DeadPid => "the process is gone",
            StaleReason::UnrelatedPid => "that PID now belongs to another program",
            StaleReason::Unreadable => "the state file cannot be read",
        };
        write!(f, "stale monitor state ({pid}): {why}")
    }
}

/// What the run directory says about a monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A live monitor.
    Running(MonitorState),
    /// No monitor and no leftovers.
    Stopped,
    /// Leftovers of a monitor that is gone.
    Stale(Stale),
}

/// Looks at the run directory without changing anything.
pub fn observe(home: &Home) -> Observed {
    let run = RunDir::new(home);
    let state_path = run.state_file();
    if !state_path.exists() {
        return Observed::Stopped;
    }
    let state = read_state(&run);
    let lock_held = match File::open(run.lock_file()) {
        Ok(f) => match flock(&f, FlockOperation::NonBlockingLockShared) {
            // We could take it, so nobody holds it; closing `f` lets it go again.
            Ok(()) => false,
            Err(_) => true,
        },
        Err(_) => false,
    };
    let Some(state) = state else {
        return Observed::Stale(Stale { reason: StaleReason::Unreadable, state: None });
    };
    if !lock_held {
        return Observed::Stale(Stale { reason: StaleReason::NoLock, state: Some(state) });
    }
    match pid_program(state.pid) {
        PidProgram::Gone => Observed::Stale(Stale { reason: StaleReason::DeadPid, state: Some(state) }),
        PidProgram::Other => Observed::Stale(Stale { reason: StaleReason::UnrelatedPid, state: Some(state) }),
        PidProgram::Ours => Observed::Running(state),
    }
}

/// Removes stale leftovers, but only while no live monitor holds the lock. Returns whether it removed them.
pub fn clean_stale(home: &Home) -> io::Result<bool> {
    let run = RunDir::new(home);
    let file = match File::open(run.lock_file()) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No lock file: nothing can be running; the state file is leftover.
            return remove_leftovers(&run);
        }
        Err(e) => return Err(e),
    };
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(false);
    }
    remove_leftovers(&run)
}

fn remove_leftovers(run: &RunDir) -> io::Result<bool> {
    let existed = run.state_file().exists();
    for p in [run.state_file(), run.control_socket()] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(existed)
}

enum PidProgram {
    Gone,
    Other,
    Ours,
}

fn pid_program(pid: u32) -> PidProgram {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else { return PidProgram::Gone };
    if test_kill_process(p).is_err() {
        return PidProgram::Gone;
    }
    // The executable's name, or failing that the command line, must carry our program name.
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
    let ours = match exe {
        Some(path) => path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PROGRAM_NAME)),
        None => fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(PROGRAM_NAME))
            .unwrap_or(false),
    };
    if ours {
        PidProgram::Ours
    } else {
        PidProgram::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn state(pid: u32) -> MonitorState {
        MonitorState {
            pid,
            listen: "127.0.0.1:18795".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            version: "0.1.0".into(),
            mode: "detect".into(),
            https_inspection: false,
            ca_fingerprint_sha256: None,
            config_sha256: "00".into(),
            proxy_credential: Some("c".into()),
        }
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn nothing_there_is_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(observe(&Home::at(tmp.path().join("h"))), Observed::Stopped);
    }

    #[test]
    fn acquire_writes_private_state_and_refuses_a_second() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        let (lock, stale) = acquire(&home).unwrap();
        assert!(stale.is_none());
        lock.write_state(&state(std::process::id())).unwrap();
        let run = RunDir::new(&home);
        assert_eq!(fs::metadata(run.state_file()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(run.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        match acquire(&home) {
            Err(AcquireError::AlreadyRunning(s)) => assert_eq!(s.pid, std::process::id()),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        // The test binary holds the lock but is not a guardian: its state reads as an unrelated PID.
        assert!(matches!(observe(&home), Observed::Stale(Stale { reason: StaleReason::UnrelatedPid, .. })));
        // A live lock holder's files are never cleaned.
        assert!(!clean_stale(&home).unwrap());
        lock.release();
        assert_eq!(observe(&home), Observed::Stopped);
    }

    #[test]
    fn state_without_a_lock_holder_is_stale_and_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        {
            let (lock, _) = acquire(&home).unwrap();
            lock.write_state(&state(dead_pid())).unwrap();
            // Dropped without release: like a SIGKILL, the files stay and the lock goes.
        }
        match observe(&home) {
            Observed::Stale(s) => {
                assert_eq!(s.reason, StaleReason::NoLock);
                assert!(s.to_string().contains("stale monitor state (PID"), "{s}");
            }
            other => panic!("{other:?}"),
        }
        assert!(clean_stale(&home).unwrap());
        assert_eq!(observe(&home), Observed::Stopped);
    }

    #[test]
    fn dead_pid_with_lock_held_is_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        let (lock, _) = acquire(&home).unwrap();
        lock.write_state(&state(dead_pid())).unwrap();
        assert!(matches!(observe(&home), Observed::Stale(Stale { reason: StaleReason::DeadPid, .. })));
        drop(lock);
    }

    #[test]
    fn acquire_cleans_and_reports_stale_state() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        drop({
            let (lock, _) = acquire(&home).unwrap();
            lock.write_state(&state(dead_pid())).unwrap();
            lock
        });
        let (_lock, stale) = acquire(&home).unwrap();
        assert_eq!(stale.map(|s| s.reason), Some(StaleReason::NoLock));
        assert!(!RunDir::new(&home).state_file().exists());
    }

    #[test]
    fn unreadable_state_is_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        let run = RunDir::new(&home);
        home::ensure_private_dir(run.dir()).unwrap();
        fs::write(run.state_file(), b"{not json").unwrap();
        assert!(matches!(observe(&home), Observed::Stale(Stale { reason: StaleReason::Unreadable, .. })));
    }
}
