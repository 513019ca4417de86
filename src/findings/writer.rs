//! The findings log: `<log_dir>/findings.jsonl`, one JSON record per line, append-only, mode 0600, rotated
//! at `log_max_bytes` keeping `log_keep` older files (`findings.jsonl.1` is the newest rotated one).
//!
//! One writer thread owns the file, fed by a bounded channel, so lines never interleave and the proxy never
//! waits on the disk: a full queue or a failed write counts the finding as dropped and stderr says so at most
//! once a minute; proxying goes on.
//!
//! Flush policy: each line is one `write` on a file opened with `O_APPEND`, so it is in the file (visible to
//! readers) as soon as it is written; `fdatasync` follows within [`SYNC_INTERVAL`] of the first unsynced
//! line, and on [`FindingSink::flush`] and shutdown. A finding is therefore on disk within 1 s.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::dedup::Dedup;
use super::{Counters, Finding};
use crate::config::Config;
use crate::detect;

/// The log file's name inside `log_dir`.
pub const FILE_NAME: &str = "findings.jsonl";
/// Longest time a written line stays unsynced.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// Findings queued for the writer before new ones are dropped.
pub const QUEUE_LEN: usize = 4096;
/// Shortest time between two "cannot write" warnings on stderr.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Where finished lines go. [`FileStore`] is the real one; tests inject failing stores.
pub trait LogStore: Send {
    /// Appends one whole line (ending in `\n`).
    fn append(&mut self, line: &[u8]) -> io::Result<()>;
    /// Makes appended lines durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Closes the current file so the next line opens it afresh (after an external rotation, SIGHUP).
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The rotating JSONL file.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<(File, u64)>,
}

impl FileStore {
    /// A store in `dir` (which must exist), rotating at `max_bytes`, keeping `keep` rotated files.
    pub fn new(dir: &Path, max_bytes: u64, keep: u32) -> FileStore {
        FileStore { dir: dir.to_path_buf(), max_bytes, keep, file: None }
    }

    /// Path of the live log.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn rotated(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{FILE_NAME}.{n}"))
    }

    fn open(&self) -> io::Result<(File, u64)> {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(self.path())?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            return fs::remove_file(self.path());
        }
        for n in (1..self.keep).rev() {
            match fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(self.path(), self.rotated(1))
    }
}

impl LogStore for FileStore {
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let size = match &self.file {
            Some((_, size)) => *size,
            None => {
                let opened = self.open()?;
                let size = opened.1;
                self.file = Some(opened);
                size
            }
        };
        if size > 0 && size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
            self.file = Some(self.open()?);
        }
        let Some((file, size)) = &mut self.file else { return Err(io::Error::other("log file not open")) };
        match file.write_all(line) {
            Ok(()) => {
                *size += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Reopen next time: the file may have been replaced or the disk freed.
                self.file = None;
                Err(e)
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match &self.file {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        let synced = self.sync();
        self.file = None;
        synced
    }
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Dedup window (zero: no dedup).
    pub dedup_window: Duration,
}

enum Msg {
    Record(Box<Finding>),
    Flush(mpsc::Sender<()>),
    Reopen,
    Stop,
}

/// A cheap, cloneable handle that queues findings for the writer thread. Never blocks on the disk.
#[derive(Debug, Clone)]
pub struct FindingSink {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl FindingSink {
    /// Queues a finding; when the queue is full or the writer is gone it is counted as dropped.
    pub fn record(&self, finding: Finding) {
        match self.tx.try_send(Msg::Record(Box::new(finding))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.counters.dropped(),
        }
    }

    /// Waits until everything queued so far is written and synced. Blocking: call it from a blocking
    /// context (`tokio::task::spawn_blocking`) inside a runtime.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            // An error means the writer is gone: nothing left to wait for.
            let _ = rx.recv();
        }
    }

    /// Asks the writer to close and reopen the log file (SIGHUP after an external rotation). Lines queued
    /// before it go to the old file.
    pub fn reopen(&self) {
        // A full queue means the writer is busy; a blocking send keeps the order of lines and the reopen.
        let _ = self.tx.send(Msg::Reopen);
    }

    /// The counters this sink updates.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

/// The writer thread. Dropping it (or [`FindingsWriter::close`]) writes what is queued, syncs and stops.
#[derive(Debug)]
pub struct FindingsWriter {
    sink: FindingSink,
    thread: Option<JoinHandle<()>>,
}

impl FindingsWriter {
    /// Starts a writer over any store.
    pub fn start(store: Box<dyn LogStore>, opts: WriterOptions, counters: Arc<Counters>) -> io::Result<FindingsWriter> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LEN);
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("findings-writer".into())
            .spawn(move || run(rx, store, Dedup::new(opts.dedup_window), &thread_counters))?;
        Ok(FindingsWriter { sink: FindingSink { tx, counters }, thread: Some(thread) })
    }

    /// Starts a writer on `<log_dir>/findings.jsonl` with the config's rotation and dedup settings.
    /// The directory must exist (see [`crate::home::ensure_private_dir`]).
    pub fn open(cfg: &Config, counters: Arc<Counters>) -> io::Result<FindingsWriter> {
        let store = FileStore::new(&cfg.log_dir, cfg.log_max_bytes, cfg.log_keep);
        let opts = WriterOptions { dedup_window: Duration::from_secs(cfg.dedup_window_secs) };
        FindingsWriter::start(Box::new(store), opts, counters)
    }

    /// A handle for producers.
    pub fn sink(&self) -> FindingSink {
        self.sink.clone()
    }

    /// Writes and syncs everything queued so far, then stops the thread. Findings recorded afterwards
    /// through a remaining sink are counted as dropped, so stop the proxy first.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            // A blocking send: the queue may be full, and everything before the stop must be written.
            let _ = self.sink.tx.send(Msg::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for FindingsWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lets a repeated warning through at most once per [`WARN_INTERVAL`].
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    fn allow(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < WARN_INTERVAL) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

fn run(rx: Receiver<Msg>, mut store: Box<dyn LogStore>, mut dedup: Dedup, counters: &Counters) {
    let mut unsynced_since: Option<Instant> = None;
    let mut limit = RateLimit::default();
    let mut warn = |e: &io::Error| {
        if limit.allow(Instant::now()) {
            eprintln!("picoclaw-traffic-guardian: cannot write the findings log ({e}); findings are being dropped");
        }
    };
    loop {
        let wait = unsynced_since.map_or(Duration::from_secs(3600), |t| SYNC_INTERVAL.saturating_sub(t.elapsed()));
        match rx.recv_timeout(wait) {
            Ok(Msg::Record(f)) => {
                if !dedup.admit(&f, Instant::now()) {
                    counters.suppressed();
                    continue;
                }
                match write_line(&mut *store, &f) {
                    Ok(()) => {
                        counters.finding(f.threat_type, f.severity);
                        unsynced_since.get_or_insert_with(Instant::now);
                    }
                    Err(e) => {
                        counters.dropped();
                        warn(&e);
                    }
                }
            }
            Ok(Msg::Flush(done)) => {
                if let Err(e) = store.sync() {
                    warn(&e);
                }
                unsynced_since = None;
                let _ = done.send(());
            }
            Ok(Msg::Reopen) => {
                if let Err(e) = store.reopen() {
                    warn(&e);
                }
                unsynced_since = None;
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = store.sync() {
                    warn(&e);
                }
                unsynced_since = None;
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                if let Err(e) = store.sync() {
                    warn(&e);
                }
                return;
            }
        }
    }
}

fn write_line(store: &mut dyn LogStore, f: &Finding) -> io::Result<()> {
    let json = serde_json::to_string(f).map_err(io::Error::other)?;
    // Defence in depth: the snippet is already redacted; the whole line goes through the one redactor too.
    let mut line = detect::redact(&json).into_bytes();
    line.push(b'\n');
    store.append(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Direction, Severity, ThreatType};
    use std::os::unix::fs::PermissionsExt;

    fn finding(fp: &str) -> Finding {
        Finding {
            schema_version: super::super::SCHEMA_VERSION.into(),
            platform: "picoclaw".into(),
            direction: Direction::Outbound,
            protocol: "http".into(),
            threat_type: ThreatType::Exfil,
            pattern: "aws_access_key".into(),
            severity: Severity::High,
            source: "127.0.0.1".into(),
            dest: "a.example:80".into(),
            snippet: "[REDACTED]".into(),
            timestamp: "2026-04-26T00:00:00.000Z".into(),
            location: None,
            fingerprint: fp.into(),
            decoded: None,
        }
    }

    #[test]
    fn lines_are_whole_private_and_rotated() {
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let line_len = serde_json::to_string(&finding("00000000")).unwrap().len() as u64 + 1;
        let store = FileStore::new(tmp.path(), line_len * 3, 2);
        let w =
            FindingsWriter::start(Box::new(store), WriterOptions { dedup_window: Duration::ZERO }, counters.clone())
                .unwrap();
        for i in 0..10 {
            w.sink().record(finding(&format!("{i:08}")));
        }
        w.close();
        let live = tmp.path().join(FILE_NAME);
        assert_eq!(fs::metadata(&live).unwrap().permissions().mode() & 0o777, 0o600);
        let read = |p: &Path| -> Vec<Finding> {
            fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        };
        // 10 lines, 3 per file: .2 holds 4-6, .1 holds 7-9... the live file holds the last one.
        assert_eq!(read(&live).iter().map(|f| f.fingerprint.clone()).collect::<Vec<_>>(), ["00000009"]);
        assert_eq!(read(&tmp.path().join("findings.jsonl.1"))[0].fingerprint, "00000006");
        assert_eq!(read(&tmp.path().join("findings.jsonl.2"))[0].fingerprint, "00000003");
        assert!(!tmp.path().join("findings.jsonl.3").exists());
        assert_eq!(counters.snapshot().findings_by_threat_type["EXFIL"], 10);
    }

    #[test]
    fn reopen_follows_an_external_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let store = FileStore::new(tmp.path(), 1 << 20, 1);
        let w =
            FindingsWriter::start(Box::new(store), WriterOptions { dedup_window: Duration::ZERO }, counters).unwrap();
        w.sink().record(finding("1"));
        w.sink().flush();
        let moved = tmp.path().join("moved.jsonl");
        fs::rename(tmp.path().join(FILE_NAME), &moved).unwrap();
        w.sink().reopen();
        w.sink().record(finding("2"));
        w.close();
        assert_eq!(fs::read_to_string(&moved).unwrap().lines().count(), 1);
        let live = fs::read_to_string(tmp.path().join(FILE_NAME)).unwrap();
        assert!(live.contains("\"fingerprint\":\"2\""), "{live}");
    }

    #[test]
    fn warnings_at_most_once_a_minute() {
        let mut limit = RateLimit::default();
        let t = Instant::now();
        assert!(limit.allow(t));
        assert!(!limit.allow(t + Duration::from_secs(1)));
        assert!(!limit.allow(t + Duration::from_secs(59)));
        assert!(limit.allow(t + Duration::from_secs(60)));
        assert!(!limit.allow(t + Duration::from_secs(61)));
    }

    struct Failing;
    impl LogStore for Failing {
        fn append(&mut self, _: &[u8]) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_writes_are_counted_dropped() {
        let counters = Arc::new(Counters::default());
        let w =
            FindingsWriter::start(Box::new(Failing), WriterOptions { dedup_window: Duration::ZERO }, counters.clone())
                .unwrap();
        w.sink().record(finding("1"));
        w.sink().record(finding("2"));
        w.sink().flush();
        assert_eq!(counters.snapshot().dropped, 2);
        assert_eq!(counters.snapshot().findings_by_threat_type["EXFIL"], 0);
    }

    #[test]
    fn dedup_suppresses_repeats() {
        let tmp = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let store = FileStore::new(tmp.path(), 1 << 20, 1);
        let w = FindingsWriter::start(
            Box::new(store),
            WriterOptions { dedup_window: Duration::from_secs(60) },
            counters.clone(),
        )
        .unwrap();
        for _ in 0..3 {
            w.sink().record(finding("same"));
        }
        w.close();
        assert_eq!(fs::read_to_string(tmp.path().join(FILE_NAME)).unwrap().lines().count(), 1);
        assert_eq!(counters.snapshot().dedup_suppressed, 2);
    }
}
