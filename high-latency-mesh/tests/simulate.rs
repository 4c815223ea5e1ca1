//! The simulator on a small, dense version of The ONE's scenario: deterministic, and the modes
//! order as they must (flood delivers most at the highest cost, direct delivery least at none,
//! Spray-and-Wait and the directed mode in between, copies bounded).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use high_latency_mesh::routing::{Directed, Mode};
use high_latency_mesh::sim::{Report, Scenario, run};

fn small(seed: u64) -> Scenario {
    let mut s = Scenario::the_one(40, seed);
    s.width = 600.0;
    s.height = 600.0;
    s.warmup = Duration::from_secs(200);
    s.duration = Duration::from_secs(2 * 3600);
    s.ttl = Duration::from_secs(3600);
    s
}

fn go(mode: &Mode) -> Report {
    run(&small(3), mode).unwrap()
}

#[test]
fn a_run_is_reproducible_from_its_seed() {
    let mode = Mode::Directed(Directed::default());
    let (a, b) = (go(&mode), go(&mode));
    assert_eq!(a, b);
    let other = run(&small(4), &mode).unwrap();
    assert_ne!(a, other, "another mobility seed is another run");
}

#[test]
fn the_modes_order_as_they_must() {
    let flood = go(&Mode::Epidemic);
    let snw = go(&Mode::SprayAndWait { copies: 10 });
    let direct = go(&Mode::Direct);
    let directed = go(&Mode::Directed(Directed::default()));
    for r in [&flood, &snw, &direct, &directed] {
        assert!(r.created > 200, "{r:?}");
        assert!(r.delivered <= r.created);
        assert!(r.latency_median_s > 0.0 && r.latency_mean_s > 0.0, "{r:?}");
        assert!(r.storage_peak_max <= 50_000_000);
    }
    assert!(
        flood.delivery_ratio() >= snw.delivery_ratio(),
        "{flood:?} {snw:?}"
    );
    assert!(
        snw.delivery_ratio() > direct.delivery_ratio(),
        "{snw:?} {direct:?}"
    );
    assert!(directed.delivery_ratio() > direct.delivery_ratio());
    // Direct delivery: one hop, no relay beyond the last.
    assert_eq!(direct.overhead(), 0.0);
    assert!((direct.hops_mean - 1.0).abs() < 1e-9);
    // Spray-and-Wait's transfers per message are bounded by its copies (9 sprays + 1 delivery),
    // flood's by the node count.
    assert!(snw.relayed <= 10 * snw.created, "{snw:?}");
    assert!(flood.overhead() > 3.0 * snw.overhead(), "{flood:?} {snw:?}");
    // Receipts clear copies: the directed mode stores far less than flood.
    assert!(directed.storage_peak_mean < flood.storage_peak_mean / 2.0);
}

#[test]
fn a_scenario_without_two_nodes_or_copies_is_refused() {
    assert!(run(&Scenario::the_one(1, 1), &Mode::Epidemic).is_err());
    assert!(run(&small(1), &Mode::SprayAndWait { copies: 0 }).is_err());
}
