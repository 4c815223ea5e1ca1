//! Onion services on a private Tor network (`scripts/tor-testnet`, started by `scripts/test`):
//! a service whose address is an identity key, reached by its httpkey URL alone in pinned
//! mutual TLS; a wrong key id failing closed; standalone messages; restricted discovery; a
//! restarted service at the same address.
//!
//! Without a network (`THALI_TOR_TESTNET` unset) each test prints a SKIPPED line and passes —
//! except under CI (`CI` set), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use adhoc_wireless::{Address, Clock, Link, TokioClock};
use public_key_identity::{Host, HttpKeyUrl, Identity, KeyAlgorithm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tor_transport::{AuthorizedClient, ServiceOptions, ServiceState, Tor};

use support::{first_line, now_ms, pinned_tls, testnet, tls_echo, tor};

const PORT: u16 = 443;

/// `fut`, failing the test with `what` if it takes over two minutes.
async fn step<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let t = now_ms();
    let out = tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within 120 s"));
    eprintln!("{what}: {} ms", now_ms() - t);
    out
}

/// Connects to `url` until it works (a fresh service needs its descriptor published first),
/// for at most `within`; returns the stream and how long it took.
async fn connect_until_reachable(
    client: &Tor,
    url: &HttpKeyUrl,
    within: Duration,
) -> (adhoc_wireless::BoxedStream, u64) {
    let start = now_ms();
    let mut last = String::new();
    while now_ms() - start < within.as_millis() as u64 {
        match client.dial(url).await {
            Ok(s) => return (s, now_ms() - start),
            Err(e) => {
                last = e.to_string();
                TokioClock::default()
                    .sleep(Duration::from_millis(500))
                    .await;
            }
        }
    }
    panic!("{url} not reachable within {within:?}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_from_an_identity_key_is_reached_by_its_httpkey_url() {
    let Some(net) = testnet("onion::reached_by_url").await else {
        return;
    };
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server_id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let client_id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();

    let server = tor(&net, dirs.0.path()).await;
    let t0 = now_ms();
    server.bootstrapped().await.unwrap();
    eprintln!("server bootstrapped in {} ms", now_ms() - t0);
    assert!(server.status().bootstrap.ready);
    let mut events = server.events();
    let service = server
        .host(server_id.key(), ServiceOptions::new(PORT))
        .await
        .unwrap();
    let launched = now_ms();

    // One key, two names: the onion is the one public-key-identity derives from the key.
    let url = service.url().clone();
    let ed = server_id.key().ed25519_public_key().unwrap();
    assert_eq!(url.host(), &Host::onion_from_ed25519(&ed));
    assert_eq!(url.key_id(), server_id.key_id());
    assert_eq!(url.port(), PORT);
    assert_eq!(service.onion(), url.host().to_string());

    let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let _echo = tls_echo(Link::incoming(&server).unwrap(), &server_id, messages_tx);

    // The client knows nothing but the URL's text.
    let text = url.to_string();
    let client = tor(&net, dirs.1.path()).await;
    let parsed: HttpKeyUrl = text.parse().unwrap();
    let (stream, waited) =
        connect_until_reachable(&client, &parsed, Duration::from_secs(180)).await;
    eprintln!(
        "reachable {} ms after launch ({waited} ms of connect attempts)",
        now_ms() - launched
    );
    let mut tls = step(
        "TLS handshake",
        pinned_tls(stream, parsed.key_id(), &client_id, service.onion()),
    )
    .await
    .unwrap();
    // The server saw the client's key.
    assert_eq!(
        step("first line", first_line(&mut tls)).await,
        client_id.key_id().to_string()
    );
    // 1 MiB there and back, intact.
    let data: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i * 7 + i / 255) as u8)
        .collect();
    let (mut r, mut w) = tokio::io::split(tls);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
            w.flush().await.unwrap();
            w
        })
    };
    let mut back = vec![0u8; data.len()];
    let t = now_ms();
    step("1 MiB echo", r.read_exact(&mut back)).await.unwrap();
    eprintln!("1 MiB each way in {} ms", now_ms() - t);
    assert!(back == data, "the echo differs");
    drop(writer.await.unwrap());

    // A wrong key id fails closed: the handshake aborts, nothing is read.
    let impostor = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let wrong = HttpKeyUrl::new(url.host().clone(), PORT, impostor.key_id());
    let stream = client.dial(&wrong).await.unwrap();
    let err = pinned_tls(stream, wrong.key_id(), &client_id, service.onion())
        .await
        .err()
        .expect("a wrong pin must fail");
    eprintln!("wrong key id: {err}");
    assert!(
        err.to_string().contains(&impostor.key_id().to_string())
            || err.to_string().to_lowercase().contains("pin"),
        "{err}"
    );

    // A standalone message arrives; a port nobody serves is refused.
    let to = Address::Onion(service.onion().to_owned(), PORT);
    Link::send(&client, &to, b"hello over tor").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"hello over tor");
    assert!(
        Link::send(
            &client,
            &to,
            &vec![0; adhoc_wireless::MAX_MESSAGE_BYTES + 1]
        )
        .await
        .is_err()
    );
    assert!(client.connect(service.onion(), 8080).await.is_err());

    // Its life came as events: launched, then publishing or published (arti's own reading of
    // reachability swings on this network's short consensus intervals: the test above is the
    // real one).
    let mut states = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let tor_transport::TorEvent::Service(s) = e {
            assert_eq!(s.onion, service.onion());
            states.push(s.state);
        }
    }
    eprintln!("service states seen: {states:?}");
    assert!(!states.is_empty());

    // The status page's view.
    let status = server.status();
    assert!(status.bootstrap.ready);
    let s = &status.services[0];
    assert_eq!(s.onion, service.onion());
    assert!(s.streams_accepted >= 3, "{s:?}");
    assert!(s.streams_refused >= 1, "{s:?}");
    assert_ne!(s.state, ServiceState::Shutdown);
    service.shutdown();
    assert_eq!(server.status().services[0].state, ServiceState::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_discovery_admits_only_authorised_clients() {
    let Some(net) = testnet("onion::restricted_discovery").await else {
        return;
    };
    let dirs = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let server_id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let friend = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let stranger = Identity::generate(KeyAlgorithm::Ed25519).unwrap();

    let server = tor(&net, dirs.0.path()).await;
    let mut options = ServiceOptions::new(PORT);
    options.authorized_clients = Some(vec![
        AuthorizedClient::from_spki_der(friend.key().spki_der()).unwrap(),
    ]);
    let service = server.host(server_id.key(), options).await.unwrap();
    assert_eq!(server.status().services[0].authorized_clients, Some(1));
    let (tx, _messages) = tokio::sync::mpsc::unbounded_channel();
    let _echo = tls_echo(Link::incoming(&server).unwrap(), &server_id, tx);
    let url = service.url().clone();

    // The friend, with the discovery key derived from its identity: in.
    let friend_tor = tor(&net, dirs.1.path()).await;
    friend_tor
        .authorize_with(service.onion(), friend.key())
        .unwrap();
    let (stream, waited) =
        connect_until_reachable(&friend_tor, &url, Duration::from_secs(180)).await;
    eprintln!("the authorised client got in after {waited} ms");
    let mut tls = pinned_tls(stream, url.key_id(), &friend, service.onion())
        .await
        .unwrap();
    assert_eq!(first_line(&mut tls).await, friend.key_id().to_string());

    // Someone with no key, then with a key the service does not list: the descriptor does not
    // open for them, so there is nothing to connect to.
    // (Given up after 30 s: arti tries every directory holding the descriptor before it
    // says the descriptor does not open.)
    let mut config = tor_transport::TorConfig::private(dirs.2.path(), net.clone());
    config.connect_timeout = Duration::from_secs(30);
    let stranger_tor = Tor::start(config).await.unwrap();
    let t = now_ms();
    let err = stranger_tor
        .dial(&url)
        .await
        .err()
        .expect("no key: refused");
    eprintln!("no discovery key, after {} ms: {err}", now_ms() - t);
    let t = now_ms();
    stranger_tor
        .authorize_with(service.onion(), stranger.key())
        .unwrap();
    let err = stranger_tor
        .dial(&url)
        .await
        .err()
        .expect("wrong key: refused");
    eprintln!(
        "an unlisted discovery key, after {} ms: {err}",
        now_ms() - t
    );
    assert_eq!(
        err.kind(),
        tor_transport::ErrorKind::Transient,
        "unreachable, as a service that does not exist: {err}"
    );
    // The friend still gets in.
    friend_tor.dial(&url).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_keeps_its_address() {
    let Some(net) = testnet("onion::restart").await else {
        return;
    };
    let dirs = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let server_id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let client_id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
    let client = tor(&net, dirs.1.path()).await;

    let first_url = {
        let server = tor(&net, dirs.0.path()).await;
        let service = server
            .host(server_id.key(), ServiceOptions::new(PORT))
            .await
            .unwrap();
        let (tx, _m) = tokio::sync::mpsc::unbounded_channel();
        let _echo = tls_echo(Link::incoming(&server).unwrap(), &server_id, tx);
        let url = service.url().clone();
        let (stream, waited) =
            connect_until_reachable(&client, &url, Duration::from_secs(180)).await;
        eprintln!("reachable {waited} ms after the launch");
        let mut tls = pinned_tls(stream, url.key_id(), &client_id, service.onion())
            .await
            .unwrap();
        assert_eq!(first_line(&mut tls).await, client_id.key_id().to_string());
        // The client's shutdown stops its services too; closing it lets go of the directory,
        // as the end of a process does.
        server.shutdown();
        assert_eq!(service.status().unwrap().state, ServiceState::Shutdown);
        drop(service);
        tokio::time::timeout(Duration::from_secs(60), server.close())
            .await
            .expect("arti let go of the data directory");
        url
    };

    // A new process, the same data directory and key: the same address, reachable again, by
    // someone who never saw the old instance's descriptor.
    let client = tor(&net, dirs.2.path()).await;
    let server = tor(&net, dirs.0.path()).await;
    let service = server
        .host(server_id.key(), ServiceOptions::new(PORT))
        .await
        .unwrap();
    assert_eq!(service.url(), &first_url);
    let (tx, _m) = tokio::sync::mpsc::unbounded_channel();
    let _echo = tls_echo(Link::incoming(&server).unwrap(), &server_id, tx);
    let (stream, waited) =
        connect_until_reachable(&client, &first_url, Duration::from_secs(180)).await;
    eprintln!("reachable again {waited} ms after the restart");
    let mut tls = pinned_tls(stream, first_url.key_id(), &client_id, service.onion())
        .await
        .unwrap();
    assert_eq!(first_line(&mut tls).await, client_id.key_id().to_string());
}
