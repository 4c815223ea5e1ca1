//! Keypairs and key ids.
//!
//! A **key id** names a public key: the SHA-256 digest of the key's DER-encoded
//! SubjectPublicKeyInfo (RFC 5280 §4.1.2.7, the exact bytes that sit in an X.509 certificate),
//! written as RFC 4648 base32 (alphabet `a`–`z`, `2`–`7`), lowercase, without padding.
//!
//! Byte by byte: the 32 digest bytes are read as one 256-bit big-endian bit string; every 5 bits,
//! most significant first, select one character of `abcdefghijklmnopqrstuvwxyz234567`. 256 bits
//! make 51 whole characters and 1 bit left over, which is followed by 4 zero bits to make the 52nd
//! character. So a key id is always exactly 52 characters, and its last character is always one of
//! `a` or `q` (the leftover bit 0 or 1). Parsing accepts only that canonical form: lowercase, no
//! `=` padding, no whitespace, and zero trailing bits; anything else is an error, so every key has
//! exactly one spelling.
//!
//! Test vectors (digests written in hex):
//!
//! | digest | key id |
//! |---|---|
//! | `00` × 32 | `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa` |
//! | `ff` × 32 | `777777777777777777777777777777777777777777777777777q` |
//! | SHA-256 of the empty string, `e3b0c442…b855` | `4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq` |

use std::fmt;
use std::str::FromStr;

use rcgen::{PublicKeyData, SigningKey};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::crypto;
use crate::error::{Error, Result};

/// Length of a key id's text form.
pub const KEY_ID_LEN: usize = 52;

/// The name of a public key: SHA-256 of its SubjectPublicKeyInfo DER (see the [module docs](self)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// The key id of a DER-encoded SubjectPublicKeyInfo.
    pub fn from_spki_der(spki_der: &[u8]) -> KeyId {
        KeyId(crypto::sha256(spki_der))
    }

    /// Wraps a digest that is already known to be the SHA-256 of an SPKI.
    pub const fn from_digest(digest: [u8; 32]) -> KeyId {
        KeyId(digest)
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = data_encoding::BASE32_NOPAD.encode(&self.0);
        text.make_ascii_lowercase();
        f.write_str(&text)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<KeyId> {
        let invalid = |reason| Error::InvalidKeyId {
            input: s.chars().take(80).collect(),
            reason,
        };
        if s.len() != KEY_ID_LEN {
            return Err(invalid("a key id is exactly 52 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err(invalid(
                "a key id uses only the lowercase base32 alphabet a-z and 2-7",
            ));
        }
        let upper = s.to_ascii_uppercase();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(upper.as_bytes())
            .map_err(|_| {
                invalid("the last character must carry zero trailing bits ('a' or 'q')")
            })?;
        let digest: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid("a key id encodes exactly 32 bytes"))?;
        Ok(KeyId(digest))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<KeyId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The signature algorithms a key can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8032): the default; small, fast, deterministic signatures.
    #[default]
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256: for peers that lack Ed25519 (web browsers).
    EcdsaP256,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }

    /// The name used in identity cards: `ed25519` or `ecdsa-p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ed25519" => Ok(KeyAlgorithm::Ed25519),
            "ecdsa-p256" => Ok(KeyAlgorithm::EcdsaP256),
            _ => Err(Error::Key(format!(
                "unknown key algorithm {s:?} (expected ed25519 or ecdsa-p256)"
            ))),
        }
    }
}

/// RFC 8410 SubjectPublicKeyInfo of an Ed25519 key, before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The 32-byte Ed25519 public key in a DER SubjectPublicKeyInfo (RFC 8410), or `None` when it is
/// not exactly an Ed25519 one. The bytes are not checked to be a point on the curve.
pub fn ed25519_public_key_from_spki(spki_der: &[u8]) -> Option<[u8; 32]> {
    if spki_der.len() != ED25519_SPKI_PREFIX.len() + 32
        || !spki_der.starts_with(&ED25519_SPKI_PREFIX)
    {
        return None;
    }
    spki_der.get(ED25519_SPKI_PREFIX.len()..)?.try_into().ok()
}

/// A private key with its public half.
///
/// Signatures: Ed25519 as RFC 8032; ECDSA P-256 over SHA-256, DER-encoded (as in X.509 and TLS).
pub struct KeyPair {
    inner: rcgen::KeyPair,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    key_id: KeyId,
}

impl KeyPair {
    /// Generates a fresh keypair from the operating system's random source.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<KeyPair> {
        let inner = rcgen::KeyPair::generate_for(algorithm.rcgen())
            .map_err(|e| Error::Key(format!("generating a {algorithm} key: {e}")))?;
        Ok(Self::wrap(inner, algorithm))
    }

    fn wrap(inner: rcgen::KeyPair, algorithm: KeyAlgorithm) -> KeyPair {
        let spki = inner.subject_public_key_info();
        let key_id = KeyId::from_spki_der(&spki);
        KeyPair {
            inner,
            algorithm,
            spki,
            key_id,
        }
    }

    /// Loads a PKCS#8 private key from PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<KeyPair> {
        let inner = rcgen::KeyPair::from_pem(pem)
            .map_err(|e| Error::Key(format!("cannot parse PKCS#8 private key: {e}")))?;
        let algorithm = if inner.is_compatible(&rcgen::PKCS_ED25519) {
            KeyAlgorithm::Ed25519
        } else if inner.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            KeyAlgorithm::EcdsaP256
        } else {
            return Err(Error::Key(
                "unsupported private key type: only Ed25519 and ECDSA P-256 keys are identities"
                    .into(),
            ));
        };
        Ok(Self::wrap(inner, algorithm))
    }

    /// The private key as PKCS#8 PEM. Treat the string as secret.
    ///
    /// Ed25519 keys are written as PKCS#8 v1 (RFC 8410 §7: the 32-byte seed only), which every
    /// TLS stack reads — OpenSSL 3 (so Node, PouchDB and curl) refuses the v2 form `ring` makes.
    pub fn to_pkcs8_pem(&self) -> String {
        crate::identity::pem_encode("PRIVATE KEY", &self.pkcs8_der())
    }

    /// The private key as PKCS#8 DER, for rustls.
    pub fn to_private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8_der()))
    }

    fn pkcs8_der(&self) -> Vec<u8> {
        let der = self.inner.serialize_der();
        if self.algorithm != KeyAlgorithm::Ed25519 {
            return der;
        }
        // ring's v2 document: this header, the seed, then the public key ([1]).
        const V2_HEAD: [u8; 16] = [
            0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        // RFC 8410 §10.3: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING {
        // OCTET STRING (32 bytes) } }.
        const V1_HEAD: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        match (der.get(..16), der.get(16..48)) {
            (Some(head), Some(seed)) if head == V2_HEAD => {
                let mut v1 = V1_HEAD.to_vec();
                v1.extend_from_slice(seed);
                v1
            }
            _ => der,
        }
    }

    /// The 32-byte Ed25519 seed (RFC 8032's private key), for protocols that derive their own keys
    /// from the identity key — Tor's onion service identity, X25519 for beacons. `None` for
    /// other algorithms. Treat it as secret: it is zeroed when dropped.
    pub fn ed25519_seed(&self) -> Option<Zeroizing<[u8; 32]>> {
        if self.algorithm != KeyAlgorithm::Ed25519 {
            return None;
        }
        let der = Zeroizing::new(self.pkcs8_der());
        // The v1 document `pkcs8_der` writes: 16 bytes of header, then the seed.
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(der.get(16..48)?);
        Some(seed)
    }

    /// The 32-byte Ed25519 public key (RFC 8032), or `None` for other algorithms.
    pub fn ed25519_public_key(&self) -> Option<[u8; 32]> {
        ed25519_public_key_from_spki(&self.spki)
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The public key as DER-encoded SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The key id of the public key.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Signs `message` (see the type docs for the signature formats).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.inner
            .sign(message)
            .map_err(|e| Error::Key(format!("signing failed: {e}")))
    }

    pub(crate) fn rcgen(&self) -> &rcgen::KeyPair {
        &self.inner
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_vectors() {
        let zero = KeyId::from_digest([0; 32]);
        assert_eq!(
            zero.to_string(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        );
        let ones = KeyId::from_digest([0xff; 32]);
        assert_eq!(
            ones.to_string(),
            "777777777777777777777777777777777777777777777777777q"
        );
        let empty = KeyId::from_spki_der(b"");
        assert_eq!(
            empty.to_string(),
            "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"
        );
        assert_eq!(
            empty.as_bytes()[..4],
            [0xe3, 0xb0, 0xc4, 0x42],
            "SHA-256 of the empty string"
        );
    }

    #[test]
    fn ed25519_seed_and_public_key_are_the_keys() {
        let key = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let seed = key.ed25519_seed().unwrap();
        let public = key.ed25519_public_key().unwrap();
        // The seed signs as the key does (Ed25519 is deterministic), and ring derives the same
        // public key from it.
        let ring_pair =
            ring::signature::Ed25519KeyPair::from_seed_and_public_key(&seed[..], &public).unwrap();
        assert_eq!(
            ring_pair.sign(b"m").as_ref(),
            key.sign(b"m").unwrap().as_slice()
        );
        // A reloaded key has the same seed.
        let again = KeyPair::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(*again.ed25519_seed().unwrap(), *seed);
        assert_eq!(ed25519_public_key_from_spki(key.spki_der()), Some(public));

        let p256 = KeyPair::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(p256.ed25519_seed().is_none());
        assert!(p256.ed25519_public_key().is_none());
        assert!(ed25519_public_key_from_spki(p256.spki_der()).is_none());
        assert!(ed25519_public_key_from_spki(&key.spki_der()[1..]).is_none());
        assert!(ed25519_public_key_from_spki(b"").is_none());
    }

    #[test]
    fn rejects_non_canonical_text() {
        let good = "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq";
        assert!(good.parse::<KeyId>().is_ok());
        for bad in [
            "",
            &good[..51],
            &format!("{good}a"),
            &good.to_ascii_uppercase(),
            &format!("{}=", &good[..51]),
            // 'r' leaves a non-zero trailing bit.
            &format!("{}r", &good[..51]),
            &format!("{}1", &good[..51]),
            &format!(" {}", &good[..51]),
        ] {
            let err = bad.parse::<KeyId>().unwrap_err();
            assert!(matches!(err, Error::InvalidKeyId { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn ed25519_keys_are_written_as_pkcs8_v1_and_read_back() {
        let key = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let der = key.pkcs8_der();
        assert_eq!(der.len(), 48);
        assert_eq!(der[..5], [0x30, 0x2e, 0x02, 0x01, 0x00], "version 0 (v1)");
        let again = KeyPair::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        let message = b"signed with the reloaded key";
        let sig = again.sign(message).unwrap();
        assert!(crate::crypto::verify(key.spki_der(), message, &sig));
    }

    #[test]
    fn key_id_is_spki_hash_for_both_algorithms() {
        for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256] {
            let key = KeyPair::generate(alg).unwrap();
            assert_eq!(key.key_id(), KeyId::from_spki_der(key.spki_der()));
            let again = KeyPair::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
            assert_eq!(again.key_id(), key.key_id());
            assert_eq!(again.algorithm(), alg);
        }
    }

    #[test]
    fn serde_uses_text_form() {
        let id = KeyId::from_digest([7; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<KeyId>("\"nope\"").is_err());
    }

    proptest! {
        #[test]
        fn key_id_text_round_trips(bytes in any::<[u8; 32]>()) {
            let id = KeyId::from_digest(bytes);
            let text = id.to_string();
            prop_assert_eq!(text.len(), KEY_ID_LEN);
            prop_assert!(text.ends_with('a') || text.ends_with('q'));
            prop_assert_eq!(text.parse::<KeyId>().unwrap(), id);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,60}") {
            let _ = text.parse::<KeyId>();
        }
    }
}
