//! What beacons cost: building one (1 and 20 recipients), and checking a 20-slot advert as a
//! recipient whose entry is in the last slot (the worst case) and as a non-recipient.
//!
//! Run: `cargo bench -p adhoc-wireless --bench beacons`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::hint::black_box;

use adhoc_wireless::beacon::{
    self, BeaconBuilder, BeaconKey, BeaconRng, MAX_RECIPIENTS, SizeClass, check,
};
use criterion::{Criterion, criterion_group, criterion_main};

const NOW: u32 = 29_000_000;
const EXPIRY: u32 = NOW + 15;

fn key(seed: u8) -> BeaconKey {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[seed; 32]);
    BeaconKey::from_pkcs8(&der).unwrap()
}

/// A deterministic source, to pick an advert whose target entry landed in the last slot.
struct Counter(u64);

impl BeaconRng for Counter {
    fn fill(&mut self, dest: &mut [u8]) -> beacon::Result<()> {
        for chunk in dest.chunks_mut(32) {
            let digest = ring::digest::digest(&ring::digest::SHA256, &self.0.to_be_bytes());
            chunk.copy_from_slice(&digest.as_ref()[..chunk.len()]);
            self.0 += 1;
        }
        Ok(())
    }
}

fn beacons(c: &mut Criterion) {
    let sender = key(1);
    let recipients: Vec<BeaconKey> = (0..MAX_RECIPIENTS as u8).map(|i| key(100 + i)).collect();
    let outsider = key(99);
    let mut rng = ring::rand::SystemRandom::new();

    let one = BeaconBuilder::new(&sender).recipient(recipients[0].recipient());
    c.bench_function("build: 1 recipient, Small (206 bytes)", |b| {
        b.iter(|| one.build(black_box(EXPIRY), &mut rng).unwrap())
    });
    let twenty = BeaconBuilder::new(&sender)
        .size_class(SizeClass::Large)
        .recipients(recipients.iter().map(BeaconKey::recipient));
    c.bench_function("build: 20 recipients, Large (566 bytes)", |b| {
        b.iter(|| twenty.build(black_box(EXPIRY), &mut rng).unwrap())
    });

    // An advert of 20 entries in which the target's entry is the last one scanned.
    let target = &recipients[7];
    let advert = (0u64..)
        .map(|seed| twenty.build(EXPIRY, &mut Counter(seed << 32)).unwrap())
        .find(|advert| {
            beacon::open(advert, target, NOW)
                .unwrap()
                .map(|(_, slot)| slot)
                == Some(MAX_RECIPIENTS - 1)
        })
        .unwrap();
    c.bench_function("check: 20 entries, recipient in the last slot", |b| {
        b.iter(|| {
            assert!(check(black_box(&advert), target, NOW).unwrap().is_some());
        })
    });
    c.bench_function("check: 20 entries, not a recipient", |b| {
        b.iter(|| {
            assert!(check(black_box(&advert), &outsider, NOW).unwrap().is_none());
        })
    });
    let small = one.build(EXPIRY, &mut rng).unwrap();
    c.bench_function("check: 5 slots, not a recipient", |b| {
        b.iter(|| {
            assert!(check(black_box(&small), &outsider, NOW).unwrap().is_none());
        })
    });
}

criterion_group!(benches, beacons);
criterion_main!(benches);
