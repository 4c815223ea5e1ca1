//! rustls configurations for mutual TLS between public keys.
//!
//! * [`server_config`] always presents the identity's certificate and asks the client for one.
//!   With [`ClientAuth::Required`] a client without a certificate is refused in the handshake;
//!   with [`ClientAuth::Optional`] it is let in as [`Peer::Anonymous`]. A client certificate is
//!   accepted if it is well-formed and signed by its own key; the client must still prove it holds
//!   that key with the handshake signature, which rustls verifies. No CA is involved: whether a
//!   key may do anything is for ACLs to say, given [`Peer::of`] the connection.
//! * [`client_config`] pins the server's [`KeyId`]: the handshake fails closed unless the server
//!   presents a self-signed certificate whose SubjectPublicKeyInfo hashes to exactly that id (and
//!   proves possession of the key). Server names and dates are not checked; the pin is the
//!   identity. An optional client identity is presented when the server asks.
//!
//! Both use rustls' `ring` crypto provider with its default protocol versions (TLS 1.3 and 1.2)
//! and cipher suites.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::PeerCert;
use crate::crypto;
use crate::error::Result;
use crate::identity::Identity;
use crate::key::KeyId;

/// The crypto provider every config of this crate uses (rustls' `ring` provider).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Clients without a certificate are refused during the handshake.
    Required,
    /// Clients may connect without a certificate; they are then [`Peer::Anonymous`].
    Optional,
}

/// Who is at the other end of a server-side connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The client proved it holds the key with this id.
    Key(KeyId),
    /// The client presented no certificate.
    Anonymous,
}

impl Peer {
    /// The peer of a connection whose handshake has completed (a `ServerConnection`, or the
    /// connection inside a `tokio_rustls::server::TlsStream`).
    ///
    /// Before the handshake completes there is no verified certificate, and the answer is
    /// [`Peer::Anonymous`]: the least-privileged answer, never a wrong key.
    pub fn of(conn: &CommonState) -> Peer {
        Peer::from_certificates(conn.peer_certificates())
    }

    /// The peer named by the certificate chain rustls verified (its first, end-entity certificate).
    pub fn from_certificates(chain: Option<&[CertificateDer<'_>]>) -> Peer {
        chain
            .and_then(|certs| certs.first())
            .and_then(|cert| {
                let (_, parsed) = X509Certificate::from_der(cert).ok()?;
                Some(Peer::Key(KeyId::from_spki_der(parsed.public_key().raw)))
            })
            .unwrap_or(Peer::Anonymous)
    }

    /// The key id, unless anonymous.
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Peer::Key(id) => Some(*id),
            Peer::Anonymous => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Key(id) => id.fmt(f),
            Peer::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// A server config that presents `identity` and authenticates clients by key (see the
/// [module docs](self)). Set `alpn_protocols` on the result as the server needs.
pub fn server_config(identity: &Identity, auth: ClientAuth) -> Result<ServerConfig> {
    let provider = provider();
    let verifier = Arc::new(SelfSignedClientVerifier::new(auth));
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![identity.cert_der().clone()],
            identity.private_key_der(),
        )?;
    Ok(config)
}

/// A client config that accepts only a server whose key id is `pin`, and presents `client`
/// when given (see the [module docs](self)). Any server name may be used to connect
/// (see [`server_name`]).
pub fn client_config(pin: KeyId, client: Option<&Identity>) -> Result<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PinnedServerVerifier::new(pin));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client {
        Some(identity) => builder.with_client_auth_cert(
            vec![identity.cert_der().clone()],
            identity.private_key_der(),
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The rustls server name for a host: an IP address when `host` is one, else a DNS name; falls
/// for hosts rustls will not take as a name, the loopback address stands in, which sends no SNI
/// (the pin, not the name, authenticates the server). Brackets around IPv6 literals are accepted.
pub fn server_name(host: &str) -> ServerName<'static> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(bare.to_owned()).unwrap_or(ServerName::IpAddress(
        std::net::IpAddr::from([127, 0, 0, 1]).into(),
    ))
}

/// The pin a server failed to match, as reported in the handshake error.
pub struct PinMismatch {
    /// The key id the client pinned.
    pub expected: KeyId,
    /// The key id the server presented.
    pub presented: KeyId,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server key {} does not match the pinned key {}",
            self.presented, self.expected
        )
    }
}

// rustls shows the Debug form in its error text; make that the readable sentence too.
impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinMismatch: {self}")
    }
}

impl std::error::Error for PinMismatch {}

fn check_self_signed(end_entity: &CertificateDer<'_>) -> Result<PeerCert, rustls::Error> {
    PeerCert::parse(end_entity).map_err(|e| {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
    })
}

/// Which keys a [`SelfSignedClientVerifier`] refuses (revoked ones): asked in every handshake
/// that presents a client certificate.
pub type KeyRefusal = Arc<dyn Fn(&KeyId) -> bool + Send + Sync>;

/// The client-certificate verifier of [`server_config`], for callers who build their own
/// `ServerConfig` (other protocol versions, another certificate resolver).
pub struct SelfSignedClientVerifier {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
    refused: Option<KeyRefusal>,
}

impl std::fmt::Debug for SelfSignedClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSignedClientVerifier")
            .field("mandatory", &self.mandatory)
            .field("refusing", &self.refused.is_some())
            .finish_non_exhaustive()
    }
}

impl SelfSignedClientVerifier {
    /// A verifier that accepts self-signed client certificates; `auth` says whether one is required.
    pub fn new(auth: ClientAuth) -> SelfSignedClientVerifier {
        SelfSignedClientVerifier {
            mandatory: auth == ClientAuth::Required,
            algorithms: provider().signature_verification_algorithms,
            refused: None,
        }
    }

    /// The same verifier, except that a certificate of a key `refused` names fails the
    /// handshake with `certificate_revoked`: the client gets no connection at all.
    pub fn refusing(mut self, refused: KeyRefusal) -> SelfSignedClientVerifier {
        self.refused = Some(refused);
        self
    }
}

impl ClientCertVerifier for SelfSignedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let peer = check_self_signed(end_entity)?;
        if self.refused.as_ref().is_some_and(|r| r(&peer.key_id())) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server-certificate verifier of [`client_config`], for callers who build their own
/// `ClientConfig`.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    pin: KeyId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    /// A verifier that accepts only a self-signed certificate for the key `pin`.
    pub fn new(pin: KeyId) -> PinnedServerVerifier {
        PinnedServerVerifier {
            pin,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = check_self_signed(end_entity)?;
        if !crypto::constant_time_eq(cert.key_id().as_bytes(), self.pin.as_bytes()) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    expected: self.pin,
                    presented: cert.key_id(),
                })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
