//! Full mutual-TLS handshakes per second: this crate's configs (pinned client, self-signed client
//! certs accepted by key) against plain rustls (webpki verifiers, each side's certificate as the
//! other's trust anchor) with the same keys, in the same run. Both sides run in one thread over
//! in-memory buffers, so a figure is the CPU cost of client + server together.
//!
//! ```text
//! cargo bench -p public-key-identity --bench handshake
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use public_key_identity::tls::{client_config, provider, server_config, server_name};
use public_key_identity::{ClientAuth, Identity, KeyAlgorithm, KeyPair, Peer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::CertificateDer;

fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Peer {
    let mut c = ClientConnection::new(client.clone(), server_name("localhost")).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(4096);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut buf.as_slice()).unwrap();
        s.process_new_packets().unwrap();
        buf.clear();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets().unwrap();
    }
    Peer::of(&s)
}

/// A certificate for `key` that webpki accepts for the name "localhost".
fn webpki_cert(key: &KeyPair) -> CertificateDer<'static> {
    let pem = key.to_pkcs8_pem();
    let rc = rcgen::KeyPair::from_pem(&pem).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.self_signed(&rc).unwrap().der().clone()
}

fn plain_configs(server: &Identity, client: &Identity) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let server_cert = webpki_cert(server.key());
    let client_cert = webpki_cert(client.key());
    let mut client_roots = RootCertStore::empty();
    client_roots.add(server_cert.clone()).unwrap();
    let mut server_roots = RootCertStore::empty();
    server_roots.add(client_cert.clone()).unwrap();
    let client_cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(client_roots)
        .with_client_auth_cert(vec![client_cert], client.private_key_der())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(server_roots), provider())
        .build()
        .unwrap();
    let server_cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert], server.private_key_der())
        .unwrap();
    (Arc::new(client_cfg), Arc::new(server_cfg))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("mutual_tls_handshake");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.measurement_time(std::time::Duration::from_secs(4));
    for (label, alg) in [
        ("ed25519", KeyAlgorithm::Ed25519),
        ("p256", KeyAlgorithm::EcdsaP256),
    ] {
        let server = Identity::generate(alg).unwrap();
        let client = Identity::generate(alg).unwrap();

        let ours_client = Arc::new(client_config(server.key_id(), Some(&client)).unwrap());
        let ours_server = Arc::new(server_config(&server, ClientAuth::Required).unwrap());
        assert_eq!(
            handshake(&ours_client, &ours_server),
            Peer::Key(client.key_id())
        );
        group.bench_function(format!("{label}/public-key-identity"), |b| {
            b.iter(|| handshake(&ours_client, &ours_server))
        });

        let (plain_client, plain_server) = plain_configs(&server, &client);
        assert_eq!(
            handshake(&plain_client, &plain_server),
            Peer::Key(client.key_id()),
            "same keys in the plain configs"
        );
        group.bench_function(format!("{label}/plain-rustls-webpki"), |b| {
            b.iter(|| handshake(&plain_client, &plain_server))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
