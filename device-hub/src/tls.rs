//! TLS for the hub: the listener's config (the device's Ed25519 certificate, or its P-256 one for
//! clients that cannot verify Ed25519 — web browsers — chosen per connection; client
//! certificates of revoked keys refused in the handshake), and the
//! [`couch_sync::replicate::Connector`] through which replication and the CLI reach a
//! hub: mutual TLS pinned to the peer's key id.

use std::sync::Arc;

use anyhow::{Context, Result};
use couch_sync::replicate::{BoxStream, Connecting, Connector};
use public_key_identity::tls::{SelfSignedClientVerifier, client_config, provider, server_name};
use public_key_identity::{ClientAuth, Identity, KeyId};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Whether the hub refuses a key outright (a revoked key): asked in every handshake that
/// presents a client certificate (it then fails with `certificate_revoked`), and of open
/// connections when the policy changes.
pub type Refused = public_key_identity::tls::KeyRefusal;

/// Picks the device's Ed25519 certificate when the client can verify Ed25519 signatures, and
/// the P-256 one (named in the identity card's `aliases`) otherwise.
#[derive(Debug)]
struct ByAlgorithm {
    device: Arc<CertifiedKey>,
    browser: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByAlgorithm {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello
            .signature_schemes()
            .contains(&rustls::SignatureScheme::ED25519)
        {
            Some(self.device.clone())
        } else {
            Some(self.browser.clone())
        }
    }
}

fn certified(identity: &Identity) -> Result<Arc<CertifiedKey>> {
    let key = provider()
        .key_provider
        .load_private_key(identity.private_key_der())
        .context("loading a private key into rustls")?;
    Ok(Arc::new(CertifiedKey::new(
        vec![identity.cert_der().clone()],
        key,
    )))
}

/// The listener's TLS config: client certificates optional (no certificate is `anonymous`);
/// a certificate whose key `refused` names fails the handshake.
pub fn server_config(
    device: &Identity,
    browser: &Identity,
    refused: Refused,
) -> Result<Arc<ServerConfig>> {
    let resolver = ByAlgorithm {
        device: certified(device)?,
        browser: certified(browser)?,
    };
    let verifier =
        SelfSignedClientVerifier::new(ClientAuth::Optional).refusing(Arc::new(move |key| {
            let refuse = refused(key);
            if refuse {
                tracing::info!(%key, "refused a revoked key in the TLS handshake");
            }
            refuse
        }));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to one peer hub: TCP, then TLS pinned to `pin`, presenting this device's identity.
pub struct PinnedTls {
    config: Arc<rustls::ClientConfig>,
}

impl PinnedTls {
    /// A connector to the hub holding `pin`, as `identity`.
    pub fn new(pin: KeyId, identity: &Identity) -> Result<PinnedTls> {
        let mut config = client_config(pin, Some(identity))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(PinnedTls {
            config: Arc::new(config),
        })
    }
}

impl Connector for PinnedTls {
    fn connect(&self, scheme: &str, host: &str, port: u16) -> Connecting {
        dial_tls(
            self.config.clone(),
            scheme,
            host,
            port,
            "hubs speak https only",
            |h| Ok(server_name(h)),
        )
    }
}

/// TCP to `host:port`, then a TLS handshake with `config` for the server name `name` makes of
/// the host (IPv6 brackets removed); `https` only, else fails with `refusal`.
pub fn dial_tls(
    config: Arc<rustls::ClientConfig>,
    scheme: &str,
    host: &str,
    port: u16,
    refusal: &'static str,
    name: impl FnOnce(&str) -> std::io::Result<rustls_pki_types::ServerName<'static>> + Send + 'static,
) -> Connecting {
    let https = scheme == "https";
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Box::pin(async move {
        if !https {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                refusal,
            ));
        }
        let name = name(&host)?;
        let tcp = couch_sync::replicate::tcp_dial(&host, port).await?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        Ok(Box::new(tls) as BoxStream)
    })
}
