//! WebSocket through the proxy (HTTP/1.1 Upgrade, plain and inside an intercepted tunnel): the exchange
//! keeps `Upgrade`/`Connection` on a WebSocket request, and after the upstream's `101` the two upgraded
//! streams are bridged here, byte for byte, with a tap per direction into a [`WsInspector`].
//!
//! ```text
//! client ──read──▶ write upstream ──▶ copy (Bytes) ─▶ queue ─▶ task: WsInspector(Outbound) ─▶ findings
//! upstream ─read─▶ write client   ──▶ copy (Bytes) ─▶ queue ─▶ task: WsInspector(Inbound)  ─▶ findings
//! ```
//!
//! Forwarding never waits on inspection: each read is written on at once, and only then is a reference to
//! the same bytes queued (non-blocking) for the direction's inspection task. When the queue is full or the
//! inspector stopped, that direction is no longer inspected (frames cannot be picked up again mid-stream)
//! and the rest is counted as unscanned. A protocol error in either direction's frames closes this
//! connection (both streams) and nothing else. An extension other than permessage-deflate in the `101`
//! means the frames cannot be decoded: the connection is forwarded uninspected and counted.

use std::io;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, SEC_WEBSOCKET_EXTENSIONS, UPGRADE};
use http::{HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::body::TAP_QUEUE_CHUNKS;
use super::error::chain;
use super::{stopped, ConnCtx};
use crate::detect::{Destination, Detection, Direction};
use crate::findings::{Finding, FindingSink, Origin};
use crate::inspect::ws::DeflateParams;
use crate::inspect::WsInspector;

/// Bytes read per step on each side of the bridge.
const READ_BYTES: usize = 16 * 1024;

/// The `Upgrade` value when `headers` ask for a WebSocket (`Upgrade: websocket` and a `Connection` naming
/// `upgrade`). Read before the hop-by-hop headers are stripped.
pub fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(UPGRADE)?;
    let websocket = upgrade.to_str().ok()?.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket"));
    let connection = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    (websocket && connection).then(|| upgrade.clone())
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade);
}

/// The permessage-deflate parameters the `101` agreed: `Ok(None)` for none, `Err` when the frames cannot
/// be decoded (another extension, a bad parameter).
pub fn deflate_params(headers: &HeaderMap) -> Result<Option<DeflateParams>, String> {
    let mut joined = String::new();
    for v in headers.get_all(SEC_WEBSOCKET_EXTENSIONS) {
        let v = v.to_str().map_err(|_| "a Sec-WebSocket-Extensions value that is not text".to_owned())?;
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(v);
    }
    DeflateParams::from_response_header(&joined).map_err(|e| e.to_string())
}

/// After the `101` went to the client: waits for both upgrades and bridges them on their own task.
pub fn spawn_bridge(
    ctx: &ConnCtx,
    dest: Destination,
    client: OnUpgrade,
    upstream: OnUpgrade,
    deflate: Result<Option<DeflateParams>, String>,
) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!("WebSocket to {dest}: upgrade failed: {}", chain(&e));
                return;
            }
        };
        bridge(ctx, dest, TokioIo::new(client), TokioIo::new(upstream), deflate).await;
    });
}

/// Copies both ways until both sides closed, either side failed, a protocol error was found, or the proxy
/// shuts down.
pub async fn bridge<C, U>(
    ctx: ConnCtx,
    dest: Destination,
    client: C,
    upstream: U,
    deflate: Result<Option<DeflateParams>, String>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = ctx.guard.clone();
    let (failed_tx, mut failed) = watch::channel(false);
    let params = match deflate {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::info!("WebSocket to {dest}: not inspected: {e}");
            None
        }
    };
    let tap = |direction| match &params {
        Some(p) => WsTap::spawn(&ctx, dest.clone(), direction, p.as_ref(), failed_tx.clone()),
        None => WsTap::off(&ctx),
    };
    let (up_tap, down_tap) = (tap(Direction::Outbound), tap(Direction::Inbound));
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    let up = pump(cr, uw, up_tap);
    let down = pump(ur, cw, down_tap);
    let mut shutdown = ctx.shared.shutdown.clone();
    tokio::select! {
        // Like `copy_bidirectional`: done when both sides closed, or at the first error on either.
        r = async { tokio::try_join!(up, down) } => {
            if let Err(e) = r {
                tracing::debug!("WebSocket to {dest} ended: {e}");
            }
        }
        _ = failed.wait_for(|f| *f) => tracing::info!("WebSocket to {dest}: closed after a protocol error"),
        _ = stopped(&mut shutdown) => {}
    }
}

/// One direction: read, write on at once, then hand the same bytes to the tap.
/// Its bytes are counted as scanned or unscanned by the tap (the tunnel counters are for blind tunnels).
async fn pump<R, W>(mut from: R, mut to: W, mut tap: WsTap) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    loop {
        buf.reserve(READ_BYTES);
        if from.read_buf(&mut buf).await? == 0 {
            // Half-close passes through.
            return to.shutdown().await;
        }
        let chunk = buf.split().freeze();
        to.write_all(&chunk).await?;
        // A TLS stream holds written records until flushed.
        to.flush().await?;
        tap.data(chunk);
    }
}

/// The forwarding half of one direction's inspection: never blocks.
struct WsTap {
    tx: Option<mpsc::Sender<Bytes>>,
    sink: FindingSink,
}

impl WsTap {
    /// Starts the direction's inspection task.
    fn spawn(
        ctx: &ConnCtx,
        dest: Destination,
        direction: Direction,
        params: Option<&DeflateParams>,
        failed: watch::Sender<bool>,
    ) -> WsTap {
        let (tx, mut rx) = mpsc::channel::<Bytes>(TAP_QUEUE_CHUNKS);
        let sink = ctx.shared.sink.clone();
        let origin = Origin { direction, protocol: ctx.protocol, source: ctx.client_ip, dest: dest.clone() };
        let mut inspector =
            WsInspector::new(&ctx.shared.detector(), dest, direction, params, ctx.shared.settings.max_scan_bytes);
        let (task_sink, guard) = (sink.clone(), ctx.guard.clone());
        sink.counters().inspection_started();
        tokio::spawn(async move {
            let _guard = guard;
            while let Some(chunk) = rx.recv().await {
                let result = inspector.feed(&chunk);
                emit(&task_sink, &origin, inspector.take_detections());
                if let Err(e) = result {
                    tracing::info!("WebSocket to {} ({:?}): {e}", origin.dest, origin.direction);
                    let _ = failed.send(true);
                    break;
                }
                tokio::task::yield_now().await;
            }
            rx.close();
            let mut rest = 0u64;
            while let Ok(chunk) = rx.try_recv() {
                rest += chunk.len() as u64;
            }
            inspector.finish();
            emit(&task_sink, &origin, inspector.take_detections());
            let stats = inspector.stats();
            task_sink.counters().scan(stats.scanned, stats.unscanned + rest);
            task_sink.counters().inspection_finished();
        });
        WsTap { tx: Some(tx), sink }
    }

    /// A tap that inspects nothing (the frames cannot be decoded) and counts everything unscanned.
    fn off(ctx: &ConnCtx) -> WsTap {
        WsTap { tx: None, sink: ctx.shared.sink.clone() }
    }

    fn data(&mut self, chunk: Bytes) {
        let len = chunk.len() as u64;
        if let Some(tx) = &self.tx {
            if tx.try_send(chunk).is_ok() {
                return;
            }
            // Inspector too far behind, or stopped: frames cannot be picked up mid-stream again.
            self.tx = None;
        }
        self.sink.counters().scan(0, len);
    }
}

fn emit(sink: &FindingSink, origin: &Origin, found: Vec<Detection>) {
    for d in found {
        sink.record(Finding::new(&d, origin, OffsetDateTime::now_utc()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_a_websocket_upgrade_is_kept() {
        let ws = headers(&[("upgrade", "WebSocket"), ("connection", "keep-alive, Upgrade")]);
        assert_eq!(requested(&ws).unwrap(), "WebSocket");
        assert!(requested(&headers(&[("upgrade", "websocket")])).is_none(), "Connection must name it");
        assert!(requested(&headers(&[("upgrade", "h2c"), ("connection", "upgrade")])).is_none());
        let mut h = HeaderMap::new();
        restore(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(
            (&h["connection"], &h["upgrade"]),
            (&HeaderValue::from_static("upgrade"), &HeaderValue::from_static("websocket"))
        );
    }

    #[test]
    fn extensions_of_the_101() {
        assert_eq!(deflate_params(&HeaderMap::new()), Ok(None));
        let h = headers(&[("sec-websocket-extensions", "permessage-deflate; client_no_context_takeover")]);
        assert!(deflate_params(&h).unwrap().unwrap().client_no_context_takeover);
        assert!(deflate_params(&headers(&[("sec-websocket-extensions", "x-webkit-deflate-frame")])).is_err());
    }
}
