//! "I have data for you" beacons: one short advert that tells each of its recipients who has
//! data for it, and tells everybody else nothing they can use.
//!
//! This is the Thali beacon (an ephemeral key, and per recipient an entry that only that
//! recipient can open) rebuilt on X25519, HKDF-SHA256 and ChaCha20-Poly1305, in the shape of a
//! multi-recipient KEM/DEM: the sender's identity is encrypted once, under a fresh 128-bit key
//! `K`, and each recipient's entry wraps `K` for that recipient and authenticates the sender to
//! it, as HPKE's `Auth` mode does (RFC 9180 §5.1.3).
//!
//! ```
//! use adhoc_wireless::beacon::{check, BeaconBuilder, BeaconKey, Recipient, SizeClass};
//! use public_key_identity::{KeyAlgorithm, KeyPair};
//!
//! let alice = KeyPair::generate(KeyAlgorithm::Ed25519)?;
//! let bob = KeyPair::generate(KeyAlgorithm::Ed25519)?;
//! let carol = KeyPair::generate(KeyAlgorithm::Ed25519)?;
//! let alice_key = BeaconKey::from_keypair(&alice)?;
//! let bob_key = BeaconKey::from_keypair(&bob)?;
//! let carol_key = BeaconKey::from_keypair(&carol)?;
//!
//! // Alice knows Bob by the public key in his certificate or identity card.
//! let now = 29_000_000; // minutes since 1970-01-01T00:00Z, from the caller's clock
//! let advert = BeaconBuilder::new(&alice_key)
//!     .size_class(SizeClass::Small)
//!     .recipient(Recipient::from_spki_der(bob.spki_der())?)
//!     .build(now + 15, &mut ring::rand::SystemRandom::new())?;
//! assert_eq!(advert.len(), SizeClass::Small.advert_len());
//!
//! assert_eq!(check(&advert, &bob_key, now)?, Some(alice.key_id()));
//! assert_eq!(check(&advert, &carol_key, now)?, None);
//! assert!(check(&advert, &bob_key, now + 16).is_err(), "expired");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Format (version 1)
//!
//! An advert is `header ‖ entries ‖ body`, `38 + 24·n + 48` bytes for `n` slots. All
//! integers are big-endian; `‖` is concatenation.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, `0x01` |
//! | 1 | 1 | `n`, the number of entry slots: 1 ..= [`MAX_RECIPIENTS`] (the sender uses 5 or 20, see [`SizeClass`]) |
//! | 2 | 4 | expiry: `u32` minutes since 1970-01-01T00:00Z; the advert is valid while `now ≤ expiry` |
//! | 6 | 32 | `E`, the sender's ephemeral X25519 public key (its most significant bit must be 0) |
//! | 38 | 24·n | `n` entries, in an order that is a uniformly random permutation |
//! | 38 + 24·n | 48 | body: ChaCha20-Poly1305 ciphertext (32) and tag (16) of `A` |
//!
//! The first 38 bytes are the **header** `H`. Each entry is
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | `find`: lets the recipient skip the entries that are not its own |
//! | 2 | 16 | `K ⊕ pad` |
//! | 18 | 6 | `mac`: authenticates the sender to the recipient |
//!
//! An unused slot is 24 random bytes. The length must be exactly `86 + 24·n`.
//!
//! ## How the sender makes it
//!
//! Notation: `A` is the sender's Ed25519 public key (32 bytes), `s` its X25519 secret (below),
//! `R` a recipient's X25519 public key, `e`/`E` a fresh ephemeral X25519 key pair, `K` 16 fresh
//! random bytes. `X25519` is RFC 7748's function; `HKDF(salt, ikm, info, L)` is RFC 5869 with
//! SHA-256 (extract, then expand to `L` bytes). Labels are ASCII without a terminator.
//!
//! ```text
//! for each recipient R:
//!     Ze         = X25519(e, R)
//!     find ‖ pad = HKDF("thali-beacon-v1 find", Ze, H ‖ R, 18)          (2 + 16 bytes)
//!     Zs         = X25519(s, R)
//!     mac        = HKDF("thali-beacon-v1 auth", Ze ‖ Zs, H ‖ R ‖ A ‖ K, 6)
//!     entry      = find ‖ (K ⊕ pad) ‖ mac
//! fill the other slots with random bytes; shuffle all n slots (Fisher–Yates)
//! Kb   = HKDF("thali-beacon-v1 body", K, H, 32)
//! body = ChaCha20-Poly1305(key Kb, nonce 0^96, aad H ‖ entries, plaintext A)
//! ```
//!
//! The random source is drawn in this order (the test vectors depend on it): `e` (32 bytes),
//! `K` (16), 24 bytes per unused slot, then for the shuffle, for `i` from `n − 1` down to 1, a
//! big-endian `u32` `v` drawn until `v < ⌊2³²/(i+1)⌋·(i+1)`, swapping slots `i` and `v mod (i+1)`.
//!
//! ## How a recipient checks it ([`check`])
//!
//! Parse and bound the header (version, `n`, exact length, `E`'s top bit); refuse an expired
//! advert, or one whose expiry is more than [`MAX_LIFETIME_MINUTES`] ahead; compute `Ze` with its
//! secret `r` (an all-zero `Ze` means a small-order `E`: malformed) and `find ‖ pad`. For each
//! entry whose `find` matches: unwrap `K`, derive `Kb` and open the body. The first entry that
//! opens gives `A`; the recipient checks that `A` is a canonical Ed25519 point of large prime
//! order, computes `Zs = X25519(r, A as X25519)` and compares `mac` in constant time. A body
//! that opens with a `mac` that does not verify is [`BeaconError::Unauthentic`]. The sender is
//! the key id of `A`: SHA-256 of the Ed25519 SubjectPublicKeyInfo
//! `30 2a 30 05 06 03 2b 65 70 03 21 00 ‖ A` (see `public_key_identity::key`).
//!
//! Cost: a non-recipient does one X25519, one HKDF and `n` two-byte comparisons; a recipient
//! also one more X25519, a point decompression and a subgroup check. On a 2-core x86_64 VM
//! (`cargo bench -p adhoc-wireless --bench beacons`): checking a 20-slot advert takes about
//! 86 µs for a non-recipient and 236 µs for a recipient whose entry is last; building takes
//! about 0.21 ms for one recipient and 3.5 ms for 20.
//!
//! # Keys
//!
//! Recipients are known to the sender by their identity key (Ed25519, from a certificate or an
//! identity card), so a beacon needs no key exchange beyond the one the devices already did.
//! The Ed25519 public key maps to X25519 by the birational map from Edwards to Montgomery form
//! (`u = (1 + y)/(1 − y)`), and the Ed25519 seed to the X25519 secret `s = clamp(SHA-512(seed)[0..32])`
//! — the same scalar Ed25519 signs with. This is libsodium's `crypto_sign_ed25519_pk_to_curve25519`
//! / `crypto_sign_ed25519_sk_to_curve25519`, and what age's `ssh-ed25519` recipients do; both
//! have shipped it for years. One key pair for Ed25519 signatures and an X25519 DH-based KEM is
//! analysed as jointly secure (random-oracle model) by Thormarker, "On using the same key pair
//! for Ed25519 and an X25519 based KEM" (IACR ePrint 2021/509); the static–static DH used here
//! for sender authentication goes a step beyond that KEM, in the same spirit: the DH outputs
//! only ever enter HKDF (they are never revealed, signed or used as a signing nonce), and the
//! other half of the SHA-512 (Ed25519's nonce key) is never touched. A separate
//! X25519 key in the identity card would need a new card format, a binding signature and a key
//! rotation story, for no gain we can name. The recipient's key must be canonical, not of small
//! order and in the prime-order subgroup (as libsodium checks); [`Recipient`] enforces it once.
//! Only Ed25519 identities can send or receive beacons (ECDSA P-256 identities cannot).
//!
//! # Threat model
//!
//! A **passive neighbour** learns that a beacon exists (some device nearby speaks this
//! protocol), its size class (5 or 20 slots), its expiry minute, and what the radio itself shows
//! (addresses, signal strength, timing of refreshes: rotating those is the transport's job). It
//! does not learn the sender, any recipient, or how many recipients there are (0 ..= n: unused
//! slots are random bytes, indistinguishable from entries under the decisional Diffie–Hellman
//! assumption and HKDF as a PRF, and the order is shuffled; an advert with no recipient at all
//! is cover traffic). Two refreshes share only the version, `n` and possibly the expiry: `E`,
//! `K`, every entry and the body are fresh, so the bytes do not link them. A sender should pick
//! the size class by transport (Small on BLE, Large on the LAN), not by recipient count, and
//! round expiries to a coarse grid shared by everybody (say 5 minutes), or both leak a little.
//!
//! An **active neighbour** cannot change any bit without every recipient refusing the advert
//! (the body's AEAD covers the header and all entries; the entries depend on the header), cannot
//! extend the expiry, and cannot make an entry that names a sender whose secret key it lacks
//! (the 48-bit `mac` needs `X25519(s, R)`; each try costs the attacker a broadcast and the victim
//! reports it as [`BeaconError::Unauthentic`], so 2⁻⁴⁸ per try is ample). It **can replay** an
//! advert until it expires, anywhere: within its lifetime a replay is indistinguishable from the
//! original. A recipient that reacts by trying to reach the sender reveals its presence to
//! whoever replays; keep lifetimes short (minutes) and react only to senders you know.
//!
//! A **recipient** learns the sender's identity and that it is a recipient, and nothing about
//! the other recipients (their entries need `X25519(e, R')`). It knows `K`, but cannot forge an
//! entry to another recipient (that needs `Ze` for it) nor change the sender or the expiry
//! others see (their `find` binds `H`, their `mac` binds `H`, `A` and `K`). Knowing `K`, it can
//! re-seal a copy with other recipients' entries blanked: no worse than not relaying the
//! advert. It cannot prove to anyone else that the sender sent the beacon (it could have
//! computed the `mac` itself, from `r`: deniable).
//!
//! **Key compromise.** The recipient's secret opens all its past beacons (no forward secrecy
//! for a non-interactive advert) and lets its holder forge beacons to that recipient from
//! anyone (key-compromise impersonation, as in every static-DH authentication). The sender's
//! secret does not reveal the recipients of its past beacons (`e` is gone) but lets its holder
//! send beacons in its name. X25519 is not post-quantum: a future quantum adversary that
//! recorded beacons could learn who signalled whom (metadata, not data).
//!
//! # Byte budget
//!
//! | class | slots (recipient cap) | beacon bytes | fits |
//! |---|---|---|---|
//! | [`SizeClass::Small`] | 5 | 206 | one BLE 5 extended advertising PDU |
//! | [`SizeClass::Large`] | 20 ([`MAX_RECIPIENTS`]) | 566 ([`MAX_LEN`]) | three DNS TXT strings |
//!
//! **BLE 5 extended advertising**: an `AUX_ADV_IND` PDU carries at most 255 payload bytes; the
//! extended header takes 10 (header length and mode, flags, AdvA, ADI; 11 with TxPower), leaving
//! 244–245 bytes of AdvData without chaining. A Service Data AD structure (length, type `0x16`,
//! 16-bit UUID) costs 4 and this crate's advert framing 5 (see [`crate::Advert`]), so a Small
//! beacon (206) leaves 30 bytes for application data. A Large beacon needs chained PDUs
//! (`AUX_CHAIN_IND`, AdvData up to 1,650 bytes, though BlueZ caps extended advertising data
//! at 251) or a GATT read. **Legacy BLE advertising** (31 bytes of AdvData) cannot carry a
//! beacon at all (`E` alone is 32 bytes): there a legacy advert can only be a pointer, a flag
//! saying "a beacon is available" on extended advertising or by a GATT read.
//!
//! **DNS-SD TXT**: one string is at most 255 bytes (`key=value`), and a record may hold several.
//! A Small beacon fits one string as a binary value (`b=` + 206); a Large one three binary
//! strings (`b0=`, `b1=`, `b2=`, 252 bytes each), or as unpadded base64 (755 characters) also
//! three. The whole mDNS response stays well under one Ethernet frame.
//!
//! # Choices
//!
//! - *Shared body, wrapped key*: a per-recipient AEAD of the 32-byte key id costs 48 bytes per
//!   recipient and fits 4 recipients in a BLE advert; wrapping one 16-byte key costs 24 with
//!   authentication and fits 5 with 30 bytes to spare (6 would leave 6), and 20 in three TXT
//!   strings. 128-bit `K` matches X25519's
//!   security level.
//! - *The body carries `A`, not the key id*: the key id is derived from it, and `A` is what
//!   the recipient needs to authenticate the sender.
//! - *Sender authentication* by static–static DH, like HPKE `Auth` mode and the original
//!   Thali beacon's inner HMAC; a forged "your friend has data for you" would otherwise lure a
//!   device into revealing itself. The `mac` is 48 bits: forgeries can only be tried online.
//! - *`find` is 16 bits*: only a filter in front of the AEAD, never a decision. A false match
//!   costs one failed AEAD open (2⁻¹⁶ per slot: 3·10⁻⁴ spurious opens for a 20-slot advert).
//! - *ChaCha20-Poly1305*: constant-time and fast on ARM boards without AES instructions; the
//!   all-zero nonce is safe because every `Kb` is used once.
//! - *Expiry in minutes* (`u32`, until the year 10136): coarse on purpose, so it says little
//!   about when the advert was made; inclusive; checked against a caller-supplied `now` (this
//!   crate reads no clock, see [`unix_minutes`]).

use std::time::Duration;

use curve25519_dalek::montgomery::MontgomeryPoint;
use public_key_identity::KeyId;
use ring::{aead, hkdf};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::ErrorKind;

mod keys;

pub use keys::{BeaconKey, Recipient};
use keys::{ed25519_key_id, ed25519_to_x25519};

/// The format version this module writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the header: version, slot count, expiry, ephemeral key.
pub const HEADER_LEN: usize = 1 + 1 + 4 + 32;
/// Bytes of one entry: `find`, wrapped key, `mac`.
pub const ENTRY_LEN: usize = FIND_LEN + WRAP_LEN + MAC_LEN;
/// Bytes of the body: the sender's encrypted Ed25519 public key and the AEAD tag.
pub const BODY_LEN: usize = 32 + 16;
/// The cap on recipients, and the most slots an advert may have.
pub const MAX_RECIPIENTS: usize = 20;
/// The largest advert: [`MAX_RECIPIENTS`] slots.
pub const MAX_LEN: usize = HEADER_LEN + MAX_RECIPIENTS * ENTRY_LEN + BODY_LEN;
/// How far in the future a checker accepts an expiry (one day): a bound on replays of a
/// sender's misconfigured beacon, with room for clocks that disagree.
pub const MAX_LIFETIME_MINUTES: u32 = 24 * 60;

const FIND_LEN: usize = 2;
const WRAP_LEN: usize = 16;
const MAC_LEN: usize = 6;
const FIND_PAD_LEN: usize = FIND_LEN + WRAP_LEN;

const SALT_FIND: &[u8] = b"thali-beacon-v1 find";
const SALT_AUTH: &[u8] = b"thali-beacon-v1 auth";
const SALT_BODY: &[u8] = b"thali-beacon-v1 body";

/// Things that go wrong making or checking a beacon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BeaconError {
    /// The bytes are not a beacon of this format (wrong length, bad field, small-order key).
    #[error("malformed beacon: {0}")]
    Malformed(&'static str),
    /// A format version this build does not read.
    #[error("beacon format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// The beacon's expiry has passed: stale, or replayed.
    #[error("beacon expired at minute {expiry} (now {now})")]
    Expired {
        /// The beacon's expiry, minutes since the Unix epoch.
        expiry: u32,
        /// The checker's now.
        now: u32,
    },
    /// The beacon's expiry is further ahead than [`MAX_LIFETIME_MINUTES`].
    #[error("beacon expiry {expiry} is more than {MAX_LIFETIME_MINUTES} minutes after now ({now})")]
    ExpiryTooFar {
        /// The beacon's expiry, minutes since the Unix epoch.
        expiry: u32,
        /// The checker's now.
        now: u32,
    },
    /// An entry for this recipient opened, but the sender it names did not make it: a forgery.
    #[error("beacon entry opened but does not authenticate its sender")]
    Unauthentic,
    /// A key that cannot be used for beacons (not Ed25519, not a valid point, bad PKCS#8).
    #[error("invalid beacon key: {0}")]
    InvalidKey(&'static str),
    /// More recipients than the size class has slots.
    #[error("{count} recipients do not fit in a beacon of {slots} slots")]
    TooManyRecipients {
        /// Distinct recipients asked for.
        count: usize,
        /// Slots of the size class.
        slots: u8,
    },
    /// The random source failed.
    #[error("the random source failed")]
    Random,
    /// A primitive refused its input: a bug in this module.
    #[error("beacon cryptography failed: {0}")]
    Crypto(&'static str),
}

impl BeaconError {
    /// What the caller should do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BeaconError::Malformed(_)
            | BeaconError::UnsupportedVersion(_)
            | BeaconError::Expired { .. }
            | BeaconError::ExpiryTooFar { .. }
            | BeaconError::Unauthentic => ErrorKind::PeerMisbehaved,
            BeaconError::InvalidKey(_) | BeaconError::TooManyRecipients { .. } => {
                ErrorKind::InvalidInput
            }
            BeaconError::Random | BeaconError::Crypto(_) => ErrorKind::LocalIo,
        }
    }
}

/// Shorthand for beacon results.
pub type Result<T, E = BeaconError> = std::result::Result<T, E>;

/// Where a sender's randomness comes from: the operating system
/// ([`ring::rand::SystemRandom`]) in use, a seeded generator in tests.
pub trait BeaconRng {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]) -> Result<()>;
}

impl BeaconRng for ring::rand::SystemRandom {
    fn fill(&mut self, dest: &mut [u8]) -> Result<()> {
        ring::rand::SecureRandom::fill(self, dest).map_err(|_| BeaconError::Random)
    }
}

/// Minutes since the Unix epoch, the unit of beacon expiries, from the caller's clock reading
/// (saturating at `u32::MAX`, the year 10136).
pub fn unix_minutes(since_epoch: Duration) -> u32 {
    u32::try_from(since_epoch.as_secs() / 60).unwrap_or(u32::MAX)
}

/// The size of an advert: its number of slots, so its number of possible recipients.
///
/// A neighbour sees the class, never the number of recipients within it. Choose it by
/// transport (Small over BLE, Large on the LAN), not by how many recipients there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SizeClass {
    /// 5 slots, 206 bytes: one BLE 5 extended advertising PDU.
    #[default]
    Small,
    /// 20 slots, 566 bytes: three DNS TXT strings.
    Large,
}

impl SizeClass {
    /// Slots, the most recipients an advert of this class has.
    pub const fn slots(self) -> u8 {
        match self {
            SizeClass::Small => 5,
            SizeClass::Large => 20,
        }
    }

    /// Bytes of an advert of this class.
    pub const fn advert_len(self) -> usize {
        advert_len(self.slots())
    }
}

const fn advert_len(slots: u8) -> usize {
    HEADER_LEN + slots as usize * ENTRY_LEN + BODY_LEN
}

/// Makes adverts for a set of recipients.
#[derive(Debug, Clone)]
pub struct BeaconBuilder<'a> {
    sender: &'a BeaconKey,
    class: SizeClass,
    recipients: Vec<Recipient>,
}

impl<'a> BeaconBuilder<'a> {
    /// An advert from `sender`, of [`SizeClass::Small`], with no recipient yet (with none it
    /// is cover traffic, indistinguishable from a real beacon).
    pub fn new(sender: &'a BeaconKey) -> BeaconBuilder<'a> {
        BeaconBuilder {
            sender,
            class: SizeClass::default(),
            recipients: Vec::new(),
        }
    }

    /// The size class (see [`SizeClass`]).
    pub fn size_class(mut self, class: SizeClass) -> Self {
        self.class = class;
        self
    }

    /// Adds a recipient (a recipient added twice gets one entry).
    pub fn recipient(mut self, recipient: Recipient) -> Self {
        if !self.recipients.contains(&recipient) {
            self.recipients.push(recipient);
        }
        self
    }

    /// Adds recipients.
    pub fn recipients(self, recipients: impl IntoIterator<Item = Recipient>) -> Self {
        recipients.into_iter().fold(self, Self::recipient)
    }

    /// Makes one advert, valid through minute `expiry` (minutes since the Unix epoch), with a
    /// fresh ephemeral key, wrapped key and shuffle from `rng`. Call it again for each refresh.
    pub fn build<R: BeaconRng + ?Sized>(&self, expiry: u32, rng: &mut R) -> Result<Vec<u8>> {
        let slots = self.class.slots();
        if self.recipients.len() > usize::from(slots) {
            return Err(BeaconError::TooManyRecipients {
                count: self.recipients.len(),
                slots,
            });
        }
        let mut e = Zeroizing::new([0u8; 32]);
        rng.fill(&mut e[..])?;
        let ephemeral = MontgomeryPoint::mul_base_clamped(*e);
        let mut k = Zeroizing::new([0u8; WRAP_LEN]);
        rng.fill(&mut k[..])?;

        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1] = slots;
        header[2..6].copy_from_slice(&expiry.to_be_bytes());
        header[6..].copy_from_slice(ephemeral.as_bytes());

        let mut entries = Vec::with_capacity(usize::from(slots));
        for recipient in &self.recipients {
            let ze = Zeroizing::new(recipient.x25519.mul_clamped(*e).to_bytes());
            let zs = self.sender.dh(&recipient.x25519);
            let find_pad = find_and_pad(&ze, &header, &recipient.x25519)?;
            let mac = mac(
                &ze,
                &zs,
                &header,
                &recipient.x25519,
                &self.sender.ed25519,
                &k,
            )?;
            let mut entry = [0u8; ENTRY_LEN];
            entry[..FIND_LEN].copy_from_slice(&find_pad[..FIND_LEN]);
            for (i, (w, p)) in entry[FIND_LEN..FIND_PAD_LEN]
                .iter_mut()
                .zip(&find_pad[FIND_LEN..])
                .enumerate()
            {
                *w = k[i] ^ p;
            }
            entry[FIND_PAD_LEN..].copy_from_slice(&mac);
            entries.push(entry);
        }
        while entries.len() < usize::from(slots) {
            let mut dummy = [0u8; ENTRY_LEN];
            rng.fill(&mut dummy)?;
            entries.push(dummy);
        }
        shuffle(&mut entries, rng)?;

        let mut advert = Vec::with_capacity(advert_len(slots));
        advert.extend_from_slice(&header);
        for entry in &entries {
            advert.extend_from_slice(entry);
        }
        let mut body = self.sender.ed25519;
        let tag = body_key(&k, &header)?
            .seal_in_place_separate_tag(nonce(), aead::Aad::from(&advert[..]), &mut body)
            .map_err(|_| BeaconError::Crypto("sealing the body"))?;
        advert.extend_from_slice(&body);
        advert.extend_from_slice(tag.as_ref());
        Ok(advert)
    }
}

/// What the header of an advert says, read without any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BeaconHeader {
    /// Number of slots.
    pub slots: u8,
    /// Expiry, minutes since the Unix epoch (valid while `now ≤ expiry`).
    pub expiry: u32,
}

/// Reads and bounds an advert's header: version, slot count, exact length, the ephemeral key's
/// top bit. Cheap, for a peer table that drops malformed or expired beacons before any
/// cryptography.
pub fn parse_header(advert: &[u8]) -> Result<BeaconHeader> {
    let (&version, rest) = advert
        .split_first()
        .ok_or(BeaconError::Malformed("empty"))?;
    if version != VERSION {
        return Err(BeaconError::UnsupportedVersion(version));
    }
    let (&slots, rest) = rest
        .split_first()
        .ok_or(BeaconError::Malformed("no slot count"))?;
    if slots == 0 || usize::from(slots) > MAX_RECIPIENTS {
        return Err(BeaconError::Malformed("slot count out of range"));
    }
    if advert.len() != advert_len(slots) {
        return Err(BeaconError::Malformed(
            "length does not match the slot count",
        ));
    }
    let (expiry, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(BeaconError::Malformed("short header"))?;
    let ephemeral = rest
        .first_chunk::<32>()
        .ok_or(BeaconError::Malformed("short header"))?;
    if ephemeral[31] & 0x80 != 0 {
        return Err(BeaconError::Malformed("ephemeral key has its top bit set"));
    }
    Ok(BeaconHeader {
        slots,
        expiry: u32::from_be_bytes(*expiry),
    })
}

/// Checks an advert with a recipient's key at minute `now` (minutes since the Unix epoch):
/// `Ok(Some(sender))` if it holds an entry for this key, `Ok(None)` if not (or if it was
/// tampered with: the two cannot be told apart), `Err` if it is malformed, expired or a forgery.
pub fn check(advert: &[u8], key: &BeaconKey, now: u32) -> Result<Option<KeyId>> {
    Ok(open(advert, key, now)?.map(|(sender, _)| sender))
}

/// [`check`], also saying which slot held the entry: for tests and benches.
#[doc(hidden)]
pub fn open(advert: &[u8], key: &BeaconKey, now: u32) -> Result<Option<(KeyId, usize)>> {
    let parsed = parse_header(advert)?;
    if now > parsed.expiry {
        return Err(BeaconError::Expired {
            expiry: parsed.expiry,
            now,
        });
    }
    if parsed.expiry - now > MAX_LIFETIME_MINUTES {
        return Err(BeaconError::ExpiryTooFar {
            expiry: parsed.expiry,
            now,
        });
    }
    // parse_header checked the length exactly.
    let (signed, body) = advert
        .split_at_checked(advert.len() - BODY_LEN)
        .ok_or(BeaconError::Malformed("short"))?;
    let (header, entries) = signed
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(BeaconError::Malformed("short header"))?;
    let ephemeral = header
        .last_chunk::<32>()
        .ok_or(BeaconError::Malformed("short header"))?;
    let ze = key.dh(&MontgomeryPoint(*ephemeral));
    if bool::from(ze.ct_eq(&[0u8; 32])) {
        return Err(BeaconError::Malformed("ephemeral key of small order"));
    }
    let find_pad = find_and_pad(&ze, header, &key.x25519)?;
    for (slot, entry) in entries.chunks_exact(ENTRY_LEN).enumerate() {
        if entry.get(..FIND_LEN) != find_pad.get(..FIND_LEN) {
            continue;
        }
        let mut k = Zeroizing::new([0u8; WRAP_LEN]);
        for ((k, w), p) in k
            .iter_mut()
            .zip(entry.get(FIND_LEN..FIND_PAD_LEN).unwrap_or_default())
            .zip(&find_pad[FIND_LEN..])
        {
            *k = w ^ p;
        }
        let mut plain: [u8; BODY_LEN] = body
            .try_into()
            .map_err(|_| BeaconError::Malformed("short body"))?;
        let Ok(sender) =
            body_key(&k, header)?.open_in_place(nonce(), aead::Aad::from(signed), &mut plain)
        else {
            // A false `find` match (or a tampered advert): keep looking.
            continue;
        };
        let sender: [u8; 32] = (&*sender)
            .try_into()
            .map_err(|_| BeaconError::Crypto("body length"))?;
        let sender_x = ed25519_to_x25519(&sender)
            .map_err(|_| BeaconError::Malformed("sender key is not a valid Ed25519 key"))?;
        let zs = key.dh(&sender_x);
        let expected = mac(&ze, &zs, header, &key.x25519, &sender, &k)?;
        let got = entry.get(FIND_PAD_LEN..).unwrap_or_default();
        if !bool::from(expected[..].ct_eq(got)) {
            return Err(BeaconError::Unauthentic);
        }
        return Ok(Some((ed25519_key_id(&sender), slot)));
    }
    Ok(None)
}

/// An HKDF-SHA256 output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_fill(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<()> {
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| BeaconError::Crypto("HKDF"))
}

fn find_and_pad(
    ze: &[u8; 32],
    header: &[u8; HEADER_LEN],
    recipient: &MontgomeryPoint,
) -> Result<Zeroizing<[u8; FIND_PAD_LEN]>> {
    let mut out = Zeroizing::new([0u8; FIND_PAD_LEN]);
    hkdf_fill(SALT_FIND, ze, &[header, recipient.as_bytes()], &mut out[..])?;
    Ok(out)
}

fn mac(
    ze: &[u8; 32],
    zs: &[u8; 32],
    header: &[u8; HEADER_LEN],
    recipient: &MontgomeryPoint,
    sender: &[u8; 32],
    k: &[u8; WRAP_LEN],
) -> Result<[u8; MAC_LEN]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(ze);
    ikm[32..].copy_from_slice(zs);
    let mut out = [0u8; MAC_LEN];
    hkdf_fill(
        SALT_AUTH,
        &ikm[..],
        &[header, recipient.as_bytes(), sender, k],
        &mut out,
    )?;
    Ok(out)
}

fn body_key(k: &[u8; WRAP_LEN], header: &[u8; HEADER_LEN]) -> Result<aead::LessSafeKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT_BODY).extract(k);
    let info: [&[u8]; 1] = [header];
    let okm = prk
        .expand(&info, &aead::CHACHA20_POLY1305)
        .map_err(|_| BeaconError::Crypto("HKDF"))?;
    Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
}

/// Every body key encrypts exactly once.
fn nonce() -> aead::Nonce {
    aead::Nonce::assume_unique_for_key([0u8; 12])
}

/// Fisher–Yates, from the last slot down.
fn shuffle<R: BeaconRng + ?Sized>(entries: &mut [[u8; ENTRY_LEN]], rng: &mut R) -> Result<()> {
    for i in (1..entries.len()).rev() {
        let bound = u32::try_from(i + 1).map_err(|_| BeaconError::Crypto("too many slots"))?;
        let j = usize::try_from(uniform_below(bound, rng)?)
            .map_err(|_| BeaconError::Crypto("index"))?;
        entries.swap(i, j);
    }
    Ok(())
}

/// A uniform integer in `0..bound` (`bound ≥ 1`), by rejection sampling. A random source that
/// keeps producing rejected values is broken: give up after 64 draws.
fn uniform_below<R: BeaconRng + ?Sized>(bound: u32, rng: &mut R) -> Result<u32> {
    let bound = bound.max(1);
    let limit = (u32::MAX / bound) * bound;
    for _ in 0..64 {
        let mut bytes = [0u8; 4];
        rng.fill(&mut bytes)?;
        let v = u32::from_be_bytes(bytes);
        if v < limit {
            return Ok(v % bound);
        }
    }
    Err(BeaconError::Random)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::digest;

    /// A deterministic stream: one byte of SHA-256 per counter value.
    struct Stream(u64, u8);
    impl BeaconRng for Stream {
        fn fill(&mut self, dest: &mut [u8]) -> Result<()> {
            for b in dest {
                let input = [&self.0.to_be_bytes()[..], &[self.1]].concat();
                *b = digest::digest(&digest::SHA256, &input).as_ref()[0];
                self.0 += 1;
            }
            Ok(())
        }
    }

    #[test]
    fn shuffle_moves_every_slot_everywhere() {
        let sender = BeaconKey::from_seed(&[1; 32]).unwrap();
        let bob = BeaconKey::from_seed(&[2; 32]).unwrap();
        let mut seen = [0u32; 5];
        for seed in 0..200u8 {
            let advert = BeaconBuilder::new(&sender)
                .recipient(bob.recipient())
                .build(100, &mut Stream(0, seed))
                .unwrap();
            let (_, slot) = open(&advert, &bob, 90).unwrap().unwrap();
            seen[slot] += 1;
        }
        // 200 draws over 5 slots: each about 40; all far from 0.
        assert!(seen.iter().all(|&n| n > 15), "{seen:?}");
    }

    /// Mallory holds her own key and names Alice as the sender: the body opens for Bob (Mallory
    /// knows `K`), but the `mac` needs `X25519(Alice's secret, Bob)`.
    #[test]
    fn a_forged_sender_is_unauthentic() {
        let alice = BeaconKey::from_seed(&[1; 32]).unwrap();
        let bob = BeaconKey::from_seed(&[2; 32]).unwrap();
        let mallory = BeaconKey::from_seed(&[3; 32]).unwrap();
        let posing = BeaconKey {
            scalar: mallory.scalar.clone(),
            ed25519: alice.ed25519,
            x25519: alice.x25519,
            key_id: alice.key_id,
        };
        let advert = BeaconBuilder::new(&posing)
            .recipient(bob.recipient())
            .build(100, &mut Stream(0, 1))
            .unwrap();
        assert_eq!(check(&advert, &bob, 90), Err(BeaconError::Unauthentic));
        assert_eq!(BeaconError::Unauthentic.kind(), ErrorKind::PeerMisbehaved);
        // The same advert from Alice's real key is fine.
        let advert = BeaconBuilder::new(&alice)
            .recipient(bob.recipient())
            .build(100, &mut Stream(0, 1))
            .unwrap();
        assert_eq!(check(&advert, &bob, 90), Ok(Some(alice.key_id())));
    }

    #[test]
    fn uniform_below_rejects_and_gives_up() {
        struct Constant(u8);
        impl BeaconRng for Constant {
            fn fill(&mut self, dest: &mut [u8]) -> Result<()> {
                dest.fill(self.0);
                Ok(())
            }
        }
        assert_eq!(uniform_below(7, &mut Constant(0)).unwrap(), 0);
        // 0xffffffff is above the last whole multiple of 7: always rejected.
        assert_eq!(
            uniform_below(7, &mut Constant(0xff)),
            Err(BeaconError::Random)
        );
        assert_eq!(uniform_below(1, &mut Constant(0x12)).unwrap(), 0);
    }

    #[test]
    fn header_is_bounded() {
        assert_eq!(SizeClass::Small.advert_len(), 206);
        assert_eq!(SizeClass::Large.advert_len(), 566);
        assert_eq!(MAX_LEN, 566);
        assert_eq!(parse_header(&[]), Err(BeaconError::Malformed("empty")));
        assert_eq!(parse_header(&[2]), Err(BeaconError::UnsupportedVersion(2)));
        assert!(parse_header(&[1, 0]).is_err());
        assert!(parse_header(&[1, 21]).is_err());
        let mut advert = vec![0u8; 206];
        advert[0] = 1;
        advert[1] = 5;
        advert[2..6].copy_from_slice(&1234u32.to_be_bytes());
        assert_eq!(
            parse_header(&advert),
            Ok(BeaconHeader {
                slots: 5,
                expiry: 1234
            })
        );
        advert[37] = 0x80;
        assert!(parse_header(&advert).is_err());
        advert.push(0);
        assert!(parse_header(&advert).is_err());
    }

    #[test]
    fn unix_minutes_saturates() {
        assert_eq!(unix_minutes(Duration::from_secs(119)), 1);
        assert_eq!(unix_minutes(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
