//! What a [`Tor`](crate::Tor) needs to start: where its state lives, which Tor network, limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Configuration of the transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TorConfig {
    /// The directory for Tor's state (`state/`: guards, onion service replay logs and
    /// descriptor counters, and arti's keystore `state/keystore/` — the onion service identity,
    /// a copy of the caller's identity key, its introduction point keys, client discovery keys)
    /// and cache (`cache/`: the consensus and relay descriptors), created 0700 when missing.
    /// arti refuses to start when it or a parent is writable by other users.
    pub data_dir: PathBuf,
    /// Which Tor network: the public one, or a private one (tests).
    pub network: Network,
    /// How long opening a stream to an onion service may take (descriptor, introduction,
    /// rendezvous, the stream itself).
    pub connect_timeout: Duration,
    /// Inbound streams and messages waiting for the application (beyond it they are refused).
    pub incoming_capacity: usize,
    /// Inbound message streams being read at once (beyond it new ones are refused).
    pub max_pending_messages: usize,
    /// How long an inbound message stream may take to deliver its message.
    pub message_timeout: Duration,
    /// Accept a data directory whose permissions (or whose parents') arti would refuse — one
    /// other users can write to. Only for tests in shared temporary directories.
    pub danger_accept_unsafe_permissions: bool,
}

impl TorConfig {
    /// The public Tor network, state under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> TorConfig {
        TorConfig {
            data_dir: data_dir.into(),
            network: Network::Public,
            connect_timeout: Duration::from_secs(120),
            incoming_capacity: 64,
            max_pending_messages: 16,
            message_timeout: Duration::from_secs(30),
            danger_accept_unsafe_permissions: false,
        }
    }

    /// The same on a private network.
    pub fn private(data_dir: impl Into<PathBuf>, network: PrivateNetwork) -> TorConfig {
        TorConfig {
            network: Network::Private(Box::new(network)),
            ..TorConfig::new(data_dir)
        }
    }
}

/// A Tor network.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Network {
    /// The public Tor network (arti's built-in authorities and fallbacks).
    Public,
    /// A private network of one's own authorities and relays.
    Private(Box<PrivateNetwork>),
}

/// A private Tor network: its authorities, the relays a client first asks for the consensus,
/// and the parameters a test network needs. [`PrivateNetwork::from_testnet_file`] reads the
/// description `scripts/tor-testnet` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrivateNetwork {
    /// Directory authorities.
    pub authorities: Vec<Authority>,
    /// Relays to bootstrap from (arti requires them with custom authorities).
    pub fallbacks: Vec<Fallback>,
    /// The onion-service time period in minutes, when the network's differs from what its
    /// consensus says (C tor's test mode uses 24 voting intervals without saying so).
    pub hsdir_interval_minutes: Option<u32>,
    /// Relays in one IPv4 prefix of this length are one family to path selection (Tor uses
    /// 16; a network on one loopback address needs 33: no subnet rule).
    pub ipv4_family_prefix: Option<u8>,
    /// Relays may have private and loopback addresses.
    pub allow_local_addrs: bool,
}

/// A directory authority.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authority {
    /// Its name (for messages).
    pub name: String,
    /// Its v3 identity: 40 hex digits of the RSA authority identity key's fingerprint.
    pub v3ident: String,
    /// Its directory port.
    pub dir_addr: std::net::SocketAddr,
}

/// A relay to bootstrap from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fallback {
    /// RSA identity, 40 hex digits.
    pub rsa_identity: String,
    /// Ed25519 identity, unpadded base64 (as tor's `fingerprint-ed25519`).
    pub ed25519_identity: String,
    /// Its OR port.
    pub or_addr: std::net::SocketAddr,
}

/// The environment variable `scripts/tor-testnet run` sets: the path of its `network.json`.
pub const TESTNET_ENV: &str = "THALI_TOR_TESTNET";

/// `network.json` as `scripts/tor-testnet` writes it (version 1).
#[derive(Deserialize)]
struct TestnetJson {
    version: u32,
    #[serde(default)]
    ready_file: Option<PathBuf>,
    #[serde(default)]
    hsdir_interval_minutes: Option<u32>,
    #[serde(default)]
    family_prefix_ipv4: Option<u8>,
    authorities: Vec<TestnetAuthority>,
    relays: Vec<TestnetRelay>,
}

#[derive(Deserialize)]
struct TestnetAuthority {
    name: String,
    v3ident: String,
    address: std::net::IpAddr,
    dirport: u16,
}

#[derive(Deserialize)]
struct TestnetRelay {
    rsa_identity: String,
    ed25519_identity: String,
    address: std::net::IpAddr,
    orport: u16,
}

fn hex40(what: &str, s: &str) -> Result<String> {
    if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} {s:?} is not 40 hex digits"
        )))
    }
}

impl PrivateNetwork {
    /// Reads `network.json` of `scripts/tor-testnet` (format at the top of that script), with
    /// the path of the file that exists once the network is usable.
    pub fn from_testnet_json(text: &str) -> Result<(PrivateNetwork, Option<PathBuf>)> {
        let json: TestnetJson = serde_json::from_str(text)
            .map_err(|e| Error::InvalidConfig(format!("tor testnet description: {e}")))?;
        if json.version != 1 {
            return Err(Error::InvalidConfig(format!(
                "tor testnet description version {} (this crate reads 1)",
                json.version
            )));
        }
        if json.authorities.is_empty() || json.relays.is_empty() {
            return Err(Error::InvalidConfig(
                "tor testnet description: no authorities or no relays".into(),
            ));
        }
        let authorities = json
            .authorities
            .into_iter()
            .map(|a| {
                Ok(Authority {
                    v3ident: hex40("authority v3ident", &a.v3ident)?,
                    name: a.name,
                    dir_addr: (a.address, a.dirport).into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let fallbacks = json
            .relays
            .into_iter()
            .map(|r| {
                Ok(Fallback {
                    rsa_identity: hex40("relay rsa_identity", &r.rsa_identity)?,
                    ed25519_identity: r.ed25519_identity,
                    or_addr: (r.address, r.orport).into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let network = PrivateNetwork {
            authorities,
            fallbacks,
            hsdir_interval_minutes: json.hsdir_interval_minutes,
            ipv4_family_prefix: json.family_prefix_ipv4,
            allow_local_addrs: true,
        };
        Ok((network, json.ready_file))
    }

    /// The network `scripts/tor-testnet run` describes in [`TESTNET_ENV`], if it is set.
    pub fn from_env() -> Result<Option<(PrivateNetwork, Option<PathBuf>)>> {
        match std::env::var_os(TESTNET_ENV) {
            Some(path) => Self::from_testnet_file(Path::new(&path)).map(Some),
            None => Ok(None),
        }
    }

    /// [`from_env`](Self::from_env), once the network is usable: waits (polling on `clock`)
    /// until its ready file exists, for at most `within`; an error if it failed to come up
    /// (the script's `failed` file) or did not in time. `None` when no network is described.
    pub async fn from_env_when_ready(
        clock: &dyn adhoc_wireless::Clock,
        within: std::time::Duration,
    ) -> Result<Option<PrivateNetwork>> {
        let Some((net, ready)) = Self::from_env()? else {
            return Ok(None);
        };
        let Some(ready) = ready else {
            return Ok(Some(net));
        };
        let start = clock.now_millis();
        while !ready.exists() {
            if let Ok(why) = std::fs::read_to_string(ready.with_file_name("failed")) {
                return Err(Error::NotBootstrapped(format!(
                    "the private Tor network failed to come up: {why}"
                )));
            }
            if clock.now_millis().saturating_sub(start) > within.as_millis() as u64 {
                return Err(Error::NotBootstrapped(format!(
                    "the private Tor network was not usable within {within:?} ({} missing)",
                    ready.display()
                )));
            }
            clock.sleep(std::time::Duration::from_millis(250)).await;
        }
        Ok(Some(net))
    }

    /// [`from_testnet_json`](Self::from_testnet_json) of a file.
    pub fn from_testnet_file(path: &Path) -> Result<(PrivateNetwork, Option<PathBuf>)> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::from_testnet_json(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "version": 1, "dir": "/tmp/x", "ready_file": "/tmp/x/ready",
      "voting_interval_secs": 20, "hsdir_interval_minutes": 8, "family_prefix_ipv4": 33,
      "authorities": [{"name": "auth1", "v3ident": "0123456789abcdef0123456789ABCDEF01234567",
                       "address": "127.0.0.1", "orport": 5001, "dirport": 5002}],
      "relays": [{"name": "auth1", "rsa_identity": "89ABCDEF0123456789ABCDEF0123456789ABCDEF",
                  "ed25519_identity": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                  "address": "127.0.0.1", "orport": 5001, "dirport": 5002, "exit": false}],
      "socks_port": 9050, "probe_onion": "x.onion"
    }"#;

    #[test]
    fn reads_the_testnet_description() {
        let (net, ready) = PrivateNetwork::from_testnet_json(SAMPLE).unwrap();
        assert_eq!(ready.as_deref(), Some(Path::new("/tmp/x/ready")));
        assert_eq!(net.authorities.len(), 1);
        assert_eq!(
            net.authorities[0].v3ident,
            "0123456789ABCDEF0123456789ABCDEF01234567"
        );
        assert_eq!(
            net.authorities[0].dir_addr,
            "127.0.0.1:5002".parse().unwrap()
        );
        assert_eq!(net.fallbacks[0].or_addr, "127.0.0.1:5001".parse().unwrap());
        assert_eq!(net.hsdir_interval_minutes, Some(8));
        assert_eq!(net.ipv4_family_prefix, Some(33));
    }

    #[test]
    fn refuses_what_cannot_work() {
        for (bad, why) in [
            ("", "not JSON"),
            ("{}", "fields missing"),
            (
                &SAMPLE.replace("\"version\": 1", "\"version\": 2"),
                "version",
            ),
            (
                &SAMPLE.replace("0123456789abcdef", "0123456789abcdeg"),
                "hex",
            ),
            (&SAMPLE.replace("5002}]", "99999}]"), "port"),
        ] {
            let e = PrivateNetwork::from_testnet_json(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{why}: {e}");
        }
    }
}
