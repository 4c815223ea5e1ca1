//! How a simulated world is set up: the radio links, the contact model, the limits.

use std::time::Duration;

use super::trace::ContactTrace;
use crate::error::{Error, Result};
use crate::link::MAX_MESSAGE_BYTES;
use crate::table::TableConfig;

/// A radio link between two nodes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LinkParams {
    /// Nodes at most this far apart (metres) are in contact (geometric contacts only).
    pub range: f64,
    /// Bytes per second each way (0: unlimited, every frame takes no air time).
    pub bandwidth: u64,
    /// Time from the end of a frame's transmission to its arrival (propagation and
    /// processing).
    pub latency: Duration,
    /// Probability that one transmission of a frame is lost.
    pub loss: f64,
}

impl Default for LinkParams {
    /// 30 m, 250 kB/s, 2 ms, no loss.
    fn default() -> LinkParams {
        LinkParams {
            range: 30.0,
            bandwidth: 250_000,
            latency: Duration::from_millis(2),
            loss: 0.0,
        }
    }
}

impl LinkParams {
    /// A link of `range` metres, `bandwidth` bytes per second, `latency` and `loss`.
    pub fn new(range: f64, bandwidth: u64, latency: Duration, loss: f64) -> LinkParams {
        LinkParams {
            range,
            bandwidth,
            latency,
            loss,
        }
    }

    /// The air time of `bytes`, in microseconds (rounded up).
    pub fn airtime_micros(&self, bytes: u64) -> u64 {
        if self.bandwidth == 0 {
            return 0;
        }
        let micros = (u128::from(bytes) * 1_000_000).div_ceil(u128::from(self.bandwidth));
        u64::try_from(micros).unwrap_or(u64::MAX)
    }

    /// How many bytes fit in `micros` microseconds (`u64::MAX` for an unlimited link).
    pub fn bytes_in(&self, micros: u64) -> u64 {
        if self.bandwidth == 0 {
            return u64::MAX;
        }
        let bytes = u128::from(micros) * u128::from(self.bandwidth) / 1_000_000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if !(self.range.is_finite() && self.range >= 0.0) {
            return Err(Error::InvalidConfig(format!(
                "link range {} must be a finite, non-negative number of metres",
                self.range
            )));
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(Error::InvalidConfig(format!(
                "link loss {} must be a probability",
                self.loss
            )));
        }
        Ok(())
    }
}

/// Where contacts come from.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub enum ContactModel {
    /// Nodes move (see [`Mobility`](super::Mobility)); two nodes are in contact while they are
    /// within the link's range, checked every [`WorldConfig::tick`].
    #[default]
    Geometric,
    /// Contacts follow this trace exactly; nodes have no positions.
    Trace(ContactTrace),
}

/// A world's set-up. Every field has a default; change what you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorldConfig {
    /// Seeds every random draw: mobility (one stream per node), losses, advert phases.
    pub seed: u64,
    /// Contact detection interval for [`ContactModel::Geometric`] (default 100 ms, as The ONE's
    /// update interval in the reference scenario).
    pub tick: Duration,
    /// Extent of the area nodes move in (metres, from 0): sizes the contact grid. Nodes outside
    /// it still meet correctly, only less efficiently. Default 1000 × 1000.
    pub width: f64,
    /// See [`width`](Self::width).
    pub height: f64,
    /// The link between every pair, unless [`World::set_link`](super::World::set_link) says
    /// otherwise for a pair.
    pub link: LinkParams,
    /// Half-duplex radios: a node sends or receives one frame at a time, never both (see the
    /// module docs). Default: full duplex, each direction of each contact its own channel.
    pub half_duplex: bool,
    /// Where contacts come from.
    pub contacts: ContactModel,
    /// How often a node that advertises broadcasts its advert (default 1 s).
    pub advert_interval: Duration,
    /// Each node's peer table (its `lost_after_ms` is the silence after which a peer is lost).
    pub table: TableConfig,
    /// The largest standalone message (default [`MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Largest stream segment, and the unit of loss for streams and transfers (default 1500).
    pub mtu: usize,
    /// Transmissions of one segment lost in a row after which its stream breaks (or its
    /// transfer aborts). Default 7.
    pub max_retries: u32,
    /// Bytes of one stream direction in flight or unread by the receiver (default 256 KiB).
    pub stream_window: usize,
    /// Bytes a stream writer may queue before writes wait (default 64 KiB).
    pub send_buffer: usize,
    /// Messages (and transfers) queued per contact direction before sends are refused
    /// (default 64).
    pub queue_limit: usize,
    /// Inbound messages and streams waiting for [`Link::incoming`](crate::Link::incoming)'s
    /// reader per node (default 64); more are dropped (messages) or refused (streams).
    pub incoming_capacity: usize,
    /// Streams a node may have open at once (default 64).
    pub max_streams: usize,
    /// [`SimEvent`](super::SimEvent)s kept for [`World::next_event`](super::World::next_event)
    /// and [`World::drain_events`](super::World::drain_events) (default 65 536; the oldest go
    /// first, counted in [`SimStats::events_dropped`](super::SimStats::events_dropped)).
    pub event_buffer: usize,
}

impl Default for WorldConfig {
    fn default() -> WorldConfig {
        WorldConfig {
            seed: 0,
            tick: Duration::from_millis(100),
            width: 1000.0,
            height: 1000.0,
            link: LinkParams::default(),
            half_duplex: false,
            contacts: ContactModel::Geometric,
            advert_interval: Duration::from_secs(1),
            table: TableConfig::default(),
            max_message_bytes: MAX_MESSAGE_BYTES,
            mtu: 1500,
            max_retries: 7,
            stream_window: 256 * 1024,
            send_buffer: 64 * 1024,
            queue_limit: 64,
            incoming_capacity: 64,
            max_streams: 64,
            event_buffer: 65_536,
        }
    }
}

impl WorldConfig {
    /// A default configuration with this seed.
    pub fn seeded(seed: u64) -> WorldConfig {
        WorldConfig {
            seed,
            ..WorldConfig::default()
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        self.link.check()?;
        let bad = |what: &str| Err(Error::InvalidConfig(what.to_owned()));
        if self.tick.is_zero() {
            return bad("tick must be longer than zero");
        }
        if self.advert_interval.is_zero() {
            return bad("advert_interval must be longer than zero");
        }
        if !(self.width.is_finite() && self.height.is_finite())
            || self.width < 0.0
            || self.height < 0.0
        {
            return bad("width and height must be finite and non-negative");
        }
        if self.mtu == 0 || self.stream_window == 0 || self.send_buffer == 0 {
            return bad("mtu, stream_window and send_buffer must be at least 1");
        }
        Ok(())
    }
}
