//! The framing of standalone messages (and stream opens) over byte-stream links, shared by the
//! LAN link ([`mdns::tcp`](crate::mdns) documents the whole exchange), the Bluetooth LE link and
//! tor-transport. Encoding and decoding, and one reader for the links' use. All integers
//! big-endian.
//!
//! | size | field |
//! |---|---|
//! | 1 | kind: [`KIND_STREAM`] or [`KIND_MESSAGE`] |
//! | 4 | (message only) `u32` length n, 0 ..= [`MAX_MESSAGE_BYTES`] |
//! | n | (message only) the message |
//!
//! answered by one byte, [`ACCEPTED`] or [`REFUSED`]. Example: the message `hi` is
//! `02 00 00 00 02 68 69`.

use crate::error::{Error, Result};
use crate::link::MAX_MESSAGE_BYTES;

/// First byte of a stream connection.
pub const KIND_STREAM: u8 = 0x01;
/// First byte of a message connection.
pub const KIND_MESSAGE: u8 = 0x02;
/// Answer: accepted.
pub const ACCEPTED: u8 = 0x00;
/// Answer: refused, the inbound queue is full.
pub const REFUSED: u8 = 0x01;

/// The bytes that open a message connection carrying `message`.
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

/// Reads a message's 5-byte header: the length of the message that follows.
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

/// Reads the rest of a message connection after its kind byte: the `u32` length and the
/// message, refusing one over [`MAX_MESSAGE_BYTES`] before reading it. (The one piece of I/O
/// here: every stream link reads messages this way.)
#[cfg(any(feature = "mdns", feature = "ble"))]
pub(crate) async fn read_message_body<S>(stream: &mut S) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let len = stream.read_u32().await?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE_BYTES {
        return Err(std::io::Error::other("message over the limit"));
    }
    let mut bytes = vec![0; len];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_and_the_limits() {
        assert_eq!(message_frame(b"hi").unwrap(), [2, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(message_len([2, 0, 0, 0, 2]).unwrap(), 2);
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
