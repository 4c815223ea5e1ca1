//! Sealed store-and-forward messages: what relays (other people's devices) carry for somebody
//! else, seeing only a routing header, never the payload or the sender.
//!
//! A message is sealed to the recipient's identity key with a fresh ephemeral X25519 key
//! (ECIES, in the shape of HPKE's `Base` mode), and the sender is authenticated to the
//! recipient alone by a signature inside the ciphertext. The recipient publishes a
//! [`Receipt`] once it has the message, so relays can drop their copies.
//!
//! ```
//! use adhoc_wireless::beacon::{BeaconKey, Recipient};
//! use high_latency_mesh::seal::{self, MAX_MESSAGE_BYTES, SealedMessage};
//! use public_key_identity::{KeyAlgorithm, KeyPair};
//!
//! let alice = KeyPair::generate(KeyAlgorithm::Ed25519)?;
//! let bob = KeyPair::generate(KeyAlgorithm::Ed25519)?;
//! let now = 1_700_000_000_000; // ms since the Unix epoch, from the caller's clock
//! let week = 7 * 24 * 3600 * 1000;
//!
//! // Alice knows Bob by the public key in his certificate or identity card.
//! let to_bob = Recipient::from_spki_der(bob.spki_der())?;
//! let sealed = seal::seal(&alice, &to_bob, b"see you at the market", now, now + week)?;
//!
//! // Relays store and forward the bytes; they can read the header only.
//! let wire = sealed.to_bytes();
//! let carried = SealedMessage::from_bytes(&wire, MAX_MESSAGE_BYTES)?;
//! assert!(carried.header().is_for(&bob.key_id()));
//!
//! let opened = seal::open(&BeaconKey::from_keypair(&bob)?, &carried, now + 3600_000)?;
//! assert_eq!(opened.sender, alice.key_id());
//! assert_eq!(opened.payload, b"see you at the market");
//! assert!(opened.receipt.clears_message(&carried));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Wire format (version 1)
//!
//! A sealed message is `header ‖ body`: exactly `86 + body_len` bytes, at most
//! [`MAX_MESSAGE_BYTES`] unless a store is configured otherwise. All integers are big-endian;
//! `‖` is concatenation. The [`Header`]:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | `version`: `0x01` (any other is refused) |
//! | 1 | 1 | `flags`: `0x00` (none are defined; a message with any flag set is refused) |
//! | 2 | 16 | `dest`: the [`DestTag`] of the recipient's key id |
//! | 18 | 8 | `created_ms`: `u64` milliseconds since 1970-01-01T00:00Z, by the sender's clock |
//! | 26 | 8 | `expires_ms`: `u64` milliseconds since the epoch; must be greater than `created_ms` |
//! | 34 | 16 | `ack_hash`: SHA-256(`"thali-mesh/ack/v1" ‖ ack`)[0..16], see [receipts](#delivery-receipts) |
//! | 50 | 32 | `E`: the ephemeral X25519 public key (RFC 7748 `u`; its most significant bit must be 0) |
//! | 82 | 4 | `body_len`: `u32`, the body's length: ciphertext including its 16-byte tag (at least 16) |
//! | 86 | `body_len` | body: ChaCha20-Poly1305 ciphertext of the plaintext, then the tag |
//!
//! The plaintext inside the body:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | `u16` length `a` of the sender's public key |
//! | 2 | `a` | the sender's SubjectPublicKeyInfo, DER: Ed25519 (44 bytes, RFC 8410) or ECDSA P-256 (91 bytes, uncompressed point) |
//! | 2 + `a` | 2 | `u16` length `s` of the signature |
//! | 4 + `a` | `s` | the signature: Ed25519 (64 bytes) or ECDSA P-256 with SHA-256, ASN.1 DER (at most 72 bytes) |
//! | 4 + `a` + `s` | the rest | the payload |
//!
//! Labels are ASCII without a terminator. The [`MessageId`] is SHA-256(`"thali-mesh/id/v1" ‖`
//! the whole wire bytes), stored under the couch-sync document id `"m-" ‖ hex(id)`; the
//! [`DestTag`] is SHA-256(`"thali-mesh/tag/v1" ‖` the recipient's 32 key-id bytes)[0..16].
//!
//! # Key schedule
//!
//! `X25519` is RFC 7748's function; `HKDF` is RFC 5869 with SHA-256, extract then expand.
//! The recipient's X25519 key `R` is its Ed25519 identity key in Montgomery form, and its
//! secret `r` the matching scalar (see `adhoc_wireless::beacon`'s *Keys* section for why one
//! key pair may serve both): [`Recipient::x25519_public`] and [`BeaconKey::diffie_hellman`].
//!
//! ```text
//! e         = 32 fresh random bytes                         (never reused)
//! E         = X25519(e, 9)
//! Z         = X25519(e, R)          = X25519(r, E)          (all zeros: refused)
//! k ‖ ack   = HKDF(salt "thali-mesh/v1", ikm Z, info E ‖ R, 64 bytes)
//!                                   k = bytes 0..32 (the AEAD key), ack = bytes 32..64
//! ack_hash  = SHA-256("thali-mesh/ack/v1" ‖ ack)[0..16]
//! signature = Sign(sender, "thali-mesh/sig/v1" ‖ header[0..82] ‖ payload)
//! body      = ChaCha20-Poly1305(key k, nonce 0^96, aad header[0..86], plaintext)
//! ```
//!
//! The nonce is all zeros because `k` encrypts exactly one message: `e` is fresh for each, so
//! `k` is too. The signature covers every header field but `body_len`, which depends on the
//! signature's own length (ECDSA's varies); the AEAD covers all 86 header bytes, and
//! `body_len` is the length of what it authenticates.
//!
//! To [`open`], the recipient checks the tag is its own, computes `Z`, `k` and `ack`, opens
//! the body with the header as AAD, checks `ack_hash` (so that its receipt will clear the
//! message), parses the plaintext within its bounds and verifies the signature against the
//! sender key it carries; the sender is that key's [`KeyId`]. [`open`] does **not** look at
//! the expiry: a late message still opens, and the caller decides whether to drop it
//! ([`Header::is_expired`]).
//!
//! # Delivery receipts
//!
//! The recipient publishes a [`Receipt`], `id ‖ ack` (64 bytes). Any relay checks it with
//! [`Receipt::clears`] (SHA-256 of the ack against the header's `ack_hash`) and drops the
//! message. Only the sender and the recipient know `ack` before it is published (it needs `Z`),
//! so relays can verify a receipt but not forge one. It names neither party, and is unlinkable
//! to any other message: where it first appears is the transport's business.
//!
//! # What a relay sees, and what it cannot do
//!
//! A relay sees the header: the destination tag (stable: anyone who knows the recipient's key
//! id recognises its messages, and anyone can link messages to the same recipient), when the
//! message was created and when it expires (so the sender's clock and sending time: a sender
//! may round `created_ms`), its size (the payload's length to within the sender's key type;
//! pad the payload if that matters), the ack hash and the ephemeral key (fresh per message: it
//! links nothing). It cannot see the sender, the signature or the payload.
//!
//! It cannot change any byte without the recipient refusing the message (the AEAD covers the
//! header; a changed body fails its tag), and any change gives another [`MessageId`]. It can
//! drop, delay and duplicate messages (duplicates have the same id, so stores keep one), and it
//! can seal messages of its own to anybody, like anyone else: only the signature inside tells
//! the recipient who sent a message.
//!
//! The recipient learns the sender and the payload, and holds the sender's signature over them
//! and over the header (which names the recipient's tag): unlike a beacon, a sealed message is
//! **not deniable**: the recipient can show it to others. Whoever gets the recipient's secret
//! key can open every message ever sealed to it that it finds (no forward secrecy for
//! store-and-forward).

use adhoc_wireless::beacon::{BeaconKey, Recipient};
use curve25519_dalek::montgomery::MontgomeryPoint;
use public_key_identity::{KeyId, KeyPair, ed25519_public_key_from_spki};
use ring::{aead, hkdf, signature};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

mod receipt;
mod wire;

pub use receipt::Receipt;
pub use wire::{DestTag, Header, MAX_MESSAGE_BYTES, MessageId, SealedMessage};

use receipt::ack_hash;
use wire::{AEAD_TAG_LEN, OFF_BODY_LEN, Reader, VERSION, len_u64};

const SALT: &[u8] = b"thali-mesh/v1";
const SIG_LABEL: &[u8] = b"thali-mesh/sig/v1";

/// RFC 5480 SubjectPublicKeyInfo of an ECDSA P-256 key (id-ecPublicKey, prime256v1), before
/// the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A message opened by its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Who sealed it: the key id of the key that signed it.
    pub sender: KeyId,
    /// The sender's public key (SubjectPublicKeyInfo DER), as it signed.
    pub sender_spki: Vec<u8>,
    /// What the sender sent.
    pub payload: Vec<u8>,
    /// The receipt to publish so that relays drop the message.
    pub receipt: Receipt,
}

/// Seals `payload` from `sender` to `recipient`, to be carried until `expires_ms`, with a fresh
/// ephemeral key from the operating system's random source.
///
/// `created_ms` and `expires_ms` are milliseconds since the Unix epoch, from the caller's clock;
/// `expires_ms` must be greater than `created_ms`. The sender's key may be Ed25519 or ECDSA
/// P-256; the recipient's is always Ed25519 (a [`Recipient`]). A payload that would make a
/// message larger than [`MAX_MESSAGE_BYTES`] is refused ([`Error::InvalidArgument`]).
pub fn seal(
    sender: &KeyPair,
    recipient: &Recipient,
    payload: &[u8],
    created_ms: u64,
    expires_ms: u64,
) -> Result<SealedMessage> {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut secret[..]).map_err(|e| Error::Crypto(format!("random source: {e}")))?;
    seal_with_ephemeral(sender, recipient, payload, created_ms, expires_ms, *secret)
}

/// [`seal`] with a given ephemeral secret, deterministically (Ed25519 signatures are
/// deterministic; ECDSA ones are not): for test vectors only. **Never reuse a secret**: two
/// messages to the same recipient under one secret share their AEAD key and nonce, which
/// reveals the XOR of their plaintexts and lets whoever holds both forge messages.
pub fn seal_with_ephemeral(
    sender: &KeyPair,
    recipient: &Recipient,
    payload: &[u8],
    created_ms: u64,
    expires_ms: u64,
    ephemeral_secret: [u8; 32],
) -> Result<SealedMessage> {
    let secret = Zeroizing::new(ephemeral_secret);
    if expires_ms <= created_ms {
        return Err(Error::InvalidArgument(format!(
            "a message must expire after it is created (created {created_ms}, expires {expires_ms})"
        )));
    }
    let ephemeral = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
    let r = recipient.x25519_public();
    let shared = Zeroizing::new(MontgomeryPoint(r).mul_clamped(*secret).to_bytes());
    if *shared == [0u8; 32] {
        return Err(Error::Key("recipient key of small order".into()));
    }
    let keys = KeySchedule::derive(&shared, &ephemeral, &r)?;

    let mut header = Header {
        version: VERSION,
        flags: 0,
        dest: DestTag::of(&recipient.key_id()),
        created_ms,
        expires_ms,
        ack_hash: ack_hash(&keys.ack),
        ephemeral,
        body_len: 0, // not signed; set below
    };
    let signature = sender
        .sign(&signed_bytes(&header, payload))
        .map_err(|e| Error::Key(e.to_string()))?;
    let spki = sender.spki_der();
    let spki_len = u16::try_from(spki.len())
        .map_err(|_| Error::Key("sender public key longer than 65535 bytes".into()))?;
    let signature_len = u16::try_from(signature.len())
        .map_err(|_| Error::Key("signature longer than 65535 bytes".into()))?;

    let too_large = || {
        Error::InvalidArgument(format!(
            "a payload of {} bytes does not fit in a sealed message of {MAX_MESSAGE_BYTES} bytes",
            payload.len()
        ))
    };
    let body_len = (4 + spki.len() + signature.len() + AEAD_TAG_LEN)
        .checked_add(payload.len())
        .ok_or_else(too_large)?;
    if len_u64(Header::LEN) + len_u64(body_len) > MAX_MESSAGE_BYTES {
        return Err(too_large());
    }
    header.body_len = u32::try_from(body_len).map_err(|_| too_large())?;

    let mut body = Vec::with_capacity(body_len);
    body.extend_from_slice(&spki_len.to_be_bytes());
    body.extend_from_slice(spki);
    body.extend_from_slice(&signature_len.to_be_bytes());
    body.extend_from_slice(&signature);
    body.extend_from_slice(payload);
    keys.aead_key()?
        .seal_in_place_append_tag(nonce(), aead::Aad::from(header.to_bytes()), &mut body)
        .map_err(|_| Error::Crypto("ChaCha20-Poly1305 seal".into()))?;
    Ok(SealedMessage {
        header,
        ciphertext: body,
    })
}

/// Opens a message sealed to `me`: decrypts it, checks the sender's signature and returns the
/// sender, the payload and the receipt to publish.
///
/// Errors: [`Error::Open`] when the message is not addressed to this key (`"not addressed to
/// this key"`), was altered or does not decrypt, or its signature or ack hash is wrong;
/// [`Error::Malformed`] when the decrypted plaintext is not in the format (a sender bug or a
/// malicious sender).
///
/// The expiry is **not** checked, whatever `now_ms` says: a message that arrives late still
/// opens, and whether to act on it is the caller's policy ([`Header::is_expired`] with the same
/// `now_ms`). `now_ms` is taken so that callers pass their clock's time at the point of opening,
/// and is reserved for checks a later version may need.
pub fn open(me: &BeaconKey, message: &SealedMessage, now_ms: u64) -> Result<Opened> {
    let _ = now_ms;
    let header = message.header();
    if !header.is_for(&me.key_id()) {
        return Err(Error::Open("not addressed to this key"));
    }
    let shared = me
        .diffie_hellman(&header.ephemeral)
        .ok_or(Error::Open("ephemeral key of small order"))?;
    let keys = KeySchedule::derive(&shared, &header.ephemeral, &me.x25519_public())?;
    let mut body = message.ciphertext().to_vec();
    let plaintext = keys
        .aead_key()?
        .open_in_place(nonce(), aead::Aad::from(header.to_bytes()), &mut body)
        .map_err(|_| Error::Open("does not decrypt: altered, or not sealed to this key"))?;
    if ack_hash(&keys.ack) != header.ack_hash {
        return Err(Error::Open("the ack hash does not match the key schedule"));
    }

    let malformed = |reason: &str| Error::Malformed {
        what: "sealed message plaintext",
        reason: reason.into(),
    };
    let mut r = Reader(plaintext);
    let spki = r
        .u16_prefixed()
        .ok_or_else(|| malformed("truncated sender key"))?;
    let signature = r
        .u16_prefixed()
        .ok_or_else(|| malformed("truncated signature"))?;
    let payload = r.rest();
    let ed25519 = ed25519_public_key_from_spki(spki);
    let p256 = spki
        .strip_prefix(&P256_SPKI_PREFIX[..])
        .filter(|point| point.len() == 65);
    let (algorithm, public_key): (&dyn signature::VerificationAlgorithm, &[u8]) =
        if let Some(key) = &ed25519 {
            (&signature::ED25519, key)
        } else if let Some(point) = p256 {
            (&signature::ECDSA_P256_SHA256_ASN1, point)
        } else {
            return Err(malformed(
                "the sender key is neither an Ed25519 nor an ECDSA P-256 SubjectPublicKeyInfo",
            ));
        };
    signature::UnparsedPublicKey::new(algorithm, public_key)
        .verify(&signed_bytes(header, payload), signature)
        .map_err(|_| Error::Open("the sender's signature does not verify"))?;
    Ok(Opened {
        sender: KeyId::from_spki_der(spki),
        sender_spki: spki.to_vec(),
        payload: payload.to_vec(),
        receipt: Receipt {
            id: message.id(),
            ack: keys.ack,
        },
    })
}

/// What the sender signs: `"thali-mesh/sig/v1" ‖ header[0..82] ‖ payload`.
fn signed_bytes(header: &Header, payload: &[u8]) -> Vec<u8> {
    let header = header.to_bytes();
    let signed_header = header.get(..OFF_BODY_LEN).unwrap_or_default();
    let mut out = Vec::with_capacity(SIG_LABEL.len() + OFF_BODY_LEN + payload.len());
    out.extend_from_slice(SIG_LABEL);
    out.extend_from_slice(signed_header);
    out.extend_from_slice(payload);
    out
}

/// The AEAD key and the ack secret of one message.
struct KeySchedule {
    aead: Zeroizing<[u8; 32]>,
    ack: [u8; 32],
}

/// An HKDF-SHA256 output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl KeySchedule {
    /// `k ‖ ack = HKDF(salt "thali-mesh/v1", ikm Z, info E ‖ R, 64)`.
    fn derive(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> Result<Self> {
        let mut okm = Zeroizing::new([0u8; 64]);
        let info: [&[u8]; 2] = [ephemeral, recipient];
        hkdf::Salt::new(hkdf::HKDF_SHA256, SALT)
            .extract(shared)
            .expand(&info, Len(okm.len()))
            .and_then(|okm_reader| okm_reader.fill(&mut okm[..]))
            .map_err(|_| Error::Crypto("HKDF-SHA256".into()))?;
        let (aead_bytes, ack_bytes) = okm.split_at(32);
        let mut keys = KeySchedule {
            aead: Zeroizing::new([0u8; 32]),
            ack: [0u8; 32],
        };
        keys.aead.copy_from_slice(aead_bytes);
        keys.ack.copy_from_slice(ack_bytes);
        Ok(keys)
    }

    fn aead_key(&self) -> Result<aead::LessSafeKey> {
        let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &self.aead[..])
            .map_err(|_| Error::Crypto("ChaCha20-Poly1305 key".into()))?;
        Ok(aead::LessSafeKey::new(key))
    }
}

/// Every AEAD key encrypts exactly one message (it comes from a fresh ephemeral key).
fn nonce() -> aead::Nonce {
    aead::Nonce::assume_unique_for_key([0u8; 12])
}

#[cfg(test)]
mod tests {
    use super::*;
    use public_key_identity::KeyAlgorithm;

    struct Parties {
        alice: KeyPair,
        bob: KeyPair,
        bob_key: BeaconKey,
        to_bob: Recipient,
    }

    fn parties() -> Parties {
        let alice = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let bob = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let bob_key = BeaconKey::from_keypair(&bob).unwrap();
        let to_bob = Recipient::from_spki_der(bob.spki_der()).unwrap();
        Parties {
            alice,
            bob,
            bob_key,
            to_bob,
        }
    }

    #[test]
    fn seal_and_open_agree_on_the_key_schedule() {
        let p = parties();
        let secret = [0x42; 32];
        let sealed = seal_with_ephemeral(&p.alice, &p.to_bob, b"hi", 1, 2, secret).unwrap();
        let e = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        assert_eq!(sealed.header().ephemeral, e);
        let z = p.bob_key.diffie_hellman(&e).unwrap();
        let keys = KeySchedule::derive(&z, &e, &p.to_bob.x25519_public()).unwrap();
        assert_eq!(sealed.header().ack_hash, ack_hash(&keys.ack));
        assert_ne!(*keys.aead, keys.ack);
        let opened = open(&p.bob_key, &sealed, 1).unwrap();
        assert_eq!(opened.receipt.ack, keys.ack);
        assert_eq!(opened.sender, p.alice.key_id());
        assert_eq!(opened.sender_spki, p.alice.spki_der());
        assert!(sealed.header().is_for(&p.bob.key_id()));
        assert!(!sealed.header().is_for(&p.alice.key_id()));
    }

    #[test]
    fn seal_checks_its_arguments() {
        let p = parties();
        for (created, expires) in [(5, 5), (6, 5)] {
            let err = seal(&p.alice, &p.to_bob, b"", created, expires).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        }
        // The largest payload that fits, and one byte more.
        let overhead = Header::LEN + 4 + p.alice.spki_der().len() + 64 + AEAD_TAG_LEN;
        let fits = vec![0u8; MAX_MESSAGE_BYTES as usize - overhead];
        let sealed = seal(&p.alice, &p.to_bob, &fits, 0, 1).unwrap();
        assert_eq!(sealed.size(), MAX_MESSAGE_BYTES);
        assert_eq!(
            SealedMessage::from_bytes(&sealed.to_bytes(), MAX_MESSAGE_BYTES).unwrap(),
            sealed
        );
        let too_big = vec![0u8; fits.len() + 1];
        assert!(matches!(
            seal(&p.alice, &p.to_bob, &too_big, 0, 1),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn open_refuses_a_wrong_ack_hash_from_the_sender() {
        // A sender that writes a wrong ack hash (the AEAD covers it, so only the sender can):
        // its receipt would never clear the message, so the recipient refuses it.
        let p = parties();
        let secret = [7; 32];
        let sealed = seal_with_ephemeral(&p.alice, &p.to_bob, b"x", 1, 2, secret).unwrap();
        let z = p.bob_key.diffie_hellman(&sealed.header.ephemeral).unwrap();
        let keys =
            KeySchedule::derive(&z, &sealed.header.ephemeral, &p.to_bob.x25519_public()).unwrap();
        let mut header = sealed.header;
        header.ack_hash = [0; 16];
        let mut body = sealed.ciphertext.clone();
        keys.aead_key()
            .unwrap()
            .open_in_place(
                nonce(),
                aead::Aad::from(sealed.header.to_bytes()),
                &mut body,
            )
            .unwrap();
        body.truncate(body.len() - AEAD_TAG_LEN);
        keys.aead_key()
            .unwrap()
            .seal_in_place_append_tag(nonce(), aead::Aad::from(header.to_bytes()), &mut body)
            .unwrap();
        let forged = SealedMessage {
            header,
            ciphertext: body,
        };
        assert!(matches!(
            open(&p.bob_key, &forged, 1),
            Err(Error::Open("the ack hash does not match the key schedule"))
        ));
    }

    #[test]
    fn open_refuses_malformed_plaintexts_from_the_sender() {
        // Plaintexts only a sender could write (it knows k), each refused without a panic.
        let p = parties();
        let secret = [9; 32];
        let e = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        let z = p.bob_key.diffie_hellman(&e).unwrap();
        let keys = KeySchedule::derive(&z, &e, &p.to_bob.x25519_public()).unwrap();
        let spki = p.alice.spki_der();
        let mut wrong_key = vec![0, 3, 1, 2, 3, 0, 0];
        wrong_key.extend_from_slice(b"payload");
        let mut no_sig = (spki.len() as u16).to_be_bytes().to_vec();
        no_sig.extend_from_slice(spki);
        no_sig.extend_from_slice(&[0, 64]);
        for plaintext in [vec![], vec![0], vec![0, 5, 1], wrong_key, no_sig] {
            let mut header = Header {
                version: VERSION,
                flags: 0,
                dest: DestTag::of(&p.bob.key_id()),
                created_ms: 1,
                expires_ms: 2,
                ack_hash: ack_hash(&keys.ack),
                ephemeral: e,
                body_len: 0,
            };
            header.body_len = (plaintext.len() + AEAD_TAG_LEN) as u32;
            let mut body = plaintext.clone();
            keys.aead_key()
                .unwrap()
                .seal_in_place_append_tag(nonce(), aead::Aad::from(header.to_bytes()), &mut body)
                .unwrap();
            let message = SealedMessage {
                header,
                ciphertext: body,
            };
            let err = open(&p.bob_key, &message, 1).unwrap_err();
            assert!(
                matches!(err, Error::Malformed { .. }),
                "{plaintext:?}: {err}"
            );
        }
    }

    #[test]
    fn open_refuses_a_small_order_ephemeral_key() {
        let p = parties();
        let sealed = seal(&p.alice, &p.to_bob, b"x", 1, 2).unwrap();
        let message = SealedMessage {
            header: Header {
                ephemeral: [0; 32],
                ..sealed.header
            },
            ciphertext: sealed.ciphertext,
        };
        assert!(matches!(
            open(&p.bob_key, &message, 1),
            Err(Error::Open("ephemeral key of small order"))
        ));
    }

    #[test]
    fn p256_spki_template_matches_the_identity_crate() {
        let key = KeyPair::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert_eq!(key.spki_der().len(), 91);
        assert!(key.spki_der().starts_with(&P256_SPKI_PREFIX));
    }
}
