#![doc = include_str!("../README.md")]

pub mod error;
#[cfg(feature = "net")]
pub mod exchange;
pub mod node;
pub mod routing;
pub mod schedule;
pub mod seal;
#[cfg(feature = "sim")]
pub mod sim;

pub use error::{Error, ErrorKind, Result};
