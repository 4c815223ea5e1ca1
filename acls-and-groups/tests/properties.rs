//! Property tests over random policies (random group graphs, cycles included) in a small
//! universe of keys, groups and databases, checked against a reference model written the
//! obvious way (membership by depth-first search with a visited set; rights by the README table).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::collections::{BTreeSet, HashSet};

use acls_and_groups::{
    AclScope, Action, DbAcl, DbName, Decision, Group, GroupName, KeyId, Member, Policy,
    PolicyDocument, Principal, Reason, Resource, Revocation, Right, Via,
};
use proptest::prelude::*;
use serde_json::Value;

const KEYS: usize = 5;
const GROUPS: usize = 6;
/// Members: 0 is `anonymous`, then the keys, then the groups.
const UNIVERSE: usize = 1 + KEYS + GROUPS;
const DBS: [&str; 3] = ["d0", "d1", "d2"];
const OWNER: usize = 0;

fn key(i: usize) -> KeyId {
    KeyId::from_digest([i as u8 + 1; 32])
}

fn group_name(i: usize) -> GroupName {
    format!("g{i}").parse().unwrap()
}

fn member(u: usize) -> Member {
    match u {
        0 => Member::Anonymous,
        u if u <= KEYS => Member::Key(key(u - 1)),
        u => Member::Group(group_name(u - 1 - KEYS)),
    }
}

#[derive(Debug, Clone)]
struct Spec {
    /// `None`: the group is not defined.
    groups: Vec<Option<Vec<usize>>>,
    /// For `*`, d0, d1, d2: read, write, admin and view `v` lists.
    acls: Vec<Option<[Vec<usize>; 4]>>,
}

fn members() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..UNIVERSE, 0..4)
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(prop::option::weighted(0.85, members()), GROUPS),
        prop::collection::vec(
            prop::option::weighted(0.8, [members(), members(), members(), members()]),
            1 + DBS.len(),
        ),
    )
        .prop_map(|(groups, acls)| Spec { groups, acls })
}

fn scope(i: usize) -> AclScope {
    if i == 0 {
        AclScope::AllDatabases
    } else {
        DBS[i - 1].parse().unwrap()
    }
}

fn build(spec: &Spec) -> Policy {
    let mut policy = Policy::new(key(OWNER));
    for (g, members) in spec.groups.iter().enumerate() {
        let Some(members) = members else { continue };
        let mut group = Group::new(group_name(g));
        group.members = members.iter().map(|&u| member(u)).collect();
        policy.set_group(group).unwrap();
    }
    for (i, lists) in spec.acls.iter().enumerate() {
        let Some(lists) = lists else { continue };
        let mut acl = DbAcl::new(scope(i));
        acl.read = lists[0].iter().map(|&u| member(u)).collect();
        acl.write = lists[1].iter().map(|&u| member(u)).collect();
        acl.admin = lists[2].iter().map(|&u| member(u)).collect();
        if i > 0 && !lists[3].is_empty() {
            acl.views.insert(
                "v".parse().unwrap(),
                lists[3].iter().map(|&u| member(u)).collect(),
            );
        }
        policy.set_acl(acl).unwrap();
    }
    policy
}

// ---- the reference model ----

/// Is the principal (`key`, or `None` for anonymous) in `member` under `policy`?
fn model_in(policy: &Policy, key: Option<KeyId>, member: &Member) -> bool {
    let mut stack = vec![member.clone()];
    let mut seen: HashSet<GroupName> = HashSet::new();
    while let Some(m) = stack.pop() {
        match m {
            Member::Anonymous => return true,
            Member::Key(k) => {
                if Some(k) == key {
                    return true;
                }
            }
            Member::Group(g) => {
                if seen.insert(g.clone()) {
                    if let Some(group) = policy.group(g.as_str()) {
                        stack.extend(group.members.iter().cloned());
                    }
                }
            }
            _ => unreachable!(),
        }
    }
    false
}

fn model_may(
    policy: &Policy,
    principal: Principal,
    action: Action,
    resource: Resource<'_>,
) -> bool {
    if policy.is_owner(&principal) {
        return true;
    }
    let key = match principal {
        Principal::Key(k) => Some(k),
        _ => None,
    };
    let db = resource.db();
    let in_list = |list: Option<&BTreeSet<Member>>| {
        list.is_some_and(|l| l.iter().any(|m| model_in(policy, key, m)))
    };
    let acls: Vec<&DbAcl> = [
        db.parse::<DbName>()
            .ok()
            .and_then(|d| policy.acl(&AclScope::Database(d))),
        policy.acl(&AclScope::AllDatabases),
    ]
    .into_iter()
    .flatten()
    .collect();
    let has = |right: Right| acls.iter().any(|acl| in_list(Some(acl.list(right))));
    match (action, resource) {
        (Action::Admin, _) => has(Right::Admin),
        (Action::Write | Action::CreateView, _) => has(Right::Write) || has(Right::Admin),
        (Action::Read, Resource::View { view, .. }) => {
            let view_grant = db
                .parse::<DbName>()
                .ok()
                .and_then(|d| policy.acl(&AclScope::Database(d)))
                .and_then(|acl| acl.views.get(view));
            in_list(view_grant) || has(Right::Read) || has(Right::Admin)
        }
        (
            Action::Read,
            Resource::Document {
                readers: Some(readers),
                ..
            },
        ) => {
            has(Right::Admin)
                || (has(Right::Read) && readers.iter().any(|m| model_in(policy, key, m)))
        }
        (Action::Read, _) => has(Right::Read) || has(Right::Admin),
        _ => unreachable!(),
    }
}

// ---- the questions ----

fn principals() -> Vec<Principal> {
    let mut out = vec![Principal::Anonymous, Principal::Owner];
    out.extend((0..=KEYS).map(|i| Principal::Key(key(i)))); // key(KEYS) is in no list
    out
}

fn reader_lists() -> Vec<Vec<Member>> {
    vec![
        vec![],
        vec![member(2)],
        vec![member(1 + KEYS)],
        vec![Member::Anonymous],
        vec![member(3), member(UNIVERSE - 1)],
    ]
}

const ACTIONS: [Action; 4] = [
    Action::Read,
    Action::Write,
    Action::Admin,
    Action::CreateView,
];

/// Every question in the universe, answered by `answer`.
fn ask_all<T>(mut answer: impl FnMut(Principal, Action, Resource<'_>) -> T) -> Vec<T> {
    let readers = reader_lists();
    let mut out = Vec::new();
    for principal in principals() {
        for db in DBS.iter().copied().chain(["nowhere"]) {
            let mut resources = vec![
                Resource::Database(db),
                Resource::View { db, view: "v" },
                Resource::View { db, view: "w" },
                Resource::Document { db, readers: None },
            ];
            for list in &readers {
                resources.push(Resource::Document {
                    db,
                    readers: Some(list),
                });
            }
            for resource in resources {
                for action in ACTIONS {
                    out.push(answer(principal, action, resource));
                }
            }
        }
    }
    out
}

fn decisions(policy: &Policy) -> Vec<Decision> {
    ask_all(|p, a, r| policy.may(p, a, r))
}

fn allowed(policy: &Policy) -> Vec<bool> {
    ask_all(|p, a, r| policy.may(p, a, r).allowed)
}

/// Every group chain in an explanation is real: the principal (or anonymous) is listed in the
/// first group, each group is listed in the next, and the last is the matched entry.
fn check_via(policy: &Policy, principal: Principal, member: &Member, via: &Via) {
    match via {
        Via::Direct => assert_eq!(
            Some(member),
            match principal {
                Principal::Key(k) => Some(Member::Key(k)),
                _ => None,
            }
            .as_ref()
        ),
        Via::Everyone => assert_eq!(member, &Member::Anonymous),
        Via::Groups {
            path,
            from_anonymous,
        } => {
            let first = policy.group(path[0].as_str()).unwrap();
            let start = match (from_anonymous, principal) {
                (true, _) => Member::Anonymous,
                (false, Principal::Key(k)) => Member::Key(k),
                (false, other) => panic!("{other:?} cannot start a group chain"),
            };
            assert!(first.members.contains(&start), "{path:?}");
            for pair in path.windows(2) {
                let next = policy.group(pair[1].as_str()).unwrap();
                assert!(
                    next.members.contains(&Member::Group(pair[0].clone())),
                    "{path:?}"
                );
            }
            assert_eq!(member, &Member::Group(path.last().unwrap().clone()));
            let unique: HashSet<_> = path.iter().collect();
            assert_eq!(unique.len(), path.len(), "a shortest chain has no repeats");
        }
        other => panic!("{other:?}"),
    }
}

/// Whether the model sees a cycle: some group reaches itself through one or more memberships.
fn model_has_cycle(policy: &Policy) -> bool {
    policy.groups().any(|g| {
        g.members.iter().any(|m| match m {
            Member::Group(child) => {
                // Does `child` contain `g` (transitively), or is it `g`?
                child == &g.name || {
                    let mut stack = vec![child.clone()];
                    let mut seen = HashSet::new();
                    let mut found = false;
                    while let Some(x) = stack.pop() {
                        if !seen.insert(x.clone()) {
                            continue;
                        }
                        if let Some(group) = policy.group(x.as_str()) {
                            for m in &group.members {
                                if let Member::Group(y) = m {
                                    found |= y == &g.name;
                                    stack.push(y.clone());
                                }
                            }
                        }
                    }
                    found
                }
            }
            _ => false,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary group graphs (cycles included) terminate, agree with the model, answer the
    /// same question the same way every time, explain truthfully, and report their cycles.
    #[test]
    fn decisions_agree_with_the_model(spec in spec()) {
        let policy = build(&spec);
        let first = decisions(&policy);
        let model = ask_all(|p, a, r| model_may(&policy, p, a, r));
        let mut i = 0;
        ask_all(|p, a, r| {
            let d = &first[i];
            prop_assert_eq!(d.allowed, model[i], "{} {} {:?}: {}", p, a, r, d);
            match &d.reason {
                Reason::Granted { grant, .. } | Reason::NotAReader { grant, .. } => {
                    check_via(&policy, p, &grant.matched.member, &grant.matched.via);
                }
                Reason::Reader { grant, reader, .. } => {
                    check_via(&policy, p, &grant.matched.member, &grant.matched.via);
                    check_via(&policy, p, &reader.member, &reader.via);
                }
                _ => {}
            }
            i += 1;
            Ok(())
        })
        .into_iter()
        .collect::<Result<Vec<()>, TestCaseError>>()?;
        prop_assert_eq!(decisions(&policy), first.clone(), "same answers twice");
        prop_assert_eq!(decisions(&policy.clone()), first, "a copy rebuilds the same caches");
        prop_assert_eq!(!policy.cycles().is_empty(), model_has_cycle(&policy));
    }

    /// Adding a grant or a group membership never takes access away.
    #[test]
    fn granting_never_removes_access(
        spec in spec(),
        change in (0..3usize, 0..UNIVERSE, 0..GROUPS, 0..(1 + DBS.len()), 0..3usize),
    ) {
        let policy = build(&spec);
        let before = allowed(&policy);
        let mut after = policy.clone();
        let (kind, u, g, s, r) = change;
        let right = [Right::Read, Right::Write, Right::Admin][r];
        match kind {
            0 => { after.add_member(&group_name(g), member(u)).unwrap(); }
            1 => { after.grant(&scope(s), right, member(u)).unwrap(); }
            _ => {
                let db: DbName = DBS[s % DBS.len()].parse().unwrap();
                after.grant_view(&db, &"v".parse().unwrap(), member(u)).unwrap();
            }
        }
        let after = allowed(&after);
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            prop_assert!(!b || *a, "question {} lost access after {:?}", i, change);
        }
    }

    /// Taking one member out of one group removes exactly the access that membership gave:
    /// nothing is gained, only principals inside that member lose anything, what remains is
    /// what the model says, and putting the member back restores every decision exactly.
    #[test]
    fn revoking_a_membership_removes_exactly_what_it_gave(spec in spec(), pick in any::<prop::sample::Index>()) {
        let policy = build(&spec);
        let edges: Vec<(GroupName, Member)> = policy
            .groups()
            .flat_map(|g| g.members.iter().map(move |m| (g.name.clone(), m.clone())))
            .collect();
        prop_assume!(!edges.is_empty());
        let (group, removed) = edges[pick.index(edges.len())].clone();
        let mut revoked = policy.clone();
        prop_assert!(revoked.remove_member(group.as_str(), &removed));

        let before = decisions(&policy);
        let after = decisions(&revoked);
        let mut i = 0;
        ask_all(|p, a, r| {
            let (b, af) = (&before[i], &after[i]);
            prop_assert!(!af.allowed || b.allowed, "{} {} {:?} gained access: {}", p, a, r, af);
            if b.allowed != af.allowed {
                let key = match p { Principal::Key(k) => Some(k), _ => None };
                prop_assert!(
                    model_in(&policy, key, &removed),
                    "{} {} {:?} lost access but is not in {} (removed from {})", p, a, r, removed, group
                );
            }
            prop_assert_eq!(af.allowed, model_may(&revoked, p, a, r));
            i += 1;
            Ok(())
        })
        .into_iter()
        .collect::<Result<Vec<()>, TestCaseError>>()?;

        let mut restored = revoked;
        prop_assert!(restored.add_member(&group, removed).unwrap());
        prop_assert_eq!(decisions(&restored), before);
    }

    /// A revocation wins every conflict: whatever groups and ACLs the revoked key's own edits
    /// hold, whichever side wins each document's CouchDB conflict, and in whatever order the
    /// documents load, the revoked key may do nothing and everyone else is decided exactly as
    /// without the revocation; revocations merge as a union in any order.
    #[test]
    fn a_revocation_wins_every_conflict(
        ours in spec(),
        theirs in spec(),
        victim in 1..KEYS,
        winners in prop::collection::vec(any::<bool>(), 16),
        rotate in 0..16usize,
        at in (0u64..3, 0u64..3),
    ) {
        let ours = build(&ours);
        let theirs = build(&theirs);
        let values = |p: &Policy| -> std::collections::BTreeMap<String, Value> {
            p.to_documents().iter().map(|d| (d.id(), d.to_value())).collect()
        };
        let (ours, theirs) = (values(&ours), values(&theirs));
        let ids: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        let mut merged: Vec<Value> = ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                let (first, second) = if winners[i % winners.len()] {
                    (&ours, &theirs)
                } else {
                    (&theirs, &ours)
                };
                first.get(*id).or_else(|| second.get(*id)).cloned()
            })
            .collect();
        let without = Policy::from_documents(key(OWNER), &merged).unwrap();
        // Two devices revoked the victim concurrently: two records of one document id, one
        // of which CouchDB shows; a device that saw both merges them.
        let by_owner = Revocation::new(key(victim), key(OWNER), at.0);
        let by_other = Revocation::new(key(victim), key(KEYS), at.1);
        let shown = if winners[0] { &by_owner } else { &by_other };
        merged.push(PolicyDocument::Revocation(shown.clone()).to_value());
        let n = rotate % merged.len();
        merged.rotate_left(n);
        let mut with = Policy::from_documents(key(OWNER), &merged).unwrap();
        let expected = allowed(&without);
        let mut i = 0;
        ask_all(|p, a, r| {
            let d = with.may(p, a, r);
            if p == Principal::Key(key(victim)) {
                prop_assert!(!d.allowed, "the revoked key: {} {:?}: {}", a, r, d);
                prop_assert!(matches!(d.reason, Reason::Revoked { .. }), "{}", d);
            } else {
                prop_assert_eq!(d.allowed, expected[i], "{} {} {:?}: {}", p, a, r, d);
            }
            i += 1;
            Ok(())
        })
        .into_iter()
        .collect::<Result<Vec<()>, TestCaseError>>()?;
        let mut other_order = with.clone();
        with.merge_revocations([&by_owner, &by_other]).unwrap();
        other_order.merge_revocations([&by_other, &by_owner]).unwrap();
        prop_assert_eq!(&with, &other_order);
        prop_assert_eq!(with.revocation(&key(victim)), Some(&by_owner.merge(&by_other)));
        prop_assert_eq!(with.remove(&format!("revoked:{}", key(victim))), None);
        prop_assert!(with.is_revoked(&Principal::Key(key(victim))));
    }

    /// JSON (whole-policy and per-document, in any order) round-trips to an equal policy that
    /// gives identical decisions, explanations included.
    #[test]
    fn json_round_trip_preserves_decisions(spec in spec(), rotate in 0..16usize) {
        let policy = build(&spec);
        let expected = decisions(&policy);
        let again = Policy::from_json(key(OWNER), &policy.to_json()).unwrap();
        prop_assert_eq!(&again, &policy);
        prop_assert_eq!(decisions(&again), expected.clone());

        let mut documents: Vec<Value> = policy
            .to_documents()
            .iter()
            .map(PolicyDocument::to_value)
            .collect();
        if !documents.is_empty() {
            let n = rotate % documents.len();
            documents.rotate_left(n);
            documents.reverse();
        }
        let from_documents = Policy::from_documents(key(OWNER), &documents).unwrap();
        prop_assert_eq!(&from_documents, &policy);
        prop_assert_eq!(decisions(&from_documents), expected);
    }
}
