//! Standalone messages over onion streams.
//!
//! [`Link::send`](adhoc_wireless::Link::send) opens a stream to the service's
//! [`MESSAGE_PORT`] and writes one message in the LAN link's message framing (adhoc-wireless's
//! `mdns::tcp`), so one decoder reads both. All integers big-endian:
//!
//! | size | field |
//! |---|---|
//! | 1 | kind: `0x02` message |
//! | 4 | `u32` length n, 0 ..= [`MAX_MESSAGE_BYTES`] |
//! | n | the message |
//!
//! The service answers one byte, `0x00` accepted or `0x01` refused (its inbound queue is full),
//! and closes the stream. Anything else — another kind, a length over the limit, a short read,
//! silence past the timeout — and it closes the stream without answering.
//!
//! Example: the message `hi` is `02 00 00 00 02 68 69`, answered by `00`.
//!
//! Streams to any other port are the application's byte streams from their first byte: an
//! httpkey URL's port carries TLS directly, as on TCP.

use adhoc_wireless::MAX_MESSAGE_BYTES;

use crate::error::{Error, Result};

/// The virtual port of standalone messages.
pub const MESSAGE_PORT: u16 = 7;
/// First byte of a message.
pub const KIND_MESSAGE: u8 = 0x02;
/// Answer: accepted.
pub const ACCEPTED: u8 = 0x00;
/// Answer: refused, the inbound queue is full.
pub const REFUSED: u8 = 0x01;

/// The bytes of a message stream carrying `message`.
pub fn message_frame(message: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(message.len())
        .ok()
        .filter(|&n| n as usize <= MAX_MESSAGE_BYTES)
        .ok_or(Error::TooLarge {
            what: "message",
            size: message.len(),
            limit: MAX_MESSAGE_BYTES,
        })?;
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(KIND_MESSAGE);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(out)
}

/// Reads a message's 5-byte header: the length that follows.
pub fn message_len(header: [u8; 5]) -> Result<usize> {
    let [kind, a, b, c, d] = header;
    if kind != KIND_MESSAGE {
        return Err(Error::Malformed {
            what: "message",
            reason: format!("kind {kind:#04x}"),
        });
    }
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge {
            what: "message",
            size: len,
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example() {
        assert_eq!(message_frame(b"hi").unwrap(), [2, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(message_len([2, 0, 0, 0, 2]).unwrap(), 2);
    }

    #[test]
    fn limits() {
        assert!(message_frame(&vec![0; MAX_MESSAGE_BYTES]).is_ok());
        assert!(matches!(
            message_frame(&vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            message_len([2, 0xff, 0xff, 0xff, 0xff]),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            message_len([1, 0, 0, 0, 0]),
            Err(Error::Malformed { .. })
        ));
    }
}
