//! CouchDB replication over a Tor onion service, in the identity crate's pinned mutual TLS, on
//! the private Tor network `scripts/test` starts (`scripts/tor-testnet`).
//!
//! One couch-sync store is served on the onion service whose address is its device's identity
//! key; another pulls a few hundred documents and an attachment through a couch-sync
//! `Connector` that knows only the httpkey URL: it dials the onion with tor-transport and wraps
//! the stream in TLS pinned to the URL's key id. A wrong key id fails closed.
//!
//! Without a network (`THALI_TOR_TESTNET` unset) each test prints a SKIPPED line and passes —
//! except under CI (`CI` set), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod couch_streams;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adhoc_wireless::{Clock, Link, TokioClock};
use couch_sync::replicate::{
    BoxStream, Connecting, Connector, Endpoint, Remote, Replication, ReplicationOptions,
    RetryPolicy, TokioClock as CouchClock,
};
use couch_sync::server::{ServerConfig, router};
use couch_sync::{Store, StoreConfig};
use public_key_identity::tls::{client_config, server_name};
use public_key_identity::{HttpKeyUrl, Identity, KeyAlgorithm, KeyId};
use tor_transport::{PrivateNetwork, ServiceOptions, TESTNET_ENV, Tor, TorConfig};

use couch_streams::{ATTACHMENT_BYTES, DOCS, OnlyKey, attachment_bytes, doc_count, seed, serve};

/// Dials `https://<onion>:PORT/...` through Tor, in TLS pinned to `pin`.
struct OnionTls {
    tor: Tor,
    tls: Arc<rustls::ClientConfig>,
}

impl Connector for OnionTls {
    fn connect(&self, scheme: &str, host: &str, port: u16) -> Connecting {
        let (tor, tls, scheme, host) = (
            self.tor.clone(),
            self.tls.clone(),
            scheme.to_owned(),
            host.to_owned(),
        );
        Box::pin(async move {
            if scheme != "https" {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{scheme}: only https over Tor"),
                ));
            }
            let stream = tor
                .connect(&host, port)
                .await
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e))?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(server_name(&host), stream)
                .await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}

async fn testnet(test: &str) -> Option<PrivateNetwork> {
    let clock = TokioClock::default();
    let Some(net) = PrivateNetwork::from_env_when_ready(&clock, Duration::from_secs(300))
        .await
        .unwrap()
    else {
        let line = format!("SKIPPED ({test}): no private Tor network ({TESTNET_ENV} is not set)");
        assert!(
            std::env::var_os("CI").is_none(),
            "{line}, and CI must run it"
        );
        eprintln!("!!!!!!!! {line}");
        println!("!!!!!!!! {line}");
        return None;
    };
    Some(net)
}

async fn tor(net: &PrivateNetwork, dir: &std::path::Path) -> Tor {
    let mut config = TorConfig::private(dir, net.clone());
    // Short attempts, retried by the tests: a circuit that stalls is given up and rebuilt.
    config.connect_timeout = Duration::from_secs(30);
    Tor::start(config).await.unwrap()
}

async fn pull(
    tor: &Tor,
    url: &HttpKeyUrl,
    pin: KeyId,
    me: &Identity,
    target: &couch_sync::Database,
) -> couch_sync::Result<couch_sync::replicate::ReplicationResult> {
    let connector = OnionTls {
        tor: tor.clone(),
        tls: Arc::new(client_config(pin, Some(me)).unwrap()),
    };
    let https = format!("https://{}:{}/notes", url.host(), url.port());
    let clock = Arc::new(CouchClock);
    let remote = Remote::new(&https, Arc::new(connector), clock.clone()).unwrap();
    let options = ReplicationOptions {
        batch_size: 100,
        retry: RetryPolicy {
            max_attempts: Some(3),
            ..RetryPolicy::default()
        },
        ..ReplicationOptions::default()
    };
    Replication::new(
        Endpoint::Remote(Arc::new(remote)),
        Endpoint::Local(target.clone()),
        options,
    )
    .with_clock(clock)
    .run()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_two_stores_over_an_onion_service_in_pinned_tls() {
    let Some(net) = testnet("tor_replication").await else {
        return;
    };
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let server_id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let client_id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let server_store = Store::open(dirs[0].path(), StoreConfig::default()).unwrap();
    let client_store = Store::open(dirs[1].path(), StoreConfig::default()).unwrap();
    let source = server_store.create_db("notes").unwrap();
    let target = client_store.create_db("notes").unwrap();
    let content = seed(&source);

    let server_tor = tor(&net, dirs[2].path()).await;
    let service = server_tor
        .host(server_id.key(), ServiceOptions::new(443))
        .await
        .unwrap();
    let failed = Arc::new(AtomicUsize::new(0));
    let app = router(
        server_store,
        ServerConfig::default(),
        Arc::new(OnlyKey(client_id.key_id())),
    );
    let _server = serve(
        Link::incoming(&server_tor).unwrap(),
        &server_id,
        app,
        failed.clone(),
    );
    // What the client knows: the URL.
    let url: HttpKeyUrl = service.url().to_string().parse().unwrap();

    let client_tor = tor(&net, dirs[3].path()).await;
    // Wait for the descriptor: the first stream that opens.
    let clock = TokioClock::default();
    let start = clock.now_millis();
    while client_tor.dial(&url).await.is_err() {
        assert!(
            clock.now_millis() - start < 180_000,
            "{url} never reachable"
        );
        clock.sleep(Duration::from_millis(500)).await;
    }

    // A wrong key id fails closed: nothing crosses.
    let impostor = Identity::generate(KeyAlgorithm::Ed25519).unwrap().key_id();
    let wrong = pull(&client_tor, &url, impostor, &client_id, &target).await;
    eprintln!("wrong pin: {:?}", wrong.as_ref().err());
    assert!(wrong.is_err());
    assert_eq!(doc_count(&target), 0);
    assert!(failed.load(Ordering::SeqCst) >= 1);

    let t = clock.now_millis();
    let result = pull(&client_tor, &url, url.key_id(), &client_id, &target)
        .await
        .unwrap();
    eprintln!(
        "{} documents and a {} KiB attachment over Tor in {} ms",
        result.progress.docs_written,
        ATTACHMENT_BYTES / 1024,
        clock.now_millis() - t
    );
    assert_eq!(result.progress.docs_written, DOCS as u64 + 1);
    assert_eq!(result.progress.doc_write_failures, 0);
    assert_eq!(doc_count(&target), DOCS + 1);
    assert_eq!(attachment_bytes(&target), content);
    let again = pull(&client_tor, &url, url.key_id(), &client_id, &target)
        .await
        .unwrap();
    assert_eq!(again.progress.docs_written, 0);
}
