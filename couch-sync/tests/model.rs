//! Property test: random sequences of writes, conflicting `new_edits=false` inserts and deletes
//! give the same winners, conflicts and `_changes` as a simple in-memory model of CouchDB's rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use couch_sync::{ChangesQuery, DocUpdate, GetOptions, RevId, Revisions, Store, StoreConfig};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// One node of the model's tree.
#[derive(Clone, Debug)]
struct Node {
    parent: Option<RevId>,
    deleted: bool,
}

#[derive(Default, Debug)]
struct Model {
    docs: BTreeMap<String, BTreeMap<RevId, Node>>,
    seq: u64,
    last_change: BTreeMap<String, u64>,
}

impl Model {
    fn leaves(&self, id: &str) -> Vec<RevId> {
        let Some(tree) = self.docs.get(id) else {
            return vec![];
        };
        let parents: BTreeSet<&RevId> = tree.values().filter_map(|n| n.parent.as_ref()).collect();
        let mut leaves: Vec<RevId> = tree
            .keys()
            .filter(|r| !parents.contains(r))
            .cloned()
            .collect();
        // CouchDB's ranking: non-deleted first, then highest revision.
        leaves.sort_by(|a, b| (!tree[b].deleted, b).cmp(&(!tree[a].deleted, a)));
        leaves
    }

    fn touch(&mut self, id: &str) {
        self.seq += 1;
        self.last_change.insert(id.to_owned(), self.seq);
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Edit with new_edits=true on top of leaf `leaf % leaves` (or no rev), maybe deleting.
    Edit {
        doc: u8,
        leaf: Option<u8>,
        value: u8,
        delete: bool,
    },
    /// A replicated branch: `len` revisions on top of an existing revision (or from scratch).
    Replicate {
        doc: u8,
        base: Option<u8>,
        len: u8,
        salt: u16,
        delete: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..4,
            proptest::option::of(0u8..4),
            0u8..3,
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(doc, leaf, value, delete)| Op::Edit {
                doc,
                leaf,
                value,
                delete
            }),
        (
            0u8..4,
            proptest::option::of(0u8..8),
            1u8..4,
            any::<u16>(),
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(doc, base, len, salt, delete)| Op::Replicate {
                doc,
                base,
                len,
                salt,
                delete
            }),
    ]
}

fn body(value: u8) -> Map<String, Value> {
    json!({"v": value}).as_object().unwrap().clone()
}

fn apply(store_db: &couch_sync::Database, model: &mut Model, op: &Op) {
    match op {
        Op::Edit {
            doc,
            leaf,
            value,
            delete,
        } => {
            let id = format!("d{doc}");
            let leaves = model.leaves(&id);
            let rev = leaf.and_then(|l| leaves.get(l as usize % leaves.len().max(1)).cloned());
            let update = DocUpdate {
                rev: rev.clone(),
                deleted: *delete,
                body: body(*value),
                ..DocUpdate::default()
            };
            let result = store_db.put(Some(&id), update, true);
            // Model: CouchDB's acceptance rule.
            let tree = model.docs.get(&id);
            let parent = match (&rev, tree) {
                (Some(r), Some(_)) if leaves.contains(r) => Ok(Some(r.clone())),
                (Some(_), _) => Err(()),
                (None, None) => Ok(None),
                (None, Some(t)) if t.is_empty() => Ok(None),
                (None, Some(t)) => {
                    let winner = leaves.first().cloned().unwrap();
                    if t[&winner].deleted {
                        Ok(Some(winner))
                    } else {
                        Err(())
                    }
                }
            };
            match (parent, result) {
                (Ok(parent), Ok((_, new_rev))) => {
                    // CouchDB's revision id for the edit.
                    let expected = RevId::couchdb(parent.as_ref(), *delete, &body(*value), &[]);
                    assert_eq!(new_rev, expected, "deterministic revision id");
                    let tree = model.docs.entry(id.clone()).or_default();
                    if tree.contains_key(&new_rev) {
                        return; // identical edit replayed: no change
                    }
                    tree.insert(
                        new_rev,
                        Node {
                            parent,
                            deleted: *delete,
                        },
                    );
                    model.touch(&id);
                }
                (Err(()), Err(e)) => assert_eq!(e.status(), 409, "{e}"),
                (p, r) => panic!("model says {p:?}, store says {r:?} for {op:?}"),
            }
        }
        Op::Replicate {
            doc,
            base,
            len,
            salt,
            delete,
        } => {
            let id = format!("d{doc}");
            let existing: Vec<RevId> = model
                .docs
                .get(&id)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            let base_rev =
                base.and_then(|b| existing.get(b as usize % existing.len().max(1)).cloned());
            let start_pos = base_rev.as_ref().map_or(0, RevId::pos);
            let mut path: Vec<RevId> = Vec::new();
            for i in 0..*len as u64 {
                let pos = start_pos + i + 1;
                path.push(RevId::new(pos, &format!("{:04x}{:02x}{:x}", salt, i, pos)).unwrap());
            }
            path.reverse();
            let mut ids: Vec<String> = path.iter().map(|r| r.hash().to_owned()).collect();
            if let Some(b) = &base_rev {
                ids.push(b.hash().to_owned());
            }
            let leaf = path[0].clone();
            let update = DocUpdate {
                rev: Some(leaf.clone()),
                deleted: *delete,
                body: body(7),
                revisions: Some(Revisions {
                    start: leaf.pos(),
                    ids,
                }),
                ..DocUpdate::default()
            };
            store_db.put(Some(&id), update, false).unwrap();
            let tree = model.docs.entry(id.clone()).or_default();
            if tree.contains_key(&leaf) {
                return;
            }
            let mut parent = base_rev;
            for (k, rev) in path.iter().rev().enumerate() {
                let is_leaf = k == path.len() - 1;
                tree.entry(rev.clone()).or_insert(Node {
                    parent: parent.clone(),
                    deleted: is_leaf && *delete,
                });
                parent = Some(rev.clone());
            }
            model.touch(&id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let db = store.create_db("m").unwrap();
        let mut model = Model::default();
        for op in &ops {
            apply(&db, &mut model, op);
        }
        let mut doc_count = 0;
        let mut del_count = 0;
        for id in model.docs.keys() {
            let leaves = model.leaves(id);
            let winner = &leaves[0];
            let tree = &model.docs[id];
            if tree[winner].deleted { del_count += 1 } else { doc_count += 1 }
            let opts = GetOptions { rev: Some(winner.clone()), conflicts: true, deleted_conflicts: true, ..GetOptions::default() };
            let got = db.get(id, &opts).unwrap();
            prop_assert_eq!(&got.rev, winner);
            let conflicts: Vec<String> = leaves[1..].iter().filter(|r| !tree[*r].deleted).map(ToString::to_string).collect();
            let dead: Vec<String> = leaves[1..].iter().filter(|r| tree[*r].deleted).map(ToString::to_string).collect();
            let got_conflicts: Vec<String> = got.json.get("_conflicts").map(|v| serde_json::from_value(v.clone()).unwrap()).unwrap_or_default();
            let got_dead: Vec<String> = got.json.get("_deleted_conflicts").map(|v| serde_json::from_value(v.clone()).unwrap()).unwrap_or_default();
            prop_assert_eq!(got_conflicts, conflicts);
            prop_assert_eq!(got_dead, dead);
            // Default read: the winner, or 404 deleted.
            match db.get(id, &GetOptions::default()) {
                Ok(doc) => { prop_assert!(!tree[winner].deleted); prop_assert_eq!(&doc.rev, winner); }
                Err(e) => { prop_assert!(tree[winner].deleted); prop_assert_eq!(e.reason(), "deleted"); }
            }
        }
        let info = db.info().unwrap();
        prop_assert_eq!((info.doc_count, info.doc_del_count, info.update_seq), (doc_count, del_count, model.seq));
        // _changes: every document once, ordered by its last change, with all leaves.
        let changes = db.changes(&ChangesQuery { all_docs: true, ..ChangesQuery::default() }, None).unwrap();
        let mut expected: Vec<(&String, &u64)> = model.last_change.iter().collect();
        expected.sort_by_key(|(_, seq)| **seq);
        let got: Vec<(String, u64)> = changes.results.iter().map(|c| (c.id.clone(), c.seq)).collect();
        let want: Vec<(String, u64)> = expected.iter().map(|(id, seq)| ((*id).clone(), **seq)).collect();
        prop_assert_eq!(got, want);
        for change in &changes.results {
            prop_assert_eq!(&change.changes, &model.leaves(&change.id));
        }
        prop_assert_eq!(changes.last_seq, model.seq);
    }
}
