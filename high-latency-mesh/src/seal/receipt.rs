//! Anonymous delivery receipts: what a recipient publishes so relays can drop their copies.
//! See the [parent module](super#delivery-receipts).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

use super::wire::{Header, MessageId, SealedMessage, decode_hex, sha256, truncate_16};

const ACK_LABEL: &[u8] = b"thali-mesh/ack/v1";

/// The `ack_hash` a header carries for an ack secret: SHA-256(`"thali-mesh/ack/v1" ‖ ack`)[..16].
pub(super) fn ack_hash(ack: &[u8; 32]) -> [u8; 16] {
    truncate_16(&sha256(&[ACK_LABEL, ack]))
}

/// Proof that a message was delivered: its id and its ack secret.
///
/// Only the sender and the recipient can compute `ack` (it comes out of the message's key
/// schedule, from the Diffie–Hellman secret); once the recipient publishes the receipt, any
/// relay can check it against the header ([`Receipt::clears`]) and drop its copy, but nobody
/// could have made it without opening the message. The receipt names neither sender nor
/// recipient.
///
/// Wire form ([`to_bytes`](Receipt::to_bytes)): the 32 id bytes, then the 32 ack bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The message delivered.
    pub id: MessageId,
    /// The ack secret from the message's key schedule.
    pub ack: [u8; 32],
}

impl Receipt {
    /// The wire size: id and ack.
    pub const LEN: usize = 64;

    /// Whether this receipt's ack matches the header's `ack_hash`. It does not compare the id:
    /// see [`clears_message`](Self::clears_message).
    pub fn clears(&self, header: &Header) -> bool {
        ack_hash(&self.ack) == header.ack_hash
    }

    /// Whether this receipt is for `message`: the same id, and an ack that
    /// [`clears`](Self::clears) its header.
    pub fn clears_message(&self, message: &SealedMessage) -> bool {
        self.id == message.id() && self.clears(message.header())
    }

    /// `id ‖ ack`.
    pub fn to_bytes(&self) -> [u8; Receipt::LEN] {
        let mut out = [0u8; Receipt::LEN];
        out[..32].copy_from_slice(&self.id.0);
        out[32..].copy_from_slice(&self.ack);
        out
    }

    /// Parses exactly [`Receipt::LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Receipt> {
        let bytes: &[u8; Receipt::LEN] = bytes.try_into().map_err(|_| Error::Malformed {
            what: "delivery receipt",
            reason: format!("{} bytes, expected {}", bytes.len(), Receipt::LEN),
        })?;
        let (id, ack) = bytes.split_at(32);
        let mut receipt = Receipt {
            id: MessageId([0; 32]),
            ack: [0; 32],
        };
        receipt.id.0.copy_from_slice(id);
        receipt.ack.copy_from_slice(ack);
        Ok(receipt)
    }

    /// 128 lowercase hex digits of [`to_bytes`](Self::to_bytes).
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.to_bytes())
    }

    /// Parses exactly 128 lowercase hex digits.
    pub fn from_hex(text: &str) -> Result<Receipt> {
        let bytes: [u8; Receipt::LEN] = decode_hex(text, "delivery receipt")?;
        Self::from_bytes(&bytes)
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("id", &self.id)
            .field("ack", &data_encoding::HEXLOWER.encode(&self.ack))
            .finish()
    }
}

impl FromStr for Receipt {
    type Err = Error;

    fn from_str(s: &str) -> Result<Receipt> {
        Self::from_hex(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_bytes_and_hex_round_trip() {
        let receipt = Receipt {
            id: MessageId([1; 32]),
            ack: [2; 32],
        };
        let bytes = receipt.to_bytes();
        assert_eq!(bytes[..32], [1; 32]);
        assert_eq!(bytes[32..], [2; 32]);
        assert_eq!(Receipt::from_bytes(&bytes).unwrap(), receipt);
        assert_eq!(Receipt::from_hex(&receipt.to_hex()).unwrap(), receipt);
        assert_eq!(receipt.to_string().parse::<Receipt>().unwrap(), receipt);
        assert!(Receipt::from_bytes(&bytes[..63]).is_err());
        assert!(Receipt::from_bytes(&[0; 65]).is_err());
        assert!(Receipt::from_hex(&receipt.to_hex()[..126]).is_err());
    }

    #[test]
    fn ack_hash_is_the_documented_digest() {
        let mut input = b"thali-mesh/ack/v1".to_vec();
        input.extend_from_slice(&[5; 32]);
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        assert_eq!(ack_hash(&[5; 32])[..], digest.as_ref()[..16]);
    }
}
