//! The Bluetooth LE plugin (feature `ble`, Linux): BlueZ advertising and L2CAP
//! connection-oriented channels through bluer, scanning through btleplug.
//!
//! [`BlePlugin::start`] opens an L2CAP listener on the chosen controller ([`BleConfig::adapter`],
//! `hci0` ...), scans for the Thali service, and — once told to [`advertise`](Plugin::advertise)
//! — advertises it, connectable and general-discoverable (bluetoothd's discovery drops LE
//! adverts without a discoverable flag). The [`wire`] module documents every byte: a legacy
//! advertisement has room for 10 bytes of service data, so it carries the listener's PSM and a
//! tag of the advert, and scanners read the [`Advert`] itself over L2CAP once per tag (an advert
//! naming a key is 35 bytes; a beacon 200 or more). What is read goes into a [`SharedTable`], so
//! the table's hygiene applies as on the LAN: bounded peers, a token bucket per radio address,
//! malformed adverts counted, flooding addresses banned.
//!
//! # Liveness
//!
//! btleplug scans with BlueZ's `DuplicateData` filter, so each advertisement heard is reported
//! (not only changes). The plugin feeds a peer to the table at most every
//! [`BleConfig::refresh_ms`] (adverts come several times a second; the table's rate limit
//! would otherwise ban a chatty peer), and a peer not heard for
//! [`TableConfig::lost_after_ms`] is [`Lost`](crate::Event::Lost): the plugin expires the table
//! a few times per that silence.
//!
//! # Links
//!
//! Streams and standalone messages run on L2CAP LE credit-based channels to the PSM the peer
//! advertised (or [`BleConfig::psm`] when fixed and not yet heard), framed as the LAN link's
//! ([`frame`](crate::frame)). Back-pressure is the channel's credit flow control, end to end: a
//! writer waits while the peer grants no credits. Writes are cut to the peer's MTU (the kernel
//! sends each as an SDU in MPS-sized PDUs); [`BleConfig::mtu`] is the SDU size we accept. A closed
//! channel drops what the kernel has not sent yet, so end a conversation with an acknowledgement
//! from the peer (a request and its response do; the plugin's own messages and advert reads wait
//! for the asking side to close first). Dialling waits a random moment (up to 200 ms) before each
//! attempt — two devices that hear each other at once would otherwise dial each other at once, and
//! a controller stops advertising while it initiates, so both would fail — and retries a failed
//! attempt ([`BleConfig::connect_attempts`], with a doubling back-off): a phone-class radio is
//! often busy or between advertisements. A failed advert read is tried again after
//! [`BleConfig::fetch_backoff_ms`] while the address is still heard (some controllers report an
//! advertiser only once), and an address that comes to advertise another peer loses the one before
//! at once. A channel counts as open once the kernel reports its send MTU (`connect` can return
//! before the peer answered); one the peer refuses is tried again on a new link. The scan restarts
//! after a back-off when it fails or ends (bluetoothd restarted, adapter powered off), and a failed
//! advertisement registration is retried.
//!
//! # Privacy
//!
//! What is advertised is what the advert carries: an [`Advert::key`] tells everyone in range
//! the key id (read over L2CAP by anyone); to tell strangers nothing, advertise a beacon
//! (feature `beacons`). The controller's address is as bluetoothd configures it: turn on LE
//! privacy (`Privacy = device` in `main.conf`) for a rotating random address.
//!
//! # Bounds
//!
//! Radio addresses tracked: [`TableConfig::max_sources`]; advert reads at once:
//! [`BleConfig::max_concurrent_reads`], retried no sooner than [`BleConfig::fetch_backoff_ms`]
//! after a failure; inbound channels being read: [`BleConfig::max_pending_inbound`]; inbound items
//! waiting for the application: [`BleConfig::incoming_capacity`]; the sizes of every frame
//! ([`wire`]).

mod l2cap;
mod scan;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluer::Address as BtAddress;
use bluer::adv::{Advertisement, Type as AdvType};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::discovery::{Discovery, SharedTable, Subscription};
use crate::error::{Error, Result};
use crate::link::{BoxedStream, Inbound, Incoming, Link, Plugin};
use crate::peer::{Address, Advert, Peer, Transport};
use crate::table::{TableConfig, TableStats};

use self::wire::{Payload, SERVICE_UUID, TAG_LEN, advert_tag};

/// Configuration of the Bluetooth LE plugin.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BleConfig {
    /// The controller (`hci0`, `hci1` ...), as bluetoothd names it.
    pub adapter: String,
    /// A fixed L2CAP PSM to listen on (`0x0080 ..= 0x00ff`), also dialled for a peer whose
    /// advertisement was not heard; `None` (the default) lets the kernel pick a free one, which
    /// the advertisement publishes.
    pub psm: Option<u16>,
    /// The SDU size we accept on a channel (default 4096; at most 65535).
    pub mtu: u16,
    /// The advertising interval (default 100 ms; bluetoothd honours it when run with
    /// `--experimental`, otherwise the kernel's default applies).
    pub advertising_interval_ms: u64,
    /// The peer table's limits, and the silence after which a peer is lost
    /// ([`TableConfig::lost_after_ms`]).
    pub table: TableConfig,
    /// A peer is fed to the table at most this often (default 1 s).
    pub refresh_ms: u64,
    /// The scan is stopped and started again this often (default 10 s; 0: never): a controller
    /// reports what it hears anew when a scan starts, and some (BlueZ's emulated ones) report an
    /// advertiser only then or when it starts advertising — so a report missed once is heard
    /// again, and a live peer is heard at least this often.
    pub scan_restart_ms: u64,
    /// Attempts to open a channel before giving up (default 3).
    pub connect_attempts: u32,
    /// How long connecting, a handshake or an answer may take (default 10 s).
    pub handshake_timeout_ms: u64,
    /// Advert reads at once (default 4).
    pub max_concurrent_reads: usize,
    /// After a failed advert read, the next one waits this long (default 2 s).
    pub fetch_backoff_ms: u64,
    /// Inbound streams and messages waiting for the application (default 64).
    pub incoming_capacity: usize,
    /// Inbound channels being read at once (default 16).
    pub max_pending_inbound: usize,
}

impl BleConfig {
    /// The defaults, on this controller.
    pub fn new(adapter: impl Into<String>) -> BleConfig {
        BleConfig {
            adapter: adapter.into(),
            psm: None,
            mtu: 4096,
            advertising_interval_ms: 100,
            table: TableConfig::default(),
            refresh_ms: 1_000,
            scan_restart_ms: 10_000,
            connect_attempts: 3,
            handshake_timeout_ms: 10_000,
            max_concurrent_reads: 4,
            fetch_backoff_ms: 2_000,
            incoming_capacity: 64,
            max_pending_inbound: 16,
        }
    }
}

/// Counters of the Bluetooth LE plugin (besides the peer table's, [`BlePlugin::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BleStats {
    /// Thali advertisements heard.
    pub adverts_heard: u64,
    /// Adverts read over L2CAP.
    pub adverts_read: u64,
    /// Advert reads that failed.
    pub advert_reads_failed: u64,
    /// Adverts served to peers that asked.
    pub adverts_served: u64,
    /// Times the scan (re)started after the first.
    pub scan_restarts: u64,
    /// Channel attempts retried.
    pub connect_retries: u64,
    /// Inbound streams and messages refused because the queue was full.
    pub inbound_refused: u64,
    /// Inbound channels closed unanswered (malformed, too slow, too many at once).
    pub inbound_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    adverts_heard: AtomicU64,
    adverts_read: AtomicU64,
    advert_reads_failed: AtomicU64,
    adverts_served: AtomicU64,
    scan_restarts: AtomicU64,
    connect_retries: AtomicU64,
    inbound_refused: AtomicU64,
    inbound_dropped: AtomicU64,
}

/// What the plugin's handle and its tasks share.
struct Shared {
    config: BleConfig,
    clock: Arc<dyn Clock>,
    table: SharedTable,
    adapter: bluer::Adapter,
    local: BtAddress,
    psm: u16,
    /// What we advertise: the encoded advert and its tag.
    advert: Mutex<Option<(Vec<u8>, [u8; TAG_LEN])>>,
    advert_changed: watch::Sender<()>,
    inbound: Mutex<Option<mpsc::Sender<Inbound>>>,
    heard: Mutex<HashMap<[u8; 6], scan::Heard>>,
    fetches: Arc<Semaphore>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    scanning: AtomicBool,
    /// The scanning adapter (btleplug), and how many dials have paused its scan.
    scanner: tokio::sync::Mutex<(Option<btleplug::platform::Adapter>, usize)>,
    closed: AtomicBool,
}

impl Shared {
    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// The Bluetooth LE plugin. See the module docs.
pub struct BlePlugin {
    shared: Arc<Shared>,
    incoming: Mutex<Option<Incoming>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for BlePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlePlugin")
            .field("adapter", &self.shared.config.adapter)
            .field("address", &self.shared.local)
            .field("psm", &self.shared.psm)
            .finish_non_exhaustive()
    }
}

fn bluer_error(action: &str, e: bluer::Error) -> Error {
    Error::io(action, std::io::Error::other(e.to_string()))
}

impl BlePlugin {
    /// Starts on tokio's clock. See [`start_with_clock`](Self::start_with_clock).
    pub async fn start(config: BleConfig) -> Result<BlePlugin> {
        BlePlugin::start_with_clock(config, Arc::new(crate::TokioClock::new())).await
    }

    /// Connects to bluetoothd, powers the controller on, listens for L2CAP channels and scans.
    /// Nothing is advertised until [`advertise`](Plugin::advertise). Must run inside a tokio
    /// runtime (it spawns its tasks there); stop it with [`shutdown`](Self::shutdown). Fails
    /// with [`ErrorKind::LocalIo`](crate::ErrorKind::LocalIo) when there is no bluetoothd or no
    /// such controller.
    pub async fn start_with_clock(config: BleConfig, clock: Arc<dyn Clock>) -> Result<BlePlugin> {
        if let Some(psm) = config.psm {
            if !(wire::PSM_MIN..=wire::PSM_MAX).contains(&psm) {
                return Err(Error::InvalidConfig(format!(
                    "PSM {psm:#06x} is outside the LE dynamic range 0x0080..=0x00ff"
                )));
            }
        }
        if config.mtu < 23 {
            return Err(Error::InvalidConfig("an LE MTU is at least 23".to_string()));
        }
        let session = bluer::Session::new()
            .await
            .map_err(|e| bluer_error("connecting to bluetoothd", e))?;
        let adapter = session
            .adapter(&config.adapter)
            .map_err(|e| bluer_error(&format!("opening adapter {}", config.adapter), e))?;
        let powered = adapter
            .is_powered()
            .await
            .map_err(|e| bluer_error(&format!("reading adapter {}", config.adapter), e))?;
        if !powered {
            adapter
                .set_powered(true)
                .await
                .map_err(|e| bluer_error(&format!("powering {} on", config.adapter), e))?;
        }
        let local = adapter
            .address()
            .await
            .map_err(|e| bluer_error(&format!("reading {}'s address", config.adapter), e))?;
        let listener = l2cap::listen(local, config.psm.unwrap_or(0), config.mtu)?;
        let psm = l2cap::bound_psm(&listener)?;
        let (tx, incoming) = Incoming::channel(config.incoming_capacity);
        let (advert_changed, changes) = watch::channel(());
        let shared = Arc::new(Shared {
            table: SharedTable::new(config.table.clone()),
            fetches: Arc::new(Semaphore::new(config.max_concurrent_reads.max(1))),
            config,
            clock,
            adapter,
            local,
            psm,
            advert: Mutex::new(None),
            advert_changed,
            inbound: Mutex::new(Some(tx)),
            heard: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            last_error: Mutex::new(None),
            scanning: AtomicBool::new(false),
            scanner: tokio::sync::Mutex::new((None, 0)),
            closed: AtomicBool::new(false),
        });
        let tasks = vec![
            tokio::spawn(l2cap::accept_loop(shared.clone(), listener)),
            tokio::spawn(scan::run(shared.clone())),
            tokio::spawn(advertiser(shared.clone(), changes)),
            tokio::spawn(expirer(shared.clone())),
        ];
        // Keep the session alive as long as the tasks (the adapter holds it too).
        drop(session);
        Ok(BlePlugin {
            shared,
            incoming: Mutex::new(Some(incoming)),
            tasks: Mutex::new(tasks),
        })
    }

    /// Our controller's address (what peers see as [`Address::Ble`]).
    pub fn address(&self) -> Address {
        Address::Ble(self.shared.local.0)
    }

    /// The PSM our listener is on (the one advertised).
    pub fn psm(&self) -> u16 {
        self.shared.psm
    }

    /// Whether the scan is running now.
    pub fn is_scanning(&self) -> bool {
        self.shared.scanning.load(Ordering::SeqCst)
    }

    /// The peer table's counters.
    pub fn stats(&self) -> TableStats {
        self.shared.table.stats()
    }

    /// The plugin's own counters.
    pub fn ble_stats(&self) -> BleStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BleStats {
            adverts_heard: get(&c.adverts_heard),
            adverts_read: get(&c.adverts_read),
            advert_reads_failed: get(&c.advert_reads_failed),
            adverts_served: get(&c.adverts_served),
            scan_restarts: get(&c.scan_restarts),
            connect_retries: get(&c.connect_retries),
            inbound_refused: get(&c.inbound_refused),
            inbound_dropped: get(&c.inbound_dropped),
        }
    }

    /// The last failure of a background task (scanning, advertising), if any.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops advertising (peers lose us after their silence); [`advertise`](Plugin::advertise)
    /// starts again.
    pub fn stop_advertising(&self) {
        *self.shared.advert.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.shared.advert_changed.send_replace(());
    }

    /// Stops advertising, scanning and listening. Later calls do nothing; links fail with
    /// [`Error::Closed`] afterwards, and [`Incoming`] ends.
    pub async fn shutdown(&self) {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop_advertising();
        // Give the advertiser a moment to unregister.
        self.shared.clock.sleep(Duration::from_millis(50)).await;
        self.stop_tasks();
    }

    fn stop_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.shared
            .inbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The PSM to dial at `to`: the one it advertised, else the fixed one.
    fn psm_of(&self, to: [u8; 6]) -> Result<u16> {
        let heard = self
            .shared
            .heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
            .map(|h| h.payload.psm);
        heard.or(self.shared.config.psm).ok_or_else(|| {
            Error::Unreachable(format!(
                "{}: not heard advertising, and no fixed PSM is configured",
                BtAddress(to)
            ))
        })
    }
}

impl Drop for BlePlugin {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.stop_tasks();
    }
}

/// Keeps bluetoothd's advertisement in step with what we advertise; retries a registration
/// that failed.
async fn advertiser(shared: Arc<Shared>, mut changes: watch::Receiver<()>) {
    let mut handle: Option<bluer::adv::AdvertisementHandle> = None;
    let mut backoff = 500u64;
    loop {
        let current = shared
            .advert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, tag)| *tag);
        // Dropping the handle unregisters the old advertisement.
        drop(handle.take());
        let mut failed = false;
        if let Some(tag) = current {
            let payload = Payload {
                psm: shared.psm,
                tag,
            };
            let interval = Duration::from_millis(shared.config.advertising_interval_ms.max(20));
            let advertisement = Advertisement {
                advertisement_type: AdvType::Peripheral,
                service_data: BTreeMap::from([(
                    bluer::Uuid::from_u128(SERVICE_UUID),
                    payload.encode().to_vec(),
                )]),
                discoverable: Some(true),
                min_interval: Some(interval),
                max_interval: Some(interval),
                ..Advertisement::default()
            };
            match shared.adapter.advertise(advertisement).await {
                Ok(h) => {
                    handle = Some(h);
                    backoff = 500;
                }
                Err(e) => {
                    shared.set_error(format!("advertising: {e}"));
                    failed = true;
                }
            }
        }
        if failed {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = shared.clock.sleep(Duration::from_millis(backoff)) => {
                    backoff = (backoff * 2).min(10_000);
                }
            }
        } else if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Expires the table a few times per silence.
async fn expirer(shared: Arc<Shared>) {
    let period = (shared.config.table.lost_after_ms / 4).clamp(50, 5_000);
    loop {
        shared.clock.sleep(Duration::from_millis(period)).await;
        let now = shared.clock.now_millis();
        shared.table.expire(now);
    }
}

impl Discovery for BlePlugin {
    fn peers(&self) -> Vec<Peer> {
        self.shared.table.peers()
    }

    fn subscribe(&self) -> Subscription {
        self.shared.table.subscribe()
    }
}

#[async_trait::async_trait]
impl Link for BlePlugin {
    fn transport(&self) -> Transport {
        Transport::Ble
    }

    async fn send(&self, to: &Address, message: &[u8]) -> Result<()> {
        self.check_open()?;
        let addr = l2cap::ble_address(to)?;
        let psm = self.psm_of(addr)?;
        l2cap::send(&self.shared, addr, psm, message).await
    }

    async fn connect(&self, to: &Address) -> Result<BoxedStream> {
        self.check_open()?;
        let addr = l2cap::ble_address(to)?;
        let psm = self.psm_of(addr)?;
        l2cap::connect(&self.shared, addr, psm).await
    }

    fn incoming(&self) -> Option<Incoming> {
        self.incoming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Plugin for BlePlugin {
    fn advertise(&self, advert: Advert) -> Result<()> {
        self.check_open()?;
        let encoded = advert.encode();
        let tag = advert_tag(&encoded);
        *self.shared.advert.lock().unwrap_or_else(|p| p.into_inner()) = Some((encoded, tag));
        self.shared.advert_changed.send_replace(());
        Ok(())
    }
}
