//! The store without HTTP: durable single-document writes and `_bulk_docs` batches of 50 and 500
//! (without and with one Mango index), to separate storage cost from HTTP cost in the figures of
//! `vs_pouchdb` and `queries`.
//!
//! ```text
//! cargo bench -p couch-sync --bench store
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use couch_sync::{DocUpdate, Store, StoreConfig};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

fn body(i: u64) -> serde_json::Map<String, serde_json::Value> {
    // `value` in a scattered order, as sensor readings come (an index on it is not appended to).
    json!({"type": "reading", "sensor": format!("s-{}", i % 97), "value": ((i * 7919) % 10007) as f64 * 0.25,
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
    // `_bulk_docs` batches of 50 and 500 documents, into a database without an index and into
    // one with a Mango JSON index on `value` (a design document as `POST /db/_index` writes it).
    // A batch of 50 updates the index in its own transaction: the incremental cost per written
    // document. A batch of 500 (more than 64) leaves the index to the next `_find`, which this
    // does not run: its catch-up is measured by the `queries` bench (first query after a load).
    let indexed = store.create_db("indexed").unwrap();
    let ddoc = json!({"language": "query", "views": {"value": {
        "map": {"fields": {"value": "asc"}, "partial_filter_selector": {}},
        "reduce": "_count", "options": {"def": {"fields": ["value"]}}}}});
    indexed
        .put(
            Some("_design/by-value"),
            DocUpdate {
                body: ddoc.as_object().unwrap().clone(),
                ..DocUpdate::default()
            },
            true,
        )
        .unwrap();
    for size in [50u64, 500] {
        for (name, target) in [("", &db), ("_one_index", &indexed)] {
            group.throughput(Throughput::Elements(size));
            group.bench_function(format!("bulk_{size}{name}"), |b| {
                b.iter_batched(
                    || {
                        (0..size)
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
                    |docs| target.bulk_docs(docs, true).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
