//! The hub as people run it (release build, its own process): time from start to ready, idle
//! and peak resident memory, and GET-document requests per second over mutual TLS with
//! keep-alive (16 connections, the load generator on the same machine), compared with the plain
//! hyper + rustls figure of ../shared/notes/baselines.md.
//!
//! ```text
//! cargo bench -p device-hub --bench hub
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
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
    // First start creates the identity; the measured start is a normal one.
    for _ in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_device-hub"))
            .arg("--data")
            .arg(dir.path())
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
        if dir.path().join("measured").exists() {
            let pid = child.id();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let idle = rss_kb(pid, "VmRSS:");
            let owner = Keystore::open(dir.path().join("keys"))
                .unwrap()
                .load("device")
                .unwrap();
            let mut admin = connect(port, &owner).await;
            assert!(matches!(
                send(&mut admin, "PUT", "/bench", "").await,
                201 | 412
            ));
            let doc = format!(
                "{{\"type\":\"reading\",\"value\":21.5,\"unit\":\"celsius\",\"note\":\"{}\"}}",
                "x".repeat(120)
            );
            assert_eq!(send(&mut admin, "PUT", "/bench/doc", &doc).await, 201);
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
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let stop = Instant::now();
            let status = child.wait().unwrap();
            println!(
                "start to ready                 {:>10.1} ms",
                ready.as_secs_f64() * 1e3
            );
            println!(
                "idle RSS                       {:>10.1} MB  (target <= 10)",
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
                stop.elapsed().as_secs_f64() * 1e3
            );
        } else {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            child.wait().unwrap();
            std::fs::write(dir.path().join("measured"), "").unwrap();
        }
    }
}
