//! The seeded simulator (feature `sim`): nodes on adhoc-wireless's simulated radio, moving by
//! random waypoint, creating messages for each other, routed by this crate's own
//! [`Router`] — the code a real node runs.
//!
//! ```
//! use high_latency_mesh::routing::Mode;
//! use high_latency_mesh::sim::{Scenario, run};
//!
//! let mut scenario = Scenario::the_one(20, 1);
//! scenario.duration = std::time::Duration::from_secs(1800);
//! let report = run(&scenario, &Mode::SprayAndWait { copies: 6 }).unwrap();
//! assert!(report.created > 0);
//! assert!(report.delivered <= report.created);
//! ```
//!
//! # The model, and how it follows The ONE
//!
//! [`Scenario::the_one`] is the classic Epidemic vs Spray-and-Wait comparison as The ONE
//! simulator (akeranen/the-one) runs it; every modelling choice:
//!
//! * **Mobility and contacts** come from adhoc-wireless's simulated radio: random waypoint over
//!   2000 × 2000 m (uniform destination, speed U(0.5, 1.5) m/s, wait U(0, 120) s, each node
//!   its own random stream of the mobility seed), a contact while two nodes are within 30 m,
//!   checked every 0.1 s (The ONE's update interval). Movement runs 1000 s before the
//!   scenario starts (The ONE's `MovementModel.warmup`); contacts up at the end of the warm-up
//!   are the first connections; nothing else happens during it.
//! * **Updates**: every 0.1 s, after the contacts changed, each node is updated once, in an
//!   order shuffled every round (The ONE's `Optimization.randomizeUpdateOrder`). A node's update
//!   first finalizes its finished transfer (the receiver stores the message, copies are
//!   accounted), drops expired messages (every 60 s while not sending, The ONE's
//!   `TTL_CHECK_INTERVAL`), then, if neither it nor the peer is in a transfer, starts one.
//! * **Transfers**: one at a time per node, sending or receiving (The ONE's `isTransferring`:
//!   any connection of the node with a message on the fly). A transfer is a bulk transfer on
//!   the simulated radio (250 kB/s, no latency, no loss); it finishes after `size / 250 kB/s`
//!   and is finalized at the sender's first update after that (so, as in The ONE, a transfer
//!   takes a whole number of 0.1 s rounds); a contact that ends first aborts it.
//! * **Choice of message** (The ONE's `ActiveRouter`): first messages for a connected
//!   destination (both ways: also asking each peer for messages for us), then the mode's offers
//!   ([`Router::offers`](crate::routing::Router::offers)), connections in the order they came
//!   up, messages in a random order shuffled at each attempt (The ONE's default `sendQueue`
//!   mode 1). A peer that is busy stops the attempt on that connection; a peer that holds or
//!   had the message refuses it and the next one is tried.
//! * **Buffers**: 50 MB per node; a message that does not fit evicts the oldest received
//!   messages not being sent (The ONE's `makeRoomForMessage`); a destination keeps no copy.
//! * **Messages**: one every 25–34 s (The ONE's generator draws `25 + nextInt(35 − 25)` whole
//!   seconds, so 35 itself never occurs), of 10,000–49,999 bytes (`10k + nextInt(40k)`, The ONE's
//!   `k` is 1000), between uniformly random distinct nodes, TTL 300 min; the first one 25–34 s
//!   after the start. 12 h simulated.
//! * **Metrics** (The ONE's `MessageStatsReport`): delivery ratio = delivered / created;
//!   latency from creation to first delivery (mean, median); overhead = (relayed − delivered)
//!   / delivered, where relayed counts every finished transfer including the last hop; hop count
//!   of delivered messages; plus each node's peak of stored bytes.
//! * **Receipts and learning** (this crate's, off for the reference modes): in
//!   [`Mode::Directed`], a delivered message's receipt is
//!   known to the destination at once and spreads at every contact (both ways, instantly: a
//!   receipt is 64 bytes against messages of 10–50 kB, so its air time is not modelled); a
//!   node drops and refuses messages it holds a receipt for. Encounter summaries (up to
//!   [`Scenario::summary_limit`] entries) are exchanged at contact up, also without air time.
//!
//! Deterministic: the same scenario, mode and seed give the same report, bit for bit.

use std::collections::BTreeMap;
use std::time::Duration;

use adhoc_wireless::sim::{
    LinkParams, Mobility, RandomWaypoint, Rng, SimEvent, SimTime, TransferId, World, WorldConfig,
};

use crate::error::{Error, Result};
use crate::routing::{Held, Mode, Offer, PeerView, Reason, Router, Tag};

/// A simulated scenario (see the [module docs](self)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Scenario {
    /// Nodes.
    pub nodes: u32,
    /// Seeds mobility, traffic and the update order.
    pub seed: u64,
    /// Area, metres.
    pub width: f64,
    /// Area, metres.
    pub height: f64,
    /// Speed range, m/s.
    pub speed: (f64, f64),
    /// Wait at a waypoint.
    pub pause: (Duration, Duration),
    /// Movement before the scenario starts.
    pub warmup: Duration,
    /// Radio range, metres.
    pub range: f64,
    /// Radio bandwidth, bytes per second.
    pub bandwidth: u64,
    /// Contact checks and node updates.
    pub tick: Duration,
    /// Storage per node, bytes.
    pub buffer_bytes: u64,
    /// Simulated time after the warm-up.
    pub duration: Duration,
    /// Seconds between messages: `lo + below(hi − lo)` (The ONE's draw).
    pub interval_s: (u64, u64),
    /// Message sizes in bytes: `lo + below(hi − lo)`.
    pub size: (u64, u64),
    /// Message lifetime.
    pub ttl: Duration,
    /// Encounter summary entries exchanged per contact (directed mode).
    pub summary_limit: usize,
}

impl Scenario {
    /// The ONE's Epidemic vs Spray-and-Wait scenario with `nodes` nodes and mobility seed
    /// `seed`.
    pub fn the_one(nodes: u32, seed: u64) -> Scenario {
        Scenario {
            nodes,
            seed,
            width: 2000.0,
            height: 2000.0,
            speed: (0.5, 1.5),
            pause: (Duration::ZERO, Duration::from_secs(120)),
            warmup: Duration::from_secs(1000),
            range: 30.0,
            bandwidth: 250_000,
            tick: Duration::from_millis(100),
            buffer_bytes: 50_000_000,
            duration: Duration::from_secs(12 * 3600),
            interval_s: (25, 35),
            size: (10_000, 50_000),
            ttl: Duration::from_secs(300 * 60),
            summary_limit: 256,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// The mode's name.
    pub mode: String,
    /// Nodes.
    pub nodes: u32,
    /// Mobility seed.
    pub seed: u64,
    /// Messages created.
    pub created: u64,
    /// Messages delivered (first delivery).
    pub delivered: u64,
    /// Finished transfers, the last hop included.
    pub relayed: u64,
    /// Transfers aborted by a contact that ended.
    pub aborted: u64,
    /// Messages dropped from full buffers.
    pub dropped: u64,
    /// Latencies of delivered messages, seconds (mean).
    pub latency_mean_s: f64,
    /// Median latency, seconds.
    pub latency_median_s: f64,
    /// Mean hop count of delivered messages.
    pub hops_mean: f64,
    /// The largest peak of stored bytes over the nodes.
    pub storage_peak_max: u64,
    /// The mean over the nodes of each node's peak of stored bytes.
    pub storage_peak_mean: f64,
    /// Contacts during the scenario.
    pub contacts: u64,
}

impl Report {
    /// delivered / created.
    pub fn delivery_ratio(&self) -> f64 {
        if self.created == 0 {
            0.0
        } else {
            self.delivered as f64 / self.created as f64
        }
    }

    /// (relayed − delivered) / delivered (The ONE's overhead ratio; `NaN` with no delivery).
    pub fn overhead(&self) -> f64 {
        if self.delivered == 0 {
            f64::NAN
        } else {
            (self.relayed as f64 - self.delivered as f64) / self.delivered as f64
        }
    }
}

/// The tag of simulated node `n` as a destination.
pub fn node_tag(n: u32) -> Tag {
    let mut t = [0u8; 16];
    t[..4].copy_from_slice(&n.to_be_bytes());
    t[4..8].copy_from_slice(b"node");
    t
}

const STREAM_TRAFFIC: u64 = 0x7472_6166;
const STREAM_ORDER: u64 = 0x6f72_6465;
const TTL_CHECK_MS: u64 = 60_000;

struct Msg {
    dest: u32,
    created_ms: u64,
}

/// A message a node carries.
struct Carried {
    msg: u32,
    held: Held,
    received_ms: u64,
}

struct Node {
    router: Router,
    carried: Vec<Carried>,
    /// Messages held now (bit per message).
    has: Bits,
    /// Messages received as their destination.
    delivered: Bits,
    /// Receipts known (directed mode).
    receipts: Bits,
    /// Connections in the order they came up.
    conns: Vec<u32>,
    /// The transfer this node is in (either end).
    busy: Option<TransferId>,
    stored: u64,
    peak: u64,
    last_ttl_check: u64,
    /// Stamp of the last change of what an attempt to start a transfer depends on.
    changed: u64,
    /// Stamp of the last attempt that started nothing.
    tried: Option<u64>,
    /// The encounter summary this node tells peers, until it learns something.
    summary: Option<Vec<(Tag, u64)>>,
}

struct Active {
    from: u32,
    to: u32,
    msg: u32,
    offer: Offer,
    done: bool,
}

#[derive(Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.0.get(w).is_some_and(|x| x & (1 << b) != 0)
    }
    fn set(&mut self, i: u32, on: bool) {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        if let Some(x) = self.0.get_mut(w) {
            if on {
                *x |= 1 << b;
            } else {
                *x &= !(1 << b);
            }
        }
    }
    fn union(&mut self, other: &Bits) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }
}

struct Sim<'a> {
    scenario: &'a Scenario,
    world: World,
    origin: SimTime,
    nodes: Vec<Node>,
    msgs: Vec<Msg>,
    active: BTreeMap<TransferId, Active>,
    receipts: bool,
    traffic: Rng,
    order_rng: Rng,
    latencies: Vec<u64>,
    hops: u64,
    report: Report,
    stamp: u64,
}

/// Runs `scenario` with every node routing in `mode`.
pub fn run(scenario: &Scenario, mode: &Mode) -> Result<Report> {
    mode.check()?;
    if scenario.nodes < 2 {
        return Err(Error::InvalidConfig(
            "a scenario needs two nodes".to_owned(),
        ));
    }
    let mut config = WorldConfig::seeded(scenario.seed);
    config.width = scenario.width;
    config.height = scenario.height;
    config.tick = scenario.tick;
    config.link = LinkParams::new(scenario.range, scenario.bandwidth, Duration::ZERO, 0.0);
    config.event_buffer = 1 << 20;
    let world = World::new(config).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let rwp = RandomWaypoint::new(
        scenario.width,
        scenario.height,
        scenario.speed,
        scenario.pause,
    );
    let mut nodes = Vec::new();
    for _ in 0..scenario.nodes {
        world
            .add_node(Mobility::RandomWaypoint(rwp.clone()))
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        nodes.push(Node {
            router: Router::new(mode.clone(), scenario.nodes as usize)?,
            carried: Vec::new(),
            has: Bits::default(),
            delivered: Bits::default(),
            receipts: Bits::default(),
            conns: Vec::new(),
            busy: None,
            stored: 0,
            peak: 0,
            last_ttl_check: 0,
            changed: 0,
            tried: None,
            summary: None,
        });
    }
    let origin = SimTime::from_duration(scenario.warmup);
    let mut sim = Sim {
        scenario,
        world,
        origin,
        nodes,
        msgs: Vec::new(),
        active: BTreeMap::new(),
        receipts: mode.learns(),
        traffic: Rng::stream(scenario.seed, STREAM_TRAFFIC),
        order_rng: Rng::stream(scenario.seed, STREAM_ORDER),
        latencies: Vec::new(),
        hops: 0,
        stamp: 0,
        report: Report {
            mode: mode.name(),
            nodes: scenario.nodes,
            seed: scenario.seed,
            created: 0,
            delivered: 0,
            relayed: 0,
            aborted: 0,
            dropped: 0,
            latency_mean_s: 0.0,
            latency_median_s: 0.0,
            hops_mean: 0.0,
            storage_peak_max: 0,
            storage_peak_mean: 0.0,
            contacts: 0,
        },
    };
    sim.warm_up();
    sim.run();
    Ok(sim.finish())
}

impl Sim<'_> {
    fn now_ms(&self) -> u64 {
        self.world
            .now()
            .as_millis()
            .saturating_sub(self.origin.as_millis())
    }

    /// Records that what `n`'s attempts depend on changed (its messages, connections, radio,
    /// learned state), so its next update tries again. An update whose node and neighbours
    /// did not change since its last fruitless attempt skips the attempt: it would start
    /// nothing again (offers only shrink as time passes).
    fn mark(&mut self, n: u32) {
        self.stamp += 1;
        if let Some(node) = self.nodes.get_mut(n as usize) {
            node.changed = self.stamp;
        }
    }

    fn warm_up(&mut self) {
        // Movement only: the contacts up at the end are the first connections.
        while let Some(event) = self.world.next_event(self.origin) {
            match event {
                SimEvent::ContactUp { a, b, .. } => self.link(a, b, true),
                SimEvent::ContactDown { a, b, .. } => self.link(a, b, false),
                _ => {}
            }
        }
        let up: Vec<(u32, u32)> = self.world.contacts();
        for (a, b) in up {
            self.meet(a, b);
        }
    }

    fn link(&mut self, a: u32, b: u32, up: bool) {
        self.mark(a);
        self.mark(b);
        for (x, y) in [(a, b), (b, a)] {
            if let Some(n) = self.nodes.get_mut(x as usize) {
                n.conns.retain(|&c| c != y);
                if up {
                    n.conns.push(y);
                }
            }
        }
    }

    /// What happens at a contact beyond the connection itself: learning and receipts.
    fn meet(&mut self, a: u32, b: u32) {
        let now = self.now_ms();
        if self.nodes.first().is_some_and(|n| n.router.mode().learns()) {
            let limit = self.scenario.summary_limit;
            self.cache_summary(a);
            self.cache_summary(b);
            let (va, vb) = (self.view(a, limit, now), self.view(b, limit, now));
            if let Some(n) = self.nodes.get_mut(a as usize) {
                n.router.met(&vb, now);
                n.summary = None;
            }
            if let Some(n) = self.nodes.get_mut(b as usize) {
                n.router.met(&va, now);
                n.summary = None;
            }
        }
        if self.receipts {
            let (ra, rb) = match (self.nodes.get(a as usize), self.nodes.get(b as usize)) {
                (Some(x), Some(y)) => (x.receipts.clone(), y.receipts.clone()),
                _ => return,
            };
            for (n, other) in [(a, rb), (b, ra)] {
                if let Some(node) = self.nodes.get_mut(n as usize) {
                    node.receipts.union(&other);
                }
                self.clear_receipted(n);
            }
        }
    }

    fn clear_receipted(&mut self, n: u32) {
        self.mark(n);
        let Some(node) = self.nodes.get_mut(n as usize) else {
            return;
        };
        let sending = node
            .busy
            .and_then(|t| self.active.get(&t))
            .filter(|a| a.from == n)
            .map(|a| a.msg);
        let receipts = node.receipts.clone();
        let mut freed = 0;
        node.carried.retain(|c| {
            let drop = receipts.get(c.msg) && Some(c.msg) != sending;
            if drop {
                freed += c.held.size;
            }
            !drop
        });
        node.stored -= freed;
        let kept: Vec<u32> = node.carried.iter().map(|c| c.msg).collect();
        node.has = Bits::default();
        for m in kept {
            node.has.set(m, true);
        }
    }

    fn run(&mut self) {
        let end = self.origin.saturating_add(self.scenario.duration);
        let tick = self.scenario.tick;
        let mut next_msg = self.origin.saturating_add(self.draw_interval());
        let mut t = self.origin;
        let mut order: Vec<u32> = (0..self.scenario.nodes).collect();
        while t < end {
            t = t.saturating_add(tick).min(end);
            while let Some(event) = self.world.next_event(t) {
                self.event(event);
            }
            while next_msg <= t {
                self.create(next_msg);
                next_msg = next_msg.saturating_add(self.draw_interval());
            }
            shuffle(&mut order, &mut self.order_rng);
            for &n in &order {
                self.update(n);
            }
        }
    }

    fn draw_interval(&mut self) -> Duration {
        let (lo, hi) = self.scenario.interval_s;
        Duration::from_secs(lo + self.traffic.below(hi.saturating_sub(lo)))
    }

    fn event(&mut self, event: SimEvent) {
        match event {
            SimEvent::ContactUp { a, b, .. } => {
                self.report.contacts += 1;
                self.link(a, b, true);
                self.meet(a, b);
            }
            SimEvent::ContactDown { a, b, .. } => self.link(a, b, false),
            SimEvent::TransferDone { id, .. } => {
                if let Some(active) = self.active.get_mut(&id) {
                    active.done = true;
                }
            }
            SimEvent::TransferAborted { id, .. } => {
                if let Some(active) = self.active.remove(&id) {
                    self.report.aborted += 1;
                    for n in [active.from, active.to] {
                        self.mark(n);
                        if let Some(node) = self.nodes.get_mut(n as usize) {
                            node.busy = None;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn create(&mut self, at: SimTime) {
        let n = u64::from(self.scenario.nodes);
        let src = self.traffic.below(n) as u32;
        let mut dest = self.traffic.below(n - 1) as u32;
        if dest >= src {
            dest += 1;
        }
        let (lo, hi) = self.scenario.size;
        let size = lo + self.traffic.below(hi.saturating_sub(lo));
        let created_ms = at.as_millis().saturating_sub(self.origin.as_millis());
        let id = self.msgs.len() as u32;
        self.msgs.push(Msg { dest, created_ms });
        self.report.created += 1;
        let expires = created_ms.saturating_add(self.scenario.ttl.as_millis() as u64);
        let Some(node) = self.nodes.get(src as usize) else {
            return;
        };
        let held = node.router.created(node_tag(dest), size, expires);
        // The ONE's createNewMessage: make room (oldest first), then store even if it did not fit.
        self.make_room(src, size);
        self.store(src, id, held, created_ms);
    }

    fn store(&mut self, n: u32, msg: u32, held: Held, now: u64) {
        self.mark(n);
        if let Some(node) = self.nodes.get_mut(n as usize) {
            node.stored += held.size;
            node.peak = node.peak.max(node.stored);
            node.has.set(msg, true);
            node.carried.push(Carried {
                msg,
                held,
                received_ms: now,
            });
        }
    }

    fn remove(&mut self, n: u32, msg: u32) {
        self.mark(n);
        if let Some(node) = self.nodes.get_mut(n as usize)
            && let Some(pos) = node.carried.iter().position(|c| c.msg == msg)
        {
            let c = node.carried.remove(pos);
            node.stored -= c.held.size;
            node.has.set(msg, false);
        }
    }

    /// Evicts the oldest received messages not being sent until `size` fits.
    fn make_room(&mut self, n: u32, size: u64) -> bool {
        let buffer = self.scenario.buffer_bytes;
        if size > buffer {
            return false;
        }
        loop {
            let Some(node) = self.nodes.get(n as usize) else {
                return false;
            };
            if buffer - node.stored.min(buffer) >= size {
                return true;
            }
            let sending = node
                .busy
                .and_then(|t| self.active.get(&t))
                .filter(|a| a.from == n)
                .map(|a| a.msg);
            let victim = node
                .carried
                .iter()
                .filter(|c| Some(c.msg) != sending)
                .min_by_key(|c| c.received_ms)
                .map(|c| c.msg);
            let Some(victim) = victim else {
                return false;
            };
            self.remove(n, victim);
            self.report.dropped += 1;
        }
    }

    fn update(&mut self, n: u32) {
        let now = self.now_ms();
        // Finalize this node's finished transfer (The ONE: in the sender's update).
        if let Some(id) = self.nodes.get(n as usize).and_then(|x| x.busy)
            && self.active.get(&id).is_some_and(|a| a.from == n && a.done)
            && let Some(active) = self.active.remove(&id)
        {
            self.finalize(active, now);
        }
        let Some(node) = self.nodes.get_mut(n as usize) else {
            return;
        };
        if node.busy.is_none() && now.saturating_sub(node.last_ttl_check) >= TTL_CHECK_MS {
            node.last_ttl_check = now;
            let mut freed = 0;
            let mut gone = Vec::new();
            node.carried.retain(|c| {
                let keep = c.held.expires_ms > now;
                if !keep {
                    freed += c.held.size;
                    gone.push(c.msg);
                }
                keep
            });
            node.stored -= freed;
            let expired = !gone.is_empty();
            for m in gone {
                node.has.set(m, false);
            }
            if expired {
                self.mark(n);
            }
        }
        let Some(node) = self.nodes.get(n as usize) else {
            return;
        };
        if node.busy.is_some() || node.conns.is_empty() {
            return;
        }
        if let Some(tried) = node.tried
            && node.changed < tried
            && node
                .conns
                .iter()
                .all(|&c| self.nodes.get(c as usize).is_none_or(|p| p.changed < tried))
        {
            return;
        }
        let started = (!node.carried.is_empty() && self.deliver_own(n, now))
            || self.ask_for_ours(n, now)
            || self.relay(n, now);
        if !started {
            self.stamp += 1;
            let stamp = self.stamp;
            if let Some(node) = self.nodes.get_mut(n as usize) {
                node.tried = Some(stamp);
            }
        }
    }

    fn idle(&self, n: u32) -> bool {
        self.nodes.get(n as usize).is_some_and(|x| x.busy.is_none())
    }

    /// Whether `peer` holds, had or knows the receipt of `msg`.
    fn peer_has(&self, peer: u32, msg: u32) -> bool {
        self.nodes.get(peer as usize).is_none_or(|p| {
            p.has.get(msg) || p.delivered.get(msg) || (self.receipts && p.receipts.get(msg))
        })
    }

    /// Messages of `n` for a connected destination (The ONE's exchangeDeliverableMessages,
    /// first half).
    fn deliver_own(&mut self, n: u32, now: u64) -> bool {
        let len = self.nodes.get(n as usize).map_or(0, |x| x.carried.len());
        let mut order: Vec<usize> = (0..len).collect();
        shuffle(&mut order, &mut self.order_rng);
        let mut candidates = Vec::new();
        if let Some(node) = self.nodes.get(n as usize) {
            for i in order {
                let Some(c) = node.carried.get(i) else {
                    continue;
                };
                let Some(dest) = self.msgs.get(c.msg as usize).map(|m| m.dest) else {
                    continue;
                };
                if !node.conns.contains(&dest) {
                    continue;
                }
                let view = PeerView {
                    tags: vec![node_tag(dest)],
                    ..PeerView::default()
                };
                if let Some(offer) = node.router.offers(&[c.held], &view, |_| false, now).first() {
                    candidates.push((dest, c.msg, Offer { index: i, ..*offer }));
                }
            }
        }
        for (dest, msg, offer) in candidates {
            if self.try_start(n, dest, msg, offer) == Try::Started {
                return true;
            }
        }
        false
    }

    /// Asks each connected peer for its messages for `n` (second half).
    fn ask_for_ours(&mut self, n: u32, now: u64) -> bool {
        let conns = self
            .nodes
            .get(n as usize)
            .map(|x| x.conns.clone())
            .unwrap_or_default();
        for peer in conns {
            if !self.idle(peer) {
                continue;
            }
            let mut candidates = Vec::new();
            if let Some(p) = self.nodes.get(peer as usize) {
                let view = PeerView {
                    tags: vec![node_tag(n)],
                    ..PeerView::default()
                };
                let held: Vec<Held> = p.carried.iter().map(|c| c.held).collect();
                for offer in p.router.offers(&held, &view, |_| false, now) {
                    if offer.reason != Reason::Deliver {
                        continue;
                    }
                    if let Some(c) = p.carried.get(offer.index) {
                        candidates.push((c.msg, offer));
                    }
                }
            }
            for (msg, offer) in candidates {
                if self.try_start(peer, n, msg, offer) == Try::Started {
                    return true;
                }
                if !self.idle(n) {
                    return false;
                }
            }
        }
        false
    }

    /// What `n` tells a peer ([`Router::view`], with the summary cached until `n` learns).
    fn view(&self, n: u32, limit: usize, now: u64) -> PeerView {
        let Some(node) = self.nodes.get(n as usize) else {
            return PeerView::default();
        };
        if !node.router.mode().learns() {
            return node.router.view(vec![node_tag(n)], limit, now);
        }
        PeerView {
            tags: vec![node_tag(n)],
            met: match &node.summary {
                Some(summary) => summary.clone(),
                None => node.router.encounters().summary(limit),
            },
            activity: node.router.activity(now),
        }
    }

    /// Caches `n`'s summary (see [`view`](Self::view)).
    fn cache_summary(&mut self, n: u32) {
        let limit = self.scenario.summary_limit;
        if let Some(node) = self.nodes.get_mut(n as usize)
            && node.summary.is_none()
            && node.router.mode().learns()
        {
            node.summary = Some(node.router.encounters().summary(limit));
        }
    }

    /// The mode's offers, connection by connection.
    fn relay(&mut self, n: u32, now: u64) -> bool {
        let len = self.nodes.get(n as usize).map_or(0, |x| x.carried.len());
        if len == 0 {
            return false;
        }
        let mut order: Vec<usize> = (0..len).collect();
        shuffle(&mut order, &mut self.order_rng);
        let conns = self
            .nodes
            .get(n as usize)
            .map(|x| x.conns.clone())
            .unwrap_or_default();
        let limit = self.scenario.summary_limit;
        for &peer in &conns {
            self.cache_summary(peer);
        }
        for peer in conns {
            let mut candidates = Vec::new();
            if let Some(node) = self.nodes.get(n as usize) {
                let held: Vec<Held> = order
                    .iter()
                    .filter_map(|&i| node.carried.get(i).map(|c| c.held))
                    .collect();
                let msgs: Vec<u32> = order
                    .iter()
                    .filter_map(|&i| node.carried.get(i).map(|c| c.msg))
                    .collect();
                let view = self.view(peer, limit, now);
                let offers = node.router.offers(
                    &held,
                    &view,
                    |i| msgs.get(i).is_none_or(|&m| self.peer_has(peer, m)),
                    now,
                );
                for offer in offers {
                    if let (Some(&msg), Some(&index)) =
                        (msgs.get(offer.index), order.get(offer.index))
                    {
                        candidates.push((msg, Offer { index, ..offer }));
                    }
                }
            }
            for (msg, offer) in candidates {
                match self.try_start(n, peer, msg, offer) {
                    Try::Started => return true,
                    Try::Busy => break,
                    Try::Refused => {}
                }
            }
        }
        false
    }

    /// The ONE's startTransfer + the receiver's checkReceiving.
    fn try_start(&mut self, from: u32, to: u32, msg: u32, offer: Offer) -> Try {
        if !self.idle(from) || !self.idle(to) {
            return Try::Busy;
        }
        if self.peer_has(to, msg) {
            return Try::Refused;
        }
        let Some(size) = self
            .nodes
            .get(from as usize)
            .and_then(|x| x.carried.get(offer.index))
            .map(|c| c.held.size)
        else {
            return Try::Refused;
        };
        let is_dest = self.msgs.get(msg as usize).is_some_and(|m| m.dest == to);
        if !is_dest && !self.make_room(to, size) {
            return Try::Refused;
        }
        let Ok(id) = self.world.start_transfer(from, to, size) else {
            return Try::Busy;
        };
        self.active.insert(
            id,
            Active {
                from,
                to,
                msg,
                offer,
                done: false,
            },
        );
        for n in [from, to] {
            self.mark(n);
            if let Some(node) = self.nodes.get_mut(n as usize) {
                node.busy = Some(id);
            }
        }
        Try::Started
    }

    fn finalize(&mut self, a: Active, now: u64) {
        for n in [a.from, a.to] {
            self.mark(n);
            if let Some(node) = self.nodes.get_mut(n as usize) {
                node.busy = None;
            }
        }
        self.report.relayed += 1;
        // The sender's copy (by message: its index may have moved since the start).
        let sent = self.nodes.get(a.from as usize).and_then(|x| {
            x.carried
                .iter()
                .position(|c| c.msg == a.msg)
                .and_then(|p| x.carried.get(p).map(|c| (p, c.held)))
        });
        let Some((pos, held)) = sent else {
            return;
        };
        let Some(m) = self.msgs.get(a.msg as usize) else {
            return;
        };
        let created = m.created_ms;
        if m.dest == a.to {
            if let Some(dest) = self.nodes.get_mut(a.to as usize)
                && !dest.delivered.get(a.msg)
            {
                dest.delivered.set(a.msg, true);
                if self.receipts {
                    dest.receipts.set(a.msg, true);
                }
                self.report.delivered += 1;
                self.latencies.push(now.saturating_sub(created));
                self.hops += u64::from(held.hops) + 1;
            }
        } else if !self.peer_has(a.to, a.msg) {
            let got = a.offer.received(&held);
            self.store(a.to, a.msg, got, now);
        }
        // Copy accounting on the sender (The ONE's transferDone).
        if a.offer.keep == 0 {
            self.remove(a.from, a.msg);
        } else if let Some(node) = self.nodes.get_mut(a.from as usize)
            && let Some(c) = node.carried.get_mut(pos)
        {
            c.held.copies = a.offer.keep;
        }
        if self.receipts {
            self.clear_receipted(a.from);
        }
    }

    fn finish(mut self) -> Report {
        let mut lat = std::mem::take(&mut self.latencies);
        lat.sort_unstable();
        let r = &mut self.report;
        if !lat.is_empty() {
            r.latency_mean_s = lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len() as f64 / 1e3;
            r.latency_median_s = median_ms(&lat) / 1e3;
            r.hops_mean = self.hops as f64 / lat.len() as f64;
        }
        r.storage_peak_max = self.nodes.iter().map(|n| n.peak).max().unwrap_or(0);
        r.storage_peak_mean =
            self.nodes.iter().map(|n| n.peak as f64).sum::<f64>() / self.nodes.len().max(1) as f64;
        self.report
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Try {
    Started,
    Busy,
    Refused,
}

fn median_ms(sorted: &[u64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted.get(n / 2).map_or(0.0, |&x| x as f64),
        _ => {
            let a = sorted.get(n / 2 - 1).copied().unwrap_or(0) as f64;
            let b = sorted.get(n / 2).copied().unwrap_or(0) as f64;
            (a + b) / 2.0
        }
    }
}

fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}
