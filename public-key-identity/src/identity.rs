//! An identity: a keypair and the self-signed certificate that presents it in TLS.

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::cert::{PeerCert, self_signed_cert};
use crate::error::{Error, Result};
use crate::key::{KeyAlgorithm, KeyId, KeyPair};

/// A keypair with its self-signed certificate. This is what a device, an app or a person *is*.
#[derive(Debug)]
pub struct Identity {
    key: KeyPair,
    cert: CertificateDer<'static>,
}

impl Identity {
    /// Generates a new keypair and issues its certificate.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Identity> {
        let key = KeyPair::generate(algorithm)?;
        Identity::from_key(key)
    }

    /// Issues a fresh certificate for an existing key.
    pub fn from_key(key: KeyPair) -> Result<Identity> {
        let cert = self_signed_cert(&key)?;
        Ok(Identity { key, cert })
    }

    /// Pairs a key with a certificate, checking that the certificate is self-signed by that key.
    pub fn from_parts(key: KeyPair, cert: CertificateDer<'static>) -> Result<Identity> {
        let parsed = PeerCert::parse(&cert)?;
        if parsed.key_id() != key.key_id() {
            return Err(Error::BadCertificate(format!(
                "the certificate is for key {} but the private key is {}",
                parsed.key_id(),
                key.key_id()
            )));
        }
        Ok(Identity { key, cert })
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key.key_id()
    }

    /// The keypair.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// The DER certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert)
    }

    /// The private key in the form rustls takes.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        self.key.to_private_key_der()
    }
}

/// PEM-encodes DER bytes under `label` (RFC 7468).
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The first PEM block labelled `CERTIFICATE` in `pem`.
pub(crate) fn pem_decode_cert(pem: &[u8]) -> std::result::Result<CertificateDer<'static>, String> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem).map_err(|e| format!("no usable CERTIFICATE block: {e}"))
}
