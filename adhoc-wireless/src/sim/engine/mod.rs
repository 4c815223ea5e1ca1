//! The world's state machine: one event queue on simulated time, the contacts, the radios'
//! queues and the streams' buffers. Everything here is synchronous and deterministic; the
//! handles ([`World`](super::World), [`SimNode`](super::SimNode), [`SimStream`](super::SimStream),
//! [`SimClock`](super::SimClock)) reach it through [`Shared::with`], which also wakes the tasks
//! the step made ready once the lock is released.
//!
//! One state, behaviour in three files: this one has the queue, time, nodes, contacts, adverts
//! and timers; [`radio`] the per-direction queues, air time and delivery; [`streams`] the
//! streams' opening, buffers and breaking.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

mod radio;
mod streams;

use radio::{Dir, Frame};
use streams::StreamState;

use super::config::{ContactModel, LinkParams, WorldConfig};
use super::events::{SimEvent, SimStats};
use super::grid::Grid;
use super::mobility::{Mobility, Mover, Point};
use super::rng::Rng;
use super::time::{SimTime, duration_micros};
use super::trace::TraceEntry;
use crate::discovery::SharedTable;
use crate::error::{Error, Result};
use crate::link::{Inbound, Incoming};
use crate::peer::{Address, Event, PeerId, Transport};

/// Two nodes, the lower id first.
pub(crate) type Pair = (u32, u32);

fn pair(a: u32, b: u32) -> Pair {
    if a < b { (a, b) } else { (b, a) }
}

/// Direction index within a contact: 0 is lower → higher id, 1 the other way.
fn dir_of(from: u32, to: u32) -> usize {
    usize::from(from > to)
}

fn ends_of(p: Pair, d: usize) -> (u32, u32) {
    if d == 0 { p } else { (p.1, p.0) }
}

// Random streams of a world (per-node streams use the node id below these).
const STREAM_LOSS: u64 = u64::MAX;
const STREAM_ADVERT: u64 = 1 << 62;

// Tags of the event-log hash.
const TAG_UP: u64 = 1;
const TAG_DOWN: u64 = 2;
const TAG_HEARD: u64 = 3;
const TAG_FOUND: u64 = 4;
const TAG_UPDATED: u64 = 5;
const TAG_LOST: u64 = 6;
const TAG_MESSAGE: u64 = 7;
const TAG_MESSAGE_LOST: u64 = 8;
const TAG_MESSAGE_DROPPED: u64 = 9;
const TAG_SEGMENT: u64 = 10;
const TAG_OPENED: u64 = 11;
const TAG_REFUSED: u64 = 12;
const TAG_BROKEN: u64 = 13;
const TAG_TRANSFER: u64 = 14;
const TAG_ABORTED: u64 = 15;

/// The engine behind a lock, and the driver's wake-up call.
pub(crate) struct Shared {
    engine: Mutex<Engine>,
    pub(crate) notify: Notify,
}

impl Shared {
    pub(crate) fn new(config: WorldConfig) -> Result<Arc<Shared>> {
        config.check()?;
        Ok(Arc::new_cyclic(|me| Shared {
            engine: Mutex::new(Engine::new(config, me.clone())),
            notify: Notify::new(),
        }))
    }

    /// Runs `f` on the engine (first brought up to tokio's clock when a driver runs), then,
    /// with the lock released, wakes the tasks it made ready.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Engine) -> T) -> T {
        let (out, wake, graveyard, notify) = {
            let mut e = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            e.sync();
            let out = f(&mut e);
            (
                out,
                std::mem::take(&mut e.wake),
                std::mem::take(&mut e.graveyard),
                std::mem::take(&mut e.driver.notify),
            )
        };
        // Handles dropped here lock the engine again: never while it is locked.
        drop(graveyard);
        for w in wake {
            w.wake();
        }
        if notify {
            self.notify.notify_one();
        }
        out
    }
}

enum TimeSource {
    /// Time moves only when the caller runs the world.
    Manual,
    /// Time follows tokio's clock from this origin (see [`World::drive`](super::World::drive)).
    Tokio(tokio::time::Instant),
}

#[derive(Default)]
struct Driver {
    active: bool,
    target: Option<SimTime>,
    notify: bool,
}

struct Scheduled {
    at: SimTime,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Scheduled) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

enum Action {
    Tick,
    Trace,
    Advert(u32),
    Heard {
        to: u32,
        from: u32,
        epoch: u64,
        bytes: Arc<[u8]>,
    },
    Expire(u32),
    TxDone {
        from: u32,
        to: u32,
        epoch: u64,
        frame: Frame,
    },
    Arrive {
        from: u32,
        to: u32,
        epoch: u64,
        frame: Frame,
    },
    Timer(u64),
    Syn(u64),
    Accepted(u64),
    Refused(u64),
}

struct NodeState {
    table: SharedTable,
    advert: Option<Arc<[u8]>>,
    advert_armed: bool,
    rng: Rng,
    moves: u64,
    tx: mpsc::Sender<Inbound>,
    rx: Option<Incoming>,
    neighbours: Vec<u32>,
    /// Half duplex: the contact (peer, epoch) the radio is busy with.
    radio: Option<(u32, u64)>,
    rr: usize,
    expiry_at: Option<SimTime>,
}

struct Contact {
    epoch: u64,
    since: SimTime,
    link: LinkParams,
    seen: u64,
    dirs: [Dir; 2],
    last: usize,
    streams: BTreeSet<u64>,
}

struct Timer {
    waker: Option<Waker>,
}

/// The simulated world.
pub(crate) struct Engine {
    pub(crate) config: WorldConfig,
    me: Weak<Shared>,
    now: SimTime,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    nodes: Vec<NodeState>,
    movers: Vec<Mover>,
    positions: Vec<Point>,
    grid: Grid,
    geometric: bool,
    contacts: BTreeMap<Pair, Contact>,
    overrides: BTreeMap<Pair, LinkParams>,
    streams: BTreeMap<u64, StreamState>,
    next_stream: u64,
    next_transfer: u64,
    next_timer: u64,
    next_epoch: u64,
    timers: BTreeMap<u64, Timer>,
    loss: Rng,
    trace: Vec<TraceEntry>,
    trace_at: usize,
    tick_armed: bool,
    tick_count: u64,
    found: Vec<Pair>,
    output: VecDeque<SimEvent>,
    hash: u64,
    stats: SimStats,
    wake: Vec<Waker>,
    graveyard: Vec<Inbound>,
    time: TimeSource,
    driver: Driver,
}

impl Engine {
    fn new(config: WorldConfig, me: Weak<Shared>) -> Engine {
        let (geometric, trace) = match &config.contacts {
            ContactModel::Geometric => (true, Vec::new()),
            ContactModel::Trace(t) => (false, t.entries().to_vec()),
        };
        let grid = if geometric {
            Grid::new(config.width, config.height, config.link.range)
        } else {
            Grid::new(0.0, 0.0, 1.0)
        };
        let mut engine = Engine {
            loss: Rng::stream(config.seed, STREAM_LOSS),
            config,
            me,
            now: SimTime::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes: Vec::new(),
            movers: Vec::new(),
            positions: Vec::new(),
            grid,
            geometric,
            contacts: BTreeMap::new(),
            overrides: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_stream: 0,
            next_transfer: 0,
            next_timer: 0,
            next_epoch: 0,
            timers: BTreeMap::new(),
            trace,
            trace_at: 0,
            tick_armed: false,
            tick_count: 0,
            found: Vec::new(),
            output: VecDeque::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            stats: SimStats::default(),
            wake: Vec::new(),
            graveyard: Vec::new(),
            time: TimeSource::Manual,
            driver: Driver::default(),
        };
        if let Some(first) = engine.trace.first() {
            let at = first.at;
            engine.schedule(at, Action::Trace);
        }
        engine
    }

    // ---- time and the queue ----

    pub(crate) fn now(&self) -> SimTime {
        self.now
    }

    fn schedule(&mut self, at: SimTime, action: Action) {
        let at = at.max(self.now);
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            action,
        }));
        if self.driver.active && self.driver.target.is_none_or(|t| at < t) {
            self.driver.target = Some(at);
            self.driver.notify = true;
        }
    }

    pub(crate) fn next_time(&self) -> Option<SimTime> {
        self.queue.peek().map(|Reverse(s)| s.at)
    }

    fn pop_until(&mut self, t: SimTime) -> bool {
        if self.queue.peek().is_none_or(|Reverse(s)| s.at > t) {
            return false;
        }
        let Some(Reverse(s)) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(s.at);
        self.process(s.action);
        true
    }

    pub(crate) fn run_until(&mut self, t: SimTime) {
        while self.pop_until(t) {}
        self.now = self.now.max(t);
    }

    pub(crate) fn step(&mut self) -> Option<SimTime> {
        let at = self.next_time()?;
        self.pop_until(at);
        Some(self.now)
    }

    pub(crate) fn next_event(&mut self, until: SimTime) -> Option<SimEvent> {
        loop {
            if let Some(e) = self.output.pop_front() {
                return Some(e);
            }
            if !self.pop_until(until) {
                self.now = self.now.max(until);
                return None;
            }
        }
    }

    pub(crate) fn drain_events(&mut self) -> Vec<SimEvent> {
        self.output.drain(..).collect()
    }

    /// In tokio mode, catches up with tokio's clock.
    fn sync(&mut self) {
        if let TimeSource::Tokio(origin) = self.time {
            // Also when the time did not move: events may be due now.
            let t = SimTime::from_duration(origin.elapsed()).max(self.now);
            self.run_until(t);
        }
    }

    /// Switches to tokio's clock (from now on, world time is tokio time since the origin).
    pub(crate) fn attach_tokio(&mut self) -> tokio::time::Instant {
        if let TimeSource::Tokio(origin) = self.time {
            return origin;
        }
        let now = tokio::time::Instant::now();
        let origin = now.checked_sub(self.now.as_duration()).unwrap_or(now);
        self.time = TimeSource::Tokio(origin);
        self.driver.active = true;
        origin
    }

    /// The driver is about to sleep until the returned time.
    pub(crate) fn driver_next(&mut self) -> Option<SimTime> {
        let next = self.next_time();
        self.driver.target = next;
        next
    }

    fn process(&mut self, action: Action) {
        self.stats.events += 1;
        match action {
            Action::Tick => self.tick(),
            Action::Trace => self.trace_step(),
            Action::Advert(n) => self.advert(n),
            Action::Heard {
                to,
                from,
                epoch,
                bytes,
            } => {
                if self.contact_epoch(pair(to, from)) == Some(epoch) {
                    self.heard(to, from, &bytes);
                } else {
                    self.stats.adverts_lost += 1;
                }
            }
            Action::Expire(n) => self.expire(n),
            Action::TxDone {
                from,
                to,
                epoch,
                frame,
            } => self.tx_done(from, to, epoch, frame),
            Action::Arrive {
                from,
                to,
                epoch,
                frame,
            } => self.arrive(from, to, epoch, frame),
            Action::Timer(id) => {
                if let Some(w) = self.timers.get_mut(&id).and_then(|t| t.waker.take()) {
                    self.wake.push(w);
                }
            }
            Action::Syn(id) => self.syn(id),
            Action::Accepted(id) => self.accepted(id),
            Action::Refused(id) => self.refused(id),
        }
    }

    // ---- the event log ----

    fn note(&mut self, words: &[u64]) {
        let mut h = mix(self.hash, self.now.as_micros());
        for w in words {
            h = mix(h, *w);
        }
        self.hash = h;
    }

    pub(crate) fn log_hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.stats
    }

    fn emit(&mut self, event: SimEvent) {
        if self.output.len() >= self.config.event_buffer {
            self.stats.events_dropped += 1;
            if self.output.pop_front().is_none() {
                return;
            }
        }
        self.output.push_back(event);
    }

    fn note_discovery(&mut self, node: u32, events: &[Event]) {
        for e in events {
            let tag = match e {
                Event::Found(_) => TAG_FOUND,
                Event::Updated(_) => TAG_UPDATED,
                Event::Lost(_) => TAG_LOST,
            };
            let id = match e.peer_id() {
                PeerId::Key(k) => word(k.as_bytes()),
                PeerId::Beacon(b) => word(&b),
            };
            self.note(&[tag, u64::from(node), id]);
        }
    }

    // ---- nodes and mobility ----

    pub(crate) fn add_node(&mut self, mobility: Mobility) -> Result<(u32, SharedTable)> {
        mobility.check()?;
        let id = self.nodes.len() as u32;
        let mut mover = Mover::new(
            mobility,
            self.now,
            Rng::stream(self.config.seed, u64::from(id)),
        );
        let p = mover.position(self.now);
        self.positions.push(p);
        self.grid.place(id, p);
        self.movers.push(mover);
        let (tx, rx) = Incoming::channel(self.config.incoming_capacity);
        let table = SharedTable::new(self.config.table.clone());
        self.nodes.push(NodeState {
            table: table.clone(),
            advert: None,
            advert_armed: false,
            rng: Rng::stream(self.config.seed, STREAM_ADVERT | u64::from(id)),
            moves: 0,
            tx,
            rx: Some(rx),
            neighbours: Vec::new(),
            radio: None,
            rr: 0,
            expiry_at: None,
        });
        self.arm_tick();
        Ok((id, table))
    }

    pub(crate) fn node_count(&self) -> u32 {
        self.nodes.len() as u32
    }

    pub(crate) fn table(&self, node: u32) -> Option<SharedTable> {
        self.nodes.get(node as usize).map(|n| n.table.clone())
    }

    pub(crate) fn set_mobility(&mut self, node: u32, mobility: Mobility) -> Result<()> {
        mobility.check()?;
        let Some(state) = self.nodes.get_mut(node as usize) else {
            return Err(no_such_node(node));
        };
        state.moves += 1;
        let stream = u64::from(node) | (state.moves << 32);
        let mover = Mover::new(mobility, self.now, Rng::stream(self.config.seed, stream));
        if let Some(m) = self.movers.get_mut(node as usize) {
            *m = mover;
        }
        self.arm_tick();
        Ok(())
    }

    pub(crate) fn position(&mut self, node: u32) -> Option<Point> {
        if !self.geometric {
            return None;
        }
        let now = self.now;
        self.movers.get_mut(node as usize).map(|m| m.position(now))
    }

    pub(crate) fn set_link(&mut self, a: u32, b: u32, link: LinkParams) -> Result<()> {
        link.check()?;
        if a == b || a >= self.node_count() || b >= self.node_count() {
            return Err(Error::InvalidConfig(format!("no link between {a} and {b}")));
        }
        let p = pair(a, b);
        if let Some(c) = self.contacts.get_mut(&p) {
            c.link = link.clone();
        }
        if self.geometric && link.range > self.grid.cell() {
            let mut grid = Grid::new(self.config.width, self.config.height, link.range);
            for (i, p) in self.positions.iter().enumerate() {
                grid.place(i as u32, *p);
            }
            self.grid = grid;
        }
        self.overrides.insert(p, link);
        self.arm_tick();
        Ok(())
    }

    fn link_of(&self, p: Pair) -> LinkParams {
        self.overrides
            .get(&p)
            .cloned()
            .unwrap_or_else(|| self.config.link.clone())
    }

    // ---- contacts ----

    fn arm_tick(&mut self) {
        if !self.geometric || self.tick_armed {
            return;
        }
        let tick = duration_micros(self.config.tick).max(1);
        let at = SimTime::from_micros(self.now.as_micros().div_ceil(tick).saturating_mul(tick));
        self.tick_armed = true;
        self.schedule(at, Action::Tick);
    }

    fn tick(&mut self) {
        self.tick_armed = false;
        self.tick_count += 1;
        self.stats.ticks += 1;
        let now = self.now;
        for (i, (m, p)) in self.movers.iter_mut().zip(&mut self.positions).enumerate() {
            *p = m.position(now);
            self.grid.place(i as u32, *p);
        }
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        let range = self.config.link.range;
        let (grid, positions, overrides) = (&self.grid, &self.positions, &self.overrides);
        for (i, pi) in positions.iter().enumerate() {
            let i = i as u32;
            grid.for_each_near(i, |j| {
                if j <= i {
                    return;
                }
                let Some(pj) = positions.get(j as usize) else {
                    return;
                };
                let r = if overrides.is_empty() {
                    range
                } else {
                    overrides.get(&(i, j)).map_or(range, |l| l.range)
                };
                if pi.distance2(pj) <= r * r {
                    found.push((i, j));
                }
            });
        }
        let mut ups = Vec::new();
        for p in &found {
            match self.contacts.get_mut(p) {
                Some(c) => c.seen = self.tick_count,
                None => ups.push(*p),
            }
        }
        self.found = found;
        let downs: Vec<Pair> = self
            .contacts
            .iter()
            .filter(|(_, c)| c.seen != self.tick_count)
            .map(|(p, _)| *p)
            .collect();
        for p in downs {
            self.contact_down(p);
        }
        ups.sort_unstable();
        for p in ups {
            self.contact_up(p);
        }
        if self.movers.iter().any(|m| !m.settled(now)) {
            let tick = duration_micros(self.config.tick).max(1);
            self.tick_armed = true;
            self.schedule(now.plus_micros(tick), Action::Tick);
        }
    }

    fn trace_step(&mut self) {
        while let Some(e) = self.trace.get(self.trace_at).copied() {
            if e.at > self.now {
                break;
            }
            self.trace_at += 1;
            let n = self.node_count();
            if e.a == e.b || e.a >= n || e.b >= n {
                self.stats.trace_skipped += 1;
                continue;
            }
            let p = pair(e.a, e.b);
            match (e.up, self.contacts.contains_key(&p)) {
                (true, false) => self.contact_up(p),
                (false, true) => self.contact_down(p),
                _ => self.stats.trace_skipped += 1,
            }
        }
        if let Some(at) = self.trace.get(self.trace_at).map(|e| e.at) {
            self.schedule(at, Action::Trace);
        }
    }

    fn contact_epoch(&self, p: Pair) -> Option<u64> {
        self.contacts.get(&p).map(|c| c.epoch)
    }

    pub(crate) fn contacts(&self) -> Vec<Pair> {
        self.contacts.keys().copied().collect()
    }

    pub(crate) fn in_contact(&self, a: u32, b: u32) -> bool {
        self.contacts.contains_key(&pair(a, b))
    }

    fn contact_up(&mut self, p: Pair) {
        let link = self.link_of(p);
        self.next_epoch += 1;
        self.contacts.insert(
            p,
            Contact {
                epoch: self.next_epoch,
                since: self.now,
                link: link.clone(),
                seen: self.tick_count,
                dirs: [Dir::default(), Dir::default()],
                last: 1,
                streams: BTreeSet::new(),
            },
        );
        for (n, other) in [(p.0, p.1), (p.1, p.0)] {
            if let Some(node) = self.nodes.get_mut(n as usize) {
                if let Err(at) = node.neighbours.binary_search(&other) {
                    node.neighbours.insert(at, other);
                }
            }
        }
        self.stats.contacts_up += 1;
        self.note(&[TAG_UP, u64::from(p.0), u64::from(p.1)]);
        self.emit(SimEvent::ContactUp {
            at: self.now,
            a: p.0,
            b: p.1,
            link,
        });
    }

    fn contact_down(&mut self, p: Pair) {
        let Some(c) = self.contacts.remove(&p) else {
            return;
        };
        for (n, other) in [(p.0, p.1), (p.1, p.0)] {
            if let Some(node) = self.nodes.get_mut(n as usize) {
                node.neighbours.retain(|x| *x != other);
                if node.radio == Some((other, c.epoch)) {
                    node.radio = None;
                }
            }
        }
        let mut aborted = Vec::new();
        for (d, dir) in c.dirs.iter().enumerate() {
            let (from, to) = ends_of(p, d);
            self.stats.messages_lost += dir.messages.len() as u64;
            let sending = dir.sending.iter().map(|(id, bytes)| (*id, *bytes));
            for (id, bytes) in dir.transfers.iter().copied().chain(sending) {
                aborted.push((id, from, to, bytes));
            }
        }
        aborted.sort_unstable();
        for (id, from, to, bytes) in aborted {
            self.abort_transfer(id, from, to, bytes);
        }
        for id in &c.streams {
            self.break_stream(*id);
        }
        self.stats.contacts_down += 1;
        self.note(&[TAG_DOWN, u64::from(p.0), u64::from(p.1)]);
        let capacity = c.link.bytes_in(self.now.as_micros() - c.since.as_micros());
        self.emit(SimEvent::ContactDown {
            at: self.now,
            a: p.0,
            b: p.1,
            since: c.since,
            sent: [c.dirs[0].sent, c.dirs[1].sent],
            capacity,
        });
        if self.config.half_duplex {
            self.kick_node(p.0);
            self.kick_node(p.1);
        }
    }

    // ---- adverts and discovery ----

    pub(crate) fn advertise(&mut self, node: u32, bytes: Option<Vec<u8>>) -> Result<()> {
        let interval = duration_micros(self.config.advert_interval).max(1);
        let now = self.now;
        let Some(state) = self.nodes.get_mut(node as usize) else {
            return Err(no_such_node(node));
        };
        state.advert = bytes.map(Arc::from);
        if state.advert.is_some() && !state.advert_armed {
            state.advert_armed = true;
            let phase = state.rng.below(interval);
            self.schedule(now.plus_micros(phase), Action::Advert(node));
        }
        Ok(())
    }

    fn advert(&mut self, n: u32) {
        let interval = self.config.advert_interval;
        let Some(node) = self.nodes.get_mut(n as usize) else {
            return;
        };
        let Some(bytes) = node.advert.clone() else {
            node.advert_armed = false;
            return;
        };
        let neighbours = node.neighbours.clone();
        self.stats.adverts_sent += 1;
        for y in neighbours {
            let Some(c) = self.contacts.get(&pair(n, y)) else {
                continue;
            };
            let (latency, epoch) = (c.link.latency, c.epoch);
            if self.loss.chance(c.link.loss) {
                self.stats.adverts_lost += 1;
                continue;
            }
            if latency.is_zero() {
                self.heard(y, n, &bytes);
            } else {
                self.schedule(
                    self.now + latency,
                    Action::Heard {
                        to: y,
                        from: n,
                        epoch,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
        self.schedule(self.now + interval, Action::Advert(n));
    }

    fn heard(&mut self, to: u32, from: u32, bytes: &[u8]) {
        let Some(node) = self.nodes.get(to as usize) else {
            return;
        };
        let source = Address::Sim(from);
        let events = node.table.observe(
            self.now.as_millis(),
            &source,
            Transport::Sim,
            source.clone(),
            bytes,
        );
        self.stats.adverts_heard += 1;
        self.note(&[TAG_HEARD, u64::from(to), u64::from(from)]);
        self.note_discovery(to, &events);
        self.schedule_expiry(to);
    }

    fn schedule_expiry(&mut self, n: u32) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(n as usize) else {
            return;
        };
        let Some(ms) = node.table.next_expiry() else {
            return;
        };
        let at = SimTime::from_millis(ms).max(now);
        if node.expiry_at.is_none_or(|e| at < e) {
            node.expiry_at = Some(at);
            self.schedule(at, Action::Expire(n));
        }
    }

    fn expire(&mut self, n: u32) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(n as usize) else {
            return;
        };
        if node.expiry_at != Some(now) {
            return;
        }
        node.expiry_at = None;
        let events = node.table.expire(now.as_millis());
        self.note_discovery(n, &events);
        self.schedule_expiry(n);
    }

    pub(crate) fn take_incoming(&mut self, node: u32) -> Option<Incoming> {
        self.nodes.get_mut(node as usize).and_then(|n| n.rx.take())
    }

    // ---- timers ----

    pub(crate) fn timer_new(&mut self, after: Duration) -> (u64, SimTime) {
        self.next_timer += 1;
        let id = self.next_timer;
        let deadline = self.now + after;
        self.timers.insert(id, Timer { waker: None });
        self.schedule(deadline, Action::Timer(id));
        (id, deadline)
    }

    pub(crate) fn timer_poll(&mut self, id: u64, deadline: SimTime, cx: &Context<'_>) -> Poll<()> {
        if self.now >= deadline {
            self.timers.remove(&id);
            return Poll::Ready(());
        }
        if let Some(t) = self.timers.get_mut(&id) {
            t.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(crate) fn timer_drop(&mut self, id: u64) {
        self.timers.remove(&id);
    }
}

fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95)
}

fn word(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (slot, v) in b.iter_mut().zip(bytes) {
        *slot = *v;
    }
    u64::from_le_bytes(b)
}

fn no_such_node(node: u32) -> Error {
    Error::Unreachable(format!("sim:{node} does not exist"))
}
