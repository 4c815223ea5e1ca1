//! Identity end to end: keystores on disk, a card handed over out of band, a pinned mutual-TLS
//! connection on 127.0.0.1, and the numeric-comparison exchange run over that connection with the
//! keys TLS proved. A relay that terminates TLS with its own key (a man in the middle) is caught
//! by the codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::sync::Arc;
use std::time::Duration;

use public_key_identity::exchange::{Initiator, MESSAGE_LEN, Message, PairingCode, Responder};
use public_key_identity::tls::{client_config, server_config, server_name};
use public_key_identity::{
    ClientAuth, Host, HttpKeyUrl, Identity, IdentityCard, KeyAlgorithm, KeyId, Keystore, Peer,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, message: Message) {
    stream.write_all(&message.to_bytes()).await.unwrap();
    stream.flush().await.unwrap();
}

async fn recv<S: AsyncRead + Unpin>(stream: &mut S) -> Message {
    let mut buf = [0u8; MESSAGE_LEN];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_bytes(&buf).unwrap()
}

/// Plays the responder on an accepted TLS stream; the peer key is the one TLS authenticated.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    own: KeyId,
    peer: KeyId,
    stream: &mut S,
) -> PairingCode {
    let mut responder = Responder::new(own, peer).unwrap();
    let commit = recv(stream).await;
    let nonce = responder.handle(commit).unwrap().send.unwrap();
    send(stream, nonce).await;
    let reveal = recv(stream).await;
    responder.handle(reveal).unwrap().code.unwrap()
}

/// Plays the initiator.
async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    own: KeyId,
    peer: KeyId,
    stream: &mut S,
) -> PairingCode {
    let (mut initiator, commit) = Initiator::start(own, peer).unwrap();
    send(stream, commit).await;
    let nonce = recv(stream).await;
    let out = initiator.handle(nonce).unwrap();
    send(stream, out.send.unwrap()).await;
    out.code.unwrap()
}

/// A TLS server for `identity` on 127.0.0.1 that hands each accepted stream and its peer to `f`.
async fn serve_once<F, Fut, T>(identity: Identity, f: F) -> (u16, tokio::task::JoinHandle<T>)
where
    F: FnOnce(tokio_rustls::server::TlsStream<TcpStream>, Peer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(&identity, ClientAuth::Required).unwrap(),
    ));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let peer = Peer::of(tls.get_ref().1);
        f(tls, peer).await
    });
    (port, task)
}

async fn dial(url: &HttpKeyUrl, me: &Identity) -> tokio_rustls::client::TlsStream<TcpStream> {
    let target = url.to_https();
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(target.pin, Some(me)).unwrap()));
    connector
        .connect(server_name(&target.host), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn pairing_over_pinned_mutual_tls_gives_equal_codes() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (alice, _) = Keystore::open(dir.path().join("alice"))
            .unwrap()
            .load_or_create("device", KeyAlgorithm::Ed25519)
            .unwrap();
        let (bob, _) = Keystore::open(dir.path().join("bob"))
            .unwrap()
            .load_or_create("device", KeyAlgorithm::EcdsaP256)
            .unwrap();
        let bob_id = bob.key_id();

        let (port, server) = serve_once(bob, move |mut tls, peer| async move {
            let Peer::Key(peer_key) = peer else {
                panic!("anonymous peer")
            };
            (peer_key, respond(bob_id, peer_key, &mut tls).await)
        })
        .await;

        // Bob's card reaches Alice out of band (here: as JSON, as a QR code would carry it).
        let bob_card = {
            let bob = Keystore::open(dir.path().join("bob"))
                .unwrap()
                .load("device")
                .unwrap();
            let url = HttpKeyUrl::new(Host::Ipv4([127, 0, 0, 1].into()), port, bob.key_id());
            IdentityCard::sign(&bob, "Bob's laptop", vec![url], vec![], 1)
                .unwrap()
                .to_json()
        };
        let card = IdentityCard::from_json(&bob_card).unwrap();
        let url = card.endpoints()[0].clone();
        assert_eq!(url.key_id(), card.key_id());

        let mut tls = dial(&url, &alice).await;
        let alice_code = initiate(alice.key_id(), card.key_id(), &mut tls).await;
        let (bob_saw, bob_code) = server.await.unwrap();
        assert_eq!(bob_saw, alice.key_id(), "TLS told Bob who Alice is");
        assert_eq!(alice_code, bob_code);
    })
    .await
    .expect("pairing hung");
}

#[tokio::test]
async fn relay_with_its_own_key_is_caught_by_the_codes() {
    tokio::time::timeout(LIMIT, async {
        let alice = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
        let bob = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
        let mallory = Arc::new(Identity::generate(KeyAlgorithm::Ed25519).unwrap());
        let (alice_id, bob_id, mallory_id) = (alice.key_id(), bob.key_id(), mallory.key_id());

        let (bob_port, bob_task) = serve_once(bob, move |mut tls, peer| async move {
            let peer = peer.key_id().unwrap();
            assert_eq!(peer, mallory_id, "Bob sees the relay's key, not Alice's");
            respond(bob_id, peer, &mut tls).await
        })
        .await;

        // Mallory accepts Alice (with Mallory's own key, the only one he can prove) and dials Bob
        // as himself, then runs one exchange on each side, choosing what he forwards.
        let mallory_for_server = Identity::from_parts(
            public_key_identity::KeyPair::from_pkcs8_pem(&mallory.key().to_pkcs8_pem()).unwrap(),
            mallory.cert_der().clone(),
        )
        .unwrap();
        let mallory_dial = mallory.clone();
        let (m_port, mallory_task) = serve_once(
            mallory_for_server,
            move |mut from_alice, alice_peer| async move {
                let bob_url = HttpKeyUrl::new(Host::Ipv4([127, 0, 0, 1].into()), bob_port, bob_id);
                let mut to_bob = dial(&bob_url, &mallory_dial).await;
                let code_with_bob = initiate(mallory_id, bob_id, &mut to_bob).await;
                let code_with_alice =
                    respond(mallory_id, alice_peer.key_id().unwrap(), &mut from_alice).await;
                (code_with_alice, code_with_bob)
            },
        )
        .await;

        // Alice was tricked into dialing Mallory's address with Mallory's key.
        let url = HttpKeyUrl::new(Host::Ipv4([127, 0, 0, 1].into()), m_port, mallory_id);
        let mut tls = dial(&url, &alice).await;
        let alice_code = initiate(alice_id, mallory_id, &mut tls).await;
        let bob_code = bob_task.await.unwrap();
        let _ = mallory_task.await.unwrap();
        // Different inputs on the two sides: equal only with probability 10^-6.
        assert_ne!(alice_code, bob_code, "a man in the middle went unnoticed");
    })
    .await
    .expect("relay test hung");
}
