#![doc = include_str!("../README.md")]

mod decision;
mod error;
mod index;
mod json;
mod name;
mod policy;
mod principal;
mod revocation;

pub use decision::{Action, Decision, Grant, Match, Reason, Resource, ResourceKind, Via};
pub use error::{Error, ErrorKind, Result, Warning};
pub use json::{FORMAT_VERSION, PolicyDocument, READERS_FIELD, document_readers};
pub use name::{DbName, GroupName, ViewName};
pub use policy::{AclScope, DbAcl, Group, Policy, Right};
pub use principal::{Member, Principal};
/// The key id type principals are named by, from `public-key-identity`.
pub use public_key_identity::KeyId;
pub use revocation::{REVOCATION_PREFIX, Revocation};

/// Bounds on input and on the policy, so that untrusted documents cannot exhaust memory or time.
pub mod limits {
    pub use crate::name::{MAX_DB_NAME_LEN, MAX_GROUP_NAME_LEN, MAX_VIEW_NAME_LEN};

    /// Largest whole-policy JSON text accepted, in bytes (32 MiB).
    pub const MAX_POLICY_BYTES: usize = 32 << 20;
    /// Largest single policy document accepted as text, in bytes (4 MiB).
    pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
    /// Most groups in a policy. Group closures take at most this many bits squared (2 MiB).
    pub const MAX_GROUPS: usize = 4096;
    /// Most ACLs (databases, plus the all-databases ACL) in a policy.
    pub const MAX_ACLS: usize = 65_536;
    /// Most members in one list (a group, a grant, a view grant, a document's readers).
    pub const MAX_MEMBERS: usize = 65_536;
    /// Most views with grants in one ACL.
    pub const MAX_VIEWS: usize = 1024;
    /// Most revoked keys in a policy.
    pub const MAX_REVOCATIONS: usize = 65_536;
}

/// Entry points for the fuzz targets in `fuzz/`; not part of the API. A fuzz target reports a
/// finding by panicking, so panics are this module's purpose.
#[doc(hidden)]
#[allow(clippy::panic)]
pub mod fuzzing {
    use serde_json::Value;

    use crate::{
        Action, KeyId, Member, Policy, PolicyDocument, Principal, Resource, document_readers,
    };

    /// Loads arbitrary bytes as a whole policy, as one policy document, and as a document's
    /// reader list. Whatever loads must write out and load back to an equal policy that answers
    /// every probe the same way (and the same way twice).
    pub fn policy_json(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let owner = KeyId::from_digest([0xee; 32]);
        if let Ok(policy) = Policy::from_json(owner, text) {
            let again = match Policy::from_json(owner, &policy.to_json()) {
                Ok(again) => again,
                Err(e) => panic!("a loaded policy wrote JSON it cannot load: {e}"),
            };
            assert_eq!(again, policy);
            let documents: Vec<Value> = policy
                .to_documents()
                .iter()
                .map(PolicyDocument::to_value)
                .collect();
            match Policy::from_documents(owner, &documents) {
                Ok(from_documents) => assert_eq!(from_documents, policy),
                Err(e) => panic!("a loaded policy wrote documents it cannot load: {e}"),
            }
            let _ = policy.warnings();
            probe(&policy, &again);
        }
        if let Ok(document) = PolicyDocument::from_json(text) {
            match PolicyDocument::from_json(&document.to_json()) {
                Ok(again) => assert_eq!(again, document),
                Err(e) => panic!("a loaded document wrote JSON it cannot load: {e}"),
            }
            let mut policy = Policy::new(owner);
            if policy.insert(document).is_ok() {
                probe(&policy, &policy.clone());
            }
        }
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            let _ = document_readers(&value);
        }
    }

    /// Asks both policies the same questions about the principals, databases and views they
    /// name (a bounded number of them).
    fn probe(a: &Policy, b: &Policy) {
        let mut principals = vec![Principal::Anonymous, Principal::Owner];
        let mut readers: Vec<Member> = Vec::new();
        let mut dbs = vec!["unnamed".to_string()];
        let mut views: Vec<(String, String)> = Vec::new();
        let lists = a.groups().map(|g| &g.members).chain(
            a.acls()
                .flat_map(|acl| [&acl.read, &acl.write, &acl.admin].into_iter()),
        );
        for members in lists {
            for member in members.iter().take(8) {
                if let Member::Key(key) = member {
                    if principals.len() < 10 && !principals.contains(&Principal::Key(*key)) {
                        principals.push(Principal::Key(*key));
                    }
                }
                if readers.len() < 4 {
                    readers.push(member.clone());
                }
            }
        }
        for acl in a.acls().take(8) {
            if let crate::AclScope::Database(db) = &acl.scope {
                dbs.push(db.to_string());
                for view in acl.views.keys().take(2) {
                    views.push((db.to_string(), view.to_string()));
                }
            }
        }
        let actions = [
            Action::Read,
            Action::Write,
            Action::Admin,
            Action::CreateView,
        ];
        for principal in &principals {
            let mut resources: Vec<Resource<'_>> = Vec::new();
            for db in &dbs {
                resources.push(Resource::Database(db));
                resources.push(Resource::Document {
                    db,
                    readers: Some(&readers),
                });
            }
            for (db, view) in &views {
                resources.push(Resource::View { db, view });
            }
            for resource in resources {
                for action in actions {
                    let first = a.may(*principal, action, resource);
                    assert_eq!(first, b.may(*principal, action, resource));
                    assert_eq!(first, a.may(*principal, action, resource));
                    let _ = first.to_string();
                }
            }
        }
    }
}
