//! CONNECT: authorize, connect to the target (so a dead upstream still gets a clear 502/504), answer 200,
//! then take over the upgraded client stream. [`serve_upgraded`] is where the stream is handed over: HTTPS
//! inspection ([`super::mitm`]) or a blind tunnel, decided per target.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::body::{empty, ProxyBody};
use super::error::{chain, ProxyError};
use super::rewind::{self, FirstBytes};
use super::{mitm, upstream, ConnCtx, FIRST_BYTES_TIMEOUT};
use crate::detect::Destination;
use crate::findings::Counters;

/// `protocol` of findings about CONNECT targets.
pub const CONNECT_PROTOCOL: &str = "https";

/// Handles one CONNECT request.
pub async fn connect(ctx: &ConnCtx, req: Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
    ctx.authorize(req.headers())?;
    let authority = req.uri().authority().ok_or(ProxyError::BadRequest("CONNECT needs host:port"))?;
    let port = authority.port_u16().ok_or(ProxyError::BadRequest("CONNECT needs a port"))?;
    if authority.host().is_empty() {
        return Err(ProxyError::BadRequest("CONNECT needs a host"));
    }
    let dest = Destination::new(authority.host(), port);
    let upstream = upstream::connect(&ctx.shared, &dest, ctx.client_ip, CONNECT_PROTOCOL).await?;
    let ctx = ctx.clone();
    // The 200 must reach the client before the upgrade completes, so the upgraded stream is served on its
    // own task once hyper has sent the response.
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => serve_upgraded(ctx, TokioIo::new(upgraded), upstream, dest).await,
            Err(e) => tracing::debug!("CONNECT to {dest}: upgrade failed: {}", chain(&e)),
        }
    });
    Ok(Response::new(empty()))
}

/// Serves the client side of an established CONNECT to `dest`, with `upstream` already connected.
/// This is the one place that decides between a blind tunnel and interception: intercept when HTTPS
/// inspection is on and the host is not in `mitm_skip_hosts`, else tunnel blind.
pub async fn serve_upgraded<C>(ctx: ConnCtx, client: C, upstream: TcpStream, dest: Destination)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match ctx.shared.settings.mitm.clone() {
        Some(interceptor) if ctx.shared.settings.intercepts(&dest.host) => {
            // Only TLS can be intercepted. Anything else (plain HTTP, SSH, a server-speaks-first protocol)
            // still works as before, tunnelled blind with the bytes already read put back.
            match rewind::peek(client, FIRST_BYTES_TIMEOUT).await {
                (FirstBytes::Tls, client) => mitm::serve(ctx, interceptor, client, upstream, dest).await,
                (first, client) => {
                    tracing::debug!("CONNECT to {dest}: {first:?} instead of a TLS ClientHello, tunnelled blind");
                    tunnel(ctx, client, upstream, dest).await
                }
            }
        }
        _ => tunnel(ctx, client, upstream, dest).await,
    }
}

/// Copies both ways until both sides have closed (half-close passes through) or the proxy shuts down.
pub async fn tunnel<C>(ctx: ConnCtx, mut client: C, upstream: TcpStream, dest: Destination)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let counters = ctx.shared.sink.counters().clone();
    counters.tunnel();
    let mut upstream = Counted { inner: upstream, counters };
    let mut shutdown = ctx.shared.shutdown.clone();
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!("tunnel to {dest} ended: {e}");
            }
        }
        _ = super::stopped(&mut shutdown) => {}
    }
}

/// The upstream side of a tunnel, counting bytes as they pass (so a tunnel that ends in an error, or is
/// still open, is counted too).
struct Counted {
    inner: TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.counters.tunnel_bytes(0, n as u64);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.tunnel_bytes(*n as u64, 0);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
