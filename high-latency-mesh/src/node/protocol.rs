//! The session messages two nodes exchange when they meet: small JSON objects, each bounded
//! (see the [parent module](super#the-session-protocol) for the order they go in).
//!
//! Every list a peer sends is read up to its protocol bound (`MAX_*` below) and the rest is
//! ignored; every id, tag and receipt is lowercase hex and an entry that does not parse is
//! skipped. Unknown members are ignored, so a later version may add some.

use serde::{Deserialize, Serialize};

use crate::routing::Reason;

/// Most destination tags in a [`Hello`] (a node's own: one per identity it receives for).
pub const MAX_TAGS: usize = 4;
/// Most encounters in a [`Hello`].
pub const MAX_MET: usize = 64;
/// Most receipts in a [`Hello`].
pub const MAX_RECEIPTS: usize = 256;
/// Most held-id prefixes in a [`Hello`].
pub const MAX_HELD: usize = 1024;
/// Most items in an [`OfferList`], and ids in an [`Accept`] or [`Received`].
pub const MAX_ITEMS: usize = 256;
/// Hex digits of a held-id prefix in a [`Hello`]: the first 8 bytes of a message id.
pub const HELD_PREFIX_HEX: usize = 16;

/// What a node says first when it meets another: who it is (as a destination), whom it met
/// and when, the delivery receipts it holds, and which messages it holds or has had.
///
/// Wire form: `{"tags":["<32 hex>"],"met":[{"tag":"<32 hex>","at_ms":N}],"activity":N,
/// "receipts":["<128 hex>"],"held":["<16 hex>"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Its own [`DestTag`](crate::seal::DestTag)s, hex (at most [`MAX_TAGS`]).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Its most recent encounters (at most [`MAX_MET`]; empty unless the mode learns).
    #[serde(default)]
    pub met: Vec<Met>,
    /// Its activity: its recent rate of encounters, in thousandths, decayed (0 unless the
    /// mode learns; see [`Encounters::activity`](crate::routing::Encounters::activity)).
    #[serde(default)]
    pub activity: u64,
    /// Delivery receipts it holds, [`Receipt::to_hex`](crate::seal::Receipt::to_hex) (at most
    /// [`MAX_RECEIPTS`]).
    #[serde(default)]
    pub receipts: Vec<String>,
    /// The first [`HELD_PREFIX_HEX`] hex digits of the ids of the messages it holds or has
    /// had (at most [`MAX_HELD`]): a summary vector, so the peer does not offer them.
    #[serde(default)]
    pub held: Vec<String>,
}

/// One encounter in a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Met {
    /// The destination tag met, hex.
    pub tag: String,
    /// When (ms, on the sender's clock).
    pub at_ms: u64,
}

/// The messages a node offers to a peer, deliveries first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferList {
    /// At most [`MAX_ITEMS`].
    #[serde(default)]
    pub items: Vec<OfferItem>,
}

/// One offered message: its id and routing header facts, and the copy accounting of the
/// hand-over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferItem {
    /// The [`MessageId`](crate::seal::MessageId), 64 hex digits.
    pub id: String,
    /// Its wire size in bytes.
    pub size: u64,
    /// When it expires (ms).
    pub expires_ms: u64,
    /// Copies the receiver gets.
    pub give: u16,
    /// Copies the sender keeps once the receiver has it (0: the sender deletes its copy).
    pub keep: u16,
    /// Hops from the source to the sender.
    pub hops: u8,
    /// Focus hops so far (directed mode).
    pub focus_hops: u8,
    /// Why it is offered.
    pub reason: OfferReason,
}

/// Why a message is offered ([`Reason`] on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OfferReason {
    /// The receiver is the destination.
    Deliver,
    /// Flood mode.
    Flood,
    /// A share of the copies.
    Spray,
    /// The single copy moves towards the destination.
    Focus,
}

impl OfferReason {
    /// The routing reason.
    pub fn reason(self) -> Reason {
        match self {
            OfferReason::Deliver => Reason::Deliver,
            OfferReason::Flood => Reason::Flood,
            OfferReason::Spray => Reason::Spray,
            OfferReason::Focus => Reason::Focus,
        }
    }

    /// The wire reason of a routing reason.
    pub fn of(reason: Reason) -> OfferReason {
        match reason {
            Reason::Deliver => OfferReason::Deliver,
            Reason::Flood => OfferReason::Flood,
            Reason::Spray => OfferReason::Spray,
            _ => OfferReason::Focus,
        }
    }
}

/// The offered messages a node takes (a subset of the [`OfferList`]'s ids, in its order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// Message ids, hex (at most [`MAX_ITEMS`]).
    #[serde(default)]
    pub ids: Vec<String>,
}

/// The accepted messages that arrived and verified: the sender applies its `keep` to these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// Message ids, hex (at most [`MAX_ITEMS`]).
    #[serde(default)]
    pub ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_are_the_documented_json() {
        let hello = Hello {
            tags: vec!["00".repeat(16)],
            met: vec![Met {
                tag: "11".repeat(16),
                at_ms: 5,
            }],
            activity: 7,
            receipts: vec![],
            held: vec!["ab".repeat(8)],
        };
        let text = serde_json::to_string(&hello).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"tags":["{}"],"met":[{{"tag":"{}","at_ms":5}}],"activity":7,"receipts":[],"held":["{}"]}}"#,
                "00".repeat(16),
                "11".repeat(16),
                "ab".repeat(8)
            )
        );
        assert_eq!(serde_json::from_str::<Hello>(&text).unwrap(), hello);
        // Unknown members and missing lists are fine.
        let lenient: Hello = serde_json::from_str(r#"{"future":1}"#).unwrap();
        assert_eq!(lenient, Hello::default());
        let item = OfferItem {
            id: "cd".repeat(32),
            size: 200,
            expires_ms: 9,
            give: 3,
            keep: 2,
            hops: 1,
            focus_hops: 0,
            reason: OfferReason::Spray,
        };
        let text = serde_json::to_string(&item).unwrap();
        assert!(text.ends_with(r#""reason":"spray"}"#), "{text}");
        for r in [Reason::Deliver, Reason::Flood, Reason::Spray, Reason::Focus] {
            assert_eq!(OfferReason::of(r).reason(), r);
        }
    }
}
