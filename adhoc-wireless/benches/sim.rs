//! How fast the simulated radio runs: node-seconds simulated per wall second.
//!
//! ```text
//! cargo bench -p adhoc-wireless --features sim --bench sim            # 12 simulated hours
//! cargo bench -p adhoc-wireless --features sim --bench sim -- 1       # 1 simulated hour
//! ```
//!
//! Scenarios (The ONE's Epidemic vs Spray-and-Wait mobility: 2000 × 2000 m, random waypoint at
//! 0.5–1.5 m/s with waits of 0–120 s, 30 m range, 250 kB/s, contacts checked every 0.1 s):
//! 100 nodes, contacts only; 100 nodes that also advertise every second (discovery tables on);
//! 100 nodes with a 50 kB transfer each way at every contact (the routing-simulator loop); and
//! 1000 nodes, contacts only, for a tenth of the time.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a bench measures wall time

use std::time::{Duration, Instant};

use adhoc_wireless::sim::{Mobility, RandomWaypoint, SimEvent, SimTime, World, WorldConfig};
use adhoc_wireless::{Advert, Plugin};
use public_key_identity::KeyId;

fn world(nodes: u32, seed: u64, advertise: bool) -> World {
    let mut config = WorldConfig::seeded(seed);
    config.width = 2000.0;
    config.height = 2000.0;
    let world = World::new(config).unwrap();
    for n in 0..nodes {
        let node = world
            .add_node(Mobility::RandomWaypoint(RandomWaypoint::the_one()))
            .unwrap();
        if advertise {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&n.to_be_bytes());
            node.advertise(Advert::key(KeyId::from_digest(d), vec![]).unwrap())
                .unwrap();
        }
    }
    world
}

fn report(name: &str, nodes: u32, simulated: Duration, wall: Duration, world: &World) {
    let node_secs = f64::from(nodes) * simulated.as_secs_f64();
    let s = world.stats();
    println!(
        "{name:<44} {:>6.2} s wall  {:>12.0} node-s/s  ({:.0}x real time; {} events, {} contacts, {} adverts heard, {} transfers)",
        wall.as_secs_f64(),
        node_secs / wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64(),
        s.events,
        s.contacts_up,
        s.adverts_heard,
        s.transfers_done,
    );
}

fn main() {
    let hours: f64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(12.0);
    let simulated = Duration::from_secs_f64(hours * 3600.0);
    let end = SimTime::from_duration(simulated);
    println!("simulated radio, {hours} h simulated per scenario:");

    let w = world(100, 1, false);
    let t = Instant::now();
    w.run_until(end);
    report("100 nodes, contacts only", 100, simulated, t.elapsed(), &w);

    let w = world(100, 1, true);
    let t = Instant::now();
    w.run_until(end);
    report(
        "100 nodes, adverts every 1 s (discovery)",
        100,
        simulated,
        t.elapsed(),
        &w,
    );

    let w = world(100, 1, false);
    let t = Instant::now();
    while let Some(e) = w.next_event(end) {
        if let SimEvent::ContactUp { a, b, .. } = e {
            let _ = w.start_transfer(a, b, 50_000);
            let _ = w.start_transfer(b, a, 50_000);
        }
    }
    report(
        "100 nodes, 50 kB each way per contact",
        100,
        simulated,
        t.elapsed(),
        &w,
    );

    let tenth = simulated / 10;
    let w = world(1000, 1, false);
    let t = Instant::now();
    w.run_until(SimTime::from_duration(tenth));
    report(
        &format!("1000 nodes, contacts only ({:.1} h)", hours / 10.0),
        1000,
        tenth,
        t.elapsed(),
        &w,
    );
}
