//! CouchDB replication over the simulated radio, in the identity crate's pinned mutual TLS.
//!
//! Two in-process couch-sync stores on two simulated nodes in range of each other. One node
//! serves its store's router over every stream it accepts, wrapped in TLS with
//! `public_key_identity::tls::server_config` (client certificate required, and the router
//! admits only the client's key); the other discovers it from its advert (which names its key
//! id) and pulls a few hundred documents, one with an attachment, through a couch-sync
//! `Connector` that opens a simulated-radio stream and wraps it in TLS pinned to that key id.
//! Both the replicator's clock and the radio run on the world's simulated time (tokio paused),
//! so the transfer's duration is the link model's, not the machine's. A wrong pin fails closed:
//! no byte of the database crosses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod couch_streams;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adhoc_wireless::sim::{LinkParams, Mobility, Point, SimClock, SimNode, World, WorldConfig};
use adhoc_wireless::{Address, Advert, Discovery, Event, Link, PeerId, Plugin};
use couch_sync::replicate::{
    BoxStream, Connecting, Connector, Endpoint, Remote, Replication, ReplicationOptions,
    RetryPolicy,
};
use couch_sync::server::{ServerConfig, router};
use couch_sync::{Database, Store, StoreConfig};
use public_key_identity::tls::{client_config, server_name};
use public_key_identity::{Identity, KeyAlgorithm, KeyId};
use serde_json::{Value, json};

use couch_streams::{ATTACHMENT_BYTES, DOCS, OnlyKey, attachment_bytes, doc_count, seed, serve};

/// The simulated wall clock starts on 2026-01-01 (couch-sync's clock counts from the epoch).
const EPOCH_MS: u64 = 1_767_225_600_000;

/// couch-sync's clock on the world's time.
struct WorldClock(SimClock);

impl couch_sync::replicate::Clock for WorldClock {
    fn now_millis(&self) -> u64 {
        EPOCH_MS + adhoc_wireless::Clock::now_millis(&self.0)
    }

    fn sleep(&self, duration: Duration) -> couch_sync::replicate::Sleep {
        adhoc_wireless::Clock::sleep(&self.0, duration)
    }
}

/// Dials `https://sim-N/...` as a simulated-radio stream to node N, in pinned mutual TLS.
struct SimTls {
    node: SimNode,
    tls: Arc<rustls::ClientConfig>,
}

impl Connector for SimTls {
    fn connect(&self, scheme: &str, host: &str, _port: u16) -> Connecting {
        let (node, tls, scheme, host) = (
            self.node.clone(),
            self.tls.clone(),
            scheme.to_owned(),
            host.to_owned(),
        );
        Box::pin(async move {
            let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
            if scheme != "https" {
                return Err(bad(format!("{scheme}: only https over the radio")));
            }
            let n: u32 = host
                .strip_prefix("sim-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| bad(format!("{host} is not a simulated node")))?;
            let stream = node
                .connect(&Address::Sim(n))
                .await
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e))?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(server_name(&host), stream)
                .await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}

struct Scene {
    world: World,
    client: SimNode,
    server_key: KeyId,
    client_identity: Identity,
    source: Database,
    target: Database,
    content: Vec<u8>,
    failed_handshakes: Arc<AtomicUsize>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _server: tokio::task::JoinHandle<()>,
}

/// Two nodes 20 m apart on a 250 kB/s, 5 ms link; the server advertises its key and serves
/// its store; the world runs on tokio's paused clock.
async fn scene() -> Scene {
    let mut config = WorldConfig::seeded(2026);
    config.link = LinkParams::new(30.0, 250_000, Duration::from_millis(5), 0.0);
    let world = World::new(config).unwrap();
    let client = world
        .add_node(Mobility::Static(Point::new(0.0, 0.0)))
        .unwrap();
    let server = world
        .add_node(Mobility::Static(Point::new(20.0, 0.0)))
        .unwrap();
    tokio::spawn(world.drive());

    let server_identity = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let client_identity = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server_store = Store::open(d1.path(), StoreConfig::default()).unwrap();
    let client_store = Store::open(d2.path(), StoreConfig::default()).unwrap();
    let source = server_store.create_db("notes").unwrap();
    let target = client_store.create_db("notes").unwrap();
    let content = seed(&source);

    let app = router(
        server_store,
        ServerConfig::default(),
        Arc::new(OnlyKey(client_identity.key_id())),
    );
    let failed_handshakes = Arc::new(AtomicUsize::new(0));
    let server_task = serve(
        server.incoming().unwrap(),
        &server_identity,
        app,
        failed_handshakes.clone(),
    );
    server
        .advertise(Advert::key(server_identity.key_id(), b"couchdb".to_vec()).unwrap())
        .unwrap();

    Scene {
        world,
        client,
        server_key: server_identity.key_id(),
        client_identity,
        source,
        target,
        content,
        failed_handshakes,
        _dirs: (d1, d2),
        _server: server_task,
    }
}

/// Pulls `notes` from node 1 into the scene's target, pinning `pin`.
async fn pull(
    scene: &Scene,
    pin: KeyId,
) -> couch_sync::Result<couch_sync::replicate::ReplicationResult> {
    let clock = Arc::new(WorldClock(scene.world.clock()));
    let connector = SimTls {
        node: scene.client.clone(),
        tls: Arc::new(client_config(pin, Some(&scene.client_identity)).unwrap()),
    };
    let remote = Remote::new("https://sim-1/notes", Arc::new(connector), clock.clone()).unwrap();
    let options = ReplicationOptions {
        batch_size: 100,
        jitter_seed: Some(7),
        retry: RetryPolicy {
            max_attempts: Some(3),
            ..RetryPolicy::default()
        },
        ..ReplicationOptions::default()
    };
    Replication::new(
        Endpoint::Remote(Arc::new(remote)),
        Endpoint::Local(scene.target.clone()),
        options,
    )
    .with_clock(clock)
    .run()
    .await
}

#[tokio::test(start_paused = true)]
async fn replicate_two_stores_over_a_simulated_radio_stream_in_pinned_tls() {
    let scene = scene().await;

    // The client learns the server's key id from the advert it hears: that is the pin.
    let mut events = scene.client.subscribe();
    let found = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Event::Found(peer) = found else {
        panic!("{found:?}")
    };
    assert_eq!(peer.id, PeerId::Key(scene.server_key));
    assert_eq!(peer.advert.data, b"couchdb");
    assert_eq!(peer.cheapest().unwrap().address, Address::Sim(1));
    let pin = *peer.id.key_id().unwrap();

    let started = scene.world.now();
    let result = pull(&scene, pin).await.unwrap();
    let took = scene.world.now().since(started);
    let stats = scene.world.stats();
    eprintln!(
        "{} documents and a {} KiB attachment in {:.2} s simulated; {} stream bytes, {} streams",
        result.progress.docs_written,
        ATTACHMENT_BYTES / 1024,
        took.as_secs_f64(),
        stats.stream_bytes,
        stats.streams_opened,
    );
    assert_eq!(result.progress.docs_written, DOCS as u64 + 1);
    assert_eq!(result.progress.doc_write_failures, 0);
    assert_eq!(doc_count(&scene.target), DOCS + 1);
    for i in [0, 1, DOCS / 2, DOCS - 1] {
        let doc = scene
            .target
            .get(&format!("doc-{i:04}"), &Default::default())
            .unwrap();
        assert_eq!(doc.json["n"], json!(i));
        let original = scene
            .source
            .get(&format!("doc-{i:04}"), &Default::default())
            .unwrap();
        assert_eq!(doc.json["_rev"], original.json["_rev"]);
    }
    assert_eq!(attachment_bytes(&scene.target), scene.content);
    assert_eq!(
        scene
            .target
            .attachment("with-attachment", "blob.bin", None)
            .unwrap()
            .1
            .digest,
        scene
            .source
            .attachment("with-attachment", "blob.bin", None)
            .unwrap()
            .1
            .digest
    );
    assert_eq!(scene.failed_handshakes.load(Ordering::SeqCst), 0);
    // The bytes really crossed the radio: at least the attachment and the documents, at
    // 250 kB/s.
    assert!(stats.stream_bytes > (ATTACHMENT_BYTES + DOCS * 50) as u64);
    assert!(took > Duration::from_millis(400), "{took:?}");

    // A second run has nothing to do.
    let again = pull(&scene, pin).await.unwrap();
    assert_eq!(again.progress.docs_written, 0);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_pin_fails_closed() {
    let scene = scene().await;
    let impostor = Identity::generate(KeyAlgorithm::Ed25519).unwrap().key_id();
    assert_ne!(impostor, scene.server_key);
    let error = tokio::time::timeout(Duration::from_secs(3600), pull(&scene, impostor))
        .await
        .unwrap()
        .unwrap_err();
    eprintln!("wrong pin: {error}");
    assert_eq!(doc_count(&scene.target), 0, "nothing crossed");
    // The server saw the handshakes fail (the client aborted on the certificate).
    assert!(scene.failed_handshakes.load(Ordering::SeqCst) >= 1);
    let value: Value = json!(scene.world.stats().stream_bytes);
    assert!(value.as_u64().unwrap() < 10_000, "only handshakes: {value}");
}
