//! Real mutual-TLS handshakes over tokio on 127.0.0.1 with the crate's configs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::sync::Arc;
use std::time::Duration;

use public_key_identity::tls::{
    self, PinnedServerVerifier, SelfSignedClientVerifier, client_config, server_config,
};
use public_key_identity::{ClientAuth, Identity, KeyAlgorithm, KeyId, Peer};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(10);

/// What the server side of one connection saw.
#[derive(Debug)]
enum ServerSaw {
    Peer(Peer),
    Refused(String),
}

/// Serves one connection with `config`; answers one byte with the same byte.
async fn one_connection(config: ServerConfig) -> (u16, tokio::task::JoinHandle<ServerSaw>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match acceptor.accept(tcp).await {
            Ok(mut tls) => {
                let peer = Peer::of(tls.get_ref().1);
                let mut byte = [0u8; 1];
                if tls.read_exact(&mut byte).await.is_ok() {
                    let _ = tls.write_all(&byte).await;
                    let _ = tls.flush().await;
                }
                ServerSaw::Peer(peer)
            }
            Err(e) => ServerSaw::Refused(e.to_string()),
        }
    });
    (port, task)
}

/// Connects with `config`, exchanges one byte; returns the client's error, if any.
async fn connect(port: u16, config: ClientConfig) -> Result<(), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector
        .connect(tls::server_name("127.0.0.1"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    // In TLS 1.3 the server's verdict on our certificate arrives after our handshake is done:
    // a refusal shows up here, as an alert instead of the echo.
    tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
    assert_eq!(&byte, b"x");
    Ok(())
}

async fn run(server: ServerConfig, client: ClientConfig) -> (Result<(), String>, ServerSaw) {
    tokio::time::timeout(LIMIT, async {
        let (port, task) = one_connection(server).await;
        let client_result = connect(port, client).await;
        (client_result, task.await.unwrap())
    })
    .await
    .expect("handshake test hung")
}

fn identity(alg: KeyAlgorithm) -> Identity {
    Identity::generate(alg).unwrap()
}

#[tokio::test]
async fn pinned_client_connects_and_server_sees_its_key_all_algorithms() {
    let algs = [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256];
    for server_alg in algs {
        for client_alg in algs {
            let server = identity(server_alg);
            let client = identity(client_alg);
            let (result, saw) = run(
                server_config(&server, ClientAuth::Required).unwrap(),
                client_config(server.key_id(), Some(&client)).unwrap(),
            )
            .await;
            assert_eq!(result, Ok(()), "{server_alg} server, {client_alg} client");
            match saw {
                ServerSaw::Peer(peer) => assert_eq!(peer, Peer::Key(client.key_id())),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn wrong_pin_fails_the_handshake() {
    let server = identity(KeyAlgorithm::Ed25519);
    let impostor_pin = identity(KeyAlgorithm::Ed25519).key_id();
    let client = identity(KeyAlgorithm::Ed25519);
    let (result, saw) = run(
        server_config(&server, ClientAuth::Optional).unwrap(),
        client_config(impostor_pin, Some(&client)).unwrap(),
    )
    .await;
    let err = result.unwrap_err();
    assert!(
        err.contains("does not match the pinned key") && err.contains(&impostor_pin.to_string()),
        "{err}"
    );
    assert!(matches!(saw, ServerSaw::Refused(_)), "{saw:?}");
}

#[tokio::test]
async fn no_client_cert_is_anonymous_when_optional() {
    let server = identity(KeyAlgorithm::Ed25519);
    let (result, saw) = run(
        server_config(&server, ClientAuth::Optional).unwrap(),
        client_config(server.key_id(), None).unwrap(),
    )
    .await;
    assert_eq!(result, Ok(()));
    assert!(matches!(saw, ServerSaw::Peer(Peer::Anonymous)), "{saw:?}");
}

#[tokio::test]
async fn no_client_cert_is_refused_when_required() {
    let server = identity(KeyAlgorithm::Ed25519);
    let (result, saw) = run(
        server_config(&server, ClientAuth::Required).unwrap(),
        client_config(server.key_id(), None).unwrap(),
    )
    .await;
    assert!(result.is_err());
    match saw {
        ServerSaw::Refused(e) => assert!(
            e.contains("NoCertificatesPresented") || e.contains("certificate"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

fn tampered(cert: &CertificateDer<'static>) -> CertificateDer<'static> {
    let mut der = cert.to_vec();
    let last = der.len() - 1; // inside the signature value
    der[last] ^= 0x01;
    CertificateDer::from(der)
}

#[tokio::test]
async fn tampered_client_cert_is_refused() {
    let server = identity(KeyAlgorithm::Ed25519);
    let client = identity(KeyAlgorithm::EcdsaP256);
    let client_cfg = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(server.key_id())))
        .with_client_auth_cert(vec![tampered(client.cert_der())], client.private_key_der())
        .unwrap();
    let (result, saw) = run(
        server_config(&server, ClientAuth::Optional).unwrap(),
        client_cfg,
    )
    .await;
    assert!(result.is_err());
    match saw {
        ServerSaw::Refused(e) => assert!(e.contains("not validly signed"), "{e}"),
        other => panic!("a tampered certificate got in: {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_key_fails_the_handshake_and_others_pass() {
    let server = identity(KeyAlgorithm::Ed25519);
    let revoked = identity(KeyAlgorithm::Ed25519);
    let other = identity(KeyAlgorithm::Ed25519);
    let refused_key = revoked.key_id();
    let server_cfg = |refused_key: KeyId| {
        ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(Arc::new(
                SelfSignedClientVerifier::new(ClientAuth::Optional)
                    .refusing(Arc::new(move |k: &KeyId| *k == refused_key)),
            ))
            .with_single_cert(vec![server.cert_der().clone()], server.private_key_der())
            .unwrap()
    };
    let (result, saw) = run(
        server_cfg(refused_key),
        client_config(server.key_id(), Some(&revoked)).unwrap(),
    )
    .await;
    assert!(result.is_err(), "a refused key got a connection");
    match saw {
        ServerSaw::Refused(e) => assert!(e.to_lowercase().contains("revoked"), "{e}"),
        other => panic!("a refused key got in: {other:?}"),
    }
    let (result, saw) = run(
        server_cfg(refused_key),
        client_config(server.key_id(), Some(&other)).unwrap(),
    )
    .await;
    assert_eq!(result, Ok(()));
    assert!(
        matches!(saw, ServerSaw::Peer(Peer::Key(k)) if k == other.key_id()),
        "{saw:?}"
    );
}

#[tokio::test]
async fn tampered_server_cert_is_refused_even_with_the_right_pin() {
    let server = identity(KeyAlgorithm::Ed25519);
    let server_cfg = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(SelfSignedClientVerifier::new(
            ClientAuth::Optional,
        )))
        .with_single_cert(vec![tampered(server.cert_der())], server.private_key_der())
        .unwrap();
    let (result, _) = run(server_cfg, client_config(server.key_id(), None).unwrap()).await;
    let err = result.unwrap_err();
    assert!(err.contains("not validly signed"), "{err}");
}

#[tokio::test]
async fn tls12_handshakes_verify_signatures_too() {
    let server = identity(KeyAlgorithm::EcdsaP256);
    let client = identity(KeyAlgorithm::Ed25519);
    let client_cfg = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(server.key_id())))
        .with_client_auth_cert(vec![client.cert_der().clone()], client.private_key_der())
        .unwrap();
    let (result, saw) = run(
        server_config(&server, ClientAuth::Required).unwrap(),
        client_cfg,
    )
    .await;
    assert_eq!(result, Ok(()));
    assert!(
        matches!(saw, ServerSaw::Peer(Peer::Key(k)) if k == client.key_id()),
        "{saw:?}"
    );

    // And a wrong pin still fails under TLS 1.2.
    let wrong: KeyId = client.key_id();
    let client_cfg = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(wrong)))
        .with_no_client_auth();
    let (result, _) = run(
        server_config(&server, ClientAuth::Optional).unwrap(),
        client_cfg,
    )
    .await;
    assert!(
        result
            .unwrap_err()
            .contains("does not match the pinned key")
    );
}
