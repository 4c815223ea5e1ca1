//! `httpkey://` URLs: where a peer is, and which key it must prove it holds.
//!
//! ```text
//! httpkey://HOST:PORT/KEYID[/PATH][?QUERY]
//! ```
//!
//! * `httpkey` — the scheme, matched without regard to case and written lowercase.
//! * `HOST` — an IPv4 address in dotted-quad form, an IPv6 address in brackets (`[::1]`, no zone
//!   ids), a DNS name (letters, digits and hyphens; labels of 1–63 characters; at most 253 in all;
//!   stored lowercase), or a v3 onion address (`<56 base32 characters>.onion`, whose version byte
//!   and checksum are verified).
//! * `PORT` — required, 1–65535.
//! * `KEYID` — the server's [`KeyId`]: 52 lowercase base32 characters.
//! * `PATH`, `QUERY` — as RFC 3986 (`pchar`s, `/`, and in the query `?`), percent-escapes kept as
//!   written and checked to be two hex digits. User info (`user@`) and fragments (`#…`) are refused.
//!
//! A client dials `https://HOST:PORT/PATH?QUERY` ([`HttpKeyUrl::to_https`]) with its TLS config
//! pinned to `KEYID` ([`crate::tls::client_config`]), so the connection fails closed unless the
//! server holds that key. URLs longer than [`MAX_URL_LEN`] bytes are refused.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::key::{KEY_ID_LEN, KeyId};

/// The longest URL [`HttpKeyUrl::from_str`] accepts, in bytes.
pub const MAX_URL_LEN: usize = 8192;

/// Why a string is not a valid `httpkey://` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL does not start with `httpkey://`.
    #[error("the URL must start with \"httpkey://\"")]
    WrongScheme,
    /// The URL is longer than [`MAX_URL_LEN`].
    #[error("the URL is {0} bytes long; at most 8192 are accepted")]
    TooLong(usize),
    /// The authority has a `user@` part.
    #[error("user info (\"user@\") is not allowed in an httpkey URL")]
    UserInfo,
    /// Nothing between `//` and `:PORT`.
    #[error("the host is missing")]
    MissingHost,
    /// A bracketed host that is not an IPv6 address.
    #[error("invalid IPv6 address {0:?} (zone ids are not supported)")]
    InvalidIpv6(String),
    /// A host made of digits and dots that is not a dotted-quad IPv4 address.
    #[error("invalid IPv4 address {0:?}")]
    InvalidIpv4(String),
    /// A host that is not a valid DNS name.
    #[error("invalid host name {name:?}: {reason}")]
    InvalidDnsName {
        /// The host as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A `.onion` host that is not a valid v3 onion address.
    #[error("invalid onion address {name:?}: {reason}")]
    InvalidOnion {
        /// The host as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// No `:PORT` after the host.
    #[error(
        "the port is missing (httpkey URLs always name the port: httpkey://HOST:PORT/KEYID/...)"
    )]
    MissingPort,
    /// A port that is not a number from 1 to 65535.
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    InvalidPort(String),
    /// No `/KEYID` after the authority.
    #[error("the key id is missing: expected httpkey://HOST:PORT/KEYID/...")]
    MissingKeyId,
    /// The first path segment is not a key id.
    #[error("invalid key id {0:?} in URL (expected 52 lowercase base32 characters)")]
    InvalidKeyId(String),
    /// A character that may not appear where it is.
    #[error("character {ch:?} is not allowed in the {part} (byte {offset}); percent-encode it")]
    InvalidChar {
        /// The character.
        ch: char,
        /// `"path"` or `"query"`.
        part: &'static str,
        /// Its byte offset in the URL.
        offset: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("bad percent-escape at byte {0}: '%' must be followed by two hex digits")]
    BadPercentEscape(usize),
    /// The URL has a `#fragment`.
    #[error("fragments (\"#...\") are not allowed in an httpkey URL")]
    Fragment,
}

/// The host part of an [`HttpKeyUrl`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address.
    Ipv6(Ipv6Addr),
    /// A DNS name, lowercase.
    Dns(String),
    /// A v3 onion address including the `.onion` suffix, lowercase.
    Onion(String),
}

impl Host {
    /// Parses a host as it appears in a URL (IPv6 in brackets).
    pub fn parse(text: &str) -> Result<Host, UrlError> {
        if text.is_empty() {
            return Err(UrlError::MissingHost);
        }
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| UrlError::InvalidIpv6(text.to_owned()))?;
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::Ipv6)
                .map_err(|_| UrlError::InvalidIpv6(inner.to_owned()));
        }
        if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return text
                .parse::<Ipv4Addr>()
                .map(Host::Ipv4)
                .map_err(|_| UrlError::InvalidIpv4(text.to_owned()));
        }
        let lower = text.to_ascii_lowercase();
        if let Some(label) = lower.strip_suffix(".onion") {
            check_onion(label).map_err(|reason| UrlError::InvalidOnion {
                name: text.to_owned(),
                reason,
            })?;
            return Ok(Host::Onion(lower));
        }
        check_dns(&lower).map_err(|reason| UrlError::InvalidDnsName {
            name: text.to_owned(),
            reason,
        })?;
        Ok(Host::Dns(lower))
    }

    /// The v3 onion address of an Ed25519 public key (rend-spec-v3 §6: base32 of
    /// `pubkey || checksum[..2] || 0x03`, checksum = SHA3-256(".onion checksum" || pubkey || 0x03)).
    pub fn onion_from_ed25519(public_key: &[u8; 32]) -> Host {
        let checksum = onion_checksum(public_key);
        let mut bytes = Vec::with_capacity(35);
        bytes.extend_from_slice(public_key);
        bytes.extend_from_slice(&checksum);
        bytes.push(3);
        let mut label = data_encoding::BASE32_NOPAD.encode(&bytes);
        label.make_ascii_lowercase();
        Host::Onion(format!("{label}.onion"))
    }

    /// The host as written in a URL authority (IPv6 in brackets).
    pub fn to_url_string(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ipv4(ip) => ip.fmt(f),
            Host::Ipv6(ip) => write!(f, "[{ip}]"),
            Host::Dns(name) | Host::Onion(name) => f.write_str(name),
        }
    }
}

fn onion_checksum(public_key: &[u8; 32]) -> [u8; 2] {
    use sha3::Digest;
    let mut hasher = sha3::Sha3_256::new();
    hasher.update(b".onion checksum");
    hasher.update(public_key);
    hasher.update([3u8]);
    let digest = hasher.finalize();
    [digest[0], digest[1]]
}

fn check_onion(label: &str) -> Result<(), &'static str> {
    if label.contains('.') {
        return Err("only <56 characters>.onion is supported, without subdomains");
    }
    if label.len() != 56 {
        return Err("a v3 onion address has 56 base32 characters before .onion");
    }
    let bytes = data_encoding::BASE32_NOPAD
        .decode(label.to_ascii_uppercase().as_bytes())
        .map_err(|_| "not base32 (a-z, 2-7)")?;
    let (Some(key), Some(checksum), Some(&version)) =
        (bytes.get(..32), bytes.get(32..34), bytes.get(34))
    else {
        return Err("a v3 onion address encodes 35 bytes");
    };
    if version != 3 {
        return Err("only version 3 onion addresses are supported");
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| "a v3 onion address encodes 35 bytes")?;
    if onion_checksum(&key) != checksum {
        return Err("checksum mismatch (mistyped address?)");
    }
    Ok(())
}

fn check_dns(name: &str) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row?)");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with '-'");
        }
    }
    Ok(())
}

/// A parsed `httpkey://` URL (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpKeyUrl {
    host: Host,
    port: u16,
    key_id: KeyId,
    path: String,
    query: Option<String>,
}

/// What a client dials for an [`HttpKeyUrl`]: a plain https URL, and the key id to pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsTarget {
    /// `https://HOST:PORT/PATH?QUERY`.
    pub url: String,
    /// The host to connect to (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The key the server must present (give it to [`crate::tls::client_config`]).
    pub pin: KeyId,
}

impl HttpKeyUrl {
    /// A URL for the root of the server at `host:port` holding `key_id`.
    pub fn new(host: Host, port: u16, key_id: KeyId) -> HttpKeyUrl {
        HttpKeyUrl {
            host,
            port,
            key_id,
            path: String::new(),
            query: None,
        }
    }

    /// Replaces the path and query with `path_and_query` (`/db/doc?x=1`; empty for none).
    pub fn with_path_and_query(mut self, path_and_query: &str) -> Result<HttpKeyUrl, UrlError> {
        let (path, query) = split_query(path_and_query);
        if !path.is_empty() && !path.starts_with('/') {
            return Err(UrlError::InvalidChar {
                ch: path.chars().next().unwrap_or('?'),
                part: "path",
                offset: 0,
            });
        }
        check_chars(path, "path", 0)?;
        if let Some(q) = query {
            check_chars(q, "query", path.len() + 1)?;
        }
        self.path = path.to_owned();
        self.query = query.map(str::to_owned);
        Ok(self)
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The key the server must hold.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The path after the key id: empty, or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The https URL and the pin a client dials.
    pub fn to_https(&self) -> HttpsTarget {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        let query = self
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        HttpsTarget {
            url: format!("https://{}:{}{path}{query}", self.host, self.port),
            host: match &self.host {
                Host::Ipv6(ip) => ip.to_string(),
                other => other.to_string(),
            },
            port: self.port,
            pin: self.key_id,
        }
    }
}

impl fmt::Display for HttpKeyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "httpkey://{}:{}/{}{}",
            self.host, self.port, self.key_id, self.path
        )?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (s, None),
    }
}

/// Checks RFC 3986 path/query characters; `base` is the offset of `text` in the whole URL.
fn check_chars(text: &str, part: &'static str, base: usize) -> Result<(), UrlError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let ok = b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@/".contains(&b)
            || (part == "query" && b == b'?');
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(UrlError::BadPercentEscape(base + i));
            }
            i += 3;
            continue;
        }
        if !ok {
            let ch = text.get(i..).and_then(|t| t.chars().next()).unwrap_or('?');
            return Err(UrlError::InvalidChar {
                ch,
                part,
                offset: base + i,
            });
        }
        i += 1;
    }
    Ok(())
}

impl FromStr for HttpKeyUrl {
    type Err = UrlError;

    fn from_str(input: &str) -> Result<HttpKeyUrl, UrlError> {
        if input.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong(input.len()));
        }
        const SCHEME: &str = "httpkey://";
        let rest = match input.get(..SCHEME.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(SCHEME) => &input[SCHEME.len()..],
            _ => return Err(UrlError::WrongScheme),
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host_text, port_text) = if authority.starts_with('[') {
            let close = authority
                .find(']')
                .ok_or_else(|| UrlError::InvalidIpv6(authority.to_owned()))?;
            let (host, tail) = authority.split_at(close + 1);
            match tail.strip_prefix(':') {
                Some(port) => (host, port),
                None if tail.is_empty() => return Err(UrlError::MissingPort),
                None => return Err(UrlError::InvalidPort(tail.to_owned())),
            }
        } else {
            match authority.rsplit_once(':') {
                Some(parts) => parts,
                None if authority.is_empty() => return Err(UrlError::MissingHost),
                None => return Err(UrlError::MissingPort),
            }
        };
        let host = Host::parse(host_text)?;
        let port = parse_port(port_text)?;

        let path_start = SCHEME.len() + authority.len();
        let (path_all, query) = split_query(after);
        let Some(path_all) = path_all.strip_prefix('/') else {
            return Err(UrlError::MissingKeyId);
        };
        let (key_text, path) = match path_all.find('/') {
            Some(slash) => path_all.split_at(slash),
            None => (path_all, ""),
        };
        if key_text.is_empty() {
            return Err(UrlError::MissingKeyId);
        }
        let key_id = key_text
            .parse::<KeyId>()
            .map_err(|_| UrlError::InvalidKeyId(key_text.chars().take(KEY_ID_LEN + 8).collect()))?;
        let path_offset = path_start + 1 + key_text.len();
        check_chars(path, "path", path_offset)?;
        if let Some(q) = query {
            check_chars(q, "query", path_offset + path.len() + 1)?;
        }
        Ok(HttpKeyUrl {
            host,
            port,
            key_id,
            path: path.to_owned(),
            query: query.map(str::to_owned),
        })
    }
}

fn parse_port(text: &str) -> Result<u16, UrlError> {
    let invalid = || UrlError::InvalidPort(text.chars().take(16).collect());
    if text.is_empty() {
        return Err(UrlError::MissingPort);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 5 {
        return Err(invalid());
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(port) => Ok(port),
    }
}

impl serde::Serialize for HttpKeyUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HttpKeyUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<HttpKeyUrl, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq";

    fn onion() -> String {
        Host::onion_from_ed25519(&[9; 32]).to_string()
    }

    #[test]
    fn parses_every_host_kind() {
        let key: KeyId = KEY.parse().unwrap();
        let cases = [
            (
                format!("httpkey://127.0.0.1:8443/{KEY}/db/doc?rev=1-a"),
                Host::Ipv4(Ipv4Addr::LOCALHOST),
            ),
            (
                format!("httpkey://[::1]:8443/{KEY}/db/doc?rev=1-a"),
                Host::Ipv6(Ipv6Addr::LOCALHOST),
            ),
            (
                format!("HTTPKEY://Hub.Example.COM:8443/{KEY}/db/doc?rev=1-a"),
                Host::Dns("hub.example.com".into()),
            ),
            (
                format!("httpkey://{}:8443/{KEY}/db/doc?rev=1-a", onion()),
                Host::Onion(onion()),
            ),
        ];
        for (text, host) in cases {
            let url: HttpKeyUrl = text.parse().unwrap();
            assert_eq!(url.host(), &host);
            assert_eq!(url.port(), 8443);
            assert_eq!(url.key_id(), key);
            assert_eq!(url.path(), "/db/doc");
            assert_eq!(url.query(), Some("rev=1-a"));
        }
    }

    #[test]
    fn https_target() {
        let url: HttpKeyUrl = format!("httpkey://[fe80::1]:5984/{KEY}/a%20b?x=1")
            .parse()
            .unwrap();
        let target = url.to_https();
        assert_eq!(target.url, "https://[fe80::1]:5984/a%20b?x=1");
        assert_eq!(target.host, "fe80::1");
        assert_eq!(target.port, 5984);
        assert_eq!(target.pin.to_string(), KEY);
        let bare: HttpKeyUrl = format!("httpkey://h:1/{KEY}").parse().unwrap();
        assert_eq!(bare.path(), "");
        assert_eq!(bare.to_https().url, "https://h:1/");
        assert_eq!(bare.to_string(), format!("httpkey://h:1/{KEY}"));
    }

    #[test]
    fn precise_errors() {
        let k = KEY;
        let cases: Vec<(String, UrlError)> = vec![
            (format!("https://h:1/{k}"), UrlError::WrongScheme),
            (format!("httpkey://u@h:1/{k}"), UrlError::UserInfo),
            (format!("httpkey://:1/{k}"), UrlError::MissingHost),
            (format!("httpkey://h/{k}"), UrlError::MissingPort),
            (format!("httpkey://[::1]/{k}"), UrlError::MissingPort),
            (
                format!("httpkey://h:0/{k}"),
                UrlError::InvalidPort("0".into()),
            ),
            (
                format!("httpkey://h:65536/{k}"),
                UrlError::InvalidPort("65536".into()),
            ),
            (
                format!("httpkey://h:+80/{k}"),
                UrlError::InvalidPort("+80".into()),
            ),
            ("httpkey://h:1".to_string(), UrlError::MissingKeyId),
            ("httpkey://h:1/".to_string(), UrlError::MissingKeyId),
            ("httpkey://h:1//x".to_string(), UrlError::MissingKeyId),
            (
                "httpkey://h:1/abc".to_string(),
                UrlError::InvalidKeyId("abc".into()),
            ),
            (format!("httpkey://h:1/{k}#frag"), UrlError::Fragment),
            (
                format!("httpkey://[::g]:1/{k}"),
                UrlError::InvalidIpv6("::g".into()),
            ),
            (
                format!("httpkey://[fe80::1%eth0]:1/{k}"),
                UrlError::InvalidIpv6("fe80::1%eth0".into()),
            ),
            (
                format!("httpkey://1.2.3.256:1/{k}"),
                UrlError::InvalidIpv4("1.2.3.256".into()),
            ),
            (
                format!("httpkey://1.2.3:1/{k}"),
                UrlError::InvalidIpv4("1.2.3".into()),
            ),
            (
                format!("httpkey://h:1/{k}/a%2"),
                UrlError::BadPercentEscape(68),
            ),
            (
                format!("httpkey://h:1/{k}/a b"),
                UrlError::InvalidChar {
                    ch: ' ',
                    part: "path",
                    offset: 68,
                },
            ),
            (
                format!("httpkey://h:1/{k}/a?q=<"),
                UrlError::InvalidChar {
                    ch: '<',
                    part: "query",
                    offset: 71,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<HttpKeyUrl>(), Err(expected), "{text}");
        }
        let long = format!("httpkey://h:1/{k}/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(
            long.parse::<HttpKeyUrl>(),
            Err(UrlError::TooLong(_))
        ));
    }

    #[test]
    fn dns_and_onion_rules() {
        for bad in [
            "-a.com",
            "a-.com",
            "a..com",
            "a_b.com",
            &"a".repeat(64),
            "ü.com",
        ] {
            let text = format!("httpkey://{bad}:1/{KEY}");
            assert!(
                matches!(
                    text.parse::<HttpKeyUrl>(),
                    Err(UrlError::InvalidDnsName { .. })
                ),
                "{bad}"
            );
        }
        let good_onion = onion();
        let label = good_onion.strip_suffix(".onion").unwrap();
        // Swap two characters: the checksum no longer matches.
        let mut chars: Vec<char> = label.chars().collect();
        chars.swap(0, 1);
        let mistyped: String = chars.into_iter().collect();
        for (bad, reason) in [
            (format!("{mistyped}.onion"), "checksum"),
            ("abc.onion".to_owned(), "56"),
            (format!("x.{good_onion}"), "subdomains"),
        ] {
            let text = format!("httpkey://{bad}:1/{KEY}");
            match text.parse::<HttpKeyUrl>() {
                Err(UrlError::InvalidOnion { reason: r, .. }) => assert!(r.contains(reason), "{r}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn known_onion_vector() {
        // A well-known public v3 address (DuckDuckGo's) must pass the checksum and version checks.
        let text = format!(
            "httpkey://duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion:443/{KEY}"
        );
        let url: HttpKeyUrl = text.parse().unwrap();
        assert!(matches!(url.host(), Host::Onion(_)));
    }

    fn host_strategy() -> impl Strategy<Value = Host> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Host::Ipv4(Ipv4Addr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Host::Ipv6(Ipv6Addr::from(b))),
            "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}"
                .prop_filter("all-digit names are IPv4 syntax", |s| {
                    !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !s.ends_with(".onion")
                })
                .prop_map(Host::Dns),
            any::<[u8; 32]>().prop_map(|k| Host::onion_from_ed25519(&k)),
        ]
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(
            host in host_strategy(),
            port in 1u16..,
            key in any::<[u8; 32]>(),
            path in "(/([a-zA-Z0-9._~!$&'()*+,;=:@-]|%[0-9a-fA-F]{2}){0,12}){0,4}",
            query in proptest::option::of("([a-zA-Z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-F]{2}){0,20}"),
        ) {
            let path_and_query = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let url = HttpKeyUrl::new(host, port, KeyId::from_digest(key))
                .with_path_and_query(&path_and_query)
                .unwrap();
            let text = url.to_string();
            let back: HttpKeyUrl = text.parse().unwrap();
            prop_assert_eq!(&back, &url);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn arbitrary_input_never_panics(text in "httpkey://\\PC{0,120}") {
            if let Ok(url) = text.parse::<HttpKeyUrl>() {
                // Whatever parses must format to something that parses to the same URL.
                prop_assert_eq!(url.to_string().parse::<HttpKeyUrl>().unwrap(), url);
            }
        }
    }
}
