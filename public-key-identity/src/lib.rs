#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod crypto;
mod error;
mod identity;

pub mod card;
pub mod cert;
pub mod exchange;
pub mod httpkey;
pub mod key;
pub mod keystore;
#[cfg(feature = "qr")]
pub mod qr;
pub mod tls;

pub use card::IdentityCard;
pub use cert::{PeerCert, cert_key_id, self_signed_cert};
pub use error::{Error, ErrorKind, Result};
pub use httpkey::{Host, HttpKeyUrl};
pub use identity::Identity;
pub use key::{KEY_ID_LEN, KeyAlgorithm, KeyId, KeyPair, ed25519_public_key_from_spki};
pub use keystore::Keystore;
pub use tls::{ClientAuth, Peer};
pub use zeroize::Zeroizing;

/// Entry points for the fuzz targets in `fuzz/`; not part of the API. A fuzz target reports a
/// finding by panicking, so panics are this module's purpose.
#[doc(hidden)]
#[allow(clippy::panic)]
pub mod fuzzing {
    /// Parses arbitrary bytes as an httpkey URL; whatever parses must format and re-parse to itself.
    pub fn httpkey_url(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(url) = text.parse::<crate::HttpKeyUrl>() {
            let again: crate::HttpKeyUrl = match url.to_string().parse() {
                Ok(again) => again,
                Err(e) => panic!("{url} formatted to something unparsable: {e}"),
            };
            assert_eq!(again, url);
            let _ = url.to_https();
        }
    }

    /// Parses arbitrary bytes as an identity card; whatever verifies must round-trip.
    pub fn identity_card(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(card) = crate::IdentityCard::from_json(text) {
            let again = crate::IdentityCard::from_json(&card.to_json());
            assert_eq!(again.ok().as_ref(), Some(&card));
        }
    }
}
