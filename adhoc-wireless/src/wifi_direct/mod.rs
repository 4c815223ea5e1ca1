//! Wi-Fi Direct (feature `wifi-direct`, Linux): peer-to-peer Wi-Fi groups through
//! wpa_supplicant, with the LAN plugin's mDNS discovery and TCP links on the group interface.
//!
//! No access point, no DHCP server, no root: the plugin needs only write access to
//! wpa_supplicant's control socket of the P2P device (`/var/run/wpa_supplicant/wlan0`, or
//! `p2p-dev-wlan0` where the driver gives P2P its own device) and a directory for its own
//! socket.
//!
//! # How it works
//!
//! 1. **Finding.** The plugin names the device `<prefix><8 random hex digits>` (`SET
//!    device_name`; prefix `THALI-` by default) and runs `P2P_FIND`. A device found
//!    (`P2P-DEVICE-FOUND`) whose name has the prefix is a candidate. The name marks a Thali
//!    device and nothing more: it carries no key id and no advert, so a stranger in radio range
//!    learns that a Thali device is there, not whose. (The alternatives were weighed: a P2P
//!    device name holds at most 32 bytes, too few for an advert — a key id alone is 52 base32
//!    characters; vendor-specific elements and service discovery (`P2P_SERV_DISC_REQ`) could
//!    carry one, but whatever rides there is readable by anyone in range before any
//!    authentication, and both need per-peer requests or driver support that varies between
//!    chips. The advert goes over the group instead, where it reaches only group members.)
//! 2. **Forming a group.** Of two candidates, the one with the lower P2P device address asks
//!    (`P2P_CONNECT <addr> pbc go_intent=N`), the other accepts its `P2P-GO-NEG-REQUEST` with
//!    the same command; GO negotiation (GO intent, then the tie-breaker) picks the group owner.
//!    Push-button WPS admits the pair; the group is WPA2-PSK with a fresh passphrase. The
//!    link's security does not rest on this: the device hub runs mutual TLS over every stream
//!    and pins key ids.
//! 3. **Addresses.** Both ends use the IPv6 link-local address the kernel gives the group
//!    interface when it comes up. wpa_supplicant runs no DHCP server for P2P groups (it can
//!    hand out IPv4 addresses in the EAPOL exchange, `ip_addr_go`/`ip_addr_start`, but only if
//!    the operator configures a pool on the GO), and static addresses derived from MAC
//!    addresses would need `CAP_NET_ADMIN` to assign. Link-local IPv6 needs no server, no
//!    configuration and no privilege, and the LAN plugin already dials link-local addresses
//!    with their scope (the group interface). The plugin waits until the address has passed
//!    duplicate address detection (about a second) before it listens.
//! 4. **Discovery and links on the group.** The LAN plugin ([`crate::mdns`]) runs on the group
//!    interface alone, with the same [`Advert`] as this plugin, feeding this plugin's peer
//!    table with [`Transport::WifiDirect`] addresses; [`Link::connect`] and [`Link::send`] are
//!    its TCP link (protocol in [`crate::mdns::tcp`]). When the group goes, its peers' Wi-Fi
//!    Direct addresses are forgotten at once.
//! 5. **Idle teardown.** When no stream is open and nothing was sent or received for
//!    [`WifiDirectConfig::idle_ms`] (0: never), the plugin removes the group
//!    (`P2P_GROUP_REMOVE`) and does not form one with the same peer again for
//!    [`WifiDirectConfig::rejoin_ms`], so two devices in range meet now and then to
//!    synchronise instead of holding a group (and the radio) all day.
//!
//! One group at a time. The state machine is [`group`]-level logic without IO, driven by the
//! events wpa_supplicant sends on a second, `ATTACH`ed control socket and by a one-second tick.
//!
//! # wpa_supplicant
//!
//! The control protocol is small (one text request per datagram, one reply), so the plugin
//! speaks it itself ([`CtrlSocket`]) with bounded, checked parsing ([`event`]). The crates that wrap
//! it were looked at: `wpactrl` 0.5 blocks a thread per call and uses `libc` with `unsafe`
//! (this workspace forbids `unsafe`), and `wpa-ctrl` 0.4 is blocking and BSL-1.0, outside the
//! licence allow-list. A configuration that works (Debian's wpasupplicant 2.10):
//!
//! ```text
//! ctrl_interface=/var/run/wpa_supplicant
//! update_config=0
//! device_name=THALI-init
//! device_type=1-0050F204-1
//! config_methods=push_button
//! p2p_no_group_iface=0
//! ```
//!
//! `p2p_no_group_iface=0` gives each group its own interface (`p2p-wlan0-0`), so the station
//! interface keeps its own connection and addresses, and the group interface's addresses are
//! the group's alone. See the crate README for the measured figures.
//!
//! # Bounds
//!
//! Event and reply datagrams: [`event::MAX_LINE`] bytes; fields read per line:
//! [`event::MAX_FIELDS`]; candidates remembered: 256; requests time out after
//! [`WifiDirectConfig::request_timeout_ms`]. On the group, the LAN plugin's bounds apply
//! ([`WifiDirectConfig::lan`]).

mod ctrl;
pub mod event;
pub mod group;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::discovery::{Discovery, SharedTable, Subscription};
use crate::error::{Error, Result};
use crate::link::{BoxedStream, Inbound, Incoming, Link, Plugin};
use crate::mdns::{LanInterface, MdnsConfig, MdnsPlugin};
use crate::peer::{Address, Advert, Peer, Transport};
use crate::table::TableStats;

pub use self::ctrl::CtrlSocket;
use self::event::{Event, parse_event, reply_field};
pub use self::event::{MacAddr, Role};
use self::group::{Action, Groups, Input, Phase, Policy};

/// Configuration of the Wi-Fi Direct plugin.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WifiDirectConfig {
    /// wpa_supplicant's control socket of the P2P device.
    pub ctrl_path: PathBuf,
    /// Where the plugin binds its own control sockets (default: the temp directory).
    pub socket_dir: PathBuf,
    /// Device names of Thali peers start with this (default `THALI-`; at most 23 bytes).
    pub name_prefix: String,
    /// Name the device `<prefix><random>` at start (default true; when false, the operator
    /// names it in wpa_supplicant's configuration).
    pub set_device_name: bool,
    /// Form groups with the candidates found (default true). When false, the plugin only
    /// accepts groups other devices ask for.
    pub auto_connect: bool,
    /// GO intent, 0 (rather be a client) ..= 15 (must be the owner). Default 7.
    pub go_intent: u8,
    /// How long forming a group may take (default 60 s).
    pub connect_timeout_ms: u64,
    /// Remove the group after this long with no stream open and nothing sent (default 60 s;
    /// 0: never).
    pub idle_ms: u64,
    /// Back-off before trying a peer again after a failure (default 20 s: longer than the
    /// peer may still wait for a group whose negotiation failed on our side only, about 17 s
    /// in wpa_supplicant 2.10).
    pub retry_ms: u64,
    /// Back-off before forming a group with the same peer after an idle teardown (default
    /// 5 min).
    pub rejoin_ms: u64,
    /// How often `P2P_FIND` is asked again while finding (default 2 min).
    pub refind_ms: u64,
    /// How long wpa_supplicant may take to answer a request (default 5 s).
    pub request_timeout_ms: u64,
    /// How long the group interface may take to get its link-local address (default 20 s).
    pub lan_ready_timeout_ms: u64,
    /// Remove the group at [`shutdown`](WifiDirectPlugin::shutdown) (default true).
    pub remove_group_on_shutdown: bool,
    /// The LAN plugin's settings on the group (its `interfaces` are replaced by the group
    /// interface).
    pub lan: MdnsConfig,
}

impl WifiDirectConfig {
    /// The defaults, with wpa_supplicant's control socket at `ctrl_path`.
    pub fn new(ctrl_path: impl Into<PathBuf>) -> WifiDirectConfig {
        WifiDirectConfig {
            ctrl_path: ctrl_path.into(),
            socket_dir: std::env::temp_dir(),
            name_prefix: "THALI-".to_string(),
            set_device_name: true,
            auto_connect: true,
            go_intent: 7,
            connect_timeout_ms: 60_000,
            idle_ms: 60_000,
            retry_ms: 20_000,
            rejoin_ms: 300_000,
            refind_ms: 120_000,
            request_timeout_ms: 5_000,
            lan_ready_timeout_ms: 20_000,
            remove_group_on_shutdown: true,
            lan: MdnsConfig::new(Vec::new()),
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            name_prefix: self.name_prefix.clone(),
            auto_connect: self.auto_connect,
            go_intent: self.go_intent.min(15),
            connect_timeout_ms: self.connect_timeout_ms,
            idle_ms: self.idle_ms,
            retry_ms: self.retry_ms,
            rejoin_ms: self.rejoin_ms,
            refind_ms: self.refind_ms.max(1_000),
        }
    }
}

/// Counters and figures of the Wi-Fi Direct plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WifiDirectStats {
    /// Groups started (`P2P-GROUP-STARTED`).
    pub groups_started: u64,
    /// Groups removed (`P2P-GROUP-REMOVED`).
    pub groups_removed: u64,
    /// Attempts that failed (negotiation or formation failure, timeout, refused request).
    pub failures: u64,
    /// The latest group's formation time: from our first step (our `P2P_CONNECT`, or the
    /// peer's request) to `P2P-GROUP-STARTED`, in ms.
    pub last_formation_ms: Option<u64>,
    /// From `P2P-GROUP-STARTED` to the LAN plugin listening on the group, in ms.
    pub last_lan_ready_ms: Option<u64>,
    /// Events read.
    pub events: u64,
    /// Datagrams that were not a readable event (too long, not UTF-8, empty).
    pub events_unreadable: u64,
    /// Inbound streams and messages refused because the application's queue was full.
    pub inbound_refused: u64,
    /// The latest error, as text.
    pub last_error: Option<String>,
}

/// The group the plugin is in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupInfo {
    /// Its network interface.
    pub ifname: String,
    /// Our role.
    pub role: Role,
    /// Whether the LAN plugin runs on it (listening, advertising, browsing).
    pub lan_ready: bool,
}

/// Streams open and when the link was last used.
struct Activity {
    clock: Arc<dyn Clock>,
    open: AtomicU64,
    last_used: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_used
            .fetch_max(self.clock.now_millis(), Ordering::Relaxed);
    }
}

/// A stream counted as open until it is dropped.
struct Counted {
    inner: BoxedStream,
    activity: Arc<Activity>,
}

impl Counted {
    fn boxed(inner: BoxedStream, activity: &Arc<Activity>) -> BoxedStream {
        activity.open.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Box::new(Counted {
            inner,
            activity: activity.clone(),
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// The LAN plugin running on the group.
struct Lan {
    plugin: Arc<MdnsPlugin>,
    forward: JoinHandle<()>,
}

/// What the plugin's handle and its tasks share.
struct Inner {
    config: WifiDirectConfig,
    clock: Arc<dyn Clock>,
    ctrl: CtrlSocket,
    own: MacAddr,
    device_name: Option<String>,
    table: SharedTable,
    lan: Mutex<Option<Lan>>,
    /// Bumped at every group start and stop, so a late LAN start for a gone group gives up.
    generation: AtomicU64,
    group: Mutex<Option<GroupInfo>>,
    advert: Mutex<Option<Advert>>,
    inbound: mpsc::Sender<Inbound>,
    activity: Arc<Activity>,
    stats: Mutex<WifiDirectStats>,
    closed: AtomicBool,
}

impl Inner {
    fn stats(&self, f: impl FnOnce(&mut WifiDirectStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn error(&self, e: &Error) {
        let text = e.to_string();
        self.stats(|s| s.last_error = Some(text));
    }

    fn current_lan(&self) -> Option<Arc<MdnsPlugin>> {
        let guard = self.lan.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|l| l.plugin.clone())
    }

    async fn request(&self, command: &str) -> Result<String> {
        self.ctrl
            .request(&*self.clock, self.config.request_timeout_ms, command)
            .await
    }

    async fn request_ok(&self, command: &str) -> Result<()> {
        self.ctrl
            .request_ok(&*self.clock, self.config.request_timeout_ms, command)
            .await
    }

    /// Stops the LAN plugin on the group, and forgets the peers' addresses on it.
    async fn stop_lan(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let lan = self.lan.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(lan) = lan {
            lan.forward.abort();
            lan.plugin.shutdown().await;
        }
        for peer in self.table.peers() {
            for a in peer.addresses {
                if a.transport == Transport::WifiDirect {
                    self.table.forget(Transport::WifiDirect, &a.address);
                }
            }
        }
    }
}

/// The Wi-Fi Direct plugin. See the module docs.
pub struct WifiDirectPlugin {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
    incoming: Mutex<Option<Incoming>>,
}

impl std::fmt::Debug for WifiDirectPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WifiDirectPlugin")
            .field("ctrl", &self.inner.config.ctrl_path)
            .field("own", &self.inner.own)
            .field("group", &self.group())
            .finish_non_exhaustive()
    }
}

impl WifiDirectPlugin {
    /// Starts on tokio's clock. See [`start_with_clock`](Self::start_with_clock).
    pub async fn start(config: WifiDirectConfig) -> Result<WifiDirectPlugin> {
        WifiDirectPlugin::start_with_clock(config, Arc::new(crate::TokioClock::new())).await
    }

    /// Connects to wpa_supplicant, names the device, attaches for events and starts finding.
    /// Nothing is advertised on a group until [`advertise`](Plugin::advertise). Must run inside
    /// a tokio runtime; stop it with [`shutdown`](Self::shutdown).
    pub async fn start_with_clock(
        config: WifiDirectConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<WifiDirectPlugin> {
        if config.name_prefix.is_empty()
            || config.name_prefix.len() > event::MAX_DEVICE_NAME - 9
            || !config
                .name_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidConfig(format!(
                "the device name prefix {:?} must be 1..=23 bytes of [A-Za-z0-9_-]",
                config.name_prefix
            )));
        }
        let ctrl = CtrlSocket::open(&config.ctrl_path, &config.socket_dir)?;
        let timeout = config.request_timeout_ms;
        let status = ctrl.request(&*clock, timeout, "STATUS").await?;
        let own = reply_field(&status, "p2p_device_address")
            .or_else(|| reply_field(&status, "address"))
            .and_then(MacAddr::parse)
            .ok_or_else(|| {
                Error::malformed("wpa_supplicant STATUS", "no P2P device address in it")
            })?;
        let device_name = if config.set_device_name {
            let name = format!("{}{}", config.name_prefix, random_hex()?);
            ctrl.request_ok(&*clock, timeout, &format!("SET device_name {name}"))
                .await?;
            Some(name)
        } else {
            None
        };
        let events = CtrlSocket::open(&config.ctrl_path, &config.socket_dir)?;
        events.request_ok(&*clock, timeout, "ATTACH").await?;

        let (inbound, incoming) = Incoming::channel(config.lan.incoming_capacity);
        let groups = Groups::new(config.policy());
        let inner = Arc::new(Inner {
            table: SharedTable::new(config.lan.table.clone()),
            activity: Arc::new(Activity {
                clock: clock.clone(),
                open: AtomicU64::new(0),
                last_used: AtomicU64::new(0),
            }),
            config,
            clock,
            ctrl,
            own,
            device_name,
            lan: Mutex::new(None),
            generation: AtomicU64::new(0),
            group: Mutex::new(None),
            advert: Mutex::new(None),
            inbound,
            stats: Mutex::new(WifiDirectStats::default()),
            closed: AtomicBool::new(false),
        });
        let task = tokio::spawn(run(inner.clone(), events, groups));
        Ok(WifiDirectPlugin {
            inner,
            task: Mutex::new(Some(task)),
            incoming: Mutex::new(Some(incoming)),
        })
    }

    /// Our P2P device address.
    pub fn device_address(&self) -> MacAddr {
        self.inner.own
    }

    /// The device name the plugin set, if it set one.
    pub fn device_name(&self) -> Option<&str> {
        self.inner.device_name.as_deref()
    }

    /// The group we are in, if any.
    pub fn group(&self) -> Option<GroupInfo> {
        self.inner
            .group
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The plugin's counters and figures.
    pub fn wifi_stats(&self) -> WifiDirectStats {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The peer table's counters.
    pub fn stats(&self) -> TableStats {
        self.inner.table.stats()
    }

    /// Stops finding, removes the group (if so configured), stops the LAN plugin and detaches
    /// from wpa_supplicant. Later calls do nothing; links fail with [`Error::Closed`]
    /// afterwards.
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        let group = self.group();
        self.inner.stop_lan().await;
        let _ = self.inner.request_ok("P2P_STOP_FIND").await;
        if let (Some(group), true) = (group, self.inner.config.remove_group_on_shutdown) {
            let _ = self
                .inner
                .request_ok(&format!("P2P_GROUP_REMOVE {}", group.ifname))
                .await;
        }
        *self.inner.group.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn lan(&self) -> Result<Arc<MdnsPlugin>> {
        self.check_open()?;
        self.inner
            .current_lan()
            .ok_or_else(|| Error::Unreachable("no Wi-Fi Direct group is up".to_string()))
    }
}

impl Drop for WifiDirectPlugin {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        // The LAN plugin says goodbye when it is dropped; the group stays until
        // wpa_supplicant's own idle timeout or the peer removes it.
        if let Some(lan) = self
            .inner
            .lan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            lan.forward.abort();
        }
    }
}

impl Discovery for WifiDirectPlugin {
    fn peers(&self) -> Vec<Peer> {
        self.inner.table.peers()
    }

    fn subscribe(&self) -> Subscription {
        self.inner.table.subscribe()
    }
}

#[async_trait::async_trait]
impl Link for WifiDirectPlugin {
    fn transport(&self) -> Transport {
        Transport::WifiDirect
    }

    async fn send(&self, to: &Address, message: &[u8]) -> Result<()> {
        let lan = self.lan()?;
        self.inner.activity.touch();
        let sent = lan.send(to, message).await;
        self.inner.activity.touch();
        sent
    }

    async fn connect(&self, to: &Address) -> Result<BoxedStream> {
        let lan = self.lan()?;
        let stream = lan.connect(to).await?;
        Ok(Counted::boxed(stream, &self.inner.activity))
    }

    fn incoming(&self) -> Option<Incoming> {
        self.incoming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Plugin for WifiDirectPlugin {
    fn advertise(&self, advert: Advert) -> Result<()> {
        self.check_open()?;
        *self.inner.advert.lock().unwrap_or_else(|p| p.into_inner()) = Some(advert.clone());
        match self.inner.current_lan() {
            Some(lan) => lan.advertise(advert),
            None => Ok(()),
        }
    }
}

/// 32 random bits in hex (the device name's suffix).
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| Error::Crypto(format!("random device name: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How often the state machine is ticked.
const TICK_MS: u64 = 1_000;

/// The plugin's task: wpa_supplicant's events and the tick into the state machine, its
/// actions out.
async fn run(inner: Arc<Inner>, events: CtrlSocket, mut groups: Groups) {
    let now = inner.clock.now_millis();
    let actions = groups.handle(now, Input::Start(inner.own));
    execute(&inner, &mut groups, actions).await;
    let mut next_tick = now.saturating_add(TICK_MS);
    loop {
        let now = inner.clock.now_millis();
        let wait = Duration::from_millis(next_tick.saturating_sub(now));
        let input = tokio::select! {
            line = events.recv_line() => match line {
                Ok(Some(line)) => match parse_event(&line) {
                    Some(event) => {
                        inner.stats(|s| s.events += 1);
                        Some(Input::Event(event))
                    }
                    None => {
                        inner.stats(|s| s.events_unreadable += 1);
                        None
                    }
                },
                Ok(None) => {
                    inner.stats(|s| s.events_unreadable += 1);
                    None
                }
                Err(e) => {
                    inner.error(&e);
                    // Do not spin on a socket that fails.
                    inner.clock.sleep(Duration::from_millis(100)).await;
                    None
                }
            },
            () = inner.clock.sleep(wait) => {
                next_tick = inner.clock.now_millis().saturating_add(TICK_MS);
                Some(Input::Tick {
                    open: inner.activity.open.load(Ordering::Relaxed),
                    last_used: inner.activity.last_used.load(Ordering::Relaxed),
                })
            }
        };
        let Some(input) = input else { continue };
        if let Input::Event(e) = &input {
            match e {
                Event::GroupStarted { .. } => inner.stats(|s| s.groups_started += 1),
                Event::GroupRemoved { .. } => inner.stats(|s| s.groups_removed += 1),
                Event::GoNegFailure { .. } | Event::GroupFormationFailure => {
                    inner.stats(|s| s.failures += 1);
                }
                _ => {}
            }
        }
        let was_connecting = matches!(groups.phase(), Phase::Connecting { .. });
        let now = inner.clock.now_millis();
        let actions = groups.handle(now, input);
        if was_connecting && *groups.phase() == Phase::Finding {
            inner.stats(|s| s.failures += 1);
        }
        execute(&inner, &mut groups, actions).await;
    }
}

/// Carries out the state machine's actions; a refused connect is fed back as a failure.
async fn execute(inner: &Arc<Inner>, groups: &mut Groups, actions: Vec<Action>) {
    let mut queue: std::collections::VecDeque<Action> = actions.into();
    // A refused connect feeds back at most once per call.
    let mut feedback = 0;
    while let Some(action) = queue.pop_front() {
        let result =
            match action {
                Action::Find => inner.request_ok("P2P_FIND").await,
                Action::Cancel => inner.request_ok("P2P_CANCEL").await,
                Action::Connect(addr, intent) => {
                    let command = format!("P2P_CONNECT {addr} pbc go_intent={intent}");
                    let sent = inner.request(&command).await;
                    match sent {
                        Ok(reply) if reply.trim_end() == "OK" => Ok(()),
                        other => {
                            let e = match other {
                                Ok(reply) => ctrl::refused(&command, &reply),
                                Err(e) => e,
                            };
                            if feedback < 1 {
                                feedback += 1;
                                let now = inner.clock.now_millis();
                                inner.stats(|s| s.failures += 1);
                                queue.extend(groups.handle(
                                    now,
                                    Input::Event(Event::GoNegFailure { status: None }),
                                ));
                            }
                            Err(e)
                        }
                    }
                }
                Action::RemoveGroup(ifname) => {
                    inner
                        .request_ok(&format!("P2P_GROUP_REMOVE {ifname}"))
                        .await
                }
                Action::StartLan(ifname, role) => {
                    inner.stop_lan().await;
                    let generation = inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
                    *inner.group.lock().unwrap_or_else(|p| p.into_inner()) = Some(GroupInfo {
                        ifname: ifname.clone(),
                        role,
                        lan_ready: false,
                    });
                    let formed = groups.formed_in();
                    inner.stats(|s| s.last_formation_ms = formed);
                    inner.activity.touch();
                    tokio::spawn(start_lan(inner.clone(), ifname, generation));
                    Ok(())
                }
                Action::StopLan(_) => {
                    inner.stop_lan().await;
                    *inner.group.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    Ok(())
                }
            };
        if let Err(e) = result {
            inner.error(&e);
        }
    }
}

/// Whether `ifname` has an IPv6 link-local address.
fn has_link_local(ifname: &str) -> bool {
    if_addrs::get_if_addrs().is_ok_and(|all| {
        all.iter().any(|i| {
            i.name == ifname
                && matches!(i.ip(), std::net::IpAddr::V6(v6) if v6.is_unicast_link_local())
        })
    })
}

/// Waits for the group interface's link-local address to be usable, then runs the LAN plugin
/// on it (unless the group went meanwhile).
async fn start_lan(inner: Arc<Inner>, ifname: String, generation: u64) {
    const POLL_MS: u64 = 200;
    let t0 = inner.clock.now_millis();
    let current = |inner: &Inner| inner.generation.load(Ordering::SeqCst) == generation;
    let mut last_error = None;
    while current(&inner) && !inner.closed.load(Ordering::SeqCst) {
        if has_link_local(&ifname) {
            let mut config = inner.config.lan.clone();
            config.interfaces = vec![LanInterface::Name(ifname.clone())];
            // Listening fails while the address is tentative (duplicate address detection).
            match MdnsPlugin::start_on(
                config,
                inner.clock.clone(),
                inner.table.clone(),
                Transport::WifiDirect,
            )
            .await
            {
                Ok(plugin) => {
                    install_lan(&inner, ifname, generation, plugin, t0).await;
                    return;
                }
                Err(e) => last_error = Some(e),
            }
        }
        if inner.clock.now_millis().saturating_sub(t0) >= inner.config.lan_ready_timeout_ms {
            let e = Error::Unreachable(format!(
                "the group interface {ifname} had no usable link-local address after {} ms{}",
                inner.config.lan_ready_timeout_ms,
                last_error.map(|e| format!(" ({e})")).unwrap_or_default()
            ));
            inner.error(&e);
            return;
        }
        inner.clock.sleep(Duration::from_millis(POLL_MS)).await;
    }
}

async fn install_lan(
    inner: &Arc<Inner>,
    ifname: String,
    generation: u64,
    plugin: MdnsPlugin,
    t0: u64,
) {
    let advert = inner
        .advert
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(advert) = advert {
        if let Err(e) = plugin.advertise(advert) {
            inner.error(&e);
        }
    }
    let plugin = Arc::new(plugin);
    let forward = match plugin.incoming() {
        Some(incoming) => tokio::spawn(forward(inner.clone(), incoming)),
        None => tokio::spawn(async {}),
    };
    let stale = {
        let mut guard = inner.lan.lock().unwrap_or_else(|p| p.into_inner());
        if inner.generation.load(Ordering::SeqCst) == generation
            && !inner.closed.load(Ordering::SeqCst)
        {
            *guard = Some(Lan {
                plugin: plugin.clone(),
                forward,
            });
            None
        } else {
            Some(forward)
        }
    };
    match stale {
        Some(forward) => {
            // The group went while the plugin started.
            forward.abort();
            plugin.shutdown().await;
        }
        None => {
            let ready = inner.clock.now_millis().saturating_sub(t0);
            inner.stats(|s| s.last_lan_ready_ms = Some(ready));
            let mut guard = inner.group.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(group) = guard.as_mut().filter(|g| g.ifname == ifname) {
                group.lan_ready = true;
            }
        }
    }
}

/// Hands what peers open and send on the group to the application, counting streams.
async fn forward(inner: Arc<Inner>, mut incoming: Incoming) {
    while let Some(item) = incoming.next().await {
        inner.activity.touch();
        let item = match item {
            Inbound::Stream {
                transport,
                from,
                stream,
            } => Inbound::Stream {
                transport,
                from,
                stream: Counted::boxed(stream, &inner.activity),
            },
            other => other,
        };
        if inner.inbound.try_send(item).is_err() {
            inner.stats(|s| s.inbound_refused += 1);
        }
    }
}

#[cfg(test)]
mod tests;
