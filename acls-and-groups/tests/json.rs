//! The JSON format: the README's examples load, round trips are exact, and invalid documents
//! are rejected with errors that name the document, the field and the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test may fail loudly

use acls_and_groups::limits::{MAX_DOCUMENT_BYTES, MAX_MEMBERS, MAX_POLICY_BYTES};
use acls_and_groups::{
    AclScope, Action, Error, ErrorKind, KeyId, Member, Policy, PolicyDocument, Principal, Resource,
    document_readers,
};
use serde_json::{Value, json};

const ALICE: &str = "ambqgaydambqgaydambqgaydambqgaydambqgaydambqgaydambq";

fn owner() -> KeyId {
    KeyId::from_digest([1; 32])
}

/// The ```json blocks of the crate README, in order.
fn readme_json_blocks() -> Vec<String> {
    let readme = include_str!("../README.md");
    let mut blocks = Vec::new();
    let mut rest = readme;
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        blocks.push(body[..end].to_string());
        rest = &body[end..];
    }
    blocks
}

#[test]
fn readme_examples_load() {
    let blocks = readme_json_blocks();
    assert_eq!(
        blocks.len(),
        4,
        "the README shows an acl, a group, a revocation and a policy"
    );
    let acl = PolicyDocument::from_json(&blocks[0]).unwrap();
    assert_eq!(acl.id(), "acl:photos");
    let group = PolicyDocument::from_json(&blocks[1]).unwrap();
    assert_eq!(group.id(), "group:me");
    let revocation = PolicyDocument::from_json(&blocks[2]).unwrap();
    let PolicyDocument::Revocation(revoked) = &revocation else {
        panic!("not a revocation: {revocation:?}")
    };
    assert_eq!(revocation.id(), format!("revoked:{}", revoked.key));
    assert_eq!(revoked.by.to_string(), ALICE);
    let policy = Policy::from_json(owner(), &blocks[3]).unwrap();
    let alice = Principal::Key(ALICE.parse().unwrap());
    assert!(
        policy
            .may(alice, Action::Read, Resource::Database("photos"))
            .allowed
    );
    assert!(
        policy
            .may(
                Principal::Anonymous,
                Action::Read,
                Resource::View {
                    db: "photos",
                    view: "by-date"
                }
            )
            .allowed
    );
    assert!(
        !policy
            .may(
                Principal::Anonymous,
                Action::Read,
                Resource::Database("photos")
            )
            .allowed
    );
    // `group:me` is referenced by the example but not defined there.
    assert_eq!(policy.warnings().len(), 1);

    // The documents of the README, stored separately, make a policy too: the revoked key is
    // in group `me`, and refused.
    let revoked_key = Principal::Key(revoked.key);
    let mut from_docs = Policy::new(owner());
    from_docs.insert(acl).unwrap();
    from_docs.insert(group).unwrap();
    from_docs
        .grant(
            &AclScope::AllDatabases,
            acls_and_groups::Right::Admin,
            Member::group("me").unwrap(),
        )
        .unwrap();
    assert!(
        from_docs
            .may(revoked_key, Action::Read, Resource::Database("photos"))
            .allowed
    );
    from_docs.insert(revocation).unwrap();
    assert_eq!(from_docs.to_documents().len(), 4);
    assert!(
        !from_docs
            .may(revoked_key, Action::Read, Resource::Database("photos"))
            .allowed
    );
}

#[test]
fn round_trips_are_exact() {
    let blocks = readme_json_blocks();
    let policy = Policy::from_json(owner(), &blocks[3]).unwrap();
    let text = policy.to_json();
    let again = Policy::from_json(owner(), &text).unwrap();
    assert_eq!(again, policy);
    assert_eq!(again.to_json(), text, "writing is deterministic");

    let documents: Vec<Value> = policy
        .to_documents()
        .iter()
        .map(PolicyDocument::to_value)
        .collect();
    assert_eq!(Policy::from_documents(owner(), &documents).unwrap(), policy);
    for document in policy.to_documents() {
        assert_eq!(
            PolicyDocument::from_json(&document.to_json()).unwrap(),
            document
        );
        // Written documents carry their id.
        assert_eq!(document.to_value()["_id"], Value::String(document.id()));
    }
    // A different owner is a different policy with the same documents.
    let other = Policy::from_json(KeyId::from_digest([2; 32]), &text).unwrap();
    assert_ne!(other, policy);
    assert_eq!(other.to_json(), text);
}

#[test]
fn couchdb_fields_are_ignored_and_ids_checked() {
    let doc = json!({
        "_id": "group:friends",
        "_rev": "3-917fa2381192822767f010b95b45325b",
        "_revisions": {"start": 3, "ids": ["a", "b", "c"]},
        "_conflicts": [],
        "type": "group",
        "v": 1,
        "name": "friends",
        "members": [format!("key:{ALICE}")]
    });
    let parsed = PolicyDocument::from_value(&doc).unwrap();
    assert_eq!(parsed.id(), "group:friends");

    let mut policy = Policy::new(owner());
    assert!(policy.insert(parsed.clone()).unwrap().is_none());
    assert_eq!(policy.insert(parsed.clone()).unwrap(), Some(parsed.clone()));
    assert_eq!(policy.remove("group:friends"), Some(parsed));
    assert_eq!(policy.remove("group:friends"), None);
    assert_eq!(policy.remove("something-else"), None);
    assert_eq!(policy.remove("acl:Not A Db"), None);
}

/// (input, document label, field, words of the reason)
fn document_cases() -> Vec<(Value, &'static str, Option<&'static str>, &'static str)> {
    let key = format!("key:{ALICE}");
    vec![
        (
            json!([]),
            "policy document",
            None,
            "expected a JSON object, found an array",
        ),
        (
            json!({"v": 1}),
            "policy document",
            Some("type"),
            "missing; expected \"acl\", \"group\" or \"revocation\"",
        ),
        (
            json!({"type": "user", "v": 1}),
            "policy document",
            Some("type"),
            "expected \"acl\", \"group\" or \"revocation\", found \"user\"",
        ),
        (
            json!({"type": 7, "v": 1}),
            "policy document",
            Some("type"),
            "found 7",
        ),
        (
            json!({"type": "acl", "db": "x"}),
            "policy document \"acl:x\"",
            Some("v"),
            "missing; this build reads version 1",
        ),
        (
            json!({"type": "acl", "v": 2, "db": "x"}),
            "policy document \"acl:x\"",
            Some("v"),
            "unsupported version 2; this build reads version 1",
        ),
        (
            json!({"type": "acl", "v": "1", "db": "x"}),
            "policy document \"acl:x\"",
            Some("v"),
            "unsupported version \"1\"",
        ),
        (
            json!({"type": "acl", "v": 1.5, "db": "x"}),
            "policy document \"acl:x\"",
            Some("v"),
            "unsupported version 1.5",
        ),
        (
            json!({"type": "acl", "v": 1}),
            "policy document",
            Some("db"),
            "missing; expected a database name or \"*\"",
        ),
        (
            json!({"type": "acl", "v": 1, "db": 3}),
            "policy document",
            Some("db"),
            "expected a database name or \"*\", found a number",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "Photos"}),
            "policy document \"acl:Photos\"",
            Some("db"),
            "invalid database name \"Photos\"",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "read": "anonymous"}),
            "policy document \"acl:x\"",
            Some("read"),
            "expected an array of members, found a string",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "write": [1]}),
            "policy document \"acl:x\"",
            Some("write[0]"),
            "expected a member string",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "admin": ["anonymous", "everyone"]}),
            "policy document \"acl:x\"",
            Some("admin[1]"),
            "invalid member \"everyone\"",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "read": ["key:abc"]}),
            "policy document \"acl:x\"",
            Some("read[0]"),
            "exactly 52 characters",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "read": [key, "anonymous", key]}),
            "policy document \"acl:x\"",
            Some("read[2]"),
            "duplicate of read[0]",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "raed": []}),
            "policy document \"acl:x\"",
            Some("raed"),
            "unknown field",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "my field": []}),
            "policy document \"acl:x\"",
            Some("\"my field\""),
            "unknown field",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "views": []}),
            "policy document \"acl:x\"",
            Some("views"),
            "expected an object from view name to members",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "views": {"": []}}),
            "policy document \"acl:x\"",
            Some("views.\"\""),
            "invalid view name",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "x", "views": {"v": ["nobody"]}}),
            "policy document \"acl:x\"",
            Some("views.\"v\"[0]"),
            "invalid member \"nobody\"",
        ),
        (
            json!({"type": "acl", "v": 1, "db": "*", "views": {"v": []}}),
            "policy document \"acl:*\"",
            Some("views"),
            "has no view grants",
        ),
        (
            json!({"_id": "acl:y", "type": "acl", "v": 1, "db": "x"}),
            "policy document \"acl:y\"",
            Some("_id"),
            "must be \"acl:x\"",
        ),
        (
            json!({"_id": 5, "type": "acl", "v": 1, "db": "x"}),
            "policy document \"acl:x\"",
            Some("_id"),
            "must be \"acl:x\"",
        ),
        (
            json!({"_id": "acl:x", "_deleted": true}),
            "policy document \"acl:x\"",
            Some("_deleted"),
            "tombstone",
        ),
        (
            json!({"type": "group", "v": 1}),
            "policy document",
            Some("name"),
            "missing; expected a group name",
        ),
        (
            json!({"type": "group", "v": 1, "name": "Friends"}),
            "policy document \"group:Friends\"",
            Some("name"),
            "invalid group name \"Friends\"",
        ),
        (
            json!({"type": "group", "v": 1, "name": "f", "members": null}),
            "policy document \"group:f\"",
            Some("members"),
            "found null",
        ),
        (
            json!({"type": "group", "v": 1, "name": "f", "members": ["group:F"]}),
            "policy document \"group:f\"",
            Some("members[0]"),
            "lowercase",
        ),
        (
            json!({"type": "group", "v": 1, "name": "f", "db": "x"}),
            "policy document \"group:f\"",
            Some("db"),
            "unknown field; a group document has",
        ),
    ]
}

#[test]
fn invalid_documents_are_rejected_precisely() {
    for (i, (value, document, field, reason)) in document_cases().into_iter().enumerate() {
        let err = PolicyDocument::from_value(&value).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "case {i}: {err}");
        let Error::InvalidDocument {
            document: got_document,
            field: got_field,
            reason: got_reason,
        } = &err
        else {
            panic!("case {i}: {err:?}")
        };
        assert_eq!(got_document, document, "case {i}: {err}");
        assert_eq!(got_field.as_deref(), field, "case {i}: {err}");
        assert!(got_reason.contains(reason), "case {i}: {err}");
        // The same document inside a whole policy is named by its position.
        let policy = json!({"type": "policy", "v": 1, "documents": [
            {"type": "group", "v": 1, "name": "ok"},
            value,
        ]});
        let err = Policy::from_value(owner(), &policy).unwrap_err();
        assert!(
            err.to_string().starts_with("documents[1]"),
            "case {i}: {err}"
        );
    }
}

#[test]
fn whole_policy_errors() {
    let cases: Vec<(&str, &str)> = vec![
        (
            "",
            "policy: not valid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            "{\"type\": \"policy\", \"v\": 1, \"documents\": [}",
            "policy: not valid JSON",
        ),
        ("[]", "policy: expected a JSON object, found an array"),
        (
            "{\"v\": 1}",
            "policy, field type: missing; expected \"policy\"",
        ),
        (
            "{\"type\": \"acl\", \"v\": 1}",
            "policy, field type: expected \"policy\", found \"acl\"",
        ),
        (
            "{\"type\": \"policy\", \"v\": 3}",
            "policy, field v: unsupported version 3",
        ),
        (
            "{\"type\": \"policy\", \"v\": 1, \"documents\": {}}",
            "policy, field documents: expected an array of documents, found an object",
        ),
        (
            "{\"type\": \"policy\", \"v\": 1, \"docs\": []}",
            "policy, field docs: unknown field",
        ),
        (
            "{\"type\": \"policy\", \"v\": 1, \"documents\": [{\"type\": \"group\", \"v\": 1, \"name\": \"a\"}, {\"type\": \"acl\", \"v\": 1, \"db\": \"x\"}, {\"type\": \"group\", \"v\": 1, \"name\": \"a\", \"members\": [\"anonymous\"]}]}",
            "documents[2] \"group:a\": duplicate: documents[0] is also \"group:a\"",
        ),
        (
            "{\"type\": \"policy\", \"v\": 1, \"documents\": [{\"type\": \"acl\", \"v\": 1, \"db\": \"photos\", \"read\": [\"anonymous\", \"group:Friends\"]}]}",
            "documents[0] \"acl:photos\", field read[1]: invalid member \"group:Friends\": invalid group name \"Friends\": a group name starts with a lowercase letter or a digit",
        ),
    ];
    for (input, expected) in cases {
        let err = Policy::from_json(owner(), input).unwrap_err();
        assert!(
            err.to_string().starts_with(expected),
            "{input}\n  got: {err}\n want: {expected}"
        );
    }
    // An empty policy is fine.
    let empty = Policy::from_json(owner(), r#"{"type":"policy","v":1}"#).unwrap();
    assert_eq!(empty, Policy::new(owner()));
}

#[test]
fn sizes_and_nesting_are_bounded() {
    let huge = " ".repeat(MAX_POLICY_BYTES + 1);
    let err = Policy::from_json(owner(), &huge).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    let huge = " ".repeat(MAX_DOCUMENT_BYTES + 1);
    assert_eq!(
        PolicyDocument::from_json(&huge).unwrap_err().kind(),
        ErrorKind::TooLarge
    );
    // Deep nesting is refused by the parser, not by the stack.
    for depth in [200, 100_000] {
        let deep = format!(
            "{{\"type\":\"policy\",\"v\":1,\"_x\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = Policy::from_json(owner(), &deep).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
    // Too many members in one list.
    let members: Vec<String> = (0..=MAX_MEMBERS)
        .map(|i| {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
            format!("key:{}", KeyId::from_digest(digest))
        })
        .collect();
    let doc = json!({"type": "group", "v": 1, "name": "big", "members": members});
    let err = PolicyDocument::from_value(&doc).unwrap_err();
    assert!(err.to_string().contains("the limit is 65536"), "{err}");
}

#[test]
fn reader_lists_in_documents() {
    let alice: KeyId = ALICE.parse().unwrap();
    assert_eq!(
        document_readers(&json!({"_id": "a", "x": 1})).unwrap(),
        None
    );
    assert_eq!(
        document_readers(&json!({"thali_readers": [format!("key:{ALICE}"), "group:me"]})).unwrap(),
        Some(vec![Member::Key(alice), Member::group("me").unwrap()])
    );
    assert_eq!(
        document_readers(&json!({"thali_readers": []})).unwrap(),
        Some(vec![])
    );
    let err = document_readers(&json!({"_id": "note-1", "thali_readers": ["me"]})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "document \"note-1\", field thali_readers[0]: invalid member \"me\": a member is \"key:<key id>\", \"group:<name>\" or \"anonymous\""
    );
    let err = document_readers(&json!({"thali_readers": "anonymous"})).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected an array of members, found a string")
    );
}

#[test]
fn scope_text_forms() {
    assert_eq!(AclScope::AllDatabases.to_string(), "*");
    assert_eq!("photos".parse::<AclScope>().unwrap().to_string(), "photos");
}
