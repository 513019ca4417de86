//! The shared monitor's life through the real binary: `start --background`, a refused second start,
//! `status` (text and the JSON schema, decoded with this file's own types), `stop`, stale state, a
//! graceful drain that lets a slow response finish, and SIGHUP reopening the logs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use picoclaw_traffic_guardian::home::Home;
use picoclaw_traffic_guardian::monitor::state::{self, MonitorState};
use rustix::process::Signal;
use serde::Deserialize;

use crate::util::{
    alive, findings_in, guardian, monitor_state, output, plain_upstream, post_via_proxy, read_request, stdout,
    wait_for, Background, SECRET,
};

/// `status --json`, as a consumer would decode it (schema picoclaw-traffic-guardian-status/v1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    schema_version: String,
    state: String,
    stale_reason: Option<String>,
    message: String,
    pid: Option<u32>,
    proxy_url: Option<String>,
    mode: Option<String>,
    version: Option<String>,
    started_at: Option<String>,
    uptime_secs: Option<u64>,
    https_inspection: Option<bool>,
    ca_fingerprint_sha256: Option<String>,
    ca_not_after: Option<String>,
    config_sha256: Option<String>,
    counters: Option<Counters>,
    known_secrets: Option<KnownSecrets>,
    last_findings: Vec<serde_json::Value>,
    warnings: Vec<String>,
}

// Every field is decoded to pin the schema; not every one is asserted.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Counters {
    connections: u64,
    exchanges: u64,
    bytes_scanned: u64,
    bytes_unscanned: u64,
    messages_inspected: u64,
    inspections_in_flight: u64,
    tunnels: u64,
    tunnel_bytes_up: u64,
    tunnel_bytes_down: u64,
    findings_by_threat_type: BTreeMap<String, u64>,
    findings_by_severity: BTreeMap<String, u64>,
    dedup_suppressed: u64,
    dropped: u64,
    client_tls_handshake_failures: u64,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownSecrets {
    total: u64,
    by_source: BTreeMap<String, u64>,
    encrypted_skipped: u64,
    references_skipped: u64,
}

fn status_json(home: &Path) -> (Option<i32>, Status) {
    let o = output(guardian(home).args(["status", "--json"]));
    let s: Status = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status --json is not the v1 schema ({e}): {}", stdout(&o)));
    assert_eq!(s.schema_version, "picoclaw-traffic-guardian-status/v1");
    (o.status.code(), s)
}

#[test]
fn background_start_status_traffic_and_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let bg = Background::start(&home, &[]);
    assert!(alive(bg.pid));
    let state_file = home.join("run/monitor.json");
    assert_eq!(std::fs::metadata(&state_file).unwrap().permissions().mode() & 0o777, 0o600);
    let recorded = monitor_state(&home).unwrap();
    assert_eq!(recorded.mode, "detect");
    assert!(recorded.proxy_credential.as_deref().is_some_and(|t| t.len() >= 32));
    assert_eq!(std::fs::metadata(home.join("logs/guardian.log")).unwrap().permissions().mode() & 0o777, 0o600);

    let (code, s) = status_json(&home);
    assert_eq!((code, s.state.as_str()), (Some(0), "running"));
    assert_eq!(s.pid, Some(bg.pid));
    assert_eq!(s.proxy_url.as_deref(), Some(format!("http://{}", bg.addr).as_str()));
    assert_eq!((s.mode.as_deref(), s.https_inspection, s.ca_fingerprint_sha256), (Some("detect"), Some(false), None));
    assert_eq!(s.ca_not_after, None);
    assert_eq!(s.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(s.started_at.is_some() && s.uptime_secs.is_some() && s.stale_reason.is_none());
    assert_eq!(s.config_sha256.as_deref().map(str::len), Some(64));
    assert_eq!(s.known_secrets.as_ref().map(|k| (k.total, k.by_source.len())), Some((0, 0)));
    let before = s.counters.expect("counters from the live monitor");
    assert_eq!(before.exchanges, 0);
    assert!(s.last_findings.is_empty());
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    let (upstream, bodies) = plain_upstream();
    let reply = post_via_proxy(bg.addr, bg.auth.as_deref(), upstream, &format!("key={SECRET}"));
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok"), "{reply}");
    assert_eq!(bodies.lock().unwrap().len(), 1);
    // A loopback upstream also gives an EGRESS `private_network` finding; the secret is the one to wait for.
    // The writer counts a finding once its line is written, so the line can show up a moment before the
    // counter does: wait for both.
    let s = wait_for("the finding in status and in the counters", || {
        let (_, s) = status_json(&home);
        let counted = s.counters.as_ref().is_some_and(|c| c.findings_by_threat_type.get("EXFIL") == Some(&1));
        (counted && s.last_findings.iter().any(|f| f["pattern"] == "aws_access_key")).then_some(s)
    });
    let c = s.counters.unwrap();
    assert!(c.connections >= 1 && c.exchanges >= 1 && c.bytes_scanned > 0, "{c:?}");
    assert_eq!(c.findings_by_threat_type["EXFIL"], 1);
    assert_eq!(c.findings_by_severity["high"], 1);
    let json = output(guardian(&home).args(["status", "--json"]));
    assert!(!stdout(&json).contains(SECRET), "status never shows a secret");
    assert!(!stdout(&json).contains(recorded.proxy_credential.as_deref().unwrap()), "nor the credential");

    let text = output(guardian(&home).arg("status"));
    assert_eq!(text.status.code(), Some(0));
    let text = stdout(&text);
    for want in ["state:      running", &format!("pid:        {}", bg.pid), "aws_access_key", "EXFIL 1"] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }

    let o = output(guardian(&home).arg("stop"));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains(&format!("PID {}", bg.pid)));
    assert!(!state_file.exists());
    let (code, s) = status_json(&home);
    assert_eq!((code, s.state.as_str(), s.pid), (Some(1), "stopped", None));
    let patterns: Vec<_> = s.last_findings.iter().map(|f| f["pattern"].as_str().unwrap_or("")).collect();
    assert!(patterns.contains(&"aws_access_key"), "findings are read from the log when stopped too: {patterns:?}");
    let log = std::fs::read_to_string(home.join("logs/guardian.log")).unwrap();
    assert!(log.contains("listening on http://"), "{log}");
    assert!(!log.contains(recorded.proxy_credential.as_deref().unwrap()));
}

#[test]
fn a_second_start_is_refused_with_the_running_pid_and_url() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let bg = Background::start(&home, &[]);
    let url = format!("http://{}", bg.addr);
    for args in [&["start", "--background", "--listen", "127.0.0.1:0"][..], &["start", "--listen", "127.0.0.1:0"]] {
        let o = output(guardian(&home).args(args));
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("PID {}", bg.pid)) && err.contains(&url), "{args:?}: {err}");
    }
    assert_eq!(monitor_state(&home).map(|s| s.pid), Some(bg.pid), "the running monitor's state is untouched");
}

#[test]
fn stop_when_none_runs_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let o = output(guardian(&tmp.path().join("home")).arg("stop"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no monitor is running"));
}

fn fake_state(pid: u32) -> MonitorState {
    MonitorState {
        pid,
        listen: "127.0.0.1:9".into(),
        started_at: "2026-01-01T00:00:00.000Z".into(),
        version: "0.1.0".into(),
        mode: "detect".into(),
        https_inspection: false,
        ca_fingerprint_sha256: None,
        config_sha256: "00".into(),
        proxy_credential: Some("leftover-token".into()),
    }
}

fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn stale_state_with_a_dead_pid_is_reported_cleaned_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // A monitor that died without cleaning up: its state stays, its lock went with it.
    let (lock, _) = state::acquire(&Home::at(&home)).unwrap();
    lock.write_state(&fake_state(dead_pid())).unwrap();
    drop(lock);

    let (code, s) = status_json(&home);
    assert_eq!((code, s.state.as_str(), s.stale_reason.as_deref()), (Some(1), "stale", Some("no_lock")));
    assert!(s.message.contains("stale monitor state"), "{}", s.message);
    let o = output(guardian(&home).arg("stop"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no monitor is running; cleaned up stale monitor state"), "{err}");
    assert!(!home.join("run/monitor.json").exists());

    // The same leftovers are cleaned by the next start, which says so in one line.
    let (lock, _) = state::acquire(&Home::at(&home)).unwrap();
    lock.write_state(&fake_state(dead_pid())).unwrap();
    drop(lock);
    let o = output(guardian(&home).args(["start", "--background", "--listen", "127.0.0.1:0"]));
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cleaning up stale monitor state"), "{err}");
    let o = output(guardian(&home).arg("stop"));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn stale_state_naming_a_live_unrelated_pid_is_never_signalled() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    // The lock is held (by this test process), but the recorded PID is a `sleep`: another program.
    let (lock, _) = state::acquire(&Home::at(&home)).unwrap();
    lock.write_state(&fake_state(sleeper.id())).unwrap();
    let (code, s) = status_json(&home);
    assert_eq!((code, s.state.as_str(), s.stale_reason.as_deref()), (Some(1), "stale", Some("unrelated_pid")));
    assert_eq!(s.pid, Some(sleeper.id()));
    let o = output(guardian(&home).arg("stop"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("that PID now belongs to another program"));
    assert_eq!(sleeper.try_wait().unwrap(), None, "stop must not signal an unrelated process");
    let o = output(guardian(&home).arg("env"));
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "no credential of a stale state is printed");

    // With the lock gone too (dead_pid is the case of a held lock and a gone process; see the unit tests),
    // a new start takes over.
    drop(lock);
    let bg = Background::start(&home, &[]);
    assert_ne!(bg.pid, sleeper.id());
    drop(bg);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// An upstream that sends the head and the first half of a body, then the rest once `go` says so.
fn slow_upstream(half: Vec<u8>, rest: Vec<u8>) -> (SocketAddr, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else { return };
        let mut reader = BufReader::new(stream);
        if read_request(&mut reader).is_none() {
            return;
        }
        let s = reader.get_mut();
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", half.len() + rest.len());
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&half);
        let _ = s.flush();
        if wait.recv_timeout(Duration::from_secs(20)).is_ok() {
            let _ = s.write_all(&rest);
        }
    });
    (addr, go)
}

#[test]
fn stop_drains_a_slow_in_flight_response() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let bg = Background::start(&home, &[]);
    let (half, rest) = (vec![b'a'; 1000], vec![b'b'; 1000]);
    let (upstream, go) = slow_upstream(half.clone(), rest.clone());

    let mut client = TcpStream::connect(bg.addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = bg.auth.clone().unwrap();
    let req = format!("GET http://{upstream}/slow HTTP/1.1\r\nHost: {upstream}\r\nProxy-Authorization: {auth}\r\n\r\n");
    client.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let mut got = vec![0; half.len()];
    reader.read_exact(&mut got).unwrap();
    assert_eq!(got, half);

    // The exchange is in flight; stop the monitor while it is.
    let stopper = guardian(&home).arg("stop").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the listener to close", || TcpStream::connect(bg.addr).is_err().then_some(()));
    assert!(alive(bg.pid) || monitor_state(&home).is_some(), "the monitor waits for the in-flight exchange");
    go.send(()).unwrap();
    let mut got = vec![0; rest.len()];
    reader.read_exact(&mut got).unwrap();
    assert_eq!(got, rest, "the client gets its whole body");
    let o = stopper.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("monitor stopped"), "a graceful stop, not a SIGKILL: {}", stdout(&o));
}

#[test]
fn sighup_reopens_the_findings_log_and_guardian_log() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let bg = Background::start(&home, &[]);
    let (upstream, _) = plain_upstream();
    let logs = home.join("logs");
    post_via_proxy(bg.addr, bg.auth.as_deref(), upstream, &format!("a={SECRET}"));
    let secrets = |file: &str| -> Vec<serde_json::Value> {
        findings_in(&logs.join(file)).into_iter().filter(|f| f["pattern"] == "aws_access_key").collect()
    };
    wait_for("the first finding", || (!secrets("findings.jsonl").is_empty()).then_some(()));

    std::fs::rename(logs.join("findings.jsonl"), logs.join("rotated.jsonl")).unwrap();
    std::fs::rename(logs.join("guardian.log"), logs.join("guardian.log.old")).unwrap();
    bg.signal(Signal::HUP);
    // The guardian log is reopened after the findings log's reopen is queued, so once it is back, every
    // later finding goes to the new file.
    wait_for("guardian.log to be reopened", || logs.join("guardian.log").exists().then_some(()));
    let other = "AKIAQ2W3E4R5T6Y7U8I9";
    post_via_proxy(bg.addr, bg.auth.as_deref(), upstream, &format!("b={other}"));
    let fresh = wait_for("a finding in the new file", || {
        let f = secrets("findings.jsonl");
        (!f.is_empty()).then_some(f)
    });
    assert_eq!(fresh.len(), 1);
    assert_eq!(secrets("rotated.jsonl").len(), 1, "the old file keeps the old finding");
    assert_ne!(fresh[0]["fingerprint"], secrets("rotated.jsonl")[0]["fingerprint"]);
    assert!(alive(bg.pid), "SIGHUP does not stop the monitor");
    assert_eq!(status_json(&home).1.state, "running");
}

#[test]
fn a_background_monitor_that_cannot_listen_shows_its_log_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = output(guardian(&home).args(["start", "--background", "--listen", &addr]));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exited") && err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!home.join("run/monitor.json").exists());
}

#[test]
fn an_inspecting_monitor_records_its_ca_and_env_hands_out_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    assert_eq!(output(guardian(&home).args(["ca", "init"])).status.code(), Some(0));
    let fingerprint = picoclaw_traffic_guardian::proxy::tls::ca::stored_fingerprint(&Home::at(&home)).unwrap();
    let _bg = Background::start(&home, &["--https-inspection"]);
    let (_, s) = status_json(&home);
    assert_eq!((s.https_inspection, s.ca_fingerprint_sha256.as_deref()), (Some(true), Some(fingerprint.as_str())));
    assert!(s.ca_not_after.as_deref().is_some_and(|t| t.ends_with('Z')), "{:?}", s.ca_not_after);
    assert!(!s.warnings.iter().any(|w| w.contains("CA changed") || w.contains("expired")), "{:?}", s.warnings);
    let text = stdout(&output(guardian(&home).arg("status")));
    assert!(text.contains(&format!("CA sha256 {fingerprint}, valid until")), "{text}");
    // A new CA on disk is not the one in use: status says to restart.
    assert_eq!(output(guardian(&home).args(["ca", "init", "--force"])).status.code(), Some(0));
    let (_, s) = status_json(&home);
    assert!(s.warnings.iter().any(|w| w.contains("CA changed")), "{:?}", s.warnings);
    let o = output(guardian(&home).args(["env", "--shell", "json"]));
    let vars: BTreeMap<String, String> = serde_json::from_slice(&o.stdout).unwrap();
    let bundle = home.join("ca/trust-bundle.pem");
    assert_eq!(vars.get("SSL_CERT_FILE").map(String::as_str), Some(bundle.to_str().unwrap()));
    assert_eq!(vars.len(), 9);
}

#[test]
fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // A stand-in monitor that ignores SIGTERM: `sleep` under our program name (so `observe` takes it for a
    // guardian), started with SIGTERM ignored (an ignored signal stays ignored across exec).
    let sleep = stdout(&output(Command::new("sh").args(["-c", "command -v sleep"])));
    let fake = tmp.path().join("picoclaw-traffic-guardian-stuck");
    std::fs::copy(sleep.trim(), &fake).unwrap();
    let mut stuck =
        Command::new("sh").arg("-c").arg(format!("trap '' TERM; exec '{}' 60", fake.display())).spawn().unwrap();
    wait_for("the stand-in to exec", || {
        std::fs::read_link(format!("/proc/{}/exe", stuck.id())).ok().filter(|p| p == &fake).map(|_| ())
    });
    let (lock, _) = state::acquire(&Home::at(&home)).unwrap();
    lock.write_state(&fake_state(stuck.id())).unwrap();
    assert_eq!(status_json(&home).1.state, "running");

    let o = output(guardian(&home).arg("stop"));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("killed (it did not stop within 10 s of SIGTERM)"), "{}", stdout(&o));
    let status = stuck.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    drop(lock);
}
