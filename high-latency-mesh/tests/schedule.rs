//! The sync scheduler on simulated time: each power band's decisions, per-peer intervals, caps by
//! link, the battery budget, policy checks, and monotonic properties as proptests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use adhoc_wireless::Transport;
use high_latency_mesh::ErrorKind;
use high_latency_mesh::schedule::{
    BUDGET_WINDOW_MS, Band, LinkKind, Pending, Plan, Policy, Power, Reason, Scheduler, UNLIMITED,
};
use proptest::prelude::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SEC: u64 = 1000;
const MIN: u64 = 60 * SEC;

const LAN: LinkKind = LinkKind::new(Transport::Lan);
const BLE: LinkKind = LinkKind::new(Transport::Ble);

fn own() -> Pending {
    Pending {
        own_messages: 1,
        own_bytes: 500,
        ..Pending::default()
    }
}

fn carried() -> Pending {
    Pending {
        carried_bytes: 10_000,
        ..Pending::default()
    }
}

fn urgent() -> Pending {
    Pending {
        own_messages: 1,
        own_bytes: 100,
        urgent_messages: 1,
        ..Pending::default()
    }
}

fn receipts() -> Pending {
    Pending {
        receipts: 3,
        ..Pending::default()
    }
}

fn charging(percent: u8) -> Power {
    Power {
        charging: true,
        ..Power::battery(percent)
    }
}

fn low_power(percent: u8) -> Power {
    Power {
        low_power_mode: true,
        ..Power::battery(percent)
    }
}

/// A scheduler that synced with peer 1 at `at`.
fn synced_at(at: u64) -> Scheduler<u64> {
    let mut s = Scheduler::default();
    s.on_synced(at, 1, 1000, Power::MAINS);
    s
}

#[test]
fn bands_follow_the_power_state() {
    let p = Policy::default();
    assert_eq!(p.band(Power::MAINS), Band::Plugged);
    assert_eq!(p.band(charging(3)), Band::Plugged);
    assert_eq!(p.band(Power::battery(100)), Band::High);
    assert_eq!(p.band(Power::battery(250)), Band::High);
    assert_eq!(p.band(Power::battery(50)), Band::High);
    assert_eq!(p.band(Power::battery(49)), Band::Medium);
    assert_eq!(p.band(Power::battery(20)), Band::Medium);
    assert_eq!(p.band(Power::battery(19)), Band::Low);
    assert_eq!(p.band(Power::battery(5)), Band::Low);
    assert_eq!(p.band(Power::battery(4)), Band::Critical);
    assert_eq!(p.band(Power::battery(0)), Band::Critical);
    // Low-power mode wins over a full battery, and over charging.
    assert_eq!(p.band(low_power(90)), Band::Critical);
    assert_eq!(
        p.band(Power {
            charging: true,
            ..low_power(90)
        }),
        Band::Critical
    );
}

#[test]
fn plugged_syncs_at_every_contact_without_caps() {
    let s = Scheduler::<u64>::default();
    for pending in [Pending::default(), own(), carried()] {
        let plan = s.on_contact(0, &1, LAN, Power::MAINS, pending);
        assert!(plan.sync);
        assert_eq!(plan.max_bytes, UNLIMITED);
        assert!(plan.carries_for_others());
        // Tor and BLE too: no cap to scale.
        let plan = s.on_contact(0, &1, Transport::Tor.into(), charging(40), pending);
        assert_eq!(plan.max_bytes, UNLIMITED);
    }
    // Nothing pending is a pull.
    let plan = s.on_contact(0, &1, LAN, Power::MAINS, Pending::default());
    assert_eq!(plan.reason, Reason::Pull);
}

#[test]
fn high_battery_syncs_everything_with_link_scaled_caps() {
    let s = Scheduler::<u64>::default();
    let plan = s.on_contact(0, &1, LAN, Power::battery(80), carried());
    assert!(plan.sync);
    assert_eq!(plan.reason, Reason::Send);
    assert_eq!(plan.band, Band::High);
    assert_eq!(plan.max_bytes, 4 * MIB);
    assert_eq!(plan.relay_max_bytes, 4 * MIB);
    assert!(!plan.urgent_only);
}

#[test]
fn caps_differ_by_link() {
    let s = Scheduler::<u64>::default();
    let cap = |t: Transport| {
        s.on_contact(0, &1, t.into(), Power::battery(80), own())
            .max_bytes
    };
    assert_eq!(cap(Transport::Lan), 4 * MIB);
    assert_eq!(cap(Transport::Sim), 4 * MIB);
    assert_eq!(cap(Transport::WifiDirect), 2 * MIB);
    assert_eq!(cap(Transport::Ble), 4 * MIB / 5);
    assert_eq!(cap(Transport::Tor), 4 * MIB / 10);
    assert!(cap(Transport::Ble) < cap(Transport::WifiDirect));
}

#[test]
fn metered_links_are_capped_in_every_band() {
    let s = Scheduler::<u64>::default();
    let metered = LinkKind::metered(Transport::Lan);
    assert_eq!(
        s.on_contact(0, &1, metered, Power::MAINS, own()).max_bytes,
        MIB
    );
    assert_eq!(
        s.on_contact(0, &1, metered, Power::battery(80), own())
            .max_bytes,
        MIB
    );
    let plan = s.on_contact(0, &1, metered, Power::battery(30), carried());
    assert_eq!(plan.max_bytes, MIB);
    assert_eq!(plan.relay_max_bytes, 256 * KIB);
    // Below the metered cap, the band's cap stands.
    assert_eq!(
        s.on_contact(0, &1, metered, Power::battery(10), own())
            .max_bytes,
        256 * KIB
    );
}

#[test]
fn medium_battery_syncs_pending_and_relays_less() {
    let s = synced_at(0);
    let power = Power::battery(35);
    // Carried data alone is work at this level.
    let plan = s.on_contact(5 * MIN, &1, LAN, power, carried());
    assert!(plan.sync);
    assert_eq!(plan.reason, Reason::Send);
    assert_eq!(plan.max_bytes, MIB);
    assert_eq!(plan.relay_max_bytes, 256 * KIB);
    // A receipt too.
    assert!(s.on_contact(5 * MIN, &1, LAN, power, receipts()).sync);
    // Nothing pending: only a pull, every 30 min.
    let plan = s.on_contact(5 * MIN, &1, LAN, power, Pending::default());
    assert_eq!(plan.reason, Reason::TooSoon);
    assert!(!plan.sync);
    let plan = s.on_contact(30 * MIN, &1, LAN, power, Pending::default());
    assert_eq!(plan.reason, Reason::Pull);
}

#[test]
fn low_battery_sends_own_data_but_does_not_relay() {
    let s = Scheduler::<u64>::default();
    let power = Power::battery(12);
    let plan = s.on_contact(0, &1, LAN, power, own());
    assert!(plan.sync);
    assert_eq!(plan.reason, Reason::Send);
    assert_eq!(plan.max_bytes, 256 * KIB);
    assert_eq!(plan.relay_max_bytes, 0);
    assert!(!plan.carries_for_others());
    assert!(s.on_contact(0, &1, LAN, power, receipts()).sync);

    // Carried data is not work here: a met peer only gets the occasional pull.
    let s = synced_at(0);
    let plan = s.on_contact(20 * MIN, &1, LAN, power, carried());
    assert!(!plan.sync);
    assert_eq!(plan.reason, Reason::TooSoon);
    let plan = s.on_contact(20 * MIN, &1, LAN, power, own());
    assert!(plan.sync);
    assert!(!plan.carries_for_others());
}

#[test]
fn critical_battery_sends_only_urgent_own_messages() {
    let s = Scheduler::<u64>::default();
    for power in [Power::battery(3), low_power(90), low_power(3)] {
        for pending in [own(), carried(), receipts(), Pending::default()] {
            let plan = s.on_contact(0, &1, LAN, power, pending);
            assert!(!plan.sync, "{power:?} {pending:?}");
            assert_eq!(plan.reason, Reason::NothingToSend);
            assert_eq!(plan.max_bytes, 0);
        }
        let plan = s.on_contact(0, &1, LAN, power, urgent());
        assert!(plan.sync);
        assert!(plan.urgent_only);
        assert_eq!(plan.band, Band::Critical);
        assert_eq!(plan.max_bytes, 64 * KIB);
        assert_eq!(plan.relay_max_bytes, 0);
        // And nothing at all is scanned for unless something urgent waits.
        assert_eq!(s.next_wakeup(0, power, own()), None);
        assert_eq!(s.next_wakeup(0, power, urgent()), Some(15 * MIN));
    }
}

#[test]
fn per_peer_interval_holds_on_battery_not_on_mains() {
    let mut s = Scheduler::<u64>::default();
    let phone = Power::battery(80);
    assert!(s.on_contact(0, &1, LAN, phone, own()).sync);
    s.on_synced(0, 1, 2_000, phone);

    let again = s.on_contact(5 * SEC, &1, LAN, phone, own());
    assert!(!again.sync);
    assert_eq!(again.reason, Reason::TooSoon);
    assert!(s.on_contact(5 * SEC, &1, LAN, Power::MAINS, own()).sync);
    assert!(s.on_contact(5 * SEC, &1, LAN, charging(80), own()).sync);
    // Another peer is not held back.
    assert!(s.on_contact(5 * SEC, &2, LAN, phone, own()).sync);
    // The interval passes.
    assert!(!s.on_contact(MIN - 1, &1, LAN, phone, own()).sync);
    assert!(s.on_contact(MIN, &1, LAN, phone, own()).sync);
}

#[test]
fn history_is_recorded() {
    let mut s = Scheduler::<[u8; 32]>::default();
    let peer = [7; 32];
    assert!(s.history(&peer).is_none());
    s.on_synced(100, peer, 10, Power::MAINS);
    s.on_synced(200, peer, 20, Power::MAINS);
    let h = s.history(&peer).unwrap();
    assert_eq!(h.last_synced_ms, 200);
    assert_eq!(h.last_bytes, 20);
    assert_eq!(h.total_bytes, 30);
    assert_eq!(h.syncs, 2);
}

#[test]
fn battery_budget_stops_battery_syncs_until_the_window_closes() {
    let mut p = Policy::default();
    p.battery_bytes_per_window = 3 * MIB;
    let mut s = Scheduler::<u64>::new(p).unwrap();
    let phone = Power::battery(80);

    // Bytes moved on mains do not count.
    s.on_synced(0, 1, 100 * MIB, Power::MAINS);
    assert_eq!(s.battery_bytes_used(0), 0);

    s.on_synced(10, 2, 2 * MIB, phone);
    assert_eq!(s.battery_bytes_used(10), 2 * MIB);
    // What is left caps the next plan.
    assert_eq!(s.on_contact(20, &3, LAN, phone, own()).max_bytes, MIB);
    s.on_synced(20, 3, MIB, phone);

    let plan = s.on_contact(30, &4, LAN, phone, own());
    assert!(!plan.sync);
    assert_eq!(plan.reason, Reason::BudgetSpent);
    // Plugged in, it syncs anyway.
    assert!(s.on_contact(30, &4, LAN, charging(80), own()).sync);
    // Discovery waits for the window to close.
    assert_eq!(s.next_wakeup(30, phone, own()), Some(10 + BUDGET_WINDOW_MS));
    assert_eq!(s.next_wakeup(30, Power::MAINS, own()), Some(30 + 10 * SEC));

    let later = 10 + BUDGET_WINDOW_MS;
    assert_eq!(s.battery_bytes_used(later), 0);
    assert!(s.on_contact(later, &4, LAN, phone, own()).sync);
}

#[test]
fn discovery_duty_cycle_by_band() {
    let s = Scheduler::<u64>::default();
    let wake = |power, pending| s.next_wakeup(1_000, power, pending).map(|t| t - 1_000);
    let idle = Pending::default();
    assert_eq!(wake(Power::MAINS, idle), Some(10 * SEC));
    assert_eq!(wake(Power::battery(80), own()), Some(30 * SEC));
    assert_eq!(wake(Power::battery(80), idle), Some(MIN));
    assert_eq!(wake(Power::battery(30), carried()), Some(MIN));
    assert_eq!(wake(Power::battery(30), idle), Some(5 * MIN));
    assert_eq!(wake(Power::battery(10), own()), Some(5 * MIN));
    // Carried data does not count as work on a low battery.
    assert_eq!(wake(Power::battery(10), carried()), Some(15 * MIN));
    assert_eq!(wake(Power::battery(2), idle), None);
    // Saturates at the end of time.
    assert_eq!(s.next_wakeup(u64::MAX, Power::MAINS, idle), Some(u64::MAX));
}

#[test]
fn time_going_backwards_counts_as_due_and_rebases() {
    let mut s = synced_at(10 * MIN);
    let phone = Power::battery(80);
    // "Earlier" than the last sync: due rather than stuck until the clock catches up.
    assert!(s.on_contact(0, &1, LAN, phone, own()).sync);
    s.on_synced(0, 1, 0, phone);
    assert_eq!(s.history(&1).unwrap().last_synced_ms, 0);
    assert!(!s.on_contact(5 * SEC, &1, LAN, phone, own()).sync);
}

#[test]
fn invalid_policies_are_rejected() {
    let check = |edit: fn(&mut Policy)| {
        let mut p = Policy::default();
        edit(&mut p);
        let err = Scheduler::<u64>::new(p).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        err.to_string()
    };
    assert!(check(|p| p.high_percent = 10).contains("thresholds"));
    assert!(check(|p| p.low_percent = 30).contains("thresholds"));
    assert!(check(|p| p.high_percent = 101).contains("thresholds"));
    assert!(check(|p| p.max_peers = 0).contains("max_peers"));
    assert!(check(|p| p.high.pull_interval_ms = Some(1)).contains("pull_interval_ms"));
    assert!(check(|p| p.high.idle_scan_interval_ms = Some(1)).contains("idle_scan"));
    assert!(check(|p| p.high.scan_interval_ms = None).contains("idle_scan"));
    assert!(check(|p| p.low.max_bytes = 8 * MIB).contains("looser"));
    assert!(check(|p| p.medium.relay_max_bytes = 8 * MIB).contains("looser"));
    assert!(check(|p| p.critical.min_interval_ms = 0).contains("looser"));
    assert!(check(|p| p.medium.urgent_only = true).contains("looser"));
    assert!(check(|p| p.medium.pull_interval_ms = None).contains("looser"));

    // Equal thresholds (an empty band) and a looser-but-ordered policy are fine.
    let mut p = Policy::default();
    p.medium_percent = 50;
    p.low_power_mode_band = Band::Low;
    p.battery_bytes_per_window = UNLIMITED;
    p.low.pull_interval_ms = None;
    Scheduler::<u64>::new(p).unwrap();
}

#[test]
fn low_power_mode_band_is_configurable_but_never_loosens() {
    let mut p = Policy::default();
    p.low_power_mode_band = Band::Low;
    let s = Scheduler::<u64>::new(p).unwrap();
    let plan = s.on_contact(0, &1, LAN, low_power(90), own());
    assert_eq!(plan.band, Band::Low);
    assert!(plan.sync);
    assert_eq!(
        s.on_contact(0, &1, LAN, low_power(2), own()).band,
        Band::Critical
    );
}

// ---- Properties ----

fn any_power() -> impl Strategy<Value = Power> {
    (
        prop::option::of(any::<u8>()),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(battery_percent, charging, low_power_mode)| Power {
            battery_percent,
            charging,
            low_power_mode,
        })
}

fn any_pending() -> impl Strategy<Value = Pending> {
    let small = prop_oneof![Just(0u64), 1u64..5, Just(u64::MAX)];
    let big = prop_oneof![Just(0u64), 1u64..10_000_000, Just(u64::MAX)];
    (small.clone(), big.clone(), small.clone(), big, small).prop_map(
        |(own_messages, own_bytes, urgent_messages, carried_bytes, receipts)| Pending {
            own_messages,
            own_bytes,
            urgent_messages,
            carried_bytes,
            receipts,
        },
    )
}

fn any_link() -> impl Strategy<Value = LinkKind> {
    let t = prop_oneof![
        Just(Transport::Sim),
        Just(Transport::Lan),
        Just(Transport::WifiDirect),
        Just(Transport::Ble),
        Just(Transport::Tor),
    ];
    (t, any::<bool>()).prop_map(|(transport, metered)| LinkKind { transport, metered })
}

/// Times near zero, near the end of u64, and in between.
fn any_time() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..10 * MIN,
        0u64..3 * BUDGET_WINDOW_MS,
        (u64::MAX - 10 * MIN)..=u64::MAX,
        any::<u64>(),
    ]
}

/// A scheduler with a random history: (time, peer, bytes, power) sessions, in any time order.
fn any_scheduler() -> impl Strategy<Value = Scheduler<u8>> {
    (
        prop::collection::vec((any_time(), 0u8..4, any::<u64>(), any_power()), 0..8),
        prop_oneof![Just(UNLIMITED), Just(64 * MIB), 1u64..(4 * MIB)],
    )
        .prop_map(|(sessions, budget)| {
            let mut p = Policy::default();
            p.battery_bytes_per_window = budget;
            let mut s = Scheduler::new(p).unwrap();
            for (t, peer, bytes, power) in sessions {
                s.on_synced(t, peer, bytes, power);
            }
            s
        })
}

/// `b` is at least as generous as `a`: syncs whenever `a` does, with caps no smaller.
fn at_least_as_generous(a: &Plan, b: &Plan) -> bool {
    (!a.sync || b.sync) && b.max_bytes >= a.max_bytes && b.relay_max_bytes >= a.relay_max_bytes
}

/// Wakeup `b` is no later than `a` (`None` = never).
fn no_later(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (_, None) => a.is_none(),
        (None, Some(_)) => true,
        (Some(a), Some(b)) => b <= a,
    }
}

proptest! {
    #[test]
    fn more_battery_is_never_stricter(
        s in any_scheduler(),
        now in any_time(),
        peer in 0u8..4,
        link in any_link(),
        pending in any_pending(),
        lo in any::<u8>(),
        hi in any::<u8>(),
        low_power_mode in prop::bool::weighted(0.2),
    ) {
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let power = |p| Power { battery_percent: Some(p), charging: false, low_power_mode };
        let a = s.on_contact(now, &peer, link, power(lo), pending);
        let b = s.on_contact(now, &peer, link, power(hi), pending);
        prop_assert!(at_least_as_generous(&a, &b), "{lo}%: {a:?}, {hi}%: {b:?}");
        prop_assert!(b.band <= a.band);
        let (wa, wb) = (
            s.next_wakeup(now, power(lo), pending),
            s.next_wakeup(now, power(hi), pending),
        );
        prop_assert!(no_later(wa, wb), "{lo}%: {wa:?}, {hi}%: {wb:?}");
        // And the policy's intervals shrink as the battery rises.
        let policy = s.policy();
        let (pa, pb) = (policy.band_policy(a.band), policy.band_policy(b.band));
        prop_assert!(pb.min_interval_ms <= pa.min_interval_ms);
    }

    #[test]
    fn charging_is_never_stricter(
        s in any_scheduler(),
        now in any_time(),
        peer in 0u8..4,
        link in any_link(),
        pending in any_pending(),
        power in any_power(),
    ) {
        let on = Power { charging: true, ..power };
        let off = Power { charging: false, ..power };
        let a = s.on_contact(now, &peer, link, off, pending);
        let b = s.on_contact(now, &peer, link, on, pending);
        prop_assert!(at_least_as_generous(&a, &b), "off: {a:?}, on: {b:?}");
        prop_assert!(no_later(s.next_wakeup(now, off, pending), s.next_wakeup(now, on, pending)));
        // Mains is never stricter than any battery state either.
        let mains = Power { battery_percent: None, ..power };
        let c = s.on_contact(now, &peer, link, mains, pending);
        prop_assert!(at_least_as_generous(&a, &c), "battery: {a:?}, mains: {c:?}");
    }

    #[test]
    fn more_pending_never_cancels_a_sync(
        s in any_scheduler(),
        now in any_time(),
        peer in 0u8..4,
        link in any_link(),
        power in any_power(),
        base in any_pending(),
        extra in any_pending(),
    ) {
        let more = Pending {
            own_messages: base.own_messages.saturating_add(extra.own_messages),
            own_bytes: base.own_bytes.saturating_add(extra.own_bytes),
            urgent_messages: base.urgent_messages.saturating_add(extra.urgent_messages),
            carried_bytes: base.carried_bytes.saturating_add(extra.carried_bytes),
            receipts: base.receipts.saturating_add(extra.receipts),
        };
        let a = s.on_contact(now, &peer, link, power, base);
        let b = s.on_contact(now, &peer, link, power, more);
        prop_assert!(!a.sync || b.sync, "base: {a:?}, more: {b:?}");
        prop_assert!(no_later(s.next_wakeup(now, power, base), s.next_wakeup(now, power, more)));
    }

    #[test]
    fn dearer_links_never_get_larger_caps(
        s in any_scheduler(),
        now in any_time(),
        peer in 0u8..4,
        power in any_power(),
        pending in any_pending(),
        a in any_link(),
        b in any_link(),
    ) {
        let (cheap, dear) = if a.transport.cost() <= b.transport.cost() { (a, b) } else { (b, a) };
        let dear = LinkKind { metered: cheap.metered || dear.metered, ..dear };
        let pc = s.on_contact(now, &peer, cheap, power, pending);
        let pd = s.on_contact(now, &peer, dear, power, pending);
        prop_assert!(pd.max_bytes <= pc.max_bytes);
        prop_assert!(pd.relay_max_bytes <= pc.relay_max_bytes);
    }

    #[test]
    fn plans_are_consistent(
        s in any_scheduler(),
        now in any_time(),
        peer in 0u8..4,
        link in any_link(),
        power in any_power(),
        pending in any_pending(),
    ) {
        let plan = s.on_contact(now, &peer, link, power, pending);
        prop_assert_eq!(plan.sync, matches!(plan.reason, Reason::Send | Reason::Pull));
        prop_assert!(plan.relay_max_bytes <= plan.max_bytes);
        if !plan.sync {
            prop_assert_eq!(plan.max_bytes, 0);
        }
        if plan.band != Band::Plugged {
            prop_assert!(plan.max_bytes <= 4 * MIB);
        }
        if link.metered {
            prop_assert!(plan.max_bytes <= MIB);
        }
        prop_assert_eq!(plan.band, s.policy().band(power));
    }

    /// Any sequence of contacts and sessions at any times, going backwards or near u64::MAX,
    /// never panics, and the history stays bounded.
    #[test]
    fn any_times_never_panic(
        ops in prop::collection::vec(
            (any_time(), any::<u8>(), any::<u64>(), any_power(), any_pending(), any_link(), any::<bool>()),
            0..64,
        ),
    ) {
        let mut p = Policy::default();
        p.max_peers = 8;
        p.battery_bytes_per_window = 10 * MIB;
        let mut s = Scheduler::<u8>::new(p).unwrap();
        for (now, peer, bytes, power, pending, link, session) in ops {
            let plan = s.on_contact(now, &peer, link, power, pending);
            let _ = s.next_wakeup(now, power, pending);
            let _ = s.battery_bytes_used(now);
            if session || plan.sync {
                s.on_synced(now, peer, bytes, power);
                prop_assert_eq!(s.history(&peer).map(|h| h.last_synced_ms), Some(now));
            }
        }
    }

    /// Right after a session on battery, the same peer is skipped until the band's interval has
    /// passed (with the same work), and syncs once it has.
    #[test]
    fn the_interval_holds_on_battery(
        start in any_time(),
        percent in 5u8..=100,
        gap in 0u64..(3 * 60 * MIN),
    ) {
        let mut s = Scheduler::<u8>::default();
        let power = Power::battery(percent);
        s.on_synced(start, 1, 0, power);
        let interval = s.policy().band_policy(s.policy().band(power)).min_interval_ms;
        let Some(now) = start.checked_add(gap) else { return Ok(()) };
        let plan = s.on_contact(now, &1, LAN, power, own());
        prop_assert_eq!(plan.sync, gap >= interval, "{:?}", plan);
    }
}

#[test]
fn ble_contact_on_a_medium_battery() {
    let s = Scheduler::<u64>::default();
    let plan = s.on_contact(0, &9, BLE, Power::battery(30), carried());
    assert_eq!(plan.max_bytes, MIB / 5);
    assert_eq!(plan.relay_max_bytes, 256 * KIB / 5);
}
