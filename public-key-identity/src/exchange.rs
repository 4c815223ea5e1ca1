//! Identity exchange by numeric comparison: two parties that each know their own key and the key
//! they *believe* is the other's derive a 6-digit code; the people holding the devices compare the
//! codes, and equal codes mean nobody substituted a key in between.
//!
//! This is the commit/reveal scheme of Bluetooth Secure Simple Pairing's numeric comparison and of
//! Thali's identity exchange, as a pure state machine: no sockets, no clock. Feed it the bytes that
//! arrived; send the bytes it returns, over any channel (usually the mutual-TLS connection whose
//! keys are being confirmed).
//!
//! # Protocol
//!
//! `A` is the initiator, `B` the responder; `KA`, `KB` are their 32-byte key id digests
//! ([`KeyId::as_bytes`]) as each side knows them; `NA`, `NB` are 32 fresh random bytes each.
//!
//! 1. `A → B`: **Commit** `C = SHA-256("thali-exchange-v1 commit" ‖ 0x00 ‖ KA ‖ KB ‖ NA)`
//! 2. `B → A`: **Nonce** `NB`
//! 3. `A → B`: **Reveal** `NA`; `B` checks that it hashes to `C` (else the exchange fails).
//! 4. Both compute `H = SHA-256("thali-exchange-v1 code" ‖ 0x00 ‖ KA ‖ KB ‖ NA ‖ NB)` and show
//!    `code = u64::from_be_bytes(H[0..8]) mod 1 000 000`, as six digits with leading zeros.
//!
//! A man in the middle who gave `A` a key of his own in place of `KB` (or `B` one in place of
//! `KA`) talks to both sides with different key pairs, so the two codes are computed over
//! different inputs. He has to fix his nonce towards `B` (by its commitment) before learning
//! `NA`, and `A` has fixed `NA` (by its commitment) before seeing any nonce of his: he cannot steer
//! the two codes together, and they match only by chance, with probability about 10⁻⁶.
//!
//! # Wire format
//!
//! Every message is exactly 34 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | protocol version, `0x01` |
//! | 1 | 1 | message type: `0x01` Commit, `0x02` Nonce, `0x03` Reveal |
//! | 2 | 32 | payload: the commitment `C`, `NB`, or `NA` |
//!
//! In JSON (serde) a message is the unpadded base64url string of those 34 bytes.

use std::fmt;
use std::str::FromStr;

use crate::crypto;
use crate::key::KeyId;

const VERSION: u8 = 1;
const COMMIT_TAG: &[u8] = b"thali-exchange-v1 commit\0";
const CODE_TAG: &[u8] = b"thali-exchange-v1 code\0";

/// Length of every message on the wire.
pub const MESSAGE_LEN: usize = 34;

/// What went wrong in an exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// A message is not 34 bytes.
    #[error("a message is 34 bytes, got {0}")]
    BadLength(usize),
    /// A message of a protocol version this code does not speak.
    #[error("unsupported protocol version {0} (this side speaks version 1)")]
    BadVersion(u8),
    /// A message type byte that is not 1, 2 or 3.
    #[error("unknown message type {0}")]
    BadType(u8),
    /// A message arrived that the protocol does not allow at this point.
    #[error("expected a {expected} message, got {got}")]
    Unexpected {
        /// What the state machine was waiting for.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// The exchange already ended (with a code or an error); start a new one.
    #[error("the exchange is already over")]
    Finished,
    /// The revealed nonce does not match the commitment: the peer changed its nonce after seeing
    /// ours, which is what an attacker steering the code would do.
    #[error("the revealed nonce does not match the commitment; abandon this pairing")]
    CommitmentMismatch,
    /// Both keys are the same: a device cannot pair with itself (and a reflected exchange is an
    /// attack).
    #[error("both sides of the exchange have the same key")]
    SameKey,
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
    /// A pairing code typed in is not six digits.
    #[error("a pairing code is six digits")]
    BadCode,
    /// A message in text form is not valid base64url.
    #[error("a message in text form is 46 base64url characters")]
    BadText,
}

/// One protocol message (see the [module docs](self) for the wire format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Step 1, A → B: the commitment to A's nonce.
    Commit([u8; 32]),
    /// Step 2, B → A: B's nonce.
    Nonce([u8; 32]),
    /// Step 3, A → B: A's nonce.
    Reveal([u8; 32]),
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::Commit(_) => "Commit",
            Message::Nonce(_) => "Nonce",
            Message::Reveal(_) => "Reveal",
        }
    }

    /// The 34 wire bytes.
    pub fn to_bytes(&self) -> [u8; MESSAGE_LEN] {
        let (kind, payload) = match self {
            Message::Commit(p) => (1, p),
            Message::Nonce(p) => (2, p),
            Message::Reveal(p) => (3, p),
        };
        let mut out = [0u8; MESSAGE_LEN];
        out[0] = VERSION;
        out[1] = kind;
        out[2..].copy_from_slice(payload);
        out
    }

    /// Parses the wire bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Message, ExchangeError> {
        let bytes: &[u8; MESSAGE_LEN] = bytes
            .try_into()
            .map_err(|_| ExchangeError::BadLength(bytes.len()))?;
        let [version, kind, payload @ ..] = bytes;
        if *version != VERSION {
            return Err(ExchangeError::BadVersion(*version));
        }
        match kind {
            1 => Ok(Message::Commit(*payload)),
            2 => Ok(Message::Nonce(*payload)),
            3 => Ok(Message::Reveal(*payload)),
            other => Err(ExchangeError::BadType(*other)),
        }
    }
}

impl fmt::Display for Message {
    /// The base64url text form (used in JSON).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::BASE64URL_NOPAD.encode(&self.to_bytes()))
    }
}

impl FromStr for Message {
    type Err = ExchangeError;
    fn from_str(s: &str) -> Result<Message, ExchangeError> {
        if s.len() > 64 {
            return Err(ExchangeError::BadText);
        }
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(s.as_bytes())
            .map_err(|_| ExchangeError::BadText)?;
        Message::from_bytes(&bytes)
    }
}

impl serde::Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Message, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The six-digit code both people compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairingCode(u32);

impl PairingCode {
    /// The code as a number below 1 000 000.
    pub fn value(&self) -> u32 {
        self.0
    }
}

impl fmt::Display for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PairingCode({self})")
    }
}

impl FromStr for PairingCode {
    type Err = ExchangeError;
    /// Parses six digits; spaces (as in `123 456`) are ignored.
    fn from_str(s: &str) -> Result<PairingCode, ExchangeError> {
        let digits: String = s.chars().filter(|c| *c != ' ').collect();
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ExchangeError::BadCode);
        }
        digits
            .parse()
            .map(PairingCode)
            .map_err(|_| ExchangeError::BadCode)
    }
}

/// What a `handle` call asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Send this to the peer, if anything.
    pub send: Option<Message>,
    /// The exchange is complete: show this code.
    pub code: Option<PairingCode>,
}

fn commitment(initiator: &KeyId, responder: &KeyId, nonce: &[u8; 32]) -> [u8; 32] {
    crypto::sha256_parts(&[
        COMMIT_TAG,
        initiator.as_bytes(),
        responder.as_bytes(),
        nonce,
    ])
}

fn code(initiator: &KeyId, responder: &KeyId, na: &[u8; 32], nb: &[u8; 32]) -> PairingCode {
    let digest =
        crypto::sha256_parts(&[CODE_TAG, initiator.as_bytes(), responder.as_bytes(), na, nb]);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    // u64 % 1_000_000 < 1_000_000 always fits in u32.
    PairingCode((u64::from_be_bytes(head) % 1_000_000) as u32)
}

fn fresh_nonce() -> Result<[u8; 32], ExchangeError> {
    crypto::random_32().map_err(|_| ExchangeError::Random)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitiatorState {
    AwaitNonce,
    Done,
}

/// The side that starts the exchange (`A`).
#[derive(Debug)]
pub struct Initiator {
    own: KeyId,
    peer: KeyId,
    nonce: [u8; 32],
    state: InitiatorState,
}

impl Initiator {
    /// Starts an exchange between our key `own` and the key `peer` we believe the other side has.
    /// Returns the state machine and the Commit message to send.
    pub fn start(own: KeyId, peer: KeyId) -> Result<(Initiator, Message), ExchangeError> {
        Initiator::start_with_nonce(own, peer, fresh_nonce()?)
    }

    /// As [`Initiator::start`] with a given nonce: for tests and simulations only. A nonce must
    /// never be reused; a predictable one lets a man in the middle steer the code.
    pub fn start_with_nonce(
        own: KeyId,
        peer: KeyId,
        nonce: [u8; 32],
    ) -> Result<(Initiator, Message), ExchangeError> {
        if own == peer {
            return Err(ExchangeError::SameKey);
        }
        let commit = Message::Commit(commitment(&own, &peer, &nonce));
        let me = Initiator {
            own,
            peer,
            nonce,
            state: InitiatorState::AwaitNonce,
        };
        Ok((me, commit))
    }

    /// Handles the responder's message (its Nonce): returns the Reveal to send and the code.
    pub fn handle(&mut self, message: Message) -> Result<Output, ExchangeError> {
        match (self.state, message) {
            (InitiatorState::Done, _) => Err(ExchangeError::Finished),
            (InitiatorState::AwaitNonce, Message::Nonce(nb)) => {
                self.state = InitiatorState::Done;
                Ok(Output {
                    send: Some(Message::Reveal(self.nonce)),
                    code: Some(code(&self.own, &self.peer, &self.nonce, &nb)),
                })
            }
            (InitiatorState::AwaitNonce, other) => {
                self.state = InitiatorState::Done;
                Err(ExchangeError::Unexpected {
                    expected: "Nonce",
                    got: other.name(),
                })
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponderState {
    AwaitCommit,
    AwaitReveal([u8; 32]),
    Done,
}

/// The side that answers (`B`).
#[derive(Debug)]
pub struct Responder {
    own: KeyId,
    peer: KeyId,
    nonce: [u8; 32],
    state: ResponderState,
}

impl Responder {
    /// Prepares to answer an exchange started by the key `peer` we believe the other side has.
    pub fn new(own: KeyId, peer: KeyId) -> Result<Responder, ExchangeError> {
        Responder::with_nonce(own, peer, fresh_nonce()?)
    }

    /// As [`Responder::new`] with a given nonce: for tests and simulations only.
    pub fn with_nonce(
        own: KeyId,
        peer: KeyId,
        nonce: [u8; 32],
    ) -> Result<Responder, ExchangeError> {
        if own == peer {
            return Err(ExchangeError::SameKey);
        }
        Ok(Responder {
            own,
            peer,
            nonce,
            state: ResponderState::AwaitCommit,
        })
    }

    /// Handles the initiator's Commit (answers with our Nonce) and then its Reveal (gives the code
    /// once the reveal matches the commitment). Any error ends the exchange.
    pub fn handle(&mut self, message: Message) -> Result<Output, ExchangeError> {
        let state = std::mem::replace(&mut self.state, ResponderState::Done);
        match (state, message) {
            (ResponderState::Done, _) => Err(ExchangeError::Finished),
            (ResponderState::AwaitCommit, Message::Commit(c)) => {
                self.state = ResponderState::AwaitReveal(c);
                Ok(Output {
                    send: Some(Message::Nonce(self.nonce)),
                    code: None,
                })
            }
            (ResponderState::AwaitCommit, other) => Err(ExchangeError::Unexpected {
                expected: "Commit",
                got: other.name(),
            }),
            (ResponderState::AwaitReveal(c), Message::Reveal(na)) => {
                // Keys in protocol order: the initiator (our peer) first.
                let expected = commitment(&self.peer, &self.own, &na);
                if !crypto::constant_time_eq(&expected, &c) {
                    return Err(ExchangeError::CommitmentMismatch);
                }
                Ok(Output {
                    send: None,
                    code: Some(code(&self.peer, &self.own, &na, &self.nonce)),
                })
            }
            (ResponderState::AwaitReveal(_), other) => Err(ExchangeError::Unexpected {
                expected: "Reveal",
                got: other.name(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> KeyId {
        KeyId::from_digest([n; 32])
    }

    /// Runs an honest exchange, passing every message through its wire bytes.
    fn run(
        a_sees_b: KeyId,
        b_sees_a: KeyId,
        a: KeyId,
        b: KeyId,
        na: [u8; 32],
        nb: [u8; 32],
    ) -> (PairingCode, PairingCode) {
        let wire = |m: Message| Message::from_bytes(&m.to_bytes()).unwrap();
        let (mut ini, commit) = Initiator::start_with_nonce(a, a_sees_b, na).unwrap();
        let mut resp = Responder::with_nonce(b, b_sees_a, nb).unwrap();
        let out = resp.handle(wire(commit)).unwrap();
        assert_eq!(out.code, None);
        let out_a = ini.handle(wire(out.send.unwrap())).unwrap();
        let out_b = resp.handle(wire(out_a.send.unwrap())).unwrap();
        assert_eq!(out_b.send, None);
        (out_a.code.unwrap(), out_b.code.unwrap())
    }

    #[test]
    fn honest_run_gives_equal_codes() {
        let (a, b) = run(key(2), key(1), key(1), key(2), [3; 32], [4; 32]);
        assert_eq!(a, b);
        assert_eq!(a.to_string().len(), 6);
    }

    #[test]
    fn wire_format_snapshot() {
        let m = Message::Nonce([0xab; 32]);
        let bytes = m.to_bytes();
        assert_eq!(bytes[..2], [0x01, 0x02]);
        assert!(bytes[2..].iter().all(|b| *b == 0xab));
        // Commitment and code for fixed inputs: a change to the hashing breaks interop.
        let (_, commit) = Initiator::start_with_nonce(key(1), key(2), [3; 32]).unwrap();
        let Message::Commit(c) = commit else { panic!() };
        let mut input = b"thali-exchange-v1 commit\0".to_vec();
        input.extend([1; 32]);
        input.extend([2; 32]);
        input.extend([3; 32]);
        assert_eq!(c, crypto::sha256(&input));
        let text = commit.to_string();
        assert_eq!(text.len(), 46);
        assert_eq!(text.parse::<Message>().unwrap(), commit);
    }

    #[test]
    fn tampered_reveal_is_rejected() {
        let (mut ini, commit) = Initiator::start_with_nonce(key(1), key(2), [3; 32]).unwrap();
        let mut resp = Responder::with_nonce(key(2), key(1), [4; 32]).unwrap();
        let nonce = resp.handle(commit).unwrap().send.unwrap();
        let _ = ini.handle(nonce).unwrap();
        let err = resp.handle(Message::Reveal([5; 32])).unwrap_err();
        assert_eq!(err, ExchangeError::CommitmentMismatch);
        assert_eq!(
            resp.handle(Message::Reveal([3; 32])),
            Err(ExchangeError::Finished)
        );
    }

    #[test]
    fn out_of_order_and_malformed_messages() {
        let mut resp = Responder::with_nonce(key(2), key(1), [4; 32]).unwrap();
        assert!(matches!(
            resp.handle(Message::Reveal([0; 32])),
            Err(ExchangeError::Unexpected {
                expected: "Commit",
                got: "Reveal"
            })
        ));
        let (mut ini, _) = Initiator::start_with_nonce(key(1), key(2), [3; 32]).unwrap();
        assert!(matches!(
            ini.handle(Message::Commit([0; 32])),
            Err(ExchangeError::Unexpected {
                expected: "Nonce",
                ..
            })
        ));
        assert_eq!(
            ini.handle(Message::Nonce([0; 32])),
            Err(ExchangeError::Finished)
        );
        assert_eq!(
            Message::from_bytes(&[1; 33]),
            Err(ExchangeError::BadLength(33))
        );
        let mut bytes = Message::Nonce([0; 32]).to_bytes();
        bytes[0] = 2;
        assert_eq!(
            Message::from_bytes(&bytes),
            Err(ExchangeError::BadVersion(2))
        );
        bytes[0] = 1;
        bytes[1] = 9;
        assert_eq!(Message::from_bytes(&bytes), Err(ExchangeError::BadType(9)));
        assert_eq!(
            Initiator::start(key(1), key(1)).unwrap_err(),
            ExchangeError::SameKey
        );
        assert_eq!("12345".parse::<PairingCode>(), Err(ExchangeError::BadCode));
        assert_eq!("012 345".parse::<PairingCode>().unwrap().value(), 12345);
    }

    #[test]
    fn random_nonces_differ() {
        let (_, c1) = Initiator::start(key(1), key(2)).unwrap();
        let (_, c2) = Initiator::start(key(1), key(2)).unwrap();
        assert_ne!(c1, c2);
    }

    /// A man in the middle M relays between A and B but gives each side his own key. He picks
    /// his nonces as he likes; the codes match only by chance. Over many seeded runs the match
    /// rate must be near 10^-6, i.e. in 20 000 runs we expect no match at all.
    #[test]
    fn man_in_the_middle_gets_different_codes() {
        let (a, b, m) = (key(1), key(2), key(3));
        let mut matches = 0;
        for i in 0u32..20_000 {
            let mut na = [0u8; 32];
            na[..4].copy_from_slice(&i.to_le_bytes());
            let mut nb = na;
            nb[31] = 0xbb;
            let mut nm = na;
            nm[31] = 0xcc;
            // A believes it talks to B but has M's key; B believes A has M's key.
            let (mut ini, commit_a) = Initiator::start_with_nonce(a, m, na).unwrap();
            let mut m_as_initiator_to_b = Initiator::start_with_nonce(m, b, nm).unwrap();
            let mut resp_b = Responder::with_nonce(b, m, nb).unwrap();
            let _ = commit_a; // M cannot open A's commitment.
            let nonce_b = resp_b.handle(m_as_initiator_to_b.1).unwrap().send.unwrap();
            let out_m = m_as_initiator_to_b.0.handle(nonce_b).unwrap();
            let code_b = resp_b.handle(out_m.send.unwrap()).unwrap().code.unwrap();
            // M now knows B's code and answers A with a nonce of his choosing (best effort:
            // B's own nonce), but A's code depends on NA, which M has not seen.
            let code_a = ini.handle(Message::Nonce(nb)).unwrap().code.unwrap();
            if code_a == code_b {
                matches += 1;
            }
        }
        assert!(matches <= 1, "{matches} codes matched under a MITM");
    }

    proptest! {
        #[test]
        fn honest_runs_always_agree(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(),
                                     na in any::<[u8; 32]>(), nb in any::<[u8; 32]>()) {
            prop_assume!(a != b);
            let (a, b) = (KeyId::from_digest(a), KeyId::from_digest(b));
            let (ca, cb) = run(b, a, a, b, na, nb);
            prop_assert_eq!(ca, cb);
            prop_assert!(ca.value() < 1_000_000);
        }

        #[test]
        fn substituted_key_changes_the_code(na in any::<[u8; 32]>(), nb in any::<[u8; 32]>(),
                                            wrong in any::<[u8; 32]>()) {
            let (a, b) = (key(1), key(2));
            let wrong = KeyId::from_digest(wrong);
            prop_assume!(wrong != a && wrong != b);
            // B thinks A's key is `wrong`: the commitment check fails (the reveal was made for
            // the real pair of keys), so no code is ever shown to B.
            let (mut ini, commit) = Initiator::start_with_nonce(a, b, na).unwrap();
            let mut resp = Responder::with_nonce(b, wrong, nb).unwrap();
            let nonce = resp.handle(commit).unwrap().send.unwrap();
            let reveal = ini.handle(nonce).unwrap().send.unwrap();
            prop_assert_eq!(resp.handle(reveal), Err(ExchangeError::CommitmentMismatch));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Message::from_bytes(&bytes);
        }
    }
}
