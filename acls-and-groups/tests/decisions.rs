//! Table-driven decision tests: every action × resource kind × principal kind × grant path, and
//! the reason each decision gives.
//!
//! The semantics table below is written out by hand (it is the crate README's "what implies
//! what" table); the fixture gives each (grant path, granted right) its own database, so each
//! row is checked in isolation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use acls_and_groups::{
    AclScope, Action, DbName, GroupName, KeyId, Member, Policy, Principal, Reason, Resource,
    ResourceKind, Right, Via,
};

fn key(n: u8) -> KeyId {
    KeyId::from_digest([n; 32])
}

const OWNER: u8 = 1;
/// The principal every grant path leads to.
const A: u8 = 10;
/// A key no grant names (it gets only what everyone gets).
const B: u8 = 11;
/// A key that is in no list; used as the "other" document reader.
const Z: u8 = 99;

fn group(name: &str) -> GroupName {
    name.parse().unwrap()
}

fn member(text: &str) -> Member {
    text.parse().unwrap()
}

/// How a grant reaches the principal.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    /// `key:A` is listed.
    Direct,
    /// `group:g1` is listed; g1 lists A.
    Group,
    /// `group:outer` is listed; outer ∋ mid ∋ inner ∋ A.
    Nested,
    /// `anonymous` is listed.
    Anonymous,
    /// `group:public` is listed; public lists `anonymous`.
    AnonymousGroup,
    /// Nothing is listed.
    Nothing,
}

const PATHS: [Path; 6] = [
    Path::Direct,
    Path::Group,
    Path::Nested,
    Path::Anonymous,
    Path::AnonymousGroup,
    Path::Nothing,
];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Group => "group",
            Path::Nested => "nested",
            Path::Anonymous => "anonymous",
            Path::AnonymousGroup => "public",
            Path::Nothing => "nothing",
        }
    }

    /// The list entry the path grants to.
    fn member(self) -> Option<Member> {
        match self {
            Path::Direct => Some(Member::Key(key(A))),
            Path::Group => Some(member("group:g1")),
            Path::Nested => Some(member("group:outer")),
            Path::Anonymous => Some(Member::Anonymous),
            Path::AnonymousGroup => Some(member("group:public")),
            Path::Nothing => None,
        }
    }

    /// Whether `principal` (not the owner) is in the path's entry, and how.
    fn via(self, principal: Principal) -> Option<Via> {
        let groups = |names: &[&str], from_anonymous| Via::Groups {
            path: names.iter().map(|n| group(n)).collect(),
            from_anonymous,
        };
        let is_a = principal == Principal::Key(key(A));
        match self {
            Path::Direct if is_a => Some(Via::Direct),
            Path::Group if is_a => Some(groups(&["g1"], false)),
            Path::Nested if is_a => Some(groups(&["inner", "mid", "outer"], false)),
            Path::Anonymous => Some(Via::Everyone),
            Path::AnonymousGroup => Some(groups(&["public"], true)),
            _ => None,
        }
    }
}

/// The granted right of a fixture database: a database right, or a read grant on view `v`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Granted {
    Db(Right),
    View,
}

const GRANTED: [Granted; 4] = [
    Granted::Db(Right::Read),
    Granted::Db(Right::Write),
    Granted::Db(Right::Admin),
    Granted::View,
];

impl Granted {
    fn name(self) -> &'static str {
        match self {
            Granted::Db(right) => right.as_str(),
            Granted::View => "view",
        }
    }
}

/// The resource kinds of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Db,
    /// View `v`.
    View,
    /// A document without a reader list.
    Doc,
    /// A document whose reader list is the path's entry (so it includes whoever the grant does).
    DocIn,
    /// A document whose reader list is someone else (`key:Z`).
    DocOut,
}

const KINDS: [Kind; 5] = [Kind::Db, Kind::View, Kind::Doc, Kind::DocIn, Kind::DocOut];
const ACTIONS: [Action; 4] = [
    Action::Read,
    Action::Write,
    Action::CreateView,
    Action::Admin,
];

/// THE TABLE: for a principal that matches a grant of `granted`, whether `action` on each of
/// [Db, View, Doc, DocIn, DocOut] is allowed ('T') or denied ('F').
fn implied(granted: Granted, action: Action) -> [bool; 5] {
    let row = match (granted, action) {
        (Granted::Db(Right::Read), Action::Read) => "TTTTF",
        (Granted::Db(Right::Read), Action::Write) => "FFFFF",
        (Granted::Db(Right::Read), Action::CreateView) => "FFFFF",
        (Granted::Db(Right::Read), Action::Admin) => "FFFFF",
        (Granted::Db(Right::Write), Action::Read) => "FFFFF", // write does not imply read
        (Granted::Db(Right::Write), Action::Write) => "TTTTT",
        (Granted::Db(Right::Write), Action::CreateView) => "TTTTT",
        (Granted::Db(Right::Write), Action::Admin) => "FFFFF",
        (Granted::Db(Right::Admin), Action::Read) => "TTTTT", // past reader lists too
        (Granted::Db(Right::Admin), Action::Write) => "TTTTT",
        (Granted::Db(Right::Admin), Action::CreateView) => "TTTTT",
        (Granted::Db(Right::Admin), Action::Admin) => "TTTTT",
        (Granted::View, Action::Read) => "FTFFF", // the view only
        (Granted::View, _) => "FFFFF",
        other => panic!("no table row for {other:?}"),
    };
    let mut out = [false; 5];
    for (slot, c) in out.iter_mut().zip(row.chars()) {
        *slot = c == 'T';
    }
    out
}

fn db_name(path: Path, granted: Granted) -> String {
    format!("{}-{}", path.name(), granted.name())
}

/// The fixture: groups for every path, and one database per (path, granted right).
fn fixture() -> Policy {
    let mut policy = Policy::new(key(OWNER));
    policy
        .add_member(&group("g1"), Member::Key(key(A)))
        .unwrap();
    policy
        .add_member(&group("inner"), Member::Key(key(A)))
        .unwrap();
    policy
        .add_member(&group("mid"), member("group:inner"))
        .unwrap();
    policy
        .add_member(&group("outer"), member("group:mid"))
        .unwrap();
    policy
        .add_member(&group("public"), Member::Anonymous)
        .unwrap();
    for path in PATHS {
        for granted in GRANTED {
            let db: DbName = db_name(path, granted).parse().unwrap();
            let scope = AclScope::Database(db.clone());
            // Every database has an ACL, even when it grants nothing.
            policy
                .set_acl(acls_and_groups::DbAcl::new(scope.clone()))
                .unwrap();
            let Some(m) = path.member() else { continue };
            match granted {
                Granted::Db(right) => assert!(policy.grant(&scope, right, m).unwrap()),
                Granted::View => {
                    assert!(policy.grant_view(&db, &"v".parse().unwrap(), m).unwrap())
                }
            }
        }
    }
    policy.validate().unwrap();
    policy
}

const PRINCIPALS: [(&str, Principal); 5] = [
    ("key A", Principal::Key(KeyId::from_digest([A; 32]))),
    ("key B", Principal::Key(KeyId::from_digest([B; 32]))),
    ("anonymous", Principal::Anonymous),
    ("owner key", Principal::Key(KeyId::from_digest([OWNER; 32]))),
    ("owner", Principal::Owner),
];

#[test]
fn every_action_principal_and_grant_path() {
    let policy = fixture();
    let readers_out = [Member::Key(key(Z))];
    let mut checked = 0;
    for path in PATHS {
        let entry = path.member();
        let readers_in: Vec<Member> = entry.iter().cloned().collect();
        for granted in GRANTED {
            let db = db_name(path, granted);
            for (who, principal) in PRINCIPALS {
                let is_owner = matches!(principal, Principal::Owner) || who == "owner key";
                let via = path.via(principal);
                for action in ACTIONS {
                    let row = implied(granted, action);
                    for (i, kind) in KINDS.into_iter().enumerate() {
                        let resource = match kind {
                            Kind::Db => Resource::Database(&db),
                            Kind::View => Resource::View { db: &db, view: "v" },
                            Kind::Doc => Resource::Document {
                                db: &db,
                                readers: None,
                            },
                            Kind::DocIn => Resource::Document {
                                db: &db,
                                readers: Some(&readers_in),
                            },
                            Kind::DocOut => Resource::Document {
                                db: &db,
                                readers: Some(&readers_out),
                            },
                        };
                        let expected = is_owner || (via.is_some() && row[i]);
                        let d = policy.may(principal, action, resource);
                        let case = format!(
                            "{who} {action} {kind:?} on {db} (path {path:?}, granted {granted:?}): {d}"
                        );
                        assert_eq!(d.allowed, expected, "{case}");
                        assert!(
                            d.to_string().starts_with(if expected {
                                "allowed: "
                            } else {
                                "denied: "
                            }),
                            "{case}"
                        );
                        check_reason(&d.reason, is_owner, via.as_ref(), granted, kind, &case);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 6 * 4 * 5 * 4 * 5);
}

/// Checks the reason's shape: which variant, which list matched, and how.
fn check_reason(
    reason: &Reason,
    is_owner: bool,
    via: Option<&Via>,
    granted: Granted,
    kind: Kind,
    case: &str,
) {
    if is_owner {
        assert!(matches!(reason, Reason::Owner { .. }), "{case}");
        return;
    }
    let (expected_right, expected_view) = match granted {
        Granted::Db(right) => (right, None),
        Granted::View => (Right::Read, Some("v")),
    };
    match reason {
        Reason::Granted { grant, .. } => {
            assert_eq!(grant.right, expected_right, "{case}");
            assert_eq!(
                grant.view.as_ref().map(|v| v.as_str()),
                expected_view,
                "{case}"
            );
            assert!(matches!(grant.scope, AclScope::Database(_)), "{case}");
            assert_eq!(Some(&grant.matched.via), via, "{case}");
            // A document with a reader list is read through admin only, never plain read.
            if matches!(kind, Kind::DocIn | Kind::DocOut) {
                assert!(
                    grant.right != Right::Read
                        || !matches!(
                            reason,
                            Reason::Granted {
                                on: ResourceKind::Document,
                                ..
                            }
                        ),
                    "{case}"
                );
            }
        }
        Reason::Reader { grant, reader, .. } => {
            assert_eq!(kind, Kind::DocIn, "{case}");
            assert_eq!(grant.right, Right::Read, "{case}");
            assert_eq!(Some(&grant.matched.via), via, "{case}");
            assert_eq!(Some(&reader.via), via, "{case}");
        }
        Reason::NotAReader { grant, .. } => {
            assert_eq!(kind, Kind::DocOut, "{case}");
            assert_eq!(granted, Granted::Db(Right::Read), "{case}");
            assert_eq!(Some(&grant.matched.via), via, "{case}");
        }
        Reason::NoGrant { .. } => {}
        other => panic!("unexpected reason {other:?}: {case}"),
    }
}

/// (principal, database, the document's readers, allowed, reason)
type ReaderRow<'a> = (Principal, &'a str, Option<Vec<Member>>, bool, &'a str);

/// Per-document reader lists: who is in the list, and how, against who may read the database.
#[test]
fn document_reader_lists() {
    let mut policy = Policy::new(key(OWNER));
    let [a, b, c, admin] = [key(A), key(B), key(12), key(13)];
    policy
        .add_member(&group("friends"), Member::Key(a))
        .unwrap();
    policy
        .add_member(&group("friends"), Member::Key(b))
        .unwrap();
    policy.add_member(&group("inner"), Member::Key(a)).unwrap();
    policy
        .add_member(&group("outer"), member("group:inner"))
        .unwrap();
    policy
        .add_member(&group("public"), Member::Anonymous)
        .unwrap();
    let notes: AclScope = "notes".parse().unwrap();
    policy
        .grant(&notes, Right::Read, member("group:friends"))
        .unwrap();
    policy
        .grant(&notes, Right::Admin, Member::Key(admin))
        .unwrap();
    let open: AclScope = "open".parse().unwrap();
    policy.grant(&open, Right::Read, Member::Anonymous).unwrap();

    let m = member;
    let ka = Member::Key(a);
    let table: Vec<ReaderRow<'_>> = vec![
        // no reader list: every reader of the database
        (Principal::Key(a), "notes", None, true, "granted"),
        (Principal::Key(b), "notes", None, true, "granted"),
        (Principal::Key(c), "notes", None, false, "no-grant"),
        (Principal::Anonymous, "notes", None, false, "no-grant"),
        // a key in the list
        (
            Principal::Key(a),
            "notes",
            Some(vec![ka.clone()]),
            true,
            "reader",
        ),
        (
            Principal::Key(b),
            "notes",
            Some(vec![ka.clone()]),
            false,
            "not-a-reader",
        ),
        // a group in the list, and a nested one
        (
            Principal::Key(a),
            "notes",
            Some(vec![m("group:friends")]),
            true,
            "reader",
        ),
        (
            Principal::Key(b),
            "notes",
            Some(vec![m("group:friends")]),
            true,
            "reader",
        ),
        (
            Principal::Key(a),
            "notes",
            Some(vec![m("group:outer")]),
            true,
            "reader",
        ),
        (
            Principal::Key(b),
            "notes",
            Some(vec![m("group:outer")]),
            false,
            "not-a-reader",
        ),
        // anonymous in the list (directly or through a group): every reader of the database
        (
            Principal::Key(b),
            "notes",
            Some(vec![Member::Anonymous]),
            true,
            "reader",
        ),
        (
            Principal::Key(b),
            "notes",
            Some(vec![m("group:public")]),
            true,
            "reader",
        ),
        // the list narrows only: no database read, no document
        (
            Principal::Key(c),
            "notes",
            Some(vec![Member::Key(c)]),
            false,
            "no-grant",
        ),
        (
            Principal::Anonymous,
            "notes",
            Some(vec![Member::Anonymous]),
            false,
            "no-grant",
        ),
        // an empty list: admins and the owner only
        (
            Principal::Key(a),
            "notes",
            Some(vec![]),
            false,
            "not-a-reader",
        ),
        (
            Principal::Key(admin),
            "notes",
            Some(vec![]),
            true,
            "granted",
        ),
        (
            Principal::Key(admin),
            "notes",
            Some(vec![ka.clone()]),
            true,
            "granted",
        ),
        (Principal::Owner, "notes", Some(vec![]), true, "owner"),
        (
            Principal::Key(key(OWNER)),
            "notes",
            Some(vec![ka.clone()]),
            true,
            "owner",
        ),
        // an undefined group in the list matches nobody
        (
            Principal::Key(a),
            "notes",
            Some(vec![m("group:nobody")]),
            false,
            "not-a-reader",
        ),
        // a public database: anonymous reads documents listed for anonymous, not others
        (
            Principal::Anonymous,
            "open",
            Some(vec![Member::Anonymous]),
            true,
            "reader",
        ),
        (
            Principal::Anonymous,
            "open",
            Some(vec![m("group:public")]),
            true,
            "reader",
        ),
        (
            Principal::Anonymous,
            "open",
            Some(vec![ka.clone()]),
            false,
            "not-a-reader",
        ),
        (
            Principal::Key(a),
            "open",
            Some(vec![m("group:outer")]),
            true,
            "reader",
        ),
    ];
    for (i, (principal, db, readers, allowed, reason)) in table.iter().enumerate() {
        let resource = Resource::Document {
            db,
            readers: readers.as_deref(),
        };
        let d = policy.may(*principal, Action::Read, resource);
        let case = format!(
            "row {i}: {principal} reading a document of {db} with readers {readers:?}: {d}"
        );
        assert_eq!(d.allowed, *allowed, "{case}");
        let got = match d.reason {
            Reason::Owner { .. } => "owner",
            Reason::Granted { .. } => "granted",
            Reason::Reader { .. } => "reader",
            Reason::NotAReader { .. } => "not-a-reader",
            Reason::NoGrant { .. } => "no-grant",
            _ => "other",
        };
        assert_eq!(got, *reason, "{case}");
        // Reader lists never affect writing.
        let w = policy.may(*principal, Action::Write, resource);
        let w_none = policy.may(
            *principal,
            Action::Write,
            Resource::Document { db, readers: None },
        );
        assert_eq!(w.allowed, w_none.allowed, "{case}");
    }
}

/// Grants in the all-databases ACL apply to every database, after the database's own.
#[test]
fn all_databases_acl() {
    let mut policy = Policy::new(key(OWNER));
    let [a, b] = [key(A), key(B)];
    policy.add_member(&group("me"), Member::Key(a)).unwrap();
    policy
        .grant(&AclScope::AllDatabases, Right::Admin, member("group:me"))
        .unwrap();
    policy
        .grant(&AclScope::AllDatabases, Right::Read, Member::Key(b))
        .unwrap();
    let photos: AclScope = "photos".parse().unwrap();
    policy.grant(&photos, Right::Read, Member::Key(b)).unwrap();

    for db in ["photos", "never-mentioned", "_users"] {
        for action in ACTIONS {
            let d = policy.may(Principal::Key(a), action, Resource::Database(db));
            assert!(d.allowed, "{d}");
            let Reason::Granted { grant, .. } = &d.reason else {
                panic!("{d}")
            };
            assert_eq!(grant.scope, AclScope::AllDatabases);
            assert_eq!(grant.right, Right::Admin);
        }
        let d = policy.may(Principal::Key(b), Action::Read, Resource::Database(db));
        assert!(d.allowed, "{d}");
        let Reason::Granted { grant, .. } = &d.reason else {
            panic!("{d}")
        };
        // The database's own grant is named first when there is one.
        let expected = if db == "photos" {
            photos.clone()
        } else {
            AclScope::AllDatabases
        };
        assert_eq!(grant.scope, expected);
        assert!(
            !policy
                .may(Principal::Key(b), Action::Write, Resource::Database(db))
                .allowed
        );
        assert!(
            !policy
                .may(Principal::Anonymous, Action::Read, Resource::Database(db))
                .allowed
        );
    }
    // All-databases read reaches views and documents without reader lists too.
    assert!(
        policy
            .may(
                Principal::Key(b),
                Action::Read,
                Resource::View { db: "x", view: "v" }
            )
            .allowed
    );
    // An empty policy denies everyone but the owner.
    let empty = Policy::new(key(OWNER));
    for (_, principal) in PRINCIPALS {
        for action in ACTIONS {
            let d = empty.may(principal, action, Resource::Database("photos"));
            assert_eq!(d.allowed, empty.is_owner(&principal), "{d}");
        }
    }
}

/// The explanation lines, exactly.
#[test]
fn explanations() {
    let policy = fixture();
    let a = key(A);
    let cases: [(Principal, Action, Resource<'_>, String); 8] = [
        (
            Principal::Key(a),
            Action::Read,
            Resource::Database("nested-read"),
            format!(
                "allowed: key:{a} may read the database: read on database \"nested-read\" is granted to group:outer (key:{a} ∈ inner ∈ mid ∈ outer)"
            ),
        ),
        (
            Principal::Key(a),
            Action::Read,
            Resource::Database("direct-admin"),
            format!(
                "allowed: key:{a} may read the database: admin on database \"direct-admin\" is granted to key:{a}"
            ),
        ),
        (
            Principal::Anonymous,
            Action::Read,
            Resource::View {
                db: "anonymous-view",
                view: "v",
            },
            "allowed: anonymous may read the view: read on view \"v\" of database \"anonymous-view\" is granted to anonymous (everyone)".to_string(),
        ),
        (
            Principal::Anonymous,
            Action::Write,
            Resource::Database("public-write"),
            "allowed: anonymous may write the database: write on database \"public-write\" is granted to group:public (anonymous, so everyone ∈ public)".to_string(),
        ),
        (
            Principal::Anonymous,
            Action::CreateView,
            Resource::Database("direct-write"),
            "denied: anonymous may not create views: no grant matches (needs write or admin)"
                .to_string(),
        ),
        (
            Principal::Key(a),
            Action::Read,
            Resource::View {
                db: "direct-write",
                view: "v",
            },
            format!(
                "denied: key:{a} may not read the view: no grant matches (needs a read grant on the view, or read or admin)"
            ),
        ),
        (
            Principal::Owner,
            Action::Admin,
            Resource::Database("anything"),
            "allowed: the owner may do everything".to_string(),
        ),
        (
            Principal::Key(key(OWNER)),
            Action::Admin,
            Resource::Database("anything"),
            format!(
                "allowed: key:{} is the owner, who may do everything",
                key(OWNER)
            ),
        ),
    ];
    for (principal, action, resource, expected) in cases {
        assert_eq!(
            policy.may(principal, action, resource).to_string(),
            expected
        );
    }
    let readers = [Member::Key(key(Z))];
    let d = policy.may(
        Principal::Key(a),
        Action::Read,
        Resource::Document {
            db: "group-read",
            readers: Some(&readers),
        },
    );
    assert_eq!(
        d.to_string(),
        format!(
            "denied: key:{a} may not read the document: read on database \"group-read\" is granted to group:g1 (key:{a} ∈ g1), but the document's readers do not include key:{a}"
        )
    );
    let readers = [member("group:outer")];
    let d = policy.may(
        Principal::Key(a),
        Action::Read,
        Resource::Document {
            db: "direct-read",
            readers: Some(&readers),
        },
    );
    assert_eq!(
        d.to_string(),
        format!(
            "allowed: key:{a} may read the document: read on database \"direct-read\" is granted to key:{a}, and the document's readers include group:outer (key:{a} ∈ inner ∈ mid ∈ outer)"
        )
    );
}

/// Changes take effect on the next decision (the caches are invalidated).
#[test]
fn changes_take_effect_immediately() {
    let mut policy = fixture();
    let a = Principal::Key(key(A));
    let db = Resource::Database("nothing-read");
    assert!(!policy.may(a, Action::Read, db).allowed);
    let scope: AclScope = "nothing-read".parse().unwrap();
    policy
        .grant(&scope, Right::Read, member("group:outer"))
        .unwrap();
    assert!(policy.may(a, Action::Read, db).allowed);
    // Cut the chain in the middle: outer no longer contains mid.
    assert!(policy.remove_member("outer", &member("group:mid")));
    assert!(!policy.may(a, Action::Read, db).allowed);
    // Put it back through another route.
    policy
        .add_member(&group("outer"), member("group:inner"))
        .unwrap();
    let d = policy.may(a, Action::Read, db);
    assert!(
        d.to_string()
            .ends_with(&format!("(key:{} ∈ inner ∈ outer)", key(A))),
        "{d}"
    );
    assert!(policy.revoke(&scope, Right::Read, &member("group:outer")));
    assert!(!policy.may(a, Action::Read, db).allowed);
    // Deleting a group leaves its references dangling (a warning) and grants nothing.
    policy
        .grant(&scope, Right::Read, member("group:g1"))
        .unwrap();
    assert!(policy.may(a, Action::Read, db).allowed);
    assert!(policy.remove_group("g1").is_some());
    assert!(!policy.may(a, Action::Read, db).allowed);
    assert!(policy.validate().is_err());
    assert!(policy.warnings().iter().any(|w| w.to_string()
        == "acl:nothing-read refers to group:g1, which is not defined (it has no members)"));
    // Views: grant, revoke.
    let db_name: DbName = "nothing-read".parse().unwrap();
    let view = Resource::View {
        db: "nothing-read",
        view: "v2",
    };
    assert!(!policy.may(Principal::Anonymous, Action::Read, view).allowed);
    policy
        .grant_view(&db_name, &"v2".parse().unwrap(), Member::Anonymous)
        .unwrap();
    assert!(policy.may(Principal::Anonymous, Action::Read, view).allowed);
    assert!(policy.revoke_view(&db_name, "v2", &Member::Anonymous));
    assert!(!policy.may(Principal::Anonymous, Action::Read, view).allowed);
    // Removing an ACL.
    assert!(policy.remove_acl(&scope).is_some());
    assert!(!policy.may(a, Action::Admin, db).allowed);
}

/// Cycles answer, terminate, and are reported.
#[test]
fn cycles_are_reported_and_harmless() {
    let mut policy = Policy::new(key(OWNER));
    let a = key(A);
    policy.add_member(&group("x"), member("group:y")).unwrap();
    policy.add_member(&group("y"), member("group:z")).unwrap();
    policy.add_member(&group("z"), member("group:x")).unwrap();
    policy.add_member(&group("z"), Member::Key(a)).unwrap();
    policy
        .add_member(&group("self"), member("group:self"))
        .unwrap();
    let scope: AclScope = "db".parse().unwrap();
    // x contains y contains z contains x; a is in z, so in all three.
    policy
        .grant(&scope, Right::Read, member("group:x"))
        .unwrap();
    let d = policy.may(Principal::Key(a), Action::Read, Resource::Database("db"));
    assert!(d.allowed);
    assert!(d.to_string().ends_with("∈ z ∈ y ∈ x)"), "{d}");
    assert!(
        !policy
            .may(
                Principal::Key(key(B)),
                Action::Read,
                Resource::Database("db")
            )
            .allowed
    );
    let cycles: Vec<Vec<String>> = policy
        .cycles()
        .iter()
        .map(|c| c.iter().map(|g| g.to_string()).collect())
        .collect();
    assert_eq!(cycles, vec![vec!["self"], vec!["x", "y", "z"]]);
    let err = policy.validate().unwrap_err();
    assert_eq!(err.kind(), acls_and_groups::ErrorKind::Inconsistent);
    assert_eq!(
        err.to_string(),
        "inconsistent policy: groups contain each other in a cycle: self"
    );
    assert_eq!(policy.warnings().len(), 2);
}

#[test]
fn names_are_checked_at_the_edge() {
    assert!("*".parse::<DbName>().is_err());
    assert_eq!("*".parse::<AclScope>().unwrap(), AclScope::AllDatabases);
    assert!("Photos".parse::<AclScope>().is_err());
    // A resource may name anything; an unknown or invalid name simply has no grants.
    let policy = fixture();
    let d = policy.may(
        Principal::Key(key(A)),
        Action::Read,
        Resource::Database("../etc"),
    );
    assert!(!d.allowed);
}
