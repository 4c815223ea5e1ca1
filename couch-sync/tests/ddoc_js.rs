//! Design-document JavaScript where CouchDB 3.4.3 runs it outside views, over real HTTP:
//! `validate_doc_update` on every write (interactive and replicated), `_changes` filter
//! functions and `filter=_view`, and filtered replication. Sections 2, 3 and 7 of
//! `../shared/notes/couchdb-differences.md`, each with CouchDB's answer.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Reply, TestServer, start};
use couch_sync::replicate::{
    Endpoint, Remote, Replication, ReplicationOptions, TcpConnector, TokioClock,
};
use couch_sync::{Database, DocUpdate, Store, StoreConfig};
use serde_json::{Value, json};

const MUST_HAVE_FOO: &str = "function (newDoc) { if (newDoc.foo === undefined) { throw {forbidden: 'Document must have a foo.'}; } }";

async fn db() -> TestServer {
    let s = start().await;
    assert_eq!(s.put_json("/db", &json!({})).await.status, 201);
    s
}

fn reason(r: &Reply) -> String {
    r.json()["reason"].as_str().unwrap_or_default().to_owned()
}

async fn put_ok(s: &TestServer, path: &str, body: Value) -> String {
    let r = s.put_json(path, &body).await;
    assert_eq!(r.status, 201, "{path}: {}", r.json());
    r.json()["rev"].as_str().unwrap().to_owned()
}

async fn changes(s: &TestServer, path: &str) -> Vec<Value> {
    let r = s.get(path).await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["results"].as_array().unwrap().clone()
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

// ---- 2. validate_doc_update ----

#[tokio::test]
async fn a02_replicated_writes_are_validated_per_document() {
    let s = db().await;
    put_ok(
        &s,
        "/db/_design/validate",
        json!({"validate_doc_update": MUST_HAVE_FOO}),
    )
    .await;
    put_ok(
        &s,
        "/db/_design/auth",
        json!({"validate_doc_update": "function (newDoc) { if (newDoc.unauth) { throw {unauthorized: 'Document must not be unauth.'}; } }"}),
    )
    .await;
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"new_edits": false, "docs": [
                {"_id": "nofoo", "_rev": "1-a", "bar": 1},
                {"_id": "good", "_rev": "1-b", "foo": 1},
                {"_id": "unauth", "_rev": "1-c", "foo": 1, "unauth": true},
                {"_id": "deep", "_rev": "3-z", "_revisions": {"start": 3, "ids": ["z", "y", "x"]}},
            ]}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json(),
        json!([
            {"id": "nofoo", "rev": "1-a", "error": "forbidden", "reason": "Document must have a foo."},
            {"id": "unauth", "rev": "1-c", "error": "unauthorized", "reason": "Document must not be unauth."},
            {"id": "deep", "rev": "3-z", "error": "forbidden", "reason": "Document must have a foo."},
        ])
    );
    s.get("/db/nofoo").await.assert_error(404, "not_found");
    s.get("/db/unauth").await.assert_error(404, "not_found");
    assert_eq!(s.get("/db/good").await.json()["_rev"], "1-b");
    // A revision already there is not validated again (CouchDB: not a new leaf).
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"new_edits": false, "docs": [{"_id": "good", "_rev": "1-b"}]}),
        )
        .await;
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn a02_interactive_writes_are_validated() {
    let s = db().await;
    put_ok(
        &s,
        "/db/_design/validate",
        json!({"validate_doc_update": "function (newDoc, oldDoc) {
            if (newDoc._deleted) { if (oldDoc.keep) throw {forbidden: 'Keep me.'}; return; }
            if (newDoc.foo === undefined) { throw {forbidden: 'Document must have a foo.'}; }
            if (newDoc.unauth) { throw {unauthorized: 'No.'}; }
        }"}),
    )
    .await;
    // PUT, POST: 403 / 401 with the function's message.
    let r = s.put_json("/db/a", &json!({"bar": 1})).await;
    r.assert_error(403, "forbidden");
    assert_eq!(reason(&r), "Document must have a foo.");
    let r = s
        .put_json("/db/a", &json!({"foo": 1, "unauth": true}))
        .await;
    r.assert_error(401, "unauthorized");
    assert_eq!(reason(&r), "No.");
    s.post_json("/db", &json!({"bar": 1}))
        .await
        .assert_error(403, "forbidden");
    let rev = put_ok(&s, "/db/a", json!({"foo": 1, "keep": true})).await;
    // DELETE runs it too (newDoc._deleted, oldDoc the revision deleted).
    let r = s.delete(&format!("/db/a?rev={rev}")).await;
    r.assert_error(403, "forbidden");
    assert_eq!(reason(&r), "Keep me.");
    // Attachments: the new revision is validated.
    let r = s
        .send(
            "PUT",
            &format!("/db/a/att.txt?rev={rev}"),
            &[("content-type", "text/plain")],
            "hello",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    // _bulk_docs new_edits=true: the refused documents get their error, the others are written.
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"docs": [{"_id": "b", "bar": 1}, {"_id": "c", "foo": 2}, {"_id": "d", "foo": 1, "unauth": true}]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let rows = r.json();
    assert_eq!(
        rows[0],
        json!({"id": "b", "error": "forbidden", "reason": "Document must have a foo."})
    );
    assert_eq!(rows[1]["ok"], true);
    assert_eq!(
        rows[2],
        json!({"id": "d", "error": "unauthorized", "reason": "No."})
    );
    assert_eq!(s.get("/db/c").await.json()["foo"], 2);
    // Design documents and _local documents are not validated by it (CouchDB checks only
    // that the writer of a design document is an admin).
    put_ok(&s, "/db/_design/other", json!({"bar": 1})).await;
    put_ok(&s, "/db/_local/x", json!({"bar": 1})).await;
}

#[tokio::test]
async fn a02_functions_see_couchdb_arguments() {
    let s = db().await;
    put_ok(
        &s,
        "/db/_design/probe",
        json!({"answer": 42, "validate_doc_update": "function (newDoc, oldDoc, userCtx, secObj) {
            if (newDoc.probe) { throw {forbidden: JSON.stringify({newDoc: newDoc, oldDoc: oldDoc, userCtx: userCtx, secObj: secObj, self: this.answer})}; }
        }"}),
    )
    .await;
    let rev = put_ok(&s, "/db/doc", json!({"v": 1})).await;
    let r = s
        .put_json("/db/doc", &json!({"_rev": rev, "probe": true}))
        .await;
    r.assert_error(403, "forbidden");
    let seen: Value = serde_json::from_str(&reason(&r)).unwrap();
    let hash = rev.split_once('-').unwrap().1;
    assert_eq!(
        seen["newDoc"],
        json!({"_id": "doc", "_rev": rev, "probe": true, "_revisions": {"start": 1, "ids": [hash]}})
    );
    assert_eq!(
        seen["oldDoc"],
        json!({"_id": "doc", "_rev": rev, "v": 1, "_revisions": {"start": 1, "ids": [hash]}})
    );
    assert_eq!(
        seen["userCtx"],
        json!({"db": "db", "name": null, "roles": ["_admin"]})
    );
    assert_eq!(seen["secObj"], json!({}));
    assert_eq!(seen["self"], 42);
    // A new document: no `_rev`, and `oldDoc` is null.
    let r = s.put_json("/db/new", &json!({"probe": true})).await;
    let seen: Value = serde_json::from_str(&reason(&r)).unwrap();
    assert_eq!(seen["newDoc"], json!({"_id": "new", "probe": true}));
    assert_eq!(seen["oldDoc"], Value::Null);
    // Replicated: the new revision and its path; `oldDoc` the nearest stored ancestor.
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"new_edits": false, "docs": [{"_id": "doc", "_rev": format!("3-{hash}"),
                "_revisions": {"start": 3, "ids": [hash, "f00d", hash]}, "probe": true}]}),
        )
        .await;
    let seen: Value = serde_json::from_str(r.json()[0]["reason"].as_str().unwrap()).unwrap();
    assert_eq!(seen["newDoc"]["_rev"], format!("3-{hash}"));
    assert_eq!(
        seen["newDoc"]["_revisions"],
        json!({"start": 3, "ids": [hash, "f00d", hash]})
    );
    assert_eq!(seen["oldDoc"]["_rev"], rev);
}

#[tokio::test]
async fn a02_a_changed_or_deleted_validator_applies_at_once() {
    let s = db().await;
    let rev = put_ok(
        &s,
        "/db/_design/v",
        json!({"validate_doc_update": MUST_HAVE_FOO}),
    )
    .await;
    s.put_json("/db/x", &json!({}))
        .await
        .assert_error(403, "forbidden");
    let rev = put_ok(
        &s,
        "/db/_design/v",
        json!({"_rev": rev, "validate_doc_update": "function (d) { if (!d.bar) throw {forbidden: 'bar!'}; }"}),
    )
    .await;
    let r = s.put_json("/db/x", &json!({"foo": 1})).await;
    assert_eq!(reason(&r), "bar!");
    put_ok(&s, "/db/x", json!({"bar": 1})).await;
    // A design document and documents in one request: the ones after it see it.
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"docs": [{"_id": "_design/w", "validate_doc_update": "function (d) { if (d.no) throw {forbidden: 'w'}; }"},
                             {"_id": "y", "bar": 1, "no": true}]}),
        )
        .await;
    assert_eq!(r.json()[1]["error"], "forbidden");
    assert_eq!(r.json()[1]["reason"], "w");
    assert_eq!(
        s.delete(&format!("/db/_design/v?rev={rev}")).await.status,
        200
    );
    put_ok(&s, "/db/z", json!({})).await;
}

#[tokio::test]
async fn a02_hostile_validators_fail_the_write_not_the_server() {
    let s = db().await;
    let rev = put_ok(
        &s,
        "/db/_design/loop",
        json!({"validate_doc_update": "function (d) { while (true) {} }"}),
    )
    .await;
    let started = Instant::now();
    let r = s.put_json("/db/a", &json!({})).await;
    assert_eq!(r.status, 500, "{}", r.json());
    assert!(started.elapsed() < Duration::from_secs(25));
    // In _bulk_docs the request fails as a whole; nothing of it is written.
    let r = s
        .post_json("/db/_bulk_docs", &json!({"docs": [{"_id": "b"}]}))
        .await;
    assert_eq!(r.status, 500);
    s.get("/db/b").await.assert_error(404, "not_found");
    let rev = put_ok(
        &s,
        "/db/_design/loop",
        json!({"_rev": rev, "validate_doc_update": "function (d) { var a = []; while (true) { a.push(new Array(100000).join('x')); } }"}),
    )
    .await;
    let r = s.put_json("/db/a", &json!({})).await;
    assert_eq!(r.status, 500, "{}", r.json());
    // A function that throws an Error (not {forbidden}) is a 500 with its name.
    let rev = put_ok(
        &s,
        "/db/_design/loop",
        json!({"_rev": rev, "validate_doc_update": "function (d) { return d.x.y; }"}),
    )
    .await;
    let r = s.put_json("/db/a", &json!({})).await;
    r.assert_error(500, "TypeError");
    // Throwing a string or an unknown member: CouchDB's unknown_error.
    put_ok(
        &s,
        "/db/_design/loop",
        json!({"_rev": rev, "validate_doc_update": "function (d) { throw {nope: 'x'}; }"}),
    )
    .await;
    s.put_json("/db/a", &json!({}))
        .await
        .assert_error(500, "unknown_error");
    // The server still answers.
    assert_eq!(s.get("/db").await.status, 200);
}

// ---- 3. filter functions in _changes ----

async fn numbered(s: &TestServer) {
    let docs: Vec<Value> = (0..8)
        .map(|i| json!({"_id": i.to_string(), "integer": i}))
        .collect();
    let r = s.post_json("/db/_bulk_docs", &json!({"docs": docs})).await;
    assert_eq!(r.status, 201);
    put_ok(
        s,
        "/db/_design/foo",
        json!({
            "filters": {
                "even": "function (doc) { return doc.integer % 2 === 1; }",
                "param": "function (doc, req) { return String(doc.integer) === req.query.n; }",
                "req": "function (doc, req) { if (doc._id === '0') { log(req); } return doc._id === '0' && req.method && req.userCtx.roles[0] === '_admin' && req.info.db_name === 'db'; }",
                "deleted": "function (doc) { return doc._deleted === true && doc._revisions.start > 0; }",
                "throws": "function (doc) { return doc.no.such; }",
                "loops": "function (doc) { while (true) {} }",
            },
            "views": {"even": {"map": "function (doc) { if (doc.integer % 2 === 1) { emit(doc._id, null); } }"}},
        }),
    )
    .await;
}

#[tokio::test]
async fn a03_changes_limit_and_filter() {
    let s = db().await;
    numbered(&s).await;
    // `limit` counts the rows that pass.
    let rows = changes(
        &s,
        "/db/_changes?include_docs=true&filter=foo%2Feven&limit=2",
    )
    .await;
    assert_eq!(ids(&rows), ["1", "3"]);
    assert_eq!(rows[1]["doc"]["integer"], 3);
    let rows = changes(&s, "/db/_changes?filter=foo/even").await;
    assert_eq!(ids(&rows), ["1", "3", "5", "7"]);
    let rows = changes(&s, "/db/_changes?filter=foo%2Feven&feed=longpoll&since=0").await;
    assert_eq!(rows.len(), 4);
    // query_params reach the function as req.query; POST too.
    let rows = changes(&s, "/db/_changes?filter=foo/param&n=6").await;
    assert_eq!(ids(&rows), ["6"]);
    let r = s
        .post_json("/db/_changes?filter=foo/param&n=2", &json!({}))
        .await;
    assert_eq!(ids(r.json()["results"].as_array().unwrap()), ["2"]);
    let rows = changes(&s, "/db/_changes?filter=foo/req").await;
    assert_eq!(ids(&rows), ["0"]);
}

#[tokio::test]
async fn a03_filters_see_deletions_and_conflicts() {
    let s = db().await;
    numbered(&s).await;
    let rev = s.get("/db/4").await.json()["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.delete(&format!("/db/4?rev={rev}")).await.status, 200);
    // A deletion is `{_id, _rev, _deleted: true, _revisions}`.
    let rows = changes(&s, "/db/_changes?filter=foo/deleted").await;
    assert_eq!(ids(&rows), ["4"]);
    assert_eq!(rows[0]["deleted"], true);
    // style=all_docs: each leaf is tried; only the passing ones are listed.
    s.post_json(
        "/db/_bulk_docs",
        &json!({"new_edits": false, "docs": [{"_id": "5", "_rev": "1-aaaa", "integer": 2}]}),
    )
    .await;
    let rows = changes(&s, "/db/_changes?filter=foo/even&style=all_docs").await;
    let five = rows.iter().find(|r| r["id"] == "5").unwrap();
    assert_eq!(five["changes"].as_array().unwrap().len(), 1);
    assert_ne!(five["changes"][0]["rev"], "1-aaaa");
}

#[tokio::test]
async fn a03_filter_errors_are_couchdbs() {
    let s = db().await;
    let r = s.get("/db/_changes?filter=foo%2Feven").await;
    r.assert_error(404, "not_found");
    assert_eq!(reason(&r), "missing");
    let r = s.get("/db/_changes?filter=nofilter").await;
    r.assert_error(400, "bad_request");
    assert_eq!(
        reason(&r),
        "`filter` must be of the form `designname/filtername`"
    );
    let r = s.get("/db/_changes?filter=_nope").await;
    r.assert_error(400, "bad_request");
    assert_eq!(reason(&r), "unknown builtin filter name");
    let rev = put_ok(&s, "/db/_design/bare", json!({})).await;
    let r = s.get("/db/_changes?filter=bare/x").await;
    r.assert_error(404, "not_found");
    assert_eq!(reason(&r), "missing json key: filters");
    assert_eq!(
        s.delete(&format!("/db/_design/bare?rev={rev}"))
            .await
            .status,
        200
    );
    let r = s.get("/db/_changes?filter=bare/x").await;
    r.assert_error(404, "not_found");
    assert_eq!(reason(&r), "deleted");
    numbered(&s).await;
    let r = s.get("/db/_changes?filter=foo%2Fodd").await;
    r.assert_error(404, "not_found");
    assert_eq!(reason(&r), "missing json key: odd");
    // A function that throws fails the request with its error.
    s.get("/db/_changes?filter=foo/throws")
        .await
        .assert_error(500, "TypeError");
    // One that never ends is stopped.
    let started = Instant::now();
    let r = s.get("/db/_changes?filter=foo/loops").await;
    assert_eq!(r.status, 500);
    assert!(started.elapsed() < Duration::from_secs(25));
    assert_eq!(s.get("/db").await.status, 200);
}

#[tokio::test]
async fn a03_continuous_feed_with_a_filter() {
    let s = db().await;
    numbered(&s).await;
    let r = s
        .get("/db/_changes?feed=continuous&filter=foo/even&timeout=300")
        .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<&str> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(got, ["1", "3", "5", "7"]);
    assert!(lines.last().unwrap().get("last_seq").is_some());
}

// ---- 7. filter=_view ----

#[tokio::test]
async fn a07_view_filter() {
    let s = db().await;
    // The missing-`view` check.
    let r = s.get("/db/_changes?filter=_view&since=0&limit=25").await;
    r.assert_error(400, "bad_request");
    assert_eq!(reason(&r), "`view` filter parameter is not provided.");
    numbered(&s).await;
    let rows = changes(
        &s,
        "/db/_changes?filter=_view&view=foo%2Feven&since=0&limit=25",
    )
    .await;
    assert_eq!(ids(&rows), ["1", "3", "5", "7"]);
    let rows = changes(
        &s,
        "/db/_changes?filter=_view&view=foo/even&limit=2&include_docs=true",
    )
    .await;
    assert_eq!(ids(&rows), ["1", "3"]);
    assert_eq!(rows[0]["doc"]["integer"], 1);
    let r = s.get("/db/_changes?filter=_view&view=foo/none").await;
    r.assert_error(404, "not_found");
    assert_eq!(reason(&r), "missing json key: none");
    let r = s.get("/db/_changes?filter=_view&view=foo").await;
    r.assert_error(400, "bad_request");
    // `view` without `filter=_view` is no filter in CouchDB (PouchDB adds `filter=_view`).
    let rows = changes(&s, "/db/_changes?view=foo/even").await;
    assert_eq!(rows.len(), 9);
}

// ---- replication ----

fn remote(s: &TestServer, db: &str) -> Endpoint {
    Endpoint::Remote(Arc::new(
        Remote::new(
            &format!("http://{}/{db}", s.addr),
            Arc::new(TcpConnector),
            Arc::new(TokioClock),
        )
        .unwrap(),
    ))
}

fn local_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    (dir, store)
}

fn put(db: &Database, id: &str, v: Value) {
    db.put(
        Some(id),
        DocUpdate {
            body: v.as_object().unwrap().clone(),
            ..DocUpdate::default()
        },
        true,
    )
    .unwrap();
}

fn local_ids(db: &Database) -> Vec<String> {
    db.all_docs(&couch_sync::AllDocsQuery::default(), None)
        .unwrap()
        .rows
        .into_iter()
        .filter_map(|r| match r {
            couch_sync::AllDocsRow::Doc { id, .. } => Some(id),
            _ => None,
        })
        .collect()
}

fn seed(db: &Database) {
    for i in 0..6 {
        put(db, &format!("d{i}"), json!({"integer": i}));
    }
    put(
        db,
        "_design/foo",
        json!({
            "filters": {
                "odd": "function (doc) { return doc.integer % 2 === 1 || doc._deleted === true; }",
                "param": "function (doc, req) { return doc.integer == req.query.n; }",
            },
            "views": {"odd": {"map": "function (doc) { if (doc.integer % 2 === 1) emit(doc._id); }"}},
        }),
    );
}

fn filtered(filter: &str, params: Option<Value>) -> ReplicationOptions {
    ReplicationOptions {
        filter: Some(filter.to_owned()),
        query_params: params.map(|p| p.as_object().unwrap().clone()),
        ..ReplicationOptions::default()
    }
}

#[tokio::test]
async fn replication_with_a_ddoc_filter_from_a_local_source() {
    let (_d, store) = local_store();
    let source = store.create_db("source").unwrap();
    seed(&source);
    for (filter, params, want) in [
        ("foo/odd", None, vec!["d1", "d3", "d5"]),
        ("foo/param", Some(json!({"n": "4"})), vec!["d4"]),
        (
            "_view",
            Some(json!({"view": "foo/odd"})),
            vec!["d1", "d3", "d5"],
        ),
    ] {
        let target = store
            .create_db(&format!("t{}", want.len() * 10 + filter.len()))
            .unwrap();
        let r = Replication::new(
            Endpoint::Local(source.clone()),
            Endpoint::Local(target.clone()),
            filtered(filter, params),
        )
        .run()
        .await
        .unwrap();
        assert_eq!(r.progress.doc_write_failures, 0);
        assert_eq!(local_ids(&target), want, "{filter}");
    }
    // A deletion passes a filter that lets `_deleted` through (#3578).
    let target = store.create_db("deleted").unwrap();
    let doc = source
        .get("d2", &couch_sync::GetOptions::default())
        .unwrap();
    source
        .put(
            Some("d2"),
            DocUpdate {
                rev: Some(doc.rev),
                deleted: true,
                ..DocUpdate::default()
            },
            true,
        )
        .unwrap();
    Replication::new(
        Endpoint::Local(source.clone()),
        Endpoint::Local(target.clone()),
        filtered("foo/odd", None),
    )
    .run()
    .await
    .unwrap();
    let info = target.info().unwrap();
    assert_eq!((info.doc_count, info.doc_del_count), (3, 1));
    // A missing filter ends the replication with CouchDB's 404.
    let err = Replication::new(
        Endpoint::Local(source.clone()),
        Endpoint::Local(target),
        filtered("foo/none", None),
    )
    .run()
    .await
    .unwrap_err();
    assert_eq!(err.status(), 404);
}

#[tokio::test]
async fn replication_with_a_ddoc_filter_from_a_remote_source() {
    let s = db().await;
    seed(&s.store.db("db").unwrap());
    let (_d, store) = local_store();
    for (filter, params, want) in [
        ("foo/odd", None, vec!["d1", "d3", "d5"]),
        ("foo/param", Some(json!({"n": 2})), vec!["d2"]),
        (
            "_view",
            Some(json!({"view": "foo/odd"})),
            vec!["d1", "d3", "d5"],
        ),
    ] {
        let target = store
            .create_db(&format!("t{}", want.len() * 10 + filter.len()))
            .unwrap();
        Replication::new(
            remote(&s, "db"),
            Endpoint::Local(target.clone()),
            filtered(filter, params),
        )
        .run()
        .await
        .unwrap();
        assert_eq!(local_ids(&target), want, "{filter}");
    }
    // Different filters are different replications.
    let a = Replication::new(remote(&s, "db"), remote(&s, "x"), filtered("foo/odd", None));
    let b = Replication::new(
        remote(&s, "db"),
        remote(&s, "x"),
        filtered("foo/param", None),
    );
    let c = Replication::new(
        remote(&s, "db"),
        remote(&s, "x"),
        ReplicationOptions::default(),
    );
    assert_ne!(a.id(), b.id());
    assert_ne!(a.id(), c.id());
}

#[tokio::test]
async fn replicate_endpoint_takes_filter_and_query_params() {
    let s = db().await;
    seed(&s.store.db("db").unwrap());
    let r = s
        .post_json(
            "/_replicate",
            &json!({"source": "db", "target": "out", "create_target": true,
                    "filter": "foo/param", "query_params": {"n": "5"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let rows = s.get("/out/_all_docs").await.json()["rows"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["id"], "d5");
}

#[tokio::test]
async fn replication_to_a_validating_target_counts_failures_and_goes_on() {
    let s = db().await;
    put_ok(
        &s,
        "/db/_design/validate",
        json!({"validate_doc_update": MUST_HAVE_FOO}),
    )
    .await;
    let (_d, store) = local_store();
    let source = store.create_db("source").unwrap();
    put(&source, "a", json!({"foo": 1}));
    put(&source, "b", json!({"bar": 1}));
    put(&source, "c", json!({"foo": 2}));
    let r = Replication::new(
        Endpoint::Local(source.clone()),
        remote(&s, "db"),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(r.progress.doc_write_failures, 1);
    assert_eq!(r.progress.docs_written, 2);
    assert_eq!(s.get("/db/a").await.status, 200);
    s.get("/db/b").await.assert_error(404, "not_found");
    assert_eq!(s.get("/db/c").await.status, 200);
}

#[tokio::test]
async fn an_edited_filter_function_starts_the_replication_over() {
    let s = db().await;
    let source = s.store.db("db").unwrap();
    seed(&source);
    let (_d, store) = local_store();
    let target = store.create_db("t").unwrap();
    let run = || {
        let replication = Replication::new(
            remote(&s, "db"),
            Endpoint::Local(target.clone()),
            filtered("foo/odd", None),
        );
        async move { replication.run().await }
    };
    let first = run().await.unwrap();
    assert_eq!(first.progress.docs_written, 3);
    // Same function: resumes from the checkpoint, nothing to do.
    let again = run().await.unwrap();
    assert_eq!(again.progress.missing_checked, 0);
    // An edited function is another replication (CouchDB's id includes the code): from 0.
    let ddoc = source
        .get("_design/foo", &couch_sync::GetOptions::default())
        .unwrap();
    let mut body = ddoc.json.clone();
    body.remove("_id");
    body.remove("_rev");
    body["filters"]["odd"] = json!("function (doc) { return doc.integer % 2 === 0; }");
    source
        .put(
            Some("_design/foo"),
            DocUpdate {
                rev: Some(ddoc.rev),
                body,
                ..DocUpdate::default()
            },
            true,
        )
        .unwrap();
    let edited = run().await.unwrap();
    assert_eq!(edited.progress.docs_written, 3);
    assert_eq!(local_ids(&target), ["d0", "d1", "d2", "d3", "d4", "d5"]);
}

#[tokio::test]
async fn live_replication_with_a_filtered_ddoc_and_query_params() {
    let s = db().await;
    let source = s.store.db("db").unwrap();
    seed(&source);
    let (_d, store) = local_store();
    for (filter, params) in [
        ("foo/param", Some(json!({"n": 7}))),
        ("_view", Some(json!({"view": "foo/odd"}))),
    ] {
        let target = store.create_db(&format!("live{}", filter.len())).unwrap();
        let options = ReplicationOptions {
            continuous: true,
            idle_wait: Duration::from_millis(300),
            ..filtered(filter, params)
        };
        let replication = Arc::new(Replication::new(
            remote(&s, "db"),
            Endpoint::Local(target.clone()),
            options,
        ));
        let running = {
            let r = replication.clone();
            tokio::spawn(async move { r.run().await })
        };
        put(
            &source,
            &format!("late{}", filter.len()),
            json!({"integer": 7}),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !local_ids(&target).contains(&format!("late{}", filter.len())) {
            assert!(
                Instant::now() < deadline,
                "{filter}: {:?}",
                local_ids(&target)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replication.canceller().cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), running).await;
        assert!(!local_ids(&target).contains(&"d0".to_owned()), "{filter}");
    }
}
