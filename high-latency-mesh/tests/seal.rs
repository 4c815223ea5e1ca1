//! Sealed messages: round trips, what relays cannot do, receipts, bounded parsing, and a hex
//! snapshot of the format.
//!
//! Run: `cargo test -p high-latency-mesh --test seal`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::sync::OnceLock;

use adhoc_wireless::beacon::{BeaconKey, Recipient};
use high_latency_mesh::seal::{
    self, DestTag, Header, MAX_MESSAGE_BYTES, MessageId, Receipt, SealedMessage,
};
use high_latency_mesh::{Error, ErrorKind};
use proptest::prelude::*;
use public_key_identity::{KeyAlgorithm, KeyPair};

const CREATED: u64 = 1_700_000_000_000;
const WEEK: u64 = 7 * 24 * 3600 * 1000;

/// An Ed25519 identity from a fixed seed (a PKCS#8 v1 document, RFC 8410).
fn ed25519(seed: &[u8; 32]) -> KeyPair {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        data_encoding::BASE64.encode(&der)
    );
    KeyPair::from_pkcs8_pem(&pem).unwrap()
}

fn recipient(key: &KeyPair) -> Recipient {
    Recipient::from_spki_der(key.spki_der()).unwrap()
}

fn beacon_key(key: &KeyPair) -> BeaconKey {
    BeaconKey::from_keypair(key).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Alice, Bob, Carol and a relay, with fixed keys.
struct Cast {
    alice: KeyPair,
    bob: KeyPair,
    bob_key: BeaconKey,
    carol_key: BeaconKey,
    relay_key: BeaconKey,
}

fn cast() -> &'static Cast {
    static CAST: OnceLock<Cast> = OnceLock::new();
    CAST.get_or_init(|| {
        let bob = ed25519(&[2; 32]);
        Cast {
            alice: ed25519(&[1; 32]),
            bob_key: beacon_key(&bob),
            bob,
            carol_key: beacon_key(&ed25519(&[3; 32])),
            relay_key: beacon_key(&ed25519(&[4; 32])),
        }
    })
}

/// One message from Alice to Bob, sealed once, as wire bytes.
fn sample() -> &'static [u8] {
    static SAMPLE: OnceLock<Vec<u8>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let c = cast();
        seal::seal(
            &c.alice,
            &recipient(&c.bob),
            b"meet at noon",
            CREATED,
            CREATED + WEEK,
        )
        .unwrap()
        .to_bytes()
    })
}

fn parse(bytes: &[u8]) -> high_latency_mesh::Result<SealedMessage> {
    SealedMessage::from_bytes(bytes, MAX_MESSAGE_BYTES)
}

#[test]
fn sealed_round_trip_ed25519() {
    let c = cast();
    for payload in [
        &b""[..],
        b"x",
        &[0u8; 1000],
        &(0..=255).collect::<Vec<u8>>(),
    ] {
        let sealed =
            seal::seal(&c.alice, &recipient(&c.bob), payload, CREATED, CREATED + 1).unwrap();
        let wire = sealed.to_bytes();
        assert_eq!(sealed.size(), wire.len() as u64);
        assert_eq!(
            wire.len(),
            Header::LEN + 2 + 44 + 2 + 64 + payload.len() + 16
        );
        let carried = parse(&wire).unwrap();
        assert_eq!(carried, sealed);
        assert_eq!(carried.id(), sealed.id());
        assert_eq!(carried.id(), MessageId::of_wire_bytes(&wire));
        let header = carried.header();
        assert_eq!(header.dest, DestTag::of(&c.bob.key_id()));
        assert_eq!(
            (header.created_ms, header.expires_ms),
            (CREATED, CREATED + 1)
        );
        // Open does not look at the expiry.
        let opened = seal::open(&c.bob_key, &carried, CREATED + WEEK).unwrap();
        assert!(header.is_expired(CREATED + WEEK));
        assert_eq!(opened.sender, c.alice.key_id());
        assert_eq!(opened.sender_spki, c.alice.spki_der());
        assert_eq!(opened.payload, payload);
        assert_eq!(opened.receipt.id, sealed.id());
        assert!(opened.receipt.clears(header));
    }
}

#[test]
fn sealed_round_trip_p256_sender() {
    let c = cast();
    let sender = KeyPair::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let sealed = seal::seal(
        &sender,
        &recipient(&c.bob),
        b"from a browser",
        CREATED,
        CREATED + WEEK,
    )
    .unwrap();
    let opened = seal::open(&c.bob_key, &parse(&sealed.to_bytes()).unwrap(), CREATED).unwrap();
    assert_eq!(opened.sender, sender.key_id());
    assert_eq!(opened.sender_spki, sender.spki_der());
    assert_eq!(opened.payload, b"from a browser");
    assert!(opened.receipt.clears_message(&sealed));
}

#[test]
fn sealed_messages_are_fresh_each_time() {
    let c = cast();
    let to_bob = recipient(&c.bob);
    let a = seal::seal(&c.alice, &to_bob, b"same", CREATED, CREATED + 1).unwrap();
    let b = seal::seal(&c.alice, &to_bob, b"same", CREATED, CREATED + 1).unwrap();
    assert_ne!(a.header().ephemeral, b.header().ephemeral);
    assert_ne!(a.header().ack_hash, b.header().ack_hash);
    assert_ne!(a.id(), b.id());
    assert_eq!(a.header().dest, b.header().dest, "the tag is stable");
}

#[test]
fn sealed_message_relay_cannot_open_or_read() {
    let c = cast();
    let wire = sample();
    let message = parse(wire).unwrap();
    let err = seal::open(&c.relay_key, &message, CREATED).unwrap_err();
    assert!(
        matches!(err, Error::Open("not addressed to this key")),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::PeerMisbehaved);
    // A relay that rewrites the tag to its own still cannot decrypt (and Bob then refuses).
    let mut retagged = wire.to_vec();
    retagged[2..18].copy_from_slice(DestTag::of(&c.relay_key.key_id()).as_bytes());
    let retagged = parse(&retagged).unwrap();
    assert!(matches!(
        seal::open(&c.relay_key, &retagged, CREATED),
        Err(Error::Open(_))
    ));
    // Nothing of the payload, the sender's key or its key id is in the clear.
    let contains = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(b"meet at noon"));
    assert!(!contains(b"meet"));
    assert!(!contains(&c.alice.spki_der()[12..]));
    assert!(!contains(c.alice.key_id().as_bytes()));
    assert!(!contains(c.bob.key_id().as_bytes()));
}

#[test]
fn sealed_to_a_wrong_recipient_fails() {
    let c = cast();
    let message = parse(sample()).unwrap();
    for key in [&c.carol_key, &beacon_key(&c.alice)] {
        assert!(matches!(
            seal::open(key, &message, CREATED),
            Err(Error::Open("not addressed to this key"))
        ));
    }
    assert!(seal::open(&c.bob_key, &message, CREATED).is_ok());
}

#[test]
fn sealed_tampering_with_any_byte_fails_and_changes_the_id() {
    let c = cast();
    let wire = sample();
    let id = MessageId::of_wire_bytes(wire);
    for at in 0..wire.len() {
        for flip in [0x01u8, 0x80] {
            let mut bytes = wire.to_vec();
            bytes[at] ^= flip;
            assert_ne!(MessageId::of_wire_bytes(&bytes), id, "byte {at}");
            if let Ok(message) = parse(&bytes) {
                assert_ne!(message.id(), id);
                let err = seal::open(&c.bob_key, &message, CREATED).unwrap_err();
                assert!(
                    matches!(err, Error::Open(_)),
                    "byte {at} ^ {flip:#x}: {err}"
                );
            }
        }
    }
}

#[test]
fn sealed_from_bytes_refuses_truncated_oversized_and_garbage_input() {
    let wire = sample();
    for len in 0..wire.len() {
        let err = parse(&wire[..len]).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{len}: {err}");
    }
    let mut longer = wire.to_vec();
    longer.push(0);
    assert!(matches!(parse(&longer), Err(Error::Malformed { .. })));
    let size = wire.len() as u64;
    assert!(matches!(
        SealedMessage::from_bytes(wire, size - 1),
        Err(Error::TooLarge { limit, .. }) if limit == size - 1
    ));
    assert!(SealedMessage::from_bytes(wire, size).is_ok());
    let huge = vec![1u8; MAX_MESSAGE_BYTES as usize + 1];
    assert!(matches!(parse(&huge), Err(Error::TooLarge { .. })));
    for garbage in [&b"garbage"[..], &[0xff; 200], &[1; 200], &[0; 86]] {
        assert!(parse(garbage).is_err());
    }
}

#[test]
fn sealed_receipt_clears_only_its_own_message() {
    let c = cast();
    let to_bob = recipient(&c.bob);
    let first = seal::seal(&c.alice, &to_bob, b"one", CREATED, CREATED + 1).unwrap();
    let second = seal::seal(&c.alice, &to_bob, b"one", CREATED, CREATED + 1).unwrap();
    let receipt = seal::open(&c.bob_key, &first, CREATED).unwrap().receipt;
    assert!(receipt.clears(first.header()));
    assert!(receipt.clears_message(&first));
    assert!(!receipt.clears(second.header()));
    assert!(!receipt.clears_message(&second));

    // Published as bytes or hex, it still clears.
    let published = Receipt::from_bytes(&receipt.to_bytes()).unwrap();
    assert!(published.clears_message(&first));
    assert_eq!(Receipt::from_hex(&receipt.to_hex()).unwrap(), receipt);

    // Forged acks do not: made up, or taken from a message's own header fields.
    for ack in [[0u8; 32], [0xff; 32], first.header().ephemeral, {
        let mut a = receipt.ack;
        a[0] ^= 1;
        a
    }] {
        let forged = Receipt {
            id: first.id(),
            ack,
        };
        assert!(!forged.clears(first.header()));
        assert!(!forged.clears_message(&first));
    }
    // The right ack under another id clears the header but not the message.
    let wrong_id = Receipt {
        id: second.id(),
        ..receipt
    };
    assert!(wrong_id.clears(first.header()));
    assert!(!wrong_id.clears_message(&first));
}

/// A message built from fixed keys and a fixed ephemeral secret: any change to the format, the
/// labels or the key schedule changes these bytes.
#[test]
fn sealed_hex_snapshot() {
    let c = cast();
    let sealed = seal::seal_with_ephemeral(
        &c.alice,
        &recipient(&c.bob),
        b"hello, mesh",
        CREATED,
        CREATED + WEEK,
        [0x42; 32],
    )
    .unwrap();
    // Field by field, as in the table in the module docs. Checked independently against
    // pyca/cryptography (X25519, HKDF, ChaCha20-Poly1305, Ed25519) when it was written.
    let expected_header = [
        // version, flags
        "01",
        "00",
        // dest: the DestTag of Bob's key id
        "803be258c2328cfe22b2242e4e15ed61",
        // created_ms 1_700_000_000_000, expires_ms a week later
        "0000018bcfe56800",
        "0000018bf3f1ec00",
        // ack_hash
        "c9d3f8df636eee79a3ef36026cec20c7",
        // E = X25519(42 × 32, 9)
        "132c442be010fbd57e72603328aa76e71fccc1503aae219327d14d9c9993f472",
        // body_len 139 = 2 + 44 (SPKI) + 2 + 64 (signature) + 11 (payload) + 16 (tag)
        "0000008b",
    ]
    .concat();
    assert_eq!(hex(&sealed.header().to_bytes()), expected_header);
    assert_eq!(
        DestTag::of(&c.bob.key_id()).to_string(),
        "803be258c2328cfe22b2242e4e15ed61"
    );
    // The id covers the body too (Ed25519 signatures are deterministic).
    assert_eq!(
        sealed.id().to_string(),
        "87c107bcb7b6efe9b0be52559890c3751129a7193fa8e08aaf3f797724779010"
    );
    let opened = seal::open(&c.bob_key, &sealed, CREATED).unwrap();
    assert_eq!(opened.payload, b"hello, mesh");
    assert_eq!(
        hex(&opened.receipt.ack),
        "152e0f70e7107e9ed366ac4b05ca36abfd89995b46941b75c1792ee1a2ee3067"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sealed_from_bytes_never_panics_on_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        max_len in prop_oneof![Just(MAX_MESSAGE_BYTES), 0u64..400],
    ) {
        if let Ok(message) = SealedMessage::from_bytes(&bytes, max_len) {
            prop_assert_eq!(&message.to_bytes(), &bytes);
            prop_assert!(seal::open(&cast().bob_key, &message, CREATED).is_err());
        }
        let _ = Header::from_bytes(&bytes);
        let _ = Receipt::from_bytes(&bytes);
    }

    #[test]
    fn sealed_random_mutations_never_open(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        tail in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut bytes = sample().to_vec();
        for (at, xor) in &edits {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        bytes.extend_from_slice(&tail);
        if bytes != sample() {
            if let Ok(message) = parse(&bytes) {
                prop_assert!(seal::open(&cast().bob_key, &message, CREATED).is_err());
            }
        }
    }
}
