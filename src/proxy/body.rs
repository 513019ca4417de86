//! Bodies: the boxed type every response uses, and the tap that copies body frames to an inspection task
//! while they are forwarded.
//!
//! Tap, don't transform: [`TapBody`] hands each data frame on unchanged; a cheap `Bytes` clone goes over a
//! bounded queue to the message's inspection task. Forwarding never waits: when the queue is full, the
//! budget is spent or the task is gone, the tap stops copying and counts the rest as unscanned. At most
//! `max_scan_bytes` of body are ever queued per message, so memory per message is bounded by the budget.
//!
//! Why a task per message and not an inline call in `poll_frame`: the forwarding cost of the tap is one
//! reference-count increment and a non-blocking channel send, whatever the rules cost, so a slow rule or
//! a large budget can never delay a token of a streamed reply; the task also yields between chunks so
//! scanning shares the runtime's workers fairly with forwarding.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::detect::Detection;
use crate::findings::{Counters, Finding, FindingSink, Origin};
use crate::inspect::MessageInspector;

/// The body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Body chunks queued per message before the tap gives up on inspecting it. Chunks, not bytes: the
/// bytes are bounded by the budget; this only bounds how far the scanner may lag (SSE sends many small
/// chunks).
pub const TAP_QUEUE_CHUNKS: usize = 1024;

/// A whole, small body (error texts).
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never: Infallible| match never {}).boxed()
}

/// An empty body (CONNECT's 200).
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never: Infallible| match never {}).boxed()
}

/// The forwarding half of a tap: lives in the body, never blocks.
#[derive(Debug)]
pub struct Tap {
    tx: Option<mpsc::Sender<Bytes>>,
    wants: Arc<AtomicBool>,
    room: usize,
    counters: Arc<Counters>,
}

impl Tap {
    /// Starts the inspection task for one message and returns its tap. `make` builds the inspector on the
    /// task (so even the head scan stays off the forwarding path); `guard` keeps shutdown waiting until
    /// the task has written its findings.
    pub fn spawn<G: Send + 'static>(
        make: impl FnOnce() -> MessageInspector + Send + 'static,
        origin: Origin,
        budget: usize,
        sink: FindingSink,
        guard: G,
    ) -> Tap {
        let (tx, mut rx) = mpsc::channel::<Bytes>(TAP_QUEUE_CHUNKS);
        let wants = Arc::new(AtomicBool::new(true));
        let task_wants = wants.clone();
        let counters = sink.counters().clone();
        counters.inspection_started();
        tokio::spawn(async move {
            let _guard = guard;
            let mut inspector = make();
            emit(&sink, &origin, inspector.take_detections());
            while let Some(chunk) = rx.recv().await {
                inspector.feed_body(&chunk);
                if !inspector.wants_more() {
                    task_wants.store(false, Ordering::Relaxed);
                }
                emit(&sink, &origin, inspector.take_detections());
                tokio::task::yield_now().await;
            }
            inspector.finish();
            emit(&sink, &origin, inspector.take_detections());
            let stats = inspector.stats();
            sink.counters().scan(stats.scanned, stats.unscanned);
            sink.counters().inspection_finished();
        });
        Tap { tx: Some(tx), wants, room: budget, counters }
    }

    /// Copies one forwarded chunk to the inspector, or counts it unscanned.
    pub fn data(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            if self.room > 0 && self.wants.load(Ordering::Relaxed) {
                // Only what the budget can still use is queued; the inspector counts the remainder.
                let take = chunk.slice(..chunk.len().min(self.room));
                let rest = (chunk.len() - take.len()) as u64;
                let len = take.len();
                if tx.try_send(take).is_ok() {
                    self.room -= len;
                    self.counters.scan(0, rest);
                    return;
                }
            }
            // Budget spent, scanner too far behind, or task gone: stop copying for the rest of the message.
            self.tx = None;
        }
        self.counters.scan(0, chunk.len() as u64);
    }
}

fn emit(sink: &FindingSink, origin: &Origin, found: Vec<Detection>) {
    for d in found {
        sink.record(Finding::new(&d, origin, OffsetDateTime::now_utc()));
    }
}

/// A body forwarded frame by frame with a [`Tap`] beside it. Dropping it (end of stream, error, or the
/// peer going away) closes the tap, which lets the inspector finish the message.
#[derive(Debug)]
pub struct TapBody<B> {
    inner: B,
    tap: Option<Tap>,
}

impl<B> TapBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, tap: Tap) -> TapBody<B> {
        TapBody { inner, tap: Some(tap) }
    }
}

impl<B> Body for TapBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(tap), Some(data)) = (&mut this.tap, f.data_ref()) {
                    tap.data(data);
                }
            }
            Some(Err(_)) | None => this.tap = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Destination, Direction};
    use crate::findings::{FindingsWriter, LogStore, WriterOptions};
    use http::HeaderMap;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl LogStore for Memory {
        fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().extend_from_slice(line);
            Ok(())
        }
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `chunks` through a tapped body with `budget`; returns what came out, the log and the counters.
    async fn run(chunks: &[&'static [u8]], budget: usize) -> (Vec<u8>, String, crate::findings::CounterSnapshot) {
        let mem = Memory::default();
        let counters = Arc::new(Counters::default());
        let writer = FindingsWriter::start(
            Box::new(mem.clone()),
            WriterOptions { dedup_window: Duration::ZERO },
            counters.clone(),
        )
        .unwrap();
        let detector = crate::detect::shared_default();
        let dest = Destination::new("up.example", 80);
        let origin = Origin {
            direction: Direction::Outbound,
            protocol: "http",
            source: [127, 0, 0, 1].into(),
            dest: dest.clone(),
        };
        let (guard, mut drained) = mpsc::channel::<()>(1);
        let tap = Tap::spawn(
            move || MessageInspector::request(&detector, dest, &http::Method::POST, "/", &HeaderMap::new(), budget),
            origin,
            budget,
            writer.sink(),
            guard,
        );
        let frames: Vec<Bytes> = chunks.iter().map(|c| Bytes::from_static(c)).collect();
        let inner = Frames(frames.into());
        let out = TapBody::new(inner, tap).collect().await.unwrap().to_bytes().to_vec();
        // The inspection task drops its guard when it is done.
        assert!(drained.recv().await.is_none());
        writer.close();
        let log = String::from_utf8(mem.0.lock().unwrap().clone()).unwrap();
        (out, log, counters.snapshot())
    }

    /// A body of the given frames.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn frames_pass_unchanged_and_a_split_secret_is_found() {
        let (out, log, snap) = run(&[b"key AKIAZ7QW", b"3ERTY5UIOPLK", b" end"], 4096).await;
        assert_eq!(out, b"key AKIAZ7QW3ERTY5UIOPLK end");
        assert!(log.contains("aws_access_key"), "{log}");
        assert!(!log.contains("AKIAZ7QW3ERTY5UIOPLK"));
        assert_eq!((snap.bytes_unscanned, snap.messages_inspected, snap.inspections_in_flight), (0, 1, 0));
    }

    #[tokio::test]
    async fn past_the_budget_nothing_is_copied_and_all_is_counted() {
        let filler: &'static [u8] = &[b'x'; 3000];
        let (out, log, snap) = run(&[filler, b"AKIAZ7QW3ERTY5UIOPLK"], 1024).await;
        assert_eq!(out.len(), 3020, "everything forwarded");
        assert!(log.is_empty(), "{log}");
        assert!(snap.bytes_scanned <= 1024, "{snap:?}");
        assert!(snap.bytes_unscanned >= 3020 - 1024, "{snap:?}");
    }
}
