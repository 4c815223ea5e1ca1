//! The DNS-SD TXT record of a `_thali._tcp.local.` service, version 1.
//!
//! A DNS-SD TXT record is a list of strings, each one length byte and `key=value` (RFC 6763
//! §6). Keys are case-insensitive ASCII; values here are ASCII too. The fields of an
//! [`Advert`] map to these keys:
//!
//! | key | value | required |
//! |---|---|---|
//! | `v` | the LAN protocol version, `1` (this TXT layout and the TCP framing of [`super::tcp`]) | yes |
//! | `k` | the key id, its 52-character lowercase base32 text form | a key advert |
//! | `b0`, `b1`, … | a beacon's bytes (1 ..= [`MAX_BEACON_BYTES`]) in base64url without padding, cut into chunks of at most [`BEACON_CHUNK`] characters (at most [`BEACON_CHUNKS`] of them), in order | a beacon advert |
//! | `p` | the TCP port of the link, decimal; must equal the SRV record's port | yes |
//! | `d` | application data (0 ..= [`MAX_ADVERT_DATA`] bytes), base64url without padding | no (absent = empty) |
//!
//! Exactly one of `k` and `b0` is present; `b1` only with `b0`, `b2` only with `b1`, and so on. Each known
//! key appears at most once. Unknown keys are ignored (a later version may add some), but count
//! towards the bounds: at most [`MAX_TXT_ENTRIES`] strings and [`MAX_TXT_BYTES`] bytes in all
//! (each string's length byte included). Anything else is malformed: the plugin counts it in the
//! peer table ([`SharedTable::malformed`](crate::SharedTable::malformed)) and drops it.
//!
//! Example (a key advert with data `[1, 2]`, port 4000), in wire order:
//! `v=1`, `k=aaaa…aaaa` (52 characters), `p=4000`, `d=AQI`.

use std::str::FromStr;

use data_encoding::BASE64URL_NOPAD;
use public_key_identity::KeyId;

use crate::error::{Error, Result};
use crate::peer::{Advert, AdvertId, MAX_ADVERT_DATA, MAX_BEACON_BYTES};

/// The DNS-SD service type the LAN plugin advertises and browses.
pub const SERVICE_TYPE: &str = "_thali._tcp.local.";
/// The LAN protocol version in the `v` key.
pub const PROTOCOL_VERSION: &str = "1";
/// Most TXT bytes accepted from a peer (length bytes included).
pub const MAX_TXT_BYTES: usize = 1024;
/// Most TXT strings accepted from a peer.
pub const MAX_TXT_ENTRIES: usize = 16;
/// Most base64url characters in one beacon chunk (`b0`, `b1`, …).
pub const BEACON_CHUNK: usize = 200;
/// Most beacon chunks: enough for [`MAX_BEACON_BYTES`].
pub const BEACON_CHUNKS: usize = base64_len(MAX_BEACON_BYTES).div_ceil(BEACON_CHUNK);

/// Length of `n` bytes in base64 without padding.
const fn base64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// The largest TXT record this module writes (length bytes included): `v=1`, the chunks of the
/// largest beacon, `p=65535`, the largest data.
const LARGEST_TXT: usize =
    4 + BEACON_CHUNKS * 4 + base64_len(MAX_BEACON_BYTES) + 8 + 3 + base64_len(MAX_ADVERT_DATA);
const _: () = assert!(
    LARGEST_TXT <= MAX_TXT_BYTES,
    "the largest advert must fit the TXT bound"
);
const _: () = assert!(BEACON_CHUNKS <= 10, "beacon chunk keys are one digit");

/// The TXT strings (key, value) advertising `advert` with the link on `port`, in order.
pub(crate) fn encode(advert: &Advert, port: u16) -> Result<Vec<(String, String)>> {
    if advert.data.len() > MAX_ADVERT_DATA {
        return Err(Error::TooLarge {
            what: "advert data",
            size: advert.data.len(),
            limit: MAX_ADVERT_DATA,
        });
    }
    let mut out = vec![("v".to_string(), PROTOCOL_VERSION.to_string())];
    match &advert.id {
        AdvertId::Key(key) => out.push(("k".to_string(), key.to_string())),
        AdvertId::Beacon(beacon) => {
            if beacon.is_empty() || beacon.len() > MAX_BEACON_BYTES {
                return Err(Error::TooLarge {
                    what: "beacon",
                    size: beacon.len(),
                    limit: MAX_BEACON_BYTES,
                });
            }
            let text = BASE64URL_NOPAD.encode(beacon);
            // ASCII only, so byte chunks are character chunks; at most BEACON_CHUNKS of them
            // as the beacon is at most MAX_BEACON_BYTES.
            for (i, chunk) in text.as_bytes().chunks(BEACON_CHUNK).enumerate() {
                out.push((format!("b{i}"), String::from_utf8_lossy(chunk).into_owned()));
            }
        }
    }
    out.push(("p".to_string(), port.to_string()));
    if !advert.data.is_empty() {
        out.push(("d".to_string(), BASE64URL_NOPAD.encode(&advert.data)));
    }
    Ok(out)
}

/// Parses the TXT strings of a resolved service whose SRV record names `srv_port`.
pub(crate) fn decode<'a>(
    entries: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    srv_port: u16,
) -> Result<Advert> {
    let bad = |reason: &str| Error::malformed("TXT record", reason);
    let mut version = None;
    let mut key = None;
    let mut chunks: [Option<&str>; BEACON_CHUNKS] = [None; BEACON_CHUNKS];
    let mut port = None;
    let mut data = None;
    let mut count = 0usize;
    let mut size = 0usize;
    for (name, value) in entries {
        count += 1;
        size += 1 + name.len() + value.map_or(0, |v| 1 + v.len());
        if count > MAX_TXT_ENTRIES {
            return Err(bad("too many strings"));
        }
        if size > MAX_TXT_BYTES {
            return Err(Error::TooLarge {
                what: "TXT record",
                size,
                limit: MAX_TXT_BYTES,
            });
        }
        let lower = name.to_ascii_lowercase();
        let chunk = lower
            .strip_prefix('b')
            .filter(|d| d.len() == 1)
            .and_then(|d| d.parse::<usize>().ok());
        let slot = match (lower.as_str(), chunk) {
            ("v", _) => &mut version,
            ("k", _) => &mut key,
            ("p", _) => &mut port,
            ("d", _) => &mut data,
            (_, Some(i)) => match chunks.get_mut(i) {
                Some(slot) => slot,
                None => return Err(bad("too many beacon chunks")),
            },
            _ => continue, // a later version's key
        };
        if slot.is_some() {
            return Err(bad("a key appears twice"));
        }
        let value = value.ok_or_else(|| bad("a key without a value"))?;
        let text = std::str::from_utf8(value).map_err(|_| bad("a value that is not text"))?;
        *slot = Some(text);
    }
    if version != Some(PROTOCOL_VERSION) {
        return Err(bad("missing or unknown protocol version"));
    }
    let port: u16 = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().map_err(|_| bad("port out of range"))?
        }
        _ => return Err(bad("missing or malformed port")),
    };
    if port == 0 || port != srv_port {
        return Err(bad("the port does not match the SRV record"));
    }
    let data = match data {
        None => Vec::new(),
        Some(text) => {
            if text.len() > base64_len(MAX_ADVERT_DATA) {
                return Err(bad("application data too long"));
            }
            BASE64URL_NOPAD
                .decode(text.as_bytes())
                .map_err(|_| bad("application data is not base64url"))?
        }
    };
    // Chunks b0, b1, … without a gap.
    let present = chunks.iter().take_while(|c| c.is_some()).count();
    if chunks.iter().skip(present).any(Option::is_some) {
        return Err(bad("beacon chunks out of order"));
    }
    match (key, present) {
        (Some(key), 0) => {
            let key = KeyId::from_str(key).map_err(|_| bad("not a key id"))?;
            Advert::key(key, data).map_err(|_| bad("application data too long"))
        }
        (None, 1..) => {
            let mut text = String::new();
            for chunk in chunks.iter().flatten() {
                if chunk.is_empty() || chunk.len() > BEACON_CHUNK {
                    return Err(bad("beacon chunk length out of range"));
                }
                text.push_str(chunk);
            }
            if text.len() > base64_len(MAX_BEACON_BYTES) {
                return Err(bad("beacon too long"));
            }
            let beacon = BASE64URL_NOPAD
                .decode(text.as_bytes())
                .map_err(|_| bad("beacon is not base64url"))?;
            Advert::beacon(beacon, data).map_err(|_| bad("beacon length out of range"))
        }
        _ => Err(bad("exactly one of a key id and a beacon is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_pairs(pairs: &[(&str, &str)], port: u16) -> Result<Advert> {
        decode(pairs.iter().map(|(k, v)| (*k, Some(v.as_bytes()))), port)
    }

    fn round_trip(advert: &Advert, port: u16) -> Advert {
        let txt = encode(advert, port).unwrap();
        decode(
            txt.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))),
            port,
        )
        .unwrap()
    }

    #[test]
    fn key_advert_snapshot() {
        let key = KeyId::from_digest([0; 32]);
        let advert = Advert::key(key, vec![1, 2]).unwrap();
        let txt = encode(&advert, 4000).unwrap();
        let expect: Vec<(String, String)> = [
            ("v", "1"),
            ("k", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            ("p", "4000"),
            ("d", "AQI"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(txt, expect);
        assert_eq!(round_trip(&advert, 4000), advert);
    }

    #[test]
    fn beacon_adverts_split_into_chunks() {
        for len in [1, 150, 151, 300, 450, MAX_BEACON_BYTES] {
            let beacon: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let advert = Advert::beacon(beacon, vec![]).unwrap();
            let txt = encode(&advert, 1).unwrap();
            assert!(txt.iter().all(|(k, v)| k.len() + v.len() < 255));
            let chunks = txt.iter().filter(|(k, _)| k.starts_with('b')).count();
            assert_eq!(chunks, base64_len(len).div_ceil(BEACON_CHUNK));
            assert!(chunks <= BEACON_CHUNKS);
            assert_eq!(round_trip(&advert, 1), advert);
        }
        // The largest advert fits the bounds.
        let big = Advert::beacon(vec![7; MAX_BEACON_BYTES], vec![9; MAX_ADVERT_DATA]).unwrap();
        let txt = encode(&big, 65535).unwrap();
        let size: usize = txt.iter().map(|(k, v)| 2 + k.len() + v.len()).sum();
        assert_eq!(size, LARGEST_TXT);
        assert!(size <= MAX_TXT_BYTES);
    }

    #[test]
    fn unknown_keys_and_case_are_tolerated() {
        let key = KeyId::from_digest([3; 32]).to_string();
        let a = decode_pairs(&[("V", "1"), ("K", &key), ("P", "9"), ("x-new", "?")], 9).unwrap();
        assert_eq!(a.id, AdvertId::Key(KeyId::from_digest([3; 32])));
        assert!(a.data.is_empty());
    }

    #[test]
    fn malformed_records_are_refused() {
        let key = KeyId::from_digest([3; 32]).to_string();
        let long_data = BASE64URL_NOPAD.encode(&[0; MAX_ADVERT_DATA + 1]);
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("v", "2"), ("k", &key), ("p", "9")],
            vec![("k", &key), ("p", "9")],
            vec![("v", "1"), ("p", "9")],
            vec![("v", "1"), ("k", "not-a-key"), ("p", "9")],
            vec![("v", "1"), ("k", &key)],
            vec![("v", "1"), ("k", &key), ("p", "10")],
            vec![("v", "1"), ("k", &key), ("p", "+9")],
            vec![("v", "1"), ("k", &key), ("p", "99999999")],
            vec![("v", "1"), ("k", &key), ("p", "9"), ("d", &long_data)],
            vec![("v", "1"), ("k", &key), ("p", "9"), ("d", "!!")],
            vec![("v", "1"), ("k", &key), ("k", &key), ("p", "9")],
            vec![("v", "1"), ("k", &key), ("b0", "AQI"), ("p", "9")],
            vec![("v", "1"), ("b1", "AQI"), ("p", "9")],
            vec![("v", "1"), ("b0", "AQI"), ("b2", "AQI"), ("p", "9")],
            vec![("v", "1"), ("b0", ""), ("p", "9")],
            vec![("v", "1"), ("b0", "*"), ("p", "9")],
            vec![("v", "1"), ("b0", "AQI"), ("b9", "AQI"), ("p", "9")],
        ];
        for case in cases {
            assert!(decode_pairs(&case, 9).is_err(), "{case:?}");
        }
        // No value, binary value, too many strings, too many bytes.
        assert!(
            decode(
                [
                    ("v", None),
                    ("k", Some(key.as_bytes())),
                    ("p", Some(&b"9"[..]))
                ],
                9
            )
            .is_err()
        );
        assert!(decode([("v", Some(&[0xff][..])), ("p", Some(&b"9"[..]))], 9).is_err());
        let many: Vec<(String, String)> = (0..=MAX_TXT_ENTRIES)
            .map(|i| (format!("x{i}"), String::new()))
            .collect();
        assert!(
            decode(
                many.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))),
                9
            )
            .is_err()
        );
        let fat = "z".repeat(250);
        let fat: Vec<(&str, &str)> = vec![
            ("a", &fat),
            ("b", &fat),
            ("c", &fat),
            ("e", &fat),
            ("f", &fat),
        ];
        assert!(matches!(decode_pairs(&fat, 9), Err(Error::TooLarge { .. })));
    }
}
