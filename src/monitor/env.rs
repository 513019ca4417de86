//! The proxy variables of the monitored process, and `env`, which prints them for a running shared monitor
//! so an operator can start the gateway some other way:
//!
//! ```sh
//! ( eval "$(picoclaw-traffic-guardian env)"; exec picoclaw gateway )
//! ```
//!
//! The variables are only ever printed or put into one child's environment (CONTRACT §2); nothing here
//! edits a shell file or the guardian's own environment.

use std::io::{self, Write};
use std::path::Path;

use serde_json::{Map, Value};

use super::state::{observe, Observed};
use crate::home::Home;
use crate::proxy::Credential;

/// The proxy variables, both cases: Picoclaw's Telegram client reads only the uppercase ones.
pub const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
/// The trust variables set to the bundle when inspecting HTTPS: Go (`SSL_CERT_FILE` replaces its roots, so
/// the bundle holds the system roots too), Node, Python requests, curl and git, for tools the agent starts.
pub const CA_VARS: [&str; 5] =
    ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"];

/// The variables for a monitored process: the proxy URL (with its credential) in [`PROXY_VARS`], and the
/// bundle in [`CA_VARS`] when inspecting. Without inspection no trust variable is set, so the process keeps
/// the operator's own.
pub fn child_vars(proxy_url: &str, ca_bundle: Option<&Path>) -> Vec<(&'static str, String)> {
    let mut vars: Vec<(&'static str, String)> = PROXY_VARS.iter().map(|k| (*k, proxy_url.to_owned())).collect();
    if let Some(bundle) = ca_bundle {
        vars.extend(CA_VARS.iter().map(|k| (*k, bundle.display().to_string())));
    }
    vars
}

/// Output syntax of `env`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// POSIX sh, bash, zsh: `export K='v'`.
    Sh,
    /// fish: `set -gx K 'v'`.
    Fish,
    /// PowerShell: `$env:K = 'v'`.
    Powershell,
    /// One JSON object.
    Json,
}

/// Renders `vars` for `shell`, each value quoted so that no character is interpreted.
pub fn render(vars: &[(&str, String)], shell: Shell) -> String {
    if shell == Shell::Json {
        let map: Map<String, Value> = vars.iter().map(|(k, v)| ((*k).to_owned(), Value::String(v.clone()))).collect();
        return format!("{}\n", Value::Object(map));
    }
    let mut out = String::new();
    for (k, v) in vars {
        let line = match shell {
            Shell::Sh => format!("export {k}='{}'", v.replace('\'', r"'\''")),
            Shell::Fish => format!("set -gx {k} '{}'", v.replace('\\', r"\\").replace('\'', r"\'")),
            Shell::Powershell => format!("$env:{k} = '{}'", v.replace('\'', "''")),
            Shell::Json => String::new(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `env`: prints the variables of the running shared monitor. `ca_bundle` is the configured bundle, used
/// when that monitor inspects HTTPS. Exit 0, or 1 when no monitor runs.
pub fn print(home: &Home, ca_bundle: &Path, shell: Shell, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let state = match observe(home) {
        Observed::Running(s) => s,
        Observed::Stopped => {
            writeln!(
                err,
                "picoclaw-traffic-guardian: no monitor is running; start one with `picoclaw-traffic-guardian start --background` (or use `run -- COMMAND`)"
            )?;
            return Ok(1);
        }
        Observed::Stale(st) => {
            writeln!(err, "picoclaw-traffic-guardian: no monitor is running ({st}); start one with `picoclaw-traffic-guardian start --background`")?;
            return Ok(1);
        }
    };
    let url = match &state.proxy_credential {
        Some(token) => match state.listen.parse() {
            Ok(addr) => Credential::with_token(token.as_str()).proxy_url(addr),
            Err(_) => {
                writeln!(
                    err,
                    "picoclaw-traffic-guardian: monitor.json records an invalid listen address {:?}",
                    state.listen
                )?;
                return Ok(1);
            }
        },
        None => state.proxy_url(),
    };
    let bundle = state.https_inspection.then_some(ca_bundle);
    out.write_all(render(&child_vars(&url, bundle), shell).as_bytes())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_without_inspection_set_no_trust_variable() {
        let v = child_vars("http://guardian:t@127.0.0.1:1", None);
        assert_eq!(v.iter().map(|(k, _)| *k).collect::<Vec<_>>(), PROXY_VARS);
        let v = child_vars("u", Some(Path::new("/b.pem")));
        assert_eq!(v.len(), 9);
        assert!(v.contains(&("SSL_CERT_FILE", "/b.pem".into())));
    }

    #[test]
    fn quoting_survives_hostile_values() {
        let vars = [("K", r"a'b\c $x `y`".to_owned())];
        assert_eq!(render(&vars, Shell::Sh), "export K='a'\\''b\\c $x `y`'\n");
        assert_eq!(render(&vars, Shell::Fish), "set -gx K 'a\\'b\\\\c $x `y`'\n");
        assert_eq!(render(&vars, Shell::Powershell), "$env:K = 'a''b\\c $x `y`'\n");
        let json: Value = serde_json::from_str(&render(&vars, Shell::Json)).unwrap();
        assert_eq!(json["K"], r"a'b\c $x `y`");
    }

    #[test]
    fn sh_quoting_round_trips_through_a_real_shell() {
        let value = r#"http://guardian:a'b"c\d$e`f@127.0.0.1:1"#;
        let script = format!("{}printf %s \"$HTTP_PROXY\"", render(&[("HTTP_PROXY", value.to_owned())], Shell::Sh));
        let out = std::process::Command::new("sh").args(["-c", &script]).env_clear().output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }
}
