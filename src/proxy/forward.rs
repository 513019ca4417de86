//! One absolute-form HTTP/1.1 exchange: check the target, reuse or open the upstream connection, strip
//! hop-by-hop headers, forward the request with a tap on its body, and hand back the response with a tap
//! on its body. Bodies stream both ways; nothing is buffered whole.

use http::header::{HeaderName, CONNECTION, HOST, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::uri::Scheme;
use std::future::Future;
use std::pin::Pin;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::timeout;

use super::body::{empty, ProxyBody, Tap, TapBody};
use super::error::{chain, ProxyError};
use super::{upstream, websocket, ConnCtx};
use crate::detect::{Destination, Direction};
use crate::findings::Origin;
use crate::inspect::MessageInspector;

/// The request body type sent upstream.
pub type UpstreamBody = TapBody<Incoming>;

/// An open HTTP/1.1 connection to one upstream, reused for the client connection's next request to the
/// same destination.
#[derive(Debug)]
pub struct Upstream {
    dest: Destination,
    sender: SendRequest<UpstreamBody>,
}

impl Upstream {
    /// A kept connection to `dest` (interception may pre-fill a connection's slot with one).
    pub fn new(dest: Destination, sender: SendRequest<UpstreamBody>) -> Upstream {
        Upstream { dest, sender }
    }
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every header it names,
/// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
/// (A WebSocket upgrade is read before this runs and its two headers put back: [`websocket::restore`].)
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The destination of an absolute-form `http://` target, and the `Host` value for the upstream (host and
/// port as written, never the userinfo: `http://user:pass@host/` must not send `user:pass` onwards).
fn target(uri: &Uri) -> Result<(Destination, HeaderValue), ProxyError> {
    let Some(authority) = uri.authority() else {
        return Err(ProxyError::BadRequest("a proxy needs an absolute-form target (http://host/path)"));
    };
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(ProxyError::BadRequest("only http:// targets are forwarded; use CONNECT for https"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(ProxyError::BadRequest("the target has no host"));
    }
    let host_header = match authority.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let host_header = HeaderValue::from_str(&host_header).map_err(|_| ProxyError::BadRequest("bad host"))?;
    Ok((Destination::new(host, authority.port_u16().unwrap_or(80)), host_header))
}

/// Forwards one absolute-form request (the plain-HTTP path).
pub async fn forward(ctx: &ConnCtx, req: Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
    ctx.authorize(req.headers())?;
    let (dest, host) = target(req.uri())?;
    exchange(ctx, dest, host, req).await
}

/// Sends `req` to `dest` with `Host: host` and returns the response, a tap on each body. Shared by the
/// plain path and requests inside an intercepted CONNECT (which arrive in origin-form): same inspection,
/// not a copy. The upstream connection comes from the connection's kept one or `ctx.connector`.
pub async fn exchange(
    ctx: &ConnCtx,
    dest: Destination,
    host: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut req = req;
    // A WebSocket upgrade: its headers are hop-by-hop, so they are read before stripping and put back.
    let ws = websocket::requested(req.headers());
    let client_upgrade = ws.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = path.parse().map_err(|_| ProxyError::BadRequest("bad request target"))?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = ws.clone() {
        websocket::restore(&mut parts.headers, upgrade);
    }
    parts.headers.insert(HOST, host);

    let shared = ctx.shared.clone();
    let budget = shared.settings.max_scan_bytes;
    let detector = shared.detector();
    let origin =
        Origin { direction: Direction::Outbound, protocol: ctx.protocol, source: ctx.client_ip, dest: dest.clone() };
    let (method, headers, det, idest) = (parts.method.clone(), parts.headers.clone(), detector.clone(), dest.clone());
    let tap = Tap::spawn(
        move || MessageInspector::request(&det, idest, &method, &path, &headers, budget),
        origin,
        budget,
        shared.sink.clone(),
        ctx.guard.clone(),
    );
    let req = Request::from_parts(parts, TapBody::new(body, tap));

    let mut sender = upstream_for(ctx, &dest).await?;
    let mut resp = match timeout(shared.settings.response_timeout, sender.send_request(req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(ProxyError::Upstream(dest, chain(&e))),
        Err(_) => return Err(ProxyError::ResponseTimeout(dest)),
    };
    if let (Some(upgrade), Some(client)) = (ws, client_upgrade) {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The upstream connection now belongs to the WebSocket: it is not kept for further requests.
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            let deflate = websocket::deflate_params(&parts.headers);
            strip_hop_by_hop(&mut parts.headers);
            websocket::restore(&mut parts.headers, upgrade);
            websocket::spawn_bridge(ctx, dest, client, upstream_upgrade, deflate);
            return Ok(Response::from_parts(parts, empty()));
        }
    }
    *ctx.upstream.lock().await = Some(Upstream::new(dest.clone(), sender));

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let origin =
        Origin { direction: Direction::Inbound, protocol: ctx.protocol, source: ctx.client_ip, dest: dest.clone() };
    let (status, headers) = (parts.status, parts.headers.clone());
    let tap = Tap::spawn(
        move || MessageInspector::response(&detector, dest, status, &headers, budget),
        origin,
        budget,
        shared.sink.clone(),
        ctx.guard.clone(),
    );
    Ok(Response::from_parts(parts, TapBody::new(body, tap).boxed()))
}

/// The kept upstream connection when it goes to `dest` and is still usable, else a new one.
async fn upstream_for(ctx: &ConnCtx, dest: &Destination) -> Result<SendRequest<UpstreamBody>, ProxyError> {
    let kept = ctx.upstream.lock().await.take();
    if let Some(mut up) = kept {
        if &up.dest == dest && !up.sender.is_closed() && up.sender.ready().await.is_ok() {
            return Ok(up.sender);
        }
    }
    ctx.connector.connect(ctx, dest).await
}

/// Opens HTTP/1.1 connections to upstreams. The plain path uses [`PlainConnector`]; HTTPS interception
/// supplies one that wraps the TCP stream in TLS before the handshake.
pub trait UpstreamConnector: Send + Sync + std::fmt::Debug {
    /// A ready sender to `dest`, for a client on `ctx`.
    fn connect<'a>(
        &'a self,
        ctx: &'a ConnCtx,
        dest: &'a Destination,
    ) -> Pin<Box<dyn Future<Output = Result<SendRequest<UpstreamBody>, ProxyError>> + Send + 'a>>;
}

/// Plain TCP upstreams ([`upstream::connect`]: pins, EGRESS, loop refusal, `TCP_NODELAY`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainConnector;

impl UpstreamConnector for PlainConnector {
    fn connect<'a>(
        &'a self,
        ctx: &'a ConnCtx,
        dest: &'a Destination,
    ) -> Pin<Box<dyn Future<Output = Result<SendRequest<UpstreamBody>, ProxyError>> + Send + 'a>> {
        Box::pin(async move {
            let stream = upstream::connect(&ctx.shared, dest, ctx.client_ip, ctx.protocol).await?;
            handshake(TokioIo::new(stream), dest).await
        })
    }
}

/// The HTTP/1.1 client handshake over any connected stream; the connection is driven on its own task.
pub async fn handshake<S>(io: S, dest: &Destination) -> Result<SendRequest<UpstreamBody>, ProxyError>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| ProxyError::Upstream(dest.clone(), chain(&e)))?;
    let d = dest.clone();
    tokio::spawn(async move {
        // `with_upgrades`: after a 101 the connection's stream is handed to the WebSocket bridge.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection to {d} ended: {}", chain(&e));
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-type", "application/json"),
            ("content-length", "3"),
            ("authorization", "Bearer x"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-length", "content-type"]);
    }

    #[test]
    fn targets_must_be_absolute_http() {
        let (d, host) = target(&"http://Example.com:8080/p?q".parse().unwrap()).unwrap();
        assert_eq!(d, Destination::new("example.com", 8080));
        assert_eq!(host, "Example.com:8080");
        let (d, host) = target(&"http://user:secret@h.example/".parse().unwrap()).unwrap();
        assert_eq!((d.host.as_str(), host.to_str().unwrap()), ("h.example", "h.example"));
        let (d, host) = target(&"http://[::1]:81/".parse().unwrap()).unwrap();
        assert_eq!((d.host.as_str(), host.to_str().unwrap()), ("::1", "[::1]:81"));
        assert_eq!(target(&"http://example.com/".parse().unwrap()).unwrap().0.port, 80);
        assert!(target(&"/p".parse().unwrap()).is_err());
        assert!(target(&"https://example.com/".parse().unwrap()).is_err());
    }
}
