//! Standalone messages over onion streams.
//!
//! [`Link::send`](adhoc_wireless::Link::send) opens a stream to the service's
//! [`MESSAGE_PORT`] and writes one message in the LAN link's message framing (adhoc-wireless's
//! `mdns::tcp`), with adhoc-wireless's [`frame`](adhoc_wireless::frame) encoder and decoder. All integers big-endian:
//!
//! | size | field |
//! |---|---|
//! | 1 | kind: `0x02` message |
//! | 4 | `u32` length n, 0 ..= [`MAX_MESSAGE_BYTES`](adhoc_wireless::MAX_MESSAGE_BYTES) |
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

pub use adhoc_wireless::frame::{ACCEPTED, KIND_MESSAGE, REFUSED, message_frame, message_len};

/// The virtual port of standalone messages.
pub const MESSAGE_PORT: u16 = 7;
