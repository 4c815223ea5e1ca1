//! Convergence: 3–5 in-process replicas, random creates, updates, deletes and concurrent edits,
//! random pairwise replications in random order, then a full exchange. Every replica must end with
//! identical documents, winners and conflict sets (`couchdb` policy), and with no conflicts and
//! identical revision trees (`last-writer-wins`, with clocks that disagree by hours).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use couch_sync::clock::SimulatedClock;
use couch_sync::replicate::{Endpoint, Replication, ReplicationOptions};
use couch_sync::{
    ConflictPolicy, Database, DocUpdate, GetOptions, OpenRev, OpenRevs, Store, StoreConfig,
};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
enum Op {
    /// Replica `r` writes document `doc`: creates it, edits its winner or a random leaf, or deletes.
    Write {
        r: usize,
        doc: u8,
        kind: u8,
        value: u8,
    },
    /// Replicate from one replica to another.
    Sync { from: usize, to: usize },
    /// Time passes on one replica's clock (which may run far behind the others).
    Tick { r: usize, millis: u32 },
}

fn ops(replicas: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        5 => (0..replicas, 0u8..4, 0u8..4, any::<u8>()).prop_map(|(r, doc, kind, value)| Op::Write { r, doc, kind, value }),
        3 => (0..replicas, 0..replicas).prop_map(|(from, to)| Op::Sync { from, to }),
        1 => (0..replicas, 1u32..5_000).prop_map(|(r, millis)| Op::Tick { r, millis }),
    ];
    proptest::collection::vec(op, 1..40)
}

struct Replica {
    _dir: tempfile::TempDir,
    db: Database,
    clock: SimulatedClock,
}

/// Clock offsets in hours from a common "now": they disagree wildly, as device clocks do.
const SKEW_HOURS: [i64; 5] = [0, 4, -3, 26, -48];

fn replicas(n: usize, policy: ConflictPolicy) -> Vec<Replica> {
    (0..n)
        .map(|i| {
            let dir = tempfile::tempdir().unwrap();
            let clock = SimulatedClock::new((1_700_000_000_000 + SKEW_HOURS[i] * 3_600_000) as u64);
            let config = StoreConfig {
                clock: Arc::new(clock.clone()),
                ..StoreConfig::default()
            };
            let store = Store::open(dir.path(), config).unwrap();
            let db = store.create_db("c").unwrap();
            db.set_conflict_policy(policy).unwrap();
            Replica {
                _dir: dir,
                db,
                clock,
            }
        })
        .collect()
}

fn write(rep: &Replica, doc: u8, kind: u8, value: u8) {
    let id = format!("d{doc}");
    let body = json!({"v": value}).as_object().unwrap().clone();
    let leaves = match rep
        .db
        .open_revs(&id, &OpenRevs::All, &GetOptions::default())
    {
        Ok(l) => l
            .into_iter()
            .filter_map(|r| match r {
                OpenRev::Ok(d) if !d.deleted => Some(d.rev),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    let update = match kind {
        // Edit the winner (or create).
        0 | 1 => DocUpdate {
            rev: leaves.first().cloned(),
            body,
            ..DocUpdate::default()
        },
        // Edit a losing leaf, if any (a deliberate edit of a conflict branch).
        2 => DocUpdate {
            rev: leaves.last().cloned(),
            body,
            ..DocUpdate::default()
        },
        _ => DocUpdate {
            rev: leaves.first().cloned(),
            deleted: true,
            ..DocUpdate::default()
        },
    };
    if kind == 3 && leaves.is_empty() {
        return;
    }
    // A conflict (creating what exists, racing an edit) is a normal outcome: skip it.
    let _ = rep.db.put(Some(&id), update, true);
}

async fn sync(from: &Replica, to: &Replica) -> u64 {
    let rep = Replication::new(
        Endpoint::Local(from.db.clone()),
        Endpoint::Local(to.db.clone()),
        ReplicationOptions::default(),
    );
    rep.run().await.unwrap().progress.docs_written
}

/// What a replica shows: per document, the winner with conflicts, and every leaf with its path.
fn view(db: &Database) -> BTreeMap<String, (Value, Vec<Value>)> {
    let mut out = BTreeMap::new();
    let changes = db
        .changes(&couch_sync::ChangesQuery::default(), None)
        .unwrap();
    for c in changes.results {
        let opts = GetOptions {
            conflicts: true,
            deleted_conflicts: true,
            revs: true,
            ..GetOptions::default()
        };
        let winner = db
            .get(&c.id, &opts)
            .map(|d| Value::Object(d.json))
            .unwrap_or_else(|e| json!(e.reason()));
        let leaves = db
            .open_revs(
                &c.id,
                &OpenRevs::All,
                &GetOptions {
                    revs: true,
                    ..GetOptions::default()
                },
            )
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                OpenRev::Ok(d) => Some(Value::Object(d.json)),
                OpenRev::Missing(_) => None,
            })
            .collect();
        out.insert(c.id, (winner, leaves));
    }
    out
}

fn run(n: usize, ops: &[Op], policy: ConflictPolicy) -> BTreeMap<String, (Value, Vec<Value>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reps = replicas(n, policy);
        run_on(&reps, ops, policy).await
    })
}

async fn run_on(
    reps: &[Replica],
    ops: &[Op],
    policy: ConflictPolicy,
) -> BTreeMap<String, (Value, Vec<Value>)> {
    let n = reps.len();
    {
        for op in ops {
            match op {
                Op::Write {
                    r,
                    doc,
                    kind,
                    value,
                } => write(&reps[*r], *doc, *kind, *value),
                Op::Sync { from, to } if from != to => {
                    sync(&reps[*from], &reps[*to]).await;
                }
                Op::Sync { .. } => {}
                Op::Tick { r, millis } => {
                    let c = &reps[*r].clock;
                    c.set_millis(couch_sync::clock::Clock::now_millis(c) + u64::from(*millis));
                }
            }
        }
        // Full exchange until nothing moves.
        for round in 0.. {
            assert!(round < 10, "replication did not quiesce");
            let mut moved = 0;
            for from in 0..n {
                for to in 0..n {
                    if from != to {
                        moved += sync(&reps[from], &reps[to]).await;
                    }
                }
            }
            if moved == 0 {
                break;
            }
        }
        let first = view(&reps[0].db);
        for (i, rep) in reps.iter().enumerate().skip(1) {
            assert_eq!(view(&rep.db), first, "replica {i} differs from replica 0");
        }
        if policy == ConflictPolicy::LastWriterWins {
            for (id, (winner, leaves)) in &first {
                assert!(
                    winner.get("_conflicts").is_none(),
                    "{id} still in conflict: {winner}"
                );
                let live = leaves
                    .iter()
                    .filter(|l| l.get("_deleted").is_none())
                    .count();
                assert!(live <= 1, "{id} has {live} live leaves");
                // Resolution tombstones (unstamped) are deterministic: replicas that resolved
                // the same conflict on their own made the same one, so no revision carries two.
                let mut parents: Vec<&Value> = leaves
                    .iter()
                    .filter(|l| l.get("_deleted").is_some() && l.get("couch_sync_hlc").is_none())
                    .filter_map(|l| l["_revisions"]["ids"].get(1))
                    .collect();
                let before = parents.len();
                parents.sort_by_key(|p| p.to_string());
                parents.dedup();
                assert_eq!(
                    parents.len(),
                    before,
                    "{id}: a revision has two tombstones: {leaves:?}"
                );
            }
        }
        first
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn couchdb_policy_converges((n, ops) in (3usize..=5).prop_flat_map(|n| (Just(n), ops(n)))) {
        run(n, &ops, ConflictPolicy::CouchDb);
    }

    #[test]
    fn last_writer_wins_converges_without_conflicts((n, ops) in (3usize..=5).prop_flat_map(|n| (Just(n), ops(n)))) {
        run(n, &ops, ConflictPolicy::LastWriterWins);
    }
}

/// Under last-writer-wins an edit beats everything it was made after, even on a device whose
/// clock is two days behind: the slow replica edits the version it received from a device whose
/// clock runs a day ahead, and its edit wins over that version and over a concurrent edit made
/// elsewhere — where raw clock time would have made it lose to both.
#[test]
fn causally_later_edit_wins_despite_a_slow_clock() {
    let (fast, other, slow) = (3, 1, 4); // +26 h, +4 h, −48 h
    let ops = [
        Op::Write {
            r: fast,
            doc: 1,
            kind: 0,
            value: 1,
        },
        Op::Sync {
            from: fast,
            to: other,
        },
        Op::Sync {
            from: fast,
            to: slow,
        },
        Op::Write {
            r: other,
            doc: 1,
            kind: 0,
            value: 5,
        }, // concurrent branch, +4 h clock
        Op::Write {
            r: fast,
            doc: 1,
            kind: 0,
            value: 2,
        }, // concurrent branch, +26 h clock
        Op::Sync {
            from: fast,
            to: slow,
        },
        Op::Write {
            r: slow,
            doc: 1,
            kind: 0,
            value: 7,
        }, // edits v2 with a −48 h clock
    ];
    let view = run(5, &ops, ConflictPolicy::LastWriterWins);
    let (winner, _) = &view["d1"];
    assert_eq!(winner["v"], 7, "{winner}");
    // The same history under CouchDB's rule keeps the conflict instead.
    let view = run(5, &ops, ConflictPolicy::CouchDb);
    assert!(view["d1"].0.get("_conflicts").is_some());
}
