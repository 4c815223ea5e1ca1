//! The JSON form (version 1): one CouchDB document per ACL, per group and per revoked key, and a
//! whole-policy document that holds a list of them. The format is described in the crate documentation.
//!
//! Loading walks a `serde_json::Value` by hand so that every error names the document, the field
//! and the reason. Sizes are bounded before parsing ([`MAX_POLICY_BYTES`],
//! [`MAX_DOCUMENT_BYTES`]), nesting by `serde_json`'s recursion limit (128), and counts by the
//! other [`limits`](crate::limits).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use public_key_identity::KeyId;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::limits::{MAX_DOCUMENT_BYTES, MAX_MEMBERS, MAX_POLICY_BYTES, MAX_VIEWS};
use crate::name::{GroupName, ViewName};
use crate::policy::{AclScope, DbAcl, Group, NO_VIEWS_IN_ALL, Policy};
use crate::principal::Member;
use crate::revocation::{REVOCATION_PREFIX, Revocation};

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// The field of an application document that holds its reader list (see
/// [`document_readers`]).
pub const READERS_FIELD: &str = "thali_readers";

/// One stored policy document: an ACL, a group or a revoked key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyDocument {
    /// `{"type": "acl", ...}`, stored as `acl:<db>`.
    Acl(DbAcl),
    /// `{"type": "group", ...}`, stored as `group:<name>`.
    Group(Group),
    /// `{"type": "revocation", ...}`, stored as `revoked:<key id>`.
    Revocation(Revocation),
}

impl PolicyDocument {
    /// The CouchDB document id: `acl:<db>`, `acl:*`, `group:<name>` or `revoked:<key id>`.
    pub fn id(&self) -> String {
        match self {
            PolicyDocument::Acl(acl) => acl.doc_id(),
            PolicyDocument::Group(group) => group.doc_id(),
            PolicyDocument::Revocation(revocation) => revocation.doc_id(),
        }
    }

    /// Parses one document from JSON text (at most [`MAX_DOCUMENT_BYTES`]).
    pub fn from_json(text: &str) -> Result<PolicyDocument> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::TooLarge {
                what: "policy document",
                size: text.len(),
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        let value: Value = serde_json::from_str(text).map_err(|source| Error::Json {
            document: "policy document".into(),
            source,
        })?;
        PolicyDocument::from_value(&value)
    }

    /// Parses one document from a JSON value (as a CouchDB client hands it over; `_id`, `_rev`
    /// and other fields starting with `_` are allowed, and `_id` must be the document's id).
    pub fn from_value(value: &Value) -> Result<PolicyDocument> {
        parse_document(value, None)
    }

    /// The document as a JSON value, `_id` included.
    pub fn to_value(&self) -> Value {
        match self {
            PolicyDocument::Acl(acl) => acl_to_value(acl),
            PolicyDocument::Group(group) => group_to_value(group),
            PolicyDocument::Revocation(revocation) => revocation_to_value(revocation),
        }
    }

    /// The document as compact JSON text.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

impl From<DbAcl> for PolicyDocument {
    fn from(acl: DbAcl) -> PolicyDocument {
        PolicyDocument::Acl(acl)
    }
}

impl From<Group> for PolicyDocument {
    fn from(group: Group) -> PolicyDocument {
        PolicyDocument::Group(group)
    }
}

impl From<Revocation> for PolicyDocument {
    fn from(revocation: Revocation) -> PolicyDocument {
        PolicyDocument::Revocation(revocation)
    }
}

/// Reads an application document's reader list from its [`READERS_FIELD`] field.
///
/// `Ok(None)`: the field is absent, and every reader of the database may read the document.
/// `Ok(Some(list))`: only `list` (within the database's readers), the database's admins and
/// the owner may. `Err`: the field is there but malformed; fail closed by treating the document
/// as `Some(&[])` (admins and the owner only).
pub fn document_readers(document: &Value) -> Result<Option<Vec<Member>>> {
    let Some(field) = document.get(READERS_FIELD) else {
        return Ok(None);
    };
    let label = match document.get("_id").and_then(Value::as_str) {
        Some(id) => format!("document {:?}", crate::error::truncate(id)),
        None => "document".to_string(),
    };
    let Some(items) = field.as_array() else {
        return Err(invalid(
            &label,
            Some(READERS_FIELD.into()),
            format!("expected an array of members, found {}", kind(field)),
        ));
    };
    if items.len() > MAX_MEMBERS {
        return Err(invalid(
            &label,
            Some(READERS_FIELD.into()),
            format!("more than {MAX_MEMBERS} members"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_member(item, &label, &format!("{READERS_FIELD}[{i}]")))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

impl Policy {
    /// Loads a whole policy (`{"type": "policy", "v": 1, "documents": [...]}`, at most
    /// [`MAX_POLICY_BYTES`]) for the device whose key id is `owner`.
    ///
    /// Every document must be valid and ids must not repeat. Group cycles and references to
    /// undefined groups are allowed (see [`Policy::warnings`]).
    pub fn from_json(owner: KeyId, text: &str) -> Result<Policy> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(Error::TooLarge {
                what: "policy",
                size: text.len(),
                limit: MAX_POLICY_BYTES,
            });
        }
        let value: Value = serde_json::from_str(text).map_err(|source| Error::Json {
            document: "policy".into(),
            source,
        })?;
        Policy::from_value(owner, &value)
    }

    /// Loads a whole policy from a JSON value; see [`Policy::from_json`].
    pub fn from_value(owner: KeyId, value: &Value) -> Result<Policy> {
        let label = "policy";
        let object = as_object(value, label)?;
        check_type_and_version(object, label, &["policy"])?;
        let mut documents: &[Value] = &[];
        for (field, item) in object {
            match field.as_str() {
                "type" | "v" => {}
                "documents" => {
                    documents = item.as_array().map(Vec::as_slice).ok_or_else(|| {
                        invalid(
                            label,
                            Some("documents".into()),
                            format!("expected an array of documents, found {}", kind(item)),
                        )
                    })?;
                }
                other if other.starts_with('_') => {}
                other => {
                    return Err(invalid(
                        label,
                        Some(field_name(other)),
                        "unknown field; a policy has type, v and documents",
                    ));
                }
            }
        }
        Policy::from_documents(owner, documents)
    }

    /// Loads a policy from its documents (the ACL, group and revocation documents of the policy
    /// database, in any order) for the device whose key id is `owner`. Errors name a document by its
    /// position (`documents[3]`) and id.
    pub fn from_documents<'a>(
        owner: KeyId,
        documents: impl IntoIterator<Item = &'a Value>,
    ) -> Result<Policy> {
        let mut policy = Policy::new(owner);
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, value) in documents.into_iter().enumerate() {
            let document = parse_document(value, Some(i))?;
            let id = document.id();
            if let Some(first) = seen.get(&id) {
                return Err(invalid(
                    &label_for(Some(i), Some(&id)),
                    None,
                    format!("duplicate: documents[{first}] is also {id:?}"),
                ));
            }
            // Checks the count limits too.
            policy.insert(document)?;
            seen.insert(id, i);
        }
        Ok(policy)
    }

    /// The whole policy as one JSON value: groups, then ACLs, then revocations. The owner is
    /// not included.
    pub fn to_value(&self) -> Value {
        let documents: Vec<Value> = self
            .groups
            .values()
            .map(group_to_value)
            .chain(self.acls.values().map(acl_to_value))
            .chain(self.revoked.values().map(revocation_to_value))
            .collect();
        let mut object = Map::new();
        object.insert("type".into(), "policy".into());
        object.insert("v".into(), FORMAT_VERSION.into());
        object.insert("documents".into(), documents.into());
        Value::Object(object)
    }

    /// The whole policy as compact JSON text; [`Policy::from_json`] reads it back.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The policy as its documents, groups first, then ACLs, then revocations, to store one by
    /// one.
    pub fn to_documents(&self) -> Vec<PolicyDocument> {
        self.groups
            .values()
            .cloned()
            .map(PolicyDocument::Group)
            .chain(self.acls.values().cloned().map(PolicyDocument::Acl))
            .chain(
                self.revoked
                    .values()
                    .cloned()
                    .map(PolicyDocument::Revocation),
            )
            .collect()
    }

    /// Adds or replaces one document (as a changed document arrives from replication).
    /// Returns the document it replaced.
    ///
    /// A revocation is merged rather than replaced ([`Policy::merge_revocation`]; a
    /// revocation of the owner is kept too): the answer is the record of that key held
    /// before, if any.
    pub fn insert(&mut self, document: PolicyDocument) -> Result<Option<PolicyDocument>> {
        Ok(match document {
            PolicyDocument::Acl(acl) => self.set_acl(acl)?.map(PolicyDocument::Acl),
            PolicyDocument::Group(group) => self.set_group(group)?.map(PolicyDocument::Group),
            PolicyDocument::Revocation(revocation) => {
                let before = self.revocation(&revocation.key).cloned();
                self.merge_revocation(revocation)?;
                before.map(PolicyDocument::Revocation)
            }
        })
    }

    /// Removes the document with this id (as a deletion arrives from replication). Returns it,
    /// or `None` if there was none (or the id is not a policy document id).
    ///
    /// A revocation (`revoked:<key id>`) is never removed: a revoked key stays revoked, so the
    /// answer for its id is always `None`.
    pub fn remove(&mut self, id: &str) -> Option<PolicyDocument> {
        if id.starts_with(REVOCATION_PREFIX) {
            None
        } else if let Some(scope) = id.strip_prefix("acl:") {
            let scope: AclScope = scope.parse().ok()?;
            self.remove_acl(&scope).map(PolicyDocument::Acl)
        } else if let Some(name) = id.strip_prefix("group:") {
            self.remove_group(name).map(PolicyDocument::Group)
        } else {
            None
        }
    }
}

// ---- writing ----

fn members_to_value(members: &BTreeSet<Member>) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| Value::String(m.to_string()))
            .collect(),
    )
}

fn acl_to_value(acl: &DbAcl) -> Value {
    let mut object = Map::new();
    object.insert("_id".into(), acl.doc_id().into());
    object.insert("type".into(), "acl".into());
    object.insert("v".into(), FORMAT_VERSION.into());
    object.insert("db".into(), acl.scope.to_string().into());
    object.insert("read".into(), members_to_value(&acl.read));
    object.insert("write".into(), members_to_value(&acl.write));
    object.insert("admin".into(), members_to_value(&acl.admin));
    if !acl.views.is_empty() {
        let views: Map<String, Value> = acl
            .views
            .iter()
            .map(|(view, list)| (view.to_string(), members_to_value(list)))
            .collect();
        object.insert("views".into(), Value::Object(views));
    }
    Value::Object(object)
}

fn revocation_to_value(revocation: &Revocation) -> Value {
    let mut object = Map::new();
    object.insert("_id".into(), revocation.doc_id().into());
    object.insert("type".into(), "revocation".into());
    object.insert("v".into(), FORMAT_VERSION.into());
    object.insert("key".into(), revocation.key.to_string().into());
    object.insert("by".into(), revocation.by.to_string().into());
    object.insert("at".into(), revocation.at.into());
    Value::Object(object)
}

fn group_to_value(group: &Group) -> Value {
    let mut object = Map::new();
    object.insert("_id".into(), group.doc_id().into());
    object.insert("type".into(), "group".into());
    object.insert("v".into(), FORMAT_VERSION.into());
    object.insert("name".into(), group.name.to_string().into());
    object.insert("members".into(), members_to_value(&group.members));
    Value::Object(object)
}

// ---- reading ----

fn invalid(document: &str, field: Option<String>, reason: impl Into<String>) -> Error {
    Error::InvalidDocument {
        document: document.to_string(),
        field,
        reason: reason.into(),
    }
}

/// What a value is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field name for messages: plain if it is a simple word, quoted otherwise.
fn field_name(name: &str) -> String {
    let simple = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if simple {
        name.to_string()
    } else {
        format!("{:?}", crate::error::truncate(name))
    }
}

/// `documents[3] "acl:photos"`, `policy document "acl:photos"`, `documents[3]`, ...
fn label_for(position: Option<usize>, id: Option<&str>) -> String {
    let id = id.map(|id| format!("{:?}", crate::error::truncate(id)));
    match (position, id) {
        (Some(i), Some(id)) => format!("documents[{i}] {id}"),
        (Some(i), None) => format!("documents[{i}]"),
        (None, Some(id)) => format!("policy document {id}"),
        (None, None) => "policy document".to_string(),
    }
}

/// The id a document claims or implies, for naming it in errors before it is parsed.
fn claimed_id(object: &Map<String, Value>) -> Option<String> {
    if let Some(id) = object.get("_id").and_then(Value::as_str) {
        return Some(id.to_string());
    }
    match object.get("type").and_then(Value::as_str)? {
        "acl" => Some(format!("acl:{}", object.get("db")?.as_str()?)),
        "group" => Some(format!("group:{}", object.get("name")?.as_str()?)),
        "revocation" => Some(format!(
            "{REVOCATION_PREFIX}{}",
            object.get("key")?.as_str()?
        )),
        _ => None,
    }
}

fn as_object<'v>(value: &'v Value, label: &str) -> Result<&'v Map<String, Value>> {
    value.as_object().ok_or_else(|| {
        invalid(
            label,
            None,
            format!("expected a JSON object, found {}", kind(value)),
        )
    })
}

/// Checks `type` (one of `types`) and `v`; returns the type.
fn check_type_and_version<'v>(
    object: &'v Map<String, Value>,
    label: &str,
    types: &[&str],
) -> Result<&'v str> {
    let quoted: Vec<String> = types.iter().map(|t| format!("{t:?}")).collect();
    let expected = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    };
    let kind_of = match object.get("type") {
        None => {
            return Err(invalid(
                label,
                Some("type".into()),
                format!("missing; expected {expected}"),
            ));
        }
        Some(Value::String(t)) if types.contains(&t.as_str()) => t.as_str(),
        Some(other) => {
            return Err(invalid(
                label,
                Some("type".into()),
                format!("expected {expected}, found {}", short(other)),
            ));
        }
    };
    match object.get("v") {
        None => Err(invalid(
            label,
            Some("v".into()),
            format!("missing; this build reads version {FORMAT_VERSION} (\"v\": {FORMAT_VERSION})"),
        )),
        Some(v) if v.as_u64() == Some(FORMAT_VERSION) => Ok(kind_of),
        Some(v) => Err(invalid(
            label,
            Some("v".into()),
            format!(
                "unsupported version {}; this build reads version {FORMAT_VERSION}",
                short(v)
            ),
        )),
    }
}

/// A value, compact and cut to 40 characters, for messages.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(40).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn parse_member(value: &Value, label: &str, field: &str) -> Result<Member> {
    let Some(text) = value.as_str() else {
        return Err(invalid(
            label,
            Some(field.to_string()),
            format!(
                "expected a member string (\"key:<key id>\", \"group:<name>\" or \"anonymous\"), found {}",
                kind(value)
            ),
        ));
    };
    text.parse()
        .map_err(|e: Error| invalid(label, Some(field.to_string()), e.to_string()))
}

fn parse_members(value: &Value, label: &str, field: &str) -> Result<BTreeSet<Member>> {
    let Some(items) = value.as_array() else {
        return Err(invalid(
            label,
            Some(field.to_string()),
            format!("expected an array of members, found {}", kind(value)),
        ));
    };
    if items.len() > MAX_MEMBERS {
        return Err(invalid(
            label,
            Some(field.to_string()),
            format!("{} members; the limit is {MAX_MEMBERS}", items.len()),
        ));
    }
    let mut members = BTreeSet::new();
    let mut first_at: HashMap<Member, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let member = parse_member(item, label, &format!("{field}[{i}]"))?;
        if let Some(first) = first_at.get(&member) {
            return Err(invalid(
                label,
                Some(format!("{field}[{i}]")),
                format!("duplicate of {field}[{first}] ({member})"),
            ));
        }
        first_at.insert(member.clone(), i);
        members.insert(member);
    }
    Ok(members)
}

fn parse_document(value: &Value, position: Option<usize>) -> Result<PolicyDocument> {
    let object = as_object(value, &label_for(position, None))?;
    let claimed = claimed_id(object);
    let label = label_for(position, claimed.as_deref());
    if object.get("_deleted").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            &label,
            Some("_deleted".into()),
            "a deleted document (tombstone) is not a policy; remove its id with Policy::remove",
        ));
    }
    let document = match check_type_and_version(object, &label, &["acl", "group", "revocation"])? {
        "acl" => PolicyDocument::Acl(parse_acl(object, &label)?),
        "group" => PolicyDocument::Group(parse_group(object, &label)?),
        _ => PolicyDocument::Revocation(parse_revocation(object, &label)?),
    };
    if let Some(id) = object.get("_id") {
        let expected = document.id();
        if id.as_str() != Some(expected.as_str()) {
            return Err(invalid(
                &label,
                Some("_id".into()),
                format!(
                    "must be {expected:?} (the document's id follows its contents), found {}",
                    short(id)
                ),
            ));
        }
    }
    Ok(document)
}

fn parse_acl(object: &Map<String, Value>, label: &str) -> Result<DbAcl> {
    let scope = match object.get("db") {
        None => {
            return Err(invalid(
                label,
                Some("db".into()),
                "missing; expected a database name or \"*\"",
            ));
        }
        Some(Value::String(db)) => db
            .parse::<AclScope>()
            .map_err(|e| invalid(label, Some("db".into()), e.to_string()))?,
        Some(other) => {
            return Err(invalid(
                label,
                Some("db".into()),
                format!("expected a database name or \"*\", found {}", kind(other)),
            ));
        }
    };
    let mut acl = DbAcl::new(scope);
    for (field, value) in object {
        match field.as_str() {
            "type" | "v" | "db" => {}
            "read" => acl.read = parse_members(value, label, "read")?,
            "write" => acl.write = parse_members(value, label, "write")?,
            "admin" => acl.admin = parse_members(value, label, "admin")?,
            "views" => acl.views = parse_views(value, label, &acl.scope)?,
            other if other.starts_with('_') => {}
            other => {
                return Err(invalid(
                    label,
                    Some(field_name(other)),
                    "unknown field; an acl document has type, v, db, read, write, admin and views \
                     (fields starting with '_' are CouchDB's and are ignored)",
                ));
            }
        }
    }
    Ok(acl)
}

fn parse_views(
    value: &Value,
    label: &str,
    scope: &AclScope,
) -> Result<BTreeMap<ViewName, BTreeSet<Member>>> {
    let Some(object) = value.as_object() else {
        return Err(invalid(
            label,
            Some("views".into()),
            format!(
                "expected an object from view name to members, found {}",
                kind(value)
            ),
        ));
    };
    if *scope == AclScope::AllDatabases && !object.is_empty() {
        return Err(invalid(label, Some("views".into()), NO_VIEWS_IN_ALL));
    }
    if object.len() > MAX_VIEWS {
        return Err(invalid(
            label,
            Some("views".into()),
            format!("{} views; the limit is {MAX_VIEWS}", object.len()),
        ));
    }
    let mut views = BTreeMap::new();
    for (name, list) in object {
        let field = format!("views.{:?}", crate::error::truncate(name));
        let view =
            ViewName::new(name).map_err(|e| invalid(label, Some(field.clone()), e.to_string()))?;
        views.insert(view, parse_members(list, label, &field)?);
    }
    Ok(views)
}

fn parse_group(object: &Map<String, Value>, label: &str) -> Result<Group> {
    let name = match object.get("name") {
        None => {
            return Err(invalid(
                label,
                Some("name".into()),
                "missing; expected a group name",
            ));
        }
        Some(Value::String(name)) => {
            GroupName::new(name).map_err(|e| invalid(label, Some("name".into()), e.to_string()))?
        }
        Some(other) => {
            return Err(invalid(
                label,
                Some("name".into()),
                format!("expected a group name, found {}", kind(other)),
            ));
        }
    };
    let mut group = Group::new(name);
    for (field, value) in object {
        match field.as_str() {
            "type" | "v" | "name" => {}
            "members" => group.members = parse_members(value, label, "members")?,
            other if other.starts_with('_') => {}
            other => {
                return Err(invalid(
                    label,
                    Some(field_name(other)),
                    "unknown field; a group document has type, v, name and members \
                     (fields starting with '_' are CouchDB's and are ignored)",
                ));
            }
        }
    }
    Ok(group)
}

fn parse_revocation(object: &Map<String, Value>, label: &str) -> Result<Revocation> {
    let key_field = |field: &str| -> Result<KeyId> {
        match object.get(field) {
            None => Err(invalid(
                label,
                Some(field.into()),
                "missing; expected a key id (52 base32 characters)",
            )),
            Some(Value::String(text)) => text
                .parse::<KeyId>()
                .map_err(|e| invalid(label, Some(field.into()), format!("not a key id: {e}"))),
            Some(other) => Err(invalid(
                label,
                Some(field.into()),
                format!("expected a key id, found {}", kind(other)),
            )),
        }
    };
    let key = key_field("key")?;
    let by = key_field("by")?;
    let at = match object.get("at") {
        None => {
            return Err(invalid(
                label,
                Some("at".into()),
                "missing; expected milliseconds since the Unix epoch",
            ));
        }
        Some(value) => value.as_u64().ok_or_else(|| {
            invalid(
                label,
                Some("at".into()),
                format!(
                    "expected milliseconds since the Unix epoch (an integer from 0), found {}",
                    short(value)
                ),
            )
        })?,
    };
    for field in object.keys() {
        match field.as_str() {
            "type" | "v" | "key" | "by" | "at" => {}
            other if other.starts_with('_') => {}
            other => {
                return Err(invalid(
                    label,
                    Some(field_name(other)),
                    "unknown field; a revocation document has type, v, key, by and at \
                     (fields starting with '_' are CouchDB's and are ignored)",
                ));
            }
        }
    }
    Ok(Revocation::new(key, by, at))
}
