//! Several radios at once as one neighbourhood: one peer table keyed by peer id (a peer heard
//! on the LAN and over Bluetooth is one peer with two addresses), links chosen cheapest first.
//!
//! The merging itself is [`Merger`], a pure state machine. [`Neighbourhood`] wraps it around
//! [`Plugin`]s: [`Neighbourhood::run`] is the one future that follows the plugins' events (the
//! caller runs it on its executor; this crate spawns nothing), and [`Neighbourhood::connect`] /
//! [`Neighbourhood::send`] reach a peer on its cheapest transport, falling back to the next.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::sync::broadcast;

use crate::discovery::{Discovery, EVENT_BUFFER, Subscription};
use crate::error::{Error, Result};
use crate::link::{BoxedStream, Plugin};
use crate::peer::{Event, Peer, PeerId};

/// Merges the views of several discoveries (numbered `0..n`) into one.
#[derive(Debug, Default, Clone)]
pub struct Merger {
    /// Per peer, what each source says of it.
    views: HashMap<PeerId, BTreeMap<usize, Peer>>,
}

impl Merger {
    /// An empty merger.
    pub fn new() -> Merger {
        Merger::default()
    }

    /// The merged peer, if any source knows it.
    pub fn peer(&self, id: &PeerId) -> Option<Peer> {
        self.views.get(id).and_then(merge)
    }

    /// Every merged peer, by id.
    pub fn peers(&self) -> Vec<Peer> {
        let mut ids: Vec<&PeerId> = self.views.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.views.get(id).and_then(merge))
            .collect()
    }

    /// Source `source` reports `event`; returns the merged event, if the merged view changed.
    pub fn apply(&mut self, source: usize, event: Event) -> Option<Event> {
        let id = event.peer_id();
        let before = self.peer(&id);
        match event {
            Event::Found(p) | Event::Updated(p) => {
                self.views.entry(id).or_default().insert(source, p);
            }
            Event::Lost(_) => {
                if let Some(views) = self.views.get_mut(&id) {
                    views.remove(&source);
                    if views.is_empty() {
                        self.views.remove(&id);
                    }
                }
            }
        }
        diff(id, before, self.peer(&id))
    }

    /// Source `source` now knows exactly `peers` (after it lagged, or at start): returns the
    /// merged events that brings.
    pub fn resync(&mut self, source: usize, peers: Vec<Peer>) -> Vec<Event> {
        let mut events = Vec::new();
        let known: Vec<PeerId> = self
            .views
            .iter()
            .filter(|(_, v)| v.contains_key(&source))
            .map(|(id, _)| *id)
            .collect();
        let fresh: std::collections::HashSet<PeerId> = peers.iter().map(|p| p.id).collect();
        for id in known {
            if !fresh.contains(&id) {
                events.extend(self.apply(source, Event::Lost(id)));
            }
        }
        for p in peers {
            events.extend(self.apply(source, Event::Updated(p)));
        }
        events
    }
}

fn merge(views: &BTreeMap<usize, Peer>) -> Option<Peer> {
    let newest = views.values().max_by_key(|p| p.last_seen)?;
    let mut peer = Peer {
        id: newest.id,
        addresses: views.values().flat_map(|p| p.addresses.clone()).collect(),
        advert: newest.advert.clone(),
        first_seen: views.values().map(|p| p.first_seen).min().unwrap_or(0),
        last_seen: newest.last_seen,
    };
    peer.sort_addresses();
    peer.addresses
        .dedup_by(|a, b| a.transport == b.transport && a.address == b.address);
    Some(peer)
}

fn diff(id: PeerId, before: Option<Peer>, after: Option<Peer>) -> Option<Event> {
    match (before, after) {
        (None, Some(p)) => Some(Event::Found(p)),
        (Some(_), None) => Some(Event::Lost(id)),
        (Some(b), Some(a)) => {
            let same_addresses = b.addresses.len() == a.addresses.len()
                && b.addresses
                    .iter()
                    .zip(&a.addresses)
                    .all(|(x, y)| x.transport == y.transport && x.address == y.address);
            (!same_addresses || b.advert != a.advert).then_some(Event::Updated(a))
        }
        (None, None) => None,
    }
}

/// Several plugins as one [`Discovery`], with links routed cheapest first.
pub struct Neighbourhood {
    plugins: Vec<Arc<dyn Plugin>>,
    merger: Mutex<Merger>,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Neighbourhood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neighbourhood")
            .field(
                "transports",
                &self
                    .plugins
                    .iter()
                    .map(|p| p.transport().name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

type Next = Pin<
    Box<dyn Future<Output = (usize, Subscription, Option<Result<Event, crate::Lagged>>)> + Send>,
>;

fn next_of(index: usize, mut sub: Subscription) -> Next {
    Box::pin(async move {
        let item = sub.next().await;
        (index, sub, item)
    })
}

impl Neighbourhood {
    /// A neighbourhood of these plugins (their current peers are merged at once).
    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Arc<Neighbourhood> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let mut merger = Merger::new();
        for (i, p) in plugins.iter().enumerate() {
            merger.resync(i, p.peers());
        }
        Arc::new(Neighbourhood {
            plugins,
            merger: Mutex::new(merger),
            events,
        })
    }

    /// The plugins.
    pub fn plugins(&self) -> &[Arc<dyn Plugin>] {
        &self.plugins
    }

    fn publish(&self, events: Vec<Event>) {
        for e in events {
            let _ = self.events.send(e);
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Merger) -> T) -> T {
        let mut guard = self.merger.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Follows every plugin's events into the merged view, until every plugin is gone. Run it
    /// on your executor (it is the only future this type needs).
    pub async fn run(self: Arc<Self>) {
        // Subscribe first, then catch up, so nothing falls between the two.
        let mut pending: Vec<Next> = self
            .plugins
            .iter()
            .enumerate()
            .map(|(i, p)| next_of(i, p.subscribe()))
            .collect();
        for (i, p) in self.plugins.iter().enumerate() {
            let events = self.with(|m| m.resync(i, p.peers()));
            self.publish(events);
        }
        while !pending.is_empty() {
            let (index, sub, item) = std::future::poll_fn(|cx| {
                for k in 0..pending.len() {
                    if let Some(fut) = pending.get_mut(k) {
                        if let Poll::Ready(done) = fut.as_mut().poll(cx) {
                            drop(pending.swap_remove(k));
                            return Poll::Ready(done);
                        }
                    }
                }
                Poll::Pending
            })
            .await;
            let events = match item {
                None => continue, // that plugin is gone
                Some(Ok(event)) => self.with(|m| m.apply(index, event)).into_iter().collect(),
                Some(Err(_lagged)) => {
                    let peers = self
                        .plugins
                        .get(index)
                        .map(|p| p.peers())
                        .unwrap_or_default();
                    self.with(|m| m.resync(index, peers))
                }
            };
            self.publish(events);
            pending.push(next_of(index, sub));
        }
    }

    /// Opens a stream to `peer` on its cheapest transport, trying the next when one fails.
    pub async fn connect(&self, peer: &PeerId) -> Result<BoxedStream> {
        let mut last = Error::Unreachable(format!("{peer} is not around"));
        for address in self.routes(peer) {
            for plugin in self
                .plugins
                .iter()
                .filter(|p| p.transport() == address.transport)
            {
                match plugin.connect(&address.address).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    /// Sends a standalone message to `peer` on its cheapest transport that carries it.
    pub async fn send(&self, peer: &PeerId, message: &[u8]) -> Result<()> {
        let mut last = Error::Unreachable(format!("{peer} is not around"));
        for address in self.routes(peer) {
            for plugin in self
                .plugins
                .iter()
                .filter(|p| p.transport() == address.transport)
            {
                if message.len() > plugin.max_message_bytes() {
                    continue;
                }
                match plugin.send(&address.address, message).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    fn routes(&self, peer: &PeerId) -> Vec<crate::peer::PeerAddress> {
        self.with(|m| m.peer(peer))
            .map(|p| p.addresses)
            .unwrap_or_default()
    }
}

impl Discovery for Neighbourhood {
    fn peers(&self) -> Vec<Peer> {
        self.with(|m| m.peers())
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{Address, Advert, PeerAddress, Transport};
    use public_key_identity::KeyId;

    fn peer(transport: Transport, address: Address, seen: u64) -> Peer {
        let key = KeyId::from_digest([1; 32]);
        Peer {
            id: PeerId::Key(key),
            addresses: vec![PeerAddress {
                transport,
                address,
                last_seen: seen,
            }],
            advert: Advert::key(key, vec![]).unwrap(),
            first_seen: seen,
            last_seen: seen,
        }
    }

    #[test]
    fn one_peer_on_two_transports() {
        let mut m = Merger::new();
        let lan = peer(Transport::Lan, Address::Sim(1), 10);
        let ble = peer(Transport::Ble, Address::Ble([2; 6]), 20);
        assert!(matches!(
            m.apply(0, Event::Found(ble.clone())),
            Some(Event::Found(_))
        ));
        let merged = m.apply(1, Event::Found(lan.clone()));
        let Some(Event::Updated(p)) = merged else {
            panic!("{merged:?}")
        };
        assert_eq!(p.addresses.len(), 2);
        assert_eq!(p.cheapest().unwrap().transport, Transport::Lan);
        // Hearing the same again changes nothing; losing one transport is an update; losing
        // both is the loss.
        assert_eq!(m.apply(1, Event::Updated(lan.clone())), None);
        assert!(
            matches!(m.apply(1, Event::Lost(lan.id)), Some(Event::Updated(p)) if p.addresses.len() == 1)
        );
        assert_eq!(m.apply(0, Event::Lost(lan.id)), Some(Event::Lost(lan.id)));
        assert!(m.peers().is_empty());
    }

    #[test]
    fn resync_after_lag() {
        let mut m = Merger::new();
        let lan = peer(Transport::Lan, Address::Sim(1), 10);
        m.apply(0, Event::Found(lan.clone()));
        assert_eq!(m.resync(0, vec![]), vec![Event::Lost(lan.id)]);
        assert!(matches!(&m.resync(0, vec![lan])[..], [Event::Found(_)]));
    }
}
