//! Peek, then rewind: read the first bytes a client sends inside a CONNECT tunnel to decide how to serve
//! it, then hand on a stream that yields those bytes again before the rest.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The first byte of a TLS handshake record (a ClientHello starts with `16 03`).
pub const TLS_HANDSHAKE: u8 = 0x16;

/// A stream whose first reads return `prefix`, then read from `inner`; writes go straight to `inner`.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner` with `prefix` put back in front of it.
    pub fn new(prefix: Bytes, inner: S) -> Rewind<S> {
        Rewind { prefix, inner }
    }
}

/// What the client sent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS handshake record: can be intercepted.
    Tls,
    /// Something else (plain HTTP, SSH, ...): tunnel it blind.
    Other,
    /// Nothing within the wait (a server-speaks-first protocol), or the client closed: tunnel it blind.
    Silent,
}

/// Reads what the client sends first, waiting at most `wait`, and returns the classification with a
/// stream that replays it.
pub async fn peek<S>(mut stream: S, wait: Duration) -> (FirstBytes, Rewind<S>)
where
    S: AsyncRead + Unpin,
{
    let mut buf = [0u8; 8];
    let kind = match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => {
            let first = Bytes::copy_from_slice(&buf[..n]);
            let kind = if first[0] == TLS_HANDSHAKE { FirstBytes::Tls } else { FirstBytes::Other };
            return (kind, Rewind::new(first, stream));
        }
        _ => FirstBytes::Silent,
    };
    (kind, Rewind::new(Bytes::new(), stream))
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn classify(sent: &[u8]) -> (FirstBytes, Vec<u8>) {
        let (mut peer, ours) = tokio::io::duplex(64);
        peer.write_all(sent).await.unwrap();
        drop(peer);
        let (kind, mut s) = peek(ours, Duration::from_millis(200)).await;
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        (kind, all)
    }

    #[tokio::test]
    async fn tls_other_and_silence_are_told_apart_and_nothing_is_lost() {
        let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(classify(&hello).await, (FirstBytes::Tls, hello.to_vec()));
        let http = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(classify(http).await, (FirstBytes::Other, http.to_vec()));
        assert_eq!(classify(b"").await, (FirstBytes::Silent, Vec::new()));
    }

    #[tokio::test]
    async fn a_silent_client_is_not_waited_for_longer_than_the_limit() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let (kind, mut s) = peek(ours, Duration::from_millis(50)).await;
        assert_eq!(kind, FirstBytes::Silent);
        // Bytes sent later still arrive.
        peer.write_all(b"late").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"late");
    }
}
