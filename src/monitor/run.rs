//! The embedded monitor: one runner behind `start` (foreground), `start --background` (the detached child)
//! and `run`.
//!
//! [`Monitor::start`] makes the private directories, optionally takes the run lock (the shared monitor of
//! `start`; a `run` monitor is private to its child and takes none), loads the Picoclaw known secrets,
//! starts the findings writer and the proxy, and, when it holds the lock, serves the control socket and
//! writes `monitor.json`. While it runs, [`Monitor::next_update`] swaps in a detector rebuilt from changed
//! Picoclaw files. [`Monitor::stop`] drains, flushes and removes the state.
//!
//! [`serve_foreground`] is `start`: the listening line, SIGHUP reopens the logs, SIGTERM/SIGINT drain.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::control;
use super::state::{self, AcquireError, MonitorState, RunLock, Stale};
use crate::config::Config;
use crate::detect::{DetectError, Detector, DetectorOptions};
use crate::findings::{self, Counters, FindingsWriter};
use crate::home;
use crate::picoclaw::secrets::{Inventory, SecretsWatcher, Sources};
use crate::proxy::{self, ProxyHandle};

/// How often the Picoclaw files are checked for changes (four `stat` calls when nothing changed).
pub const SECRETS_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// What a monitor is started with besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Take the run lock, write `monitor.json` and serve the control socket (`start`). A `run` monitor
    /// does none of it: it belongs to its one child, so it neither conflicts with nor shows up as the
    /// shared monitor.
    pub shared: bool,
    /// SHA-256 fingerprint of the CA in use, when inspecting HTTPS.
    pub ca_fingerprint: Option<String>,
    /// The detached monitor's own log (its stdout and stderr), reopened on SIGHUP.
    pub daemon_log: Option<PathBuf>,
    /// Warnings of the guardian's configuration, for `status`.
    pub config_warnings: Vec<String>,
}

/// Why a monitor did not start.
#[derive(Debug)]
pub enum StartError {
    /// Another monitor holds the run lock (exit 1).
    Refused(String),
    /// Directories, log, lock or listener could not be set up (exit 1).
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Refused(m) | StartError::Failed(m) => f.write_str(m),
        }
    }
}

/// What the monitor knows about the Picoclaw files, for `status` (counts and warnings, never values).
#[derive(Debug, Clone, Default)]
struct Live {
    known_secrets: Value,
    picoclaw_warnings: Vec<String>,
}

impl Live {
    fn of(inv: &Inventory) -> Live {
        let c = &inv.counts;
        Live {
            known_secrets: json!({
                "total": inv.secrets.len(),
                "by_source": c.by_source,
                "encrypted_skipped": c.encrypted,
                "references_skipped": c.references,
            }),
            picoclaw_warnings: inv.warnings.clone(),
        }
    }
}

/// A running monitor.
#[derive(Debug)]
pub struct Monitor {
    handle: ProxyHandle,
    writer: FindingsWriter,
    lock: Option<RunLock>,
    control: Option<JoinHandle<()>>,
    poller: JoinHandle<()>,
    updates: mpsc::Receiver<Detector>,
    daemon_log: Option<PathBuf>,
    log_dir: PathBuf,
    stale: Option<Stale>,
    summary: String,
}

impl Monitor {
    /// Starts a monitor on the current tokio runtime.
    pub async fn start(cfg: &Config, opts: Options) -> Result<Monitor, StartError> {
        for dir in [cfg.home.root(), cfg.log_dir.as_path()] {
            home::ensure_private_dir(dir).map_err(|e| StartError::Failed(e.to_string()))?;
        }
        let (lock, stale) = if opts.shared {
            match state::acquire(&cfg.home) {
                Ok((lock, stale)) => (Some(lock), stale),
                Err(e @ (AcquireError::AlreadyRunning(_) | AcquireError::Busy)) => {
                    return Err(StartError::Refused(e.to_string()))
                }
                Err(AcquireError::Io(e)) => return Err(StartError::Failed(e)),
            }
        } else {
            (None, None)
        };
        let sources = Sources::from_config(cfg);
        let (watcher, inv) = tokio::task::spawn_blocking(move || SecretsWatcher::new(sources))
            .await
            .map_err(|e| StartError::Failed(format!("reading the Picoclaw files failed: {e}")))?;
        let live = Arc::new(Mutex::new(Live::of(&inv)));
        let summary = secrets_summary(&inv);
        let detector =
            build_detector(&inv, &live).map_err(|e| StartError::Failed(format!("cannot build the detector: {e}")))?;
        let counters = Arc::new(Counters::default());
        let writer = FindingsWriter::open(cfg, counters.clone()).map_err(|e| {
            StartError::Failed(format!("cannot start the findings writer in {}: {e}", cfg.log_dir.display()))
        })?;
        // HTTPS inspection needs the CA; without one this fails with the fix (`ca init`) before we listen.
        let settings = proxy::Settings::from_config(cfg)
            .with_mitm_from_config(cfg)
            .map_err(|e| StartError::Failed(format!("cannot start HTTPS inspection: {e}")))?;
        let handle = proxy::Proxy::bind(settings, detector, writer.sink())
            .await
            .map_err(|e| StartError::Failed(format!("cannot listen on {}: {e}", cfg.listen)))?;

        let mut control_task = None;
        if let Some(lock) = &lock {
            let socket = lock.run_dir().control_socket();
            let listener = control::bind(&socket)
                .map_err(|e| StartError::Failed(format!("cannot bind the control socket {}: {e}", socket.display())))?;
            let status = status_fn(counters, live.clone(), opts.config_warnings.clone(), cfg.log_dir.clone());
            control_task = Some(tokio::spawn(control::serve(listener, status)));
            let recorded = MonitorState {
                pid: std::process::id(),
                listen: handle.local_addr().to_string(),
                started_at: findings::timestamp(time::OffsetDateTime::now_utc()),
                version: env!("CARGO_PKG_VERSION").into(),
                mode: "detect".into(),
                https_inspection: cfg.https_inspection,
                ca_fingerprint_sha256: opts.ca_fingerprint.clone(),
                config_sha256: cfg.sha256(),
                proxy_credential: handle.credential().map(|c| c.token().to_owned()),
            };
            lock.write_state(&recorded).map_err(|e| {
                StartError::Failed(format!("cannot write {}: {e}", lock.run_dir().state_file().display()))
            })?;
        }

        let (tx, updates) = mpsc::channel(1);
        let poller = tokio::spawn(poll_secrets(watcher, live, tx));
        Ok(Monitor {
            handle,
            writer,
            lock,
            control: control_task,
            poller,
            updates,
            daemon_log: opts.daemon_log,
            log_dir: cfg.log_dir.clone(),
            stale,
            summary,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.handle.local_addr()
    }

    /// The proxy URL without the credential, for people and logs.
    pub fn public_url(&self) -> String {
        format!("http://{}", self.handle.local_addr())
    }

    /// The proxy URL with the credential (when auth is on), for the monitored process only. Never log it.
    pub fn client_url(&self) -> String {
        self.handle.proxy_url()
    }

    /// Stale state that taking the lock cleaned up, to report in one line.
    pub fn cleaned_stale(&self) -> Option<&Stale> {
        self.stale.as_ref()
    }

    /// `known secrets: N (config.json 2, auth.json 1)`: counts only, for the startup line.
    pub fn secrets_summary(&self) -> &str {
        &self.summary
    }

    /// The findings log file.
    pub fn findings_file(&self) -> PathBuf {
        self.log_dir.join(findings::reader::LOG_FILE)
    }

    /// Waits until every finding recorded so far is written and synced (the demo reports per exchange).
    pub async fn flush_findings(&self) {
        let sink = self.writer.sink();
        let _ = tokio::task::spawn_blocking(move || sink.flush()).await;
    }

    /// The live counters.
    pub fn counters(&self) -> &Arc<Counters> {
        self.handle.counters()
    }

    /// Reopens the findings log and, when detached, the monitor's own log (after an external rotation).
    pub fn reopen_logs(&self) {
        self.writer.sink().reopen();
        if let Some(path) = &self.daemon_log {
            if let Err(e) = redirect_stdio(path) {
                tracing::warn!("cannot reopen {}: {e}", path.display());
            }
        }
    }

    /// Waits for the next detector rebuilt from changed Picoclaw files and swaps it in. Use it as one
    /// branch of the caller's `select!`; it never completes once the poller is gone.
    pub async fn next_update(&mut self) {
        match self.updates.recv().await {
            Some(detector) => self.handle.replace_detector(detector),
            None => std::future::pending().await,
        }
    }

    /// Graceful stop: stop accepting, let in-flight exchanges finish (at most [`proxy::DRAIN_TIMEOUT`], or
    /// until `abort` completes, e.g. a second signal), flush the findings, remove the state and release the
    /// lock. Returns whether everything drained.
    pub async fn stop(self, abort: impl std::future::Future<Output = ()>) -> bool {
        self.poller.abort();
        if let Some(c) = &self.control {
            c.abort();
        }
        let drained = tokio::select! {
            d = self.handle.shutdown_within(Some(proxy::DRAIN_TIMEOUT)) => d,
            () = abort => false,
        };
        let writer = self.writer;
        // Joining the writer thread blocks until its queue is written and synced.
        let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        if let Some(lock) = self.lock {
            lock.release();
        }
        drained
    }
}

fn secrets_summary(inv: &Inventory) -> String {
    let sources: Vec<String> = inv.counts.by_source.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mut s = format!("known secrets: {}", inv.secrets.len());
    if !sources.is_empty() {
        s.push_str(&format!(" ({})", sources.join(", ")));
    }
    if !inv.warnings.is_empty() {
        s.push_str(&format!("; {} Picoclaw warning(s), see `status`", inv.warnings.len()));
    }
    s
}

/// The detector for an inventory; known secrets the detector refuses become a warning and the rules still
/// run (a broken Picoclaw install must never stop the monitor).
fn build_detector(inv: &Inventory, live: &Mutex<Live>) -> Result<Detector, DetectError> {
    Detector::new(inv.detector_options()).or_else(|e| {
        let msg = format!("the Picoclaw known secrets could not be used ({e}); detecting with the rules only");
        tracing::warn!("{msg}");
        live.lock().unwrap_or_else(|p| p.into_inner()).picoclaw_warnings.push(msg);
        Detector::new(DetectorOptions::default())
    })
}

async fn poll_secrets(mut watcher: SecretsWatcher, live: Arc<Mutex<Live>>, tx: mpsc::Sender<Detector>) {
    loop {
        tokio::time::sleep(SECRETS_POLL_INTERVAL).await;
        // `poll` stats (and on a change reads) files: blocking I/O, kept off the proxy's worker threads.
        let Ok((w, changed)) = tokio::task::spawn_blocking(move || {
            let changed = watcher.poll();
            (watcher, changed)
        })
        .await
        else {
            return;
        };
        watcher = w;
        if let Some(inv) = changed {
            *live.lock().unwrap_or_else(|p| p.into_inner()) = Live::of(&inv);
            tracing::info!("Picoclaw files changed: {}", secrets_summary(&inv));
            match build_detector(&inv, &live) {
                Ok(d) => {
                    if tx.send(d).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("cannot rebuild the detector: {e}; keeping the previous one"),
            }
        }
    }
}

type StatusFn = Arc<dyn Fn() -> Value + Send + Sync>;

/// The control socket's answer: what only the live monitor knows (see [`super::status`]).
fn status_fn(
    counters: Arc<Counters>,
    live: Arc<Mutex<Live>>,
    config_warnings: Vec<String>,
    log_dir: PathBuf,
) -> StatusFn {
    Arc::new(move || {
        let live = live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        json!({
            "counters": counters.snapshot(),
            "known_secrets": live.known_secrets,
            "picoclaw_warnings": live.picoclaw_warnings,
            "config_warnings": config_warnings,
            "log_dir": log_dir.display().to_string(),
        })
    })
}

/// Points stdout and stderr at `path` (append, 0600): the detached monitor's log, reopened after rotation.
pub fn redirect_stdio(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    rustix::stdio::dup2_stdout(&file)?;
    rustix::stdio::dup2_stderr(&file)?;
    Ok(())
}

/// SIGTERM, SIGINT and SIGHUP.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// A signal the monitor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM.
    Term,
    /// SIGINT.
    Int,
    /// SIGHUP.
    Hup,
}

impl Sig {
    /// The signal number.
    pub fn raw(self) -> rustix::process::Signal {
        match self {
            Sig::Term => rustix::process::Signal::TERM,
            Sig::Int => rustix::process::Signal::INT,
            Sig::Hup => rustix::process::Signal::HUP,
        }
    }
}

impl Signals {
    /// Installs the handlers; do it before announcing the listener, so an early signal stops gracefully.
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Term,
            _ = self.int.recv() => Sig::Int,
            _ = self.hup.recv() => Sig::Hup,
        }
    }

    /// The next SIGTERM or SIGINT (SIGHUP still reopens nothing here: used while draining).
    pub async fn next_stop(&mut self) {
        loop {
            if self.next().await != Sig::Hup {
                return;
            }
        }
    }
}

/// `start` in this process: serve until SIGTERM/SIGINT, then drain. Prints any cleaned stale state and the
/// one `listening on http://ADDR (known secrets: ...)` line to stderr. Returns the exit code: 0 after a
/// clean stop, 1 when refused or when something could not be set up.
pub fn serve_foreground(cfg: &Config, opts: Options) -> io::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut signals = Signals::new()?;
        let mut monitor = match Monitor::start(cfg, opts).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("picoclaw-traffic-guardian: {e}");
                return Ok(1);
            }
        };
        if let Some(stale) = monitor.cleaned_stale() {
            eprintln!("picoclaw-traffic-guardian: cleaned up {stale}");
        }
        eprintln!("listening on {} ({})", monitor.public_url(), monitor.secrets_summary());
        loop {
            tokio::select! {
                sig = signals.next() => match sig {
                    Sig::Hup => monitor.reopen_logs(),
                    Sig::Term | Sig::Int => break,
                },
                () = monitor.next_update() => {}
            }
        }
        // A second SIGTERM/SIGINT while draining stops at once; queued findings are still flushed.
        monitor.stop(signals.next_stop()).await;
        Ok(0)
    })
}
