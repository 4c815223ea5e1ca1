//! The identity key in the shapes arti wants: the onion service identity (`KS_hs_id`) and the
//! client's restricted-discovery key (`KS_hsc_desc_enc`, X25519).
//!
//! The onion service identity *is* the Ed25519 identity key: arti's `HsIdKeypair` is the
//! expanded form of the same seed, so the onion address is
//! [`onion_host`](crate::onion_host) of the identity.
//!
//! Restricted discovery needs an X25519 key per client, which the service must know in
//! advance. Rather than a second secret to store and exchange, it is the identity key mapped to
//! X25519 (as `age` and libsodium's `crypto_sign_ed25519_pk_to_curve25519` do, and as
//! adhoc-wireless's beacons do): secret `SHA-512(seed)[0..32]` (X25519 clamps it), public the
//! Edwards point's Montgomery u-coordinate. A service can therefore authorise a friend from the
//! public key in the friend's certificate or identity card alone.

use curve25519_dalek::edwards::CompressedEdwardsY;
use public_key_identity::KeyPair;
use tor_hscrypto::pk::{HsClientDescEncKey, HsClientDescEncSecretKey, HsIdKeypair};
use tor_llcrypto::pk::{curve25519, ed25519};

use crate::error::{Error, Result};
use crate::onion::ed25519_public;

fn seed(identity: &KeyPair) -> Result<public_key_identity::Zeroizing<[u8; 32]>> {
    ed25519_public(identity)?;
    identity
        .ed25519_seed()
        .ok_or_else(|| Error::Key("the Ed25519 seed could not be read".into()))
}

/// The onion service identity keypair of `identity` (Ed25519 only).
pub(crate) fn hs_id_keypair(identity: &KeyPair) -> Result<HsIdKeypair> {
    let seed = seed(identity)?;
    let keypair = ed25519::Keypair::from_bytes(&seed);
    let expanded = ed25519::ExpandedKeypair::from(&keypair);
    if expanded.public().to_bytes() != ed25519_public(identity)? {
        return Err(Error::Key(
            "the onion service key does not match the identity's public key".into(),
        ));
    }
    Ok(HsIdKeypair::from(expanded))
}

/// The X25519 secret for restricted discovery, from `identity`.
pub(crate) fn client_desc_secret(identity: &KeyPair) -> Result<HsClientDescEncSecretKey> {
    let seed = seed(identity)?;
    let hash = ring_sha512(&seed[..]);
    let mut scalar = public_key_identity::Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(
        hash.as_ref()
            .get(..32)
            .ok_or_else(|| Error::Key("SHA-512 is 64 bytes".into()))?,
    );
    Ok(HsClientDescEncSecretKey::from(
        curve25519::StaticSecret::from(*scalar),
    ))
}

/// The X25519 public key for restricted discovery of the client whose Ed25519 public key is
/// `ed25519_public`.
pub(crate) fn client_desc_public(ed25519_public: &[u8; 32]) -> Result<HsClientDescEncKey> {
    let point = CompressedEdwardsY(*ed25519_public)
        .decompress()
        .ok_or_else(|| Error::Key("not an Ed25519 public key (not a curve point)".into()))?;
    if point.is_small_order() {
        return Err(Error::Key("an Ed25519 public key of small order".into()));
    }
    Ok(HsClientDescEncKey::from(curve25519::PublicKey::from(
        point.to_montgomery().to_bytes(),
    )))
}

fn ring_sha512(data: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA512, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use public_key_identity::{Host, KeyAlgorithm};
    use tor_hscrypto::pk::{HsId, HsIdKey};

    #[test]
    fn the_onion_service_key_is_the_identity_key() {
        let identity = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let hs = hs_id_keypair(&identity).unwrap();
        let id = HsId::from(HsIdKey::from(&hs));
        // arti's name for the service and ours agree.
        let arti_name = safelog::DisplayRedacted::display_unredacted(&id).to_string();
        assert_eq!(
            Host::Onion(arti_name),
            crate::onion_host(&identity).unwrap()
        );
    }

    #[test]
    fn both_sides_derive_one_discovery_key() {
        let client = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let secret = client_desc_secret(&client).unwrap();
        let from_secret = HsClientDescEncKey::from(&secret);
        let from_public = client_desc_public(&client.ed25519_public_key().unwrap()).unwrap();
        assert_eq!(from_secret, from_public);
        // Another key gives another one.
        let other = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        assert_ne!(
            client_desc_public(&other.ed25519_public_key().unwrap()).unwrap(),
            from_public
        );
    }

    #[test]
    fn bad_keys_are_errors() {
        let p256 = KeyPair::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(hs_id_keypair(&p256).is_err());
        assert!(client_desc_secret(&p256).is_err());
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(client_desc_public(&identity).is_err());
        // About half of all y are on no point at all.
        let not_a_point = (2u8..=255)
            .map(|y| {
                let mut b = [0u8; 32];
                b[0] = y;
                b
            })
            .find(|b| CompressedEdwardsY(*b).decompress().is_none())
            .unwrap();
        assert!(client_desc_public(&not_a_point).is_err());
    }
}
