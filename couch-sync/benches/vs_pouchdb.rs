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

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::json;

const DOCS: usize = 10_000;
const BATCH: usize = 500;
const PUTS: usize = 1_000;

struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// RSS of a process and its children (pouchdb-server is node; our server is one process).
fn rss_tree_kb(pid: u32, field: &str) -> u64 {
    let mut total = rss_kb(pid, field);
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            total += rss_tree_kb(child, field);
        }
    }
    total
}

struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender,
            host: addr.to_string(),
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: String) -> (u16, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept-encoding", "identity")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

async fn wait_ready(addr: SocketAddr) {
    for _ in 0..200 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
            drop(tcp);
            let mut c = Client::connect(addr).await;
            if c.send("GET", "/", String::new()).await.0 == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on {addr} did not come up");
}

async fn start_ours() -> Server {
    let bin = std::env::var("SERVE_BIN")
        .expect("set SERVE_BIN to the release `serve` example (scripts/bench-couch does)");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(addr).await;
    Server {
        name: "couch-sync",
        child,
        addr,
        _dir: dir,
    }
}

async fn start_pouchdb() -> Server {
    let script = std::env::var("POUCHDB_SERVER")
        .expect("set POUCHDB_SERVER to node_modules/pouchdb-server/bin/pouchdb-server");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("node")
        .args([
            "--unhandled-rejections=warn",
            &script,
            "-o",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-d",
        ])
        .arg(dir.path())
        .arg("-n")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(addr).await;
    Server {
        name: "pouchdb-server",
        child,
        addr,
        _dir: dir,
    }
}

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
