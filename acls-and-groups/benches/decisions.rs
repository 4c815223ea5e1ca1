//! Decisions per second with 10 000 principals and 1 000 groups nested 5 deep (each group in
//! two groups of the level above, so a key is in up to 31 groups), 1 000 databases with read,
//! write, admin and view grants to groups and keys, and an all-databases ACL. The question mix
//! is seeded: mostly keys, some anonymous, a few owner; databases, views and documents with and
//! without reader lists. Also: the cost of the first decision after a change (cache rebuild).
//!
//! ```text
//! cargo bench -p acls-and-groups --bench decisions
//! ```
//!
//! The `decisions/*` throughput figures (elements/s) are decisions per second on one core;
//! `decisions/mixed/reference-uncached-dfs` answers the same questions without caches (a
//! depth-first search through the groups per list entry), as the reference for the ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use std::hint::black_box;
use std::time::Duration;

use std::collections::{BTreeSet, HashSet};

use acls_and_groups::{
    AclScope, Action, DbAcl, GroupName, KeyId, Member, Policy, Principal, Reason, Resource, Right,
    Via,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const PRINCIPALS: usize = 10_000;
/// Groups per level, top first: 1 000 groups, 5 levels.
const LEVELS: [usize; 5] = [40, 80, 160, 320, 400];
const DATABASES: usize = 1_000;
const QUESTIONS: usize = 4_096;

/// splitmix64: a seeded, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn key(i: usize) -> KeyId {
    let mut rng = Rng(i as u64 ^ 0x5eed);
    let mut digest = [0u8; 32];
    for chunk in digest.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    KeyId::from_digest(digest)
}

fn owner() -> KeyId {
    KeyId::from_digest([0xaa; 32])
}

fn group(level: usize, j: usize) -> GroupName {
    format!("l{level}-{j}").parse().unwrap()
}

fn group_member(level: usize, j: usize) -> Member {
    Member::Group(group(level, j % LEVELS[level]))
}

fn build() -> Policy {
    let mut policy = Policy::new(owner());
    for level in 1..LEVELS.len() {
        for j in 0..LEVELS[level] {
            let child = group_member(level, j);
            policy
                .add_member(&group(level - 1, j % LEVELS[level - 1]), child.clone())
                .unwrap();
            policy
                .add_member(&group(level - 1, (j * 7 + 3) % LEVELS[level - 1]), child)
                .unwrap();
        }
    }
    for i in 0..PRINCIPALS {
        policy
            .add_member(&group(4, i % LEVELS[4]), Member::Key(key(i)))
            .unwrap();
        if i % 10 == 0 {
            policy
                .add_member(&group(2, i % LEVELS[2]), Member::Key(key(i)))
                .unwrap();
        }
    }
    let me: GroupName = "me".parse().unwrap();
    for i in 0..3 {
        policy.add_member(&me, Member::Key(key(i))).unwrap();
    }
    policy
        .grant(&AclScope::AllDatabases, Right::Admin, Member::Group(me))
        .unwrap();
    let view = "by-date".parse().unwrap();
    for d in 0..DATABASES {
        let db = format!("db{d}");
        let scope: AclScope = db.parse().unwrap();
        policy
            .grant(&scope, Right::Read, group_member(0, d))
            .unwrap();
        policy
            .grant(&scope, Right::Read, group_member(2, d * 3))
            .unwrap();
        policy
            .grant(&scope, Right::Write, group_member(1, d))
            .unwrap();
        policy
            .grant(&scope, Right::Admin, Member::Key(key(d * 7 % PRINCIPALS)))
            .unwrap();
        let db = db.parse().unwrap();
        policy.grant_view(&db, &view, group_member(3, d)).unwrap();
        if d % 10 == 0 {
            policy.grant_view(&db, &view, Member::Anonymous).unwrap();
        }
    }
    assert_eq!(policy.groups().len(), 1_001);
    assert!(policy.cycles().is_empty());
    policy
}

#[derive(Clone, Copy)]
struct Question {
    principal: Principal,
    action: Action,
    db: usize,
    /// 0: database, 1: view "by-date", 2: another view, 3: document, 4: document with readers.
    kind: usize,
    readers: usize,
}

struct Questions {
    dbs: Vec<String>,
    readers: Vec<Vec<Member>>,
    list: Vec<Question>,
}

impl Questions {
    fn new() -> Questions {
        let mut rng = Rng(42);
        let mut dbs: Vec<String> = (0..DATABASES).map(|d| format!("db{d}")).collect();
        dbs.push("unknown".into());
        let readers = (0..64)
            .map(|_| {
                vec![
                    group_member(3, rng.below(LEVELS[3])),
                    Member::Key(key(rng.below(PRINCIPALS))),
                    group_member(1, rng.below(LEVELS[1])),
                ]
            })
            .collect();
        let actions = [
            Action::Read,
            Action::Write,
            Action::Admin,
            Action::CreateView,
        ];
        let list = (0..QUESTIONS)
            .map(|_| {
                let principal = match rng.below(100) {
                    0..90 => Principal::Key(key(rng.below(PRINCIPALS))),
                    90..97 => Principal::Anonymous,
                    _ => Principal::Owner,
                };
                // Reads dominate real traffic.
                let action = if rng.below(2) == 0 {
                    Action::Read
                } else {
                    actions[rng.below(4)]
                };
                let db = if rng.below(50) == 0 {
                    DATABASES
                } else {
                    rng.below(DATABASES)
                };
                Question {
                    principal,
                    action,
                    db,
                    kind: rng.below(5),
                    readers: rng.below(64),
                }
            })
            .collect();
        Questions { dbs, readers, list }
    }

    fn resource(&self, q: &Question) -> Resource<'_> {
        let db = self.dbs[q.db].as_str();
        match q.kind {
            0 => Resource::Database(db),
            1 => Resource::View {
                db,
                view: "by-date",
            },
            2 => Resource::View { db, view: "other" },
            3 => Resource::Document { db, readers: None },
            _ => Resource::Document {
                db,
                readers: Some(&self.readers[q.readers]),
            },
        }
    }

    fn only(&self, policy: &Policy, keep: impl Fn(&Reason) -> bool) -> Vec<Question> {
        self.list
            .iter()
            .filter(|q| keep(&policy.may(q.principal, q.action, self.resource(q)).reason))
            .copied()
            .collect()
    }
}

fn through_groups(reason: &Reason) -> bool {
    let via = match reason {
        Reason::Granted { grant, .. } => &grant.matched.via,
        Reason::Reader { grant, .. } => &grant.matched.via,
        _ => return false,
    };
    matches!(via, Via::Groups { path, .. } if path.len() >= 3)
}

/// The reference: the same rules without caches, the obvious way (a depth-first search through
/// the groups for every list entry, with a visited set). Yes/no only, no explanation.
fn reference_may(
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
    let is_in = |member: &Member| {
        let mut stack = vec![member];
        let mut seen: HashSet<&str> = HashSet::new();
        while let Some(m) = stack.pop() {
            match m {
                Member::Anonymous => return true,
                Member::Key(k) if Some(*k) == key => return true,
                Member::Group(g) if seen.insert(g.as_str()) => {
                    if let Some(group) = policy.group(g.as_str()) {
                        stack.extend(group.members.iter());
                    }
                }
                _ => {}
            }
        }
        false
    };
    let in_list = |list: &BTreeSet<Member>| list.iter().any(is_in);
    let db = resource.db();
    let own: Option<&DbAcl> = db
        .parse()
        .ok()
        .and_then(|d| policy.acl(&AclScope::Database(d)));
    let acls = [own, policy.acl(&AclScope::AllDatabases)];
    let has = |right: Right| acls.iter().flatten().any(|acl| in_list(acl.list(right)));
    match (action, resource) {
        (Action::Admin, _) => has(Right::Admin),
        (Action::Read, Resource::View { view, .. }) => {
            own.and_then(|acl| acl.views.get(view)).is_some_and(in_list)
                || has(Right::Read)
                || has(Right::Admin)
        }
        (
            Action::Read,
            Resource::Document {
                readers: Some(readers),
                ..
            },
        ) => has(Right::Admin) || (has(Right::Read) && readers.iter().any(is_in)),
        (Action::Read, _) => has(Right::Read) || has(Right::Admin),
        _ => has(Right::Write) || has(Right::Admin),
    }
}

fn bench(c: &mut Criterion) {
    let policy = build();
    let questions = Questions::new();
    let allowed = questions
        .list
        .iter()
        .filter(|q| {
            policy
                .may(q.principal, q.action, questions.resource(q))
                .allowed
        })
        .count();
    println!(
        "{} groups, {PRINCIPALS} principals, {DATABASES} databases; {allowed} of {QUESTIONS} questions allowed",
        policy.groups().len()
    );
    for q in &questions.list {
        let resource = questions.resource(q);
        assert_eq!(
            policy.may(q.principal, q.action, resource).allowed,
            reference_may(&policy, q.principal, q.action, resource),
            "the reference agrees"
        );
    }
    let nested = questions.only(&policy, through_groups);
    let denied = questions.only(&policy, |r| matches!(r, Reason::NoGrant { .. }));
    println!(
        "{} questions allowed through 3+ nested groups, {} denied for lack of a grant",
        nested.len(),
        denied.len()
    );

    let mut g = c.benchmark_group("decisions");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for (name, list) in [
        ("mixed", &questions.list),
        ("allowed-through-nested-groups", &nested),
        ("denied", &denied),
    ] {
        g.throughput(Throughput::Elements(list.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                for q in list {
                    black_box(policy.may(black_box(q.principal), q.action, questions.resource(q)));
                }
            })
        });
    }
    g.throughput(Throughput::Elements(questions.list.len() as u64));
    g.bench_function("mixed/reference-uncached-dfs", |b| {
        b.iter(|| {
            for q in &questions.list {
                black_box(reference_may(
                    &policy,
                    black_box(q.principal),
                    q.action,
                    questions.resource(q),
                ));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("first-decision-after-a-change");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let q = questions.list[0];
    g.bench_function("group-membership (rebuilds closures and ACLs)", |b| {
        b.iter_batched(
            || {
                let mut p = policy.clone();
                p.may(q.principal, q.action, questions.resource(&q));
                p.add_member(&group(4, 0), Member::Key(key(PRINCIPALS)))
                    .unwrap();
                p
            },
            // Returned, so that dropping the copy is not timed.
            |p| {
                let d = black_box(p.may(q.principal, q.action, questions.resource(&q)));
                (p, d)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("acl-grant (rebuilds ACLs only)", |b| {
        b.iter_batched(
            || {
                let mut p = policy.clone();
                p.may(q.principal, q.action, questions.resource(&q));
                p.grant(
                    &"db0".parse().unwrap(),
                    Right::Read,
                    Member::Key(key(PRINCIPALS)),
                )
                .unwrap();
                p
            },
            // Returned, so that dropping the copy is not timed.
            |p| {
                let d = black_box(p.may(q.principal, q.action, questions.resource(&q)));
                (p, d)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
