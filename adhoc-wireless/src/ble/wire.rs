//! What the Bluetooth LE plugin puts on the air, byte by byte. Pure encoding and decoding: no
//! I/O. All integers big-endian.
//!
//! # The advertisement
//!
//! A legacy advertising PDU carries 31 bytes: the flags (3) and one service-data field for the
//! 128-bit [`SERVICE_UUID`] (2 + 16) leave 10 bytes — too few for an [`Advert`] (35 bytes
//! naming a key, 200 or more with a beacon). So the advertisement carries a **pointer**, and the
//! advert itself is read over an L2CAP channel ([`KIND_ADVERT`]) and cached under its tag:
//!
//! | size | field |
//! |---|---|
//! | 1 | version, [`PAYLOAD_VERSION`] |
//! | 2 | `u16` the L2CAP LE PSM the peer listens on (`0x0080 ..= 0x00ff`) |
//! | 7 | tag: the first 7 bytes of FNV-1a-64 of the encoded advert ([`advert_tag`]) |
//!
//! Example: PSM `0x0081`, tag `01 02 03 04 05 06 07` is `01 00 81 01 02 03 04 05 06 07`. A
//! scanner that has the advert for this address and tag need not read it again; a new tag (a
//! new key, a refreshed beacon, new application data) makes it read afresh. The tag is not a
//! security property: what is read is checked against it, and the table treats it as any
//! advert heard from that radio address.
//!
//! # L2CAP connection-oriented channels
//!
//! Every channel begins with one byte from the side that connects: [`KIND_STREAM`] and
//! [`KIND_MESSAGE`] (with its length and bytes) are the crate's [`frame`](crate::frame)s, and
//! are answered the same way ([`ACCEPTED`] or [`REFUSED`]). [`KIND_ADVERT`] asks for the
//! advert:
//!
//! | size | field |
//! |---|---|
//! | 1 | [`ACCEPTED`] (or [`REFUSED`]: nothing advertised; the channel closes) |
//! | 2 | `u16` length n, 1 ..= [`MAX_ADVERT_BYTES`] |
//! | n | the encoded [`Advert`] |
//!
//! after which the answering side closes the channel.

use crate::error::{Error, Result};
#[cfg(doc)]
use crate::peer::Advert;
use crate::peer::MAX_ADVERT_BYTES;

pub use crate::frame::{ACCEPTED, KIND_MESSAGE, KIND_STREAM, REFUSED};

/// The Thali service UUID, `b3b2f8a0-6f43-4c0e-9a35-7468616c6901` (the last bytes spell
/// `thali` and `01`): service data under it is a [payload](self#the-advertisement).
pub const SERVICE_UUID: u128 = 0xb3b2_f8a0_6f43_4c0e_9a35_7468_616c_6901;
/// Version of the advertisement payload this crate writes.
pub const PAYLOAD_VERSION: u8 = 1;
/// Length of the payload.
pub const PAYLOAD_LEN: usize = 10;
/// Length of the tag.
pub const TAG_LEN: usize = 7;
/// First byte of a channel that asks for the advert.
pub const KIND_ADVERT: u8 = 0x03;
/// The lowest LE PSM an application may use (dynamic range).
pub const PSM_MIN: u16 = 0x0080;
/// The highest LE PSM.
pub const PSM_MAX: u16 = 0x00ff;

/// What a peer's advertisement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Payload {
    /// The PSM its L2CAP listener is on.
    pub psm: u16,
    /// The tag of its advert.
    pub tag: [u8; TAG_LEN],
}

impl Payload {
    /// The 10 bytes of service data.
    pub fn encode(&self) -> [u8; PAYLOAD_LEN] {
        let mut out = [0u8; PAYLOAD_LEN];
        out[0] = PAYLOAD_VERSION;
        out[1..3].copy_from_slice(&self.psm.to_be_bytes());
        out[3..].copy_from_slice(&self.tag);
        out
    }

    /// Decodes service data, refusing anything else than exactly one version-1 payload with a
    /// PSM in the LE dynamic range.
    pub fn decode(bytes: &[u8]) -> Result<Payload> {
        let bad = |reason: &str| Error::malformed("BLE payload", reason);
        let bytes: &[u8; PAYLOAD_LEN] = bytes.try_into().map_err(|_| bad("wrong length"))?;
        let [version, p0, p1, tag @ ..] = *bytes;
        if version != PAYLOAD_VERSION {
            return Err(bad("unknown version"));
        }
        let psm = u16::from_be_bytes([p0, p1]);
        if !(PSM_MIN..=PSM_MAX).contains(&psm) {
            return Err(bad("PSM out of the LE dynamic range"));
        }
        Ok(Payload { psm, tag })
    }
}

/// The tag of an encoded advert: the first [`TAG_LEN`] bytes of its FNV-1a-64 hash.
pub fn advert_tag(encoded: &[u8]) -> [u8; TAG_LEN] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in encoded {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let bytes = h.to_be_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&bytes[..TAG_LEN]);
    tag
}

/// The answer to [`KIND_ADVERT`] carrying `encoded`.
pub fn advert_answer(encoded: &[u8]) -> Result<Vec<u8>> {
    let len = u16::try_from(encoded.len())
        .ok()
        .filter(|&n| n >= 1 && usize::from(n) <= MAX_ADVERT_BYTES)
        .ok_or(Error::TooLarge {
            what: "advert",
            size: encoded.len(),
            limit: MAX_ADVERT_BYTES,
        })?;
    let mut out = Vec::with_capacity(3 + encoded.len());
    out.push(ACCEPTED);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(encoded);
    Ok(out)
}

/// Reads the 3-byte header of an advert answer: the length of the advert that follows.
pub fn advert_answer_len(header: [u8; 3]) -> Result<usize> {
    let [answer, a, b] = header;
    if answer != ACCEPTED {
        return Err(Error::Unreachable(
            "the peer advertises nothing now".to_string(),
        ));
    }
    let len = usize::from(u16::from_be_bytes([a, b]));
    if len == 0 || len > MAX_ADVERT_BYTES {
        return Err(Error::malformed("BLE advert answer", "length out of range"));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example() {
        let p = Payload {
            psm: 0x0081,
            tag: [1, 2, 3, 4, 5, 6, 7],
        };
        assert_eq!(p.encode(), [1, 0, 0x81, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(Payload::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for bad in [
            &[][..],
            &[1, 0, 0x81, 1, 2, 3, 4, 5, 6][..],
            &[1, 0, 0x81, 1, 2, 3, 4, 5, 6, 7, 8][..],
            &[2, 0, 0x81, 1, 2, 3, 4, 5, 6, 7][..],
            &[1, 0, 0x7f, 1, 2, 3, 4, 5, 6, 7][..],
            &[1, 1, 0x00, 1, 2, 3, 4, 5, 6, 7][..],
        ] {
            assert!(Payload::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags_and_answers() {
        // FNV-1a-64 of the empty string is cbf29ce484222325.
        assert_eq!(advert_tag(b""), [0xcb, 0xf2, 0x9c, 0xe4, 0x84, 0x22, 0x23]);
        assert_ne!(advert_tag(b"a"), advert_tag(b"b"));
        let answer = advert_answer(b"xyz").unwrap();
        assert_eq!(answer, [0, 0, 3, b'x', b'y', b'z']);
        assert_eq!(advert_answer_len([0, 0, 3]).unwrap(), 3);
        assert!(advert_answer_len([1, 0, 3]).is_err());
        assert!(advert_answer_len([0, 0, 0]).is_err());
        assert!(advert_answer_len([0, 0xff, 0xff]).is_err());
        assert!(advert_answer(&[]).is_err());
        assert!(advert_answer(&vec![0; MAX_ADVERT_BYTES + 1]).is_err());
    }
}
