//! When to look for peers, form a group, and tear it down: a state machine without IO
//! (`handle(now, input) -> actions`), driven by wpa_supplicant's events and a periodic tick.
//!
//! - **Finding**: `P2P_FIND` runs. A device whose name starts with the Thali prefix is a
//!   candidate. Of two candidates, the one with the lower P2P device address initiates
//!   (`P2P_CONNECT <addr> pbc go_intent=N`); the other accepts the peer's
//!   `P2P-GO-NEG-REQUEST` with the same command (whatever its back-off: back-offs only hold
//!   back our own attempts). A peer that failed, timed out, or whose group
//!   was torn down for idleness is not tried again before its back-off ends; then the next tick
//!   tries it again (if it was not lost meanwhile), without waiting for a new
//!   `P2P-DEVICE-FOUND`, which wpa_supplicant does not repeat for a peer it knows.
//! - **Connecting**: until `P2P-GROUP-STARTED` (then **Group**), a failure event or the
//!   connect timeout (back to Finding: `P2P_CANCEL`, `P2P_FIND`).
//! - **Group**: the LAN plugin runs on the group interface. When no stream is open and nothing
//!   was sent or received for the idle time, the group is removed (`P2P_GROUP_REMOVE`);
//!   `P2P-GROUP-REMOVED` (ours or the peer's doing) stops the LAN plugin and finds again.
//!
//! One group at a time (most radios run one P2P group beside their station).

use std::collections::BTreeMap;

use super::event::{Event, MacAddr, Role};

/// The state machine's settings (see [`WifiDirectConfig`](super::WifiDirectConfig)).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Device names that mark a Thali peer start with this.
    pub name_prefix: String,
    /// Form groups with candidates by ourselves.
    pub auto_connect: bool,
    /// GO intent, 0..=15.
    pub go_intent: u8,
    /// How long a connection attempt may take, in ms.
    pub connect_timeout_ms: u64,
    /// Idle time after which a group is removed, in ms (0: never).
    pub idle_ms: u64,
    /// Back-off after a failure, in ms.
    pub retry_ms: u64,
    /// Back-off after an idle teardown before the same peer is joined again, in ms.
    pub rejoin_ms: u64,
    /// How often `P2P_FIND` is asked again while finding, in ms.
    pub refind_ms: u64,
}

/// What drives the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The plugin started; our P2P device address.
    Start(MacAddr),
    /// An event of wpa_supplicant.
    Event(Event),
    /// Time passes: `open` streams are open, and the link was last used at `last_used`.
    Tick {
        /// Streams open now.
        open: u64,
        /// When a stream or message last moved (ms on the clock).
        last_used: u64,
    },
}

/// What the plugin does for the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `P2P_FIND`
    Find,
    /// `P2P_CONNECT <addr> pbc go_intent=N`
    Connect(MacAddr, u8),
    /// `P2P_CANCEL`
    Cancel,
    /// `P2P_GROUP_REMOVE <ifname>`
    RemoveGroup(String),
    /// Start the LAN plugin on the group interface.
    StartLan(String, Role),
    /// Stop it.
    StopLan(String),
}

/// Where the machine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Looking for peers.
    Finding,
    /// Forming a group with `peer` since `since`.
    Connecting {
        /// The peer.
        peer: MacAddr,
        /// When it began.
        since: u64,
    },
    /// In a group.
    Group {
        /// Its interface.
        ifname: String,
        /// Our role.
        role: Role,
        /// The peer we formed it with, if known.
        peer: Option<MacAddr>,
        /// When it started.
        since: u64,
        /// Whether we asked to remove it.
        removing: bool,
    },
}

/// The most candidates remembered (names of devices found).
const MAX_KNOWN: usize = 256;

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Groups {
    policy: Policy,
    own: Option<MacAddr>,
    phase: Phase,
    /// Candidates found (P2P device address → device name marks a Thali peer).
    known: BTreeMap<MacAddr, bool>,
    /// Peers not to try before this time.
    backoff: BTreeMap<MacAddr, u64>,
    /// When `P2P_FIND` was last asked (`None`: ask on the next tick).
    last_find: Option<u64>,
    /// Formation times (ms from the first connect step to the group start), newest last.
    formed_in: Option<u64>,
}

impl Groups {
    /// A machine with this policy, finding nothing yet.
    pub fn new(policy: Policy) -> Groups {
        Groups {
            policy,
            own: None,
            phase: Phase::Finding,
            known: BTreeMap::new(),
            backoff: BTreeMap::new(),
            last_find: None,
            formed_in: None,
        }
    }

    /// Where it is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// How long the latest group took to form (connect step to `P2P-GROUP-STARTED`), in ms.
    pub fn formed_in(&self) -> Option<u64> {
        self.formed_in
    }

    fn is_candidate(&self, addr: &MacAddr) -> bool {
        self.known.get(addr).copied().unwrap_or(false)
    }

    fn backed_off(&self, now: u64, addr: &MacAddr) -> bool {
        self.backoff.get(addr).is_some_and(|until| now < *until)
    }

    fn back_off(&mut self, now: u64, addr: MacAddr, ms: u64) {
        if self.backoff.len() >= MAX_KNOWN {
            self.backoff.retain(|_, until| *until > now);
        }
        if self.backoff.len() < MAX_KNOWN {
            self.backoff.insert(addr, now.saturating_add(ms));
        }
    }

    fn connect(&mut self, now: u64, peer: MacAddr) -> Vec<Action> {
        self.phase = Phase::Connecting { peer, since: now };
        vec![Action::Connect(peer, self.policy.go_intent.min(15))]
    }

    fn find(&mut self, now: u64) -> Vec<Action> {
        self.phase = Phase::Finding;
        self.last_find = Some(now);
        vec![Action::Find]
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Action> {
        match input {
            Input::Start(own) => {
                self.own = Some(own);
                self.find(now)
            }
            Input::Event(event) => self.event(now, event),
            Input::Tick { open, last_used } => self.tick(now, open, last_used),
        }
    }

    fn event(&mut self, now: u64, event: Event) -> Vec<Action> {
        match event {
            Event::DeviceFound { addr, name } => {
                let thali = name.starts_with(&self.policy.name_prefix);
                if self.known.len() < MAX_KNOWN || self.known.contains_key(&addr) {
                    self.known.insert(addr, thali);
                }
                let we_initiate = self.own.is_some_and(|own| own < addr);
                if thali
                    && we_initiate
                    && self.policy.auto_connect
                    && self.phase == Phase::Finding
                    && !self.backed_off(now, &addr)
                {
                    return self.connect(now, addr);
                }
                vec![]
            }
            Event::DeviceLost { addr } => {
                self.known.remove(&addr);
                vec![]
            }
            Event::GoNegRequest { addr } => {
                let idle = match &self.phase {
                    Phase::Finding => true,
                    Phase::Connecting { peer, .. } => *peer == addr,
                    Phase::Group { .. } => false,
                };
                // Back-offs only hold back our own attempts: the peer asking means it is ready now.
                if idle && self.is_candidate(&addr) {
                    let since = match self.phase {
                        Phase::Connecting { since, .. } => since,
                        _ => now,
                    };
                    let actions = self.connect(now, addr);
                    self.phase = Phase::Connecting { peer: addr, since };
                    return actions;
                }
                vec![]
            }
            Event::GoNegFailure { .. } | Event::GroupFormationFailure => {
                if let Phase::Connecting { peer, .. } = self.phase {
                    self.back_off(now, peer, self.policy.retry_ms);
                    return self.find(now);
                }
                vec![]
            }
            Event::GroupStarted { ifname, role, .. } => {
                if let Phase::Group {
                    ifname: current, ..
                } = &self.phase
                {
                    if *current != ifname {
                        // One group at a time.
                        return vec![Action::RemoveGroup(ifname)];
                    }
                    return vec![];
                }
                let (peer, since) = match self.phase {
                    Phase::Connecting { peer, since } => (Some(peer), since),
                    _ => (None, now),
                };
                self.formed_in = Some(now.saturating_sub(since));
                self.phase = Phase::Group {
                    ifname: ifname.clone(),
                    role,
                    peer,
                    since: now,
                    removing: false,
                };
                vec![Action::StartLan(ifname, role)]
            }
            Event::GroupRemoved { ifname, reason } => match &self.phase {
                Phase::Group {
                    ifname: current,
                    peer,
                    removing,
                    ..
                } if *current == ifname => {
                    // Idle on our side or theirs: the same pair would only meet to idle again.
                    let idle = *removing || reason.as_deref() == Some("IDLE");
                    if let (Some(peer), true) = (*peer, idle) {
                        self.back_off(now, peer, self.policy.rejoin_ms);
                    }
                    let mut actions = vec![Action::StopLan(ifname)];
                    actions.extend(self.find(now));
                    actions
                }
                _ => vec![],
            },
            Event::FindStopped => {
                if self.phase == Phase::Finding {
                    // Ask again on the next tick.
                    self.last_find = None;
                }
                vec![]
            }
            _ => vec![],
        }
    }

    fn tick(&mut self, now: u64, open: u64, last_used: u64) -> Vec<Action> {
        match &mut self.phase {
            Phase::Finding => {
                // A candidate we ask whose back-off has ended (found before, not lost since):
                // try again without waiting for wpa_supplicant to report it anew.
                let retry = self
                    .own
                    .filter(|_| self.policy.auto_connect)
                    .and_then(|own| {
                        self.known
                            .iter()
                            .find(|(addr, thali)| {
                                **thali && own < **addr && !self.backed_off(now, addr)
                            })
                            .map(|(addr, _)| *addr)
                    });
                if let Some(peer) = retry {
                    return self.connect(now, peer);
                }
                let due = self
                    .last_find
                    .is_none_or(|at| now.saturating_sub(at) >= self.policy.refind_ms);
                if due {
                    return self.find(now);
                }
                vec![]
            }
            Phase::Connecting { peer, since } => {
                if now.saturating_sub(*since) >= self.policy.connect_timeout_ms {
                    let peer = *peer;
                    self.back_off(now, peer, self.policy.retry_ms);
                    let mut actions = vec![Action::Cancel];
                    actions.extend(self.find(now));
                    return actions;
                }
                vec![]
            }
            Phase::Group {
                ifname,
                since,
                removing,
                ..
            } => {
                let quiet_since = last_used.max(*since);
                if !*removing
                    && self.policy.idle_ms > 0
                    && open == 0
                    && now.saturating_sub(quiet_since) >= self.policy.idle_ms
                {
                    *removing = true;
                    return vec![Action::RemoveGroup(ifname.clone())];
                }
                vec![]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: MacAddr = MacAddr([2, 0, 0, 0, 0, 0]);
    const HIGH: MacAddr = MacAddr([2, 0, 0, 0, 9, 0]);
    const LOW: MacAddr = MacAddr([0, 0, 0, 0, 1, 0]);

    fn policy() -> Policy {
        Policy {
            name_prefix: "THALI-".to_string(),
            auto_connect: true,
            go_intent: 7,
            connect_timeout_ms: 30_000,
            idle_ms: 60_000,
            retry_ms: 10_000,
            rejoin_ms: 300_000,
            refind_ms: 120_000,
        }
    }

    fn found(addr: MacAddr, name: &str) -> Input {
        Input::Event(Event::DeviceFound {
            addr,
            name: name.to_string(),
        })
    }

    fn started(ifname: &str) -> Input {
        Input::Event(Event::GroupStarted {
            ifname: ifname.to_string(),
            role: Role::Go,
            go_dev_addr: None,
        })
    }

    fn machine() -> Groups {
        let mut g = Groups::new(policy());
        assert_eq!(g.handle(0, Input::Start(ME)), vec![Action::Find]);
        g
    }

    #[test]
    fn the_lower_address_initiates_and_the_other_accepts() {
        let mut g = machine();
        assert_eq!(g.handle(10, found(LOW, "THALI-a")), vec![]);
        assert_eq!(g.handle(11, found(HIGH, "android_1")), vec![]);
        assert_eq!(
            g.handle(12, found(HIGH, "THALI-b")),
            vec![Action::Connect(HIGH, 7)]
        );
        assert!(matches!(g.phase(), Phase::Connecting { peer, .. } if *peer == HIGH));

        let mut g = machine();
        g.handle(10, found(LOW, "THALI-a"));
        assert_eq!(
            g.handle(20, Input::Event(Event::GoNegRequest { addr: LOW })),
            vec![Action::Connect(LOW, 7)]
        );
        // A request from a device that is not a Thali peer is ignored.
        let mut g = machine();
        g.handle(10, found(LOW, "printer"));
        assert_eq!(
            g.handle(20, Input::Event(Event::GoNegRequest { addr: LOW })),
            vec![]
        );
    }

    #[test]
    fn a_group_runs_the_lan_until_idle_then_backs_off() {
        let mut g = machine();
        g.handle(10, found(HIGH, "THALI-b"));
        assert_eq!(
            g.handle(2_010, started("p2p-wlan0-0")),
            vec![Action::StartLan("p2p-wlan0-0".to_string(), Role::Go)]
        );
        assert_eq!(g.formed_in(), Some(2_000));
        // Busy: a stream is open.
        assert_eq!(
            g.handle(
                90_000,
                Input::Tick {
                    open: 1,
                    last_used: 0
                }
            ),
            vec![]
        );
        // Used recently.
        assert_eq!(
            g.handle(
                100_000,
                Input::Tick {
                    open: 0,
                    last_used: 50_000
                }
            ),
            vec![]
        );
        assert_eq!(
            g.handle(
                110_000,
                Input::Tick {
                    open: 0,
                    last_used: 50_000
                }
            ),
            vec![Action::RemoveGroup("p2p-wlan0-0".to_string())]
        );
        // Asked once.
        assert_eq!(
            g.handle(
                111_000,
                Input::Tick {
                    open: 0,
                    last_used: 50_000
                }
            ),
            vec![]
        );
        let removed = Input::Event(Event::GroupRemoved {
            ifname: "p2p-wlan0-0".to_string(),
            reason: Some("REQUESTED".to_string()),
        });
        assert_eq!(
            g.handle(112_000, removed),
            vec![Action::StopLan("p2p-wlan0-0".to_string()), Action::Find]
        );
        // Not rejoined at once.
        assert_eq!(g.handle(113_000, found(HIGH, "THALI-b")), vec![]);
        assert_eq!(
            g.handle(412_000, found(HIGH, "THALI-b")),
            vec![Action::Connect(HIGH, 7)]
        );
    }

    #[test]
    fn failures_and_timeouts_back_off() {
        let mut g = machine();
        g.handle(10, found(HIGH, "THALI-b"));
        assert_eq!(
            g.handle(20, Input::Event(Event::GoNegFailure { status: Some(1) })),
            vec![Action::Find]
        );
        assert_eq!(g.handle(30, found(HIGH, "THALI-b")), vec![]);
        assert_eq!(
            g.handle(
                5_000,
                Input::Tick {
                    open: 0,
                    last_used: 0
                }
            ),
            vec![]
        );
        // The back-off is over: the tick tries again.
        assert_eq!(
            g.handle(
                10_030,
                Input::Tick {
                    open: 0,
                    last_used: 0
                }
            ),
            vec![Action::Connect(HIGH, 7)]
        );
        assert_eq!(
            g.handle(
                20_000,
                Input::Tick {
                    open: 0,
                    last_used: 0
                }
            ),
            vec![]
        );
        assert_eq!(
            g.handle(
                40_030,
                Input::Tick {
                    open: 0,
                    last_used: 0
                }
            ),
            vec![Action::Cancel, Action::Find]
        );
        assert_eq!(*g.phase(), Phase::Finding);
    }

    #[test]
    fn one_group_at_a_time_and_foreign_removals_are_ignored() {
        let mut g = machine();
        g.handle(0, started("p2p-wlan0-0"));
        assert_eq!(
            g.handle(1, started("p2p-wlan0-1")),
            vec![Action::RemoveGroup("p2p-wlan0-1".to_string())]
        );
        assert_eq!(
            g.handle(
                2,
                Input::Event(Event::GroupRemoved {
                    ifname: "p2p-wlan0-1".to_string(),
                    reason: None
                })
            ),
            vec![]
        );
        assert!(matches!(g.phase(), Phase::Group { ifname, .. } if ifname == "p2p-wlan0-0"));
    }

    #[test]
    fn a_lost_peer_is_not_retried() {
        let mut g = machine();
        g.handle(10, found(HIGH, "THALI-b"));
        g.handle(20, Input::Event(Event::GroupFormationFailure));
        g.handle(30, Input::Event(Event::DeviceLost { addr: HIGH }));
        assert_eq!(
            g.handle(
                60_000,
                Input::Tick {
                    open: 0,
                    last_used: 0
                }
            ),
            vec![]
        );
    }

    #[test]
    fn finding_is_asked_again() {
        let mut g = machine();
        assert_eq!(
            g.handle(
                60_000,
                Input::Tick {
                    open: 0,
                    last_used: 0
                }
            ),
            vec![]
        );
        assert_eq!(
            g.handle(
                120_000,
                Input::Tick {
                    open: 0,
                    last_used: 0
                }
            ),
            vec![Action::Find]
        );
        g.handle(120_500, Input::Event(Event::FindStopped));
        assert_eq!(
            g.handle(
                121_000,
                Input::Tick {
                    open: 0,
                    last_used: 0
                }
            ),
            vec![Action::Find]
        );
    }
}
