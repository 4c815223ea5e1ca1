//! The wire format: message ids, destination tags, the header and the sealed message, parsed
//! with bounds. See the [parent module](super#wire-format-version-1) for the byte layout.

use std::fmt;
use std::str::FromStr;

use public_key_identity::KeyId;

use crate::error::{Error, Result};

/// The default bound on a sealed message's wire size (1 MiB): what a relay accepts unless it
/// is configured otherwise, and the most [`seal`](super::seal) will make.
pub const MAX_MESSAGE_BYTES: u64 = 1 << 20;

/// The format version this code writes and reads.
pub(super) const VERSION: u8 = 1;

/// The ChaCha20-Poly1305 authentication tag, at the end of every body.
pub(super) const AEAD_TAG_LEN: usize = 16;

const ID_LABEL: &[u8] = b"thali-mesh/id/v1";
const TAG_LABEL: &[u8] = b"thali-mesh/tag/v1";

// Header field offsets (the table in the parent module's docs).
const OFF_VERSION: usize = 0;
const OFF_FLAGS: usize = 1;
const OFF_DEST: usize = 2;
const OFF_CREATED: usize = 18;
const OFF_EXPIRES: usize = 26;
const OFF_ACK: usize = 34;
const OFF_EPHEMERAL: usize = 50;
/// Where `body_len` starts: the header bytes before it are what the sender signs.
pub(super) const OFF_BODY_LEN: usize = 82;

/// SHA-256 of the concatenation of `parts`.
pub(super) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The first 16 bytes of a digest.
pub(super) fn truncate_16(digest: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// A length as `u64` (lossless on every target Rust supports; saturates in theory).
pub(super) fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Exactly `2·N` lowercase hex digits.
pub(super) fn decode_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N]> {
    let malformed = |reason: String| Error::Malformed { what, reason };
    if text.len() != 2 * N {
        return Err(malformed(format!(
            "expected {} lowercase hex digits, got {} bytes of text",
            2 * N,
            text.len()
        )));
    }
    let bytes = data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .map_err(|_| malformed("not lowercase hex".into()))?;
    bytes
        .try_into()
        .map_err(|_| malformed(format!("expected {N} bytes")))
}

/// A message's name: SHA-256 of `"thali-mesh/id/v1" ‖` the whole wire bytes of the sealed
/// message. Every relay computes the same id from the bytes it holds, and any change to them
/// gives another id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    /// The prefix of [`doc_id`](MessageId::doc_id).
    pub const DOC_ID_PREFIX: &'static str = "m-";

    /// The id of a sealed message's wire bytes (the same as [`SealedMessage::id`] of them).
    pub fn of_wire_bytes(bytes: &[u8]) -> MessageId {
        MessageId(sha256(&[ID_LABEL, bytes]))
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Parses exactly 64 lowercase hex digits (the only spelling [`to_hex`](Self::to_hex) makes).
    pub fn from_hex(text: &str) -> Result<MessageId> {
        decode_hex(text, "message id").map(MessageId)
    }

    /// The id of the couch-sync document the message is stored under: `"m-"` followed by the
    /// [hex](Self::to_hex) (66 characters).
    pub fn doc_id(&self) -> String {
        format!("{}{}", Self::DOC_ID_PREFIX, self.to_hex())
    }

    /// Parses a [`doc_id`](Self::doc_id).
    pub fn from_doc_id(doc_id: &str) -> Result<MessageId> {
        let hex = doc_id
            .strip_prefix(Self::DOC_ID_PREFIX)
            .ok_or_else(|| Error::Malformed {
                what: "message document id",
                reason: "does not start with \"m-\"".into(),
            })?;
        Self::from_hex(hex)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = Error;

    fn from_str(s: &str) -> Result<MessageId> {
        Self::from_hex(s)
    }
}

/// Who a message is for, as relays see it: the first 16 bytes of SHA-256 of
/// `"thali-mesh/tag/v1" ‖` the recipient's 32 key-id bytes.
///
/// A deliberate trade-off: the tag is **stable**, so anybody who knows the recipient's key id
/// can recognise its messages and link them to each other, and the directed router can learn
/// who meets whom; to anybody else it is a pseudonym. It is not unlinkable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestTag(pub [u8; 16]);

impl DestTag {
    /// The tag of a recipient's key id.
    pub fn of(key_id: &KeyId) -> DestTag {
        DestTag(truncate_16(&sha256(&[TAG_LABEL, key_id.as_bytes()])))
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Parses exactly 32 lowercase hex digits.
    pub fn from_hex(text: &str) -> Result<DestTag> {
        decode_hex(text, "destination tag").map(DestTag)
    }
}

impl fmt::Display for DestTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DestTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DestTag({self})")
    }
}

impl FromStr for DestTag {
    type Err = Error;

    fn from_str(s: &str) -> Result<DestTag> {
        Self::from_hex(s)
    }
}

/// The routing header: the only part of a message a relay can read. Fixed size, big-endian;
/// the byte layout is the table in the [parent module](super#wire-format-version-1).
///
/// A header made by [`seal`](super::seal) or read by [`Header::from_bytes`] satisfies the
/// format's rules (version 1, no flags, `expires_ms > created_ms`, the ephemeral key's top bit
/// clear, `body_len ≥ 16`); one built field by field is checked only when it is parsed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The format version, 1.
    pub version: u8,
    /// Flags; none are defined, so it is 0 (a message with any flag set is refused).
    pub flags: u8,
    /// Who the message is for.
    pub dest: DestTag,
    /// When the sender sealed it: milliseconds since the Unix epoch, by the sender's clock.
    pub created_ms: u64,
    /// When relays may drop it: milliseconds since the Unix epoch; always after `created_ms`.
    pub expires_ms: u64,
    /// The first 16 bytes of SHA-256 of `"thali-mesh/ack/v1" ‖ ack`: what a
    /// [`Receipt`](super::Receipt) must hash to.
    pub ack_hash: [u8; 16],
    /// The sender's ephemeral X25519 public key for this message alone.
    pub ephemeral: [u8; 32],
    /// The body's length in bytes: the ciphertext, including its 16-byte authentication tag.
    pub body_len: u32,
}

impl Header {
    /// The header's size on the wire.
    pub const LEN: usize = 86;

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; Header::LEN] {
        let mut out = [0u8; Header::LEN];
        out[OFF_VERSION] = self.version;
        out[OFF_FLAGS] = self.flags;
        out[OFF_DEST..OFF_CREATED].copy_from_slice(&self.dest.0);
        out[OFF_CREATED..OFF_EXPIRES].copy_from_slice(&self.created_ms.to_be_bytes());
        out[OFF_EXPIRES..OFF_ACK].copy_from_slice(&self.expires_ms.to_be_bytes());
        out[OFF_ACK..OFF_EPHEMERAL].copy_from_slice(&self.ack_hash);
        out[OFF_EPHEMERAL..OFF_BODY_LEN].copy_from_slice(&self.ephemeral);
        out[OFF_BODY_LEN..].copy_from_slice(&self.body_len.to_be_bytes());
        out
    }

    /// Reads and checks the header at the start of `bytes` (whatever follows it is not
    /// looked at): a relay can route on a prefix of [`Header::LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Header> {
        let malformed = |reason: String| Error::Malformed {
            what: "sealed message header",
            reason,
        };
        let mut r = Reader(bytes);
        let truncated = || {
            malformed(format!(
                "truncated: {} of {} bytes",
                bytes.len(),
                Header::LEN
            ))
        };
        let [version] = r.array().ok_or_else(truncated)?;
        if version != VERSION {
            return Err(malformed(format!("unsupported version {version}")));
        }
        let [flags] = r.array().ok_or_else(truncated)?;
        if flags != 0 {
            return Err(malformed(format!("unknown flags {flags:#04x}")));
        }
        let dest = DestTag(r.array().ok_or_else(truncated)?);
        let created_ms = u64::from_be_bytes(r.array().ok_or_else(truncated)?);
        let expires_ms = u64::from_be_bytes(r.array().ok_or_else(truncated)?);
        let ack_hash = r.array().ok_or_else(truncated)?;
        let ephemeral: [u8; 32] = r.array().ok_or_else(truncated)?;
        let body_len = u32::from_be_bytes(r.array().ok_or_else(truncated)?);
        if expires_ms <= created_ms {
            return Err(malformed(format!(
                "expires ({expires_ms}) at or before it was created ({created_ms})"
            )));
        }
        if ephemeral.last().is_some_and(|b| b & 0x80 != 0) {
            return Err(malformed("ephemeral key has its top bit set".into()));
        }
        if u64::from(body_len) < len_u64(AEAD_TAG_LEN) {
            return Err(malformed(format!(
                "body of {body_len} bytes is shorter than its authentication tag"
            )));
        }
        Ok(Header {
            version,
            flags,
            dest,
            created_ms,
            expires_ms,
            ack_hash,
            ephemeral,
            body_len,
        })
    }

    /// Whether the message is for this key id (its [`DestTag`] is the key id's).
    pub fn is_for(&self, key_id: &KeyId) -> bool {
        self.dest == DestTag::of(key_id)
    }

    /// Whether the message has expired at `now_ms`: it is live while `now_ms < expires_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }

    /// The wire size of the message this header heads: `Header::LEN + body_len`.
    pub fn message_size(&self) -> u64 {
        len_u64(Header::LEN) + u64::from(self.body_len)
    }
}

/// A sealed message: the [`Header`] relays route on and the body only the recipient can open.
///
/// Made by [`seal`](super::seal) or [`SealedMessage::from_bytes`], so the header is valid and
/// `header().body_len` is the body's length.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedMessage {
    pub(super) header: Header,
    pub(super) ciphertext: Vec<u8>,
}

impl SealedMessage {
    /// Parses a message's wire bytes: `header ‖ body`, exactly `Header::LEN + body_len` bytes.
    ///
    /// Refuses input longer than `max_len` ([`Error::TooLarge`], before reading it, and also
    /// when the header declares a larger message) and anything not in the format
    /// ([`Error::Malformed`]). It never panics, whatever the bytes. Nothing is decrypted.
    pub fn from_bytes(bytes: &[u8], max_len: u64) -> Result<SealedMessage> {
        let size = len_u64(bytes.len());
        if size > max_len {
            return Err(Error::TooLarge {
                what: "sealed message",
                size,
                limit: max_len,
            });
        }
        let header = Header::from_bytes(bytes)?;
        let declared = header.message_size();
        if declared > max_len {
            return Err(Error::TooLarge {
                what: "sealed message (as its header declares)",
                size: declared,
                limit: max_len,
            });
        }
        let body = bytes.get(Header::LEN..).unwrap_or_default();
        if len_u64(body.len()) != u64::from(header.body_len) {
            return Err(Error::Malformed {
                what: "sealed message",
                reason: format!(
                    "body is {} bytes, the header says {}",
                    body.len(),
                    header.body_len
                ),
            });
        }
        Ok(SealedMessage {
            header,
            ciphertext: body.to_vec(),
        })
    }

    /// The wire bytes: `header ‖ body`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Header::LEN + self.ciphertext.len());
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// The routing header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The body: ChaCha20-Poly1305 ciphertext and tag, opaque to everybody but the recipient.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The message id (of the wire bytes, without copying them).
    pub fn id(&self) -> MessageId {
        MessageId(sha256(&[
            ID_LABEL,
            &self.header.to_bytes(),
            &self.ciphertext,
        ]))
    }

    /// The wire size in bytes.
    pub fn size(&self) -> u64 {
        len_u64(Header::LEN) + len_u64(self.ciphertext.len())
    }
}

impl fmt::Debug for SealedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedMessage")
            .field("id", &self.id())
            .field("header", &self.header)
            .field("body_bytes", &self.ciphertext.len())
            .finish()
    }
}

/// Reads fixed-size fields off the front of a byte string, never past its end.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    /// The next `N` bytes, or `None` when fewer are left.
    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    /// The next `len` bytes, or `None` when fewer are left.
    pub(super) fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(head)
    }

    /// A big-endian `u16` length, then that many bytes.
    pub(super) fn u16_prefixed(&mut self) -> Option<&'a [u8]> {
        let len = u16::from_be_bytes(self.array()?);
        self.bytes(usize::from(len))
    }

    /// Everything left.
    pub(super) fn rest(self) -> &'a [u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: 1,
            flags: 0,
            dest: DestTag([0x11; 16]),
            created_ms: 0x0102_0304_0506_0708,
            expires_ms: 0x0102_0304_0506_0709,
            ack_hash: [0x22; 16],
            ephemeral: [0x33; 32],
            body_len: 0x0000_0100,
        }
    }

    #[test]
    fn header_layout_matches_the_table() {
        let bytes = header().to_bytes();
        let hex = data_encoding::HEXLOWER.encode(&bytes);
        let expected = [
            "01",
            "00",
            &"11".repeat(16),
            "0102030405060708",
            "0102030405060709",
            &"22".repeat(16),
            &"33".repeat(32),
            "00000100",
        ]
        .concat();
        assert_eq!(hex, expected);
        assert_eq!(Header::from_bytes(&bytes).unwrap(), header());
        // Trailing bytes are not the header's business.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"body");
        assert_eq!(Header::from_bytes(&longer).unwrap(), header());
    }

    #[test]
    fn header_rules_are_enforced() {
        let reason = |h: Header| match Header::from_bytes(&h.to_bytes()) {
            Err(Error::Malformed { reason, .. }) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        };
        assert!(
            reason(Header {
                version: 2,
                ..header()
            })
            .contains("version 2")
        );
        assert!(
            reason(Header {
                flags: 1,
                ..header()
            })
            .contains("flags")
        );
        let h = header();
        assert!(
            reason(Header {
                expires_ms: h.created_ms,
                ..h
            })
            .contains("expires")
        );
        let mut ephemeral = [0u8; 32];
        ephemeral[31] = 0x80;
        assert!(reason(Header { ephemeral, ..h }).contains("top bit"));
        assert!(reason(Header { body_len: 15, ..h }).contains("authentication tag"));
        assert!(Header::from_bytes(&Header { body_len: 16, ..h }.to_bytes()).is_ok());
        for len in 0..Header::LEN {
            let err = Header::from_bytes(&h.to_bytes()[..len]).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{len}: {err}");
        }
    }

    #[test]
    fn sealed_message_length_must_match_the_header() {
        let mut wire = Header {
            body_len: 20,
            ..header()
        }
        .to_bytes()
        .to_vec();
        wire.extend_from_slice(&[0xaa; 20]);
        let message = SealedMessage::from_bytes(&wire, MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(message.to_bytes(), wire);
        assert_eq!(message.size(), 106);
        assert_eq!(message.id(), MessageId::of_wire_bytes(&wire));
        assert!(format!("{message:?}").contains("body_bytes: 20"));

        let short = &wire[..wire.len() - 1];
        assert!(matches!(
            SealedMessage::from_bytes(short, MAX_MESSAGE_BYTES),
            Err(Error::Malformed { .. })
        ));
        let mut long = wire.clone();
        long.push(0);
        assert!(matches!(
            SealedMessage::from_bytes(&long, MAX_MESSAGE_BYTES),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            SealedMessage::from_bytes(&wire, 105),
            Err(Error::TooLarge {
                size: 106,
                limit: 105,
                ..
            })
        ));
        // A header that declares more than the bound is refused before the body is looked at.
        let huge = Header {
            body_len: u32::MAX,
            ..header()
        }
        .to_bytes();
        assert!(matches!(
            SealedMessage::from_bytes(&huge, MAX_MESSAGE_BYTES),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn ids_and_tags_round_trip_through_hex() {
        let id = MessageId::of_wire_bytes(b"wire");
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(MessageId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        let doc_id = id.doc_id();
        assert_eq!(doc_id, format!("m-{id}"));
        assert_eq!(MessageId::from_doc_id(&doc_id).unwrap(), id);
        assert!(MessageId::from_doc_id(&id.to_hex()).is_err());
        assert!(MessageId::from_hex(&id.to_hex().to_uppercase()).is_err());
        assert!(MessageId::from_hex(&id.to_hex()[1..]).is_err());
        assert!(MessageId::from_hex(&"g".repeat(64)).is_err());
        assert!(MessageId::from_hex("é").is_err());
        assert_eq!(format!("{id:?}"), format!("MessageId({id})"));

        let tag = DestTag::of(&KeyId::from_digest([7; 32]));
        assert_eq!(tag.to_hex().len(), 32);
        assert_eq!(DestTag::from_hex(&tag.to_hex()).unwrap(), tag);
        assert_eq!(tag.to_string().parse::<DestTag>().unwrap(), tag);
        assert!(DestTag::from_hex(&id.to_hex()).is_err());
        assert_ne!(DestTag::of(&KeyId::from_digest([8; 32])), tag);
    }

    #[test]
    fn labels_are_the_documented_ones() {
        // SHA-256("thali-mesh/tag/v1" ‖ 00×32)[..16] and SHA-256("thali-mesh/id/v1").
        let zero = KeyId::from_digest([0; 32]);
        let mut input = b"thali-mesh/tag/v1".to_vec();
        input.extend_from_slice(&[0; 32]);
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        assert_eq!(DestTag::of(&zero).0, digest.as_ref()[..16]);
        let digest = ring::digest::digest(&ring::digest::SHA256, b"thali-mesh/id/v1");
        assert_eq!(MessageId::of_wire_bytes(b"").0, digest.as_ref()[..]);
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader(&[0, 3, 1, 2]);
        assert_eq!(r.u16_prefixed(), None, "declares 3, has 2");
        let mut r = Reader(&[0, 2, 1, 2, 9]);
        assert_eq!(r.u16_prefixed(), Some(&[1u8, 2][..]));
        assert_eq!(r.array::<2>(), None);
        assert_eq!(r.bytes(2), None);
        assert_eq!(r.rest(), &[9]);
    }
}
