//! Discovery latency of the LAN plugin in network namespaces: the time from starting a peer
//! process until another peer reports it `Found` (and until it reports the other), over 20
//! trials; median and max. mdns-sd alone takes about 0.9 s here (most of it its own probing and
//! announcing delays).
//!
//! ```text
//! sudo cargo bench -p adhoc-wireless --features mdns --bench discovery
//! ```
//!
//! Needs root and iproute2 (it builds the namespaces of `tests/support/netns.rs`); without them
//! it says so and exits. Each trial starts a fresh process with a new key next to a peer that
//! runs throughout, then stops it cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench may fail loudly

#[path = "../tests/support/netns.rs"]
mod netns;

use netns::{Lab, PeerCommand, Skip, key};

const TRIALS: u8 = 20;

fn summary(name: &str, mut ms: Vec<u64>) {
    ms.sort_unstable();
    let median = match ms.len() {
        0 => 0,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2,
    };
    let max = ms.last().copied().unwrap_or(0);
    let min = ms.first().copied().unwrap_or(0);
    println!(
        "{name:<44} median {median:>5} ms   max {max:>5} ms   min {min:>5} ms   (n = {})",
        ms.len()
    );
}

fn main() {
    if netns::peer_main() {
        return;
    }
    let command = PeerCommand {
        program: std::env::current_exe().expect("the bench's own path"),
        args: Vec::new(),
    };
    let mut lab = match Lab::new("bench", 79, command) {
        Ok(lab) => lab,
        Err(Skip(reason)) => {
            println!("SKIPPED discovery latency bench: {reason}");
            return;
        }
    };
    let a_host = lab.host(1);
    let b_host = lab.host(2);
    let mut a = lab.peer(&a_host, key(1), 3_000);
    // Let the long-lived peer settle (its own probing) before the first trial.
    a.wait_for(a.started, 5_000, |l| l.starts_with("ready"))
        .expect("the first peer did not start");
    let settle = lab.now();
    a.wait_for(settle, 1_500, |_| false);

    let mut found_by_other = Vec::new();
    let mut finds_other = Vec::new();
    for trial in 0..TRIALS {
        let k = key(100 + trial);
        let mut b = lab.peer(&b_host, k, 3_000);
        let t0 = b.started;
        let (t_a, _) = a
            .wait_found(&k, t0, 15_000)
            .unwrap_or_else(|| panic!("trial {trial}: not found"));
        let (t_b, _) = b
            .wait_found(&key(1), t0, 15_000)
            .unwrap_or_else(|| panic!("trial {trial}: did not find the other"));
        found_by_other.push(t_a - t0);
        finds_other.push(t_b - t0);
        println!(
            "trial {trial:>2}: found by the other after {:>5} ms, found the other after {:>5} ms",
            t_a - t0,
            t_b - t0
        );
        let quit = lab.now();
        b.command("quit");
        b.wait_for(quit, 5_000, |l| l == "bye");
        a.wait_lost(&k, quit, 5_000);
    }
    println!();
    summary("start → the other peer reports it Found", found_by_other);
    summary("start → it reports the other peer Found", finds_other);
}
