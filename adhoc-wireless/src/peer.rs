//! Who is around: peers, the transports and addresses they were seen on, and their adverts.
//!
//! # Advert encoding (version 1)
//!
//! What a peer broadcasts, in the same bytes on every transport that carries binary adverts (the
//! simulated radio, Bluetooth LE service data; the LAN plugin maps the same fields to DNS TXT
//! keys). All integers big-endian.
//!
//! | size | field |
//! |---|---|
//! | 1 | version, `0x01` |
//! | 1 | kind: `0x00` key id, `0x01` beacon |
//! | 32 | (kind 0) the key id's SHA-256 digest |
//! | 2 + n | (kind 1) `u16` length n (1 ..= [`MAX_BEACON_BYTES`]) and the beacon bytes |
//! | 1 + m | `u8` length m (0 ..= [`MAX_ADVERT_DATA`]) and application data |
//!
//! Nothing may follow. An advert is at most [`MAX_ADVERT_BYTES`] bytes; anything else is
//! malformed and dropped (and counted) by the [`PeerTable`](crate::PeerTable).

use std::fmt;
use std::net::SocketAddr;

use public_key_identity::KeyId;

use crate::error::{Error, Result};

/// Version of the advert encoding this crate writes.
pub const ADVERT_VERSION: u8 = 1;
/// Most application bytes an advert carries.
pub const MAX_ADVERT_DATA: usize = 64;
/// Most beacon bytes an advert carries (the largest beacon of the `beacons` feature: 20
/// recipient slots).
pub const MAX_BEACON_BYTES: usize = 566;
// The largest beacon the beacon module builds must fit an advert.
#[cfg(feature = "beacons")]
const _: () = assert!(crate::beacon::MAX_LEN <= MAX_BEACON_BYTES);
/// The largest encoded advert.
pub const MAX_ADVERT_BYTES: usize = 2 + 2 + MAX_BEACON_BYTES + 1 + MAX_ADVERT_DATA;

/// A peer as the neighbourhood knows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PeerId {
    /// A peer that names its key.
    Key(KeyId),
    /// A peer that shows only a beacon ("someone has data for somebody"): known by a digest
    /// of its beacon until a recipient opens it.
    Beacon([u8; 16]),
}

impl PeerId {
    /// The key id, for a peer that names one.
    pub fn key_id(&self) -> Option<&KeyId> {
        match self {
            PeerId::Key(k) => Some(k),
            PeerId::Beacon(_) => None,
        }
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerId::Key(k) => write!(f, "{k}"),
            PeerId::Beacon(d) => {
                f.write_str("beacon:")?;
                for b in d.iter().take(8) {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The kinds of transport, each with a cost: when a peer is reachable several ways, the
/// cheapest is used first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Transport {
    /// The simulated radio.
    Sim,
    /// The local network (mDNS discovery, TCP streams).
    Lan,
    /// Wi-Fi Direct groups.
    WifiDirect,
    /// Bluetooth LE.
    Ble,
    /// Tor onion services.
    Tor,
}

impl Transport {
    /// Relative cost (energy, latency, bandwidth): lower is preferred. LAN 10, simulated radio
    /// 10, Wi-Fi Direct 20, Bluetooth LE 50, Tor 100.
    pub fn cost(&self) -> u32 {
        match self {
            Transport::Sim | Transport::Lan => 10,
            Transport::WifiDirect => 20,
            Transport::Ble => 50,
            Transport::Tor => 100,
        }
    }

    /// A short name (`lan`, `ble`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Sim => "sim",
            Transport::Lan => "lan",
            Transport::WifiDirect => "wifi-direct",
            Transport::Ble => "ble",
            Transport::Tor => "tor",
        }
    }
}

/// Where a peer can be reached on one transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Address {
    /// An IP address and port (LAN, Wi-Fi Direct groups).
    Socket(SocketAddr),
    /// A node of the simulated radio.
    Sim(u32),
    /// A Bluetooth device address.
    Ble([u8; 6]),
    /// An onion service (`xxx.onion`) and port.
    Onion(String, u16),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Socket(a) => write!(f, "{a}"),
            Address::Sim(n) => write!(f, "sim:{n}"),
            Address::Ble(m) => write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            Address::Onion(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// Who an advert names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdvertId {
    /// A key id.
    Key(KeyId),
    /// A beacon (see the `beacons` feature).
    Beacon(Vec<u8>),
}

/// What a peer broadcasts: who it is (or a beacon) and a little application data (bounded,
/// versioned; see the module docs for the encoding).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advert {
    /// The encoding version it came in (this crate writes [`ADVERT_VERSION`]).
    pub version: u8,
    /// Who it names.
    pub id: AdvertId,
    /// Application bytes (a protocol version, a port, flags), at most [`MAX_ADVERT_DATA`].
    pub data: Vec<u8>,
}

impl Advert {
    /// An advert naming `key`.
    pub fn key(key: KeyId, data: Vec<u8>) -> Result<Advert> {
        check_data(&data)?;
        Ok(Advert {
            version: ADVERT_VERSION,
            id: AdvertId::Key(key),
            data,
        })
    }

    /// An advert carrying a beacon.
    pub fn beacon(beacon: Vec<u8>, data: Vec<u8>) -> Result<Advert> {
        check_data(&data)?;
        if beacon.is_empty() || beacon.len() > MAX_BEACON_BYTES {
            return Err(Error::TooLarge {
                what: "beacon",
                size: beacon.len(),
                limit: MAX_BEACON_BYTES,
            });
        }
        Ok(Advert {
            version: ADVERT_VERSION,
            id: AdvertId::Beacon(beacon),
            data,
        })
    }

    /// The peer this advert names.
    pub fn peer_id(&self) -> PeerId {
        match &self.id {
            AdvertId::Key(k) => PeerId::Key(*k),
            AdvertId::Beacon(b) => {
                let digest = beacon_handle(b);
                PeerId::Beacon(digest)
            }
        }
    }

    /// The encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36 + self.data.len());
        out.push(ADVERT_VERSION);
        match &self.id {
            AdvertId::Key(k) => {
                out.push(0);
                out.extend_from_slice(k.as_bytes());
            }
            AdvertId::Beacon(b) => {
                out.push(1);
                out.extend_from_slice(&(b.len() as u16).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
        out.push(self.data.len() as u8);
        out.extend_from_slice(&self.data);
        out
    }

    /// Decodes an advert, refusing anything malformed or oversized.
    pub fn decode(bytes: &[u8]) -> Result<Advert> {
        let bad = |reason: &str| Error::malformed("advert", reason);
        if bytes.len() > MAX_ADVERT_BYTES {
            return Err(Error::TooLarge {
                what: "advert",
                size: bytes.len(),
                limit: MAX_ADVERT_BYTES,
            });
        }
        let (&version, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if version != ADVERT_VERSION {
            return Err(bad("unknown version"));
        }
        let (&kind, rest) = rest.split_first().ok_or_else(|| bad("no kind"))?;
        let (id, rest) = match kind {
            0 => {
                let (digest, rest) = rest.split_at_checked(32).ok_or_else(|| bad("short key"))?;
                let mut d = [0u8; 32];
                d.copy_from_slice(digest);
                (AdvertId::Key(KeyId::from_digest(d)), rest)
            }
            1 => {
                let (len, rest) = rest
                    .split_at_checked(2)
                    .ok_or_else(|| bad("short beacon"))?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len == 0 || len > MAX_BEACON_BYTES {
                    return Err(bad("beacon length out of range"));
                }
                let (beacon, rest) = rest
                    .split_at_checked(len)
                    .ok_or_else(|| bad("short beacon"))?;
                (AdvertId::Beacon(beacon.to_vec()), rest)
            }
            _ => return Err(bad("unknown kind")),
        };
        let (&len, rest) = rest.split_first().ok_or_else(|| bad("no data length"))?;
        let len = usize::from(len);
        if len > MAX_ADVERT_DATA || rest.len() != len {
            return Err(bad("data length does not match"));
        }
        Ok(Advert {
            version,
            id,
            data: rest.to_vec(),
        })
    }
}

fn check_data(data: &[u8]) -> Result<()> {
    if data.len() > MAX_ADVERT_DATA {
        return Err(Error::TooLarge {
            what: "advert data",
            size: data.len(),
            limit: MAX_ADVERT_DATA,
        });
    }
    Ok(())
}

/// A stable 16-byte name for a beacon's bytes (FNV-1a 128, not a security property: beacons
/// are distinct per refresh anyway).
fn beacon_handle(bytes: &[u8]) -> [u8; 16] {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h.to_be_bytes()
}

/// One way to reach a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// The transport.
    pub transport: Transport,
    /// The address on it.
    pub address: Address,
    /// When it was last heard there (milliseconds on the discovery's clock).
    pub last_seen: u64,
}

/// A peer, as a discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Who.
    pub id: PeerId,
    /// Where, on every transport it was seen on (the cheapest first).
    pub addresses: Vec<PeerAddress>,
    /// Its latest advert.
    pub advert: Advert,
    /// When it was first heard (milliseconds on the discovery's clock).
    pub first_seen: u64,
    /// When it was last heard.
    pub last_seen: u64,
}

impl Peer {
    /// The cheapest way to reach it (lowest [`Transport::cost`], then the most recently heard).
    pub fn cheapest(&self) -> Option<&PeerAddress> {
        self.addresses.iter().min_by(|a, b| {
            a.transport
                .cost()
                .cmp(&b.transport.cost())
                .then(b.last_seen.cmp(&a.last_seen))
        })
    }

    /// Keeps addresses in preference order: cheapest first, then most recent.
    pub(crate) fn sort_addresses(&mut self) {
        self.addresses.sort_by(|a, b| {
            a.transport
                .cost()
                .cmp(&b.transport.cost())
                .then(b.last_seen.cmp(&a.last_seen))
                .then(a.address.cmp(&b.address))
        });
    }
}

/// What changed in the neighbourhood.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer was heard for the first time (or again after it was lost).
    Found(Peer),
    /// A known peer changed: a new address or transport, a lost one, a new advert.
    Updated(Peer),
    /// A peer was not heard for the configured silence on any transport.
    Lost(PeerId),
}

impl Event {
    /// The peer it is about.
    pub fn peer_id(&self) -> PeerId {
        match self {
            Event::Found(p) | Event::Updated(p) => p.id,
            Event::Lost(id) => *id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> KeyId {
        KeyId::from_digest([n; 32])
    }

    #[test]
    fn adverts_round_trip_byte_for_byte() {
        let a = Advert::key(key(7), vec![1, 2, 3]).unwrap();
        let bytes = a.encode();
        let mut expect = vec![1, 0];
        expect.extend_from_slice(&[7; 32]);
        expect.extend_from_slice(&[3, 1, 2, 3]);
        assert_eq!(bytes, expect);
        assert_eq!(Advert::decode(&bytes).unwrap(), a);
        let b = Advert::beacon(vec![9; 5], vec![]).unwrap();
        assert_eq!(b.encode(), vec![1, 1, 0, 5, 9, 9, 9, 9, 9, 0]);
        assert_eq!(Advert::decode(&b.encode()).unwrap(), b);
        assert!(matches!(b.peer_id(), PeerId::Beacon(_)));
        assert_eq!(a.peer_id(), PeerId::Key(key(7)));
    }

    #[test]
    fn malformed_adverts_are_refused() {
        let good = Advert::key(key(1), vec![5]).unwrap().encode();
        for bad in [
            vec![],
            vec![2],
            vec![1, 7],
            good[..20].to_vec(),
            [good.clone(), vec![0]].concat(),
            vec![1, 1, 0, 0, 0],
            vec![1, 1, 9, 9, 1, 0],
        ] {
            assert!(Advert::decode(&bad).is_err(), "{bad:?}");
        }
        assert!(Advert::decode(&vec![1; MAX_ADVERT_BYTES + 1]).is_err());
        assert!(Advert::key(key(1), vec![0; MAX_ADVERT_DATA + 1]).is_err());
        assert!(Advert::beacon(vec![], vec![]).is_err());
    }

    /// The largest beacon fits an advert.
    #[cfg(feature = "beacons")]
    #[test]
    fn beacons_fit_adverts() {
        assert!(Advert::beacon(vec![1; crate::beacon::MAX_LEN], vec![]).is_ok());
    }

    #[test]
    fn cheapest_prefers_cost_then_recency() {
        let mut p = Peer {
            id: PeerId::Key(key(1)),
            addresses: vec![
                PeerAddress {
                    transport: Transport::Ble,
                    address: Address::Ble([1; 6]),
                    last_seen: 50,
                },
                PeerAddress {
                    transport: Transport::Lan,
                    address: Address::Socket("10.0.0.1:1".parse().unwrap()),
                    last_seen: 10,
                },
                PeerAddress {
                    transport: Transport::Lan,
                    address: Address::Socket("10.0.0.2:1".parse().unwrap()),
                    last_seen: 20,
                },
            ],
            advert: Advert::key(key(1), vec![]).unwrap(),
            first_seen: 0,
            last_seen: 50,
        };
        let best = p.cheapest().unwrap().clone();
        assert_eq!(best.address, Address::Socket("10.0.0.2:1".parse().unwrap()));
        p.sort_addresses();
        assert_eq!(p.addresses[0].address, best.address);
        assert_eq!(p.addresses[2].transport, Transport::Ble);
    }
}
