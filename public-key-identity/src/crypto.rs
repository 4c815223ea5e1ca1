//! The few primitives this crate takes from `ring`, in one place, so that moving to another
//! provider touches only this file (and the rustls provider choice in [`crate::tls`]).

use ring::rand::SecureRandom;
use x509_parser::prelude::FromDer;

use crate::key::KeyAlgorithm;

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// 32 bytes from the operating system's random source.
pub(crate) fn random_32() -> Result<[u8; 32], ring::error::Unspecified> {
    let mut out = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut out)?;
    Ok(out)
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The algorithm and raw public key bits of a DER SubjectPublicKeyInfo, if it is a key type an
/// identity may have.
pub(crate) fn spki_algorithm(spki_der: &[u8]) -> Option<(KeyAlgorithm, Vec<u8>)> {
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let oid = &spki.algorithm.algorithm;
    let raw = spki.subject_public_key.data.to_vec();
    if *oid == x509_parser::oid_registry::OID_SIG_ED25519 {
        Some((KeyAlgorithm::Ed25519, raw))
    } else if *oid == x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        (curve == x509_parser::oid_registry::OID_EC_P256).then_some((KeyAlgorithm::EcdsaP256, raw))
    } else {
        None
    }
}

/// Verifies a signature made by [`crate::KeyPair::sign`] against a DER SubjectPublicKeyInfo.
pub(crate) fn verify(spki_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Some((algorithm, raw)) = spki_algorithm(spki_der) else {
        return false;
    };
    let alg: &dyn ring::signature::VerificationAlgorithm = match algorithm {
        KeyAlgorithm::Ed25519 => &ring::signature::ED25519,
        KeyAlgorithm::EcdsaP256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
    };
    ring::signature::UnparsedPublicKey::new(alg, raw)
        .verify(message, signature)
        .is_ok()
}
