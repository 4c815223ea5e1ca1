//! Tor on the private test network, by hand:
//!
//! ```text
//! scripts/tor-testnet run cargo bench -p tor-transport --features arti --bench onion
//! ```
//!
//! Prints, each as the median (and min–max) of several runs: bootstrap of a fresh client; a
//! freshly launched service's time until a client first reaches it; connect latency (a fresh
//! client's first stream to a published service: descriptor, introduction, rendezvous) and a
//! further stream on the established circuit; a 10 MB upload through an onion stream in pinned
//! mutual TLS, and the same upload over plain TCP + TLS on loopback in the same run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // a bench measures wall time and may fail loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use adhoc_wireless::{BoxedStream, Inbound, Incoming, Link};
use public_key_identity::tls::{client_config, server_config, server_name};
use public_key_identity::{ClientAuth, Identity, KeyAlgorithm, KeyId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tor_transport::{PrivateNetwork, ServiceOptions, Tor, TorConfig};

const RUNS: usize = 5;
const BYTES: usize = 10 * 1000 * 1000;

fn summary(name: &str, mut v: Vec<f64>, unit: &str) -> f64 {
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    println!(
        "{name:<52} median {median:>9.1} {unit}   ({:.1}–{:.1}, n = {})",
        v[0],
        v[v.len() - 1],
        v.len()
    );
    median
}

async fn tor(net: &PrivateNetwork, dir: &std::path::Path) -> Tor {
    Tor::start(TorConfig::private(dir, net.clone()))
        .await
        .unwrap()
}

/// Reads each stream's bytes to the end and answers their count (8 bytes), in mutual TLS.
fn sink(mut inbox: Incoming, me: &Identity) {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config(me, ClientAuth::Optional).unwrap()));
    tokio::spawn(async move {
        while let Some(Inbound::Stream { stream, .. }) = inbox.next().await {
            let acceptor = acceptor.clone();
            tokio::spawn(serve_sink(acceptor, stream));
        }
    });
}

async fn serve_sink(acceptor: tokio_rustls::TlsAcceptor, stream: BoxedStream) {
    let Ok(mut tls) = acceptor.accept(stream).await else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
        if n >= BYTES as u64 {
            break;
        }
    }
    let _ = tls.write_all(&n.to_be_bytes()).await;
    let _ = tls.flush().await;
}

/// Uploads BYTES in TLS pinned to `pin` over `stream`; seconds until the count came back.
async fn upload(stream: BoxedStream, pin: KeyId, me: &Identity) -> f64 {
    let config = Arc::new(client_config(pin, Some(me)).unwrap());
    let t = Instant::now();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name("bench"), stream)
        .await
        .unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0;
    while sent < BYTES {
        let k = chunk.len().min(BYTES - sent);
        tls.write_all(&chunk[..k]).await.unwrap();
        sent += k;
    }
    tls.flush().await.unwrap();
    let mut count = [0u8; 8];
    tls.read_exact(&mut count).await.unwrap();
    assert_eq!(u64::from_be_bytes(count), BYTES as u64);
    t.elapsed().as_secs_f64()
}

async fn until_reachable(client: &Tor, url: &public_key_identity::HttpKeyUrl) -> BoxedStream {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match client.dial(url).await {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("{url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::main]
async fn main() {
    let Some((net, ready)) = PrivateNetwork::from_env().unwrap() else {
        println!("SKIPPED: no private Tor network (run it through scripts/tor-testnet run)");
        return;
    };
    if let Some(ready) = ready {
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let dirs: Vec<_> = (0..(3 * RUNS + 4))
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut dir = dirs.iter().map(|d| d.path());
    let me = Identity::generate(KeyAlgorithm::Ed25519).unwrap();

    // Bootstrap of fresh clients.
    let mut boot = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let c = tor(&net, dir.next().unwrap()).await;
        c.bootstrapped().await.unwrap();
        boot.push(t.elapsed().as_secs_f64() * 1000.0);
        clients.push(c);
    }
    summary("bootstrap (fresh state directory)", boot, "ms");

    // Launch → first reachable, each a new identity on one host client.
    let host = tor(&net, dir.next().unwrap()).await;
    host.bootstrapped().await.unwrap();
    let mut reach = Vec::new();
    let mut services = Vec::new();
    for _ in 0..RUNS {
        let id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
        let t = Instant::now();
        let s = host.host(id.key(), ServiceOptions::new(443)).await.unwrap();
        drop(until_reachable(&clients[0], s.url()).await);
        reach.push(t.elapsed().as_secs_f64() * 1000.0);
        services.push((id, s));
    }
    summary("launch → first stream reaches the service", reach, "ms");
    sink(host.incoming().unwrap(), &services[0].0);
    let url = services[0].1.url().clone();

    // A fresh client's first stream to the published service, then a further one.
    let mut first = Vec::new();
    let mut again = Vec::new();
    for c in clients.iter().skip(1).chain(std::iter::once(&clients[0])) {
        let t = Instant::now();
        drop(c.dial(&url).await.unwrap());
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        drop(c.dial(&url).await.unwrap());
        again.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    summary(
        "connect: a client's first stream (new circuit)",
        first,
        "ms",
    );
    summary("connect: a further stream (circuit reused)", again, "ms");

    // 10 MB through an onion stream in pinned TLS, and over loopback TCP + TLS.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(&services[0].0, ClientAuth::Optional).unwrap(),
    ));
    tokio::spawn(async move {
        while let Ok((s, _)) = tcp.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(serve_sink(acceptor.clone(), Box::new(s)));
        }
    });
    let mut onion = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..3 {
        let s = clients[0].dial(&url).await.unwrap();
        onion.push(BYTES as f64 / upload(s, url.key_id(), &me).await / 1e6);
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        plain.push(BYTES as f64 / upload(Box::new(s), url.key_id(), &me).await / 1e6);
    }
    let o = summary("10 MB over an onion stream in pinned TLS", onion, "MB/s");
    let p = summary(
        "10 MB over loopback TCP + TLS (the reference)",
        plain,
        "MB/s",
    );
    println!(
        "onion / TCP throughput ratio: {:.4} ({:.0}x slower)",
        o / p,
        p / o
    );
}
