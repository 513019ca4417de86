//! Proxy authentication: a random credential made at each start, checked on every request and CONNECT.
//! The token is never logged: [`Credential`]'s `Debug` hides it.

use std::fmt;
use std::net::SocketAddr;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::header::PROXY_AUTHORIZATION;
use http::HeaderMap;

/// The user name of the credential.
pub const USER: &str = "guardian";
/// The realm named in `Proxy-Authenticate`.
pub const REALM: &str = "picoclaw-traffic-guardian";
/// Random bytes in a token (24 bytes: 32 base64url characters, 192 bits).
const TOKEN_BYTES: usize = 24;

/// The per-start proxy credential (`guardian:<token>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    token: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential { user: \"guardian\", token: <hidden> }")
    }
}

impl Credential {
    /// A fresh credential from the operating system's random source.
    pub fn generate() -> std::io::Result<Credential> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(format!("no random source: {e}")))?;
        Ok(Credential { token: URL_SAFE_NO_PAD.encode(bytes) })
    }

    /// A credential with a given token (tests, a restarted monitor).
    pub fn with_token(token: impl Into<String>) -> Credential {
        Credential { token: token.into() }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        USER
    }

    /// The secret token. Handle with care: it goes only into the monitored process's proxy URL and the
    /// private state file.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `http://guardian:<token>@host:port`, the proxy URL for the monitored process.
    pub fn proxy_url(&self, addr: SocketAddr) -> String {
        format!("http://{USER}:{}@{addr}", self.token)
    }

    /// The `Proxy-Authorization` value a client sends.
    pub fn header_value(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{USER}:{}", self.token)))
    }

    /// Whether `headers` carry this credential (`Proxy-Authorization: Basic`, compared in constant time).
    pub fn verify(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(PROXY_AUTHORIZATION) else { return false };
        let Ok(value) = value.to_str() else { return false };
        let Some((scheme, b64)) = value.trim().split_once(' ') else { return false };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(given) = STANDARD.decode(b64.trim()) else { return false };
        let expected = format!("{USER}:{}", self.token);
        constant_time_eq(&given, expected.as_bytes())
    }
}

/// Compares without an early exit on the first differing byte (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(PROXY_AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn generated_tokens_are_long_random_and_hidden() {
        let a = Credential::generate().unwrap();
        let b = Credential::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.token().len(), 32);
        assert!(!format!("{a:?}").contains(a.token()));
        assert!(a.proxy_url("127.0.0.1:1".parse().unwrap()).starts_with("http://guardian:"));
    }

    #[test]
    fn verify_accepts_only_the_exact_basic_credential() {
        let c = Credential::with_token("tok");
        assert!(c.verify(&with(&c.header_value())));
        assert!(c.verify(&with(&format!("basic  {}", STANDARD.encode("guardian:tok")))));
        assert!(!c.verify(&HeaderMap::new()));
        assert!(!c.verify(&with(&format!("Basic {}", STANDARD.encode("guardian:tok2")))));
        assert!(!c.verify(&with(&format!("Basic {}", STANDARD.encode("other:tok")))));
        assert!(!c.verify(&with(&format!("Bearer {}", STANDARD.encode("guardian:tok")))));
        assert!(!c.verify(&with("Basic !!!")));
        assert!(!c.verify(&with("Basic")));
    }
}
