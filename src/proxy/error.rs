//! The one rescue point: every failure of an exchange becomes a [`ProxyError`], and [`rescue`] alone picks
//! the status, the short text the client sees and the log line. Texts name the host and the reason, never a
//! URL, a header value or the credential.

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, PROXY_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use super::auth::REALM;
use super::body::{full, ProxyBody};
use crate::detect::Destination;

/// Why an exchange could not be completed, by who is at fault.
#[derive(Debug)]
pub enum ProxyError {
    /// The client did not present the credential (407).
    AuthRequired,
    /// The client sent something a forward proxy cannot serve (400).
    BadRequest(&'static str),
    /// The target is the proxy itself (400).
    Loop(Destination),
    /// The host name did not resolve (502).
    Resolve(Destination, String),
    /// The TCP connection to the upstream failed (502).
    Connect(Destination, String),
    /// The TCP connection to the upstream took too long (504).
    ConnectTimeout(Destination),
    /// The upstream broke the exchange (502).
    Upstream(Destination, String),
    /// The upstream did not send a response head in time (504).
    ResponseTimeout(Destination),
    /// TLS with the upstream failed when reconnecting inside an intercepted tunnel: its certificate did not
    /// verify, or the handshake broke (502).
    UpstreamTls(Destination, String),
    /// The client asked for something the proxy does not do on this path (501).
    NotImplemented(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::AuthRequired => f.write_str("proxy authentication required"),
            ProxyError::BadRequest(why) => write!(f, "bad request: {why}"),
            ProxyError::Loop(d) => write!(f, "refusing to proxy to the proxy itself ({d})"),
            ProxyError::Resolve(d, why) => write!(f, "cannot resolve {}: {why}", d.host),
            ProxyError::Connect(d, why) => write!(f, "cannot connect to {d}: {why}"),
            ProxyError::ConnectTimeout(d) => write!(f, "timed out connecting to {d}"),
            ProxyError::Upstream(d, why) => write!(f, "upstream {d} failed: {why}"),
            ProxyError::ResponseTimeout(d) => write!(f, "upstream {d} sent no response in time"),
            ProxyError::UpstreamTls(d, why) => write!(f, "TLS with upstream {d} failed: {why}"),
            ProxyError::NotImplemented(what) => write!(f, "not supported: {what}"),
        }
    }
}

impl std::error::Error for ProxyError {}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::BadRequest(_) | ProxyError::Loop(_) => StatusCode::BAD_REQUEST,
            ProxyError::Resolve(..)
            | ProxyError::Connect(..)
            | ProxyError::Upstream(..)
            | ProxyError::UpstreamTls(..) => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout(_) | ProxyError::ResponseTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// The reason of an error and its causes, in one line (`a: b: c`).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    text
}

/// Turns an error into the response the client sees, and logs it once.
pub fn rescue(err: &ProxyError) -> Response<ProxyBody> {
    let status = err.status();
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        tracing::debug!("407: {err}");
    } else {
        tracing::info!("{}: {err}", status.as_u16());
    }
    let text = format!("{} {}: {err}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut resp = Response::new(full(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        let challenge = format!("Basic realm=\"{REALM}\"");
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(PROXY_AUTHENTICATE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_kind_has_its_status_and_names_the_host() {
        let d = Destination::new("api.example", 443);
        let cases = [
            (ProxyError::AuthRequired, 407),
            (ProxyError::BadRequest("x"), 400),
            (ProxyError::Loop(d.clone()), 400),
            (ProxyError::Resolve(d.clone(), "no such host".into()), 502),
            (ProxyError::Connect(d.clone(), "refused".into()), 502),
            (ProxyError::ConnectTimeout(d.clone()), 504),
            (ProxyError::Upstream(d.clone(), "reset".into()), 502),
            (ProxyError::ResponseTimeout(d.clone()), 504),
            (ProxyError::UpstreamTls(d.clone(), "UnknownIssuer".into()), 502),
            (ProxyError::NotImplemented("x"), 501),
        ];
        for (e, code) in cases {
            let r = rescue(&e);
            assert_eq!(r.status().as_u16(), code, "{e}");
            // Gateway errors (502, 504) name the upstream; 501 is about the request, not a host.
            if code >= 502 {
                assert!(e.to_string().contains("api.example"), "{e}");
            }
        }
        let r = rescue(&ProxyError::AuthRequired);
        assert_eq!(r.headers()[PROXY_AUTHENTICATE], "Basic realm=\"picoclaw-traffic-guardian\"");
    }
}
