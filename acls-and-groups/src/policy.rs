//! The policy: groups and ACLs, the owner, and every way to change them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use public_key_identity::KeyId;

use crate::error::{Error, Result, Warning};
use crate::index::{AclIndex, GroupIndex};
use crate::limits::{MAX_ACLS, MAX_GROUPS, MAX_MEMBERS, MAX_VIEWS};
use crate::name::{DbName, GroupName, ViewName};
use crate::principal::{Member, Principal};
use crate::revocation::Revocations;

/// A right on a database, as listed in its ACL.
///
/// `Admin` implies `Write` and `Read`; `Write` does **not** imply `Read` (a write-only database
/// is a drop box). See the crate documentation for the full rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// Read documents, changes, views.
    Read,
    /// Write documents and create views.
    Write,
    /// Change the database's ACL; implies read and write, and reads past document reader lists.
    Admin,
}

impl Right {
    /// The right's name in JSON documents and explanations: `read`, `write`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an ACL applies to: one database, or all databases (`*` in text and JSON).
///
/// Grants in the all-databases ACL apply to every database in addition to the database's own
/// ACL (e.g. `admin` for the person's own devices, the `me` group). It has no view grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclScope {
    /// Every database (`*`).
    AllDatabases,
    /// One database.
    Database(DbName),
}

impl AclScope {
    /// The scope of one database, checking its name.
    pub fn database(name: &str) -> Result<AclScope> {
        Ok(AclScope::Database(DbName::new(name)?))
    }
}

impl FromStr for AclScope {
    type Err = Error;

    /// `*` is all databases; anything else must be a valid database name.
    fn from_str(s: &str) -> Result<AclScope> {
        if s == "*" {
            Ok(AclScope::AllDatabases)
        } else {
            AclScope::database(s)
        }
    }
}

impl From<DbName> for AclScope {
    fn from(db: DbName) -> AclScope {
        AclScope::Database(db)
    }
}

impl fmt::Display for AclScope {
    /// `*` or the database name (the JSON form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclScope::AllDatabases => f.write_str("*"),
            AclScope::Database(db) => f.write_str(db.as_str()),
        }
    }
}

/// The ACL of one database (or of all databases): who may read, write and administer it, and
/// who may read each of its views. Stored as the JSON document `acl:<db>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbAcl {
    /// What the ACL applies to.
    pub scope: AclScope,
    /// Who may read the database (subject to document reader lists).
    pub read: BTreeSet<Member>,
    /// Who may write the database and create views on it.
    pub write: BTreeSet<Member>,
    /// Who may change the ACL; implies read (past reader lists) and write.
    pub admin: BTreeSet<Member>,
    /// Who may read each view, in addition to the database's readers. Always empty in the
    /// all-databases ACL.
    pub views: BTreeMap<ViewName, BTreeSet<Member>>,
}

impl DbAcl {
    /// An ACL that grants nothing.
    pub fn new(scope: AclScope) -> DbAcl {
        DbAcl {
            scope,
            read: BTreeSet::new(),
            write: BTreeSet::new(),
            admin: BTreeSet::new(),
            views: BTreeMap::new(),
        }
    }

    /// The member list of one right.
    pub fn list(&self, right: Right) -> &BTreeSet<Member> {
        match right {
            Right::Read => &self.read,
            Right::Write => &self.write,
            Right::Admin => &self.admin,
        }
    }

    fn list_mut(&mut self, right: Right) -> &mut BTreeSet<Member> {
        match right {
            Right::Read => &mut self.read,
            Right::Write => &mut self.write,
            Right::Admin => &mut self.admin,
        }
    }

    /// The CouchDB document id this ACL is stored under: `acl:<db>` or `acl:*`.
    pub fn doc_id(&self) -> String {
        format!("acl:{}", self.scope)
    }

    /// Every member list: read, write, admin, then the views'.
    pub(crate) fn lists(&self) -> impl Iterator<Item = &BTreeSet<Member>> {
        [&self.read, &self.write, &self.admin]
            .into_iter()
            .chain(self.views.values())
    }

    pub(crate) fn check_limits(&self) -> Result<()> {
        if self.views.len() > MAX_VIEWS {
            return Err(Error::LimitExceeded {
                what: "views in one ACL",
                limit: MAX_VIEWS,
            });
        }
        if self.scope == AclScope::AllDatabases && !self.views.is_empty() {
            return Err(Error::InvalidDocument {
                document: self.doc_id(),
                field: Some("views".into()),
                reason: NO_VIEWS_IN_ALL.into(),
            });
        }
        if self.lists().any(|list| list.len() > MAX_MEMBERS) {
            return Err(Error::LimitExceeded {
                what: "members in one list",
                limit: MAX_MEMBERS,
            });
        }
        Ok(())
    }
}

pub(crate) const NO_VIEWS_IN_ALL: &str =
    "the all-databases ACL (db \"*\") has no view grants; put them in the database's own ACL";

/// A named set of members (keys, other groups, or `anonymous`). Stored as the JSON document
/// `group:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Group {
    /// The group's name.
    pub name: GroupName,
    /// Its direct members.
    pub members: BTreeSet<Member>,
}

impl Group {
    /// A group without members.
    pub fn new(name: GroupName) -> Group {
        Group {
            name,
            members: BTreeSet::new(),
        }
    }

    /// The CouchDB document id this group is stored under: `group:<name>`.
    pub fn doc_id(&self) -> String {
        format!("group:{}", self.name)
    }

    fn check_limits(&self) -> Result<()> {
        if self.members.len() > MAX_MEMBERS {
            return Err(Error::LimitExceeded {
                what: "members in one group",
                limit: MAX_MEMBERS,
            });
        }
        Ok(())
    }
}

/// The whole access policy of one device: its owner, its groups and its ACLs, with the caches
/// that make [`Policy::may`] fast.
///
/// Every change goes through a `&mut self` method that invalidates the caches; the next decision
/// rebuilds them (group closures only when groups changed). A `Policy` is `Send + Sync`: share it
/// behind an `RwLock` or swap whole copies.
pub struct Policy {
    owner: KeyId,
    pub(crate) groups: BTreeMap<GroupName, Group>,
    pub(crate) acls: BTreeMap<AclScope, DbAcl>,
    /// Revoked keys (see [`crate::Revocation`]): a set that only grows.
    pub(crate) revoked: Revocations,
    group_index: OnceLock<GroupIndex>,
    acl_index: OnceLock<AclIndex>,
}

impl Policy {
    /// An empty policy for the device whose own key id is `owner`: it denies everyone but the
    /// owner.
    ///
    /// The owner is local to each device and is not part of the JSON form, so that one policy
    /// can replicate between all of a person's devices (each one its own owner; the others are
    /// typically in a group such as `me`).
    pub fn new(owner: KeyId) -> Policy {
        Policy {
            owner,
            groups: BTreeMap::new(),
            acls: BTreeMap::new(),
            revoked: BTreeMap::new(),
            group_index: OnceLock::new(),
            acl_index: OnceLock::new(),
        }
    }

    /// The device's own key id.
    pub fn owner(&self) -> KeyId {
        self.owner
    }

    /// Whether `principal` is the owner.
    pub fn is_owner(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Owner => true,
            Principal::Key(key) => *key == self.owner,
            Principal::Anonymous => false,
        }
    }

    // ---- reading ----

    /// A group by name.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    /// All groups, in name order.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &Group> {
        self.groups.values()
    }

    /// The ACL of one scope (`AclScope::AllDatabases` for `*`).
    pub fn acl(&self, scope: &AclScope) -> Option<&DbAcl> {
        self.acls.get(scope)
    }

    /// All ACLs, the all-databases ACL first, then by database name.
    pub fn acls(&self) -> impl ExactSizeIterator<Item = &DbAcl> {
        self.acls.values()
    }

    // ---- changing groups ----

    /// Adds `member` to `group`, creating the group if needed. Returns whether anything changed.
    pub fn add_member(&mut self, group: &GroupName, member: Member) -> Result<bool> {
        if !self.groups.contains_key(group.as_str()) && self.groups.len() >= MAX_GROUPS {
            return Err(Error::LimitExceeded {
                what: "groups",
                limit: MAX_GROUPS,
            });
        }
        let entry = self
            .groups
            .entry(group.clone())
            .or_insert_with(|| Group::new(group.clone()));
        if entry.members.contains(&member) {
            return Ok(false);
        }
        if entry.members.len() >= MAX_MEMBERS {
            return Err(Error::LimitExceeded {
                what: "members in one group",
                limit: MAX_MEMBERS,
            });
        }
        entry.members.insert(member);
        self.groups_changed();
        Ok(true)
    }

    /// Removes `member` from `group` (the group stays, perhaps empty). Returns whether it was
    /// there.
    pub fn remove_member(&mut self, group: &str, member: &Member) -> bool {
        let removed = self
            .groups
            .get_mut(group)
            .is_some_and(|g| g.members.remove(member));
        if removed {
            self.groups_changed();
        }
        removed
    }

    /// Defines `group`, replacing any group of that name (returned).
    pub fn set_group(&mut self, group: Group) -> Result<Option<Group>> {
        group.check_limits()?;
        if !self.groups.contains_key(&group.name) && self.groups.len() >= MAX_GROUPS {
            return Err(Error::LimitExceeded {
                what: "groups",
                limit: MAX_GROUPS,
            });
        }
        self.groups_changed();
        Ok(self.groups.insert(group.name.clone(), group))
    }

    /// Deletes a group. Grants and groups that name it stay and match nobody (see
    /// [`Policy::warnings`]).
    pub fn remove_group(&mut self, name: &str) -> Option<Group> {
        let removed = self.groups.remove(name);
        if removed.is_some() {
            self.groups_changed();
        }
        removed
    }

    // ---- changing ACLs ----

    /// Grants `right` on `scope` to `member`. Returns whether anything changed.
    pub fn grant(&mut self, scope: &AclScope, right: Right, member: Member) -> Result<bool> {
        let acl = self.acl_entry(scope)?;
        let list = acl.list_mut(right);
        if list.contains(&member) {
            return Ok(false);
        }
        if list.len() >= MAX_MEMBERS {
            return Err(Error::LimitExceeded {
                what: "members in one list",
                limit: MAX_MEMBERS,
            });
        }
        list.insert(member);
        self.acls_changed();
        Ok(true)
    }

    /// Takes back a grant of `right` on `scope` from `member`. Returns whether it was there.
    /// (Only this entry: `member` may still have the right through another entry.)
    pub fn revoke(&mut self, scope: &AclScope, right: Right, member: &Member) -> bool {
        let removed = self
            .acls
            .get_mut(scope)
            .is_some_and(|acl| acl.list_mut(right).remove(member));
        if removed {
            self.acls_changed();
        }
        removed
    }

    /// Every group `principal` is in, directly or through other groups (groups that list
    /// `anonymous` count for everyone), sorted by name. The owner is in no group by this
    /// answer: it needs none; nor is a revoked key (see [`Policy::revoke_key`]): it has none.
    pub fn groups_of(&self, principal: &Principal) -> Vec<GroupName> {
        if self.is_owner(principal) || self.is_revoked(principal) {
            return Vec::new();
        }
        let (groups, _) = self.indexes();
        let mut direct: Vec<u32> = groups.anonymous_groups().to_vec();
        if let Principal::Key(key) = principal {
            direct.extend_from_slice(groups.key_groups(key));
        }
        groups.closure(&direct)
    }

    /// Lets `member` read the view `view` of database `db`. Returns whether anything changed.
    pub fn grant_view(&mut self, db: &DbName, view: &ViewName, member: Member) -> Result<bool> {
        let acl = self.acl_entry(&AclScope::Database(db.clone()))?;
        if !acl.views.contains_key(view) && acl.views.len() >= MAX_VIEWS {
            return Err(Error::LimitExceeded {
                what: "views in one ACL",
                limit: MAX_VIEWS,
            });
        }
        let list = acl.views.entry(view.clone()).or_default();
        if list.contains(&member) {
            return Ok(false);
        }
        if list.len() >= MAX_MEMBERS {
            return Err(Error::LimitExceeded {
                what: "members in one list",
                limit: MAX_MEMBERS,
            });
        }
        list.insert(member);
        self.acls_changed();
        Ok(true)
    }

    /// Takes back a view grant. Returns whether it was there. A view whose list becomes empty is
    /// dropped from the ACL.
    pub fn revoke_view(&mut self, db: &DbName, view: &str, member: &Member) -> bool {
        let Some(acl) = self.acls.get_mut(&AclScope::Database(db.clone())) else {
            return false;
        };
        let Some(list) = acl.views.get_mut(view) else {
            return false;
        };
        let removed = list.remove(member);
        if list.is_empty() {
            acl.views.remove(view);
        }
        if removed {
            self.acls_changed();
        }
        removed
    }

    /// Sets a whole ACL, replacing any ACL of the same scope (returned).
    pub fn set_acl(&mut self, acl: DbAcl) -> Result<Option<DbAcl>> {
        acl.check_limits()?;
        if !self.acls.contains_key(&acl.scope) && self.acls.len() >= MAX_ACLS {
            return Err(Error::LimitExceeded {
                what: "ACLs",
                limit: MAX_ACLS,
            });
        }
        self.acls_changed();
        Ok(self.acls.insert(acl.scope.clone(), acl))
    }

    /// Deletes the ACL of `scope`: afterwards only the owner (and, for a database, whoever the
    /// all-databases ACL lets in) may use it.
    pub fn remove_acl(&mut self, scope: &AclScope) -> Option<DbAcl> {
        let removed = self.acls.remove(scope);
        if removed.is_some() {
            self.acls_changed();
        }
        removed
    }

    fn acl_entry(&mut self, scope: &AclScope) -> Result<&mut DbAcl> {
        if !self.acls.contains_key(scope) && self.acls.len() >= MAX_ACLS {
            return Err(Error::LimitExceeded {
                what: "ACLs",
                limit: MAX_ACLS,
            });
        }
        Ok(self
            .acls
            .entry(scope.clone())
            .or_insert_with(|| DbAcl::new(scope.clone())))
    }

    // ---- caches ----

    fn groups_changed(&mut self) {
        self.group_index.take();
        self.acl_index.take();
    }

    fn acls_changed(&mut self) {
        self.acl_index.take();
    }

    /// The caches, built on first use after a change.
    pub(crate) fn indexes(&self) -> (&GroupIndex, &AclIndex) {
        let groups = self
            .group_index
            .get_or_init(|| GroupIndex::build(&self.groups));
        let acls = self
            .acl_index
            .get_or_init(|| AclIndex::build(&self.acls, groups));
        (groups, acls)
    }

    // ---- checking ----

    /// Group cycles: each entry is a set of groups that contain each other (in name order), or
    /// one group that contains itself. Membership through a cycle is well defined (each group
    /// of the cycle has the members of all of them) and decisions terminate; this is for
    /// telling the person who edits the policy.
    pub fn cycles(&self) -> Vec<Vec<GroupName>> {
        self.indexes().0.cycles().to_vec()
    }

    /// Everything [`Policy::validate`] would complain about: group cycles, then references to
    /// groups that are not defined.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut warnings: Vec<Warning> = self
            .cycles()
            .into_iter()
            .map(|groups| Warning::GroupCycle { groups })
            .collect();
        let mut undefined = |referenced_by: String, members: &BTreeSet<Member>| {
            for member in members {
                if let Member::Group(group) = member {
                    if !self.groups.contains_key(group) {
                        warnings.push(Warning::UndefinedGroup {
                            group: group.clone(),
                            referenced_by: referenced_by.clone(),
                        });
                    }
                }
            }
        };
        for group in self.groups.values() {
            undefined(group.doc_id(), &group.members);
        }
        for acl in self.acls.values() {
            for list in acl.lists() {
                undefined(acl.doc_id(), list);
            }
        }
        warnings
    }

    /// Strict check for editors and tests: `Err` with the first [`Warning`] if there is any.
    /// Loading does not run it, so that a policy that replicates in half-updated still answers.
    pub fn validate(&self) -> Result<()> {
        match self.warnings().into_iter().next() {
            Some(warning) => Err(Error::Inconsistent(warning)),
            None => Ok(()),
        }
    }
}

impl Clone for Policy {
    /// Copies the policy; the copy rebuilds its caches on first use.
    fn clone(&self) -> Policy {
        Policy {
            owner: self.owner,
            groups: self.groups.clone(),
            acls: self.acls.clone(),
            revoked: self.revoked.clone(),
            group_index: OnceLock::new(),
            acl_index: OnceLock::new(),
        }
    }
}

impl PartialEq for Policy {
    /// Same owner, groups, ACLs and revocations (the caches do not count).
    fn eq(&self, other: &Policy) -> bool {
        self.owner == other.owner
            && self.groups == other.groups
            && self.acls == other.acls
            && self.revoked == other.revoked
    }
}

impl Eq for Policy {}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("owner", &self.owner)
            .field("groups", &self.groups.values().collect::<Vec<_>>())
            .field("acls", &self.acls.values().collect::<Vec<_>>())
            .field("revoked", &self.revoked.values().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    /// A policy can be shared between request handlers.
    #[test]
    fn policy_is_send_and_sync() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<super::Policy>();
        shareable::<crate::Decision>();
    }

    /// Membership through nested groups and `anonymous`; the owner needs none.
    #[test]
    fn groups_of_follows_nesting() -> crate::Result<()> {
        use super::{GroupName, Member, Policy, Principal};
        use public_key_identity::KeyId;
        let owner = KeyId::from_digest([1; 32]);
        let key = KeyId::from_digest([2; 32]);
        let mut policy = Policy::new(owner);
        let name = |n: &str| GroupName::new(n);
        policy.add_member(&name("phones")?, Member::Key(key))?;
        policy.add_member(&name("family")?, Member::group("phones")?)?;
        policy.add_member(&name("public")?, Member::Anonymous)?;
        policy.add_member(&name("other")?, Member::Key(owner))?;
        let names = |p: Principal| -> Vec<String> {
            policy
                .groups_of(&p)
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect()
        };
        assert_eq!(names(Principal::Key(key)), ["family", "phones", "public"]);
        assert_eq!(names(Principal::Anonymous), ["public"]);
        assert!(names(Principal::Owner).is_empty());
        assert!(names(Principal::Key(owner)).is_empty());
        Ok(())
    }
}
