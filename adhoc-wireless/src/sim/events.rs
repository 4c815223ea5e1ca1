//! What a world reports: contact and transfer events for a routing simulator, and counters.

use super::config::LinkParams;
use super::time::SimTime;

/// A bulk transfer started with [`World::start_transfer`](super::World::start_transfer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u64);

/// Something a synchronous caller (a routing simulator) acts on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SimEvent {
    /// Nodes `a < b` came into contact.
    ContactUp {
        /// When.
        at: SimTime,
        /// The lower node id.
        a: u32,
        /// The higher node id.
        b: u32,
        /// The link between them for this contact.
        link: LinkParams,
    },
    /// Nodes `a < b` lost contact: queued messages are lost, transfers aborted, streams
    /// broken.
    ContactDown {
        /// When.
        at: SimTime,
        /// The lower node id.
        a: u32,
        /// The higher node id.
        b: u32,
        /// When the contact began.
        since: SimTime,
        /// Payload bytes that finished transmission `a → b` and `b → a` during the contact.
        sent: [u64; 2],
        /// The contact's byte budget: what one direction could have carried at the link's
        /// bandwidth for the whole contact (`u64::MAX` on an unlimited link).
        capacity: u64,
    },
    /// A transfer arrived whole.
    TransferDone {
        /// When it arrived.
        at: SimTime,
        /// Which.
        id: TransferId,
        /// Sender.
        from: u32,
        /// Receiver.
        to: u32,
        /// Its size.
        bytes: u64,
    },
    /// A transfer was aborted: the contact broke (queued or under way), or one segment was
    /// lost more than [`WorldConfig::max_retries`](super::WorldConfig::max_retries) times.
    TransferAborted {
        /// When.
        at: SimTime,
        /// Which.
        id: TransferId,
        /// Sender.
        from: u32,
        /// Receiver.
        to: u32,
        /// Its size.
        bytes: u64,
    },
}

impl SimEvent {
    /// When it happened.
    pub fn at(&self) -> SimTime {
        match self {
            SimEvent::ContactUp { at, .. }
            | SimEvent::ContactDown { at, .. }
            | SimEvent::TransferDone { at, .. }
            | SimEvent::TransferAborted { at, .. } => *at,
        }
    }
}

/// Counters of everything a world did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Scheduled events processed.
    pub events: u64,
    /// Contact-detection ticks run.
    pub ticks: u64,
    /// Contacts that began.
    pub contacts_up: u64,
    /// Contacts that ended.
    pub contacts_down: u64,
    /// Adverts broadcast (one per broadcast, whoever hears it).
    pub adverts_sent: u64,
    /// Adverts heard by a node in contact.
    pub adverts_heard: u64,
    /// Adverts lost on the way to one receiver.
    pub adverts_lost: u64,
    /// Standalone messages accepted by `send`.
    pub messages_sent: u64,
    /// Messages handed to the receiver's inbound queue.
    pub messages_delivered: u64,
    /// Messages lost: by the link's loss, or queued or in the air when the contact broke.
    pub messages_lost: u64,
    /// Messages that arrived to a full (or closed) inbound queue.
    pub messages_dropped: u64,
    /// Streams opened (accepted by the other node).
    pub streams_opened: u64,
    /// Stream opens refused (full inbound queue, too many streams) or cut by the contact.
    pub streams_refused: u64,
    /// Streams broken by the end of their contact or by too many losses.
    pub streams_broken: u64,
    /// Stream payload bytes delivered.
    pub stream_bytes: u64,
    /// Frame transmissions repeated after a loss (streams and transfers).
    pub retransmissions: u64,
    /// Transfers delivered.
    pub transfers_done: u64,
    /// Transfers aborted.
    pub transfers_aborted: u64,
    /// Trace entries skipped (unknown node, same node twice, no change).
    pub trace_skipped: u64,
    /// [`SimEvent`]s dropped because nobody drained them.
    pub events_dropped: u64,
}
