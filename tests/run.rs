//! `run -- COMMAND` and `env` through the real binary: the proxy variables reach the child and nothing
//! else, exit codes and signals pass through, traffic from the child is inspected, and the Picoclaw known
//! secrets are loaded, reloaded and counted (never printed).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use picoclaw_traffic_guardian::home::Home;
use picoclaw_traffic_guardian::proxy::Credential;
use rustix::process::{kill_process, Pid, Signal};

use crate::util::{
    findings_in, guardian, output, plain_upstream, post_via_proxy, stdout, wait_for, Background, SECRET,
};

const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
const CA_VARS: [&str; 5] =
    ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"];

/// `run -- sh -c SCRIPT` with piped stdio.
fn run_sh(cmd: &mut Command, script: &str) -> Child {
    cmd.args(["run", "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the guardian")
}

/// Lines of the child's stdout up to (not including) `marker`.
fn lines_until(out: &mut BufReader<ChildStdout>, marker: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).expect("read the child's output") > 0, "no {marker} in {lines:?}");
        let line = line.trim_end_matches('\n').to_owned();
        if line == marker {
            return lines;
        }
        lines.push(line);
    }
}

fn env_map(lines: &[String]) -> BTreeMap<String, String> {
    lines.iter().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut s).expect("read stderr");
    s
}

#[test]
fn the_child_alone_gets_the_proxy_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let parent_before: Vec<_> = std::env::vars_os().collect();
    let mut cmd = guardian(&home);
    cmd.env("NO_PROXY", "example.invalid,localhost").env("SSL_CERT_FILE", "/operator/own.pem");
    let mut child = run_sh(&mut cmd, "env; echo END; read x");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let vars = env_map(&lines_until(&mut out, "END"));

    let url = &vars["HTTP_PROXY"];
    assert!(url.starts_with("http://guardian:") && url.contains("@127.0.0.1:"), "{url}");
    for k in PROXY_VARS {
        assert_eq!(&vars[k], url, "{k}");
    }
    assert_eq!(vars["NO_PROXY"], "example.invalid,localhost", "NO_PROXY passes through as set");
    assert_eq!(vars["SSL_CERT_FILE"], "/operator/own.pem", "without inspection the operator's own trust stays");
    for k in &CA_VARS[1..] {
        assert!(!vars.contains_key(*k), "{k} is not set without inspection");
    }

    // The guardian itself runs without them, while the child is alive.
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for k in PROXY_VARS {
        assert!(!environ.split('\0').any(|kv| kv.starts_with(&format!("{k}="))), "{k} in the guardian's environment");
    }
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let err = stderr_of(&mut child);
    let token = url.trim_start_matches("http://guardian:").split('@').next().unwrap();
    assert!(!err.contains(token), "the banner never shows the credential: {err}");
    assert_eq!(err.lines().count(), 1, "one banner line: {err}");
    assert!(err.contains("monitoring `sh` through http://127.0.0.1:"), "{err}");
    assert!(err.contains(&home.join("logs/findings.jsonl").display().to_string()), "{err}");
    let parent_after: Vec<_> = std::env::vars_os().collect();
    assert_eq!(parent_before, parent_after, "the parent's environment is untouched");
    assert!(!home.join("run/monitor.json").exists(), "a run monitor writes no shared state");
}

#[test]
fn exit_codes_pass_through() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    for (script, want) in [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 128 + 9), ("kill -TERM $$", 128 + 15)] {
        let o = output(guardian(&home).args(["run", "--", "sh", "-c", script]));
        assert_eq!(o.status.code(), Some(want), "{script}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = output(guardian(&home).args(["run", "--", "no-such-command-for-the-guardian-test"]));
    assert_eq!(o.status.code(), Some(127));
    let o = output(guardian(&home).args(["run"]));
    assert_eq!(o.status.code(), Some(2), "a command is required");
}

#[test]
fn signals_to_the_guardian_reach_the_child() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    for (sig, name, code) in [(Signal::TERM, "TERM", 42), (Signal::INT, "INT", 43), (Signal::HUP, "HUP", 44)] {
        let script = format!("trap 'exit {code}' {name}; echo ready; while :; do sleep 0.05; done");
        let mut child = run_sh(&mut guardian(&home), &script);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        kill_process(Pid::from_raw(child.id() as i32).unwrap(), sig).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(code), "SIG{name}");
    }
}

#[test]
fn traffic_from_the_child_is_inspected() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (upstream, bodies) = plain_upstream();
    let mut child = run_sh(&mut guardian(&home), "echo \"$HTTP_PROXY\"; echo END; read x");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let url = lines_until(&mut out, "END").pop().unwrap();
    let rest = url.strip_prefix("http://guardian:").unwrap();
    let (token, addr) = rest.split_once('@').unwrap();
    let auth = Credential::with_token(token).header_value();
    let reply = post_via_proxy(addr.parse().unwrap(), Some(&auth), upstream, &format!("leak={SECRET}"));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let no_auth = post_via_proxy(addr.parse().unwrap(), None, upstream, "x");
    assert!(no_auth.starts_with("HTTP/1.1 407"), "the credential is required: {no_auth}");
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(bodies.lock().unwrap().len(), 1);
    // The monitor drained and flushed before exiting.
    let found = findings_in(&home.join("logs/findings.jsonl"));
    assert!(found.iter().any(|f| f["pattern"] == "aws_access_key"), "{found:?}");
    assert!(!std::fs::read_to_string(home.join("logs/findings.jsonl")).unwrap().contains(SECRET));
}

#[test]
fn https_inspection_needs_a_ca_refreshes_the_bundle_and_hands_it_to_the_child() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let o = output(guardian(&home).args(["run", "--https-inspection", "--", "true"]));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ca init"), "{err}");

    // The system roots come from the guardian's own SSL_CERT_FILE (rustls-native-certs honours it).
    let root = rcgen::generate_simple_self_signed(vec!["root.test".to_owned()]).unwrap();
    let roots = tmp.path().join("roots.pem");
    std::fs::write(&roots, root.cert.pem()).unwrap();
    let bundle = home.join("ca/trust-bundle.pem");
    let run_env = |home: &Path| {
        let o = output(guardian(home).env("SSL_CERT_FILE", &roots).args(["run", "--https-inspection", "--", "env"]));
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        (
            env_map(&stdout(&o).lines().map(str::to_owned).collect::<Vec<_>>()),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let fingerprint =
        |home: &Path| picoclaw_traffic_guardian::proxy::tls::ca::stored_fingerprint(&Home::at(home)).unwrap();

    assert_eq!(output(guardian(&home).args(["ca", "init"])).status.code(), Some(0));
    let (vars, err) = run_env(&home);
    for k in CA_VARS {
        assert_eq!(vars.get(k).map(String::as_str), Some(bundle.to_str().unwrap()), "{k}");
    }
    assert!(err.contains("wrote the trust bundle") && err.contains("it did not exist"), "{err}");
    assert!(err.contains(&format!("CA sha256 {}", fingerprint(&home))), "{err}");
    let (_, err) = run_env(&home);
    assert!(!err.contains("wrote the trust bundle"), "an up-to-date bundle is left alone: {err}");

    // A new CA: the next run rewrites the bundle for it.
    let old = fingerprint(&home);
    assert_eq!(output(guardian(&home).args(["ca", "init", "--force"])).status.code(), Some(0));
    assert_ne!(fingerprint(&home), old);
    let (_, err) = run_env(&home);
    assert!(err.contains("it did not hold the current CA"), "{err}");
    assert!(err.contains(&format!("CA sha256 {}", fingerprint(&home))), "{err}");
    let pem = std::fs::read_to_string(&bundle).unwrap();
    assert!(pem.contains(root.cert.pem().trim()), "the system roots are in the bundle");
}

#[test]
fn env_prints_the_running_monitors_variables_for_each_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let o = output(guardian(&home).arg("env"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no monitor is running"));

    let bg = Background::start(&home, &[]);
    let token = crate::util::monitor_state(&home).unwrap().proxy_credential.unwrap();
    let want = format!("http://guardian:{token}@{}", bg.addr);
    let sh = output(guardian(&home).arg("env"));
    assert_eq!(sh.status.code(), Some(0));
    // The subshell pattern of the README, with a real sh.
    let script =
        format!("( eval \"$({} env)\"; exec sh -c 'printf %s \"$https_proxy\"' )", crate::util::bin().display());
    let sub = output(
        Command::new("sh")
            .args(["-c", &script])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", tmp.path())
            .env("PICOCLAW_TRAFFIC_GUARDIAN_HOME", &home),
    );
    assert_eq!(stdout(&sub), want);
    assert_eq!(stdout(&sh).lines().count(), 4);

    // A `run` beside the shared monitor neither conflicts with it nor touches its state.
    let o = output(guardian(&home).args(["run", "--", "true"]));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(crate::util::monitor_state(&home).map(|s| s.pid), Some(bg.pid));

    let json = output(guardian(&home).args(["env", "--shell", "json"]));
    let map: BTreeMap<String, String> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        map.keys().map(String::as_str).collect::<Vec<_>>(),
        ["HTTPS_PROXY", "HTTP_PROXY", "http_proxy", "https_proxy"]
    );
    assert!(map.values().all(|v| *v == want));
    for (shell, prefix) in [("fish", "set -gx HTTP_PROXY '"), ("powershell", "$env:HTTP_PROXY = '")] {
        let o = output(guardian(&home).args(["env", "--shell", shell]));
        assert!(stdout(&o).starts_with(&format!("{prefix}{want}'")), "{shell}: {}", stdout(&o));
    }
}

/// A Picoclaw home whose one model key goes to `api_base`, plus a guardian config pointing at it.
fn picoclaw_fixture(root: &Path, key: &str, api_base: &str, extra_guardian: &str) -> std::path::PathBuf {
    let pico = root.join("picoclaw");
    std::fs::create_dir_all(&pico).unwrap();
    let config = format!(
        r#"{{"version": 3, "model_list": [{{"model_name": "m", "model": "openai/gpt-4o", "api_base": "{api_base}", "api_keys": ["{key}"]}}]}}"#
    );
    std::fs::write(pico.join("config.json"), config).unwrap();
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let guardian_cfg = format!(r#"{{"picoclaw_home": "{}"{extra_guardian}}}"#, pico.display());
    std::fs::write(home.join("config.json"), guardian_cfg).unwrap();
    home
}

#[test]
fn known_secrets_are_counted_reloaded_and_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let key = "sk-fixture-known-secret-0123456789abcdef";
    let home = picoclaw_fixture(tmp.path(), key, "https://api.fixture.test/v1", "");
    let o = output(guardian(&home).args(["run", "--", "true"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("known secrets: 1 (config.json 1)"), "{err}");
    assert!(!err.contains(key));

    let bg = Background::start(&home, &[]);
    let total = |home: &Path| {
        let o = output(guardian(home).args(["status", "--json"]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(!stdout(&o).contains(key), "status never shows a known secret");
        (v["known_secrets"]["total"].as_u64(), v["warnings"].clone())
    };
    assert_eq!(total(&home).0, Some(1));
    let log = std::fs::read_to_string(home.join("logs/guardian.log")).unwrap();
    assert!(log.contains("known secrets: 1") && !log.contains(key), "{log}");

    // A second key appears without a restart; then a broken file is a warning, and the monitor lives on.
    let pico = tmp.path().join("picoclaw/config.json");
    let two = format!(
        r#"{{"version": 3, "model_list": [{{"model_name": "m", "model": "openai/gpt-4o", "api_keys": ["{key}", "sk-fixture-second-key-0123456789"]}}]}}"#
    );
    std::fs::write(&pico, two).unwrap();
    wait_for("the reloaded secrets", || (total(&home).0 == Some(2)).then_some(()));
    std::fs::write(&pico, "{ not json").unwrap();
    let warnings = wait_for("the broken-file warning", || {
        let (n, w) = total(&home);
        (n == Some(0)).then_some(w)
    });
    assert!(warnings.to_string().contains("not valid JSON"), "{warnings}");
    let o = output(guardian(&home).arg("status"));
    assert_eq!(o.status.code(), Some(0), "still running");
    drop(bg);
}

#[test]
fn a_known_secret_is_fine_to_its_api_base_and_a_finding_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, _) = plain_upstream();
    let key = "sk-fixture-known-secret-0123456789abcdef";
    let api_base = format!("http://api.fixture.test:{}/v1", upstream.port());
    let pins = r#", "resolve": {"api.fixture.test": "127.0.0.1", "other.fixture.test": "127.0.0.1"}"#;
    let home = picoclaw_fixture(tmp.path(), key, &api_base, pins);
    let mut child = run_sh(&mut guardian(&home), "echo \"$HTTP_PROXY\"; echo END; read x");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let url = lines_until(&mut out, "END").pop().unwrap();
    let (token, addr) = url.strip_prefix("http://guardian:").unwrap().split_once('@').unwrap();
    let auth = Credential::with_token(token).header_value();

    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let port = upstream.port();
    let req = format!(
        "POST http://api.fixture.test:{port}/v1/chat/completions HTTP/1.1\r\nHost: api.fixture.test:{port}\r\nProxy-Authorization: {auth}\r\nAuthorization: Bearer {key}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let elsewhere = post_via_proxy(addr.parse().unwrap(), Some(&auth), upstream, &format!("{{\"k\":\"{key}\"}}"));
    assert!(elsewhere.starts_with("HTTP/1.1 200"), "{elsewhere}");
    // Base64-encoded, to a third destination (a new one, so dedup cannot hide it).
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let body = format!("data={encoded}");
    let req = format!(
        "POST http://other.fixture.test:{port}/ HTTP/1.1\r\nHost: other.fixture.test:{port}\r\nProxy-Authorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let found = findings_in(&home.join("logs/findings.jsonl"));
    let known: Vec<_> = found.iter().filter(|f| f["pattern"] == "known_secret").collect();
    let mut dests: Vec<_> = known.iter().map(|f| f["dest"].as_str().unwrap_or("")).collect();
    dests.sort_unstable();
    assert_eq!(
        dests,
        [format!("127.0.0.1:{port}"), format!("other.fixture.test:{port}")],
        "only the bodies to other hosts: {found:?}"
    );
    let encoded_one = known.iter().find(|f| f["dest"].as_str().is_some_and(|d| d.starts_with("other."))).unwrap();
    assert_eq!(encoded_one["decoded"], "base64");
    assert!(!std::fs::read_to_string(home.join("logs/findings.jsonl")).unwrap().contains(key));
}

/// Kills a process when dropped (a hang guard for a test that fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_interactive_child_reads_the_terminal_and_gets_its_ctrl_c_once() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // `script` gives the guardian a terminal (a pty) in the foreground, as a shell prompt would. The child
    // shares that foreground group, so it may read the terminal (in a group of its own it would be stopped
    // by SIGTTIN) and the terminal's Ctrl-C reaches it directly; the guardian then does not send a second.
    let child = tmp.path().join("child.sh");
    std::fs::write(&child, "n=0\ntrap 'n=$((n+1))' INT\nread x\necho got:$x\nread y\necho ints:$n\n").unwrap();
    // `exec`: no shell between `script` and the guardian (a waiting sh would itself die of the Ctrl-C).
    let line = format!("exec {} run -- sh {}", crate::util::bin().display(), child.display());
    let mut script = KillOnDrop(
        Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", tmp.path())
            .env("PICOCLAW_TRAFFIC_GUARDIAN_HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux) runs the guardian on a pty"),
    );
    let mut input = script.0.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = BufReader::new(script.0.stdout.take().unwrap());
    std::thread::spawn(move || loop {
        let mut line = String::new();
        match out.read_line(&mut line) {
            Ok(n) if n > 0 => {
                if tx.send(line).is_err() {
                    return;
                }
            }
            _ => return,
        }
    });
    let mut seen = String::new();
    let mut wait_line = |want: &str| {
        while !seen.contains(want) {
            match rx.recv_timeout(std::time::Duration::from_secs(20)) {
                Ok(line) => seen.push_str(&line),
                Err(_) => panic!("no {want:?} from the child on the terminal; saw {seen:?}"),
            }
        }
        seen.clone()
    };
    wait_line("monitoring `sh`");
    input.write_all(b"hello\n").unwrap();
    wait_line("got:hello");
    // Ctrl-C on the terminal: the line discipline signals the whole foreground group.
    input.write_all(b"\x03").unwrap();
    input.write_all(b"next\n").unwrap();
    let seen = wait_line("ints:");
    let seen = if seen.trim_end().ends_with("ints:") { wait_line("\n") } else { seen };
    let status = wait_for("the guardian to exit", || script.0.try_wait().unwrap());
    assert!(seen.contains("ints:1"), "one SIGINT, not two: {seen:?}");
    assert_eq!(status.code(), Some(0), "{seen:?}");
}
