//! Replication throughput in one run on one machine, both ends over HTTP on loopback:
//! couch-sync's replicator between two couch-sync servers, against PouchDB 9's replicator between
//! two pouchdb-servers — 10,000 ~200-byte documents, and 1,000 documents with a 100 KB attachment
//! each — and the time of an incremental replication of one changed document out of 1k, 10k and
//! 100k (which must not grow with the database).
//!
//! Run by hand: `scripts/bench-couch replication` (builds the release server, installs the npm
//! packages, sets `SERVE_BIN`, `POUCHDB_SERVER` and `POUCHDB_REPLICATE`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use couch_sync::replicate::{
    Endpoint, Remote, Replication, ReplicationOptions, TcpConnector, TokioClock,
};
use serde_json::json;
use support::{Client, Server, start_ours, start_pouchdb};

fn small_doc(i: usize) -> serde_json::Value {
    json!({"_id": format!("doc-{i:08}"), "type": "reading", "sensor": format!("s-{}", i % 97),
           "value": i as f64 * 0.25, "unit": "celsius", "tags": ["a", "b", "c"],
           "note": "the quick brown fox jumps over the lazy dog, twice over"})
}

fn attachment_doc(i: usize) -> serde_json::Value {
    // 100 KB of incompressible bytes (a photo, say), different per document.
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let bytes: Vec<u8> = (0..100 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    json!({"_id": format!("photo-{i:06}"), "caption": format!("photo {i}"),
           "_attachments": {"photo.jpg": {"content_type": "image/jpeg", "data": data_encoding::BASE64.encode(&bytes)}}})
}

async fn fill(
    server: &Server,
    db: &str,
    docs: impl Iterator<Item = serde_json::Value>,
    batch: usize,
) {
    let mut c = Client::connect(server.addr).await;
    let (status, _) = c.send("PUT", &format!("/{db}"), String::new()).await;
    assert!(status == 201 || status == 412, "creating {db}: {status}");
    let docs: Vec<_> = docs.collect();
    for chunk in docs.chunks(batch) {
        let (status, body) = c
            .send(
                "POST",
                &format!("/{db}/_bulk_docs"),
                json!({"docs": chunk}).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }
}

async fn doc_count(server: &Server, db: &str) -> u64 {
    let mut c = Client::connect(server.addr).await;
    let (_, body) = c.send("GET", &format!("/{db}"), String::new()).await;
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["doc_count"]
        .as_u64()
        .unwrap_or(0)
}

fn endpoint(server: &Server, db: &str) -> Endpoint {
    Endpoint::Remote(Arc::new(
        Remote::new(
            &format!("http://{}/{db}", server.addr),
            Arc::new(TcpConnector),
            Arc::new(TokioClock),
        )
        .unwrap(),
    ))
}

/// Our replicator, both ends over HTTP; returns seconds and documents written.
async fn ours(source: &Server, target: &Server, db: &str, target_db: &str) -> (f64, u64) {
    let options = ReplicationOptions {
        create_target: true,
        ..ReplicationOptions::default()
    };
    let rep = Replication::new(endpoint(source, db), endpoint(target, target_db), options);
    let start = Instant::now();
    let result = rep.run().await.unwrap();
    (start.elapsed().as_secs_f64(), result.progress.docs_written)
}

/// PouchDB 9's replicator in node between two HTTP endpoints; returns seconds and docs written.
fn pouch(source: &Server, target: &Server, db: &str, target_db: &str) -> (f64, u64) {
    let script = std::env::var("POUCHDB_REPLICATE")
        .expect("set POUCHDB_REPLICATE (scripts/bench-couch does)");
    let out = Command::new("node")
        .arg(script)
        .arg(format!("http://{}/{db}", source.addr))
        .arg(format!("http://{}/{target_db}", target.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["seconds"].as_f64().unwrap(),
        v["docs_written"].as_u64().unwrap(),
    )
}

/// Median time of replicating one changed document, over `rounds` changes (after one unmeasured
/// warm-up round, so connection set-up and cold caches of the first round do not count).
async fn incremental(source: &Server, target: &Server, db: &str, rounds: usize) -> f64 {
    let mut c = Client::connect(source.addr).await;
    let mut times = Vec::new();
    for round in 0..=rounds {
        let id = format!("doc-{:08}", round * 7);
        let (_, body) = c.send("GET", &format!("/{db}/{id}"), String::new()).await;
        let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        doc["round"] = json!(round);
        let (status, _) = c.send("PUT", &format!("/{db}/{id}"), doc.to_string()).await;
        assert_eq!(status, 201);
        let (secs, written) = ours(source, target, db, db).await;
        assert_eq!(written, 1);
        if round > 0 {
            times.push(secs);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (a, b) = (start_ours().await, start_ours().await);
    let (p, q) = (start_pouchdb().await, start_pouchdb().await);

    fill(&a, "small", (0..10_000).map(small_doc), 500).await;
    fill(&p, "small", (0..10_000).map(small_doc), 500).await;
    let (ours_small, n1) = ours(&a, &b, "small", "small").await;
    let (pouch_small, n2) = pouch(&p, &q, "small", "small");
    assert_eq!(
        (
            n1,
            n2,
            doc_count(&b, "small").await,
            doc_count(&q, "small").await
        ),
        (10_000, 10_000, 10_000, 10_000)
    );

    fill(&a, "photos", (0..1_000).map(attachment_doc), 50).await;
    fill(&p, "photos", (0..1_000).map(attachment_doc), 50).await;
    let (ours_att, n1) = ours(&a, &b, "photos", "photos").await;
    let (pouch_att, n2) = pouch(&p, &q, "photos", "photos");
    assert_eq!((n1, n2), (1_000, 1_000));

    let mut flat = Vec::new();
    for size in [1_000usize, 10_000, 100_000] {
        let db = format!("inc{size}");
        fill(&a, &db, (0..size).map(small_doc), 1_000).await;
        ours(&a, &b, &db, &db).await;
        flat.push((size, incremental(&a, &b, &db, 9).await));
    }

    println!(
        "{:<40} {:>12} {:>12} {:>8}",
        "", "couch-sync", "PouchDB", "ratio"
    );
    println!(
        "{:<40} {:>12.0} {:>12.0} {:>7.1}x",
        "10,000 small docs: docs/s",
        10_000.0 / ours_small,
        10_000.0 / pouch_small,
        pouch_small / ours_small
    );
    println!(
        "{:<40} {:>12.0} {:>12.0} {:>7.1}x",
        "1,000 docs x 100 KB attachment: docs/s",
        1_000.0 / ours_att,
        1_000.0 / pouch_att,
        pouch_att / ours_att
    );
    for (size, secs) in &flat {
        println!(
            "{:<40} {:>10.2}ms",
            format!("incremental, 1 changed of {size}"),
            secs * 1e3
        );
    }
    let (min, max) = flat.iter().fold((f64::MAX, 0f64), |(lo, hi), (_, s)| {
        (lo.min(*s), hi.max(*s))
    });
    println!(
        "{:<40} {:>11.2}x",
        "incremental spread (max/min, target ≤ 2)",
        max / min
    );
    drop((a, b, p, q));
    let _ = Duration::ZERO;
}
