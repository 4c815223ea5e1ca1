//! The LAN plugin (feature `mdns`): DNS-SD discovery over multicast DNS (mdns-sd) and TCP links.
//!
//! [`MdnsPlugin::start`] advertises `_thali._tcp.local.` with the [`txt`] record of an
//! [`Advert`], browses and resolves the other instances, and feeds every resolved one into a
//! [`SharedTable`] — so the table's hygiene applies: bounded peers, a token bucket per source,
//! malformed records counted, flooding sources banned. The source of an advert is the IP address
//! its service resolved to (mdns-sd does not expose the sender of the packet). The link is TCP on
//! the advertised port, streams and standalone messages, framed as [`tcp`] documents.
//!
//! # Interfaces
//!
//! The caller chooses the interfaces ([`MdnsConfig::interfaces`], by name or address; there is
//! no default). mdns-sd itself joins the mDNS group on every interface when its daemon starts;
//! the plugin's first commands to it disable every interface and enable the chosen ones, before
//! anything is registered or browsed, so no mDNS packet is sent on another interface — only the
//! kernel's IGMP/MLD membership reports for the brief join (see the project note on mDNS in
//! network namespaces). The service is announced on the chosen interfaces only, and the TCP
//! listeners bind the addresses those interfaces have when the plugin starts (restart the plugin
//! after an address change; mdns-sd follows address changes for discovery by itself).
//!
//! # Liveness
//!
//! A peer is [`Lost`](crate::Event::Lost) at once when its service says goodbye (mdns-sd's
//! `ServiceRemoved`, about a second after the goodbye packet), and within the configured silence
//! ([`TableConfig::lost_after_ms`], L) when it just goes quiet (killed, out of range, interface
//! down): a little less often than every L/2 the plugin asks mdns-sd to verify each tracked
//! instance (RFC 6762 §10.4: queries for its SRV and address records, repeated after a second),
//! with a deadline a little under L/2; an instance that does not answer is flushed by mdns-sd and
//! lost. The cost is one or two small queries per peer per L/2 from each peer (L defaults to
//! 10 s). While mdns-sd holds an instance, the plugin refreshes it in the table, whose own expiry
//! is the backstop.
//!
//! Every [`MdnsConfig::requery_ms`] the plugin browses afresh, clearing mdns-sd's cache of the
//! service type: the query then carries no known answers, so every live instance answers — which
//! finds peers whose announcements were missed and peers flushed while they were unreachable. A
//! tracked instance that has not answered it L/6 after the query (or by its pending
//! verification's deadline, if later) is lost; the verification schedule leaves room for that,
//! so a quiet peer is still lost within L.
//!
//! # Privacy
//!
//! The instance and host names are random (64 bits, hex) and change whenever the advert names a
//! different key or beacon, so they tell no more than the advert: a beacon advert stays
//! unlinkable across refreshes. The TXT record carries what the advert carries, and the port:
//! an [`Advert::key`] tells everyone on the chosen links the key id (fine among one person's
//! devices or on a trusted LAN); to reveal no key id to strangers, advertise a beacon
//! ([`Advert::beacon`], feature `beacons`), which only its recipients can open.
//!
//! # Bounds
//!
//! TXT records: [`txt::MAX_TXT_ENTRIES`] strings, [`txt::MAX_TXT_BYTES`] bytes; instances
//! tracked: [`MdnsConfig::max_services`] (beyond it new instances are ignored and counted); per
//! source rates and the number of peers: the [`TableConfig`]; inbound connections being read:
//! [`MdnsConfig::max_pending_inbound`]; inbound items waiting for the application:
//! [`MdnsConfig::incoming_capacity`] (beyond it streams and messages are refused).

mod browse;
pub mod tcp;
pub mod txt;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::discovery::{Discovery, SharedTable, Subscription};
use crate::error::{Error, Result};
use crate::link::{BoxedStream, Incoming, Link, Plugin};
use crate::peer::{Address, Advert, AdvertId, Peer, Transport};
use crate::table::{TableConfig, TableStats};

use self::tcp::{LinkSettings, TcpLink};
pub use self::txt::SERVICE_TYPE;

/// An interface the plugin may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LanInterface {
    /// By name (`eth0`, `wlan0`): all its addresses, IPv4 and IPv6.
    Name(String),
    /// The interface that has this address (that address's IP version only).
    Addr(IpAddr),
}

impl LanInterface {
    fn if_kind(&self) -> IfKind {
        match self {
            LanInterface::Name(name) => IfKind::Name(name.clone()),
            LanInterface::Addr(ip) => IfKind::Addr(*ip),
        }
    }

    fn is_loopback(&self) -> bool {
        match self {
            LanInterface::Name(name) => name == "lo",
            LanInterface::Addr(ip) => ip.is_loopback(),
        }
    }
}

/// The local interfaces with an address, as `(name, address)` (to offer a choice; loopback
/// included).
pub fn local_interfaces() -> Result<Vec<(String, IpAddr)>> {
    let mut out: Vec<(String, IpAddr)> = if_addrs::get_if_addrs()
        .map_err(|e| Error::io("listing network interfaces", e))?
        .into_iter()
        .map(|i| (i.name.clone(), i.ip()))
        .collect();
    out.sort();
    Ok(out)
}

/// Configuration of the LAN plugin.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MdnsConfig {
    /// The interfaces to advertise, browse and listen on (at least one).
    pub interfaces: Vec<LanInterface>,
    /// The TCP port of the link (0: any free port, the default).
    pub port: u16,
    /// The peer table's limits, and the silence after which a peer is lost
    /// ([`TableConfig::lost_after_ms`]).
    pub table: TableConfig,
    /// Most service instances tracked at once (default 512).
    pub max_services: usize,
    /// Inbound streams and messages waiting for the application (default 64).
    pub incoming_capacity: usize,
    /// Inbound connections being read at once (default 64).
    pub max_pending_inbound: usize,
    /// How long a connection may take to say what it is for, and to answer (default 10 s).
    pub handshake_timeout_ms: u64,
    /// How often to browse afresh (default 30 s; see the module docs).
    pub requery_ms: u64,
}

impl MdnsConfig {
    /// The defaults, on these interfaces.
    pub fn new(interfaces: Vec<LanInterface>) -> MdnsConfig {
        MdnsConfig {
            interfaces,
            port: 0,
            table: TableConfig::default(),
            max_services: 512,
            incoming_capacity: 64,
            max_pending_inbound: 64,
            handshake_timeout_ms: 10_000,
            requery_ms: 30_000,
        }
    }
}

/// Counters of the LAN plugin (besides the peer table's, [`MdnsPlugin::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LanStats {
    /// Service instances tracked now.
    pub services_tracked: u64,
    /// Resolved instances ignored because [`MdnsConfig::max_services`] were tracked.
    pub services_over_limit: u64,
    /// Verifications asked of mdns-sd (see the module docs on liveness).
    pub verifications: u64,
    /// Inbound streams and messages refused because the queue was full.
    pub inbound_refused: u64,
    /// Inbound connections closed unanswered (malformed, too slow, too many at once).
    pub inbound_dropped: u64,
}

fn daemon_error(action: &str, e: mdns_sd::Error) -> Error {
    Error::io(action, std::io::Error::other(e.to_string()))
}

/// What we registered, and every instance name that is ours (to ignore when browsing).
#[derive(Default)]
struct Registration {
    /// The current instance: label, full name, and the id it advertises.
    current: Option<(String, String, AdvertId)>,
    /// Our full names (lowercase), the latest last.
    own: VecDeque<String>,
}

/// How many of our past instance names are remembered (and ignored when heard).
const OWN_NAMES_KEPT: usize = 16;

/// What the plugin's handle and its browsing task share.
struct Shared {
    config: MdnsConfig,
    clock: Arc<dyn Clock>,
    daemon: ServiceDaemon,
    table: SharedTable,
    registration: Mutex<Registration>,
    allow_loopback: bool,
    /// What the table and the link label peers with: [`Transport::Lan`], or
    /// [`Transport::WifiDirect`] when the Wi-Fi Direct plugin runs this one on a group.
    transport: Transport,
    tracked: AtomicU64,
    over_limit: AtomicU64,
    verifications: AtomicU64,
    closed: AtomicBool,
}

impl Shared {
    fn is_own(&self, fullname_lower: &str) -> bool {
        let guard = self.registration.lock().unwrap_or_else(|p| p.into_inner());
        guard.own.iter().any(|n| n == fullname_lower)
    }
}

/// The LAN plugin: mDNS discovery and TCP links on the chosen interfaces. See the module docs.
pub struct MdnsPlugin {
    shared: Arc<Shared>,
    port: u16,
    listening: Vec<SocketAddr>,
    link: Mutex<Option<TcpLink>>,
    incoming: Mutex<Option<Incoming>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for MdnsPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsPlugin")
            .field("port", &self.port)
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl MdnsPlugin {
    /// Starts on tokio's clock. See [`start_with_clock`](Self::start_with_clock).
    pub async fn start(config: MdnsConfig) -> Result<MdnsPlugin> {
        MdnsPlugin::start_with_clock(config, Arc::new(crate::TokioClock::new())).await
    }

    /// Listens on the chosen interfaces, starts mdns-sd on them and browses. Nothing is
    /// advertised until [`advertise`](Plugin::advertise). Must run inside a tokio runtime (it
    /// spawns its tasks there); stop it with [`shutdown`](Self::shutdown).
    pub async fn start_with_clock(config: MdnsConfig, clock: Arc<dyn Clock>) -> Result<MdnsPlugin> {
        let table = SharedTable::new(config.table.clone());
        MdnsPlugin::start_on(config, clock, table, Transport::Lan).await
    }

    /// As [`start_with_clock`](Self::start_with_clock), feeding `table` (which may outlive
    /// this plugin) and labelling peers and inbound items with `transport`.
    pub(crate) async fn start_on(
        config: MdnsConfig,
        clock: Arc<dyn Clock>,
        table: SharedTable,
        transport: Transport,
    ) -> Result<MdnsPlugin> {
        if config.interfaces.is_empty() {
            return Err(Error::WrongAddress(
                "choose at least one interface for the LAN plugin".to_string(),
            ));
        }
        let addrs = listen_addresses(&config.interfaces)?;
        let settings = LinkSettings {
            incoming_capacity: config.incoming_capacity,
            max_pending: config.max_pending_inbound,
            handshake_ms: config.handshake_timeout_ms,
            transport,
        };
        let (link, incoming) = TcpLink::bind(&addrs, config.port, &settings, clock.clone()).await?;

        let daemon = ServiceDaemon::new().map_err(|e| daemon_error("starting mdns-sd", e))?;
        // mdns-sd has joined every interface's group by now; these are its first commands, so
        // it sends on the chosen interfaces only (see the module docs).
        let kinds: Vec<IfKind> = config
            .interfaces
            .iter()
            .map(LanInterface::if_kind)
            .collect();
        let setup = daemon
            .disable_interface(IfKind::All)
            .and_then(|()| daemon.enable_interface(kinds))
            .and_then(|()| daemon.browse(SERVICE_TYPE));
        let events = match setup {
            Ok(events) => events,
            Err(e) => {
                let _ = daemon.shutdown();
                return Err(daemon_error("setting up mdns-sd", e));
            }
        };
        let shared = Arc::new(Shared {
            table,
            transport,
            allow_loopback: config.interfaces.iter().any(LanInterface::is_loopback),
            config,
            clock,
            daemon,
            registration: Mutex::new(Registration::default()),
            tracked: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let task = tokio::spawn(browse::run(shared.clone(), events));
        Ok(MdnsPlugin {
            shared,
            port: link.port(),
            listening: link.local_addrs().to_vec(),
            link: Mutex::new(Some(link)),
            incoming: Mutex::new(Some(incoming)),
            task: Mutex::new(Some(task)),
        })
    }

    /// The TCP port of the link (the one advertised).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses the link listens on.
    pub fn listening(&self) -> &[SocketAddr] {
        &self.listening
    }

    /// The peer table's counters.
    pub fn stats(&self) -> TableStats {
        self.shared.table.stats()
    }

    /// The plugin's own counters.
    pub fn lan_stats(&self) -> LanStats {
        let (refused, dropped) = {
            let guard = self.link.lock().unwrap_or_else(|p| p.into_inner());
            guard.as_ref().map_or((0, 0), |link| {
                let c = link.counters();
                (
                    c.refused.load(Ordering::Relaxed),
                    c.dropped.load(Ordering::Relaxed),
                )
            })
        };
        LanStats {
            services_tracked: self.shared.tracked.load(Ordering::Relaxed),
            services_over_limit: self.shared.over_limit.load(Ordering::Relaxed),
            verifications: self.shared.verifications.load(Ordering::Relaxed),
            inbound_refused: refused,
            inbound_dropped: dropped,
        }
    }

    /// The instance full name advertised now, if any (random: see the module docs).
    pub fn instance_name(&self) -> Option<String> {
        let guard = self
            .shared
            .registration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        guard.current.as_ref().map(|(_, full, _)| full.clone())
    }

    /// Says goodbye (unregisters the service), stops mdns-sd, the browsing and the listeners.
    /// Later calls do nothing; advertising and links fail with [`Error::Closed`] afterwards, and
    /// [`Incoming`] ends.
    pub async fn shutdown(&self) {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        const WAIT_MS: u64 = 1_000;
        let current = {
            let mut guard = self
                .shared
                .registration
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            guard.current.take()
        };
        if let Some((_, fullname, _)) = current {
            if let Ok(status) = self.shared.daemon.unregister(&fullname) {
                let _ = tcp::within(&*self.shared.clock, WAIT_MS, status.recv_async()).await;
            }
        }
        if let Ok(status) = self.shared.daemon.shutdown() {
            let _ = tcp::within(&*self.shared.clock, WAIT_MS, status.recv_async()).await;
        }
        self.stop_tasks();
    }

    fn stop_tasks(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        if let Some(mut link) = self.link.lock().unwrap_or_else(|p| p.into_inner()).take() {
            link.close();
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

impl Drop for MdnsPlugin {
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::SeqCst) {
            // Never shut down: stop mdns-sd's thread (it says goodbye for what is registered).
            let _ = self.shared.daemon.shutdown();
        }
        self.stop_tasks();
    }
}

impl Discovery for MdnsPlugin {
    fn peers(&self) -> Vec<Peer> {
        self.shared.table.peers()
    }

    fn subscribe(&self) -> Subscription {
        self.shared.table.subscribe()
    }
}

#[async_trait::async_trait]
impl Link for MdnsPlugin {
    fn transport(&self) -> Transport {
        self.shared.transport
    }

    async fn send(&self, to: &Address, message: &[u8]) -> Result<()> {
        self.check_open()?;
        let clock = self.shared.clock.clone();
        tcp::send(
            &*clock,
            self.shared.config.handshake_timeout_ms,
            to,
            message,
        )
        .await
    }

    async fn connect(&self, to: &Address) -> Result<BoxedStream> {
        self.check_open()?;
        let clock = self.shared.clock.clone();
        tcp::connect(&*clock, self.shared.config.handshake_timeout_ms, to).await
    }

    fn incoming(&self) -> Option<Incoming> {
        self.incoming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Plugin for MdnsPlugin {
    fn advertise(&self, advert: Advert) -> Result<()> {
        self.check_open()?;
        let properties = txt::encode(&advert, self.port)?;
        let mut guard = self
            .shared
            .registration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Another key or a fresh beacon gets a fresh random name, so names do not link what
        // the adverts do not.
        let label = match &guard.current {
            Some((label, _, id)) if *id == advert.id => label.clone(),
            _ => random_label()?,
        };
        let host = format!("{label}.local.");
        let mut info =
            ServiceInfo::new(SERVICE_TYPE, &label, &host, (), self.port, &properties[..])
                .map_err(|e| daemon_error("describing our service", e))?
                .enable_addr_auto();
        info.set_interfaces(
            self.shared
                .config
                .interfaces
                .iter()
                .map(LanInterface::if_kind)
                .collect(),
        );
        let fullname = info.get_fullname().to_string();
        let lower = fullname.to_ascii_lowercase();
        // Known as ours before mdns-sd can echo it back.
        if !guard.own.contains(&lower) {
            guard.own.push_back(lower);
            if guard.own.len() > OWN_NAMES_KEPT {
                guard.own.pop_front();
            }
        }
        if let Some((_, old, _)) = &guard.current {
            if *old != fullname {
                let _ = self.shared.daemon.unregister(old);
            }
        }
        self.shared
            .daemon
            .register(info)
            .map_err(|e| daemon_error("registering our service", e))?;
        guard.current = Some((label, fullname, advert.id));
        Ok(())
    }
}

/// 64 random bits in hex: an instance label that says nothing.
fn random_label() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Error::Crypto(format!("random instance name: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The socket addresses (port 0) of the chosen interfaces, IPv4 first.
fn listen_addresses(interfaces: &[LanInterface]) -> Result<Vec<SocketAddr>> {
    let all = if_addrs::get_if_addrs().map_err(|e| Error::io("listing network interfaces", e))?;
    let mut out = Vec::new();
    for wanted in interfaces {
        let before = out.len();
        for i in &all {
            let matches = match wanted {
                LanInterface::Name(name) => i.name == *name,
                LanInterface::Addr(ip) => i.ip() == *ip,
            };
            if !matches {
                continue;
            }
            let addr = match i.ip() {
                IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                    SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, i.index.unwrap_or(0)))
                }
                ip => SocketAddr::new(ip, 0),
            };
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        if out.len() == before {
            return Err(Error::io(
                format!("finding interface {wanted:?}"),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no interface of that name or address has an IP address",
                ),
            ));
        }
    }
    out.sort_by_key(SocketAddr::is_ipv6);
    Ok(out)
}
