//! Self-signed X.509 certificates that carry an identity key, and parsing a peer's certificate
//! back to its [`KeyId`].
//!
//! # Validity dates are ignored
//!
//! The identity is the key, not the certificate: a certificate here is only the envelope TLS
//! needs to carry a public key. Devices have bad clocks (no RTC, no network time when offline,
//! years off after a flat battery), and a date check would lock a person out of their own devices
//! for no security gain — a stolen key stays stolen whatever the date says. So:
//!
//! * certificates are issued valid from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z (the RFC 5280
//!   §4.1.2.5 "no well-defined expiration" value), so that other TLS stacks that do look at dates
//!   (OpenSSL, browsers with a pinned key) accept them too;
//! * the verifiers in [`crate::tls`] never look at `notBefore`/`notAfter`, at names, or at key
//!   usage. They check that the certificate parses, that it is signed by its own key (so a
//!   tampered certificate is refused), and — on the client side — that the key is the pinned one.
//!   Revoking a key is done by removing it from ACLs and groups, not by certificate expiry.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::crypto;
use crate::error::{Error, Result};
use crate::key::{KeyAlgorithm, KeyId, KeyPair};

/// Issues a self-signed certificate for `key`, with the key id as its common name.
pub fn self_signed_cert(key: &KeyPair) -> Result<CertificateDer<'static>> {
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, key.key_id().to_string());
    params.distinguished_name = name;
    params.not_before = time::OffsetDateTime::UNIX_EPOCH;
    params.not_after = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .self_signed(key.rcgen())
        .map_err(Error::CertGeneration)?;
    Ok(cert.der().clone())
}

/// What a peer's certificate says about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    key_id: KeyId,
    algorithm: Option<KeyAlgorithm>,
    spki_der: Vec<u8>,
}

impl PeerCert {
    /// Parses a DER certificate, checks that it is signed by its own key, and names its key.
    ///
    /// Dates, names and extensions are not checked (see the [module docs](self)). Fails if the
    /// DER is malformed or has trailing bytes, or if the self-signature does not verify (which
    /// also refuses certificates issued by someone else: identities are self-signed).
    pub fn parse(der: &[u8]) -> Result<PeerCert> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::BadCertificate(format!("malformed X.509 DER: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::BadCertificate(
                "trailing bytes after the certificate".into(),
            ));
        }
        cert.verify_signature(None).map_err(|e| {
            Error::BadCertificate(format!(
                "the certificate is not validly signed by its own key ({e})"
            ))
        })?;
        let spki_der = cert.public_key().raw.to_vec();
        Ok(PeerCert {
            key_id: KeyId::from_spki_der(&spki_der),
            algorithm: crypto::spki_algorithm(&spki_der).map(|(alg, _)| alg),
            spki_der,
        })
    }

    /// The key id of the certificate's public key.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The key's algorithm, when it is one an identity may have (Ed25519 or ECDSA P-256). Peers
    /// may present other key types in TLS (a browser's RSA client cert); those still have a key id.
    pub fn algorithm(&self) -> Option<KeyAlgorithm> {
        self.algorithm
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// The key id of a DER certificate, after the checks of [`PeerCert::parse`].
pub fn cert_key_id(der: &[u8]) -> Result<KeyId> {
    PeerCert::parse(der).map(|cert| cert.key_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_round_trip_for_both_algorithms() {
        for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256] {
            let key = KeyPair::generate(alg).unwrap();
            let der = self_signed_cert(&key).unwrap();
            let peer = PeerCert::parse(&der).unwrap();
            assert_eq!(peer.key_id(), key.key_id());
            assert_eq!(peer.algorithm(), Some(alg));
            assert_eq!(peer.spki_der(), key.spki_der());
        }
    }

    #[test]
    fn validity_covers_all_plausible_clocks() {
        let key = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let der = self_signed_cert(&key).unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.validity().not_before.timestamp(), 0);
        assert_eq!(cert.validity().not_after.timestamp(), 253_402_300_799);
    }

    #[test]
    fn tampered_signature_or_body_is_refused() {
        let key = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let der = self_signed_cert(&key).unwrap().to_vec();
        // Last byte is inside the signature; a byte in the middle is inside the signed body.
        for index in [der.len() - 1, der.len() / 2] {
            let mut bad = der.clone();
            bad[index] ^= 0x01;
            assert!(
                PeerCert::parse(&bad).is_err(),
                "flipping byte {index} must be caught"
            );
        }
    }

    #[test]
    fn cert_signed_by_another_key_is_refused() {
        let subject = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let issuer = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let issuer_cert = rcgen::CertificateParams::default()
            .self_signed(issuer.rcgen())
            .unwrap();
        let issuer = rcgen::Issuer::new(rcgen::CertificateParams::default(), issuer.rcgen());
        let _ = issuer_cert;
        let cert = rcgen::CertificateParams::default()
            .signed_by(subject.rcgen(), &issuer)
            .unwrap();
        assert!(matches!(
            PeerCert::parse(cert.der()),
            Err(Error::BadCertificate(_))
        ));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        for bytes in [&b""[..], b"\x30", b"\x30\x82\xff\xff", &[0u8; 64]] {
            assert!(PeerCert::parse(bytes).is_err());
        }
        let key = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let mut der = self_signed_cert(&key).unwrap().to_vec();
        der.push(0);
        assert!(PeerCert::parse(&der).is_err(), "trailing byte");
    }
}
