//! A deterministic simulated radio (feature `sim`): nodes that move and meet, links with
//! range, loss, latency and bandwidth, on simulated time, implementing the crate's seam — each
//! node is a [`Plugin`](crate::Plugin) — so discovery, streams, TLS and replication run on it
//! unchanged, and a routing simulator can drive it synchronously.
//!
//! ```
//! use adhoc_wireless::sim::{Mobility, Point, SimTime, World, WorldConfig};
//! use adhoc_wireless::{Advert, Discovery, Plugin};
//! # use public_key_identity::KeyId;
//!
//! let world = World::new(WorldConfig::seeded(7)).unwrap();
//! let a = world.add_node(Mobility::Static(Point::new(0.0, 0.0))).unwrap();
//! let b = world.add_node(Mobility::Static(Point::new(20.0, 0.0))).unwrap();
//! b.advertise(Advert::key(KeyId::from_digest([2; 32]), vec![]).unwrap()).unwrap();
//! world.run_until(SimTime::from_secs(2));
//! assert_eq!(a.peers().len(), 1); // a heard b's advert
//! ```
//!
//! # The model
//!
//! **Mobility** ([`Mobility`]): a node stays at a point, follows random waypoint (uniform
//! destination in an area, uniform speed, uniform wait; each node draws from its own random
//! stream), or follows a piecewise-linear path of keyframes. [`World::set_mobility`] replaces
//! a node's motion from now on.
//!
//! **Contacts** ([`ContactModel`]): geometric by default — two nodes are in contact while they
//! are within the link's range — or an explicit [`ContactTrace`] of up/down changes (The ONE's
//! connection-event format parses with [`ContactTrace::parse_one`]). A contact is the unit of
//! everything else: a link exists only while its contact is up; when it goes down, queued and
//! in-flight messages are lost, transfers abort and streams break. A new contact of the same
//! pair is a new link (old streams stay broken).
//!
//! **Links** ([`LinkParams`], one default for all pairs, per-pair overrides with
//! [`World::set_link`]): each direction of a contact is a FIFO channel. A frame of `n` bytes
//! occupies its channel for `n / bandwidth` (its air time), then arrives `latency` later; frames
//! of one direction arrive in order. Frames are standalone messages (one frame each, up to
//! [`WorldConfig::max_message_bytes`]; larger ones are refused), stream segments (up to
//! [`WorldConfig::mtu`] bytes, round robin between the streams of a direction, within the
//! receiver's window), and bulk transfers ([`World::start_transfer`], one frame of any size).
//! Stream opens and acceptances are control frames that take the latency and no air time;
//! adverts too (and are not retransmitted). In a direction, queued messages go before
//! transfers, transfers before stream segments.
//!
//! **Loss**: each transmission is lost with the link's `loss` probability. A lost message is
//! gone (receivers see nothing; [`SimStats::messages_lost`]); a lost advert is not heard. Stream
//! segments and transfers are reliable, as over a link layer that retransmits: each
//! `mtu`-sized piece is sent again until it gets through, every attempt costing air time, so
//! throughput drops by the loss rate; after [`WorldConfig::max_retries`] retransmissions of one
//! piece the stream breaks (or the transfer aborts). Loss draws come from one stream of the
//! world's seed, in event order.
//!
//! **Half duplex** ([`WorldConfig::half_duplex`]): a node's radio does one thing at a time —
//! sends one frame or receives one — and a frame from `a` to `b` starts only when both radios
//! are free, occupying both for its air time (the latency after it does not). When both
//! directions of a contact have frames waiting they alternate, so two streams in opposite
//! directions each get half the bandwidth; a node serves its contacts in turn. Full duplex (the
//! default) gives each direction of each contact its own channel: a node can send and receive,
//! and talk to several neighbours, at full bandwidth at once (as The ONE's connections do).
//!
//! **Discovery**: a node that [advertises](crate::Plugin::advertise) broadcasts its advert
//! every [`WorldConfig::advert_interval`] (at a phase drawn from its own stream) to every node
//! in contact, each copy lost independently; a receiver feeds it to its
//! [`SharedTable`](crate::SharedTable) as an advert from [`Address::Sim`](crate::Address) of the
//! sender, so the hygiene, `Found`/`Updated` and `Lost` after the table's silence
//! (`lost_after_ms` of [`WorldConfig::table`]) are the code real radios run. A peer is found up
//! to one interval after contact begins and lost one silence after its last advert heard.
//!
//! **Streams** ([`SimStream`]): [`Link::connect`](crate::Link::connect) sends an open to a node
//! in contact; the node gets the stream from [`Link::incoming`](crate::Link::incoming) when the
//! open arrives (after the latency), and `connect` returns one latency later. A full inbound
//! queue or too many streams refuses the open. Bytes flow at the link's bandwidth (shared with
//! the direction's other traffic), latency and loss, within a window of
//! [`WorldConfig::stream_window`] bytes in flight or unread (window updates are instantaneous:
//! the model has no acknowledgement traffic). A write queues up to
//! [`WorldConfig::send_buffer`] bytes. Shutdown (or dropping an end) sends a FIN after the
//! queued bytes: the other end reads `Ok(0)`. When the contact ends the stream breaks: reads
//! return the bytes that had arrived, then `ConnectionReset`; writes fail at once.
//!
//! # Time
//!
//! Discrete-event: one queue of events on simulated microseconds, ordered by (time, order of
//! scheduling), so nothing costs time while nothing happens and every transmission, arrival and
//! expiry happens at its exact microsecond. Geometric contact detection alone is sampled: a
//! tick every [`WorldConfig::tick`] (100 ms by default, as The ONE's update interval in the
//! scenario the mesh crate is compared against) moves every node and checks distances, so
//! contacts begin and end at tick times and contacts shorter than a tick between two ticks are
//! missed — exactly as in The ONE, which is the point: computing exact contact times for
//! piecewise-linear motion would find contacts the reference does not. Ticks run only while a
//! node moves. A uniform grid of cells at least one range wide keeps a tick at O(nodes +
//! nearby pairs), not O(nodes²). Trace contacts happen at their exact times, without ticks.
//!
//! Two ways to drive it:
//!
//! 1. **Synchronously**: [`World::step`], [`World::run_until`] and [`World::next_event`]
//!    process events in time order on the caller's thread. A routing simulator that moves
//!    sizes, not bytes, uses [`SimEvent::ContactUp`]/[`SimEvent::ContactDown`] (with each
//!    contact's byte budget) and [`World::start_transfer`] / [`SimEvent::TransferDone`] /
//!    [`SimEvent::TransferAborted`]; it needs no runtime.
//! 2. **Under tokio with paused time**: [`World::drive`] returns a future that sleeps on
//!    tokio's timer until the next event and processes it; every handle operation (a read, a
//!    write, a send, [`SimClock`]'s `now_millis`) first brings the world up to tokio's time.
//!    With `start_paused = true`, tokio jumps its clock to the next timer whenever all tasks
//!    wait, so async code (streams, TLS, replication) and the world share one simulated
//!    timeline and hours pass in milliseconds. Use [`World::clock`] as the code's
//!    [`Clock`](crate::Clock), so its sleeps are world timers too.
//!
//! # Determinism
//!
//! All randomness is [`Rng`] (xoshiro256**) seeded from [`WorldConfig::seed`]: one stream per
//! node for its mobility (so traffic never changes where nodes go: the same mobility seed gives
//! the same contacts whatever the routing), one per node for advert phases, one for losses.
//! Maps are ordered (no hash-map iteration order), time is integral, and positions use only
//! IEEE-exact float operations (`+ - * /`, `sqrt`), so:
//!
//! * **Synchronous mode**: the same configuration, the same calls in the same order give the
//!   same run, bit for bit, on every platform — [`World::log_hash`] hashes every observable
//!   event with its time to check it.
//! * **Tokio mode**: the world is as deterministic as the order of the calls it receives; with
//!   a current-thread runtime and paused time, tokio's scheduling is in practice repeatable, but
//!   tokio does not promise it (nor do `select!`'s random branch order or TLS's random bytes, for
//!   contents), so contact and mobility events are guaranteed identical, and traffic timing is
//!   the same whenever the tasks make the same calls at the same simulated times.
//!
//! Nothing here reads the wall clock, sleeps, spawns threads or tasks, or uses operating-system
//! randomness. Memory is bounded by the configuration: queues per contact direction
//! ([`WorldConfig::queue_limit`]), stream buffers and windows, inbound queues, streams per node,
//! the undrained event buffer.

mod clock;
mod config;
mod engine;
mod events;
mod grid;
mod io;
mod mobility;
mod node;
mod rng;
mod time;
mod trace;
mod world;

pub use clock::{SimClock, SimSleep};
pub use config::{ContactModel, LinkParams, WorldConfig};
pub use events::{SimEvent, SimStats, TransferId};
pub use io::SimStream;
pub use mobility::{Mobility, Point, RandomWaypoint};
pub use node::SimNode;
pub use rng::Rng;
pub use time::SimTime;
pub use trace::{ContactTrace, TraceEntry};
pub use world::World;
