//! Replication through a loopback proxy that cuts connections and stalls mid-transfer at random
//! (seeded): the replication completes with every document present exactly once, and after a
//! failure it resumes from its last checkpoint instead of starting over.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use couch_sync::replicate::{
    Endpoint, Remote, Replication, ReplicationOptions, RetryPolicy, TcpConnector, TokioClock,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy in front of `upstream` that, per connection, either forwards faithfully or, after a
/// random number of bytes, cuts the connection or stalls it. It records the request lines it sees.
struct FaultyProxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    faults: Arc<AtomicU64>,
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn start_proxy(upstream: std::net::SocketAddr, seed: u64) -> FaultyProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let faults = Arc::new(AtomicU64::new(0));
    let (reqs, flts) = (requests.clone(), faults.clone());
    tokio::spawn(async move {
        let mut rng = seed | 1;
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let roll = next(&mut rng);
            // 70% of connections fail somewhere in the first 60 KB the server sends back.
            let fault = match roll % 10 {
                0..=3 => Some(("cut", next(&mut rng) % 60_000)),
                4..=6 => Some(("stall", next(&mut rng) % 60_000)),
                _ => None,
            };
            let (reqs, flts) = (reqs.clone(), flts.clone());
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let upstream_dir = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if let Ok(text) = std::str::from_utf8(&buf[..n.min(300)]) {
                            for line in text.lines().filter(|l| {
                                l.starts_with("GET ")
                                    || l.starts_with("POST ")
                                    || l.starts_with("PUT ")
                            }) {
                                reqs.lock().unwrap().push(line.to_owned());
                            }
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let downstream_dir = async {
                    let mut buf = vec![0u8; 4 * 1024];
                    let mut sent = 0u64;
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if let Some((kind, at)) = fault {
                            if sent + n as u64 > at {
                                flts.fetch_add(1, Ordering::SeqCst);
                                if kind == "stall" {
                                    // Hold the connection open, sending nothing, longer than the
                                    // client's request timeout.
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                }
                                return; // cut: dropping both halves closes the connection
                            }
                        }
                        sent += n as u64;
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! { () = upstream_dir => {}, () = downstream_dir => {} }
            });
        }
    });
    FaultyProxy {
        port,
        requests,
        faults,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_survives_cuts_and_stalls() {
    let server = common::start().await;
    server.put_json("/src", &json!({})).await;
    const N: usize = 1500;
    for batch in 0..(N / 250) {
        let docs: Vec<_> = (batch * 250..(batch + 1) * 250)
            .map(|i| json!({"_id": format!("doc{i:05}"), "i": i, "pad": "p".repeat(100 + i % 200)}))
            .collect();
        assert_eq!(
            server
                .post_json("/src/_bulk_docs", &json!({"docs": docs}))
                .await
                .status,
            201
        );
    }
    server.put_json("/dst", &json!({})).await;
    let proxy = start_proxy(server.addr, 0x5eed_cafe).await;
    let remote = |db: &str| {
        Endpoint::Remote(Arc::new(
            Remote::new(
                &format!("http://127.0.0.1:{}/{db}", proxy.port),
                Arc::new(TcpConnector),
                Arc::new(TokioClock),
            )
            .unwrap()
            .with_timeout(Duration::from_millis(1500)),
        ))
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = ReplicationOptions {
        batch_size: 100,
        retry: RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: None,
        },
        jitter_seed: Some(7),
        ..ReplicationOptions::default()
    };
    let rep = Replication::new(remote("src"), remote("dst"), options).with_events(tx);
    let result = tokio::time::timeout(Duration::from_secs(240), rep.run())
        .await
        .expect("replication hung")
        .unwrap();
    let mut retries = 0;
    while let Ok(event) = rx.try_recv() {
        if matches!(event, couch_sync::replicate::Event::Retrying { .. }) {
            retries += 1;
        }
    }
    let faults = proxy.faults.load(Ordering::SeqCst);
    assert!(faults >= 5, "the proxy injected faults ({faults})");
    assert!(retries >= 3, "the replicator retried ({retries})");

    // Every document present, each written exactly once: one sequence number per document.
    let info = server.get("/dst").await.json();
    assert_eq!(info["doc_count"], N);
    let seq: u64 = info["update_seq"]
        .as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(seq, N as u64, "no document was written twice");
    let all = server
        .get("/dst/_all_docs?include_docs=true&limit=5&skip=700")
        .await
        .json();
    assert_eq!(all["rows"][0]["doc"]["i"], 700);
    assert_eq!(
        result
            .source_last_seq
            .as_str()
            .unwrap()
            .split('-')
            .next()
            .unwrap(),
        N.to_string()
    );

    // Resumed from checkpoints: once the first checkpoint reached the target, no session
    // started over from since=0 (sessions before it may: there was nothing to resume from).
    let requests = proxy.requests.lock().unwrap().clone();
    let first_checkpoint = requests
        .iter()
        .position(|r| r.starts_with("PUT /dst/_local/"))
        .expect("a checkpoint was written");
    let is_from_zero = |r: &String| {
        r.contains("/src/_changes") && (r.contains("since=0&") || r.contains("since=0 "))
    };
    let restarts_after = requests[first_checkpoint..]
        .iter()
        .filter(|r| is_from_zero(r))
        .count();
    let sessions = requests
        .iter()
        .filter(|r| r.starts_with("GET /src/_local/"))
        .count();
    assert!(
        sessions > 1,
        "several sessions (retries re-read the checkpoints): {sessions}"
    );
    assert_eq!(
        restarts_after, 0,
        "after the first checkpoint every session resumed ({sessions} sessions)"
    );
    let resumed = requests[first_checkpoint..]
        .iter()
        .filter(|r| r.contains("/src/_changes") && !is_from_zero(r))
        .count();
    assert!(resumed > 0);
}
