//! Lost-device revocation, the hub's side of it: keeping every revocation a device has seen in
//! force, whatever happens to the policy database.
//!
//! A revocation is a policy document `revoked:<key id>` (acls-and-groups' [`Revocation`]) in
//! `hub-policy`, which replicates between the person's devices. From it:
//!
//! * the policy refuses the key everything ([`acls_and_groups::Reason::Revoked`]), whatever
//!   groups and ACLs say, so a conflicting edit of a group or ACL document by the revoked
//!   device cannot let it back in;
//! * the listener refuses its client certificate in the TLS handshake and cuts its open
//!   connections ([`crate::tls`], [`crate::listener`]);
//! * the replication manager stops replicating with it, pairing refuses it, and the status page
//!   lists it under "Revoked".
//!
//! The set only grows, on every device. The policy merges revocations as a union; the hub never
//! deletes a revocation document itself, and it also remembers every revocation it has seen in
//! a `_local` document of `hub-policy` ([`REMEMBERED_DOC`]: `_local` documents do not
//! replicate). When a revocation document goes missing from the database — deleted through the
//! CouchDB API, or its deletion replicated in — the next reload puts it back
//! ([`reassert`]). A revocation document that another device replicated in applies even when
//! some other policy document is invalid ([`revocations_in`]).
//!
//! This module is IO on one `Database` and pure policy code; the hub (`hub.rs`) calls it when it
//! saves or reloads the policy.

use std::collections::HashMap;

use acls_and_groups::{KeyId, Member, Policy, PolicyDocument, Revocation};
use anyhow::Result;
use couch_sync::{Database, DocUpdate};
use serde_json::{Map, Value, json};

/// The `_local` document of `hub-policy` in which a hub remembers every revocation it has seen
/// (`{"revocations": [<revocation documents>]}`); it never leaves the device.
pub const REMEMBERED_DOC: &str = "_local/thali-revocations";

/// The revocations among `documents` (policy documents as stored), each parsed on its own:
/// invalid documents, and documents of other types, are skipped.
pub fn revocations_in<'a>(documents: impl IntoIterator<Item = &'a Value>) -> Vec<Revocation> {
    documents
        .into_iter()
        .filter(|doc| doc.get("type").and_then(Value::as_str) == Some("revocation"))
        .filter_map(|doc| match PolicyDocument::from_value(doc) {
            Ok(PolicyDocument::Revocation(r)) => Some(r),
            _ => None,
        })
        .collect()
}

/// The revocations this device remembers (none if the record is missing or unreadable).
pub fn remembered(db: &Database) -> Vec<Revocation> {
    match db.get_local(REMEMBERED_DOC) {
        Ok(body) => revocations_in(
            body.get("revocations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        ),
        Err(_) => Vec::new(),
    }
}

/// Records `policy`'s revocations in [`REMEMBERED_DOC`], if that adds anything to what is
/// remembered. Returns whether it wrote.
pub fn remember(db: &Database, policy: &Policy) -> Result<bool> {
    let mut all = Policy::new(policy.owner());
    let before = remembered(db);
    all.merge_revocations(&before)?;
    let added = all.merge_revocations(policy.revocations())?;
    if added == 0 && before.len() == all.revocations().len() {
        return Ok(false);
    }
    let list: Vec<Value> = all
        .revocations()
        .map(|r| PolicyDocument::Revocation(r.clone()).to_value())
        .collect();
    let mut body = Map::new();
    body.insert("revocations".into(), Value::Array(list));
    db.put_local(REMEMBERED_DOC, body, None)?;
    Ok(true)
}

/// Puts back every revocation of `policy` that `docs` (the live policy documents by id) lacks,
/// or holds as something else than a revocation of that key. Returns how many it wrote.
pub fn reassert(db: &Database, policy: &Policy, docs: &HashMap<String, Value>) -> Result<usize> {
    let mut written = 0;
    for revocation in policy.revocations() {
        let id = revocation.doc_id();
        let current = docs.get(&id);
        let intact = current.is_some_and(|doc| {
            matches!(PolicyDocument::from_value(doc),
                Ok(PolicyDocument::Revocation(r)) if r.key == revocation.key)
        });
        if intact {
            continue;
        }
        let rev = current
            .and_then(|c| c.get("_rev"))
            .and_then(Value::as_str)
            .map(str::parse)
            .transpose()?;
        let mut body = match PolicyDocument::Revocation(revocation.clone()).to_value() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        body.remove("_id");
        db.put(
            Some(&id),
            DocUpdate {
                rev,
                body,
                ..DocUpdate::default()
            },
            true,
        )?;
        tracing::warn!(key = %revocation.key, "a revocation was missing from the policy database; put it back");
        written += 1;
    }
    Ok(written)
}

/// Whether `policy` names `key` anywhere: a group member, or an entry of a grant or view grant
/// list (a paired device, a friend, an app), or a revocation.
pub fn named_in(policy: &Policy, key: &KeyId) -> bool {
    let member = Member::Key(*key);
    policy.revocation(key).is_some()
        || policy.groups().any(|g| g.members.contains(&member))
        || policy.acls().any(|acl| {
            acl.read.contains(&member)
                || acl.write.contains(&member)
                || acl.admin.contains(&member)
                || acl.views.values().any(|list| list.contains(&member))
        })
}

/// One revocation as the status API shows it: the key, its name, who revoked it and when.
pub fn status_entry(revocation: &Revocation, name_of: impl Fn(&KeyId) -> Option<String>) -> Value {
    json!({
        "key_id": revocation.key.to_string(),
        "name": name_of(&revocation.key),
        "by": revocation.by.to_string(),
        "by_name": name_of(&revocation.by),
        "at": revocation.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use couch_sync::{Store, StoreConfig};

    fn key(n: u8) -> KeyId {
        KeyId::from_digest([n; 32])
    }

    fn policy_db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        store.create_db("hub-policy").unwrap();
        let db = store.db("hub-policy").unwrap();
        (dir, db)
    }

    fn live_docs(db: &Database) -> HashMap<String, Value> {
        let all = db
            .all_docs(
                &couch_sync::AllDocsQuery {
                    include_docs: true,
                    ..Default::default()
                },
                None,
            )
            .unwrap();
        all.rows
            .into_iter()
            .filter_map(|row| match row {
                couch_sync::AllDocsRow::Doc {
                    id, doc: Some(doc), ..
                } => Some((id, doc)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_deleted_revocation_document_is_put_back_from_memory() {
        let (_dir, db) = policy_db();
        let mut policy = Policy::new(key(1));
        policy
            .revoke_key(Revocation::new(key(3), key(1), 7))
            .unwrap();
        // Saved, and remembered.
        assert_eq!(reassert(&db, &policy, &live_docs(&db)).unwrap(), 1);
        assert!(remember(&db, &policy).unwrap());
        assert!(!remember(&db, &policy).unwrap(), "nothing new to remember");
        let docs = live_docs(&db);
        let doc = &docs[&format!("revoked:{}", key(3))];
        // Someone deletes it.
        let rev = doc["_rev"].as_str().unwrap().parse().unwrap();
        db.put(
            Some(&format!("revoked:{}", key(3))),
            DocUpdate {
                rev: Some(rev),
                deleted: true,
                ..DocUpdate::default()
            },
            true,
        )
        .unwrap();
        let docs = live_docs(&db);
        assert!(revocations_in(docs.values()).is_empty());
        // A reload that starts from the database alone still knows, from memory.
        let mut reloaded = Policy::from_documents(key(1), docs.values()).unwrap();
        assert!(reloaded.revocation(&key(3)).is_none());
        reloaded.merge_revocations(&remembered(&db)).unwrap();
        assert_eq!(
            reloaded.revocation(&key(3)),
            Some(&Revocation::new(key(3), key(1), 7))
        );
        assert_eq!(reassert(&db, &reloaded, &docs).unwrap(), 1);
        let back = revocations_in(live_docs(&db).values());
        assert_eq!(back, [Revocation::new(key(3), key(1), 7)]);
        assert_eq!(reassert(&db, &reloaded, &live_docs(&db)).unwrap(), 0);
    }

    #[test]
    fn an_overwritten_revocation_document_is_put_back() {
        let (_dir, db) = policy_db();
        let mut policy = Policy::new(key(1));
        policy
            .revoke_key(Revocation::new(key(3), key(1), 7))
            .unwrap();
        reassert(&db, &policy, &live_docs(&db)).unwrap();
        let id = format!("revoked:{}", key(3));
        let rev = live_docs(&db)[&id]["_rev"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut body = Map::new();
        body.insert("type".into(), json!("group"));
        db.put(
            Some(&id),
            DocUpdate {
                rev: Some(rev),
                body,
                ..DocUpdate::default()
            },
            true,
        )
        .unwrap();
        // The other documents no longer load, but the revocations still do (from memory
        // here; from their documents where those are intact).
        let docs = live_docs(&db);
        assert!(Policy::from_documents(key(1), docs.values()).is_err());
        assert_eq!(reassert(&db, &policy, &docs).unwrap(), 1);
        assert_eq!(
            revocations_in(live_docs(&db).values()),
            [Revocation::new(key(3), key(1), 7)]
        );
    }

    #[test]
    fn named_in_finds_members_grantees_and_revoked_keys() {
        let mut policy = Policy::new(key(1));
        policy
            .add_member(&"me".parse().unwrap(), Member::Key(key(2)))
            .unwrap();
        policy
            .grant(
                &"photos".parse().unwrap(),
                acls_and_groups::Right::Read,
                Member::Key(key(4)),
            )
            .unwrap();
        policy
            .grant_view(
                &"photos".parse().unwrap(),
                &"d/v".parse().unwrap(),
                Member::Key(key(5)),
            )
            .unwrap();
        policy
            .merge_revocation(Revocation::new(key(6), key(1), 0))
            .unwrap();
        for n in [2, 4, 5, 6] {
            assert!(named_in(&policy, &key(n)), "{n}");
        }
        assert!(!named_in(&policy, &key(9)));
    }
}
