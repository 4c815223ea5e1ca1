//! The peer table every plugin keeps: adverts in, [`Event`]s out, defended against a hostile
//! neighbourhood. A pure state machine — time is a parameter, nothing here does I/O — so the
//! simulated radio and the real radios run the same code and tests drive it directly.
//!
//! Hygiene, each with a counter in [`TableStats`]:
//! * **Bounded**: at most [`TableConfig::max_peers`] peers, [`TableConfig::max_addresses`]
//!   addresses each, and [`TableConfig::max_peers_per_source`] peers vouched for by one source
//!   (so one host advertising thousands of fake services cannot fill the table).
//! * **Rate-limited per source**: a token bucket of [`TableConfig::burst`] adverts refilled at
//!   [`TableConfig::per_second`]; adverts over it are dropped unprocessed.
//! * **Malformed or oversized adverts** are dropped (never a panic).
//! * **A flooding source is evicted**: after [`TableConfig::flood_strikes`] adverts over its rate
//!   it is banned for [`TableConfig::ban_ms`] and every peer only it vouched for is dropped.
//! * **Lost after silence**: an address not heard for [`TableConfig::lost_after_ms`] is
//!   dropped by [`PeerTable::expire`]; a peer with no address left is [`Event::Lost`].

use std::collections::HashMap;

use crate::error::Error;
use crate::peer::{Address, Advert, Event, Peer, PeerAddress, PeerId, Transport};

/// Limits of a [`PeerTable`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TableConfig {
    /// Most peers kept (default 256).
    pub max_peers: usize,
    /// Most addresses kept per peer (default 8); a new one replaces the stalest.
    pub max_addresses: usize,
    /// Most peers one source may vouch for (default 16).
    pub max_peers_per_source: usize,
    /// Most sources tracked for rate limiting (default 1024); idle ones are forgotten first.
    pub max_sources: usize,
    /// An address not heard for this long is dropped (default 10 s).
    pub lost_after_ms: u64,
    /// Adverts a source may send at once (default 20).
    pub burst: u32,
    /// Adverts per second a source may send on average (default 10).
    pub per_second: u32,
    /// Adverts over the rate after which a source is banned (default 100).
    pub flood_strikes: u32,
    /// How long a ban lasts (default 60 s).
    pub ban_ms: u64,
}

impl Default for TableConfig {
    fn default() -> TableConfig {
        TableConfig {
            max_peers: 256,
            max_addresses: 8,
            max_peers_per_source: 16,
            max_sources: 1024,
            lost_after_ms: 10_000,
            burst: 20,
            per_second: 10,
            flood_strikes: 100,
            ban_ms: 60_000,
        }
    }
}

/// What the table accepted and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableStats {
    /// Adverts processed.
    pub accepted: u64,
    /// Adverts that did not decode.
    pub malformed: u64,
    /// Adverts over the size limit.
    pub oversized: u64,
    /// Adverts dropped by a source's rate limit.
    pub rate_limited: u64,
    /// Adverts from a banned source.
    pub banned: u64,
    /// Sources banned for flooding.
    pub sources_evicted: u64,
    /// New peers dropped because the table (or the source's share of it) was full.
    pub table_full: u64,
    /// Adverts dropped because too many sources were being tracked.
    pub sources_full: u64,
}

#[derive(Debug, Clone)]
struct SourceState {
    /// Tokens, in thousandths.
    tokens_milli: u64,
    refilled_at: u64,
    strikes: u32,
    banned_until: Option<u64>,
    last_seen: u64,
}

#[derive(Debug, Clone)]
struct Seen {
    transport: Transport,
    address: Address,
    source: Address,
    last_seen: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    advert: Advert,
    seen: Vec<Seen>,
    first_seen: u64,
}

impl Entry {
    fn to_peer(&self, id: PeerId) -> Peer {
        let mut peer = Peer {
            id,
            addresses: self
                .seen
                .iter()
                .map(|s| PeerAddress {
                    transport: s.transport,
                    address: s.address.clone(),
                    last_seen: s.last_seen,
                })
                .collect(),
            advert: self.advert.clone(),
            first_seen: self.first_seen,
            last_seen: self.seen.iter().map(|s| s.last_seen).max().unwrap_or(0),
        };
        peer.sort_addresses();
        peer
    }
}

/// The peers heard, with the hygiene of the module docs.
#[derive(Debug, Clone, Default)]
pub struct PeerTable {
    config: TableConfig,
    peers: HashMap<PeerId, Entry>,
    sources: HashMap<Address, SourceState>,
    stats: TableStats,
}

impl PeerTable {
    /// An empty table with these limits.
    pub fn new(config: TableConfig) -> PeerTable {
        PeerTable {
            config,
            ..PeerTable::default()
        }
    }

    /// The limits.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Counters of what was accepted and dropped.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Every peer, in a stable order (by id).
    pub fn peers(&self) -> Vec<Peer> {
        let mut ids: Vec<&PeerId> = self.peers.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.peers.get(id).map(|e| e.to_peer(*id)))
            .collect()
    }

    /// One peer.
    pub fn peer(&self, id: &PeerId) -> Option<Peer> {
        self.peers.get(id).map(|e| e.to_peer(*id))
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// An encoded advert heard from `source` (the network origin: an IP, a radio address) at
    /// `address` on `transport`, at time `now` (milliseconds, any monotonic origin).
    pub fn observe(
        &mut self,
        now: u64,
        source: &Address,
        transport: Transport,
        address: Address,
        bytes: &[u8],
    ) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.admit(now, source, &mut events) {
            return events;
        }
        match Advert::decode(bytes) {
            Ok(advert) => self.apply(now, source, transport, address, advert, &mut events),
            Err(Error::TooLarge { .. }) => self.stats.oversized += 1,
            Err(_) => self.stats.malformed += 1,
        }
        events
    }

    /// An advert a plugin has already parsed (from DNS TXT records, say): the same as
    /// [`observe`](Self::observe) without the decoding.
    pub fn observe_advert(
        &mut self,
        now: u64,
        source: &Address,
        transport: Transport,
        address: Address,
        advert: Advert,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        if self.admit(now, source, &mut events) {
            self.apply(now, source, transport, address, advert, &mut events);
        }
        events
    }

    /// Counts an advert a plugin could not parse from `source` (it still costs the source a
    /// token, so a malformed flood gets the source banned too).
    pub fn malformed(&mut self, now: u64, source: &Address) -> Vec<Event> {
        let mut events = Vec::new();
        if self.admit(now, source, &mut events) {
            self.stats.malformed += 1;
        }
        events
    }

    /// Drops addresses not heard for the configured silence; peers left without one are lost.
    pub fn expire(&mut self, now: u64) -> Vec<Event> {
        let horizon = now.saturating_sub(self.config.lost_after_ms);
        let mut events = Vec::new();
        let mut ids: Vec<PeerId> = self.peers.keys().copied().collect();
        ids.sort();
        for id in ids {
            let Some(entry) = self.peers.get_mut(&id) else {
                continue;
            };
            let before = entry.seen.len();
            entry.seen.retain(|s| s.last_seen > horizon);
            if entry.seen.is_empty() {
                self.peers.remove(&id);
                events.push(Event::Lost(id));
            } else if entry.seen.len() != before {
                events.push(Event::Updated(entry.to_peer(id)));
            }
        }
        // Forget idle, unbanned sources (they start afresh if heard again).
        self.sources.retain(|_, s| {
            s.banned_until.is_some_and(|until| until > now) || s.last_seen > horizon
        });
        events
    }

    /// The earliest time at which [`expire`](Self::expire) would drop something (for a plugin
    /// that sleeps until then).
    pub fn next_expiry(&self) -> Option<u64> {
        self.peers
            .values()
            .flat_map(|e| e.seen.iter().map(|s| s.last_seen))
            .min()
            .map(|t| {
                t.saturating_add(self.config.lost_after_ms)
                    .saturating_add(1)
            })
    }

    /// Forgets one address at once (a plugin learnt it is gone: a service removed, a radio
    /// disconnected).
    pub fn forget(&mut self, transport: Transport, address: &Address) -> Vec<Event> {
        let mut events = Vec::new();
        let mut ids: Vec<PeerId> = self.peers.keys().copied().collect();
        ids.sort();
        for id in ids {
            let Some(entry) = self.peers.get_mut(&id) else {
                continue;
            };
            let before = entry.seen.len();
            entry
                .seen
                .retain(|s| !(s.transport == transport && s.address == *address));
            if entry.seen.is_empty() {
                self.peers.remove(&id);
                events.push(Event::Lost(id));
            } else if entry.seen.len() != before {
                events.push(Event::Updated(entry.to_peer(id)));
            }
        }
        events
    }

    /// Whether an advert from `source` may be processed now: not banned, under its rate. A
    /// source over its rate too often is banned and what it vouched for dropped.
    fn admit(&mut self, now: u64, source: &Address, events: &mut Vec<Event>) -> bool {
        if !self.sources.contains_key(source) && self.sources.len() >= self.config.max_sources {
            // Make room: forget the longest-idle source that is not banned.
            let idle = self
                .sources
                .iter()
                .filter(|(_, s)| s.banned_until.is_none_or(|until| until <= now))
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(a, _)| a.clone());
            match idle {
                Some(a) => {
                    self.sources.remove(&a);
                }
                None => {
                    self.stats.sources_full += 1;
                    return false;
                }
            }
        }
        let burst_milli = u64::from(self.config.burst.max(1)) * 1000;
        let state = self
            .sources
            .entry(source.clone())
            .or_insert_with(|| SourceState {
                tokens_milli: burst_milli,
                refilled_at: now,
                strikes: 0,
                banned_until: None,
                last_seen: now,
            });
        state.last_seen = now;
        if let Some(until) = state.banned_until {
            if until > now {
                self.stats.banned += 1;
                return false;
            }
            state.banned_until = None;
            state.strikes = 0;
            state.tokens_milli = burst_milli;
            state.refilled_at = now;
        }
        let elapsed = now.saturating_sub(state.refilled_at);
        let refill = elapsed.saturating_mul(u64::from(self.config.per_second));
        state.tokens_milli = state.tokens_milli.saturating_add(refill).min(burst_milli);
        state.refilled_at = now;
        if state.tokens_milli >= 1000 {
            state.tokens_milli -= 1000;
            self.stats.accepted += 1;
            return true;
        }
        self.stats.rate_limited += 1;
        state.strikes += 1;
        if state.strikes >= self.config.flood_strikes {
            state.banned_until = Some(now.saturating_add(self.config.ban_ms));
            self.stats.sources_evicted += 1;
            self.drop_source(source, events);
        }
        false
    }

    /// Drops every address `source` vouched for.
    fn drop_source(&mut self, source: &Address, events: &mut Vec<Event>) {
        let mut ids: Vec<PeerId> = self.peers.keys().copied().collect();
        ids.sort();
        for id in ids {
            let Some(entry) = self.peers.get_mut(&id) else {
                continue;
            };
            let before = entry.seen.len();
            entry.seen.retain(|s| s.source != *source);
            if entry.seen.is_empty() {
                self.peers.remove(&id);
                events.push(Event::Lost(id));
            } else if entry.seen.len() != before {
                events.push(Event::Updated(entry.to_peer(id)));
            }
        }
    }

    fn vouched_by(&self, source: &Address) -> usize {
        self.peers
            .values()
            .filter(|e| e.seen.iter().any(|s| s.source == *source))
            .count()
    }

    fn apply(
        &mut self,
        now: u64,
        source: &Address,
        transport: Transport,
        address: Address,
        advert: Advert,
        events: &mut Vec<Event>,
    ) {
        let id = advert.peer_id();
        let seen = Seen {
            transport,
            address,
            source: source.clone(),
            last_seen: now,
        };
        let Some(entry) = self.peers.get_mut(&id) else {
            if self.peers.len() >= self.config.max_peers
                || self.vouched_by(source) >= self.config.max_peers_per_source
            {
                self.stats.table_full += 1;
                return;
            }
            let entry = Entry {
                advert,
                seen: vec![seen],
                first_seen: now,
            };
            events.push(Event::Found(entry.to_peer(id)));
            self.peers.insert(id, entry);
            return;
        };
        let mut changed = false;
        if entry.advert != advert {
            entry.advert = advert;
            changed = true;
        }
        match entry
            .seen
            .iter_mut()
            .find(|s| s.transport == seen.transport && s.address == seen.address)
        {
            Some(existing) => {
                existing.last_seen = now;
                existing.source = seen.source;
            }
            None => {
                if entry.seen.len() >= self.config.max_addresses {
                    if let Some(stalest) = entry
                        .seen
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.last_seen)
                        .map(|(i, _)| i)
                    {
                        entry.seen.remove(stalest);
                    }
                }
                entry.seen.push(seen);
                changed = true;
            }
        }
        if changed {
            events.push(Event::Updated(entry.to_peer(id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use public_key_identity::KeyId;

    fn advert(n: u8) -> Vec<u8> {
        Advert::key(KeyId::from_digest([n; 32]), vec![])
            .unwrap()
            .encode()
    }

    fn ip(n: u8) -> Address {
        Address::Socket(format!("10.0.0.{n}:5000").parse().unwrap())
    }

    fn id(n: u8) -> PeerId {
        PeerId::Key(KeyId::from_digest([n; 32]))
    }

    #[test]
    fn found_updated_lost() {
        let mut t = PeerTable::new(TableConfig::default());
        let ev = t.observe(0, &ip(1), Transport::Lan, ip(1), &advert(1));
        assert!(matches!(&ev[..], [Event::Found(p)] if p.id == id(1)));
        // Heard again: no event. Seen on a second transport: Updated, two addresses.
        assert!(
            t.observe(100, &ip(1), Transport::Lan, ip(1), &advert(1))
                .is_empty()
        );
        let ev = t.observe(
            200,
            &ip(9),
            Transport::Ble,
            Address::Ble([1; 6]),
            &advert(1),
        );
        assert!(matches!(&ev[..], [Event::Updated(p)] if p.addresses.len() == 2));
        assert_eq!(
            t.peer(&id(1)).unwrap().cheapest().unwrap().transport,
            Transport::Lan
        );
        // Silence: the LAN address goes first (Updated), then the peer (Lost).
        let ev = t.expire(10_150);
        assert!(matches!(&ev[..], [Event::Updated(p)] if p.addresses.len() == 1));
        assert_eq!(t.next_expiry(), Some(10_201));
        let ev = t.expire(10_201);
        assert_eq!(ev, vec![Event::Lost(id(1))]);
        assert!(t.is_empty());
    }

    #[test]
    fn malformed_and_oversized_are_counted_never_fatal() {
        let mut t = PeerTable::new(TableConfig::default());
        assert!(
            t.observe(0, &ip(1), Transport::Lan, ip(1), &[1, 2, 3])
                .is_empty()
        );
        assert!(
            t.observe(0, &ip(1), Transport::Lan, ip(1), &vec![1; 5000])
                .is_empty()
        );
        let s = t.stats();
        assert_eq!((s.malformed, s.oversized, s.accepted), (1, 1, 2));
    }

    #[test]
    fn one_source_cannot_fill_the_table_and_a_flooder_is_evicted() {
        let config = TableConfig {
            max_peers_per_source: 4,
            burst: 10,
            per_second: 1,
            flood_strikes: 5,
            ..TableConfig::default()
        };
        let mut t = PeerTable::new(config);
        // A real peer, from its own source.
        t.observe(0, &ip(200), Transport::Lan, ip(200), &advert(200));
        // A hostile host advertising many fake keys.
        for n in 0..10 {
            t.observe(0, &ip(66), Transport::Lan, ip(66), &advert(n));
        }
        assert_eq!(t.len(), 5, "4 fakes (the per-source cap) + the real peer");
        assert_eq!(t.stats().table_full, 6);
        // It keeps flooding over its rate: banned, and what it vouched for dropped.
        let mut lost = Vec::new();
        for _ in 0..5 {
            lost.extend(t.observe(1, &ip(66), Transport::Lan, ip(66), &advert(50)));
        }
        assert_eq!(lost.len(), 4);
        assert!(lost.iter().all(|e| matches!(e, Event::Lost(_))));
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().sources_evicted, 1);
        // Banned: ignored, the real peer still heard.
        assert!(
            t.observe(2, &ip(66), Transport::Lan, ip(66), &advert(1))
                .is_empty()
        );
        assert!(t.stats().banned >= 1);
        assert!(t.peer(&id(200)).is_some());
        // After the ban it may speak again.
        let ev = t.observe(61_000, &ip(66), Transport::Lan, ip(66), &advert(1));
        assert!(matches!(&ev[..], [Event::Found(_)]));
    }

    #[test]
    fn the_table_is_bounded() {
        let config = TableConfig {
            max_peers: 3,
            max_addresses: 2,
            max_sources: 4,
            ..TableConfig::default()
        };
        let mut t = PeerTable::new(config);
        for n in 0..10u8 {
            t.observe(u64::from(n), &ip(n), Transport::Lan, ip(n), &advert(n));
        }
        assert_eq!(t.len(), 3);
        // Addresses per peer are bounded too: the stalest is replaced.
        for n in 0..5u8 {
            t.observe(
                100 + u64::from(n),
                &ip(0),
                Transport::Ble,
                Address::Ble([n; 6]),
                &advert(0),
            );
        }
        assert_eq!(t.peer(&id(0)).unwrap().addresses.len(), 2);
    }

    #[test]
    fn rate_limit_refills() {
        let config = TableConfig {
            burst: 2,
            per_second: 2,
            flood_strikes: 1000,
            ..TableConfig::default()
        };
        let mut t = PeerTable::new(config);
        for _ in 0..4 {
            t.observe(0, &ip(1), Transport::Lan, ip(1), &advert(1));
        }
        assert_eq!((t.stats().accepted, t.stats().rate_limited), (2, 2));
        t.observe(500, &ip(1), Transport::Lan, ip(1), &advert(1));
        assert_eq!(t.stats().accepted, 3, "one token back after half a second");
    }
}
