//! `start` through the real binary: the one `listening on` line (with the known-secret count), a private home, 407 without the credential,
//! a clean exit on SIGTERM, exit 2 on a bad config.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::util::{guardian, output};

#[test]
fn start_listens_demands_the_credential_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let mut child = guardian(&home)
        .args(["start", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        lines.map_while(Result::ok).collect::<Vec<_>>()
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("the listening line");
    let rest = first.strip_prefix("listening on http://").unwrap_or_else(|| panic!("{first}"));
    let (addr, secrets) = rest.split_once(' ').unwrap_or_else(|| panic!("{first}"));
    assert_eq!(secrets, "(known secrets: 0)", "counts only: {first}");
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{first}");

    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 407"), "{reply}");

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest = reader.join().unwrap();
    assert!(rest.is_empty(), "stderr carries only the listening line: {rest:?}");
    for dir in [home.clone(), home.join("logs")] {
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
    }
}

#[test]
fn start_with_a_bad_config_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let o = output(guardian(&tmp.path().join("h")).args(["start", "--listen", "nowhere"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--listen"));
}

#[test]
fn start_with_https_inspection_and_no_ca_says_to_run_ca_init() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let o = output(guardian(&home).args(["start", "--listen", "127.0.0.1:0", "--https-inspection"]));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ca init"), "{err}");
    assert!(!err.contains("listening on"), "it must fail before it listens: {err}");
}
