//! The LAN link: TCP on the advertised port, streams and standalone messages on one listener.
//!
//! # Framing (LAN protocol version 1)
//!
//! Every connection begins with one byte from the side that connects. All integers big-endian.
//!
//! | size | field |
//! |---|---|
//! | 1 | kind: `0x01` stream, `0x02` message |
//! | 4 | (message only) `u32` length n, 0 ..= [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES) |
//! | n | (message only) the message |
//!
//! The accepting side then answers one byte:
//!
//! | byte | meaning |
//! |---|---|
//! | `0x00` | accepted: a stream is now the application's byte stream in both directions, until either side closes; a message is queued for the application |
//! | `0x01` | refused: the application's inbound queue is full (try later); the connection is closed |
//!
//! After a message's answer the accepting side closes the connection (one message per
//! connection). Anything else — an unknown kind, a length over the limit, a short read, or
//! silence longer than the handshake timeout — and it closes the connection without answering.
//! Connections still being read are bounded too: past the limit a new one is closed at once.
//!
//! Example: the message `hi` is `02 00 00 00 02 68 69`, answered by `00`; a stream opens with
//! `01`, answered by `00`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::link::{BoxedStream, Inbound, Incoming};
use crate::peer::{Address, Transport};

use crate::frame::message_frame;
pub use crate::frame::{ACCEPTED, KIND_MESSAGE, KIND_STREAM, REFUSED};

/// `fut`, or `None` once `ms` milliseconds have passed on `clock`.
pub(crate) async fn within<T>(
    clock: &dyn Clock,
    ms: u64,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        value = fut => Some(value),
        () = clock.sleep(Duration::from_millis(ms)) => None,
    }
}

/// Limits of the link.
#[derive(Debug, Clone)]
pub(crate) struct LinkSettings {
    /// Inbound messages and streams waiting for the application.
    pub(crate) incoming_capacity: usize,
    /// Connections being read (before they are handed over or answered).
    pub(crate) max_pending: usize,
    /// How long a connection may take to send its preamble / message, and to answer.
    pub(crate) handshake_ms: u64,
    /// The transport inbound items are labelled with (the LAN, or a Wi-Fi Direct group).
    pub(crate) transport: Transport,
}

/// Counters of the link.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    /// Inbound streams and messages refused because the queue was full.
    pub(crate) refused: AtomicU64,
    /// Inbound connections closed unanswered: malformed, too slow, or over the pending limit.
    pub(crate) dropped: AtomicU64,
}

/// Listeners on the advertised port and the dialing side.
pub(crate) struct TcpLink {
    port: u16,
    local: Vec<SocketAddr>,
    inbound: Arc<Mutex<Option<mpsc::Sender<Inbound>>>>,
    counters: Arc<LinkCounters>,
    tasks: Vec<JoinHandle<()>>,
}

impl TcpLink {
    /// Listens on every address of `addrs` (their ports are ignored: all share `port`, or the
    /// one the first bind picks when `port` is 0). Addresses after the first that cannot be
    /// bound are skipped (an IPv6 address still being checked for duplicates, say); the link
    /// fails only when none can be. Must run inside a tokio runtime: it spawns the accept loops.
    pub(crate) async fn bind(
        addrs: &[SocketAddr],
        port: u16,
        settings: &LinkSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<(TcpLink, Incoming)> {
        let mut listeners = Vec::new();
        let mut port = port;
        let mut first_error = None;
        for addr in addrs {
            let mut addr = *addr;
            addr.set_port(port);
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    if port == 0 {
                        port = listener
                            .local_addr()
                            .map_err(|e| Error::io("reading the listener's port", e))?
                            .port();
                    }
                    listeners.push(listener);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::io(format!("listening on {addr}"), e));
                }
            }
        }
        if listeners.is_empty() {
            return Err(first_error
                .unwrap_or_else(|| Error::WrongAddress("no address to listen on".to_string())));
        }
        let (tx, incoming) = Incoming::channel(settings.incoming_capacity);
        let inbound = Arc::new(Mutex::new(Some(tx)));
        let counters = Arc::new(LinkCounters::default());
        let pending = Arc::new(Semaphore::new(settings.max_pending.max(1)));
        let mut local = Vec::new();
        let mut tasks = Vec::new();
        for listener in listeners {
            if let Ok(addr) = listener.local_addr() {
                local.push(addr);
            }
            tasks.push(tokio::spawn(accept_loop(
                listener,
                clock.clone(),
                inbound.clone(),
                pending.clone(),
                counters.clone(),
                settings.handshake_ms,
                settings.transport,
            )));
        }
        Ok((
            TcpLink {
                port,
                local,
                inbound,
                counters,
                tasks,
            },
            incoming,
        ))
    }

    /// The port every listener shares.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The addresses listened on.
    pub(crate) fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    pub(crate) fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// Stops listening; `Incoming` ends once the connections being read are done.
    pub(crate) fn close(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let mut guard = self.inbound.lock().unwrap_or_else(|p| p.into_inner());
        guard.take();
    }
}

/// Dials `to` and says what the connection is for (`preamble`): the kind byte, and a message's
/// length and bytes. Returns the connection once the peer accepted it.
pub(crate) async fn dial(
    clock: &dyn Clock,
    handshake_ms: u64,
    to: &Address,
    preamble: &[u8],
) -> Result<TcpStream> {
    let Address::Socket(addr) = to else {
        return Err(Error::WrongAddress(format!("{to} is not an IP address")));
    };
    let unreachable = |what: &str| Error::Unreachable(format!("{addr}: {what}"));
    let mut stream = within(clock, handshake_ms, TcpStream::connect(addr))
        .await
        .ok_or_else(|| unreachable("connecting timed out"))?
        .map_err(|e| unreachable(&e.to_string()))?;
    // Streams carry interactive protocols (TLS, HTTP): no Nagle delays.
    stream
        .set_nodelay(true)
        .map_err(|e| Error::io("setting TCP_NODELAY", e))?;
    within(clock, handshake_ms, stream.write_all(preamble))
        .await
        .ok_or_else(|| unreachable("sending timed out"))?
        .map_err(|e| unreachable(&e.to_string()))?;
    let answer = within(clock, handshake_ms, stream.read_u8())
        .await
        .ok_or_else(|| unreachable("no answer in time"))?
        .map_err(|e| unreachable(&format!("no answer: {e}")))?;
    match answer {
        ACCEPTED => Ok(stream),
        REFUSED => Err(unreachable("refused: the peer's inbound queue is full")),
        _ => Err(Error::malformed("link answer", format!("{answer:#04x}"))),
    }
}

/// Opens a byte stream to `to`.
pub(crate) async fn connect(
    clock: &dyn Clock,
    handshake_ms: u64,
    to: &Address,
) -> Result<BoxedStream> {
    let stream = dial(clock, handshake_ms, to, &[KIND_STREAM]).await?;
    Ok(Box::new(stream))
}

/// Sends one standalone message to `to`; `Ok` once the peer queued it.
pub(crate) async fn send(
    clock: &dyn Clock,
    handshake_ms: u64,
    to: &Address,
    message: &[u8],
) -> Result<()> {
    let frame = message_frame(message)?;
    dial(clock, handshake_ms, to, &frame).await.map(drop)
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.close();
    }
}

async fn accept_loop(
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    inbound: Arc<Mutex<Option<mpsc::Sender<Inbound>>>>,
    pending: Arc<Semaphore>,
    counters: Arc<LinkCounters>,
    handshake_ms: u64,
    transport: Transport,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors, say: do not spin.
                clock.sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue; // dropping the stream closes it
        };
        let tx = {
            let guard = inbound.lock().unwrap_or_else(|p| p.into_inner());
            guard.clone()
        };
        let Some(tx) = tx else {
            return; // closed
        };
        let clock = clock.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve(
                stream,
                from,
                tx,
                &*clock,
                &counters,
                handshake_ms,
                transport,
            )
            .await;
        });
    }
}

/// Reads one connection's preamble and hands it over (or answers / closes).
async fn serve(
    mut stream: TcpStream,
    from: SocketAddr,
    tx: mpsc::Sender<Inbound>,
    clock: &dyn Clock,
    counters: &LinkCounters,
    handshake_ms: u64,
    transport: Transport,
) {
    let dropped = || {
        counters.dropped.fetch_add(1, Ordering::Relaxed);
    };
    let _ = stream.set_nodelay(true);
    let Some(Ok(kind)) = within(clock, handshake_ms, stream.read_u8()).await else {
        return dropped();
    };
    match kind {
        KIND_STREAM => {
            let Ok(permit) = tx.try_reserve() else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                let _ = within(clock, handshake_ms, stream.write_all(&[REFUSED])).await;
                return;
            };
            match within(clock, handshake_ms, stream.write_all(&[ACCEPTED])).await {
                Some(Ok(())) => permit.send(Inbound::Stream {
                    transport,
                    from: Address::Socket(from),
                    stream: Box::new(stream),
                }),
                _ => dropped(),
            }
        }
        KIND_MESSAGE => {
            let read = crate::frame::read_message_body(&mut stream);
            let Some(Ok(bytes)) = within(clock, handshake_ms, read).await else {
                return dropped();
            };
            let answer = match tx.try_send(Inbound::Message {
                transport,
                from: Address::Socket(from),
                bytes,
            }) {
                Ok(()) => ACCEPTED,
                Err(_) => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    REFUSED
                }
            };
            let _ = within(clock, handshake_ms, async {
                stream.write_all(&[answer]).await?;
                stream.shutdown().await
            })
            .await;
        }
        _ => dropped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokioClock;
    use crate::link::MAX_MESSAGE_BYTES;

    fn settings(capacity: usize) -> LinkSettings {
        LinkSettings {
            incoming_capacity: capacity,
            max_pending: 4,
            handshake_ms: 2_000,
            transport: Transport::Lan,
        }
    }

    const MS: u64 = 2_000;

    async fn link(capacity: usize) -> (TcpLink, Incoming, Address) {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let (link, incoming) = TcpLink::bind(
            &["127.0.0.1:0".parse().unwrap()],
            0,
            &settings(capacity),
            clock,
        )
        .await
        .unwrap();
        let addr = Address::Socket(SocketAddr::new([127, 0, 0, 1].into(), link.port()));
        (link, incoming, addr)
    }

    #[test]
    fn message_frame_snapshot() {
        assert_eq!(
            message_frame(b"hi").unwrap(),
            [0x02, 0x00, 0x00, 0x00, 0x02, 0x68, 0x69]
        );
        assert_eq!(message_frame(b"").unwrap(), [0x02, 0, 0, 0, 0]);
        assert!(matches!(
            message_frame(&vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(
            message_frame(&vec![0; MAX_MESSAGE_BYTES]).unwrap().len(),
            MAX_MESSAGE_BYTES + 5
        );
    }

    #[tokio::test]
    async fn streams_and_messages_arrive() {
        let (_link, mut incoming, addr) = link(4).await;
        let mut out = connect(&TokioClock::new(), MS, &addr).await.unwrap();
        let Some(Inbound::Stream {
            mut stream,
            transport,
            ..
        }) = incoming.next().await
        else {
            panic!("no stream")
        };
        assert_eq!(transport, Transport::Lan);
        out.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        stream.write_all(b"pong").await.unwrap();
        out.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");

        send(&TokioClock::new(), MS, &addr, b"hello").await.unwrap();
        let Some(Inbound::Message { bytes, .. }) = incoming.next().await else {
            panic!("no message")
        };
        assert_eq!(bytes, b"hello");
        assert!(matches!(
            send(
                &TokioClock::new(),
                MS,
                &addr,
                &vec![0; MAX_MESSAGE_BYTES + 1]
            )
            .await,
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            connect(&TokioClock::new(), MS, &Address::Sim(1)).await,
            Err(Error::WrongAddress(_))
        ));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_garbage_is_closed() {
        let (a, mut incoming, addr) = link(1).await;
        send(&TokioClock::new(), MS, &addr, b"one").await.unwrap();
        let refused = send(&TokioClock::new(), MS, &addr, b"two")
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), crate::ErrorKind::Transient, "{refused}");
        assert!(connect(&TokioClock::new(), MS, &addr).await.is_err());
        assert_eq!(a.counters().refused.load(Ordering::Relaxed), 2);
        assert!(incoming.try_next().is_some());

        // An unknown kind, and a length over the limit: closed without an answer.
        let Address::Socket(sa) = addr else {
            unreachable!()
        };
        for preamble in [vec![0x7f], vec![KIND_MESSAGE, 0xff, 0xff, 0xff, 0xff]] {
            let mut raw = TcpStream::connect(sa).await.unwrap();
            raw.write_all(&preamble).await.unwrap();
            let mut rest = Vec::new();
            raw.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
        assert_eq!(a.counters().dropped.load(Ordering::Relaxed), 2);
        assert!(incoming.try_next().is_none());
    }

    #[tokio::test]
    async fn closing_ends_incoming() {
        let (mut a, mut incoming, addr) = link(4).await;
        a.close();
        assert!(incoming.next().await.is_none());
        assert!(send(&TokioClock::new(), MS, &addr, b"x").await.is_err());
    }
}
