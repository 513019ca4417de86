//! HTTPS inspection of one CONNECT tunnel: intercept (verify the upstream, then serve the guardian leaf),
//! then serve HTTP/1.1 on the decrypted client stream, sending every request through the same
//! [`forward::exchange`] as plain HTTP (same taps, inspection and findings) with `protocol: "https"`.
//!
//! ```text
//! CONNECT host:port ─▶ 200 ─▶ Interceptor::intercept ─▶ hyper server (client TLS) ─▶ forward::exchange
//!                                    │ fails                                        │ kept upstream TLS,
//!                                    ▼                                              ▼ else TlsConnector
//!              finding / counter / one log line, other clients untouched      verified TCP + TLS again
//! ```
//!
//! Requests inside the tunnel arrive in origin-form; the destination and `Host` come from the CONNECT
//! target, which is also what the upstream certificate was verified for. A WebSocket upgrade inside
//! the tunnel goes through the same exchange and is bridged and inspected by [`super::websocket`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::body::ProxyBody;
use super::error::{chain, rescue, ProxyError};
use super::forward::{self, handshake, Upstream, UpstreamBody, UpstreamConnector};
use super::tls::{Fault, InterceptError, InterceptErrorKind, Intercepted, Interceptor};
use super::{http1_server, stopped, upstream, ConnCtx};
use crate::detect::{fingerprint, Destination, Detection, Direction, Location, Severity, ThreatType};
use crate::findings::{Finding, Origin};

/// `protocol` of every exchange and finding inside an intercepted tunnel.
pub const HTTPS: &str = "https";
/// Pattern of the EGRESS finding for an upstream whose certificate does not verify.
pub const UPSTREAM_TLS_INVALID: &str = "upstream_tls_invalid";

/// Intercepts the tunnel to `dest` (TCP `upstream` already connected, 200 already sent) and serves the
/// client's requests until it closes or the proxy shuts down. Every failure ends here: one log line, a
/// finding or a counter, never an effect on other connections.
pub async fn serve<C>(ctx: ConnCtx, interceptor: Arc<Interceptor>, client: C, upstream: TcpStream, dest: Destination)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Intercepted { client, upstream, host } = match interceptor.intercept(client, upstream, &dest.host).await {
        Ok(i) => i,
        Err(e) => return report(&ctx, &dest, &e),
    };
    let Some(host_header) = host_header(&dest) else {
        tracing::debug!("intercepted tunnel to {dest}: the host makes no Host header");
        return;
    };
    // The upstream connection the interceptor verified is the first one requests use.
    let sender = match handshake(TokioIo::new(upstream), &dest).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("intercepted tunnel to {dest}: {e}");
            return;
        }
    };
    let shared = ctx.shared.clone();
    let ctx = ConnCtx {
        protocol: HTTPS,
        upstream: Arc::new(Mutex::new(Some(Upstream::new(dest.clone(), sender)))),
        connector: Arc::new(TlsConnector { interceptor, server_name: host }),
        ..ctx
    };
    let d = dest.clone();
    let service = service_fn(move |req| handle(ctx.clone(), d.clone(), host_header.clone(), req));
    // `with_upgrades`: a WebSocket's 101 hands the decrypted client stream to the bridge.
    let conn = http1_server(&shared.settings).serve_connection(TokioIo::new(client), service).with_upgrades();
    tokio::pin!(conn);
    let mut stop = shared.shutdown.clone();
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("intercepted tunnel to {dest} ended: {}", chain(&e));
    }
}

/// One request inside the tunnel: every error goes through [`rescue`].
async fn handle(
    ctx: ConnCtx,
    dest: Destination,
    host: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    ctx.shared.sink.counters().exchange();
    let result = if req.method() == Method::CONNECT {
        Err(ProxyError::BadRequest("CONNECT inside an intercepted tunnel"))
    } else {
        forward::exchange(&ctx, dest, host, req).await
    };
    Ok(result.unwrap_or_else(|e| rescue(&e)))
}

/// The `Host` of requests in a tunnel to `dest`: the CONNECT host, with the port unless it is 443.
fn host_header(dest: &Destination) -> Option<HeaderValue> {
    let host = if dest.host.contains(':') { format!("[{}]", dest.host) } else { dest.host.clone() };
    let text = if dest.port == 443 { host } else { format!("{host}:{}", dest.port) };
    HeaderValue::from_str(&text).ok()
}

/// Records a failed interception: an `upstream_tls_invalid` finding, the client-failure counter with one
/// line per host per window carrying the fix, or a plain log line.
fn report(ctx: &ConnCtx, dest: &Destination, e: &InterceptError) {
    let shared = &ctx.shared;
    match (e.kind(), e.fault()) {
        (InterceptErrorKind::UpstreamTlsInvalid, _) => {
            record_upstream_tls_invalid(ctx, dest, e);
            tracing::info!("{e}");
        }
        (InterceptErrorKind::ClientRejectedLeaf, _) => {
            shared.sink.counters().client_tls_handshake_failure();
            let key = e.host().unwrap_or(&dest.host);
            if shared.client_tls_warnings.should_log(key, Instant::now()) {
                let bundle = shared.settings.ca_bundle.as_ref().map(|p| p.display().to_string());
                tracing::warn!(
                    "a client from {} refused the guardian certificate for {key}: it does not trust the guardian CA; start the process with `picoclaw-traffic-guardian run --https-inspection`, or give it SSL_CERT_FILE={} (further refusals for this host are counted, not logged, for {} s)",
                    ctx.client_ip,
                    bundle.as_deref().unwrap_or("<bundle>"),
                    super::CLIENT_TLS_WARN_WINDOW.as_secs(),
                );
            }
        }
        (_, Fault::Client) => {
            shared.sink.counters().client_tls_handshake_failure();
            tracing::debug!("intercepting {dest}: {e}");
        }
        (_, Fault::Upstream) => tracing::info!("intercepting {dest}: {e}"),
        (_, Fault::Local) => tracing::warn!("intercepting {dest}: {e}"),
    }
}

/// The EGRESS `upstream_tls_invalid` finding (info): the snippet names the destination and the
/// verification error only.
fn record_upstream_tls_invalid(ctx: &ConnCtx, dest: &Destination, e: &InterceptError) {
    let reason = match e {
        InterceptError::UpstreamTlsInvalid { reason, .. } => reason.as_str(),
        _ => "",
    };
    let mut snippet = format!("{dest}: {reason}");
    if let Some((cut, _)) = snippet.char_indices().nth(120) {
        snippet.truncate(cut);
    }
    let detection = Detection {
        pattern: UPSTREAM_TLS_INVALID,
        threat_type: ThreatType::Egress,
        severity: Severity::Info,
        snippet,
        fingerprint: fingerprint(dest.host.as_bytes()),
        location: Location::Target,
        decoded: None,
    };
    let origin = Origin { direction: Direction::Outbound, protocol: HTTPS, source: ctx.client_ip, dest: dest.clone() };
    ctx.shared.sink.record(Finding::new(&detection, &origin, OffsetDateTime::now_utc()));
}

/// Opens a further upstream connection for an intercepted tunnel whose kept one closed: TCP through
/// [`upstream::connect`] (pins, EGRESS, loop refusal), then TLS to the name the first connection was
/// verified for, verified again.
#[derive(Debug)]
pub struct TlsConnector {
    interceptor: Arc<Interceptor>,
    server_name: String,
}

impl TlsConnector {
    /// A connector verifying upstreams as `server_name` with `interceptor`'s client configuration.
    pub fn new(interceptor: Arc<Interceptor>, server_name: String) -> TlsConnector {
        TlsConnector { interceptor, server_name }
    }
}

impl UpstreamConnector for TlsConnector {
    fn connect<'a>(
        &'a self,
        ctx: &'a ConnCtx,
        dest: &'a Destination,
    ) -> Pin<Box<dyn Future<Output = Result<SendRequest<UpstreamBody>, ProxyError>> + Send + 'a>> {
        Box::pin(async move {
            let tcp = upstream::connect(&ctx.shared, dest, ctx.client_ip, ctx.protocol).await?;
            match self.interceptor.connect_upstream(&self.server_name, tcp).await {
                Ok(tls) => handshake(TokioIo::new(tls), dest).await,
                Err(e) => {
                    if e.kind() == InterceptErrorKind::UpstreamTlsInvalid {
                        record_upstream_tls_invalid(ctx, dest, &e);
                    }
                    Err(ProxyError::UpstreamTls(dest.clone(), e.to_string()))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_comes_from_the_connect_target() {
        let h = |host: &str, port| host_header(&Destination::new(host, port)).unwrap();
        assert_eq!(h("API.example.com", 443), "api.example.com");
        assert_eq!(h("api.example.com", 8443), "api.example.com:8443");
        assert_eq!(h("[::1]", 443), "[::1]");
        assert_eq!(h("::1", 8443), "[::1]:8443");
    }
}
