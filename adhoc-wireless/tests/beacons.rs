//! "I have data for you" beacons: test vectors, and properties a neighbour must not break.
//!
//! Run: `cargo test -p adhoc-wireless --features beacons --test beacons`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use adhoc_wireless::beacon::{
    self, BeaconBuilder, BeaconError, BeaconKey, BeaconRng, MAX_LIFETIME_MINUTES, MAX_RECIPIENTS,
    Recipient, SizeClass, check,
};
use proptest::prelude::*;
use public_key_identity::{KeyAlgorithm, KeyPair};

/// A deterministic random source: SHA-256 of `seed ‖ counter`, block after block.
struct SeededRng {
    seed: Vec<u8>,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRng {
    fn new(seed: &[u8]) -> SeededRng {
        SeededRng {
            seed: seed.to_vec(),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }
}

impl BeaconRng for SeededRng {
    fn fill(&mut self, dest: &mut [u8]) -> beacon::Result<()> {
        for byte in dest {
            if self.used == self.block.len() {
                let mut input = self.seed.clone();
                input.extend_from_slice(&self.counter.to_be_bytes());
                self.block
                    .copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &input).as_ref());
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

/// An Ed25519 PKCS#8 v1 document (RFC 8410) for a seed.
fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

fn key(seed: &[u8; 32]) -> BeaconKey {
    BeaconKey::from_pkcs8(&pkcs8(seed)).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Does `a` contain any `len`-byte run that also occurs anywhere in `b`?
fn share_a_run(a: &[u8], b: &[u8], len: usize) -> bool {
    let runs: std::collections::HashSet<&[u8]> = b.windows(len).collect();
    a.windows(len).any(|w| runs.contains(w))
}

const NOW: u32 = 29_000_000; // 2025-02-19T13:20Z
const EXPIRY: u32 = NOW + 15;

/// Test vector 1: sender seed `11`×32, recipients seeds `22`×32 and `33`×32, Small class,
/// expiry 29000015, random source `SeededRng("thali beacon test vector 1")`.
const VECTOR_1: &str = "
    01 05 01ba814f
    ff61de658f008a9ced2baf7926d7bd1edd633ac97faa44fa9ee78f06d6bcd21d
    0f21 4d27f886c7874cb119de2c557fc66536 e5acabd49028
    a65c 85fadaca09400fd6e01792e41ffd682b ea7cfdb4d409
    9d13 29e3fac838df2c9dffa24dad2ffcc80e 6a1145511811
    6917 bba715eed411a7a74ed43738d34f2081 227d305d259b
    1345 808b7996312e7e6226021a4f15db0673 d8a22c8c0e5b
    fbefd992e52da7d974bebceb6dc1c6d72540be2667a16a63a5cf1c07a62b633f
    416bae2f980a14c52baeba9c636f83a3
    ";

/// Test vector 2: sender seed `11`×32, recipient seed `55`×32, Large class, expiry 29000015,
/// random source `SeededRng("thali beacon test vector 2")`.
const VECTOR_2: &str = "
    01 14 01ba814f
    3574b31f594bd9ad155c1af6ab9cdf79e9717e9fc6bbb153689cd99dc6950904
    8a92 9d8ed8b3b8a23781c02913f8190768b4 78020d595c40
    f2d0 05d748f67f25fbe52b7917eee266e14f 1f5fe329db7e
    ab5e d83f2f1b2914864a4e9190b5fd44b65a dc7f6cc0a9c5
    e730 614a851a745fb9405072ad82dd0a4aa9 627d2cd5b29f
    5696 b34a087e9021cea2cd921e720fee12a8 e43f4ea89348
    094b 69b95282798550ecb8c3c85d9baf9ff8 54d241f5746a
    6ab8 f360296c89545b170b9f72984418c380 b4e292524646
    2231 ffad57e4e55699430b4c947ff219c9b9 30e616d36ff9
    499c 4454a2bdab7182a1131b5a7945fd283b cb6556ada7ff
    4ca9 6d36ddc345822a1b15d164bca90e9d05 d8948f5790e9
    e838 937484f5f2fb3d5ed1a89f4c02220397 a04e0b7de729
    0fc7 d3c874451344d8831a75c2baf5b0771a 376f5a8975fc
    37d7 1a4b0ae18bd1dd7fed4719e90c7fe59d 1604c1b82f26
    8a99 7bc79081bf9988d1a11bc01b3f6b9616 9001828fe2d9
    5638 ab2da6a9fed1fe28efef85f6d947b161 dfcc73a59496
    f3c2 e4b709bc5316dc5da526f1955e54094d d66abbbd245d
    4954 1fae30285ae7e560efc5971794f60e03 aff013cea900
    3889 c8bb6122ee75a78e2f570bee68349ed1 d9aa9a273ec0
    141d bfb4507f66b4e9d3fd35d2ed23bf9222 e6fd92745db0
    8b86 6e6ee5a5adb3834cec3adc4d2e3f475d 995d29bbd629
    26faef0594a87eece0b3fea609015916bda3ca13cf965e423a3fc9a391bc8413
    767333d12fb37dd0957320b0d176f671
    ";

fn vector(class: SizeClass, recipients: &[&BeaconKey], rng_seed: &[u8]) -> Vec<u8> {
    let sender = key(&[0x11; 32]);
    BeaconBuilder::new(&sender)
        .size_class(class)
        .recipients(recipients.iter().map(|k| k.recipient()))
        .build(EXPIRY, &mut SeededRng::new(rng_seed))
        .unwrap()
}

/// Exact bytes for fixed keys and a seeded random source (a snapshot of the format: a change
/// here is a format change, and needs a new version byte).
#[test]
fn test_vectors() {
    let sender = key(&[0x11; 32]);
    let bob = key(&[0x22; 32]);
    let carol = key(&[0x33; 32]);
    let dave = key(&[0x55; 32]);
    let outsider = key(&[0x44; 32]);

    let advert = vector(
        SizeClass::Small,
        &[&bob, &carol],
        b"thali beacon test vector 1",
    );
    assert_eq!(hex(&advert), hex(&unhex(VECTOR_1)), "vector 1 changed");
    let advert = vector(SizeClass::Large, &[&dave], b"thali beacon test vector 2");
    assert_eq!(hex(&advert), hex(&unhex(VECTOR_2)), "vector 2 changed");

    // The recipients' side, from the published bytes alone.
    let v1 = unhex(VECTOR_1);
    assert_eq!(v1.len(), 206);
    assert_eq!(check(&v1, &bob, NOW).unwrap(), Some(sender.key_id()));
    assert_eq!(check(&v1, &carol, NOW).unwrap(), Some(sender.key_id()));
    assert_eq!(check(&v1, &dave, NOW).unwrap(), None);
    assert_eq!(check(&v1, &outsider, NOW).unwrap(), None);
    assert_eq!(check(&v1, &sender, NOW).unwrap(), None);
    let v2 = unhex(VECTOR_2);
    assert_eq!(v2.len(), 566);
    assert_eq!(check(&v2, &dave, NOW).unwrap(), Some(sender.key_id()));
    assert_eq!(check(&v2, &bob, NOW).unwrap(), None);
    assert_eq!(
        sender.key_id().to_string(),
        "ka6y5zdnlaogjglgk2nobfpcoba55azsf2hajahfkopabuwv3b2a",
        "the key id of Ed25519 seed 11x32"
    );
}

#[test]
fn identity_keypairs_send_and_receive() {
    let alice = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
    let bob = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
    let alice_key = BeaconKey::from_keypair(&alice).unwrap();
    let bob_key = BeaconKey::from_keypair(&bob).unwrap();
    // Alice knows Bob from his certificate's SubjectPublicKeyInfo.
    let advert = BeaconBuilder::new(&alice_key)
        .recipient(Recipient::from_spki_der(bob.spki_der()).unwrap())
        .build(EXPIRY, &mut ring::rand::SystemRandom::new())
        .unwrap();
    assert_eq!(check(&advert, &bob_key, NOW).unwrap(), Some(alice.key_id()));
    assert_eq!(check(&advert, &alice_key, NOW).unwrap(), None);
    // Through PEM, as the keystore writes it.
    let reloaded = KeyPair::from_pkcs8_pem(&bob.to_pkcs8_pem()).unwrap();
    let reloaded = BeaconKey::from_keypair(&reloaded).unwrap();
    assert_eq!(
        check(&advert, &reloaded, NOW).unwrap(),
        Some(alice.key_id())
    );
}

#[test]
fn recipient_cap_and_duplicates() {
    let sender = key(&[1; 32]);
    let recipients: Vec<Recipient> = (0..=MAX_RECIPIENTS as u8)
        .map(|i| key(&[i.wrapping_add(100); 32]).recipient())
        .collect();
    let mut rng = SeededRng::new(b"cap");
    let small = BeaconBuilder::new(&sender).recipients(recipients[..6].iter().cloned());
    assert_eq!(
        small.build(EXPIRY, &mut rng),
        Err(BeaconError::TooManyRecipients { count: 6, slots: 5 })
    );
    let large = BeaconBuilder::new(&sender)
        .size_class(SizeClass::Large)
        .recipients(recipients.iter().cloned());
    assert!(matches!(
        large.build(EXPIRY, &mut rng),
        Err(BeaconError::TooManyRecipients { count: 21, .. })
    ));
    // The same recipient twice takes one slot, so five distinct plus a repeat still fit.
    let five = BeaconBuilder::new(&sender)
        .recipients(recipients[..5].iter().cloned())
        .recipient(recipients[0].clone());
    assert_eq!(five.build(EXPIRY, &mut rng).unwrap().len(), 206);
    // A full Large advert: every one of the 20 finds itself.
    let advert = BeaconBuilder::new(&sender)
        .size_class(SizeClass::Large)
        .recipients(recipients[..MAX_RECIPIENTS].iter().cloned())
        .build(EXPIRY, &mut rng)
        .unwrap();
    for i in 0..MAX_RECIPIENTS as u8 {
        let me = key(&[i.wrapping_add(100); 32]);
        assert_eq!(check(&advert, &me, NOW).unwrap(), Some(sender.key_id()));
    }
}

#[test]
fn expiry_is_inclusive_and_bounded() {
    let sender = key(&[1; 32]);
    let bob = key(&[2; 32]);
    let advert = BeaconBuilder::new(&sender)
        .recipient(bob.recipient())
        .build(EXPIRY, &mut SeededRng::new(b"expiry"))
        .unwrap();
    assert_eq!(check(&advert, &bob, EXPIRY).unwrap(), Some(sender.key_id()));
    assert_eq!(
        check(&advert, &bob, EXPIRY + 1),
        Err(BeaconError::Expired {
            expiry: EXPIRY,
            now: EXPIRY + 1
        })
    );
    assert_eq!(
        check(&advert, &bob, u32::MAX).map(|_| ()),
        Err(BeaconError::Expired {
            expiry: EXPIRY,
            now: u32::MAX
        })
    );
    let early = EXPIRY - MAX_LIFETIME_MINUTES;
    assert_eq!(check(&advert, &bob, early).unwrap(), Some(sender.key_id()));
    assert_eq!(
        check(&advert, &bob, early - 1),
        Err(BeaconError::ExpiryTooFar {
            expiry: EXPIRY,
            now: early - 1
        })
    );
    // A non-recipient is told the same: expiry is checked before any key is tried.
    assert!(matches!(
        check(&advert, &key(&[3; 32]), EXPIRY + 1),
        Err(BeaconError::Expired { .. })
    ));
    assert_eq!(beacon::parse_header(&advert).unwrap().expiry, EXPIRY);
}

/// Within its lifetime a replay is the same bytes, so it is accepted like the original: the
/// module docs say so, and this pins it down.
#[test]
fn a_replay_within_expiry_is_indistinguishable() {
    let sender = key(&[1; 32]);
    let bob = key(&[2; 32]);
    let advert = BeaconBuilder::new(&sender)
        .recipient(bob.recipient())
        .build(EXPIRY, &mut SeededRng::new(b"replay"))
        .unwrap();
    let replayed = advert.clone();
    assert_eq!(
        check(&advert, &bob, NOW).unwrap(),
        check(&replayed, &bob, NOW + 10).unwrap()
    );
    assert!(check(&replayed, &bob, EXPIRY + 1).is_err());
}

/// Every single-bit change of a Small advert, for a recipient and a non-recipient: never
/// accepted (the recipient gets `Ok(None)` or an error, never a sender).
#[test]
fn every_single_bit_flip_is_rejected() {
    let sender = key(&[1; 32]);
    let bob = key(&[2; 32]);
    let carol = key(&[3; 32]);
    let advert = BeaconBuilder::new(&sender)
        .recipient(bob.recipient())
        .recipient(carol.recipient())
        .build(EXPIRY, &mut SeededRng::new(b"bits"))
        .unwrap();
    assert_eq!(check(&advert, &bob, NOW).unwrap(), Some(sender.key_id()));
    for bit in 0..advert.len() * 8 {
        let mut tampered = advert.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        for who in [&bob, &carol] {
            let result = check(&tampered, who, NOW);
            assert!(
                !matches!(result, Ok(Some(_))),
                "bit {bit} flipped was accepted: {result:?}"
            );
        }
    }
}

/// Hand-made byte strings that are not adverts.
#[test]
fn malformed_adverts_are_errors() {
    let bob = key(&[2; 32]);
    let good = BeaconBuilder::new(&key(&[1; 32]))
        .recipient(bob.recipient())
        .build(EXPIRY, &mut SeededRng::new(b"malformed"))
        .unwrap();
    for len in 0..good.len() {
        assert!(
            check(&good[..len], &bob, NOW).is_err(),
            "truncated to {len}"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(check(&longer, &bob, NOW).is_err());
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(
        check(&v2, &bob, NOW),
        Err(BeaconError::UnsupportedVersion(2))
    );
    // A small-order ephemeral key (u = 0 and u = 1) gives an all-zero shared secret.
    for u in [0u8, 1] {
        let mut weak = good.clone();
        weak[6..38].fill(0);
        weak[6] = u;
        assert!(
            matches!(check(&weak, &bob, NOW), Err(BeaconError::Malformed(_))),
            "u = {u}"
        );
    }
    let mut top_bit = good;
    top_bit[37] |= 0x80;
    assert!(matches!(
        check(&top_bit, &bob, NOW),
        Err(BeaconError::Malformed(_))
    ));
}

fn seeds() -> impl Strategy<Value = ([u8; 32], Vec<[u8; 32]>, [u8; 32], [u8; 16])> {
    (
        any::<[u8; 32]>(),
        proptest::collection::vec(any::<[u8; 32]>(), 0..=5),
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Each recipient finds its entry and learns the sender's key id; a non-recipient gets
    /// `None`; the length depends on the class only.
    #[test]
    fn recipients_find_the_sender_and_others_do_not(
        (sender, recipients, outsider, rng) in seeds(),
        large in any::<bool>(),
    ) {
        let class = if large { SizeClass::Large } else { SizeClass::Small };
        let sender = key(&sender);
        let keys: Vec<BeaconKey> = recipients.iter().map(key).collect();
        let advert = BeaconBuilder::new(&sender)
            .size_class(class)
            .recipients(keys.iter().map(BeaconKey::recipient))
            .build(EXPIRY, &mut SeededRng::new(&rng))
            .unwrap();
        prop_assert_eq!(advert.len(), class.advert_len());
        for k in &keys {
            prop_assert_eq!(check(&advert, k, NOW).unwrap(), Some(sender.key_id()));
        }
        let outsider = key(&outsider);
        if !recipients.iter().any(|r| outsider.key_id() == key(r).key_id()) {
            prop_assert_eq!(check(&advert, &outsider, NOW).unwrap(), None);
        }
    }

    /// Two refreshes for the same recipients (and adverts for different numbers of recipients)
    /// have the same length and share nothing a non-recipient could link: no run of 6 equal
    /// bytes anywhere after the 6 fixed header bytes (version, slots, expiry).
    #[test]
    fn refreshes_share_no_linkable_bytes(
        (sender, recipients, _outsider, rng) in seeds(),
        other_rng in any::<[u8; 16]>(),
        fewer in 0usize..=5,
    ) {
        prop_assume!(rng != other_rng);
        let sender = key(&sender);
        let keys: Vec<Recipient> = recipients.iter().map(|s| key(s).recipient()).collect();
        let builder = BeaconBuilder::new(&sender).recipients(keys.iter().cloned());
        let first = builder.build(EXPIRY, &mut SeededRng::new(&rng)).unwrap();
        let second = builder.build(EXPIRY, &mut SeededRng::new(&other_rng)).unwrap();
        let other_count = BeaconBuilder::new(&sender)
            .recipients(keys.iter().take(fewer).cloned())
            .build(EXPIRY, &mut SeededRng::new(&other_rng))
            .unwrap();
        prop_assert_eq!(first.len(), second.len());
        prop_assert_eq!(first.len(), other_count.len());
        prop_assert_eq!(&first[..6], &second[..6]);
        prop_assert!(!share_a_run(&first[6..], &second[6..], 6));
        prop_assert!(!share_a_run(&first[6..], &other_count[6..], 6));
    }

    /// A random bit flip anywhere in a Large advert is never accepted by any recipient.
    #[test]
    fn a_random_bit_flip_is_rejected(
        (sender, recipients, _outsider, rng) in seeds(),
        bit in 0usize..SizeClass::Large.advert_len() * 8,
    ) {
        let sender = key(&sender);
        let keys: Vec<BeaconKey> = recipients.iter().map(key).collect();
        let mut advert = BeaconBuilder::new(&sender)
            .size_class(SizeClass::Large)
            .recipients(keys.iter().map(BeaconKey::recipient))
            .build(EXPIRY, &mut SeededRng::new(&rng))
            .unwrap();
        advert[bit / 8] ^= 1 << (bit % 8);
        for k in &keys {
            prop_assert!(!matches!(check(&advert, k, NOW), Ok(Some(_))));
        }
    }

    /// Whatever the clock says after the expiry, the advert is refused.
    #[test]
    fn expired_adverts_are_refused(late in 1u32..=u32::MAX - EXPIRY, rng in any::<[u8; 16]>()) {
        let sender = key(&[1; 32]);
        let bob = key(&[2; 32]);
        let advert = BeaconBuilder::new(&sender)
            .recipient(bob.recipient())
            .build(EXPIRY, &mut SeededRng::new(&rng))
            .unwrap();
        let is_expired = matches!(
            check(&advert, &bob, EXPIRY + late),
            Err(BeaconError::Expired { .. })
        );
        prop_assert!(is_expired);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes of any length never panic, and are never taken for a beacon.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let bob = key(&[2; 32]);
        prop_assert!(!matches!(check(&bytes, &bob, NOW), Ok(Some(_))));
    }

    /// Random bytes behind a well-formed header (so the cryptography runs) are never taken
    /// for a beacon either.
    #[test]
    fn random_bodies_never_panic(
        slots in 1u8..=MAX_RECIPIENTS as u8,
        expiry_ahead in 0u32..=MAX_LIFETIME_MINUTES,
        rest in proptest::collection::vec(any::<u8>(), 566),
    ) {
        let bob = key(&[2; 32]);
        let mut advert = vec![beacon::VERSION, slots];
        advert.extend_from_slice(&(NOW + expiry_ahead).to_be_bytes());
        let len = 38 + usize::from(slots) * 24 + 48;
        advert.extend_from_slice(&rest[..len - 6]);
        advert[37] &= 0x7f;
        let result = check(&advert, &bob, NOW);
        prop_assert!(matches!(result, Ok(None) | Err(BeaconError::Malformed(_))), "{:?}", result);
    }
}
