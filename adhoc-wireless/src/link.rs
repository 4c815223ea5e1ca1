//! The link seam: standalone messages and byte streams to a peer's address.
//!
//! A stream is a tokio [`AsyncRead`] + [`AsyncWrite`] (the traits only: the core runs no
//! runtime), so a program can run anything over it — the device hub runs its mutual-TLS HTTP,
//! and with it CouchDB replication, over a stream from any radio.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::peer::{Address, Advert, Transport};

/// The largest standalone message a link must carry (a plugin may allow less: see
/// [`Link::max_message_bytes`]).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A bidirectional byte stream to a peer.
pub trait LinkStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> LinkStream for T {}

/// A stream of any transport.
pub type BoxedStream = Box<dyn LinkStream>;

/// Something a peer opened or sent to us.
#[non_exhaustive]
pub enum Inbound {
    /// A standalone message.
    Message {
        /// The transport it came on.
        transport: Transport,
        /// Where it came from.
        from: Address,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A stream a peer opened.
    Stream {
        /// The transport it came on.
        transport: Transport,
        /// Where it came from.
        from: Address,
        /// The stream.
        stream: BoxedStream,
    },
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbound::Message {
                transport,
                from,
                bytes,
            } => write!(
                f,
                "Message({} from {from}, {} bytes)",
                transport.name(),
                bytes.len()
            ),
            Inbound::Stream {
                transport, from, ..
            } => write!(f, "Stream({} from {from})", transport.name()),
        }
    }
}

/// The receiving end of what peers send: one per link, taken once with [`Link::incoming`].
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Inbound>,
}

impl Incoming {
    /// A receiver and the sender a plugin feeds; at most `capacity` inbound items wait (a plugin
    /// refuses or drops more, so a peer cannot make us buffer without bound).
    pub fn channel(capacity: usize) -> (mpsc::Sender<Inbound>, Incoming) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, Incoming { rx })
    }

    /// The next inbound message or stream; `None` once the link is closed.
    pub async fn next(&mut self) -> Option<Inbound> {
        self.rx.recv().await
    }

    /// One that is waiting, if any (never blocks).
    pub fn try_next(&mut self) -> Option<Inbound> {
        self.rx.try_recv().ok()
    }
}

/// Messages and streams over one transport.
#[async_trait::async_trait]
pub trait Link: Send + Sync {
    /// The transport.
    fn transport(&self) -> Transport;

    /// The largest standalone message this link carries.
    fn max_message_bytes(&self) -> usize {
        MAX_MESSAGE_BYTES
    }

    /// Sends a standalone message (at most [`max_message_bytes`](Self::max_message_bytes)).
    /// Delivery is not confirmed: use a stream for anything that must arrive.
    async fn send(&self, to: &Address, message: &[u8]) -> Result<()>;

    /// Opens a byte stream to `to`.
    async fn connect(&self, to: &Address) -> Result<BoxedStream>;

    /// What peers send and open, for one receiver: the first call gets it, later calls `None`.
    fn incoming(&self) -> Option<Incoming>;
}

/// A radio: discovery, links, and what it advertises about us.
pub trait Plugin: crate::Discovery + Link {
    /// Advertises `advert` from now on (replacing the previous one).
    fn advertise(&self, advert: Advert) -> Result<()>;
}
