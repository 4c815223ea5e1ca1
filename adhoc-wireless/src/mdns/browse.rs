//! The browsing task: mdns-sd's events into the peer table (resolved → observed, removed →
//! forgotten) and the periodic work — refresh what mdns-sd still holds, verify it, browse afresh,
//! expire. See the parent module's docs on liveness.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mdns_sd::{Receiver, ResolvedService, ScopedIp, ServiceEvent};

use super::{SERVICE_TYPE, Shared, txt};
use crate::peer::{Address, Advert, PeerId};

/// Most verifications asked of mdns-sd in one tick (its command queue holds 100).
const MAX_VERIFY_PER_TICK: usize = 32;
/// Most events taken from mdns-sd in one go before the periodic work gets a look in.
const EVENTS_PER_TURN: usize = 256;

/// The periodic work's timing, from the silence L after which a peer is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    silence: u64,
    /// How often the periodic work runs.
    tick: u64,
    /// How often a tracked instance is refreshed in the table.
    touch: u64,
    /// How often a tracked instance is verified...
    verify_every: u64,
    /// ...and how long it has to answer.
    verify_timeout: u64,
    /// How long an instance has to answer a fresh browse (at least).
    grace: u64,
}

impl Timing {
    /// A peer that goes quiet just after answering a verification is asked again at most
    /// `verify_every + tick` later and flushed `verify_timeout` after that; if a fresh browse
    /// cleared mdns-sd's cache meanwhile, it is dropped `grace` after the browse at the latest
    /// (or when the pending verification would have flushed it, if that is later): under L.
    fn new(silence: u64) -> Timing {
        let silence = silence.max(400);
        let tick = (silence / 8).clamp(50, 1_000);
        let grace = silence / 6;
        Timing {
            silence,
            tick,
            touch: silence / 3,
            verify_every: silence / 2 - tick - grace / 2,
            verify_timeout: silence / 2 - tick / 2 - grace / 2,
            grace,
        }
    }
}

/// One service instance fed into the table.
#[derive(Debug)]
struct Tracked {
    /// The full name as mdns-sd spells it.
    fullname: String,
    id: PeerId,
    advert: Advert,
    source: Address,
    address: Address,
    resolved_at: u64,
    touched_at: u64,
    verified_at: u64,
}

/// The tracked instances, keyed by lowercase full name.
#[derive(Default)]
struct State {
    tracked: HashMap<String, Tracked>,
    /// When we last browsed afresh, until the instances that did not answer are dropped.
    requeried_at: Option<u64>,
}

/// Runs until mdns-sd shuts down (or the task is aborted).
pub(super) async fn run(shared: Arc<Shared>, events: Receiver<ServiceEvent>) {
    let clock = shared.clock.clone();
    let timing = Timing::new(shared.config.table.lost_after_ms);
    let requery = shared.config.requery_ms.max(timing.silence);
    let mut state = State::default();
    let mut events = Some(events);
    let start = clock.now_millis();
    let mut next_tick = start.saturating_add(timing.tick);
    let mut next_requery = start.saturating_add(requery);
    loop {
        let now = clock.now_millis();
        if now >= next_tick {
            state.maintain(&shared, now, &timing);
            next_tick = now.saturating_add(timing.tick);
        }
        if now >= next_requery || events.is_none() {
            // Browsing afresh clears mdns-sd's cache of the type: a query without known
            // answers, which every live instance answers.
            let again = shared
                .daemon
                .stop_browse(SERVICE_TYPE)
                .and_then(|()| shared.daemon.browse(SERVICE_TYPE));
            match again {
                Ok(rx) => {
                    events = Some(rx);
                    state.requeried_at = Some(now);
                }
                Err(mdns_sd::Error::DaemonShutdown) => return,
                Err(_) => {} // its queue is full: next time round
            }
            next_requery = now.saturating_add(requery);
        }
        let wait = Duration::from_millis(next_tick.saturating_sub(now).max(1));
        let Some(rx) = events.as_ref() else {
            clock.sleep(wait).await;
            continue;
        };
        tokio::select! {
            event = rx.recv_async() => match event {
                Ok(event) => {
                    let now = clock.now_millis();
                    state.handle(&shared, now, event);
                    for _ in 0..EVENTS_PER_TURN {
                        match rx.try_recv() {
                            Ok(event) => state.handle(&shared, now, event),
                            Err(_) => break,
                        }
                    }
                }
                // mdns-sd dropped the subscription (we fell behind) or shut down.
                Err(_) => events = None,
            },
            () = clock.sleep(wait) => {}
        }
    }
}

impl State {
    fn handle(&mut self, shared: &Shared, now: u64, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(info) => self.resolved(shared, now, &info),
            ServiceEvent::ServiceRemoved(_, fullname) => {
                let name = fullname.to_ascii_lowercase();
                // Right after a fresh browse mdns-sd says "removed" for instances it knew
                // before and has not resolved again yet (its cache was cleared): those wait
                // for the re-query's deadline instead (see `maintain`).
                let awaiting = self
                    .requeried_at
                    .is_some_and(|at| self.tracked.get(&name).is_some_and(|t| t.resolved_at < at));
                if !awaiting {
                    self.untrack(shared, &name);
                }
            }
            _ => {}
        }
        shared
            .tracked
            .store(self.tracked.len() as u64, Ordering::Relaxed);
    }

    fn resolved(&mut self, shared: &Shared, now: u64, info: &ResolvedService) {
        let name = info.fullname.to_ascii_lowercase();
        if shared.is_own(&name) || !name.ends_with(SERVICE_TYPE) {
            return;
        }
        if info.txt_properties.is_empty() {
            // Resolved before its TXT record arrived (after a fresh browse, say): mdns-sd
            // resolves it again when the record comes. Nothing to count or forget.
            return;
        }
        let Some(host) = pick_address(&info.addresses, shared.allow_loopback) else {
            return;
        };
        let source = Address::Socket(host);
        let mut at = host;
        at.set_port(info.port);
        let address = Address::Socket(at);
        let properties = info.txt_properties.iter().map(|p| (p.key(), p.val()));
        let advert = match txt::decode(properties, info.port) {
            Ok(advert) => advert,
            Err(_) => {
                self.untrack(shared, &name);
                shared.table.malformed(now, &source);
                return;
            }
        };
        let id = advert.peer_id();
        if let Some(old) = self.tracked.get(&name) {
            if old.address != address || old.id != id {
                self.untrack(shared, &name);
            }
        }
        if !self.tracked.contains_key(&name) && self.tracked.len() >= shared.config.max_services {
            shared.over_limit.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.table.observe_advert(
            now,
            &source,
            shared.transport,
            address.clone(),
            advert.clone(),
        );
        if !holds(shared, &id, &address) {
            // Refused (rate, ban, a full table): not ours to refresh.
            self.tracked.remove(&name);
            return;
        }
        let verified_at = self.tracked.get(&name).map_or(now, |t| t.verified_at);
        self.tracked.insert(
            name,
            Tracked {
                fullname: info.fullname.clone(),
                id,
                advert,
                source,
                address,
                resolved_at: now,
                touched_at: now,
                verified_at,
            },
        );
    }

    /// Stops tracking an instance; its address is forgotten at once unless another instance
    /// tracked has it too.
    fn untrack(&mut self, shared: &Shared, name: &str) {
        let Some(gone) = self.tracked.remove(name) else {
            return;
        };
        if !self.tracked.values().any(|t| t.address == gone.address) {
            shared.table.forget(shared.transport, &gone.address);
        }
    }

    fn maintain(&mut self, shared: &Shared, now: u64, timing: &Timing) {
        // After browsing afresh, what did not answer in time is gone.
        if let Some(at) = self.requeried_at {
            let mut waiting = false;
            let mut stale = Vec::new();
            for (name, t) in &self.tracked {
                if t.resolved_at >= at {
                    continue;
                }
                let deadline = at
                    .saturating_add(timing.grace)
                    .max(t.verified_at.saturating_add(timing.verify_timeout));
                if now >= deadline {
                    stale.push(name.clone());
                } else {
                    waiting = true;
                }
            }
            for name in stale {
                self.untrack(shared, &name);
            }
            if !waiting {
                self.requeried_at = None;
            }
        }
        let mut dropped = HashSet::new();
        let mut verifying = 0;
        for (name, t) in &mut self.tracked {
            if now.saturating_sub(t.touched_at) >= timing.touch {
                if !holds(shared, &t.id, &t.address) {
                    dropped.insert(name.clone());
                    continue;
                }
                // mdns-sd still holds it (or it would have said ServiceRemoved): still here.
                shared.table.observe_advert(
                    now,
                    &t.source,
                    shared.transport,
                    t.address.clone(),
                    t.advert.clone(),
                );
                t.touched_at = now;
            }
            // (Not while it is to answer a fresh browse: mdns-sd has no record to verify.)
            let awaiting = self.requeried_at.is_some_and(|at| t.resolved_at < at);
            if !awaiting
                && verifying < MAX_VERIFY_PER_TICK
                && now.saturating_sub(t.verified_at) >= timing.verify_every
            {
                let timeout = Duration::from_millis(timing.verify_timeout);
                match shared.daemon.verify(t.fullname.clone(), timeout) {
                    Ok(()) => {
                        t.verified_at = now;
                        verifying += 1;
                        shared.verifications.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => verifying = MAX_VERIFY_PER_TICK, // its queue is full
                }
            }
        }
        // The table let go of these (their source was banned, say): nothing to refresh.
        self.tracked.retain(|name, _| !dropped.contains(name));
        shared.table.expire(now);
        shared
            .tracked
            .store(self.tracked.len() as u64, Ordering::Relaxed);
    }
}

/// Whether the table holds `id` at `address` on the plugin's transport.
fn holds(shared: &Shared, id: &PeerId, address: &Address) -> bool {
    shared.table.peer(id).is_some_and(|p| {
        p.addresses
            .iter()
            .any(|a| a.transport == shared.transport && a.address == *address)
    })
}

/// The address (port 0) to reach a resolved service at: IPv4 first, then global IPv6, then
/// link-local IPv6 on the interface it was heard on; never unspecified, multicast or broadcast,
/// and loopback only when the plugin runs on loopback. Ties go to the lowest address.
fn pick_address(addresses: &HashSet<ScopedIp>, allow_loopback: bool) -> Option<SocketAddr> {
    addresses
        .iter()
        .filter_map(|a| {
            let ip = a.to_ip_addr();
            if ip.is_unspecified() || ip.is_multicast() || (ip.is_loopback() && !allow_loopback) {
                return None;
            }
            match a {
                ScopedIp::V4(v4) if v4.addr().is_broadcast() => None,
                ScopedIp::V4(_) => Some((0, SocketAddr::new(ip, 0))),
                ScopedIp::V6(v6) if v6.addr().is_unicast_link_local() => Some((
                    2,
                    SocketAddr::V6(SocketAddrV6::new(*v6.addr(), 0, 0, v6.scope_id().index)),
                )),
                _ => Some((1, SocketAddr::new(ip, 0))),
            }
        })
        .min()
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn set(ips: &[&str]) -> HashSet<ScopedIp> {
        ips.iter()
            .map(|s| ScopedIp::from(s.parse::<IpAddr>().unwrap()))
            .collect()
    }

    #[test]
    fn addresses_are_picked_ipv4_first_and_never_odd_ones() {
        let pick = |ips: &[&str], lo| pick_address(&set(ips), lo).map(|a| a.ip().to_string());
        assert_eq!(
            pick(&["fe80::1", "2001:db8::1", "10.0.0.9", "10.0.0.3"], false).as_deref(),
            Some("10.0.0.3")
        );
        assert_eq!(
            pick(&["fe80::1", "2001:db8::1"], false).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(pick(&["fe80::1"], false).as_deref(), Some("fe80::1"));
        assert_eq!(
            pick(
                &[
                    "0.0.0.0",
                    "224.0.0.251",
                    "255.255.255.255",
                    "::",
                    "ff02::fb"
                ],
                false
            ),
            None
        );
        assert_eq!(pick(&["127.0.0.1"], false), None);
        assert_eq!(pick(&["127.0.0.1"], true).as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn a_quiet_peer_is_flushed_within_the_silence() {
        for silence in [400, 1_000, 3_000, 10_000, 60_000] {
            let t = Timing::new(silence);
            assert!(
                t.verify_every + t.tick + t.verify_timeout + t.grace < silence,
                "{t:?}"
            );
            assert!(t.touch + t.tick < silence, "{t:?}");
        }
        // Two queries (mdns-sd resends after 1 s) in the tests' 3 s.
        assert_eq!(Timing::new(3_000).verify_timeout, 1_063);
    }
}
