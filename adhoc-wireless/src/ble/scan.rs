//! Scanning with btleplug: adverts heard -> the peer table, reading each new advert over L2CAP.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use btleplug::api::{Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures_util::StreamExt;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::peer::{Address, Advert, Transport};

use super::wire::{Payload, SERVICE_UUID, TAG_LEN, advert_tag};
use super::{Shared, l2cap};

/// What we know of one radio address.
#[derive(Debug, Clone)]
pub(super) struct Heard {
    /// The payload it advertised last.
    pub(super) payload: Payload,
    /// The advert read for `payload.tag`, if read.
    pub(super) advert: Option<(Advert, [u8; TAG_LEN])>,
    /// When it was last fed to the table.
    pub(super) refreshed: u64,
    /// When it was last heard at all.
    pub(super) heard: u64,
    /// A read of its advert is under way.
    pub(super) fetching: bool,
    /// No new read before this time (after a failed one).
    pub(super) retry_after: u64,
}

/// The btleplug adapter for our controller (`hci0` ...).
async fn find_adapter(name: &str) -> Result<Adapter> {
    let io = |what: &str, e: btleplug::Error| {
        Error::io(what.to_string(), std::io::Error::other(e.to_string()))
    };
    let manager = Manager::new()
        .await
        .map_err(|e| io("connecting to bluetoothd (btleplug)", e))?;
    for adapter in manager
        .adapters()
        .await
        .map_err(|e| io("listing Bluetooth adapters", e))?
    {
        let info = adapter.adapter_info().await.unwrap_or_default();
        if info.split_whitespace().next() == Some(name) {
            return Ok(adapter);
        }
    }
    Err(Error::io(
        format!("finding Bluetooth adapter {name} (btleplug)"),
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such adapter"),
    ))
}

/// Scans for as long as the plugin lives; a scan that fails or ends (bluetoothd restarted,
/// the adapter powered off) starts again after a back-off.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut backoff = 500u64;
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        match scan_once(&shared).await {
            Ok(()) => backoff = 500,
            Err(e) => {
                shared.set_error(format!("scanning: {e}"));
                backoff = (backoff * 2).min(10_000);
            }
        }
        shared
            .counters
            .scan_restarts
            .fetch_add(1, Ordering::Relaxed);
        shared.clock.sleep(Duration::from_millis(backoff)).await;
    }
}

async fn scan_once(shared: &Arc<Shared>) -> Result<()> {
    let io = |what: &str, e: btleplug::Error| {
        Error::io(what.to_string(), std::io::Error::other(e.to_string()))
    };
    let adapter = find_adapter(&shared.config.adapter).await?;
    // Devices bluetoothd knows already: the event stream opens with a DeviceDiscovered for
    // each (with whatever they advertised last, maybe long ago), which is not a hearing.
    let mut cached: std::collections::HashSet<PeripheralId> = adapter
        .peripherals()
        .await
        .map(|ps| ps.iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut events = adapter
        .events()
        .await
        .map_err(|e| io("subscribing to scan events", e))?;
    let uuid = Uuid::from_u128(SERVICE_UUID);
    // No UUID filter: bluetoothd matches a filter against advertised service UUID lists, not
    // against service data keys; the plugin picks its own service data out of every report.
    adapter
        .start_scan(ScanFilter::default())
        .await
        .map_err(|e| io("starting the scan", e))?;
    shared.scanning.store(true, Ordering::SeqCst);
    shared.scanner.lock().await.0 = Some(adapter.clone());
    let mut addresses: HashMap<PeripheralId, [u8; 6]> = HashMap::new();
    let restart_every = shared.config.scan_restart_ms;
    let mut restart_at = shared.clock.now_millis().saturating_add(restart_every);
    loop {
        let next = if restart_every == 0 {
            events.next().await
        } else {
            let wait = restart_at.saturating_sub(shared.clock.now_millis());
            tokio::select! {
                event = events.next() => event,
                () = shared.clock.sleep(Duration::from_millis(wait)) => {
                    restart(shared).await;
                    restart_at = shared.clock.now_millis().saturating_add(restart_every);
                    continue;
                }
            }
        };
        let Some(event) = next else {
            break;
        };
        if shared.closed.load(Ordering::SeqCst) {
            break;
        }
        let (id, service_data) = match event {
            CentralEvent::ServiceDataAdvertisement { id, service_data } => (id, service_data),
            // bluetoothd announces a device it had not known with the service data among its
            // first properties, and btleplug reports that as DeviceDiscovered without them: a
            // controller that reports an advertiser once (when advertising or scanning
            // starts) would otherwise go unheard until the next scan. The announcements of
            // cached devices that open the stream are skipped (once each).
            CentralEvent::DeviceDiscovered(id) => {
                if cached.remove(&id) {
                    continue;
                }
                let Ok(p) = adapter.peripheral(&id).await else {
                    continue;
                };
                match p.properties().await {
                    Ok(Some(props)) => (id, props.service_data),
                    _ => continue,
                }
            }
            _ => continue,
        };
        let Some(bytes) = service_data.get(&uuid) else {
            continue;
        };
        let addr = match addresses.get(&id) {
            Some(a) => *a,
            None => {
                let Ok(p) = adapter.peripheral(&id).await else {
                    continue;
                };
                let a = p.address().into_inner();
                if addresses.len() >= shared.config.table.max_sources {
                    addresses.clear();
                }
                addresses.insert(id, a);
                a
            }
        };
        heard(shared, addr, bytes);
    }
    shared.scanning.store(false, Ordering::SeqCst);
    shared.scanner.lock().await.0 = None;
    let _ = adapter.stop_scan().await;
    Ok(())
}

/// One advertisement heard from `addr`.
fn heard(shared: &Arc<Shared>, addr: [u8; 6], bytes: &[u8]) {
    let now = shared.clock.now_millis();
    let source = Address::Ble(addr);
    shared
        .counters
        .adverts_heard
        .fetch_add(1, Ordering::Relaxed);
    let payload = match Payload::decode(bytes) {
        Ok(p) => p,
        Err(_) => {
            shared.table.malformed(now, &source);
            return;
        }
    };
    let refresh_ms = shared.config.refresh_ms;
    let mut fetch = false;
    let mut observe = None;
    {
        let mut heard = shared.heard.lock().unwrap_or_else(|p| p.into_inner());
        if !heard.contains_key(&addr) && heard.len() >= shared.config.table.max_sources {
            // Forget the longest-silent address.
            if let Some(oldest) = heard.iter().min_by_key(|(_, h)| h.heard).map(|(a, _)| *a) {
                heard.remove(&oldest);
            }
        }
        let entry = heard.entry(addr).or_insert_with(|| Heard {
            payload,
            advert: None,
            refreshed: 0,
            heard: now,
            fetching: false,
            retry_after: 0,
        });
        entry.heard = now;
        entry.payload = payload;
        match &entry.advert {
            Some((advert, tag)) if *tag == payload.tag => {
                // Adverts repeat many times a second: feed the table at most every refresh_ms.
                if now.saturating_sub(entry.refreshed) >= refresh_ms || entry.refreshed == 0 {
                    entry.refreshed = now;
                    observe = Some(advert.clone());
                }
            }
            _ => {
                if !entry.fetching && now >= entry.retry_after {
                    entry.fetching = true;
                    fetch = true;
                }
            }
        }
    }
    if let Some(advert) = observe {
        shared
            .table
            .observe_advert(now, &source, Transport::Ble, source.clone(), advert);
    }
    if fetch {
        let Ok(permit) = shared.fetches.clone().try_acquire_owned() else {
            let mut heard = shared.heard.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = heard.get_mut(&addr) {
                h.fetching = false;
            }
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            fetch_and_observe(&shared, addr, payload).await;
        });
    }
}

/// How long the device with the higher address waits before reading a new advert (ms).
const YIELD_MS: u64 = 1_000;

/// Reads made for one advertisement before waiting for the next report (a failed channel, or
/// an advert that changed while it was read).
const READ_ROUNDS: u32 = 6;

/// Reads `addr`'s advert, checks it against the tag it advertised, and feeds the table.
///
/// A read that fails is tried again after [`BleConfig::fetch_backoff_ms`](super::BleConfig),
/// as is one that returns an advert other than the tag advertised now (it changed meanwhile),
/// up to [`READ_ROUNDS`] reads, and only while the address was heard within the silence after
/// which a peer is lost: some controllers report an advertiser once (when it starts, or when a
/// scan starts), so waiting for the next report could mean waiting for ever.
async fn fetch_and_observe(shared: &Arc<Shared>, addr: [u8; 6], payload: Payload) {
    let source = Address::Ble(addr);
    let mut psm = payload.psm;
    // Two devices that hear each other would read each other's advert at the same moment,
    // each initiating a connection while the other does (a controller stops advertising while
    // it initiates, and such crossed attempts fail or leave a half-made link). The one with the
    // higher address lets the other go first, and then reads over the link already made.
    if shared.local.0 > addr {
        shared
            .clock
            .sleep(Duration::from_millis(
                YIELD_MS + l2cap::jitter(YIELD_MS / 2),
            ))
            .await;
    }
    for round in 1..=READ_ROUNDS {
        let result = l2cap::fetch_advert(shared, addr, psm).await;
        let now = shared.clock.now_millis();
        let mut observe = None;
        let mut replaced = false;
        let mut again = false;
        {
            let mut heard = shared.heard.lock().unwrap_or_else(|p| p.into_inner());
            let Some(entry) = heard.get_mut(&addr) else {
                return;
            };
            let fresh = now.saturating_sub(entry.heard) < shared.config.table.lost_after_ms;
            let more = round < READ_ROUNDS && fresh && !shared.closed.load(Ordering::SeqCst);
            match result {
                Ok(advert) => {
                    let tag = advert_tag(&advert.encode());
                    shared.counters.adverts_read.fetch_add(1, Ordering::Relaxed);
                    // A radio address advertises one advert at a time: a new peer behind it
                    // means the one before is no longer here (at this address).
                    replaced = entry
                        .advert
                        .as_ref()
                        .is_some_and(|(old, _)| old.peer_id() != advert.peer_id());
                    // A tag that does not match is a race with a new advert (read again) or a
                    // lie; either way the advert read is what the peer serves now, and the
                    // table judges it like any advert from this address.
                    entry.advert = Some((advert.clone(), tag));
                    if tag == entry.payload.tag {
                        entry.refreshed = now;
                        observe = Some(advert);
                    } else {
                        again = more;
                    }
                }
                Err(e) => {
                    shared
                        .counters
                        .advert_reads_failed
                        .fetch_add(1, Ordering::Relaxed);
                    shared.set_error(format!("reading the advert of {source}: {e}"));
                    entry.retry_after = now.saturating_add(shared.config.fetch_backoff_ms);
                    if e.kind() == crate::ErrorKind::PeerMisbehaved {
                        entry.fetching = false;
                        drop(heard);
                        shared.table.malformed(now, &source);
                        return;
                    }
                    again = more;
                }
            }
            // While reading again the entry stays marked, so reports heard meanwhile start no
            // second read; the next round reads at the PSM advertised last.
            entry.fetching = again;
            psm = entry.payload.psm;
        }
        if replaced {
            shared.table.forget(Transport::Ble, &source);
        }
        if let Some(advert) = observe {
            shared
                .table
                .observe_advert(now, &source, Transport::Ble, source.clone(), advert);
        }
        if !again {
            return;
        }
        shared
            .clock
            .sleep(Duration::from_millis(shared.config.fetch_backoff_ms))
            .await;
    }
}

/// Stops and starts the scan (unless a dial has paused it): a controller reports what it
/// hears anew when a scan starts, and some report an advertiser only then.
async fn restart(shared: &Shared) {
    let guard = shared.scanner.lock().await;
    if guard.1 == 0 {
        if let Some(adapter) = &guard.0 {
            let _ = adapter.stop_scan().await;
            let _ = adapter.start_scan(ScanFilter::default()).await;
        }
    }
}

/// Pauses the scan while a channel is being opened (see the module docs); calls nest.
pub(super) async fn pause(shared: &Shared) {
    let mut guard = shared.scanner.lock().await;
    guard.1 += 1;
    if guard.1 == 1 {
        if let Some(adapter) = &guard.0 {
            let _ = adapter.stop_scan().await;
        }
    }
}

/// Ends a [`pause`].
pub(super) async fn resume(shared: &Shared) {
    let mut guard = shared.scanner.lock().await;
    guard.1 = guard.1.saturating_sub(1);
    if guard.1 == 0 {
        if let Some(adapter) = &guard.0 {
            let _ = adapter.start_scan(ScanFilter::default()).await;
        }
    }
}
