//! Several plugins as one neighbourhood: merged events, one peer with two addresses, links
//! chosen cheapest first with fallback — over two in-memory plugins (a stand-in radio whose
//! links are tokio duplex pipes), so the merging logic is tested apart from any real radio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use adhoc_wireless::{
    Address, Advert, BoxedStream, Discovery, Error, Event, Incoming, Link, Neighbourhood, Plugin,
    Result, SharedTable, Subscription, TableConfig, Transport,
};
use public_key_identity::KeyId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stand-in radio: adverts are fed by the test; addresses in `reachable` accept streams
/// (echo servers), others refuse.
struct FakeRadio {
    transport: Transport,
    table: SharedTable,
    reachable: Mutex<HashSet<Address>>,
    sent: Mutex<Vec<(Address, Vec<u8>)>>,
}

impl FakeRadio {
    fn new(transport: Transport) -> Arc<FakeRadio> {
        Arc::new(FakeRadio {
            transport,
            table: SharedTable::new(TableConfig::default()),
            reachable: Mutex::new(HashSet::new()),
            sent: Mutex::new(Vec::new()),
        })
    }
}

impl Discovery for FakeRadio {
    fn peers(&self) -> Vec<adhoc_wireless::Peer> {
        self.table.peers()
    }
    fn subscribe(&self) -> Subscription {
        self.table.subscribe()
    }
}

#[async_trait::async_trait]
impl Link for FakeRadio {
    fn transport(&self) -> Transport {
        self.transport
    }
    fn max_message_bytes(&self) -> usize {
        16
    }
    async fn send(&self, to: &Address, message: &[u8]) -> Result<()> {
        if !self.reachable.lock().unwrap().contains(to) {
            return Err(Error::Unreachable(to.to_string()));
        }
        self.sent
            .lock()
            .unwrap()
            .push((to.clone(), message.to_vec()));
        Ok(())
    }
    async fn connect(&self, to: &Address) -> Result<BoxedStream> {
        if !self.reachable.lock().unwrap().contains(to) {
            return Err(Error::Unreachable(to.to_string()));
        }
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let tag = self.transport.name().as_bytes().to_vec();
        tokio::spawn(async move {
            let _ = theirs.write_all(&tag).await;
        });
        Ok(Box::new(ours))
    }
    fn incoming(&self) -> Option<Incoming> {
        None
    }
}

impl Plugin for FakeRadio {
    fn advertise(&self, _advert: Advert) -> Result<()> {
        Ok(())
    }
}

async fn next_event(sub: &mut Subscription) -> Event {
    tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
        .await
        .expect("an event")
        .expect("open")
        .expect("no lag")
}

#[tokio::test]
async fn two_radios_one_peer_cheapest_first_with_fallback() {
    let lan = FakeRadio::new(Transport::Lan);
    let ble = FakeRadio::new(Transport::Ble);
    let hood = Neighbourhood::new(vec![lan.clone(), ble.clone()]);
    let mut sub = hood.subscribe();
    tokio::spawn(hood.clone().run());
    tokio::task::yield_now().await;

    let key = KeyId::from_digest([3; 32]);
    let advert = Advert::key(key, vec![]).unwrap().encode();
    let (lan_addr, ble_addr) = (
        Address::Socket("10.0.0.3:4000".parse().unwrap()),
        Address::Ble([3; 6]),
    );
    ble.table
        .observe(0, &ble_addr, Transport::Ble, ble_addr.clone(), &advert);
    assert!(matches!(next_event(&mut sub).await, Event::Found(p) if p.addresses.len() == 1));
    lan.table
        .observe(0, &lan_addr, Transport::Lan, lan_addr.clone(), &advert);
    let Event::Updated(peer) = next_event(&mut sub).await else {
        panic!("an update")
    };
    assert_eq!(peer.addresses.len(), 2, "one peer, two addresses");
    assert_eq!(peer.cheapest().unwrap().transport, Transport::Lan);
    assert_eq!(hood.peers().len(), 1);

    // Only Bluetooth answers: the LAN (cheaper) is tried first, then Bluetooth.
    ble.reachable.lock().unwrap().insert(ble_addr.clone());
    let id = peer.id;
    let mut stream = hood.connect(&id).await.unwrap();
    let mut tag = [0u8; 3];
    stream.read_exact(&mut tag).await.unwrap();
    assert_eq!(&tag, b"ble");
    // Once the LAN answers, it is preferred.
    lan.reachable.lock().unwrap().insert(lan_addr.clone());
    let mut stream = hood.connect(&id).await.unwrap();
    stream.read_exact(&mut tag).await.unwrap();
    assert_eq!(&tag, b"lan");
    // Messages too; one over every plugin's limit is refused.
    hood.send(&id, b"hi").await.unwrap();
    assert_eq!(lan.sent.lock().unwrap().len(), 1);
    assert!(hood.send(&id, &[0; 64]).await.is_err());

    // Lost on the LAN: still there over Bluetooth. Lost on both: lost.
    lan.table.expire(20_000);
    assert!(matches!(next_event(&mut sub).await, Event::Updated(p) if p.addresses.len() == 1));
    assert!(hood.connect(&id).await.is_ok());
    ble.table.expire(20_000);
    assert_eq!(next_event(&mut sub).await, Event::Lost(id));
    assert!(matches!(
        hood.connect(&id).await,
        Err(Error::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_neighbourhood_knows_what_its_radios_knew_before_it() {
    let lan = FakeRadio::new(Transport::Lan);
    let a = Address::Socket("10.0.0.9:1".parse().unwrap());
    let advert = Advert::key(KeyId::from_digest([9; 32]), vec![])
        .unwrap()
        .encode();
    lan.table.observe(0, &a, Transport::Lan, a.clone(), &advert);
    let hood = Neighbourhood::new(vec![lan.clone()]);
    assert_eq!(hood.peers().len(), 1);
    assert_eq!(hood.peers()[0].addresses[0].address, a);
}
