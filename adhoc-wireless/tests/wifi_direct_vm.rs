//! Wi-Fi Direct end to end, on real wpa_supplicant and simulated radios (mac80211_hwsim): two
//! devices with no access point form a P2P group, find each other's key ids over mDNS on the
//! group interface, and move 10 MB each way over a TCP stream. Prints the group formation time
//! and the throughput.
//!
//! It needs two wpa_supplicant instances with P2P, each on its own radio, the second one's
//! radio in a network namespace (so the two group interfaces are two hosts, not one). The test
//! VM sets that up: `scripts/vm/test-wifi-direct` (guest side:
//! `scripts/vm/guest/wifi-direct-tests.sh`). The environment it reads:
//!
//! | variable | what |
//! |---|---|
//! | `THALI_WPA_CTRL_A` | control socket of device A (this process) |
//! | `THALI_WPA_CTRL_B` | control socket of device B (a child process) |
//! | `THALI_WIFI_NETNS_B` | network namespace B runs in (`ip netns exec`; empty: none) |
//! | `THALI_WIFI_REQUIRED` | set: fail instead of skipping when the sockets are not given |
//!
//! Without `THALI_WPA_CTRL_A` the test prints a SKIPPED line and passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use adhoc_wireless::wifi_direct::{WifiDirectConfig, WifiDirectPlugin};
use adhoc_wireless::{Address, Advert, Clock, Discovery, Event, Inbound, Link, Plugin, TokioClock};
use public_key_identity::KeyId;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROLE_ENV: &str = "THALI_WIFI_ROLE";
/// Bytes moved each way.
const BYTES: usize = 10 * 1024 * 1024;
/// How long forming the group and finding each other may take (TCG emulation is slow).
const FIND_MS: u64 = 180_000;
/// How long each transfer may take.
const TRANSFER_MS: u64 = 300_000;

fn key(n: u8) -> KeyId {
    KeyId::from_digest([n; 32])
}

/// A deterministic 10 MB payload (different for each direction).
fn payload(seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; BYTES];
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn config(ctrl: &str) -> WifiDirectConfig {
    let mut c = WifiDirectConfig::new(ctrl);
    // No idle teardown while the test runs; a long connect timeout under emulation, and a
    // short back-off after a failed attempt (P2P's frame timers are tight for an emulated
    // machine under load: a GO negotiation or WPS exchange may time out and is tried again).
    c.idle_ms = 0;
    c.connect_timeout_ms = 90_000;
    c.retry_ms = 3_000;
    c.lan_ready_timeout_ms = 60_000;
    c
}

/// Waits until `plugin` has found `want`, returning its Wi-Fi Direct address.
async fn find(plugin: &WifiDirectPlugin, clock: &TokioClock, want: KeyId) -> Address {
    let mut sub = plugin.subscribe();
    let t0 = clock.now_millis();
    loop {
        for p in plugin.peers() {
            if p.id.key_id() == Some(&want) {
                if let Some(a) = p.cheapest() {
                    return a.address.clone();
                }
            }
        }
        let left = FIND_MS.saturating_sub(clock.now_millis() - t0);
        assert!(
            left > 0,
            "did not find {want} in {FIND_MS} ms; group {:?}, stats {:?}",
            plugin.group(),
            plugin.wifi_stats()
        );
        let next = tokio::time::timeout(Duration::from_millis(left.min(1_000)), sub.next()).await;
        if let Ok(Some(Ok(Event::Found(_) | Event::Updated(_)))) = next {
            continue;
        }
    }
}

/// Not a test: device B, run by the test below in B's namespace.
#[test]
#[ignore = "run by two_devices_form_a_group_and_move_10_mb as device B"]
fn wifi_direct_peer_process() {
    let Ok(ctrl) = std::env::var("THALI_WPA_CTRL_B") else {
        panic!("{ROLE_ENV} runs need THALI_WPA_CTRL_B");
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let clock = TokioClock::new();
        let plugin = WifiDirectPlugin::start(config(&ctrl)).await.unwrap();
        let mut incoming = plugin.incoming().unwrap();
        plugin
            .advertise(Advert::key(key(2), vec![]).unwrap())
            .unwrap();
        println!(
            "B started {} {}",
            plugin.device_address(),
            plugin.device_name().unwrap_or("-")
        );
        let addr = find(&plugin, &clock, key(1)).await;
        println!(
            "B found {} at {addr} after {} ms; group {:?}; stats {:?}",
            key(1),
            clock.now_millis(),
            plugin.group(),
            plugin.wifi_stats()
        );
        let Some(Inbound::Stream { mut stream, .. }) =
            tokio::time::timeout(Duration::from_millis(FIND_MS), incoming.next())
                .await
                .unwrap()
        else {
            panic!("B: no stream came");
        };
        // A -> B.
        let mut got = vec![0u8; BYTES];
        let t0 = clock.now_millis();
        tokio::time::timeout(
            Duration::from_millis(TRANSFER_MS),
            stream.read_exact(&mut got),
        )
        .await
        .unwrap()
        .unwrap();
        let ms = clock.now_millis() - t0;
        println!(
            "B received {BYTES} bytes in {ms} ms sha256 {}",
            hex(&Sha256::digest(&got))
        );
        // B -> A.
        let back = payload(2);
        tokio::time::timeout(Duration::from_millis(TRANSFER_MS), async {
            stream.write_all(&back).await?;
            stream.flush().await?;
            // Wait for A to close: everything arrived.
            let mut end = [0u8; 1];
            let _ = stream.read(&mut end).await?;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap()
        .unwrap();
        println!("B done");
        plugin.shutdown().await;
    });
}

/// Device B's stdout, line by line.
struct PeerB {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PeerB {
    fn spawn(ctrl_b: &str, netns: Option<&str>) -> PeerB {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args([
            "--exact",
            "wifi_direct_peer_process",
            "--ignored",
            "--nocapture",
        ])
        .env(ROLE_ENV, "b")
        .env("THALI_WPA_CTRL_B", ctrl_b)
        .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("  [B] {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        PeerB { child, lines }
    }

    /// The next line of B starting with `prefix` (within `ms`).
    fn wait_line(&self, prefix: &str, ms: u64) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_millis(ms)) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(e) => panic!("B said no {prefix:?} line ({e})"),
            }
        }
    }
}

impl Drop for PeerB {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn two_devices_form_a_group_and_move_10_mb() {
    let (Ok(ctrl_a), Ok(ctrl_b)) = (
        std::env::var("THALI_WPA_CTRL_A"),
        std::env::var("THALI_WPA_CTRL_B"),
    ) else {
        let line = "SKIPPED (wifi_direct_vm): THALI_WPA_CTRL_A / THALI_WPA_CTRL_B not set — \
                    run scripts/vm/test-wifi-direct (real wpa_supplicant on mac80211_hwsim in \
                    the test VM)";
        assert!(
            std::env::var_os("THALI_WIFI_REQUIRED").is_none(),
            "{line}, and THALI_WIFI_REQUIRED is set"
        );
        eprintln!("!!!!!!!! {line}");
        println!("!!!!!!!! {line}");
        return;
    };
    let netns = std::env::var("THALI_WIFI_NETNS_B")
        .ok()
        .filter(|s| !s.is_empty());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let clock = Arc::new(TokioClock::new());
        let a = WifiDirectPlugin::start(config(&ctrl_a)).await.unwrap();
        a.advertise(Advert::key(key(1), vec![]).unwrap()).unwrap();
        eprintln!("A started {} {}", a.device_address(), a.device_name().unwrap_or("-"));
        let b = PeerB::spawn(&ctrl_b, netns.as_deref());
        let t0 = clock.now_millis();
        let b_addr = find(&a, &clock, key(2)).await;
        let found_ms = clock.now_millis() - t0;
        let stats = a.wifi_stats();
        let group = a.group().unwrap();
        eprintln!("A found {} at {b_addr} after {found_ms} ms; group {group:?}", key(2));
        let b_found = b.wait_line("B found", FIND_MS);
        assert!(b_found.contains(&key(1).to_string()), "{b_found}");
        println!(
            "FIGURE wifi-direct group formation: {} ms (P2P_CONNECT/GO-NEG-REQUEST -> P2P-GROUP-STARTED), \
             LAN ready {} ms after, peer found over mDNS {found_ms} ms after start (role {:?})",
            stats.last_formation_ms.unwrap_or(0),
            stats.last_lan_ready_ms.unwrap_or(0),
            group.role,
        );

        let mut stream = a.connect(&b_addr).await.unwrap();
        // A -> B.
        let out = payload(1);
        let t1 = clock.now_millis();
        tokio::time::timeout(Duration::from_millis(TRANSFER_MS), async {
            stream.write_all(&out).await?;
            stream.flush().await
        })
        .await
        .unwrap()
        .unwrap();
        let received = b.wait_line("B received", TRANSFER_MS);
        let ab_ms_sender = clock.now_millis() - t1;
        assert!(
            received.ends_with(&hex(&Sha256::digest(&out))),
            "B got other bytes: {received}"
        );
        let ab_ms: u64 = received
            .split(" in ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(ab_ms_sender);
        // B -> A.
        let mut back = vec![0u8; BYTES];
        let t2 = clock.now_millis();
        tokio::time::timeout(Duration::from_millis(TRANSFER_MS), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        let ba_ms = clock.now_millis() - t2;
        assert!(back == payload(2), "A got other bytes from B");
        stream.shutdown().await.unwrap();
        drop(stream);
        let mbit = |ms: u64| (BYTES as f64 * 8.0) / (ms.max(1) as f64 / 1000.0) / 1e6;
        println!(
            "FIGURE wifi-direct throughput A->B: {BYTES} bytes in {ab_ms} ms = {:.1} Mbit/s",
            mbit(ab_ms)
        );
        println!(
            "FIGURE wifi-direct throughput B->A: {BYTES} bytes in {ba_ms} ms = {:.1} Mbit/s",
            mbit(ba_ms)
        );
        b.wait_line("B done", TRANSFER_MS);
        a.shutdown().await;
        let mut b = b;
        let status = b.child.wait().unwrap();
        assert!(status.success(), "B exited {status}");
    });
}
