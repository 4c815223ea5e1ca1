//! The store without HTTP: durable single-document writes and 500-document `_bulk_docs` batches,
//! to separate storage cost from HTTP cost in the figures of `vs_pouchdb`.
//!
//! ```text
//! cargo bench -p couch-sync --bench store
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use couch_sync::{DocUpdate, Store, StoreConfig};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

fn body(i: u64) -> serde_json::Map<String, serde_json::Value> {
    json!({"type": "reading", "sensor": format!("s-{}", i % 97), "value": i as f64 * 0.25,
           "unit": "celsius", "tags": ["a", "b", "c"], "note": "the quick brown fox jumps over the lazy dog, twice over"})
    .as_object()
    .unwrap()
    .clone()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let db = store.create_db("bench").unwrap();
    let mut group = c.benchmark_group("store");
    group.sample_size(20);
    let mut n = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_durable", |b| {
        b.iter(|| {
            n += 1;
            db.put(
                Some(&format!("p{n:09}")),
                DocUpdate {
                    body: body(n),
                    ..DocUpdate::default()
                },
                true,
            )
            .unwrap()
        })
    });
    group.throughput(Throughput::Elements(500));
    group.bench_function("bulk_500", |b| {
        b.iter_batched(
            || {
                (0..500)
                    .map(|_| {
                        n += 1;
                        Ok(DocUpdate {
                            id: Some(format!("b{n:09}")),
                            body: body(n),
                            ..DocUpdate::default()
                        })
                    })
                    .collect::<Vec<_>>()
            },
            |docs| db.bulk_docs(docs, true).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
