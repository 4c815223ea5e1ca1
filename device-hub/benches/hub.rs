//! The hub as people run it (release build, its own process): time from start to ready, idle
//! and peak resident memory, and GET-document requests per second over mutual TLS with
//! keep-alive (16 connections, the load generator on the same machine), compared with the plain
//! hyper + rustls figure of ../shared/notes/baselines.md.
//!
//! Idle RSS is VmRSS 1 s after the hub, started on a fresh data directory, served its first
//! requests: `device-hub app add` (the CLI asks the running hub to create a database and grant
//! the app) and a document written and read by the owner.
//!
//! ```text
//! cargo bench -p device-hub --bench hub
//! HUB_BIN=/path/to/device-hub cargo bench -p device-hub --bench hub   # measure another build
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use public_key_identity::tls::{client_config, server_name};
use public_key_identity::{Identity, Keystore};

/// ../shared/notes/baselines.md: hyper 1.x keep-alive, 16 connections, 200-byte JSON, mutual TLS.
const BASELINE_MTLS_REQ_S: f64 = 64_000.0;
const CONNECTIONS: usize = 16;
const SECONDS: u64 = 5;

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(port: u16, owner: &Identity) -> Sender {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut config = client_config(owner.key_id(), Some(owner)).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name("127.0.0.1"), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn send(sender: &mut Sender, method: &str, path: &str, body: &str) -> u16 {
    sender.ready().await.unwrap();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await.unwrap();
    status
}

/// Starts `device-hub serve` on `dir`; returns the child and the time until its ready line.
fn start(hub: &std::path::Path, dir: &std::path::Path) -> (std::process::Child, Duration) {
    let mut child = Command::new(hub)
        .arg("--data")
        .arg(dir)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready = started.elapsed();
    assert!(line.starts_with("device-hub ready:"), "{line}");
    (child, ready)
}

/// Stops `child` with SIGTERM; returns how long it took and how it exited.
fn stop(mut child: std::process::Child) -> (Duration, std::process::ExitStatus) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let stop = Instant::now();
    let status = child.wait().unwrap();
    (stop.elapsed(), status)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // HUB_BIN=path/to/device-hub measures another build (say, a saved one, to compare).
    let hub = std::env::var_os("HUB_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_device-hub").into());
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("hub.toml"),
        format!("name = \"bench\"\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();

    // A fresh data directory: the first start creates the identity.
    let (child, first_ready) = start(&hub, dir.path());
    let pid = child.id();
    // Its first requests: an app added with the CLI (which asks the running hub to create the
    // database and grant it), then the owner writes and reads a document over mutual TLS.
    let app_add = Command::new(&hub)
        .arg("--data")
        .arg(dir.path())
        .args(["app", "add", "notes"])
        .args(["--grant", "bench:read", "--grant", "bench:write"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(app_add.success(), "app add: {app_add}");
    let owner = Keystore::open(dir.path().join("keys"))
        .unwrap()
        .load("device")
        .unwrap();
    let doc = format!(
        "{{\"type\":\"reading\",\"value\":21.5,\"unit\":\"celsius\",\"note\":\"{}\"}}",
        "x".repeat(120)
    );
    {
        let mut admin = connect(port, &owner).await;
        assert_eq!(send(&mut admin, "PUT", "/bench/doc", &doc).await, 201);
        assert_eq!(send(&mut admin, "GET", "/bench/doc", "").await, 200);
    }
    // Idle: 1 s after those requests were served (their connections closed).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kb(pid, "VmRSS:");

    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut sender = connect(port, &owner).await;
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                assert_eq!(send(&mut sender, "GET", "/bench/doc", "").await, 200);
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let t = Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    let req_s = count.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    let peak = rss_kb(pid, "VmHWM:");
    let (stopped, status) = stop(child);

    // A normal start, on the data directory the first run left.
    let (child, ready) = start(&hub, dir.path());
    let _ = stop(child);

    println!("hub binary                     {}", hub.display());
    println!(
        "start to ready                 {:>10.1} ms  (first start, creating the identity: {:.1} ms)",
        ready.as_secs_f64() * 1e3,
        first_ready.as_secs_f64() * 1e3
    );
    println!(
        "idle RSS                       {:>10.2} MB  (target <= 10; 1 s after `app add` and a PUT and GET)",
        idle as f64 / 1024.0
    );
    println!(
        "peak RSS under load            {:>10.1} MB",
        peak as f64 / 1024.0
    );
    println!(
        "GET doc over mutual TLS        {:>10.0} req/s ({CONNECTIONS} keep-alive connections)",
        req_s
    );
    println!(
        "  ratio to baselines.md mTLS   {:>10.2}x  (hyper + rustls: {BASELINE_MTLS_REQ_S} req/s)",
        req_s / BASELINE_MTLS_REQ_S
    );
    println!(
        "clean stop (SIGTERM)           {:>10.1} ms, {status}",
        stopped.as_secs_f64() * 1e3
    );
}
