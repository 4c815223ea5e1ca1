//! The link: L2CAP LE connection-oriented channels on the advertised PSM, framed as the
//! [`wire`](super::wire) module documents. The kernel does the credit-based flow control (a
//! writer waits while the peer has granted no credits: back-pressure end to end) and segments
//! writes into SDUs of the peer's MTU (bluer's `Stream` writes at most one MTU at a time).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bluer::l2cap::{Socket, SocketAddr, Stream, StreamListener};
use bluer::{Address as BtAddress, AddressType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use crate::error::{Error, Result};
use crate::frame::message_frame;
use crate::link::{BoxedStream, Inbound};
use crate::peer::{Address, Advert, Transport};

use super::Shared;
use super::wire::{
    ACCEPTED, KIND_ADVERT, KIND_MESSAGE, KIND_STREAM, REFUSED, advert_answer, advert_answer_len,
};

/// `fut`, or `None` once `ms` milliseconds have passed on the plugin's clock.
pub(super) async fn within<T>(
    shared: &Shared,
    ms: u64,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        value = fut => Some(value),
        () = shared.clock.sleep(Duration::from_millis(ms)) => None,
    }
}

/// Listens on `psm` (0: a free one the kernel picks) of the adapter's LE address.
pub(super) fn listen(local: BtAddress, psm: u16, mtu: u16) -> Result<StreamListener> {
    let io = |what: &str, e| Error::io(format!("L2CAP listener: {what}"), e);
    let socket = Socket::new_stream().map_err(|e| io("socket", e))?;
    socket
        .bind(SocketAddr::new(local, AddressType::LePublic, psm))
        .map_err(|e| io(&format!("binding PSM {psm:#06x}"), e))?;
    socket
        .set_recv_mtu(mtu)
        .map_err(|e| io("setting the MTU", e))?;
    socket.listen(16).map_err(|e| io("listen", e))
}

/// The PSM a listener got.
pub(super) fn bound_psm(listener: &StreamListener) -> Result<u16> {
    listener
        .as_ref()
        .local_addr()
        .map(|a| a.psm)
        .map_err(|e| Error::io("reading the L2CAP listener's PSM", e))
}

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: StreamListener) {
    let pending = Arc::new(Semaphore::new(shared.config.max_pending_inbound.max(1)));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                if shared.closed.load(Ordering::SeqCst) {
                    return;
                }
                shared.clock.sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            shared
                .counters
                .inbound_dropped
                .fetch_add(1, Ordering::Relaxed);
            continue; // dropping the stream closes the channel
        };
        let tx = {
            let guard = shared.inbound.lock().unwrap_or_else(|p| p.into_inner());
            guard.clone()
        };
        let Some(tx) = tx else {
            return; // closed
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve(&shared, stream, Address::Ble(from.addr.0), tx).await;
        });
    }
}

/// Reads what one inbound channel is for and answers it (or hands it over).
async fn serve(shared: &Shared, mut stream: Stream, from: Address, tx: mpsc::Sender<Inbound>) {
    let ms = shared.config.handshake_timeout_ms;
    let counters = &shared.counters;
    let dropped = || {
        counters.inbound_dropped.fetch_add(1, Ordering::Relaxed);
    };
    let Some(Ok(kind)) = within(shared, ms, stream.read_u8()).await else {
        return dropped();
    };
    match kind {
        KIND_STREAM => {
            let Ok(permit) = tx.try_reserve() else {
                counters.inbound_refused.fetch_add(1, Ordering::Relaxed);
                let _ = within(shared, ms, stream.write_all(&[REFUSED])).await;
                return linger(shared, stream).await;
            };
            match within(shared, ms, stream.write_all(&[ACCEPTED])).await {
                Some(Ok(())) => permit.send(Inbound::Stream {
                    transport: Transport::Ble,
                    from,
                    stream: Box::new(stream),
                }),
                _ => dropped(),
            }
        }
        KIND_MESSAGE => {
            let read = crate::frame::read_message_body(&mut stream);
            let Some(Ok(bytes)) = within(shared, ms, read).await else {
                return dropped();
            };
            let answer = match tx.try_send(Inbound::Message {
                transport: Transport::Ble,
                from,
                bytes,
            }) {
                Ok(()) => ACCEPTED,
                Err(_) => {
                    counters.inbound_refused.fetch_add(1, Ordering::Relaxed);
                    REFUSED
                }
            };
            let _ = within(shared, ms, stream.write_all(&[answer])).await;
            linger(shared, stream).await;
        }
        KIND_ADVERT => {
            let current = {
                let guard = shared.advert.lock().unwrap_or_else(|p| p.into_inner());
                guard.as_ref().map(|(encoded, _)| encoded.clone())
            };
            let answer = match current.as_deref().map(advert_answer) {
                Some(Ok(answer)) => answer,
                _ => vec![REFUSED],
            };
            counters.adverts_served.fetch_add(1, Ordering::Relaxed);
            let _ = within(shared, ms, stream.write_all(&answer)).await;
            linger(shared, stream).await;
        }
        _ => dropped(),
    }
}

/// Closing a channel drops what the kernel has not sent yet, so the answering side waits
/// (bounded) for the asking side to close first, which it does once it has read the answer.
async fn linger(shared: &Shared, mut stream: Stream) {
    let mut buf = [0u8; 64];
    let _ = within(shared, shared.config.handshake_timeout_ms, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The Bluetooth address in `to`.
pub(super) fn ble_address(to: &Address) -> Result<[u8; 6]> {
    match to {
        Address::Ble(a) => Ok(*a),
        other => Err(Error::WrongAddress(format!(
            "{other} is not a Bluetooth address"
        ))),
    }
}

/// How a channel refused by the peer's L2CAP layer is described (no listener on the PSM, or
/// the channel id we picked is one it still holds).
const REFUSED_BY_PEER: &str = "channel refused by the peer";

/// Drops the LE link to `to`, and with it every channel on it, on both sides (bounded).
async fn reset_link(shared: &Shared, to: [u8; 6]) {
    if let Ok(device) = shared.adapter.device(BtAddress(to)) {
        let _ = within(
            shared,
            shared.config.handshake_timeout_ms,
            device.disconnect(),
        )
        .await;
    }
}

/// Waits until a channel `connect` returned is connected in fact. The socket can report
/// itself writable (so `connect` returns) before the peer's answer has arrived — its readiness
/// from before the connect is still cached — and a write then fails with "not connected". The
/// send MTU is known once the channel is up; the peer address stays readable while it is being
/// set up and not after it failed.
async fn connected(shared: &Shared, stream: &Stream) -> std::result::Result<(), String> {
    let socket = stream.as_ref();
    loop {
        match socket.send_mtu() {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() != std::io::ErrorKind::NotConnected => return Err(e.to_string()),
            Err(_) => {}
        }
        if let Err(e) = stream.peer_addr() {
            return Err(format!("the channel failed while being set up ({e})"));
        }
        shared.clock.sleep(Duration::from_millis(5)).await;
    }
}

/// A random wait in `0..ms` milliseconds.
pub(super) fn jitter(ms: u64) -> u64 {
    use std::hash::BuildHasher;
    // std's RandomState is seeded from the OS and differs for every instance.
    std::collections::hash_map::RandomState::new().hash_one(ms) % ms.max(1)
}

/// Opens a channel to `to`'s listener, retrying a failed attempt (the radio is busy, the
/// peer was between advertisements), and says what it is for (`preamble`).
///
/// Every attempt waits a random moment first: two devices that hear each other at the same
/// instant would otherwise dial each other at the same instant, and a controller stops
/// advertising while it initiates a connection, so both attempts fail (and would again, in
/// step, after the same back-off).
pub(super) async fn dial(
    shared: &Shared,
    to: [u8; 6],
    psm: u16,
    preamble: &[u8],
) -> Result<Stream> {
    let attempts = shared.config.connect_attempts.max(1);
    let mut last = None;
    let mut failures = Vec::new();
    for attempt in 0..attempts {
        let backoff = if attempt > 0 {
            shared
                .counters
                .connect_retries
                .fetch_add(1, Ordering::Relaxed);
            200u64.saturating_mul(1 << attempt.min(6))
        } else {
            0
        };
        let wait = backoff + jitter(backoff.max(200));
        shared.clock.sleep(Duration::from_millis(wait)).await;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        super::scan::pause(shared).await;
        let result = dial_once(shared, to, psm, preamble).await;
        super::scan::resume(shared).await;
        match result {
            Ok(stream) => return Ok(stream),
            // Refused by a full queue or a bad answer: retrying at once does not help.
            Err(e @ (Error::Malformed { .. } | Error::TooLarge { .. })) => return Err(e),
            Err(e) => {
                let refused = matches!(&e, Error::Unreachable(m) if m.contains(REFUSED_BY_PEER));
                failures.push(e.to_string());
                last = Some(e);
                // Refused: the peer may hold a channel of ours that it never saw closed (the
                // channel id our kernel picks again is still "allocated" there, so every retry
                // on this link would be refused alike), and nothing but a new link clears
                // that. The link's other channels end with it.
                if refused && attempt + 1 < attempts {
                    reset_link(shared, to).await;
                }
            }
        }
    }
    match last {
        // Say what each attempt met: the first failure is often the telling one.
        Some(Error::Unreachable(_)) if failures.len() > 1 => Err(Error::Unreachable(format!(
            "{} attempts failed: {}",
            failures.len(),
            failures.join("; ")
        ))),
        Some(e) => Err(e),
        None => Err(Error::Unreachable("no attempt made".to_string())),
    }
}

async fn dial_once(shared: &Shared, to: [u8; 6], psm: u16, preamble: &[u8]) -> Result<Stream> {
    let ms = shared.config.handshake_timeout_ms;
    let peer = BtAddress(to);
    let unreachable = |what: &str| Error::Unreachable(format!("{peer} PSM {psm:#06x}: {what}"));
    // The address type as bluetoothd learnt it from the advertisement (random for a phone
    // with privacy on); public when unknown.
    let addr_type = match shared.adapter.device(peer) {
        Ok(device) => within(shared, ms, device.address_type())
            .await
            .and_then(|r| r.ok())
            .unwrap_or(AddressType::LePublic),
        Err(_) => AddressType::LePublic,
    };
    let socket = Socket::new_stream().map_err(|e| Error::io("L2CAP socket", e))?;
    socket
        .bind(SocketAddr::new(shared.local, AddressType::LePublic, 0))
        .map_err(|e| Error::io("binding the L2CAP socket to our adapter", e))?;
    socket
        .set_recv_mtu(shared.config.mtu)
        .map_err(|e| Error::io("setting the L2CAP MTU", e))?;
    let mut stream = within(
        shared,
        ms,
        socket.connect(SocketAddr::new(peer, addr_type, psm)),
    )
    .await
    .ok_or_else(|| unreachable("connecting timed out"))?
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            unreachable(&format!("{REFUSED_BY_PEER} ({e})"))
        } else {
            unreachable(&e.to_string())
        }
    })?;
    within(shared, ms, connected(shared, &stream))
        .await
        .ok_or_else(|| unreachable("connecting timed out"))?
        .map_err(|e| unreachable(&e))?;
    within(shared, ms, stream.write_all(preamble))
        .await
        .ok_or_else(|| unreachable("sending timed out"))?
        .map_err(|e| unreachable(&e.to_string()))?;
    if preamble.first() == Some(&KIND_ADVERT) {
        return Ok(stream);
    }
    let answer = within(shared, ms, stream.read_u8())
        .await
        .ok_or_else(|| unreachable("no answer in time"))?
        .map_err(|e| unreachable(&format!("no answer: {e}")))?;
    match answer {
        ACCEPTED => Ok(stream),
        REFUSED => Err(unreachable("refused: the peer's inbound queue is full")),
        _ => Err(Error::malformed(
            "BLE link answer",
            format!("{answer:#04x}"),
        )),
    }
}

/// Opens a byte stream.
pub(super) async fn connect(shared: &Shared, to: [u8; 6], psm: u16) -> Result<BoxedStream> {
    let stream = dial(shared, to, psm, &[KIND_STREAM]).await?;
    Ok(Box::new(stream))
}

/// Sends one standalone message; `Ok` once the peer queued it.
pub(super) async fn send(shared: &Shared, to: [u8; 6], psm: u16, message: &[u8]) -> Result<()> {
    let frame = message_frame(message)?;
    debug_assert_eq!(frame.first(), Some(&KIND_MESSAGE));
    dial(shared, to, psm, &frame).await.map(drop)
}

/// Reads the advert a peer serves.
pub(super) async fn fetch_advert(shared: &Shared, to: [u8; 6], psm: u16) -> Result<Advert> {
    let ms = shared.config.handshake_timeout_ms;
    let mut stream = dial(shared, to, psm, &[KIND_ADVERT]).await?;
    let read = async {
        let mut header = [0u8; 3];
        stream.read_exact(&mut header).await.map_err(|e| {
            Error::Unreachable(format!("reading the advert of {}: {e}", BtAddress(to)))
        })?;
        let len = advert_answer_len(header)?;
        let mut bytes = vec![0; len];
        stream.read_exact(&mut bytes).await.map_err(|e| {
            Error::Unreachable(format!("reading the advert of {}: {e}", BtAddress(to)))
        })?;
        Advert::decode(&bytes)
    };
    within(shared, ms, read)
        .await
        .ok_or_else(|| Error::Unreachable(format!("{}: advert not read in time", BtAddress(to))))?
}
