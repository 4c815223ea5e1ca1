//! Streams between simulated nodes: tokio [`AsyncRead`] + [`AsyncWrite`] over the world's
//! radio model.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::engine::Shared;
use crate::error::{Error, Result};
use crate::peer::Address;

/// One end of a stream between two simulated nodes.
///
/// Bytes written are queued (at most [`WorldConfig::send_buffer`](super::WorldConfig) per
/// end: writes wait beyond it) and cross the contact in segments of at most `mtu` bytes, at the
/// link's bandwidth and latency, within the receiver's window. Reads return what arrived;
/// `Ok(0)` (end of stream) once the other end shut down or dropped its end and everything it
/// wrote arrived. When the two nodes lose contact the stream breaks: reads return what already
/// arrived, then [`io::ErrorKind::ConnectionReset`]; writes fail at once with the same kind.
/// Dropping an end shuts its writing down (what it wrote still arrives) and discards what
/// arrives for it.
pub struct SimStream {
    shared: Arc<Shared>,
    id: u64,
    side: usize,
    peer: u32,
}

impl std::fmt::Debug for SimStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStream")
            .field("id", &self.id)
            .field("opener", &(self.side == 0))
            .field("peer", &self.peer)
            .finish()
    }
}

impl SimStream {
    pub(crate) fn new(shared: Arc<Shared>, id: u64, side: usize, peer: u32) -> SimStream {
        SimStream {
            shared,
            id,
            side,
            peer,
        }
    }

    /// The node at the other end.
    pub fn peer(&self) -> Address {
        Address::Sim(self.peer)
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared
            .with(|e| e.stream_read(this.id, this.side, buf, cx))
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.shared
            .with(|e| e.stream_write(this.id, this.side, data, cx))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Poll::Ready(this.shared.with(|e| e.stream_flush(this.id)))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.with(|e| e.stream_shutdown(this.id, this.side));
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        let (id, side) = (self.id, self.side);
        self.shared.with(|e| e.stream_drop(id, side));
    }
}

/// A stream being opened: resolves once the other node accepted it (one round trip).
pub(crate) struct Opening {
    stream: Option<SimStream>,
}

impl Opening {
    pub(crate) fn new(stream: SimStream) -> Opening {
        Opening {
            stream: Some(stream),
        }
    }
}

impl Future for Opening {
    type Output = Result<SimStream>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<SimStream>> {
        let this = self.get_mut();
        let Some(stream) = &this.stream else {
            return Poll::Ready(Err(Error::Closed));
        };
        match stream.shared.with(|e| e.poll_open(stream.id, cx)) {
            Poll::Ready(Ok(())) => match this.stream.take() {
                Some(s) => Poll::Ready(Ok(s)),
                None => Poll::Ready(Err(Error::Closed)),
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}
