//! A connection whose writes must make progress.
//!
//! A streamed reply is written as the model decodes. A client that stops
//! reading (but keeps the connection open) fills the kernel's buffers; from
//! then on every write waits. Without a limit, that connection would hold its
//! place under `--max-connections` (and its engine slot) for good.
//! [`WriteDeadline`] fails a write or flush that has waited `limit` with no
//! byte taken by the client: hyper then ends the connection, the reply stream
//! is dropped, and the engine frees the slot on its next step.
//!
//! Any progress (one byte written) starts the wait again, so a slow reader
//! that keeps reading is never cut off; only a stalled one is.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner` with a limit on how long a write may wait for the reader.
pub(super) struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Running while writes wait; `None` after any write makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub(super) fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Pass a finished write through (and forget the wait); while a write
    /// waits, keep one timer running and fail once it fires.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let timer = (self.stalled).get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {:.0} s (the server's --write-timeout)",
                    limit.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(200);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_write_the_reader_never_takes_fails_after_the_limit() {
        runtime().block_on(async {
            let (server, _client) = tokio::io::duplex(64);
            let mut conn = WriteDeadline::new(server, LIMIT);
            let started = std::time::Instant::now();
            let err = conn.write_all(&[7u8; 1024]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            assert!(err.to_string().contains("--write-timeout"), "{err}");
            let waited = started.elapsed();
            assert!(waited >= LIMIT && waited < 10 * LIMIT, "{waited:?}");
        });
    }

    #[test]
    fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        runtime().block_on(async {
            let (server, mut client) = tokio::io::duplex(64);
            let mut conn = WriteDeadline::new(server, LIMIT);
            // Reads 64 bytes every LIMIT / 4: the whole write takes about 4 x LIMIT.
            let reader = async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                while got.len() < 1024 {
                    tokio::time::sleep(LIMIT / 4).await;
                    let n = client.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                got
            };
            let writer = async move { conn.write_all(&[7u8; 1024]).await };
            let (got, written) = tokio::join!(reader, writer);
            written.unwrap();
            assert_eq!(got, vec![7u8; 1024]);
        });
    }
}
