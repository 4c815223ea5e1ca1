#![doc = include_str!("../README.md")]

#[cfg(feature = "beacons")]
pub mod beacon;
#[cfg(all(feature = "ble", target_os = "linux"))]
pub mod ble;
pub mod clock;
mod discovery;
mod error;
pub mod frame;
mod link;
#[cfg(feature = "mdns")]
pub mod mdns;
mod neighbourhood;
mod peer;
#[cfg(feature = "sim")]
pub mod sim;
mod table;
#[cfg(all(feature = "wifi-direct", target_os = "linux"))]
pub mod wifi_direct;

pub use clock::Clock;
#[cfg(feature = "tokio")]
pub use clock::TokioClock;
pub use discovery::{Discovery, EVENT_BUFFER, Lagged, SharedTable, Subscription};
pub use error::{Error, ErrorKind, Result};
pub use link::{BoxedStream, Inbound, Incoming, Link, LinkStream, MAX_MESSAGE_BYTES, Plugin};
pub use neighbourhood::{Merger, Neighbourhood};
pub use peer::{
    ADVERT_VERSION, Address, Advert, AdvertId, Event, MAX_ADVERT_BYTES, MAX_ADVERT_DATA,
    MAX_BEACON_BYTES, Peer, PeerAddress, PeerId, Transport,
};
pub use table::{PeerTable, TableConfig, TableStats};
