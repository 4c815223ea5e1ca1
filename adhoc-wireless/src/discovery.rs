//! The discovery seam: who is around, and what changes.
//!
//! Every radio plugin implements [`Discovery`]; most do it with a [`SharedTable`] — a
//! [`PeerTable`] behind a lock plus a broadcast channel — so they share the hygiene and the
//! event semantics. [`Neighbourhood`](crate::Neighbourhood) merges several into one view.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::peer::{Address, Advert, Event, Peer, PeerId, Transport};
use crate::table::{PeerTable, TableConfig, TableStats};

/// How many events a subscriber may fall behind before it is told it lagged.
pub const EVENT_BUFFER: usize = 1024;

/// Who is around, and what changes.
pub trait Discovery: Send + Sync {
    /// Every peer heard and not yet lost.
    fn peers(&self) -> Vec<Peer>;
    /// Events from now on.
    fn subscribe(&self) -> Subscription;
}

/// A subscriber's stream of [`Event`]s.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

/// A subscriber fell behind by this many events; [`Discovery::peers`] gives the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lagged behind by {0} events")]
pub struct Lagged(pub u64);

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Subscription {
        Subscription { rx }
    }

    /// The next event; `None` once the discovery is gone. A subscriber that fell more than
    /// [`EVENT_BUFFER`] events behind gets `Some(Err(Lagged))` once, then the newer events.
    pub async fn next(&mut self) -> Option<Result<Event, Lagged>> {
        match self.rx.recv().await {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting (never blocks).
    pub fn try_next(&mut self) -> Option<Result<Event, Lagged>> {
        match self.rx.try_recv() {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(_) => None,
        }
    }
}

/// A [`PeerTable`] shared between a plugin's tasks, publishing every change: the usual way to
/// implement [`Discovery`].
#[derive(Clone)]
pub struct SharedTable {
    table: Arc<Mutex<PeerTable>>,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for SharedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTable")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SharedTable {
    /// An empty table with these limits.
    pub fn new(config: TableConfig) -> SharedTable {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        SharedTable {
            table: Arc::new(Mutex::new(PeerTable::new(config))),
            events,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut PeerTable) -> T) -> T {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn publish(&self, events: Vec<Event>) -> Vec<Event> {
        for e in &events {
            // No subscriber is fine: the table is the state.
            let _ = self.events.send(e.clone());
        }
        events
    }

    /// See [`PeerTable::observe`]; the events are published and returned.
    pub fn observe(
        &self,
        now: u64,
        source: &Address,
        transport: Transport,
        address: Address,
        bytes: &[u8],
    ) -> Vec<Event> {
        let events = self.with(|t| t.observe(now, source, transport, address, bytes));
        self.publish(events)
    }

    /// See [`PeerTable::observe_advert`].
    pub fn observe_advert(
        &self,
        now: u64,
        source: &Address,
        transport: Transport,
        address: Address,
        advert: Advert,
    ) -> Vec<Event> {
        let events = self.with(|t| t.observe_advert(now, source, transport, address, advert));
        self.publish(events)
    }

    /// See [`PeerTable::malformed`].
    pub fn malformed(&self, now: u64, source: &Address) -> Vec<Event> {
        let events = self.with(|t| t.malformed(now, source));
        self.publish(events)
    }

    /// See [`PeerTable::expire`].
    pub fn expire(&self, now: u64) -> Vec<Event> {
        let events = self.with(|t| t.expire(now));
        self.publish(events)
    }

    /// See [`PeerTable::forget`].
    pub fn forget(&self, transport: Transport, address: &Address) -> Vec<Event> {
        let events = self.with(|t| t.forget(transport, address));
        self.publish(events)
    }

    /// See [`PeerTable::next_expiry`].
    pub fn next_expiry(&self) -> Option<u64> {
        self.with(|t| t.next_expiry())
    }

    /// The table's counters.
    pub fn stats(&self) -> TableStats {
        self.with(|t| t.stats())
    }

    /// One peer.
    pub fn peer(&self, id: &PeerId) -> Option<Peer> {
        self.with(|t| t.peer(id))
    }
}

impl Discovery for SharedTable {
    fn peers(&self) -> Vec<Peer> {
        self.with(|t| t.peers())
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use public_key_identity::KeyId;

    #[test]
    fn subscribers_see_what_the_table_does() {
        let shared = SharedTable::new(TableConfig::default());
        let mut sub = shared.subscribe();
        let a = Address::Sim(1);
        let advert = Advert::key(KeyId::from_digest([1; 32]), vec![]).unwrap();
        shared.observe(0, &a, Transport::Sim, a.clone(), &advert.encode());
        assert!(matches!(sub.try_next(), Some(Ok(Event::Found(_)))));
        assert!(sub.try_next().is_none());
        shared.expire(60_000);
        assert!(matches!(sub.try_next(), Some(Ok(Event::Lost(_)))));
        assert!(shared.peers().is_empty());
    }
}
