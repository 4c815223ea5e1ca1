//! The battery-smart sync scheduler: whether to sync with a peer met by radio, how much to move,
//! and how often to open a discovery window, from the power state, the link, the pending work
//! and the history with that peer.
//!
//! Pure code, the rustls way: nothing here reads a clock, sleeps or touches a radio. Time is the
//! caller's `now_ms` (milliseconds on any monotonic clock, simulated in tests), and the caller
//! acts on the answers:
//!
//! - [`Scheduler::on_contact`] when a peer is met (or asks to sync): a [`Plan`] saying whether to
//!   sync, the byte cap, how much of it may carry others' messages, and why.
//! - [`Scheduler::on_synced`] after every session a plan allowed, even one that failed or moved
//!   nothing (so a flaky peer is not retried at every contact).
//! - [`Scheduler::next_wakeup`] after a discovery window: when to scan/advertise again (the radio
//!   duty cycle), or `None` to stay silent.
//!
//! # Power bands and their defaults
//!
//! The power state maps to a [`Band`]; each band has a [`BandPolicy`]. A stricter band never syncs
//! more often, never moves more and never scans more often than a looser one
//! ([`Policy::check`] enforces this for custom policies too).
//!
//! | Band | Power | Syncs a peer for | Min interval per peer: has work / pull | Cap per contact (LAN) | Of which others' | Discovery every: has work / idle |
//! |---|---|---|---|---|---|---|
//! | `Plugged` | mains, or charging | everything | 2 s / 2 s | unlimited | unlimited | 10 s / 10 s |
//! | `High` | ≥ 50 % | everything | 60 s / 5 min | 4 MiB | 4 MiB | 30 s / 60 s |
//! | `Medium` | 20–49 % | everything | 5 min / 30 min | 1 MiB | 256 KiB | 60 s / 5 min |
//! | `Low` | 5–19 % | own messages and receipts | 15 min / 2 h | 256 KiB | none | 5 min / 15 min |
//! | `Critical` | < 5 %, or low-power mode | own urgent messages | 30 min / never | 64 KiB | none | 15 min / never |
//!
//! "Has work" means something the band sends is pending: own messages (or receipts) and, where
//! the band carries for others, carried messages; in `Critical`, only own urgent messages. A
//! *pull* is a sync with nothing to send, so that a node still receives what peers carry for it.
//!
//! Across all bands:
//!
//! | Setting | Default |
//! |---|---|
//! | Cap scaled by link cost | × 10 / [`Transport::cost`]: LAN and Sim × 1, Wi-Fi Direct × ½, BLE × ⅕, Tor × ⅒ |
//! | Metered link | at most 1 MiB per contact, in every band |
//! | Battery budget | 128 MiB per 24 h window moved while on battery; then no sync on battery |
//! | Low-power mode | the `Critical` band (or the battery's band if stricter) |
//! | Peers remembered | 4096 (the least recently synced is forgotten first) |
//!
//! Why these numbers:
//!
//! - Thresholds 50 / 20 / 5 %: phones warn at 20 % and shut down near 0 %; 5 % is the last few
//!   minutes of use, kept for the owner's urgent messages.
//! - `Plugged` 2 s interval: absorbs the burst of adverts a peer sends when it appears, yet
//!   syncs at every real contact (mains energy is free).
//! - `High` 60 s: a walking contact lasts minutes, so one sync a minute per peer still catches new
//!   messages without re-syncing at every advert; pulls every 5 min cost little at this level.
//! - `Medium` 5 min / 30 min: a new message still leaves within a contact or two; a node with
//!   nothing to send still hears from each peer twice an hour.
//! - `Low` 15 min / 2 h: the owner's messages and receipts still go out, relaying stops (others'
//!   traffic is not worth the owner's last fifth of battery); a pull every 2 h per peer.
//! - `Critical` 30 min, no pulls: only what the owner marked urgent, one try per peer per half hour.
//! - 4 MiB at `High`: a few photos or thousands of text messages; about 2 s of Wi-Fi airtime,
//!   and the ⅕ scaling keeps BLE near a minute at 100 kbit/s (seconds on BLE 5's 2M PHY).
//! - 1 MiB / 256 KiB at `Medium`: text and small pictures go through; relaying for others keeps a
//!   quarter of it.
//! - 256 KiB at `Low`, 64 KiB at `Critical`: hundreds of text messages, then dozens: a message
//!   and its receipts, not a backlog.
//! - × 10 / cost: radio time per byte grows with the cost (BLE moves ~100 kbit/s, Tor builds
//!   circuits and crosses the internet), so a contact over a dear link moves proportionally less.
//! - Metered 1 MiB: a metered link costs someone money; a text backlog fits, a video does not.
//! - 128 MiB a day on battery: bounds the worst day (a crowd of relays) to about a minute of
//!   Wi-Fi or a few hours of BLE airtime.
//! - Discovery 10 s on power; 30 s–60 s at `High`; minutes below: scanning is the radio's largest
//!   steady drain, so the window interval grows as the battery falls and when nothing waits.
//! - 4096 peers: well under 1 MiB of history, more people than a phone meets in a week.
//!
//! # Example
//!
//! ```
//! use adhoc_wireless::Transport;
//! use high_latency_mesh::schedule::{LinkKind, Pending, Power, Reason, Scheduler};
//!
//! let mut sched = Scheduler::<u64>::default();
//! let pending = Pending { own_messages: 1, own_bytes: 2_000, ..Pending::default() };
//! let phone = Power::battery(35);
//!
//! // A peer met over BLE on a 35 % battery: sync, capped at 1 MiB / 5.
//! let plan = sched.on_contact(0, &7, LinkKind::new(Transport::Ble), phone, pending);
//! assert!(plan.sync);
//! assert_eq!(plan.max_bytes, (1 << 20) / 5);
//! sched.on_synced(0, 7, 2_000, phone);
//!
//! // Met again 5 s later with one more message: too soon on battery, fine on mains.
//! let plan = sched.on_contact(5_000, &7, LinkKind::new(Transport::Ble), phone, pending);
//! assert_eq!(plan.reason, Reason::TooSoon);
//! let plan = sched.on_contact(5_000, &7, LinkKind::new(Transport::Ble), Power::MAINS, pending);
//! assert!(plan.sync);
//!
//! // When to scan again on this battery with a message waiting: in 60 s.
//! assert_eq!(sched.next_wakeup(5_000, phone, pending), Some(65_000));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use adhoc_wireless::Transport;

use crate::error::{Error, Result};

/// A byte cap meaning "no cap".
pub const UNLIMITED: u64 = u64::MAX;

/// The length of the battery budget's window: 24 hours.
pub const BUDGET_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// The link cost at which a band's caps apply unscaled (LAN's [`Transport::cost`]).
const REFERENCE_COST: u32 = 10;

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The device's power state, as the platform reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Power {
    /// Battery level in percent (values above 100 count as 100); `None` for a device on mains
    /// with no battery.
    pub battery_percent: Option<u8>,
    /// The battery is charging.
    pub charging: bool,
    /// The user or the OS asked to save power (iOS Low Power Mode, Android Battery Saver).
    pub low_power_mode: bool,
}

impl Power {
    /// On mains, no battery.
    pub const MAINS: Power = Power {
        battery_percent: None,
        charging: false,
        low_power_mode: false,
    };

    /// On battery at `percent`, not charging, no low-power mode.
    pub const fn battery(percent: u8) -> Power {
        Power {
            battery_percent: Some(percent),
            charging: false,
            low_power_mode: false,
        }
    }
}

/// The link a peer was met over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkKind {
    /// The transport; its [`Transport::cost`] scales the caps.
    pub transport: Transport,
    /// The link costs money per byte (a cellular hotspot, a Tor bridge over mobile data).
    pub metered: bool,
}

impl LinkKind {
    /// An unmetered link over `transport`.
    pub const fn new(transport: Transport) -> LinkKind {
        LinkKind {
            transport,
            metered: false,
        }
    }

    /// A metered link over `transport`.
    pub const fn metered(transport: Transport) -> LinkKind {
        LinkKind {
            transport,
            metered: true,
        }
    }
}

impl From<Transport> for LinkKind {
    fn from(transport: Transport) -> LinkKind {
        LinkKind::new(transport)
    }
}

/// The work waiting on this node (all of it, not per peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pending {
    /// Messages this node wrote that have not been delivered (its own outbox).
    pub own_messages: u64,
    /// Their size in bytes.
    pub own_bytes: u64,
    /// How many of the own messages the user marked urgent (the only ones sent on
    /// [`Band::Critical`]).
    pub urgent_messages: u64,
    /// Bytes of other people's messages this node carries.
    pub carried_bytes: u64,
    /// Delivery receipts to spread (they let carriers drop delivered copies).
    pub receipts: u64,
}

/// How strict the scheduler is, from the power state: each band is at least as strict as the one
/// before it (the order of the variants, which `Ord` follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Band {
    /// On mains, or charging.
    Plugged,
    /// On battery, at or above [`Policy::high_percent`].
    High,
    /// On battery, at or above [`Policy::medium_percent`].
    Medium,
    /// On battery, at or above [`Policy::low_percent`].
    Low,
    /// On battery below [`Policy::low_percent`], or in low-power mode (by default).
    Critical,
}

impl Band {
    /// A short name for logs (`plugged`, `high`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Band::Plugged => "plugged",
            Band::High => "high",
            Band::Medium => "medium",
            Band::Low => "low",
            Band::Critical => "critical",
        }
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one [`Band`] allows. Byte caps apply at LAN cost and shrink for dearer links.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BandPolicy {
    /// Least time between two syncs with the same peer when this node has work to send.
    pub min_interval_ms: u64,
    /// Least time between two syncs with the same peer when it has nothing to send (a pull, to
    /// receive what the peer carries); `None`: never pull. At least `min_interval_ms`.
    pub pull_interval_ms: Option<u64>,
    /// Bytes per contact, both directions together, at LAN cost ([`UNLIMITED`]: no cap).
    pub max_bytes: u64,
    /// Of those, bytes of other people's messages (carried to or taken from the peer); 0: carry
    /// nothing for others.
    pub relay_max_bytes: u64,
    /// Send only own messages marked urgent: no receipts, nothing carried.
    pub urgent_only: bool,
    /// Time between the starts of two discovery windows when this node has work to send;
    /// `None`: do not scan or advertise.
    pub scan_interval_ms: Option<u64>,
    /// Time between discovery windows when it has nothing to send; `None`: do not scan. At least
    /// `scan_interval_ms`.
    pub idle_scan_interval_ms: Option<u64>,
}

/// The scheduler's configuration: thresholds, one [`BandPolicy`] per [`Band`], and the limits
/// that apply across bands. [`Default`] gives the documented defaults (see the
/// [module docs](self)); change fields on a default and [`check`](Policy::check) the result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Battery percent from which [`Band::High`] applies (default 50).
    pub high_percent: u8,
    /// Battery percent from which [`Band::Medium`] applies (default 20).
    pub medium_percent: u8,
    /// Battery percent from which [`Band::Low`] applies; below it, [`Band::Critical`] (default 5).
    pub low_percent: u8,
    /// The band low-power mode imposes, unless the battery's is stricter (default
    /// [`Band::Critical`]).
    pub low_power_mode_band: Band,
    /// On mains or charging.
    pub plugged: BandPolicy,
    /// Battery at or above `high_percent`.
    pub high: BandPolicy,
    /// Battery at or above `medium_percent`.
    pub medium: BandPolicy,
    /// Battery at or above `low_percent`.
    pub low: BandPolicy,
    /// Battery below `low_percent`.
    pub critical: BandPolicy,
    /// Cap per contact over a metered link, in every band (default 1 MiB).
    pub metered_max_bytes: u64,
    /// Bytes moved on battery per [`BUDGET_WINDOW_MS`] window, after which no sync happens on
    /// battery until the window closes (default 128 MiB; [`UNLIMITED`] to disable).
    pub battery_bytes_per_window: u64,
    /// Peers whose history is kept; the least recently synced is forgotten first (default 4096).
    pub max_peers: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            high_percent: 50,
            medium_percent: 20,
            low_percent: 5,
            low_power_mode_band: Band::Critical,
            plugged: BandPolicy {
                min_interval_ms: 2 * SECOND,
                pull_interval_ms: Some(2 * SECOND),
                max_bytes: UNLIMITED,
                relay_max_bytes: UNLIMITED,
                urgent_only: false,
                scan_interval_ms: Some(10 * SECOND),
                idle_scan_interval_ms: Some(10 * SECOND),
            },
            high: BandPolicy {
                min_interval_ms: MINUTE,
                pull_interval_ms: Some(5 * MINUTE),
                max_bytes: 4 * MIB,
                relay_max_bytes: 4 * MIB,
                urgent_only: false,
                scan_interval_ms: Some(30 * SECOND),
                idle_scan_interval_ms: Some(MINUTE),
            },
            medium: BandPolicy {
                min_interval_ms: 5 * MINUTE,
                pull_interval_ms: Some(30 * MINUTE),
                max_bytes: MIB,
                relay_max_bytes: 256 * KIB,
                urgent_only: false,
                scan_interval_ms: Some(MINUTE),
                idle_scan_interval_ms: Some(5 * MINUTE),
            },
            low: BandPolicy {
                min_interval_ms: 15 * MINUTE,
                pull_interval_ms: Some(120 * MINUTE),
                max_bytes: 256 * KIB,
                relay_max_bytes: 0,
                urgent_only: false,
                scan_interval_ms: Some(5 * MINUTE),
                idle_scan_interval_ms: Some(15 * MINUTE),
            },
            critical: BandPolicy {
                min_interval_ms: 30 * MINUTE,
                pull_interval_ms: None,
                max_bytes: 64 * KIB,
                relay_max_bytes: 0,
                urgent_only: true,
                scan_interval_ms: Some(15 * MINUTE),
                idle_scan_interval_ms: None,
            },
            metered_max_bytes: MIB,
            battery_bytes_per_window: 128 * MIB,
            max_peers: 4096,
        }
    }
}

impl Policy {
    /// The band for a power state.
    pub fn band(&self, power: Power) -> Band {
        let by_battery = match power.battery_percent {
            None => Band::Plugged,
            Some(_) if power.charging => Band::Plugged,
            Some(p) if p >= self.high_percent => Band::High,
            Some(p) if p >= self.medium_percent => Band::Medium,
            Some(p) if p >= self.low_percent => Band::Low,
            Some(_) => Band::Critical,
        };
        if power.low_power_mode {
            by_battery.max(self.low_power_mode_band)
        } else {
            by_battery
        }
    }

    /// What a band allows.
    pub fn band_policy(&self, band: Band) -> &BandPolicy {
        match band {
            Band::Plugged => &self.plugged,
            Band::High => &self.high,
            Band::Medium => &self.medium,
            Band::Low => &self.low,
            Band::Critical => &self.critical,
        }
    }

    /// Checks that the policy can work: thresholds in order (`low ≤ medium ≤ high ≤ 100`), each
    /// band's pull and idle scan no more frequent than its sends and scans, and each band at
    /// least as strict as the one before it (intervals no shorter, caps no larger, urgent-only
    /// kept). [`Error::InvalidConfig`] says what is wrong.
    pub fn check(&self) -> Result<()> {
        if !(self.low_percent <= self.medium_percent
            && self.medium_percent <= self.high_percent
            && self.high_percent <= 100)
        {
            return Err(invalid(format!(
                "battery thresholds out of order: low {} <= medium {} <= high {} <= 100 required",
                self.low_percent, self.medium_percent, self.high_percent
            )));
        }
        if self.max_peers == 0 {
            return Err(invalid("max_peers must be at least 1".into()));
        }
        let bands = [
            Band::Plugged,
            Band::High,
            Band::Medium,
            Band::Low,
            Band::Critical,
        ];
        for band in bands {
            let b = self.band_policy(band);
            if b.pull_interval_ms
                .is_some_and(|pull| pull < b.min_interval_ms)
            {
                return Err(invalid(format!(
                    "{band}: pull_interval_ms must be at least min_interval_ms"
                )));
            }
            if !never_le(b.scan_interval_ms, b.idle_scan_interval_ms) {
                return Err(invalid(format!(
                    "{band}: idle_scan_interval_ms must be at least scan_interval_ms"
                )));
            }
        }
        for pair in bands.windows(2) {
            let &[looser, stricter] = pair else { continue };
            let (a, b) = (self.band_policy(looser), self.band_policy(stricter));
            let in_order = a.min_interval_ms <= b.min_interval_ms
                && never_le(a.pull_interval_ms, b.pull_interval_ms)
                && a.max_bytes >= b.max_bytes
                && a.relay_max_bytes >= b.relay_max_bytes
                && (!a.urgent_only || b.urgent_only)
                && never_le(a.scan_interval_ms, b.scan_interval_ms)
                && never_le(a.idle_scan_interval_ms, b.idle_scan_interval_ms);
            if !in_order {
                return Err(invalid(format!(
                    "band {stricter} is looser than band {looser}: intervals must not shrink, \
                     caps must not grow and urgent_only must stay set as the battery falls"
                )));
            }
        }
        Ok(())
    }
}

/// `a <= b` where `None` means never (infinitely long).
fn never_le(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a <= b,
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidConfig(format!("schedule policy: {reason}"))
}

/// A band cap scaled for a link: × 10 / cost, never above the cap itself.
fn scale(bytes: u64, cost: u32) -> u64 {
    if bytes == UNLIMITED {
        return UNLIMITED;
    }
    let cost = cost.max(REFERENCE_COST);
    let scaled = u128::from(bytes) * u128::from(REFERENCE_COST) / u128::from(cost);
    u64::try_from(scaled).unwrap_or(bytes)
}

/// Why a [`Plan`] syncs or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Sync: this node has work the band sends, and the peer's interval has passed.
    Send,
    /// Sync: nothing to send, but the pull interval has passed (to receive what the peer has).
    Pull,
    /// Skip: synced with this peer too recently for this band.
    TooSoon,
    /// Skip: nothing this band sends is pending, and the band does not pull.
    NothingToSend,
    /// Skip: the battery budget for this window is spent.
    BudgetSpent,
}

impl Reason {
    /// A short name for logs (`send`, `too-soon`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Send => "send",
            Reason::Pull => "pull",
            Reason::TooSoon => "too-soon",
            Reason::NothingToSend => "nothing-to-send",
            Reason::BudgetSpent => "budget-spent",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision for one contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// Sync with this peer now.
    pub sync: bool,
    /// Bytes to move in this session, both directions together ([`UNLIMITED`]: no cap; 0 when
    /// not syncing).
    pub max_bytes: u64,
    /// Of `max_bytes`, bytes of other people's messages, carried to the peer or taken on from it
    /// (0: carry nothing for others).
    pub relay_max_bytes: u64,
    /// Send only own messages marked urgent: no receipts, nothing carried.
    pub urgent_only: bool,
    /// The power band the plan was made in.
    pub band: Band,
    /// Why.
    pub reason: Reason,
}

impl Plan {
    /// This session may carry messages for others.
    pub fn carries_for_others(&self) -> bool {
        self.sync && self.relay_max_bytes > 0
    }
}

/// What the scheduler remembers about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerHistory {
    /// When the last session with it ended (the `now_ms` given to [`Scheduler::on_synced`]).
    pub last_synced_ms: u64,
    /// Bytes moved in that session.
    pub last_bytes: u64,
    /// Bytes moved in all sessions remembered (saturating).
    pub total_bytes: u64,
    /// Sessions remembered (saturating).
    pub syncs: u64,
}

/// The per-node scheduler: a [`Policy`] and what happened with each peer, keyed by a `K` the
/// caller chooses (a public key's bytes, a simulator's node number).
///
/// Time is any monotonic millisecond count. If it goes backwards (a restart with another epoch,
/// a bug), nothing panics: a peer synced "in the future" counts as due, and the next session
/// with it rebases its history on the new clock.
#[derive(Debug, Clone)]
pub struct Scheduler<K> {
    policy: Policy,
    peers: BTreeMap<K, PeerHistory>,
    /// Start of the battery budget's window, if one is open.
    window_start_ms: Option<u64>,
    /// Bytes moved on battery in that window.
    window_bytes: u64,
}

impl<K: Ord + Clone> Default for Scheduler<K> {
    fn default() -> Scheduler<K> {
        Scheduler::with_checked(Policy::default())
    }
}

impl<K: Ord + Clone> Scheduler<K> {
    /// A scheduler with `policy`, after [`Policy::check`].
    pub fn new(policy: Policy) -> Result<Scheduler<K>> {
        policy.check()?;
        Ok(Scheduler::with_checked(policy))
    }

    fn with_checked(policy: Policy) -> Scheduler<K> {
        Scheduler {
            policy,
            peers: BTreeMap::new(),
            window_start_ms: None,
            window_bytes: 0,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// What the scheduler remembers about `peer`.
    pub fn history(&self, peer: &K) -> Option<&PeerHistory> {
        self.peers.get(peer)
    }

    /// Bytes moved on battery in the budget window open at `now_ms`.
    pub fn battery_bytes_used(&self, now_ms: u64) -> u64 {
        match self.window_open_at(now_ms) {
            Some(_) => self.window_bytes,
            None => 0,
        }
    }

    /// The plan for `peer`, met at `now_ms` over `link`, with this power state and pending work.
    /// Does not change the scheduler: report the session with [`on_synced`](Self::on_synced).
    pub fn on_contact(
        &self,
        now_ms: u64,
        peer: &K,
        link: LinkKind,
        power: Power,
        pending: Pending,
    ) -> Plan {
        let band = self.policy.band(power);
        let bp = self.policy.band_policy(band);
        let cost = link.transport.cost();
        let mut max_bytes = scale(bp.max_bytes, cost);
        if link.metered {
            max_bytes = max_bytes.min(self.policy.metered_max_bytes);
        }
        let relay_cap = scale(bp.relay_max_bytes, cost).min(max_bytes);
        let has_work = has_work(bp, pending, relay_cap > 0);

        let history = self.peers.get(peer);
        // Never synced, or synced "in the future" (time went backwards): due.
        let due = |interval: u64| {
            history.is_none_or(|h| {
                now_ms
                    .checked_sub(h.last_synced_ms)
                    .is_none_or(|since| since >= interval)
            })
        };
        let mut reason = if has_work && due(bp.min_interval_ms) {
            Reason::Send
        } else if bp.pull_interval_ms.is_some_and(due) {
            Reason::Pull
        } else if has_work || bp.pull_interval_ms.is_some() {
            Reason::TooSoon
        } else {
            Reason::NothingToSend
        };
        if band != Band::Plugged && matches!(reason, Reason::Send | Reason::Pull) {
            let left = self
                .policy
                .battery_bytes_per_window
                .saturating_sub(self.battery_bytes_used(now_ms));
            if left == 0 {
                reason = Reason::BudgetSpent;
            }
            max_bytes = max_bytes.min(left);
        }
        let sync = matches!(reason, Reason::Send | Reason::Pull);
        let max_bytes = if sync { max_bytes } else { 0 };
        Plan {
            sync,
            max_bytes,
            relay_max_bytes: relay_cap.min(max_bytes),
            urgent_only: bp.urgent_only,
            band,
            reason,
        }
    }

    /// Records a session with `peer` that ended at `now_ms` having moved `bytes_moved` (both
    /// directions), on this power state (bytes moved on battery count against the budget). Call
    /// it after every session a plan allowed, even one that failed (with the bytes it moved).
    pub fn on_synced(&mut self, now_ms: u64, peer: K, bytes_moved: u64, power: Power) {
        if self.policy.band(power) != Band::Plugged {
            if self.window_open_at(now_ms).is_none() {
                self.window_start_ms = Some(now_ms);
                self.window_bytes = 0;
            }
            self.window_bytes = self.window_bytes.saturating_add(bytes_moved);
        }
        if !self.peers.contains_key(&peer) {
            while self.peers.len() >= self.policy.max_peers {
                let oldest = self
                    .peers
                    .iter()
                    .min_by_key(|(_, h)| h.last_synced_ms)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => self.peers.remove(&k),
                    None => break,
                };
            }
        }
        let h = self.peers.entry(peer).or_insert(PeerHistory {
            last_synced_ms: now_ms,
            last_bytes: 0,
            total_bytes: 0,
            syncs: 0,
        });
        h.last_synced_ms = now_ms;
        h.last_bytes = bytes_moved;
        h.total_bytes = h.total_bytes.saturating_add(bytes_moved);
        h.syncs = h.syncs.saturating_add(1);
    }

    /// The start of the budget window open at `now_ms`, if any.
    fn window_open_at(&self, now_ms: u64) -> Option<u64> {
        self.window_start_ms.filter(|&start| {
            now_ms
                .checked_sub(start)
                .is_some_and(|e| e < BUDGET_WINDOW_MS)
        })
    }

    /// When to open the next discovery window (scan and advertise), given the power state and
    /// pending work at `now_ms`; `None`: stay silent until the power or the pending work changes.
    /// On battery with the budget spent, not before the budget window closes.
    pub fn next_wakeup(&self, now_ms: u64, power: Power, pending: Pending) -> Option<u64> {
        let band = self.policy.band(power);
        let bp = self.policy.band_policy(band);
        let interval = if has_work(bp, pending, bp.relay_max_bytes > 0) {
            bp.scan_interval_ms
        } else {
            bp.idle_scan_interval_ms
        }?;
        let at = now_ms.saturating_add(interval);
        if band != Band::Plugged
            && self.battery_bytes_used(now_ms) >= self.policy.battery_bytes_per_window
        {
            if let Some(start) = self.window_open_at(now_ms) {
                return Some(at.max(start.saturating_add(BUDGET_WINDOW_MS)));
            }
        }
        Some(at)
    }
}

/// Whether something the band sends is pending.
fn has_work(bp: &BandPolicy, pending: Pending, relays: bool) -> bool {
    if bp.urgent_only {
        return pending.urgent_messages > 0;
    }
    pending.own_messages > 0
        || pending.own_bytes > 0
        || pending.urgent_messages > 0
        || pending.receipts > 0
        || (relays && pending.carried_bytes > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_check() {
        Policy::default().check().unwrap();
    }

    #[test]
    fn scale_by_cost() {
        assert_eq!(scale(1000, 10), 1000);
        assert_eq!(scale(1000, 20), 500);
        assert_eq!(scale(1000, 50), 200);
        assert_eq!(scale(1000, 100), 100);
        // Cheaper than LAN never raises the cap; a zero cost does not divide by zero.
        assert_eq!(scale(1000, 0), 1000);
        assert_eq!(scale(UNLIMITED, 100), UNLIMITED);
        assert_eq!(scale(u64::MAX - 1, 10), u64::MAX - 1);
    }

    #[test]
    fn never_le_treats_none_as_infinite() {
        assert!(never_le(Some(1), None));
        assert!(never_le(None, None));
        assert!(!never_le(None, Some(1)));
        assert!(never_le(Some(1), Some(1)));
        assert!(!never_le(Some(2), Some(1)));
    }

    #[test]
    fn eviction_keeps_at_most_max_peers() {
        let p = Policy {
            max_peers: 2,
            ..Policy::default()
        };
        let mut s = Scheduler::<u8>::new(p).unwrap();
        s.on_synced(10, 1, 0, Power::MAINS);
        s.on_synced(20, 2, 0, Power::MAINS);
        s.on_synced(30, 3, 0, Power::MAINS);
        assert!(s.history(&1).is_none());
        assert!(s.history(&2).is_some());
        assert!(s.history(&3).is_some());
        // A known peer does not evict anyone.
        s.on_synced(40, 2, 0, Power::MAINS);
        assert!(s.history(&3).is_some());
    }
}
