//! Beacon keys: an Ed25519 identity's secret converted for X25519 ([`BeaconKey`]), and a
//! recipient's Ed25519 public key checked and converted ([`Recipient`]). See the
//! [parent module](super#keys) for the conversion and why it is sound.

use std::fmt;

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::montgomery::MontgomeryPoint;
use public_key_identity::{KeyAlgorithm, KeyId, KeyPair};
use ring::signature::KeyPair as _;
use ring::{digest, signature};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{BeaconError, Result};

/// RFC 8410 SubjectPublicKeyInfo of an Ed25519 key, before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The secret side: an Ed25519 identity key, converted for X25519. A sender needs it to
/// authenticate itself, a recipient to open its entries.
pub struct BeaconKey {
    /// `clamp(SHA-512(seed)[0..32])`.
    pub(super) scalar: Zeroizing<[u8; 32]>,
    pub(super) ed25519: [u8; 32],
    pub(super) x25519: MontgomeryPoint,
    pub(super) key_id: KeyId,
}

impl BeaconKey {
    /// From an Ed25519 PKCS#8 private key (DER; v1 as RFC 8410, or v2 as `ring` writes it).
    pub fn from_pkcs8(der: &[u8]) -> Result<BeaconKey> {
        let not_ed25519 = BeaconError::InvalidKey("not an Ed25519 PKCS#8 private key");
        let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| not_ed25519.clone())?;
        // `ring` accepts exactly its two templates, which agree up to the seed: SEQUENCE,
        // INTEGER 0 or 1, AlgorithmIdentifier id-Ed25519, OCTET STRING { OCTET STRING (32) }.
        const AFTER_VERSION: [u8; 11] = [
            0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        if der.get(5..16) != Some(&AFTER_VERSION[..]) {
            return Err(not_ed25519);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(der.get(16..48).ok_or(not_ed25519.clone())?);
        // The bytes read must be the seed `ring` read.
        signature::Ed25519KeyPair::from_seed_and_public_key(&seed[..], pair.public_key().as_ref())
            .map_err(|_| not_ed25519)?;
        Self::from_seed(&seed)
    }

    /// From an identity key pair (Ed25519 only).
    pub fn from_keypair(key: &KeyPair) -> Result<BeaconKey> {
        if key.algorithm() != KeyAlgorithm::Ed25519 {
            return Err(BeaconError::InvalidKey(
                "beacons need an Ed25519 identity key",
            ));
        }
        let seed = key.ed25519_seed().ok_or(BeaconError::InvalidKey(
            "the Ed25519 seed could not be read",
        ))?;
        Self::from_seed(&seed)
    }

    pub(super) fn from_seed(seed: &[u8; 32]) -> Result<BeaconKey> {
        let pair = signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| BeaconError::InvalidKey("Ed25519 seed refused"))?;
        let ed25519: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| BeaconError::Crypto("Ed25519 public key is not 32 bytes"))?;
        let hash = digest::digest(&digest::SHA512, seed);
        let mut scalar = Zeroizing::new([0u8; 32]);
        scalar.copy_from_slice(
            hash.as_ref()
                .get(..32)
                .ok_or(BeaconError::Crypto("SHA-512"))?,
        );
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        let x25519 = MontgomeryPoint::mul_base_clamped(*scalar);
        Ok(BeaconKey {
            scalar,
            ed25519,
            x25519,
            key_id: ed25519_key_id(&ed25519),
        })
    }

    /// The key id of this identity.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn ed25519_public(&self) -> &[u8; 32] {
        &self.ed25519
    }

    /// This key as a beacon recipient (to signal one's own other devices, say).
    pub fn recipient(&self) -> Recipient {
        Recipient {
            ed25519: self.ed25519,
            x25519: self.x25519,
        }
    }

    /// This key's X25519 public key (the Montgomery form of the Ed25519 public key), as other
    /// protocols that seal to an identity key put it on the wire or into a key schedule.
    pub fn x25519_public(&self) -> [u8; 32] {
        self.x25519.to_bytes()
    }

    /// `X25519(this key's secret, their_x25519)` (RFC 7748), for protocols other than beacons
    /// that open what was sealed to this identity with an ephemeral X25519 key.
    ///
    /// `None` when the result is all zeros, that is when `their_x25519` is a point of small
    /// order (RFC 7748 §6.1): the shared secret would then be known to everybody, so the caller
    /// must refuse the input. The check is constant-time; the result is zeroed when dropped.
    pub fn diffie_hellman(&self, their_x25519: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self.dh(&MontgomeryPoint(*their_x25519));
        let zero: bool = shared.ct_eq(&[0u8; 32]).into();
        (!zero).then_some(shared)
    }

    /// `X25519(this key, point)`.
    pub(super) fn dh(&self, point: &MontgomeryPoint) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(point.mul_clamped(*self.scalar).to_bytes())
    }
}

impl fmt::Debug for BeaconKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BeaconKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A recipient's public key, checked and converted once.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient {
    pub(super) ed25519: [u8; 32],
    pub(super) x25519: MontgomeryPoint,
}

impl Recipient {
    /// From a raw Ed25519 public key. Refuses non-canonical encodings, points of small order
    /// and points outside the prime-order subgroup.
    pub fn from_ed25519(public_key: &[u8; 32]) -> Result<Recipient> {
        Ok(Recipient {
            ed25519: *public_key,
            x25519: ed25519_to_x25519(public_key)?,
        })
    }

    /// From an Ed25519 SubjectPublicKeyInfo (DER, 44 bytes), as in a certificate or an
    /// identity card.
    pub fn from_spki_der(spki: &[u8]) -> Result<Recipient> {
        let key = spki
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .and_then(|k| <&[u8; 32]>::try_from(k).ok())
            .ok_or(BeaconError::InvalidKey(
                "not an Ed25519 SubjectPublicKeyInfo",
            ))?;
        Self::from_ed25519(key)
    }

    /// The recipient's key id.
    pub fn key_id(&self) -> KeyId {
        ed25519_key_id(&self.ed25519)
    }

    /// The recipient's X25519 public key (the Montgomery form of its Ed25519 key), to seal to
    /// it with an ephemeral X25519 key; [`BeaconKey::diffie_hellman`] is the recipient's side.
    pub fn x25519_public(&self) -> [u8; 32] {
        self.x25519.to_bytes()
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Recipient").field(&self.key_id()).finish()
    }
}

pub(super) fn ed25519_key_id(public_key: &[u8; 32]) -> KeyId {
    let mut spki = [0u8; 44];
    spki[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
    spki[12..].copy_from_slice(public_key);
    KeyId::from_spki_der(&spki)
}

/// The birational map from Edwards to Montgomery form, for keys of large prime order only.
pub(super) fn ed25519_to_x25519(public_key: &[u8; 32]) -> Result<MontgomeryPoint> {
    let point = CompressedEdwardsY(*public_key)
        .decompress()
        .ok_or(BeaconError::InvalidKey("not a point on Ed25519"))?;
    if point.compress().as_bytes() != public_key {
        return Err(BeaconError::InvalidKey("non-canonical Ed25519 encoding"));
    }
    if point.is_small_order() || !point.is_torsion_free() {
        return Err(BeaconError::InvalidKey(
            "Ed25519 key not in the prime-order subgroup",
        ));
    }
    Ok(point.to_montgomery())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn arr(s: &str) -> [u8; 32] {
        hex(s).try_into().unwrap()
    }

    #[test]
    fn x25519_matches_rfc_7748() {
        // RFC 7748 §6.1.
        let alice = arr("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob = arr("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let alice_pub = MontgomeryPoint::mul_base_clamped(alice);
        let bob_pub = MontgomeryPoint::mul_base_clamped(bob);
        assert_eq!(
            alice_pub.to_bytes(),
            arr("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            bob_pub.to_bytes(),
            arr("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let shared = arr("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(bob_pub.mul_clamped(alice).to_bytes(), shared);
        assert_eq!(alice_pub.mul_clamped(bob).to_bytes(), shared);
    }

    #[test]
    fn secret_and_public_conversions_agree() {
        // RFC 8032 §7.1 test 1, and the birational map of its public key.
        let seed = arr("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let key = BeaconKey::from_seed(&seed).unwrap();
        assert_eq!(
            key.ed25519_public(),
            &arr("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        let converted = ed25519_to_x25519(key.ed25519_public()).unwrap();
        assert_eq!(
            converted, key.x25519,
            "pk_to_curve25519 == X25519(sk_to_curve25519)"
        );
        for seed in [[0u8; 32], [1; 32], [0xff; 32]] {
            let key = BeaconKey::from_seed(&seed).unwrap();
            assert_eq!(ed25519_to_x25519(&key.ed25519).unwrap(), key.x25519);
        }
    }

    #[test]
    fn weak_recipient_keys_are_refused() {
        // The identity (y = 1), a point of order 8-torsion, and a non-canonical encoding of y = 1.
        let identity = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        assert!(Recipient::from_ed25519(&identity).is_err());
        let order_4 = [0u8; 32]; // y = 0: (±i, 0) has order 4
        assert!(Recipient::from_ed25519(&order_4).is_err());
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee; // y = p + 1 ≡ 1
        non_canonical[31] = 0x7f;
        assert!(Recipient::from_ed25519(&non_canonical).is_err());
        // A good key with a torsion component added is refused.
        let key = BeaconKey::from_seed(&[7; 32]).unwrap();
        let point = CompressedEdwardsY(key.ed25519).decompress().unwrap();
        let eight_torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
        let mixed = (point + eight_torsion).compress().to_bytes();
        assert!(Recipient::from_ed25519(&mixed).is_err());
        assert!(Recipient::from_ed25519(&key.ed25519).is_ok());
        assert!(
            Recipient::from_spki_der(&key.ed25519).is_err(),
            "raw key is not an SPKI"
        );
    }

    #[test]
    fn pkcs8_v1_and_v2_give_the_same_key() {
        let rng = ring::rand::SystemRandom::new();
        let v2 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let from_v2 = BeaconKey::from_pkcs8(v2.as_ref()).unwrap();
        let mut v1 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        v1.extend_from_slice(&v2.as_ref()[16..48]);
        let from_v1 = BeaconKey::from_pkcs8(&v1).unwrap();
        assert_eq!(from_v1.key_id(), from_v2.key_id());
        assert_eq!(from_v1.x25519, from_v2.x25519);
        assert!(BeaconKey::from_pkcs8(&v1[..47]).is_err());
        assert!(BeaconKey::from_pkcs8(b"").is_err());
    }

    #[test]
    fn public_accessors_and_diffie_hellman_agree() {
        let alice = BeaconKey::from_seed(&[1; 32]).unwrap();
        let bob = BeaconKey::from_seed(&[2; 32]).unwrap();
        assert_eq!(alice.x25519_public(), alice.recipient().x25519_public());
        assert_eq!(
            Recipient::from_ed25519(alice.ed25519_public())
                .unwrap()
                .x25519_public(),
            alice.x25519_public()
        );
        // An ephemeral key on one side, the identity key on the other.
        let ephemeral = [9u8; 32];
        let ephemeral_public = MontgomeryPoint::mul_base_clamped(ephemeral).to_bytes();
        let sender_side = MontgomeryPoint(bob.recipient().x25519_public())
            .mul_clamped(ephemeral)
            .to_bytes();
        let bob_side = bob.diffie_hellman(&ephemeral_public).unwrap();
        assert_eq!(*bob_side, sender_side);
        assert_ne!(
            *alice.diffie_hellman(&ephemeral_public).unwrap(),
            sender_side
        );
        // Static-static agrees both ways.
        assert_eq!(
            *alice.diffie_hellman(&bob.x25519_public()).unwrap(),
            *bob.diffie_hellman(&alice.x25519_public()).unwrap()
        );
        // Points of small order give an all-zero secret and are refused: u = 0, u = 1, and
        // u = p - 1 (all of order ≤ 4 on Curve25519 or its twist).
        let mut p_minus_1 = [0xffu8; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        let mut one = [0u8; 32];
        one[0] = 1;
        for small in [[0u8; 32], one, p_minus_1] {
            assert!(bob.diffie_hellman(&small).is_none(), "{small:02x?}");
        }
    }

    #[test]
    fn key_ids_match_the_identity_crate() {
        let pair = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let key = BeaconKey::from_keypair(&pair).unwrap();
        assert_eq!(key.key_id(), pair.key_id());
        assert_eq!(
            Recipient::from_spki_der(pair.spki_der()).unwrap().key_id(),
            pair.key_id()
        );
        let ecdsa = KeyPair::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(matches!(
            BeaconKey::from_keypair(&ecdsa),
            Err(BeaconError::InvalidKey(_))
        ));
    }
}
