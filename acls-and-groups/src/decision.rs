//! Questions ([`Action`] on a [`Resource`]) and answers ([`Decision`] with its [`Reason`]).

use std::fmt;

use public_key_identity::KeyId;

use crate::index::{Acl, GroupIndex, List};
use crate::name::{DbName, GroupName, ViewName};
use crate::policy::{AclScope, Policy, Right};
use crate::principal::{Member, Principal};
use crate::revocation::Revocation;

/// What a principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Action {
    /// Read: documents, changes, a view's output, one document.
    Read,
    /// Write documents (on a view: create or change that view, as [`Action::CreateView`]).
    Write,
    /// Administer the database: change its ACL (on a view or document: its database's ACL).
    Admin,
    /// Create or change views on the database; needs write.
    CreateView,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
            Action::CreateView => "create-view",
        })
    }
}

/// What the action is on. Names are plain `&str` (as they come from a request path); a name
/// that no ACL mentions gets only the owner's and the all-databases ACL's grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resource<'a> {
    /// A database as a whole (`_all_docs`, `_changes`, `_bulk_docs`, its `_security`).
    Database(&'a str),
    /// One view of a database.
    View {
        /// The database.
        db: &'a str,
        /// The view's name.
        view: &'a str,
    },
    /// One document of a database, with its reader list if it has one
    /// ([`document_readers`](crate::document_readers) reads it from the document).
    Document {
        /// The database.
        db: &'a str,
        /// `None`: readable by every reader of the database. `Some(list)`: readable only by
        /// readers of the database who are also in `list` (and by its admins and the owner);
        /// an empty list leaves only admins and the owner.
        readers: Option<&'a [Member]>,
    },
}

impl<'a> Resource<'a> {
    /// The database the resource belongs to.
    pub fn db(&self) -> &'a str {
        match *self {
            Resource::Database(db) | Resource::View { db, .. } | Resource::Document { db, .. } => {
                db
            }
        }
    }

    /// The kind of resource, without names.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Database(_) => ResourceKind::Database,
            Resource::View { .. } => ResourceKind::View,
            Resource::Document { .. } => ResourceKind::Document,
        }
    }
}

/// The kind of a [`Resource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceKind {
    /// A database.
    Database,
    /// A view.
    View,
    /// A document.
    Document,
}

/// The answer to [`Policy::may`]: allowed or not, and why.
///
/// `Display` gives one line for logs and status pages, e.g.
/// `allowed: key:… may read the database: read on database "photos" is granted to group:friends (key:… ∈ phones ∈ friends)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
}

/// Why a [`Decision`] went the way it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Allowed: the principal is the owner.
    Owner {
        /// Who asked.
        principal: Principal,
    },
    /// Allowed: a grant matched.
    Granted {
        /// Who asked.
        principal: Principal,
        /// What was asked.
        action: Action,
        /// On what kind of resource.
        on: ResourceKind,
        /// The grant that matched.
        grant: Grant,
    },
    /// Allowed: a read grant on the database matched, and so did the document's reader list.
    Reader {
        /// Who asked.
        principal: Principal,
        /// The read grant on the database.
        grant: Grant,
        /// The reader-list entry that matched.
        reader: Match,
    },
    /// Denied: no grant matched (deny by default).
    NoGrant {
        /// Who asked.
        principal: Principal,
        /// What was asked.
        action: Action,
        /// On what kind of resource.
        on: ResourceKind,
    },
    /// Denied: the principal may read the database, but is not in the document's reader list.
    NotAReader {
        /// Who asked.
        principal: Principal,
        /// The read grant on the database that matched.
        grant: Grant,
    },
    /// Denied: the principal's key was revoked, and may do nothing (whatever it is granted).
    Revoked {
        /// Who asked.
        principal: Principal,
        /// The revocation.
        revocation: Revocation,
    },
}

/// A grant that matched: which list of which ACL, and how the principal is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grant {
    /// The ACL: one database, or all databases.
    pub scope: AclScope,
    /// The view, for a view's read list.
    pub view: Option<ViewName>,
    /// The list: read, write or admin (a view's list is `Read`).
    pub right: Right,
    /// The list entry that matched, and how.
    pub matched: Match,
}

/// A list entry that matched a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Match {
    /// The entry.
    pub member: Member,
    /// How the principal is in it.
    pub via: Via,
}

/// How a principal is in a list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Via {
    /// The entry is the principal's own key.
    Direct,
    /// The entry is `anonymous`, which matches everyone.
    Everyone,
    /// Through groups: the principal is in `path[0]`, which is in `path[1]`, ..., which is the
    /// entry's group (the last element). A shortest such chain.
    Groups {
        /// The chain of groups, ending with the entry's group.
        path: Vec<GroupName>,
        /// Whether the chain starts from a group that lists `anonymous` (and so everyone) rather
        /// than one that lists the principal.
        from_anonymous: bool,
    },
}

impl Decision {
    fn allow(reason: Reason) -> Decision {
        Decision {
            allowed: true,
            reason,
        }
    }

    fn deny(reason: Reason) -> Decision {
        Decision {
            allowed: false,
            reason,
        }
    }
}

/// The principal, resolved once per decision.
struct Who<'i> {
    key: Option<KeyId>,
    direct: &'i [u32],
    anonymous: &'i [u32],
}

impl List {
    /// The first entry that matches: the principal's key, then its groups, then `anonymous`,
    /// then groups that contain `anonymous`.
    fn matches(&self, who: &Who<'_>, groups: &GroupIndex) -> Option<Match> {
        if let Some(key) = who.key {
            if self.keys.binary_search(&key).is_ok() {
                return Some(Match {
                    member: Member::Key(key),
                    via: Via::Direct,
                });
            }
        }
        if !who.direct.is_empty() {
            for &group in self.groups.iter() {
                if let Some(from) = groups.reaching(who.direct, group) {
                    return Some(group_match(groups, from, group, false));
                }
            }
        }
        if self.anonymous {
            return Some(Match {
                member: Member::Anonymous,
                via: Via::Everyone,
            });
        }
        if !who.anonymous.is_empty() {
            for &group in self.groups.iter() {
                if let Some(from) = groups.reaching(who.anonymous, group) {
                    return Some(group_match(groups, from, group, true));
                }
            }
        }
        None
    }
}

fn group_match(groups: &GroupIndex, from: u32, group: u32, from_anonymous: bool) -> Match {
    Match {
        member: Member::Group(groups.name(group)),
        via: Via::Groups {
            path: groups.path(from, group),
            from_anonymous,
        },
    }
}

/// Matches a document's reader list (uncompiled: it comes with each request).
fn reader_match(readers: &[Member], who: &Who<'_>, groups: &GroupIndex) -> Option<Match> {
    if let Some(key) = who.key {
        if readers.contains(&Member::Key(key)) {
            return Some(Match {
                member: Member::Key(key),
                via: Via::Direct,
            });
        }
    }
    let group_ids = || {
        readers.iter().filter_map(|m| match m {
            Member::Group(name) => groups.id(name.as_str()),
            _ => None,
        })
    };
    if !who.direct.is_empty() {
        for group in group_ids() {
            if let Some(from) = groups.reaching(who.direct, group) {
                return Some(group_match(groups, from, group, false));
            }
        }
    }
    if readers.contains(&Member::Anonymous) {
        return Some(Match {
            member: Member::Anonymous,
            via: Via::Everyone,
        });
    }
    if !who.anonymous.is_empty() {
        for group in group_ids() {
            if let Some(from) = groups.reaching(who.anonymous, group) {
                return Some(group_match(groups, from, group, true));
            }
        }
    }
    None
}

/// Where to look, in order: the database's own ACL (with its name), then the all-databases ACL.
struct Scopes<'i> {
    db: Option<(&'i DbName, &'i Acl)>,
    all: Option<&'i Acl>,
}

impl Scopes<'_> {
    /// The first match among `rights` in the database's ACL, then among `rights` in the
    /// all-databases ACL.
    fn find(&self, rights: &[Right], who: &Who<'_>, groups: &GroupIndex) -> Option<Grant> {
        if let Some((name, acl)) = self.db {
            for &right in rights {
                if let Some(matched) = list(acl, right).matches(who, groups) {
                    return Some(Grant {
                        scope: AclScope::Database(name.clone()),
                        view: None,
                        right,
                        matched,
                    });
                }
            }
        }
        if let Some(acl) = self.all {
            for &right in rights {
                if let Some(matched) = list(acl, right).matches(who, groups) {
                    return Some(Grant {
                        scope: AclScope::AllDatabases,
                        view: None,
                        right,
                        matched,
                    });
                }
            }
        }
        None
    }
}

fn list(acl: &Acl, right: Right) -> &List {
    match right {
        Right::Read => &acl.read,
        Right::Write => &acl.write,
        Right::Admin => &acl.admin,
    }
}

const READ: &[Right] = &[Right::Read, Right::Admin];
const WRITE: &[Right] = &[Right::Write, Right::Admin];
const ADMIN: &[Right] = &[Right::Admin];

impl Policy {
    /// May `principal` do `action` on `resource`? Deny by default; pure (no I/O, no clock), and
    /// the same question always gets the same answer from the same policy.
    ///
    /// The rules (the crate documentation has them as a table):
    /// * the owner may do everything;
    /// * a revoked key ([`Policy::revoke_key`]) may do nothing, not even what `anonymous` may;
    /// * `Admin` needs an admin grant; `Write` and `CreateView` need write or admin;
    /// * `Read` of a database needs read or admin; of a view, the view's read grant or read or
    ///   admin on the database; of a document, read or admin on the database, and, when the
    ///   document has a reader list, admin or membership in that list;
    /// * on a view or a document, `Write`/`CreateView` and `Admin` are asked of its database;
    /// * each right is looked up in the database's ACL, then in the all-databases ACL.
    pub fn may(&self, principal: Principal, action: Action, resource: Resource<'_>) -> Decision {
        if self.is_owner(&principal) {
            return Decision::allow(Reason::Owner { principal });
        }
        if let Principal::Key(key) = principal {
            if let Some(revocation) = self.revocation(&key) {
                return Decision::deny(Reason::Revoked {
                    principal,
                    revocation: revocation.clone(),
                });
            }
        }
        let (groups, acls) = self.indexes();
        let who = who(groups, principal);
        let db = resource.db();
        let scopes = Scopes {
            db: acls.databases.get_key_value(db),
            all: acls.all.as_ref(),
        };
        let on = resource.kind();
        let granted = |grant: Grant| {
            Decision::allow(Reason::Granted {
                principal,
                action,
                on,
                grant,
            })
        };
        let none = || {
            Decision::deny(Reason::NoGrant {
                principal,
                action,
                on,
            })
        };
        match (action, resource) {
            (Action::Admin, _) => scopes.find(ADMIN, &who, groups).map_or_else(none, granted),
            (Action::Write | Action::CreateView, _) => {
                scopes.find(WRITE, &who, groups).map_or_else(none, granted)
            }
            (Action::Read, Resource::Database(_) | Resource::Document { readers: None, .. }) => {
                scopes.find(READ, &who, groups).map_or_else(none, granted)
            }
            (Action::Read, Resource::View { view, .. }) => {
                let view_grant = scopes.db.and_then(|(name, acl)| {
                    let (view_name, list) = acl.views.get_key_value(view)?;
                    Some(Grant {
                        scope: AclScope::Database(name.clone()),
                        view: Some(view_name.clone()),
                        right: Right::Read,
                        matched: list.matches(&who, groups)?,
                    })
                });
                view_grant
                    .or_else(|| scopes.find(READ, &who, groups))
                    .map_or_else(none, granted)
            }
            (
                Action::Read,
                Resource::Document {
                    readers: Some(readers),
                    ..
                },
            ) => {
                if let Some(grant) = scopes.find(ADMIN, &who, groups) {
                    return granted(grant);
                }
                let Some(grant) = scopes.find(&[Right::Read], &who, groups) else {
                    return none();
                };
                match reader_match(readers, &who, groups) {
                    Some(reader) => Decision::allow(Reason::Reader {
                        principal,
                        grant,
                        reader,
                    }),
                    None => Decision::deny(Reason::NotAReader { principal, grant }),
                }
            }
        }
    }
}

fn who(groups: &GroupIndex, principal: Principal) -> Who<'_> {
    match principal {
        Principal::Key(key) => Who {
            key: Some(key),
            direct: groups.key_groups(&key),
            anonymous: groups.anonymous_groups(),
        },
        // `Owner` is answered before; were it not, it would get only what everyone gets.
        Principal::Anonymous | Principal::Owner => Who {
            key: None,
            direct: &[],
            anonymous: groups.anonymous_groups(),
        },
    }
}

// ---- explanations ----

fn verb(action: Action, on: ResourceKind) -> &'static str {
    match (action, on) {
        (Action::Read, ResourceKind::Database) => "read the database",
        (Action::Read, ResourceKind::View) => "read the view",
        (Action::Read, ResourceKind::Document) => "read the document",
        (Action::Write, ResourceKind::Database) => "write the database",
        (Action::Write, ResourceKind::Document) => "write the document",
        (Action::Write | Action::CreateView, ResourceKind::View) => "create the view",
        (Action::CreateView, _) => "create views",
        (Action::Admin, _) => "administer the database",
    }
}

fn needs(action: Action, on: ResourceKind) -> &'static str {
    match (action, on) {
        (Action::Read, ResourceKind::View) => "a read grant on the view, or read or admin",
        (Action::Read, _) => "read or admin",
        (Action::Write | Action::CreateView, _) => "write or admin",
        (Action::Admin, _) => "admin",
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.allowed {
            "allowed: "
        } else {
            "denied: "
        })?;
        self.reason.fmt(f)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Owner { principal } => match principal {
                Principal::Owner => f.write_str("the owner may do everything"),
                _ => write!(f, "{principal} is the owner, who may do everything"),
            },
            Reason::Granted {
                principal,
                action,
                on,
                grant,
            } => write!(
                f,
                "{principal} may {}: {}",
                verb(*action, *on),
                GrantText(grant, principal)
            ),
            Reason::Reader {
                principal,
                grant,
                reader,
            } => write!(
                f,
                "{principal} may read the document: {}, and the document's readers include {}",
                GrantText(grant, principal),
                MatchText(reader, principal)
            ),
            Reason::NoGrant {
                principal,
                action,
                on,
            } => write!(
                f,
                "{principal} may not {}: no grant matches (needs {})",
                verb(*action, *on),
                needs(*action, *on)
            ),
            Reason::NotAReader { principal, grant } => write!(
                f,
                "{principal} may not read the document: {}, but the document's readers do not include {principal}",
                GrantText(grant, principal)
            ),
            Reason::Revoked {
                principal,
                revocation,
            } => write!(
                f,
                "{principal} was revoked by key:{} and may do nothing",
                revocation.by
            ),
        }
    }
}

struct GrantText<'a>(&'a Grant, &'a Principal);

impl fmt::Display for GrantText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let GrantText(grant, principal) = self;
        write!(f, "{} on ", grant.right)?;
        if let Some(view) = &grant.view {
            write!(f, "view {:?} of ", view.as_str())?;
        }
        match &grant.scope {
            AclScope::AllDatabases => f.write_str("all databases")?,
            AclScope::Database(db) => write!(f, "database {:?}", db.as_str())?,
        }
        write!(f, " is granted to {}", MatchText(&grant.matched, principal))
    }
}

struct MatchText<'a>(&'a Match, &'a Principal);

impl fmt::Display for MatchText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let MatchText(matched, principal) = self;
        write!(f, "{}", matched.member)?;
        match &matched.via {
            Via::Direct => Ok(()),
            Via::Everyone => f.write_str(" (everyone)"),
            Via::Groups {
                path,
                from_anonymous,
            } => {
                if *from_anonymous {
                    f.write_str(" (anonymous, so everyone")?;
                } else {
                    write!(f, " ({principal}")?;
                }
                for group in path {
                    write!(f, " ∈ {group}")?;
                }
                f.write_str(")")
            }
        }
    }
}
