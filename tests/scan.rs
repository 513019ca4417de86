//! `scan`: the real binary over raw messages, plain text, stdin and HAR files. It prints findings as
//! JSONL in the CONTRACT §4 schema, exits 0 / 3 (`--fail-on`) / 2 (bad usage), and writes no file: the
//! guardian home is never created.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::util::{guardian, output, stdout};

/// An AWS key id the real detector does not treat as a documented example.
const KEY: &str = "AKIAZ7QW3ERTY5UIOPLK";

const REQUIRED: [&str; 12] = [
    "schema_version",
    "platform",
    "direction",
    "protocol",
    "threat_type",
    "pattern",
    "severity",
    "source",
    "dest",
    "snippet",
    "timestamp",
    "location",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scan").join(name)
}

/// A scratch dir whose `home` child is the guardian home (never created by `scan`).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = guardian(&self.home());
        cmd.arg("scan").args(args);
        let out = match stdin {
            None => output(cmd.stdin(Stdio::null())),
            Some(data) => {
                let mut child =
                    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
                child.stdin.take().unwrap().write_all(data).unwrap();
                child.wait_with_output().unwrap()
            }
        };
        assert!(!self.home().exists(), "scan must not create the guardian home");
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "scan must write no file: {leftovers:?}");
        out
    }
}

/// Parses stdout as JSONL findings and checks each against the contract schema.
fn findings(out: &Output) -> Vec<Value> {
    let text = stdout(out);
    let mut all = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in REQUIRED {
            assert!(v.get(key).is_some(), "missing {key}: {line}");
        }
        assert_eq!(v["schema_version"], "clawsec-traffic-finding/v1");
        assert_eq!(v["platform"], "picoclaw");
        assert_eq!(v["source"], "offline");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z') && &ts[19..20] == ".", "{ts}");
        assert!(!line.contains(KEY), "a secret reached the output: {line}");
        all.push(v);
    }
    all
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn raw_request_with_a_secret_in_a_gzip_chunked_body() {
    let s = Scratch::new();
    let gz = gzip(format!("{{\"messages\":[{{\"content\":\"my key is {KEY}\"}}]}}").as_bytes());
    let mut msg = b"POST /v1/chat HTTP/1.1\r\nHost: paste.example\r\nContent-Type: application/json\r\n\
Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for piece in gz.chunks(7) {
        msg.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        msg.extend(piece);
        msg.extend(b"\r\n");
    }
    msg.extend(b"0\r\n\r\n");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &msg).unwrap();
    let out = s.run(&[file.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let f = findings(&out);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["direction"], "outbound");
    assert_eq!(f[0]["protocol"], "http");
    assert_eq!(f[0]["pattern"], "aws_access_key");
    assert_eq!(f[0]["threat_type"], "EXFIL");
    assert_eq!(f[0]["dest"], "paste.example:80");
    assert_eq!(f[0]["location"]["kind"], "body");
    assert!(f[0]["fingerprint"].as_str().is_some_and(|fp| fp.len() == 8));
}

#[test]
fn response_is_inbound_and_dest_can_be_given() {
    let s = Scratch::new();
    let path = fixture("response-chunked.http");
    let out = s.run(&["--dest", "Get.Example:443", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let f = findings(&out);
    assert!(!f.is_empty());
    for v in &f {
        assert_eq!(v["direction"], "inbound");
        assert_eq!(v["dest"], "get.example:443");
    }
    let out = s.run(&[path.to_str().unwrap()], None);
    assert!(findings(&out).iter().all(|v| v["dest"] == "unknown:0"));
}

#[test]
fn plain_text_file_and_stdin() {
    let s = Scratch::new();
    let path = fixture("plain.txt");
    let from_file = findings(&s.run(&[path.to_str().unwrap()], None));
    assert!(from_file.iter().any(|v| v["direction"] == "outbound" && v["pattern"] == "aws_access_key"));
    assert!(from_file.iter().all(|v| v["dest"] == "unknown:0" && v["location"]["kind"] == "body"));
    let text = std::fs::read(&path).unwrap();
    let out = s.run(&["--direction", "outbound", "-"], Some(&text));
    assert_eq!(out.status.code(), Some(0));
    let from_stdin = findings(&out);
    assert_eq!(from_stdin.len(), 1);
    assert_eq!(from_stdin[0]["direction"], "outbound");
    // No FILE at all reads stdin too.
    assert_eq!(findings(&s.run(&["--direction", "outbound"], Some(&text))).len(), 1);
}

#[test]
fn benign_request_has_no_findings() {
    let s = Scratch::new();
    let out = s.run(&["--fail-on", "info", fixture("benign-request.http").to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn har_entries_requests_and_responses() {
    let s = Scratch::new();
    let path = fixture("entries.har");
    let out = s.run(&["--har", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let f = findings(&out);
    let outbound: Vec<_> = f.iter().filter(|v| v["direction"] == "outbound").collect();
    assert_eq!(outbound.len(), 1, "{f:?}");
    assert_eq!(
        (outbound[0]["protocol"].as_str(), outbound[0]["dest"].as_str()),
        (Some("https"), Some("paste.example:443"))
    );
    assert!(f.iter().any(|v| v["direction"] == "inbound"), "the base64 response body is decoded and scanned");
    let only_out = findings(&s.run(&["--har", path.to_str().unwrap(), "--direction", "outbound"], None));
    assert!(only_out.iter().all(|v| v["direction"] == "outbound"));
}

#[test]
fn fail_on_exits_3_at_or_above_the_threshold() {
    let s = Scratch::new();
    let path = fixture("plain.txt");
    let p = path.to_str().unwrap();
    assert_eq!(s.run(&["--fail-on", "high", "--direction", "outbound", p], None).status.code(), Some(3));
    assert_eq!(s.run(&["--fail-on", "info", p], None).status.code(), Some(3));
    assert_eq!(s.run(&["--fail-on", "critical", "--direction", "outbound", p], None).status.code(), Some(0));
    let out = s.run(&["--fail-on", "high", "--direction", "outbound", p], None);
    assert_eq!(findings(&out).len(), 1, "findings are printed as well");
}

#[test]
fn bad_usage_exits_2_naming_the_file() {
    let s = Scratch::new();
    let missing = s.dir.path().join("nope.http");
    let out = s.run(&[missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.http"));

    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), b"{\"log\": [").unwrap();
    let out = s.run(&["--har", bad.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(bad.path().file_name().unwrap().to_str().unwrap()) && err.contains("HAR"), "{err}");
    assert!(out.stdout.is_empty());

    for args in [&["--fail-on", "severe", "-"][..], &["--direction", "sideways", "-"], &["--dest", "no-port", "-"]] {
        assert_eq!(s.run(args, Some(b"")).status.code(), Some(2), "{args:?}");
    }
    let har = fixture("entries.har");
    assert_eq!(s.run(&["--har", har.to_str().unwrap(), "other.http"], None).status.code(), Some(2));
}
