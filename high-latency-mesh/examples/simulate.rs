//! Runs The ONE's Epidemic vs Spray-and-Wait scenario with every routing mode and prints the
//! table of the crate README.
//!
//! ```text
//! cargo run --release -p high-latency-mesh --features sim --example simulate              # N = 100, 5 seeds
//! cargo run --release -p high-latency-mesh --features sim --example simulate -- --nodes 50
//! cargo run --release -p high-latency-mesh --features sim --example simulate -- --nodes 1000 --seeds 1 --modes directed
//! ```

#![allow(clippy::disallowed_methods)] // reports wall time

use std::time::Instant;

use high_latency_mesh::routing::{Directed, Mode};
use high_latency_mesh::sim::{Report, Scenario, run};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let nodes: u32 = value("--nodes").and_then(|v| v.parse().ok()).unwrap_or(100);
    let seeds: u64 = value("--seeds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let hours: f64 = value("--hours")
        .and_then(|v| v.parse().ok())
        .unwrap_or(12.0);
    let wanted = value("--modes").unwrap_or_else(|| "all".to_owned());
    // The directed mode's parameters (defaults: `Directed::default()`).
    let mut directed = Directed::default();
    if let Some(v) = value("--copies").and_then(|v| v.parse().ok()) {
        directed.copies = v;
    }
    if let Some(v) = value("--gain-s").and_then(|v| v.parse::<u64>().ok()) {
        directed.focus_gain_ms = v * 1000;
    }
    if let Some(v) = value("--focus-hops").and_then(|v| v.parse().ok()) {
        directed.max_focus_hops = v;
    }
    if let Some(v) = value("--penalty-s").and_then(|v| v.parse::<u64>().ok()) {
        directed.transitive_penalty_ms = v * 1000;
    }
    if let Some(v) = value("--half-life-s").and_then(|v| v.parse::<u64>().ok()) {
        directed.activity_half_life_ms = v * 1000;
    }
    let all = [
        Mode::Epidemic,
        Mode::SprayAndWait { copies: 6 },
        Mode::SprayAndWait { copies: 10 },
        Mode::Direct,
        Mode::Directed(directed),
    ];
    let mut modes: Vec<Mode> = all
        .into_iter()
        .filter(|m| wanted == "all" || wanted.split(',').any(|w| m.name().starts_with(w)))
        .collect();
    // More Spray-and-Wait copy counts, for the trade-off curve: `--snw 14,20`.
    for copies in value("--snw").iter().flat_map(|v| v.split(',')) {
        if let Ok(copies) = copies.parse() {
            modes.push(Mode::SprayAndWait { copies });
        }
    }
    println!(
        "The ONE's scenario: {nodes} nodes, {hours} h, seeds 1..={seeds} (mean, min–max over seeds)\n"
    );
    println!(
        "| mode | delivery | latency mean (s) | latency median (s) | overhead | hops | storage peak (MB, max node) | wall (s/seed) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for mode in &modes {
        let started = Instant::now();
        let reports: Vec<Report> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..=seeds)
                .map(|seed| {
                    let mode = mode.clone();
                    s.spawn(move || {
                        let mut scenario = Scenario::the_one(nodes, seed);
                        scenario.duration = std::time::Duration::from_secs_f64(hours * 3600.0);
                        run(&scenario, &mode)
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().and_then(Result::ok))
                .collect()
        });
        let wall = started.elapsed().as_secs_f64() / seeds as f64;
        let col = |f: &dyn Fn(&Report) -> f64, digits: usize| {
            let v: Vec<f64> = reports.iter().map(f).collect();
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{mean:.digits$} ({min:.digits$}–{max:.digits$})")
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {wall:.1} |",
            mode.name(),
            col(&|r| r.delivery_ratio(), 3),
            col(&|r| r.latency_mean_s, 0),
            col(&|r| r.latency_median_s, 0),
            col(&|r| r.overhead(), 2),
            col(&|r| r.hops_mean, 2),
            col(&|r| r.storage_peak_max as f64 / 1e6, 1),
        );
    }
}
