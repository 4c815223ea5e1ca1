//! Revoked keys: a key that may do nothing, whatever groups and ACLs say, and that no later
//! edit of the policy gives back.
//!
//! Each revocation is its own policy document (`revoked:<key id>`, see the crate documentation),
//! so no edit of a group or an ACL document — concurrent, conflicting, or written by the revoked
//! device itself — can undo it. Within a [`Policy`] the revocations are a set merged as a
//! union: [`Policy::insert`] of a revocation adds to it, [`Policy::remove`] of a revocation id
//! does nothing, and two revocations of the same key merge into the earlier one
//! ([`Revocation::merge`]). The set only grows, and replicas that have seen the same revocation
//! documents, in any order, hold the same set.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use public_key_identity::KeyId;

use crate::error::{Error, Result};
use crate::limits::MAX_REVOCATIONS;
use crate::policy::Policy;
use crate::principal::Principal;

/// The prefix of a revocation document's id: `revoked:<key id>`.
pub const REVOCATION_PREFIX: &str = "revoked:";

/// A revoked key: who revoked it, and when. Stored as the JSON document `revoked:<key id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Revocation {
    /// The key that may do nothing any more.
    pub key: KeyId,
    /// The device that revoked it (its key id).
    pub by: KeyId,
    /// When, in milliseconds since the Unix epoch, by the revoking device's clock (for people
    /// to read; no decision depends on it).
    pub at: u64,
}

impl Revocation {
    /// A revocation of `key` by the device `by` at `at` (milliseconds since the Unix epoch).
    pub fn new(key: KeyId, by: KeyId, at: u64) -> Revocation {
        Revocation { key, by, at }
    }

    /// The CouchDB document id this revocation is stored under: `revoked:<key id>`.
    pub fn doc_id(&self) -> String {
        format!("{REVOCATION_PREFIX}{}", self.key)
    }

    /// Two records of the revocation of the same key (made on two devices before either heard
    /// of the other's) as one: the earlier, and of two at the same time the one whose revoking
    /// key id sorts first. The rule is commutative, associative and idempotent, so every
    /// replica ends with the same record whatever order the documents arrive in. `other` of
    /// another key leaves `self` as it is.
    pub fn merge(&self, other: &Revocation) -> Revocation {
        if other.key != self.key {
            return self.clone();
        }
        match (self.at, self.by).cmp(&(other.at, other.by)) {
            Ordering::Greater => other.clone(),
            Ordering::Less | Ordering::Equal => self.clone(),
        }
    }
}

impl Policy {
    /// Revokes `revocation.key`: from now on it may do nothing (see [`Policy::may`]), whatever
    /// groups and ACLs list it, and no change of the policy gives its rights back. Returns
    /// whether anything changed (a key revoked before stays revoked, with the earlier record).
    ///
    /// Refuses the owner's own key: a device is revoked from another of the person's devices.
    /// (A policy *loaded* with a revocation of its owner — a device learning that it was
    /// revoked — keeps it, but its owner still may do everything on it.)
    pub fn revoke_key(&mut self, revocation: Revocation) -> Result<bool> {
        if revocation.key == self.owner() {
            return Err(Error::RevokingOwner {
                key: revocation.key,
            });
        }
        self.merge_revocation(revocation)
    }

    /// Adds one revocation to the set (the union; [`Revocation::merge`] for a key already
    /// there), without the owner check of [`Policy::revoke_key`]. Returns whether anything
    /// changed.
    pub fn merge_revocation(&mut self, revocation: Revocation) -> Result<bool> {
        let merged = match self.revoked.get(&revocation.key) {
            Some(current) => current.merge(&revocation),
            None if self.revoked.len() >= MAX_REVOCATIONS => {
                return Err(Error::LimitExceeded {
                    what: "revoked keys",
                    limit: MAX_REVOCATIONS,
                });
            }
            None => revocation,
        };
        if self.revoked.get(&merged.key) == Some(&merged) {
            return Ok(false);
        }
        self.revoked.insert(merged.key, merged);
        Ok(true)
    }

    /// Merges every revocation of `revocations` into this policy (see
    /// [`Policy::merge_revocation`]): the union of two sets, e.g. the policy database's and
    /// the revocations a device remembers. Returns how many changed something.
    pub fn merge_revocations<'a>(
        &mut self,
        revocations: impl IntoIterator<Item = &'a Revocation>,
    ) -> Result<usize> {
        let mut changed = 0;
        for revocation in revocations {
            if self.merge_revocation(revocation.clone())? {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The revocation of `key`, if it was revoked (the owner's own key included: see
    /// [`Policy::is_revoked`]).
    pub fn revocation(&self, key: &KeyId) -> Option<&Revocation> {
        self.revoked.get(key)
    }

    /// Whether `principal` is a revoked key that the policy refuses. The owner never is: a
    /// device that learns it was revoked still answers its own owner.
    pub fn is_revoked(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Key(key) => *key != self.owner() && self.revoked.contains_key(key),
            Principal::Anonymous | Principal::Owner => false,
        }
    }

    /// Every revocation, in key id order.
    pub fn revocations(&self) -> impl ExactSizeIterator<Item = &Revocation> {
        self.revoked.values()
    }
}

/// The revocation set of a policy (keyed by the revoked key).
pub(crate) type Revocations = BTreeMap<KeyId, Revocation>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Action, Reason, Resource};
    use crate::json::PolicyDocument;
    use crate::name::GroupName;
    use crate::policy::{AclScope, Right};
    use crate::principal::Member;
    use serde_json::{Value, json};

    fn key(n: u8) -> KeyId {
        KeyId::from_digest([n; 32])
    }

    /// A, B and C are one person's devices; the policy seen on A.
    fn three_devices() -> Result<Policy> {
        let mut policy = Policy::new(key(1));
        let me = GroupName::new("me")?;
        for n in 1..=3 {
            policy.add_member(&me, Member::Key(key(n)))?;
        }
        policy.grant(&AclScope::AllDatabases, Right::Admin, Member::group("me")?)?;
        Ok(policy)
    }

    const ACTIONS: [Action; 4] = [
        Action::Read,
        Action::Write,
        Action::Admin,
        Action::CreateView,
    ];

    fn may_anything(policy: &Policy, who: KeyId) -> bool {
        ACTIONS.iter().any(|action| {
            policy
                .may(Principal::Key(who), *action, Resource::Database("notes"))
                .allowed
        })
    }

    #[test]
    fn a_revoked_key_may_do_nothing_whatever_its_groups() -> Result<()> {
        let mut policy = three_devices()?;
        assert!(may_anything(&policy, key(3)));
        assert!(policy.revoke_key(Revocation::new(key(3), key(1), 1000))?);
        for action in ACTIONS {
            let d = policy.may(Principal::Key(key(3)), action, Resource::Database("notes"));
            assert!(!d.allowed, "{d}");
            assert!(matches!(d.reason, Reason::Revoked { .. }), "{d}");
        }
        let d = policy.may(
            Principal::Key(key(3)),
            Action::Read,
            Resource::Database("x"),
        );
        assert!(
            d.to_string()
                .contains(&format!("key:{} was revoked by key:{}", key(3), key(1))),
            "{d}"
        );
        assert!(policy.groups_of(&Principal::Key(key(3))).is_empty());
        // The others keep their rights, and so does the owner.
        assert!(may_anything(&policy, key(2)));
        assert!(
            policy
                .may(Principal::Owner, Action::Admin, Resource::Database("x"))
                .allowed
        );
        // Granting the key again directly changes nothing.
        policy.grant(&AclScope::AllDatabases, Right::Admin, Member::Key(key(3)))?;
        policy.add_member(&GroupName::new("me")?, Member::Key(key(3)))?;
        assert!(!may_anything(&policy, key(3)));
        // Not even what everyone may do.
        policy.grant(&AclScope::AllDatabases, Right::Read, Member::Anonymous)?;
        assert!(!may_anything(&policy, key(3)));
        assert!(
            policy
                .may(Principal::Anonymous, Action::Read, Resource::Database("x"))
                .allowed
        );
        Ok(())
    }

    #[test]
    fn the_owner_cannot_revoke_itself() -> Result<()> {
        let mut policy = three_devices()?;
        let err = policy
            .revoke_key(Revocation::new(key(1), key(1), 5))
            .unwrap_err();
        assert!(matches!(err, Error::RevokingOwner { .. }), "{err}");
        assert!(err.to_string().contains("own key"), "{err}");
        assert_eq!(policy.revocations().len(), 0);
        // Learning that it was revoked (from a replicated document) is kept, but the owner
        // still answers itself.
        policy.insert(PolicyDocument::Revocation(Revocation::new(
            key(1),
            key(2),
            5,
        )))?;
        assert!(policy.revocation(&key(1)).is_some());
        assert!(!policy.is_revoked(&Principal::Key(key(1))));
        assert!(
            policy
                .may(
                    Principal::Key(key(1)),
                    Action::Admin,
                    Resource::Database("x")
                )
                .allowed
        );
        Ok(())
    }

    #[test]
    fn merging_revocations_is_a_union_in_any_order() -> Result<()> {
        let records = [
            Revocation::new(key(3), key(1), 2000),
            Revocation::new(key(3), key(2), 1500), // B revoked C earlier, concurrently
            Revocation::new(key(4), key(2), 10),
            Revocation::new(key(3), key(1), 2000), // the same document twice
        ];
        let orders: [[usize; 4]; 4] = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]];
        let mut results = Vec::new();
        for order in orders {
            let mut policy = three_devices()?;
            for i in order {
                policy.merge_revocation(records[i].clone())?;
            }
            results.push(policy.revocations().cloned().collect::<Vec<_>>());
        }
        for r in &results {
            assert_eq!(r, &results[0]);
        }
        assert_eq!(
            results[0],
            [
                Revocation::new(key(3), key(2), 1500),
                Revocation::new(key(4), key(2), 10)
            ]
        );
        // Merging a set into a policy that has it changes nothing.
        let mut policy = three_devices()?;
        // C by A, then C by B (earlier: replaces it), then D; the duplicate changes nothing.
        assert_eq!(policy.merge_revocations(&records)?, 3);
        assert_eq!(policy.merge_revocations(&records)?, 0);
        Ok(())
    }

    /// However the group and ACL documents conflict — the revoked device's own edit winning
    /// CouchDB's conflict, adding itself back to `me` and granting itself admin — a revocation
    /// document among the documents keeps it out; and deleting the revocation document does
    /// not bring it back.
    #[test]
    fn a_conflicting_edit_by_the_revoked_device_loses() -> Result<()> {
        let a = key(1);
        let c = key(3);
        let mut revoked = three_devices()?;
        revoked.revoke_key(Revocation::new(c, a, 42))?;
        // C's own edit, made without knowing of the revocation: C alone in `me`, admin
        // everywhere, and everyone may write.
        let c_edit = json!([
            {"_id": "group:me", "type": "group", "v": 1, "name": "me",
             "members": [format!("key:{c}")]},
            {"_id": "acl:*", "type": "acl", "v": 1, "db": "*",
             "admin": [format!("key:{c}"), "group:me"], "write": ["anonymous"]},
        ]);
        let revocation_doc = revoked
            .to_documents()
            .into_iter()
            .find(|d| matches!(d, PolicyDocument::Revocation(_)))
            .map(|d| d.to_value())
            .unwrap_or(Value::Null);
        assert_eq!(revocation_doc["_id"], format!("revoked:{c}"));
        let mut docs: Vec<Value> = c_edit.as_array().cloned().unwrap_or_default();
        docs.push(revocation_doc.clone());
        // Any order, on any of the other devices.
        for owner in [a, key(2)] {
            for rotate in 0..docs.len() {
                let mut order = docs.clone();
                order.rotate_left(rotate);
                let policy = Policy::from_documents(owner, &order)?;
                assert!(!may_anything(&policy, c), "rotation {rotate}");
                assert!(policy.is_revoked(&Principal::Key(c)));
            }
        }
        // Applied one by one, as documents arrive by replication: the deletion of the
        // revocation document is ignored.
        let mut policy = revoked.clone();
        for doc in c_edit.as_array().into_iter().flatten() {
            policy.insert(PolicyDocument::from_value(doc)?)?;
        }
        assert_eq!(policy.remove(&format!("revoked:{c}")), None);
        assert!(!may_anything(&policy, c));
        assert!(policy.is_revoked(&Principal::Key(c)));
        Ok(())
    }

    #[test]
    fn revocations_round_trip_through_json() -> Result<()> {
        let mut policy = three_devices()?;
        policy.revoke_key(Revocation::new(key(3), key(1), 1_700_000_000_000))?;
        let again = Policy::from_json(key(2), &policy.to_json())?;
        assert_eq!(
            again.revocations().collect::<Vec<_>>(),
            policy.revocations().collect::<Vec<_>>()
        );
        let docs: Vec<Value> = policy
            .to_documents()
            .iter()
            .map(PolicyDocument::to_value)
            .collect();
        let from_docs = Policy::from_documents(key(1), &docs)?;
        assert_eq!(from_docs, policy);
        let doc = docs
            .iter()
            .find(|d| d["type"] == "revocation")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            doc,
            json!({"_id": format!("revoked:{}", key(3)), "type": "revocation", "v": 1,
                   "key": key(3).to_string(), "by": key(1).to_string(), "at": 1_700_000_000_000_u64})
        );
        Ok(())
    }

    #[test]
    fn malformed_revocations_are_rejected_precisely() {
        let c = key(3).to_string();
        let cases = [
            (
                json!({"type": "revocation", "v": 1, "by": c, "at": 1}),
                "key",
                "missing",
            ),
            (
                json!({"type": "revocation", "v": 1, "key": "nope", "by": c, "at": 1}),
                "key",
                "key id",
            ),
            (
                json!({"type": "revocation", "v": 1, "key": c, "at": 1}),
                "by",
                "missing",
            ),
            (
                json!({"type": "revocation", "v": 1, "key": c, "by": c, "at": -1}),
                "at",
                "milliseconds",
            ),
            (
                json!({"type": "revocation", "v": 1, "key": c, "by": c}),
                "at",
                "missing",
            ),
            (
                json!({"type": "revocation", "v": 1, "key": c, "by": c, "at": 1, "x": 1}),
                "x",
                "unknown field",
            ),
            (
                json!({"_id": "revoked:other", "type": "revocation", "v": 1, "key": c, "by": c, "at": 1}),
                "_id",
                "must be",
            ),
        ];
        for (i, (value, field, words)) in cases.into_iter().enumerate() {
            let err = PolicyDocument::from_value(&value).unwrap_err();
            let Error::InvalidDocument {
                field: Some(got),
                reason,
                ..
            } = &err
            else {
                panic!("case {i}: {err:?}")
            };
            assert_eq!(got, field, "case {i}: {err}");
            assert!(reason.contains(words), "case {i}: {err}");
        }
    }
}
