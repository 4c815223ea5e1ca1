//! The handle on a simulated world: build it, add nodes, run it (synchronously or under
//! tokio), read what happened.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::clock::SimClock;
use super::config::{LinkParams, WorldConfig};
use super::engine::Shared;
use super::events::{SimEvent, SimStats, TransferId};
use super::mobility::{Mobility, Point};
use super::node::SimNode;
use super::time::SimTime;
use crate::error::Result;

/// A deterministic simulated world of radio nodes (see the [module docs](super)). Cloning
/// gives another handle on the same world.
#[derive(Clone)]
pub struct World {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (now, nodes) = self.shared.with(|e| (e.now(), e.node_count()));
        f.debug_struct("World")
            .field("now", &now)
            .field("nodes", &nodes)
            .finish_non_exhaustive()
    }
}

impl World {
    /// An empty world at time zero.
    pub fn new(config: WorldConfig) -> Result<World> {
        Ok(World {
            shared: Shared::new(config)?,
        })
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> World {
        World { shared }
    }

    /// Adds a node that moves as `mobility` says from now on (ignored in a
    /// [`ContactModel::Trace`](super::ContactModel::Trace) world). Node ids count from 0 in
    /// the order nodes are added. Fails on a mobility with non-finite points or a random
    /// waypoint without a positive speed or with inverted ranges.
    pub fn add_node(&self, mobility: Mobility) -> Result<SimNode> {
        let (id, table) = self.shared.with(|e| e.add_node(mobility))?;
        Ok(SimNode::new(self.shared.clone(), id, table))
    }

    /// The node with this id.
    pub fn node(&self, id: u32) -> Option<SimNode> {
        let table = self.shared.with(|e| e.table(id))?;
        Some(SimNode::new(self.shared.clone(), id, table))
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> u32 {
        self.shared.with(|e| e.node_count())
    }

    /// Replaces a node's mobility from now on.
    pub fn set_mobility(&self, node: u32, mobility: Mobility) -> Result<()> {
        self.shared.with(|e| e.set_mobility(node, mobility))
    }

    /// The link between `a` and `b` from now on (the current contact's bandwidth, latency and
    /// loss change at once for frames not yet started; the range at the next tick).
    pub fn set_link(&self, a: u32, b: u32, link: LinkParams) -> Result<()> {
        self.shared.with(|e| e.set_link(a, b, link))
    }

    /// The world's time.
    pub fn now(&self) -> SimTime {
        self.shared.with(|e| e.now())
    }

    /// When the next scheduled event is due, if any.
    pub fn next_time(&self) -> Option<SimTime> {
        self.shared.with(|e| e.next_time())
    }

    /// Processes the next scheduled event and returns its time (`None` if nothing is
    /// scheduled). Synchronous mode.
    pub fn step(&self) -> Option<SimTime> {
        self.shared.with(|e| e.step())
    }

    /// Processes every event due up to `t`, in time order, and leaves the clock at `t`.
    /// Synchronous mode.
    pub fn run_until(&self, t: SimTime) {
        self.shared.with(|e| e.run_until(t));
    }

    /// [`run_until`](Self::run_until) `now + d`.
    pub fn run_for(&self, d: Duration) {
        self.shared.with(|e| {
            let t = e.now() + d;
            e.run_until(t);
        });
    }

    /// Runs until the next [`SimEvent`] (returned) or until `until` (then `None`, with the
    /// clock at `until`). The loop of a routing simulator:
    ///
    /// ```
    /// # use adhoc_wireless::sim::*;
    /// let world = World::new(WorldConfig::seeded(1)).unwrap();
    /// world.add_node(Mobility::Static(Point::new(0.0, 0.0))).unwrap();
    /// world.add_node(Mobility::Static(Point::new(10.0, 0.0))).unwrap();
    /// while let Some(event) = world.next_event(SimTime::from_secs(60)) {
    ///     if let SimEvent::ContactUp { a, b, .. } = event {
    ///         world.start_transfer(a, b, 50_000).unwrap();
    ///     }
    /// }
    /// assert_eq!(world.stats().transfers_done, 1);
    /// ```
    pub fn next_event(&self, until: SimTime) -> Option<SimEvent> {
        self.shared.with(|e| e.next_event(until))
    }

    /// Takes the [`SimEvent`]s not yet returned.
    pub fn drain_events(&self) -> Vec<SimEvent> {
        self.shared.with(|e| e.drain_events())
    }

    /// Where a node is now (`None` for an unknown node or in a trace world).
    pub fn position(&self, node: u32) -> Option<Point> {
        self.shared.with(|e| e.position(node))
    }

    /// The pairs `(a, b)`, `a < b`, in contact now.
    pub fn contacts(&self) -> Vec<(u32, u32)> {
        self.shared.with(|e| e.contacts())
    }

    /// Whether `a` and `b` are in contact now.
    pub fn in_contact(&self, a: u32, b: u32) -> bool {
        self.shared.with(|e| e.in_contact(a, b))
    }

    /// Queues a bulk transfer of `bytes` from `from` to `to` (in contact): it occupies the link
    /// for its air time (retransmissions included) as one frame, and ends in
    /// [`SimEvent::TransferDone`] or [`SimEvent::TransferAborted`]. For routing simulators that
    /// move sizes, not bytes.
    pub fn start_transfer(&self, from: u32, to: u32, bytes: u64) -> Result<TransferId> {
        self.shared.with(|e| e.start_transfer(from, to, bytes))
    }

    /// Whether `node`'s radio is busy now (see [`WorldConfig::half_duplex`]).
    pub fn busy(&self, node: u32) -> bool {
        self.shared.with(|e| e.busy(node))
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        self.shared.with(|e| e.stats())
    }

    /// A hash of everything observable that happened so far (contacts, adverts heard and
    /// discovery events, messages, stream segments, transfers), with times: two runs that did
    /// the same have the same hash.
    pub fn log_hash(&self) -> u64 {
        self.shared.with(|e| e.log_hash())
    }

    /// The world's time as a [`Clock`](crate::Clock).
    pub fn clock(&self) -> SimClock {
        SimClock::new(self.shared.clone())
    }

    /// Ties the world to tokio's clock and returns the future that runs it: spawn it on a
    /// runtime whose time is paused (`#[tokio::test(start_paused = true)]`, or
    /// `tokio::time::pause()`).
    ///
    /// From this call on, world time is tokio time since the call (plus the world's time at
    /// the call): the driver sleeps on tokio's timer until the next scheduled event, and every
    /// handle operation first brings the world up to tokio's time, so tasks and the world share
    /// one timeline. With paused time, tokio jumps to the next timer whenever every task waits,
    /// so simulated hours pass in wall milliseconds. Call it from within the runtime. The
    /// future never completes; drop or abort it to stop.
    pub fn drive(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let origin = shared.with(|e| e.attach_tokio());
        async move {
            loop {
                let next = shared.with(|e| e.driver_next());
                let notified = pin!(shared.notify.notified());
                match next {
                    Some(t) => {
                        #[allow(clippy::disallowed_methods)] // the simulator's clock seam
                        let sleep = tokio::time::sleep_until(origin + t.as_duration());
                        let mut sleep = pin!(sleep);
                        let mut notified = notified;
                        std::future::poll_fn(|cx| {
                            if sleep.as_mut().poll(cx).is_ready()
                                || notified.as_mut().poll(cx).is_ready()
                            {
                                Poll::Ready(())
                            } else {
                                Poll::Pending
                            }
                        })
                        .await;
                    }
                    None => notified.await,
                }
            }
        }
    }
}
