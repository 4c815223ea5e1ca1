#![doc = include_str!("../README.md")]

#[cfg(feature = "arti")]
mod arti;
mod config;
mod error;
pub mod frame;
mod onion;
mod status;

#[cfg(feature = "arti")]
pub use arti::{AuthorizedClient, OnionService, ServiceOptions, Tor};
pub use config::{Authority, Fallback, Network, PrivateNetwork, TESTNET_ENV, TorConfig};
pub use error::{Error, ErrorKind, Result};
pub use onion::{check_binding, httpkey_url, onion_host, onion_key};
pub use status::{Bootstrap, ServiceState, ServiceStatus, TorEvent, TorStatus};
