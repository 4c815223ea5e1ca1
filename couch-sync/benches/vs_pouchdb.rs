//! couch-sync against pouchdb-server, in one run on the same machine, over real HTTP on loopback:
//! `_bulk_docs` of 10,000 ~200-byte documents in batches of 500, 1,000 sequential single-document
//! PUTs (median and p99), and each server's idle and peak resident memory.
//!
//! Run by hand (never as a test): `scripts/bench-couch` builds the release server, installs
//! pouchdb-server from npm, and runs this with `SERVE_BIN` and `POUCHDB_SERVER` set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, Server, rss_tree_kb, start_ours, start_pouchdb};

const DOCS: usize = 10_000;
const BATCH: usize = 500;
const PUTS: usize = 1_000;

fn doc(i: usize) -> serde_json::Value {
    // ~200 bytes of JSON.
    json!({"_id": format!("doc-{i:08}"), "type": "reading", "sensor": format!("s-{}", i % 97),
           "value": i as f64 * 0.25, "unit": "celsius", "tags": ["a", "b", "c"],
           "note": "the quick brown fox jumps over the lazy dog, twice over"})
}

struct Figures {
    bulk_docs_per_s: f64,
    put_median_ms: f64,
    put_p99_ms: f64,
    idle_rss_mb: f64,
    peak_rss_mb: f64,
}

async fn measure(server: &Server) -> Figures {
    let pid = server.child.id();
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.send("PUT", "/bulk", String::new()).await.0, 201);
    assert_eq!(c.send("PUT", "/single", String::new()).await.0, 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_tree_kb(pid, "VmRSS:");

    // Request bodies are built before the clock starts: only the server's work is timed.
    let bodies: Vec<String> = (0..DOCS / BATCH)
        .map(|batch| {
            let docs: Vec<_> = (batch * BATCH..(batch + 1) * BATCH).map(doc).collect();
            json!({"docs": docs}).to_string()
        })
        .collect();
    let start = Instant::now();
    for body in bodies {
        let (status, reply) = c.send("POST", "/bulk/_bulk_docs", body).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
    }
    let bulk_secs = start.elapsed().as_secs_f64();

    let mut times = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        let body = doc(i).to_string();
        let t = Instant::now();
        let (status, _) = c.send("PUT", &format!("/single/put-{i:06}"), body).await;
        times.push(t.elapsed());
        assert_eq!(status, 201);
    }
    times.sort();
    let (status, body) = c.send("GET", "/bulk", String::new()).await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        info["doc_count"].as_u64(),
        Some(DOCS as u64),
        "{}: every document stored",
        server.name
    );
    let peak = rss_tree_kb(pid, "VmHWM:");
    Figures {
        bulk_docs_per_s: DOCS as f64 / bulk_secs,
        put_median_ms: times[PUTS / 2].as_secs_f64() * 1e3,
        put_p99_ms: times[PUTS * 99 / 100].as_secs_f64() * 1e3,
        idle_rss_mb: idle as f64 / 1024.0,
        peak_rss_mb: peak as f64 / 1024.0,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test harness probes
    }
    let ours = start_ours().await;
    let a = measure(&ours).await;
    drop(ours);
    let pouch = start_pouchdb().await;
    let b = measure(&pouch).await;
    drop(pouch);
    println!(
        "{:<28} {:>14} {:>16} {:>8}",
        "", "couch-sync", "pouchdb-server", "ratio"
    );
    println!(
        "{:<28} {:>14.0} {:>16.0} {:>7.1}x",
        "_bulk_docs docs/s (500/req)",
        a.bulk_docs_per_s,
        b.bulk_docs_per_s,
        a.bulk_docs_per_s / b.bulk_docs_per_s
    );
    println!(
        "{:<28} {:>14.3} {:>16.3} {:>7.2}x",
        "PUT median ms",
        a.put_median_ms,
        b.put_median_ms,
        a.put_median_ms / b.put_median_ms
    );
    println!(
        "{:<28} {:>14.3} {:>16.3} {:>7.2}x",
        "PUT p99 ms",
        a.put_p99_ms,
        b.put_p99_ms,
        a.put_p99_ms / b.put_p99_ms
    );
    println!(
        "{:<28} {:>14.1} {:>16.1} {:>7.2}x",
        "idle RSS MB",
        a.idle_rss_mb,
        b.idle_rss_mb,
        a.idle_rss_mb / b.idle_rss_mb
    );
    println!(
        "{:<28} {:>14.1} {:>16.1} {:>7.2}x",
        "peak RSS MB",
        a.peak_rss_mb,
        b.peak_rss_mb,
        a.peak_rss_mb / b.peak_rss_mb
    );
}
