//! Store-and-forward through a relay, end to end: real couch-sync stores on temporary
//! directories, real mutual TLS, real links — the simulated radio on tokio's paused clock (so
//! minutes of walking pass in milliseconds), and TCP on 127.0.0.1 — plus a property test of
//! the node's session protocol over many random meetings, without the network.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adhoc_wireless::beacon::BeaconKey;
use adhoc_wireless::sim::{
    LinkParams, Mobility, Point, SimClock, SimNode, SimTime, World, WorldConfig,
};
use adhoc_wireless::{Address, BoxedStream, Inbound, Incoming, Link, Transport};
use couch_sync::{
    AllDocsQuery, AllDocsRow, Database, DocUpdate, GetOptions, ParseOptions, Store, StoreConfig,
};
use high_latency_mesh::exchange::{Exchange, ExchangeConfig};
use high_latency_mesh::node::{Node, NodeConfig, OfferItem, OfferList, OfferReason};
use high_latency_mesh::routing::Mode;
use high_latency_mesh::seal::{self, MessageId};
use proptest::prelude::*;
use public_key_identity::{Identity, KeyAlgorithm, KeyId, KeyPair};

/// The simulated wall clock starts on 2026-01-01.
const EPOCH_MS: u64 = 1_767_225_600_000;
const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

/// couch-sync's clock on the world's time.
struct WorldClock(SimClock);

impl couch_sync::clock::Clock for WorldClock {
    fn now_millis(&self) -> u64 {
        EPOCH_MS + adhoc_wireless::Clock::now_millis(&self.0)
    }

    fn sleep(&self, duration: Duration) -> couch_sync::clock::Sleep {
        adhoc_wireless::Clock::sleep(&self.0, duration)
    }
}

fn copy_key(key: &KeyPair) -> KeyPair {
    KeyPair::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap()
}

/// A node with its identity, store and exchange.
struct Device {
    exchange: Exchange,
    key_id: KeyId,
    beacon: BeaconKey,
    spki: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn device(mode: Mode, quota: u64, clock: Arc<dyn couch_sync::clock::Clock>) -> Device {
    let identity = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let db = store.create_db("mesh").unwrap();
    let mut config = NodeConfig::default();
    config.mode = mode;
    config.quota_bytes = quota;
    let node = Node::open(db, copy_key(identity.key()), config).unwrap();
    let (key_id, spki) = (identity.key_id(), identity.key().spki_der().to_vec());
    let beacon = BeaconKey::from_keypair(identity.key()).unwrap();
    let exchange = Exchange::new(node, store, identity, clock, ExchangeConfig::default()).unwrap();
    Device {
        exchange,
        key_id,
        beacon,
        spki,
        _dir: dir,
    }
}

impl Device {
    fn send(&self, to: &Device, payload: &[u8], now: u64, ttl: u64) -> MessageId {
        self.exchange
            .with_node(|n| n.send(&to.spki, payload, now, ttl))
            .unwrap()
    }

    fn holds(&self, id: &MessageId) -> bool {
        self.exchange.with_node(|n| n.holds(id))
    }

    fn stored_bytes(&self) -> u64 {
        self.exchange.with_node(|n| n.stored_bytes())
    }

    fn db(&self) -> Database {
        self.exchange.with_node(|n| n.database().clone())
    }
}

/// Every live document of a database, as JSON text.
fn dump(db: &Database) -> String {
    let all = db
        .all_docs(
            &AllDocsQuery {
                include_docs: true,
                ..AllDocsQuery::default()
            },
            None,
        )
        .unwrap();
    let mut out = String::new();
    for row in all.rows {
        if let AllDocsRow::Doc { doc: Some(doc), .. } = row {
            out.push_str(&doc.to_string());
        }
    }
    out
}

struct Sim {
    world: World,
    clock: Arc<WorldClock>,
}

fn sim() -> Sim {
    let mut config = WorldConfig::seeded(2026);
    config.link = LinkParams::new(30.0, 250_000, Duration::from_millis(5), 0.0);
    let world = World::new(config).unwrap();
    tokio::spawn(world.drive());
    let clock = Arc::new(WorldClock(world.clock()));
    Sim { world, clock }
}

impl Sim {
    fn now(&self) -> u64 {
        couch_sync::clock::Clock::now_millis(&*self.clock)
    }

    fn place(&self, device: &Device, mobility: Mobility) -> SimNode {
        let node = self.world.add_node(mobility).unwrap();
        let exchange = device.exchange.clone();
        let incoming = node.incoming().unwrap();
        tokio::spawn(async move { exchange.serve(incoming).await });
        node
    }

    async fn wait(&self, ms: u64) {
        adhoc_wireless::Clock::sleep(&self.world.clock(), Duration::from_millis(ms)).await;
    }

    async fn wait_for_contact(&self, a: &SimNode, b: &SimNode) {
        for _ in 0..10_000 {
            if self.world.in_contact(a.id(), b.id()) {
                return;
            }
            self.wait(100).await;
        }
        panic!("{} and {} never met", a.id(), b.id());
    }
}

fn at(x: f64) -> Mobility {
    Mobility::Static(Point::new(x, 0.0))
}

/// `from` meets `to`: one session both ways, initiated by `from`.
async fn session(from: &Device, from_node: &SimNode, to: &Device, to_node: &SimNode) {
    let link: Arc<dyn Link> = Arc::new(from_node.clone());
    let report = from
        .exchange
        .session(link, &to_node.address(), to.key_id)
        .await
        .unwrap();
    assert_eq!(report.pull_error, None, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_relay_carries_a_message_it_cannot_read_to_a_node_out_of_range() {
    let sim = sim();
    let mode = Mode::SprayAndWait { copies: 2 };
    let a = device(mode.clone(), 1 << 20, sim.clock.clone());
    let b = device(mode.clone(), 1 << 20, sim.clock.clone());
    let c = device(mode, 1 << 20, sim.clock.clone());
    // A and C are a kilometre apart; B starts next to A and walks to C from minute 1 to 3.
    let a_node = sim.place(&a, at(0.0));
    let c_node = sim.place(&c, at(1000.0));
    let b_node = sim.place(
        &b,
        Mobility::Path(vec![
            (SimTime::from_secs(0), Point::new(10.0, 0.0)),
            (SimTime::from_secs(60), Point::new(10.0, 0.0)),
            (SimTime::from_secs(180), Point::new(990.0, 0.0)),
        ]),
    );
    let payload = b"a secret for C only: the well behind the mill";
    let id = a.send(&c, payload, sim.now(), HOUR);

    sim.wait_for_contact(&a_node, &b_node).await;
    session(&b, &b_node, &a, &a_node).await;
    assert!(b.holds(&id));
    assert!(!sim.world.in_contact(a_node.id(), c_node.id()));

    // B carries ciphertext only: it cannot open the message, and the payload is nowhere in
    // its database.
    let sealed = b.exchange.with_node(|n| n.sealed(&id)).unwrap().unwrap();
    assert!(seal::open(&b.beacon, &sealed, sim.now()).is_err());
    let text = dump(&b.db());
    assert!(text.contains(&id.to_hex()));
    let needle = String::from_utf8_lossy(payload).into_owned();
    assert!(!text.contains(&needle));
    assert!(!text.contains(&data_encoding::BASE64.encode(payload)[..40]));

    sim.wait_for_contact(&b_node, &c_node).await;
    assert!(!sim.world.in_contact(a_node.id(), c_node.id()));
    assert!(sim.world.now() > SimTime::from_secs(60));
    // B starts this one: C pulls from B over reverse streams.
    session(&b, &b_node, &c, &c_node).await;
    let delivered = c.exchange.with_node(|n| n.take_delivered()).unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].payload, payload);
    assert_eq!(delivered[0].sender, a.key_id);
    assert!(!b.holds(&id), "B handed its single copy to the destination");
    // They meet again: nothing is delivered twice.
    session(&c, &c_node, &b, &b_node).await;
    assert!(
        c.exchange
            .with_node(|n| n.take_delivered())
            .unwrap()
            .is_empty()
    );
    assert!(c.exchange.with_node(|n| n.was_delivered(&id)));
}

#[tokio::test(start_paused = true)]
async fn a_flooding_stranger_never_breaks_the_quota_nor_evicts_the_outbox() {
    let sim = sim();
    let quota = 12_000;
    let b = device(Mode::Epidemic, quota, sim.clock.clone());
    let stranger = device(Mode::Epidemic, 1 << 20, sim.clock.clone());
    let somebody = device(Mode::Epidemic, 1 << 20, sim.clock.clone());
    let b_node = sim.place(&b, at(0.0));
    let s_node = sim.place(&stranger, at(10.0));
    let outbox: Vec<MessageId> = (0..3)
        .map(|i| b.send(&somebody, &[i; 2000], sim.now(), HOUR))
        .collect();
    for round in 0..3u8 {
        for i in 0..8u8 {
            stranger.send(&somebody, &[round * 8 + i; 2000], sim.now(), HOUR);
        }
        sim.wait(1000).await;
        if round % 2 == 0 {
            session(&stranger, &s_node, &b, &b_node).await;
        } else {
            session(&b, &b_node, &stranger, &s_node).await;
        }
        assert!(b.stored_bytes() <= quota, "{}", b.stored_bytes());
        for id in &outbox {
            assert!(b.holds(id));
        }
    }
    // B relays what fits beside its outbox.
    let relayed = b.exchange.with_node(|n| n.message_ids().len()) - outbox.len();
    assert!(relayed >= 1, "{relayed}");

    // Offers of huge messages, by hand: none fits beside the outbox.
    let items = (0..200u32)
        .map(|i| OfferItem {
            id: format!("{i:064x}"),
            size: 1 << 20,
            expires_ms: sim.now() + HOUR,
            give: 1,
            keep: 0,
            hops: 0,
            focus_hops: 0,
            reason: OfferReason::Flood,
        })
        .collect();
    let accept = b
        .exchange
        .with_node(|n| n.accept(&OfferList { items }, sim.now()))
        .unwrap();
    assert!(accept.ids.is_empty());
    assert!(b.stored_bytes() <= quota);
    for id in &outbox {
        assert!(b.holds(id));
    }
}

#[tokio::test(start_paused = true)]
async fn expiry_clears_the_relays_copy() {
    let sim = sim();
    let a = device(Mode::Epidemic, 1 << 20, sim.clock.clone());
    let b = device(Mode::Epidemic, 1 << 20, sim.clock.clone());
    let c = device(Mode::Epidemic, 1 << 20, sim.clock.clone());
    let a_node = sim.place(&a, at(0.0));
    let b_node = sim.place(&b, at(10.0));
    let id = a.send(&c, b"soon stale", sim.now(), MINUTE);
    sim.wait(1000).await;
    session(&a, &a_node, &b, &b_node).await;
    assert!(b.holds(&id));
    sim.wait(MINUTE).await;
    // Any session starts by dropping what expired (on both sides).
    session(&a, &a_node, &b, &b_node).await;
    assert!(!b.holds(&id) && !a.holds(&id));
    assert_eq!(b.stored_bytes(), 0);
    assert!(!dump(&b.db()).contains(&id.to_hex()));
}

#[tokio::test(start_paused = true)]
async fn the_recipients_receipt_carried_back_clears_the_relays_copy() {
    let sim = sim();
    let a = device(Mode::Epidemic, 1 << 20, sim.clock.clone());
    let b = device(Mode::Epidemic, 1 << 20, sim.clock.clone());
    let c = device(Mode::Epidemic, 1 << 20, sim.clock.clone());
    let a_node = sim.place(&a, at(0.0));
    let b_node = sim.place(&b, at(20.0));
    let c_node = sim.place(&c, at(40.0));
    let id = a.send(&c, b"thanks for the fish", sim.now(), HOUR);
    sim.wait(1000).await;
    session(&b, &b_node, &a, &a_node).await;
    session(&b, &b_node, &c, &c_node).await;
    assert_eq!(
        c.exchange.with_node(|n| n.take_delivered()).unwrap().len(),
        1
    );
    assert!(
        b.holds(&id),
        "flood keeps its copy until it learns of the delivery"
    );
    // Later, C meets B again: its hello carries the receipt.
    sim.wait(MINUTE).await;
    session(&c, &c_node, &b, &b_node).await;
    assert!(!b.holds(&id));
    let receipts = b.exchange.with_node(|n| n.receipts());
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].id, id);
    // B carries the receipt on to A, which drops the original.
    session(&b, &b_node, &a, &a_node).await;
    assert!(!a.holds(&id));
}

/// TCP on 127.0.0.1 as an adhoc-wireless link: every connection is a stream.
struct Loopback {
    incoming: std::sync::Mutex<Option<Incoming>>,
}

impl Loopback {
    async fn bind() -> (Arc<Loopback>, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, incoming) = Incoming::channel(16);
        tokio::spawn(async move {
            while let Ok((tcp, from)) = listener.accept().await {
                let stream: BoxedStream = Box::new(tcp);
                let inbound = Inbound::Stream {
                    transport: Transport::Lan,
                    from: Address::Socket(from),
                    stream,
                };
                if tx.send(inbound).await.is_err() {
                    break;
                }
            }
        });
        let link = Loopback {
            incoming: std::sync::Mutex::new(Some(incoming)),
        };
        (Arc::new(link), addr)
    }
}

#[async_trait::async_trait]
impl Link for Loopback {
    fn transport(&self) -> Transport {
        Transport::Lan
    }

    async fn send(&self, _: &Address, _: &[u8]) -> adhoc_wireless::Result<()> {
        Ok(())
    }

    async fn connect(&self, to: &Address) -> adhoc_wireless::Result<BoxedStream> {
        let Address::Socket(addr) = to else {
            panic!("not a socket address: {to}")
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Ok(Box::new(tcp))
    }

    fn incoming(&self) -> Option<Incoming> {
        self.incoming.lock().unwrap().take()
    }
}

#[tokio::test]
async fn the_same_hop_over_tcp_on_loopback() {
    let clock: Arc<dyn couch_sync::clock::Clock> = Arc::new(couch_sync::clock::TokioClock);
    let now = || couch_sync::clock::Clock::now_millis(&couch_sync::clock::TokioClock);
    let a = device(Mode::Epidemic, 1 << 20, clock.clone());
    let b = device(Mode::Epidemic, 1 << 20, clock.clone());
    let c = device(Mode::Epidemic, 1 << 20, clock.clone());
    let (a_link, a_addr) = Loopback::bind().await;
    let (b_link, b_addr) = Loopback::bind().await;
    for (dev, link) in [(&a, &a_link), (&b, &b_link)] {
        let (exchange, incoming) = (dev.exchange.clone(), link.incoming().unwrap());
        tokio::spawn(async move { exchange.serve(incoming).await });
    }
    // A starts the session: B pulls from A over reverse streams.
    let to_c = a.send(&c, b"over tcp, one way", now(), HOUR);
    let report = a
        .exchange
        .session(a_link.clone(), &Address::Socket(b_addr), b.key_id)
        .await
        .unwrap();
    assert_eq!((report.offered, report.sent), (1, 1), "{report:?}");
    assert!(b.holds(&to_c));
    // B starts one: it pulls from A's server directly.
    let back = a.send(&c, b"over tcp, the other way", now(), HOUR);
    let report = b
        .exchange
        .session(b_link.clone(), &Address::Socket(a_addr), a.key_id)
        .await
        .unwrap();
    assert_eq!((report.accepted, report.received), (1, 1), "{report:?}");
    assert!(b.holds(&back));
    // A wrong pin fails closed.
    let impostor = Identity::generate(KeyAlgorithm::Ed25519).unwrap().key_id();
    assert!(
        b.exchange
            .session(b_link, &Address::Socket(a_addr), impostor)
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------
// Sans-IO: many random meetings through the node's methods, on real stores.

/// What a replication does: copies the winning revision (with its history) of each id.
fn copy_docs(from: &Database, to: &Database, ids: &[String]) {
    let dir = std::env::temp_dir();
    for id in ids {
        let opts = GetOptions {
            revs: true,
            ..GetOptions::default()
        };
        let Ok(doc) = from.get(&format!("m-{id}"), &opts) else {
            continue;
        };
        let parse = ParseOptions {
            compress: false,
            tmp_dir: &dir,
        };
        to.put(None, DocUpdate::from_json(doc.json, parse).unwrap(), false)
            .unwrap();
    }
}

fn meet(a: &mut Node, b: &mut Node, now: u64) {
    let (ha, hb) = (a.hello(now), b.hello(now));
    let a_offers = a.offers_for(&hb, now).unwrap();
    let b_offers = b.offers_for(&ha, now).unwrap();
    let b_accepts = b.accept(&a_offers, now).unwrap();
    let a_accepts = a.accept(&b_offers, now).unwrap();
    copy_docs(a.database(), b.database(), &b_accepts.ids);
    copy_docs(b.database(), a.database(), &a_accepts.ids);
    let b_got = b.on_pulled(&a_offers, &b_accepts, now).unwrap();
    let a_got = a.on_pulled(&b_offers, &a_accepts, now).unwrap();
    a.on_received(&a_offers, &b_got, now).unwrap();
    b.on_received(&b_offers, &a_got, now).unwrap();
    for n in [a, b] {
        assert!(n.stored_bytes() <= n.config().quota_bytes);
    }
}

fn arb_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Epidemic),
        (1u16..4).prop_map(|copies| Mode::SprayAndWait { copies }),
        Just(Mode::Directed(Default::default())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Messages between random nodes, random meetings, then a sweep along the line and back
    /// (a path in time from every node to every other): in flood mode every message arrives
    /// exactly once; in every mode nothing arrives twice or at the wrong node.
    #[test]
    fn nothing_is_delivered_twice_and_flood_loses_nothing(
        nodes in 3usize..6,
        messages in prop::collection::vec((0usize..6, 0usize..6, 1usize..400), 1..7),
        contacts in prop::collection::vec((0usize..6, 0usize..6), 0..10),
        mode in arb_mode(),
    ) {
        let dirs: Vec<tempfile::TempDir> = (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut ns: Vec<Node> = dirs
            .iter()
            .map(|dir| {
                let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
                let mut config = NodeConfig::default();
                config.mode = mode.clone();
                config.quota_bytes = 1 << 20;
                let key = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
                Node::open(store.create_db("mesh").unwrap(), key, config).unwrap()
            })
            .collect();
        let mut now = EPOCH_MS;
        let mut sent: BTreeMap<MessageId, (usize, Vec<u8>)> = BTreeMap::new();
        for (i, (from, to, len)) in messages.into_iter().enumerate() {
            let (from, to) = (from % nodes, to % nodes);
            if from == to {
                continue;
            }
            let spki = ns[to].spki_der().to_vec();
            let payload = vec![u8::try_from(i).unwrap(); len];
            let id = ns[from].send(&spki, &payload, now, HOUR).unwrap();
            sent.insert(id, (to, payload));
        }
        let sweep = (0..nodes - 1).map(|i| (i, i + 1)).chain((0..nodes - 1).rev().map(|i| (i + 1, i)));
        let pairs: Vec<(usize, usize)> = contacts
            .into_iter()
            .map(|(a, b)| (a % nodes, b % nodes))
            .filter(|(a, b)| a != b)
            .chain(sweep)
            .collect();
        let mut got: BTreeMap<MessageId, usize> = BTreeMap::new();
        for (a, b) in pairs {
            now += MINUTE;
            let (lo, hi) = (a.min(b), a.max(b));
            let (left, right) = ns.split_at_mut(hi);
            if a < b {
                meet(&mut left[lo], &mut right[0], now);
            } else {
                meet(&mut right[0], &mut left[lo], now);
            }
            for (n, node) in ns.iter_mut().enumerate() {
                for d in node.take_delivered().unwrap() {
                    let (to, payload) = &sent[&d.id];
                    prop_assert_eq!(*to, n, "delivered to the wrong node");
                    prop_assert_eq!(&d.payload, payload);
                    *got.entry(d.id).or_default() += 1;
                }
            }
        }
        prop_assert!(got.values().all(|&n| n == 1), "{:?}", got);
        if mode == Mode::Epidemic {
            prop_assert_eq!(got.len(), sent.len());
        }
    }
}
