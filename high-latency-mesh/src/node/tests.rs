use super::*;
use couch_sync::{ParseOptions, Store, StoreConfig};
use public_key_identity::KeyAlgorithm;

const NOW: u64 = 1_767_225_600_000;
const HOUR: u64 = 3_600_000;

struct Place {
    _dir: tempfile::TempDir,
    store: Store,
}

fn place() -> Place {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    Place { _dir: dir, store }
}

fn key() -> KeyPair {
    KeyPair::generate(KeyAlgorithm::Ed25519).unwrap()
}

fn copy_key(key: &KeyPair) -> KeyPair {
    KeyPair::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap()
}

fn config(mode: Mode, quota: u64) -> NodeConfig {
    NodeConfig {
        mode,
        quota_bytes: quota,
        ..NodeConfig::default()
    }
}

fn node(place: &Place, key: KeyPair, config: NodeConfig) -> Node {
    let db = place
        .store
        .db("mesh")
        .or_else(|_| place.store.create_db("mesh"))
        .unwrap();
    Node::open(db, key, config).unwrap()
}

/// What a replication does: copies the winning revision (with its history) of each id.
fn copy_docs(from: &Database, to: &Database, ids: &[String]) {
    for id in ids {
        let opts = GetOptions {
            revs: true,
            ..GetOptions::default()
        };
        let Ok(doc) = from.get(&format!("m-{id}"), &opts) else {
            continue;
        };
        let dir = std::env::temp_dir();
        let update = DocUpdate::from_json(
            doc.json,
            ParseOptions {
                compress: false,
                tmp_dir: &dir,
            },
        )
        .unwrap();
        to.put(None, update, false).unwrap();
    }
}

/// One meeting, `a` offering to `b` and `b` to `a`, replication included.
fn meet(a: &mut Node, b: &mut Node, now: u64) -> (Received, Received) {
    let (ha, hb) = (a.hello(now), b.hello(now));
    let a_offers = a.offers_for(&hb, now).unwrap();
    let b_offers = b.offers_for(&ha, now).unwrap();
    let b_accepts = b.accept(&a_offers, now).unwrap();
    let a_accepts = a.accept(&b_offers, now).unwrap();
    copy_docs(a.database(), b.database(), &b_accepts.ids);
    copy_docs(b.database(), a.database(), &a_accepts.ids);
    let b_got = b.on_pulled(&a_offers, &b_accepts, now).unwrap();
    let a_got = a.on_pulled(&b_offers, &a_accepts, now).unwrap();
    a.on_received(&a_offers, &b_got, now).unwrap();
    b.on_received(&b_offers, &a_got, now).unwrap();
    assert!(a.stored_bytes() <= a.config().quota_bytes);
    assert!(b.stored_bytes() <= b.config().quota_bytes);
    (a_got, b_got)
}

fn live_docs(db: &Database) -> Vec<String> {
    db.all_docs(&AllDocsQuery::default(), None)
        .unwrap()
        .rows
        .into_iter()
        .filter_map(|r| match r {
            AllDocsRow::Doc { id, deleted, .. } if !deleted => Some(id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_message_travels_a_chain_and_is_delivered_exactly_once() {
    let (pa, pb, pc) = (place(), place(), place());
    let mode = Mode::SprayAndWait { copies: 2 };
    let mut a = node(&pa, key(), config(mode.clone(), 1 << 20));
    let mut b = node(&pb, key(), config(mode.clone(), 1 << 20));
    let mut c = node(&pc, key(), config(mode, 1 << 20));
    let id = a.send(c.spki_der(), b"for c only", NOW, HOUR).unwrap();
    assert!(a.message(&id).unwrap().own);
    assert_eq!(a.message(&id).unwrap().held.copies, 2);

    let (_, got) = meet(&mut a, &mut b, NOW + 1);
    assert_eq!(got.ids, vec![id.to_hex()]);
    // Binary spray: 1 copy each.
    assert_eq!(a.message(&id).unwrap().held.copies, 1);
    let relayed = b.message(&id).unwrap();
    assert_eq!(
        (relayed.held.copies, relayed.held.hops, relayed.own),
        (1, 1, false)
    );
    assert!(seal::open(&b.beacon, &b.sealed(&id).unwrap().unwrap(), NOW).is_err());
    assert!(b.take_delivered().unwrap().is_empty());

    let (_, got) = meet(&mut b, &mut c, NOW + 2);
    assert_eq!(got.ids, vec![id.to_hex()]);
    assert!(
        !b.holds(&id),
        "a single copy handed to its destination leaves"
    );
    let delivered = c.take_delivered().unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].payload, b"for c only");
    assert_eq!(delivered[0].sender, a.key_id());
    assert!(c.take_delivered().unwrap().is_empty());
    assert!(c.was_delivered(&id));
    assert_eq!(c.stored_bytes(), 0);

    // A offers it again directly: C's hello says it had it, and its receipt clears A's copy.
    let (_, got) = meet(&mut a, &mut c, NOW + 3);
    assert!(got.ids.is_empty());
    assert!(!a.holds(&id));
    assert!(c.take_delivered().unwrap().is_empty());
    // Even offered by hand, C refuses it.
    let offer = OfferList {
        items: vec![OfferItem {
            id: id.to_hex(),
            size: 300,
            expires_ms: NOW + HOUR,
            give: 1,
            keep: 0,
            hops: 0,
            focus_hops: 0,
            reason: OfferReason::Deliver,
        }],
    };
    assert!(c.accept(&offer, NOW + 4).unwrap().ids.is_empty());
}

#[test]
fn eviction_takes_expired_then_oldest_relayed_and_never_the_outbox() {
    let (pa, pb) = (place(), place());
    let stranger_key = key();
    let mut stranger = node(&pa, stranger_key, config(Mode::Epidemic, 1 << 20));
    let somebody = key();
    // Messages of about 1 KiB: the quota holds our own and two more.
    let payload = vec![7u8; 900];
    let mut b = node(&pb, key(), config(Mode::Epidemic, 4 * 1200));
    let own = b
        .send(somebody.spki_der(), &payload, NOW, 10 * HOUR)
        .unwrap();
    let size = b.stored_bytes();
    assert!(size > 900 && size < 1200, "{size}");

    // The stranger floods: short-lived ones first, then long-lived ones.
    let short = stranger
        .send(somebody.spki_der(), &payload, NOW, 10)
        .unwrap();
    let old = stranger
        .send(somebody.spki_der(), &payload, NOW, HOUR)
        .unwrap();
    meet(&mut stranger, &mut b, NOW + 1);
    assert!(b.holds(&short) && b.holds(&old) && b.holds(&own));
    let mut later = Vec::new();
    for i in 0..6 {
        later.push(
            stranger
                .send(somebody.spki_der(), &payload, NOW + 100 + i, HOUR)
                .unwrap(),
        );
    }
    meet(&mut stranger, &mut b, NOW + 200);
    assert!(b.holds(&own), "the outbox stays");
    assert!(!b.holds(&short), "the expired one went first");
    assert!(!b.holds(&old), "then the oldest received");
    assert!(b.stored_bytes() <= 4 * 1200);
    let relayed: Vec<_> = b
        .message_ids()
        .into_iter()
        .filter(|id| *id != own)
        .collect();
    assert_eq!(relayed.len(), 3);
    // Among the later ones, those received last stay (one session: ties by id).
    assert!(relayed.iter().all(|id| later.contains(id)));

    // An outbox that fills the quota refuses more, and relays cannot displace it.
    let own2 = b
        .send(somebody.spki_der(), &payload, NOW + 300, HOUR)
        .unwrap();
    let own3 = b
        .send(somebody.spki_der(), &payload, NOW + 301, HOUR)
        .unwrap();
    let own4 = b
        .send(somebody.spki_der(), &payload, NOW + 302, HOUR)
        .unwrap();
    assert!(matches!(
        b.send(somebody.spki_der(), &payload, NOW + 303, HOUR),
        Err(Error::QuotaExceeded { .. })
    ));
    for i in 0..4 {
        stranger
            .send(somebody.spki_der(), &payload, NOW + 400 + i, HOUR)
            .unwrap();
    }
    let (_, got) = meet(&mut stranger, &mut b, NOW + 500);
    assert!(got.ids.is_empty());
    for id in [own, own2, own3, own4] {
        assert!(b.holds(&id));
    }
    assert!(b.stored_bytes() <= 4 * 1200);
}

#[test]
fn bad_documents_are_deleted_and_not_acknowledged() {
    let (pa, pb) = (place(), place());
    let mut a = node(&pa, key(), config(Mode::Epidemic, 1 << 20));
    let mut b = node(&pb, key(), config(Mode::Epidemic, 1 << 20));
    let somebody = key();
    let m1 = a.send(somebody.spki_der(), b"one", NOW, HOUR).unwrap();
    let m2 = a.send(somebody.spki_der(), b"two", NOW, HOUR).unwrap();
    let m3 = a.send(somebody.spki_der(), b"three", NOW, HOUR).unwrap();
    let offers = a.offers_for(&b.hello(NOW), NOW).unwrap();
    let accept = b.accept(&offers, NOW).unwrap();
    assert_eq!(accept.ids.len(), 3);
    // m1 arrives with m2's bytes; m2 with an extra member; m3 intact; and an unasked-for doc.
    let wire =
        |id: &MessageId| data_encoding::BASE64.encode(&a.sealed(id).unwrap().unwrap().to_bytes());
    let put = |id: String, body: Value| {
        let update = DocUpdate {
            id: Some(id),
            body: object(body),
            ..DocUpdate::default()
        };
        b.database().put(None, update, true).unwrap();
    };
    put(m1.doc_id(), json!({"mesh": 1, "msg": wire(&m2)}));
    put(
        m2.doc_id(),
        json!({"mesh": 1, "msg": wire(&m2), "pad": "x"}),
    );
    put(m3.doc_id(), json!({"mesh": 1, "msg": wire(&m3)}));
    put("m-junk".into(), json!({"anything": true}));
    let got = b.on_pulled(&offers, &accept, NOW).unwrap();
    assert_eq!(got.ids, vec![m3.to_hex()]);
    assert!(!b.holds(&m1) && !b.holds(&m2) && b.holds(&m3));
    assert_eq!(live_docs(b.database()), vec![m3.doc_id()]);
    assert_eq!(b.stored_bytes(), b.message(&m3).unwrap().held.size);
    // The bad ones are remembered as had (tombstones): not accepted again.
    let again = b.accept(&offers, NOW).unwrap();
    assert!(again.ids.is_empty(), "{again:?}");
}

#[test]
fn accept_refuses_what_it_must_and_dedupes() {
    let (pa, pb) = (place(), place());
    let mut a = node(&pa, key(), config(Mode::Epidemic, 1 << 20));
    let mut b = node(&pb, key(), config(Mode::Epidemic, 1 << 20));
    let somebody = key();
    let m = a.send(somebody.spki_der(), b"x", NOW, HOUR).unwrap();
    let mut offers = a.offers_for(&b.hello(NOW), NOW).unwrap();
    let item = offers.items[0].clone();
    offers.items.push(item.clone());
    let bad = |f: &dyn Fn(&mut OfferItem)| {
        let mut i = item.clone();
        f(&mut i);
        i
    };
    offers.items.push(bad(&|i| i.id = "zz".into()));
    offers.items.push(bad(&|i| {
        i.id = "11".repeat(32);
        i.expires_ms = NOW;
    }));
    offers.items.push(bad(&|i| {
        i.id = "22".repeat(32);
        i.size = 2 << 20;
    }));
    offers.items.push(bad(&|i| {
        i.id = "33".repeat(32);
        i.give = 0;
    }));
    let accept = b.accept(&offers, NOW).unwrap();
    assert_eq!(accept.ids, vec![m.to_hex()]);
    // While the first pull is outstanding, the same id is not accepted twice.
    assert!(b.accept(&offers, NOW).unwrap().ids.is_empty());
    // The reservation counts against the quota.
    assert_eq!(b.stored_bytes(), item.size);
    // Nothing arrived: the reservation is released, nothing acknowledged.
    let got = b.on_pulled(&offers, &accept, NOW).unwrap();
    assert!(got.ids.is_empty());
    assert_eq!(b.stored_bytes(), 0);
    // A node's own hello keeps peers from offering what it holds.
    let offers_back = b.offers_for(&a.hello(NOW), NOW).unwrap();
    assert!(offers_back.items.is_empty());
    let again = a.offers_for(
        &Hello {
            held: vec![prefix(&m)],
            ..b.hello(NOW)
        },
        NOW,
    );
    assert!(again.unwrap().items.is_empty());
}

#[test]
fn a_session_that_never_reports_back_does_not_shrink_the_quota_for_good() {
    let (pa, pb) = (place(), place());
    let mut a = node(&pa, key(), config(Mode::Epidemic, 1 << 20));
    let mut b = node(&pb, key(), config(Mode::Epidemic, 1 << 20));
    let somebody = key();
    a.send(somebody.spki_der(), b"x", NOW, 10 * HOUR).unwrap();
    let offers = a.offers_for(&b.hello(NOW), NOW).unwrap();
    let accept = b.accept(&offers, NOW).unwrap();
    assert_eq!(accept.ids.len(), 1);
    let reserved = b.stored_bytes();
    assert!(reserved > 0);
    // The session dies: no on_pulled. Until the reservation times out it holds...
    let wait = b.config().reservation_ms;
    b.expire(NOW + wait - 1).unwrap();
    assert_eq!(b.stored_bytes(), reserved);
    assert!(b.accept(&offers, NOW + wait - 1).unwrap().ids.is_empty());
    // ...then it is released, and the message can be accepted again.
    b.expire(NOW + wait).unwrap();
    assert_eq!(b.stored_bytes(), 0);
    assert_eq!(b.accept(&offers, NOW + wait).unwrap().ids, accept.ids);
}

#[test]
fn receipts_clear_copies_travel_in_hellos_and_expire() {
    let (pa, pb, pc) = (place(), place(), place());
    let mut a = node(&pa, key(), config(Mode::Epidemic, 1 << 20));
    let mut b = node(&pb, key(), config(Mode::Epidemic, 1 << 20));
    let mut c = node(&pc, key(), config(Mode::Epidemic, 1 << 20));
    let id = a.send(c.spki_der(), b"hi c", NOW, HOUR).unwrap();
    meet(&mut a, &mut b, NOW + 1);
    assert!(b.holds(&id));
    meet(&mut b, &mut c, NOW + 2);
    assert_eq!(c.take_delivered().unwrap().len(), 1);
    assert!(b.holds(&id), "flood keeps its copy until a receipt comes");
    let receipt = c.receipts()[0];
    assert_eq!(receipt.id, id);
    assert!(c.hello(NOW + 3).receipts.contains(&receipt.to_hex()));

    // A forged receipt (right id, wrong ack) clears nothing.
    let forged = Receipt {
        ack: [9; 32],
        ..receipt
    };
    assert_eq!(b.learn_receipts(&[forged.to_hex()], NOW + 3).unwrap(), 0);
    assert!(b.holds(&id));
    // C's receipt comes back to B in C's hello.
    meet(&mut c, &mut b, NOW + 4);
    assert!(!b.holds(&id));
    assert_eq!(b.receipts(), vec![receipt]);
    // B tells A, which drops its copy too.
    meet(&mut b, &mut a, NOW + 5);
    assert!(!a.holds(&id));
    assert_eq!(live_docs(a.database()), vec![format!("r-{}", id.to_hex())]);
    // Receipts and delivered ids go at the message's expiry.
    for n in [&mut a, &mut b, &mut c] {
        n.expire(NOW + HOUR).unwrap();
        assert!(n.receipts().is_empty());
        assert!(live_docs(n.database()).is_empty());
    }
    assert!(!c.was_delivered(&id));
}

#[test]
fn expiry_deletes_carried_copies_but_not_the_inbox() {
    let (pa, pb) = (place(), place());
    let mut a = node(&pa, key(), config(Mode::Epidemic, 1 << 20));
    let mut b = node(&pb, key(), config(Mode::Epidemic, 1 << 20));
    let somebody = key();
    let relayed = a.send(somebody.spki_der(), b"r", NOW, 1000).unwrap();
    let mine = a.send(b.spki_der(), b"m", NOW, 1000).unwrap();
    meet(&mut a, &mut b, NOW + 1);
    assert!(b.holds(&relayed) && b.holds(&mine));
    assert_eq!(b.expire(NOW + 1000).unwrap(), 1);
    assert!(!b.holds(&relayed));
    assert_eq!(b.take_delivered().unwrap()[0].id, mine);
    assert_eq!(a.expire(NOW + 1000).unwrap(), 2);
    assert_eq!(a.stored_bytes(), 0);
}

#[test]
fn a_node_reopens_with_its_state() {
    let (pa, pb) = (place(), place());
    let (ka, kb) = (key(), key());
    let mode = Mode::SprayAndWait { copies: 4 };
    let somebody = key();
    let (relayed, mine, own) = {
        let mut a = node(&pa, copy_key(&ka), config(mode.clone(), 1 << 20));
        let mut b = node(&pb, copy_key(&kb), config(mode.clone(), 1 << 20));
        let relayed = a.send(somebody.spki_der(), b"r", NOW, HOUR).unwrap();
        let mine = a.send(b.spki_der(), b"m", NOW, HOUR).unwrap();
        let own = b.send(somebody.spki_der(), b"o", NOW, HOUR).unwrap();
        meet(&mut a, &mut b, NOW + 1);
        (relayed, mine, own)
    };
    let mut b = node(&pb, copy_key(&kb), config(mode.clone(), 1 << 20));
    let info = b.message(&relayed).unwrap();
    assert_eq!((info.held.copies, info.held.hops, info.own), (2, 1, false));
    assert!(b.message(&own).unwrap().own);
    assert!(b.message(&mine).unwrap().inbox);
    assert_eq!(b.receipts().len(), 1);
    let delivered = b.take_delivered().unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].payload, b"m");
    drop(b);
    let mut b = node(&pb, copy_key(&kb), config(mode, 1 << 20));
    assert!(b.was_delivered(&mine));
    assert!(b.take_delivered().unwrap().is_empty());
    assert_eq!(b.message_ids().len(), 2);
}

#[test]
fn config_is_checked() {
    let mut c = NodeConfig::default();
    assert!(c.check().is_ok());
    c.offer_limit = MAX_ITEMS + 1;
    assert!(matches!(c.check(), Err(Error::InvalidConfig(_))));
    let c = NodeConfig {
        mode: Mode::SprayAndWait { copies: 0 },
        ..NodeConfig::default()
    };
    assert!(c.check().is_err());
}

#[test]
fn the_largest_hello_and_offer_list_fit_a_frame() {
    let hello = Hello {
        tags: vec!["00".repeat(16); MAX_TAGS],
        met: vec![
            Met {
                tag: "00".repeat(16),
                at_ms: u64::MAX,
            };
            MAX_MET
        ],
        activity: u64::MAX,
        receipts: vec!["00".repeat(64); MAX_RECEIPTS],
        held: vec!["00".repeat(8); MAX_HELD],
    };
    let item = OfferItem {
        id: "00".repeat(32),
        size: u64::MAX,
        expires_ms: u64::MAX,
        give: u16::MAX,
        keep: u16::MAX,
        hops: u8::MAX,
        focus_hops: u8::MAX,
        reason: OfferReason::Deliver,
    };
    let list = OfferList {
        items: vec![item; MAX_ITEMS],
    };
    let ids = Accept {
        ids: vec!["00".repeat(32); MAX_ITEMS],
    };
    let frame = adhoc_wireless::MAX_MESSAGE_BYTES;
    assert!(serde_json::to_vec(&hello).unwrap().len() < frame);
    assert!(serde_json::to_vec(&list).unwrap().len() < frame);
    assert!(serde_json::to_vec(&ids).unwrap().len() < frame);
}
