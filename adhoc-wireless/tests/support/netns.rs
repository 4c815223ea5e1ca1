//! Network-namespace labs for the LAN plugin: the topology of the project's note on mDNS in
//! namespaces (one namespace holding a bridge, one namespace per host with a veth into it,
//! 10.S.0.K/24; the root namespace never attached), peer processes inside it, and the peer
//! process itself.
//!
//! Shared by `tests/mdns_netns.rs` and `benches/discovery.rs` (through `#[path]`). A peer process
//! is the calling binary run again inside a namespace (`ip netns exec NS <binary> <args>`) with
//! [`ROLE_ENV`] set; [`peer_main`] is what it runs. It talks on stdout in lines that start with
//! `@@ ` and takes commands on stdin, one per line (see [`peer_main`]).
//!
//! Everything the lab creates is removed when it is dropped (a test that fails included): the
//! peer processes are killed, then the namespaces deleted, which deletes their veths and the
//! bridge. Names carry the process id, so parallel runs do not collide, and a lab first deletes
//! what a dead process left behind.

#![allow(dead_code, unreachable_pub)] // a module shared by a test and a bench: each uses a part
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adhoc_wireless::mdns::{LanInterface, MdnsConfig, MdnsPlugin, SERVICE_TYPE};
use adhoc_wireless::{Address, Advert, Clock, Discovery, Event, Inbound, Link, Plugin, TokioClock};
use public_key_identity::KeyId;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set to the role (`peer`, `flood`, `malformed`) in a peer process.
pub const ROLE_ENV: &str = "ADHOC_NETNS_ROLE";
const IFACE_ENV: &str = "ADHOC_NETNS_IFACE";
const KEY_ENV: &str = "ADHOC_NETNS_KEY";
const SILENCE_ENV: &str = "ADHOC_NETNS_SILENCE_MS";
const COUNT_ENV: &str = "ADHOC_NETNS_COUNT";
const IP_ENV: &str = "ADHOC_NETNS_IP";
const REQUERY_ENV: &str = "ADHOC_NETNS_REQUERY_MS";
/// Namespace names start with this.
const PREFIX: &str = "awt-";

/// Why a lab cannot be built here.
#[derive(Debug)]
pub struct Skip(pub String);

/// How to run a peer process: this binary and the arguments that make it one.
#[derive(Debug, Clone)]
pub struct PeerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// A namespace with an address on the lab's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// Runs `ip ARGS`; the error is what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Deletes namespaces that a lab of a process that no longer runs left behind.
fn delete_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Namespaces, a bridge, hosts, and the peer processes running in them.
pub struct Lab {
    tag: String,
    subnet: u8,
    bridge: String,
    hosts: Vec<Host>,
    children: Vec<Arc<Mutex<Child>>>,
    command: PeerCommand,
    pub clock: TokioClock,
    /// The peers' [`MdnsConfig::requery_ms`] (their default when `None`).
    pub requery_ms: Option<u64>,
}

impl Lab {
    /// A bridge in its own namespace, for hosts on 10.`subnet`.0.0/24. `tag` tells labs of one
    /// process apart.
    pub fn new(tag: &str, subnet: u8, command: PeerCommand) -> Result<Lab, Skip> {
        if Command::new("ip").arg("-V").output().is_err() {
            return Err(Skip(
                "iproute2's `ip` is not installed (Debian: apt-get install iproute2)".into(),
            ));
        }
        if effective_uid() != Some(0) {
            return Err(Skip(
                "network namespaces need root (`ip netns add` is privileged)".into(),
            ));
        }
        delete_stale_namespaces();
        let bridge = format!("{PREFIX}{}-{tag}-br", std::process::id());
        let _ = ip(&["netns", "del", &bridge]);
        ip(&["netns", "add", &bridge]).map_err(Skip)?;
        let lab = Lab {
            tag: tag.to_string(),
            subnet,
            bridge,
            hosts: Vec::new(),
            children: Vec::new(),
            command,
            clock: TokioClock::new(),
            requery_ms: None,
        };
        let b = lab.bridge.as_str();
        ip(&[
            "-n",
            b,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])
        .map_err(Skip)?;
        ip(&["-n", b, "link", "set", "br0", "up"]).map_err(Skip)?;
        Ok(lab)
    }

    /// Milliseconds on the lab's clock (the one its lines are stamped with).
    pub fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Host `k` (1..=254): namespace, veth `eth0` into the bridge, 10.S.0.K/24, up.
    pub fn host(&mut self, k: u8) -> Host {
        let ns = format!("{PREFIX}{}-{}-{k}", std::process::id(), self.tag);
        let ip_addr = Ipv4Addr::new(10, self.subnet, 0, k);
        let _ = ip(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns]).unwrap();
        let host = Host { ns, ip: ip_addr };
        self.hosts.push(host.clone());
        let b = self.bridge.clone();
        let port = format!("b{k}");
        ip(&[
            "-n", &b, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &host.ns,
        ])
        .unwrap();
        ip(&["-n", &b, "link", "set", &port, "master", "br0", "up"]).unwrap();
        let cidr = format!("{ip_addr}/24");
        ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"]).unwrap();
        ip(&["-n", &host.ns, "link", "set", "eth0", "up"]).unwrap();
        ip(&["-n", &host.ns, "link", "set", "lo", "up"]).unwrap();
        host
    }

    /// Sets a host's interface up or down.
    pub fn set_link(&self, host: &Host, up: bool) {
        ip(&[
            "-n",
            &host.ns,
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }

    /// A peer process in `host`: the plugin on `eth0`, advertising `key`, lost after
    /// `silence_ms`.
    pub fn peer(&mut self, host: &Host, key: KeyId, silence_ms: u64) -> Proc {
        let mut env = vec![
            (KEY_ENV, key.to_string()),
            (SILENCE_ENV, silence_ms.to_string()),
        ];
        if let Some(ms) = self.requery_ms {
            env.push((REQUERY_ENV, ms.to_string()));
        }
        self.spawn(host, "peer", &env, Some(key))
    }

    /// A process in `host` registering `count` services for made-up keys, straight with
    /// mdns-sd (`@@ flooded N` once they are registered).
    pub fn flooder(&mut self, host: &Host, count: usize) -> Proc {
        self.spawn(host, "flood", &[(COUNT_ENV, count.to_string())], None)
    }

    /// A process in `host` registering services whose TXT records are malformed, one of each
    /// kind (`@@ malformed N` once they are registered).
    pub fn malformed(&mut self, host: &Host) -> Proc {
        self.spawn(host, "malformed", &[], None)
    }

    fn spawn(
        &mut self,
        host: &Host,
        role: &str,
        env: &[(&str, String)],
        key: Option<KeyId>,
    ) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns])
            .arg(&self.command.program)
            .args(&self.command.args)
            .env(ROLE_ENV, role)
            .env(IFACE_ENV, "eth0")
            .env(IP_ENV, host.ip.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let started = self.clock.now_millis();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        let clock = self.clock.clone();
        let label = format!("{role}@{}", host.ip);
        std::thread::spawn(move || {
            // Reads to the end even when nobody listens any more, so the process never
            // writes into a closed pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("@@ ") {
                    let _ = tx.send((clock.now_millis(), rest.to_string()));
                }
            }
        });
        let child = Arc::new(Mutex::new(child));
        self.children.push(child.clone());
        Proc {
            label,
            key,
            host: host.clone(),
            started,
            child,
            stdin,
            lines,
            seen: Vec::new(),
            clock: self.clock.clone(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &self.children {
            let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.ns]);
        }
        let _ = ip(&["netns", "del", &self.bridge]);
    }
}

/// A process in the lab: its output lines (with the time they arrived) and its stdin.
pub struct Proc {
    pub label: String,
    pub key: Option<KeyId>,
    pub host: Host,
    /// When it was spawned (lab clock, ms).
    pub started: u64,
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    lines: Receiver<(u64, String)>,
    seen: Vec<(u64, String)>,
    clock: TokioClock,
}

impl Proc {
    /// Sends a command line.
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The first line at or after `since` (lab clock, ms) that `pred` accepts, waiting up to
    /// `timeout_ms` for it.
    pub fn wait_for(
        &mut self,
        since: u64,
        timeout_ms: u64,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(u64, String)> {
        let deadline = self.clock.now_millis() + timeout_ms;
        let mut checked = 0;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            if let Some(hit) = self.seen[checked..]
                .iter()
                .find(|(t, l)| *t >= since && pred(l))
            {
                return Some(hit.clone());
            }
            checked = self.seen.len();
            let now = self.clock.now_millis();
            if now >= deadline {
                return None;
            }
            match self
                .lines
                .recv_timeout(Duration::from_millis(deadline - now))
            {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    // The process is gone: what it said is all there is.
                    return self.seen[checked..]
                        .iter()
                        .find(|(t, l)| *t >= since && pred(l))
                        .cloned();
                }
            }
        }
    }

    /// Every line so far.
    pub fn lines(&mut self) -> Vec<(u64, String)> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// Waits for `found <key>`; returns when, and the address it was found at.
    pub fn wait_found(
        &mut self,
        key: &KeyId,
        since: u64,
        timeout_ms: u64,
    ) -> Option<(u64, SocketAddr)> {
        let prefix = format!("found {key} lan ");
        let (t, line) = self.wait_for(since, timeout_ms, |l| l.starts_with(&prefix))?;
        let addr = line.strip_prefix(&prefix)?.trim().parse().ok()?;
        Some((t, addr))
    }

    /// Waits for `lost <key>`.
    pub fn wait_lost(&mut self, key: &KeyId, since: u64, timeout_ms: u64) -> Option<u64> {
        let want = format!("lost {key}");
        self.wait_for(since, timeout_ms, |l| l == want)
            .map(|(t, _)| t)
    }

    /// Asks for the counters; returns `key=value` pairs of the `stats` line.
    pub fn stats(&mut self) -> Vec<(String, u64)> {
        let since = self.clock.now_millis();
        self.command("stats");
        let (_, line) = self
            .wait_for(since, 10_000, |l| l.starts_with("stats "))
            .unwrap_or_else(|| panic!("{}: no stats", self.label));
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// The key ids of the peers it holds now.
    pub fn peers(&mut self) -> Vec<String> {
        let since = self.clock.now_millis();
        self.command("peers");
        let (_, line) = self
            .wait_for(since, 10_000, |l| l.starts_with("peers"))
            .unwrap_or_else(|| panic!("{}: no peers line", self.label));
        line.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    }

    /// Kills it (SIGKILL: no goodbye).
    pub fn kill(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Value of `key` in a stats line.
pub fn stat(stats: &[(String, u64)], key: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {key} in {stats:?}"))
}

/// A key id for tests: `n` in every byte.
pub fn key(n: u8) -> KeyId {
    KeyId::from_digest([n; 32])
}

// ----------------------------------------------------------------------------------------------
// The peer process.

fn say(line: impl std::fmt::Display) {
    println!("@@ {line}");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// Runs the role in [`ROLE_ENV`] if it is set, and returns whether it did. Commands of a
/// `peer` (one per line on stdin; stdin closing is `quit`):
///
/// * `stream ADDR N` — opens a stream to ADDR, sends N as a u64 then N bytes of its own
///   pseudo-random data while reading the answer; prints `stream-out bytes=N sent=SHA
///   recv=SHA recv_bytes=M`. The other side answers with as many of its own bytes and prints
///   `stream-in …` likewise.
/// * `send ADDR N` — sends an N-byte message; prints `sent sha=SHA` (or `send-error …`); the
///   other side prints `message from=IP len=N sha=SHA`.
/// * `stats` — `stats peers=… tracked=… accepted=… malformed=… oversized=… rate_limited=…
///   banned=… evicted=… table_full=… over_limit=…`.
/// * `peers` — `peers KEY…`.
/// * `quit` — shuts the plugin down (goodbye) and prints `bye`.
///
/// Events print as `found KEY lan ADDR`, `updated KEY ADDR…`, `lost KEY`.
pub fn peer_main() -> bool {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return false;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        match role.as_str() {
            "peer" => run_peer().await,
            "flood" => run_flood().await,
            "malformed" => run_malformed().await,
            other => Err(format!("unknown role {other}")),
        }
    });
    if let Err(e) = result {
        say(format!("error {e}"));
        eprintln!("netns peer ({role}): {e}");
    }
    runtime.shutdown_timeout(Duration::from_millis(500));
    true
}

/// Lines from stdin, ending when it closes.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn run_peer() -> Result<(), String> {
    let key: KeyId = env(KEY_ENV).parse().map_err(|e| format!("{e}"))?;
    let silence: u64 = env(SILENCE_ENV).parse().map_err(|e| format!("{e}"))?;
    let mut config = MdnsConfig::new(vec![LanInterface::Name(env(IFACE_ENV))]);
    config.table.lost_after_ms = silence;
    if let Ok(ms) = std::env::var(REQUERY_ENV) {
        config.requery_ms = ms.parse().map_err(|e| format!("{e}"))?;
    }
    let plugin = Arc::new(MdnsPlugin::start(config).await.map_err(|e| e.to_string())?);
    let mut events = plugin.subscribe();
    let mut incoming = plugin.incoming().ok_or("no incoming")?;
    plugin
        .advertise(Advert::key(key, b"netns".to_vec()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    say(format!("ready {}", plugin.port()));
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Found(p)) => {
                    let at = p
                        .addresses
                        .first()
                        .map(|a| a.address.to_string())
                        .unwrap_or_default();
                    say(format!("found {} lan {at}", p.id));
                }
                Ok(Event::Updated(p)) => {
                    let at: Vec<String> =
                        p.addresses.iter().map(|a| a.address.to_string()).collect();
                    say(format!("updated {} {}", p.id, at.join(",")));
                }
                Ok(Event::Lost(id)) => say(format!("lost {id}")),
                Ok(_) => {}
                Err(lagged) => say(format!("lagged {}", lagged.0)),
            }
        }
    });
    let seed = u64::from(key.as_bytes()[0]) + 1;
    tokio::spawn(async move {
        while let Some(item) = incoming.next().await {
            match item {
                Inbound::Stream { stream, .. } => {
                    tokio::spawn(async move {
                        match answer_stream(stream, seed).await {
                            Ok(line) => say(format!("stream-in {line}")),
                            Err(e) => say(format!("stream-in-error {e}")),
                        }
                    });
                }
                Inbound::Message { from, bytes, .. } => {
                    let from = match from {
                        Address::Socket(a) => a.ip().to_string(),
                        other => other.to_string(),
                    };
                    say(format!(
                        "message from={from} len={} sha={}",
                        bytes.len(),
                        sha(&bytes)
                    ));
                }
                _ => {}
            }
        }
    });
    let mut commands = stdin_lines();
    while let Some(line) = commands.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stream", addr, n] => {
                let addr: SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
                let n: u64 = n.parse().map_err(|e| format!("{e}"))?;
                let plugin = plugin.clone();
                tokio::spawn(async move {
                    match open_stream(&plugin, addr, n, seed).await {
                        Ok(line) => say(format!("stream-out {line}")),
                        Err(e) => say(format!("stream-out-error {e}")),
                    }
                });
            }
            ["send", addr, n] => {
                let addr: SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
                let n: usize = n.parse().map_err(|e| format!("{e}"))?;
                let mut message = vec![0; n];
                Prng(seed).fill(&mut message);
                match plugin.send(&Address::Socket(addr), &message).await {
                    Ok(()) => say(format!("sent sha={}", sha(&message))),
                    Err(e) => say(format!("send-error {e}")),
                }
            }
            ["stats"] => {
                let s = plugin.stats();
                let l = plugin.lan_stats();
                say(format!(
                    "stats peers={} tracked={} accepted={} malformed={} oversized={} rate_limited={} banned={} evicted={} table_full={} over_limit={} verifications={}",
                    plugin.peers().len(),
                    l.services_tracked,
                    s.accepted,
                    s.malformed,
                    s.oversized,
                    s.rate_limited,
                    s.banned,
                    s.sources_evicted,
                    s.table_full,
                    l.services_over_limit,
                    l.verifications,
                ));
            }
            ["peers"] => {
                let ids: Vec<String> = plugin.peers().iter().map(|p| p.id.to_string()).collect();
                say(format!("peers {}", ids.join(" ")));
            }
            ["quit"] => break,
            _ => say(format!("error unknown command {line}")),
        }
    }
    plugin.shutdown().await;
    say("bye");
    Ok(())
}

/// The initiating side of the stream test.
async fn open_stream(
    plugin: &MdnsPlugin,
    to: SocketAddr,
    n: u64,
    seed: u64,
) -> Result<String, String> {
    let mut stream = plugin
        .connect(&Address::Socket(to))
        .await
        .map_err(|e| e.to_string())?;
    stream.write_u64(n).await.map_err(|e| e.to_string())?;
    exchange(stream, n, seed).await
}

/// The accepting side: as many bytes back as announced.
async fn answer_stream(
    mut stream: adhoc_wireless::BoxedStream,
    seed: u64,
) -> Result<String, String> {
    let n = stream.read_u64().await.map_err(|e| e.to_string())?;
    if n > 64 << 20 {
        return Err(format!("{n} bytes is more than this test sends"));
    }
    exchange(stream, n, seed).await
}

/// Sends `n` bytes of `seed`'s data while reading until the other side closes.
async fn exchange(
    stream: adhoc_wireless::BoxedStream,
    n: u64,
    seed: u64,
) -> Result<String, String> {
    let (mut rx, mut tx) = tokio::io::split(stream);
    let send = async move {
        let mut prng = Prng(seed);
        let mut hash = Sha256::new();
        let mut left = n;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let take = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let chunk = &mut buf[..take];
            prng.fill(chunk);
            hash.update(&*chunk);
            tx.write_all(chunk).await?;
            left -= take as u64;
        }
        tx.shutdown().await?;
        Ok::<_, std::io::Error>(hex(&hash.finalize()))
    };
    let recv = async move {
        let mut hash = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let got = rx.read(&mut buf).await?;
            if got == 0 {
                break;
            }
            hash.update(&buf[..got]);
            total += got as u64;
        }
        Ok::<_, std::io::Error>((hex(&hash.finalize()), total))
    };
    let (sent, received) = tokio::join!(send, recv);
    let sent = sent.map_err(|e| e.to_string())?;
    let (received, total) = received.map_err(|e| e.to_string())?;
    Ok(format!(
        "bytes={n} sent={sent} recv={received} recv_bytes={total}"
    ))
}

/// Registers `count` valid services for made-up keys, straight with mdns-sd.
async fn run_flood() -> Result<(), String> {
    let count: usize = env(COUNT_ENV).parse().map_err(|e| format!("{e}"))?;
    let daemon = raw_daemon()?;
    for i in 0..count {
        let mut digest = [0xf1u8; 32];
        digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let key = KeyId::from_digest(digest).to_string();
        let props = [("v", "1"), ("k", key.as_str()), ("p", "9")];
        register(&daemon, &format!("fake-{i}"), "flood.local.", &props).await?;
    }
    say(format!("flooded {count}"));
    park(daemon).await
}

/// Registers one service per kind of malformed TXT record.
async fn run_malformed() -> Result<(), String> {
    let daemon = raw_daemon()?;
    let good = key(0xee).to_string();
    let long = "A".repeat(120);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("v", "9"), ("k", &good), ("p", "9")],
        vec![("v", "1"), ("k", "not-a-key-id"), ("p", "9")],
        vec![("v", "1"), ("p", "9")],
        vec![("v", "1"), ("k", &good), ("p", "10")],
        vec![("v", "1"), ("k", &good), ("p", "9"), ("d", &long)],
    ];
    for (i, props) in cases.iter().enumerate() {
        register(&daemon, &format!("bad-{i}"), "bad.local.", props).await?;
    }
    say(format!("malformed {}", cases.len()));
    park(daemon).await
}

fn raw_daemon() -> Result<mdns_sd::ServiceDaemon, String> {
    let daemon = mdns_sd::ServiceDaemon::new().map_err(|e| e.to_string())?;
    daemon
        .disable_interface(mdns_sd::IfKind::All)
        .and_then(|()| daemon.enable_interface(mdns_sd::IfKind::Name(env(IFACE_ENV))))
        .map_err(|e| e.to_string())?;
    Ok(daemon)
}

async fn register(
    daemon: &mdns_sd::ServiceDaemon,
    name: &str,
    host: &str,
    props: &[(&str, &str)],
) -> Result<(), String> {
    let mut info =
        mdns_sd::ServiceInfo::new(SERVICE_TYPE, name, host, env(IP_ENV).as_str(), 9, props)
            .map_err(|e| e.to_string())?;
    info.set_requires_probe(false);
    let clock = TokioClock::new();
    loop {
        match daemon.register(info.clone()) {
            Ok(()) => return Ok(()),
            // Its command queue (100) is full: let it catch up.
            Err(mdns_sd::Error::Again) => clock.sleep(Duration::from_millis(5)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Keeps the services up until stdin closes or says `quit`.
async fn park(daemon: mdns_sd::ServiceDaemon) -> Result<(), String> {
    let mut commands = stdin_lines();
    while let Some(line) = commands.recv().await {
        if line.trim() == "quit" {
            break;
        }
    }
    let _ = daemon.shutdown();
    Ok(())
}

/// xorshift64*: the test data.
struct Prng(u64);

impl Prng {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
