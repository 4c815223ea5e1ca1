//! Map/reduce views (feature `js`) over HTTP, checked against what Apache CouchDB 3.4.3 answers
//! (`couch_mrview_http`, `couch_mrview_util:validate_args`, PouchDB's design-doc and mapreduce
//! suites), plus the index's life: incremental updates, rebuilds, cleanup, restarts, hostile
//! map functions, document filters, and a model check.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use axum::http::request::Parts;
use couch_sync::server::{Authorize, Decision, Operation, ServerConfig};
use couch_sync::view::{self, Param, ViewQuery};
use couch_sync::{Database, DocFilter, DocUpdate, ParseOptions, Store, StoreConfig};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

async fn db_with(docs: Value) -> common::TestServer {
    let s = common::start().await;
    assert_eq!(s.put_json("/db", &json!({})).await.status, 201);
    bulk(&s, docs).await;
    s
}

async fn bulk(s: &common::TestServer, docs: Value) {
    let r = s
        .post_json("/db/_bulk_docs", &json!({ "docs": docs }))
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

async fn get_ok(s: &common::TestServer, path: &str) -> Value {
    let r = s.get(path).await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

#[track_caller]
fn assert_couch_error(r: &common::Reply, status: u16, error: &str, reason: &str) {
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (status, json!({"error": error, "reason": reason}))
    );
}

fn foo_ddoc() -> Value {
    json!({
        "_id": "_design/foo",
        "views": {"scores": {
            "map": "function (doc) { if (doc.score) { emit(null, doc.score); } }",
            "reduce": "function (keys, values, rereduce) { return sum(values); }"
        }}
    })
}

/// couchdb-differences.md §4: PouchDB's `Basic views`, answered as CouchDB does.
#[tokio::test]
async fn pouchdb_basic_views() {
    let s = db_with(json!([
        foo_ddoc(),
        {"_id": "dale", "score": 3},
        {"_id": "mikeal", "score": 5},
        {"_id": "max", "score": 4},
        {"_id": "nuno", "score": 3}
    ]))
    .await;
    let want = json!({"total_rows": 4, "offset": 0, "rows": [
        {"id": "dale", "key": null, "value": 3},
        {"id": "max", "key": null, "value": 4},
        {"id": "mikeal", "key": null, "value": 5},
        {"id": "nuno", "key": null, "value": 3}
    ]});
    let r = s.get("/db/_design/foo/_view/scores?reduce=false").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), want);
    assert_eq!(
        get_ok(
            &s,
            "/db/_design/foo/_view/scores?reduce=false&conflicts=true"
        )
        .await,
        want
    );
    assert_eq!(
        get_ok(&s, "/db/_design/foo/_view/scores").await,
        json!({"rows": [{"key": null, "value": 15}]})
    );
    let r = s
        .post_json(
            "/db/_design/foo/_view/scores?reduce=false",
            &json!({"keys": [null]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["rows"], want["rows"]);
    // Two queries at once see the same index.
    let (a, b) = tokio::join!(
        s.get("/db/_design/foo/_view/scores?reduce=false"),
        s.get("/db/_design/foo/_view/scores?reduce=false")
    );
    assert_eq!((a.json(), b.json()), (want.clone(), want));
}

fn numbers_db() -> Value {
    let mut docs = vec![json!({
        "_id": "_design/d",
        "views": {
            "by_n": {"map": "function (doc) { if (typeof doc.n === 'number') emit(doc.n, doc.v || null); }"},
            "sum": {"map": "function (doc) { if (doc.tag) emit(doc.tag, doc.n); }", "reduce": "_sum"},
            "count": {"map": "function (doc) { if (doc.tag) emit(doc.tag, null); }", "reduce": "_count"},
            "stats": {"map": "function (doc) { if (doc.tag) emit(doc.tag, doc.n); }", "reduce": "_stats"},
            "js": {"map": "function (doc) { if (doc.tag) emit(doc.tag, doc.n); }",
                   "reduce": "function (k, v, re) { return sum(v) * (re ? 1 : 1); }"},
            "link": {"map": "function (doc) { if (doc.other) emit(doc._id, {_id: doc.other}); }"},
            "twice": {"map": "function (doc) { if (doc.n === 1) { emit('k', 1); emit('k', 2); } }"}
        }
    })];
    for (i, tag) in [
        (1, ["a", "x"]),
        (2, ["a", "y"]),
        (3, ["b", "x"]),
        (4, ["b", "x"]),
        (5, ["c", "z"]),
    ] {
        docs.push(json!({"_id": format!("d{i}"), "n": i, "tag": tag}));
    }
    docs.push(json!({"_id": "e3", "n": 3, "v": "dup"}));
    docs.push(json!({"_id": "link1", "other": "d2"}));
    Value::Array(docs)
}

fn ids(v: &Value) -> Vec<String> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn map_query_parameters() {
    let s = db_with(numbers_db()).await;
    let q = |p: &str| format!("/db/_design/d/_view/by_n?{p}");
    let all = get_ok(&s, &q("")).await;
    assert_eq!(all["total_rows"], 6);
    assert_eq!(ids(&all), ["d1", "d2", "d3", "e3", "d4", "d5"]);
    let r = get_ok(&s, &q("key=3")).await;
    assert_eq!(
        r,
        json!({"total_rows": 6, "offset": 2, "rows": [
            {"id": "d3", "key": 3, "value": null}, {"id": "e3", "key": 3, "value": "dup"}]})
    );
    assert_eq!(
        ids(&get_ok(&s, &q("startkey=2&endkey=4")).await),
        ["d2", "d3", "e3", "d4"]
    );
    assert_eq!(
        ids(&get_ok(&s, &q("start_key=2&end_key=4&inclusive_end=false")).await),
        ["d2", "d3", "e3"]
    );
    let r = get_ok(&s, &q("startkey=4&endkey=2&descending=true")).await;
    assert_eq!(ids(&r), ["d4", "e3", "d3", "d2"]);
    assert_eq!(r["offset"], 1);
    assert_eq!(
        ids(&get_ok(
            &s,
            &q("startkey=4&endkey=2&descending=true&inclusive_end=false")
        )
        .await),
        ["d4", "e3", "d3"]
    );
    let r = get_ok(&s, &q("skip=1&limit=2")).await;
    assert_eq!(
        (ids(&r), r["offset"].clone()),
        (vec!["d2".to_owned(), "d3".to_owned()], json!(1))
    );
    assert_eq!(ids(&get_ok(&s, &q("limit=0")).await), Vec::<String>::new());
    assert_eq!(
        ids(&get_ok(&s, &q("descending=true&limit=2")).await),
        ["d5", "d4"]
    );
    // Document-id bounds within one key.
    assert_eq!(
        ids(&get_ok(&s, &q("startkey=3&startkey_docid=e3&endkey=4")).await),
        ["e3", "d4"]
    );
    assert_eq!(
        ids(&get_ok(&s, &q("startkey=2&endkey=3&endkey_docid=d3")).await),
        ["d2", "d3"]
    );
    assert_eq!(
        ids(&get_ok(
            &s,
            &q("startkey=2&endkey=3&endkey_docid=d3&inclusive_end=false")
        )
        .await),
        ["d2"]
    );
    assert_eq!(
        ids(&get_ok(
            &s,
            &q("startkey=3&startkey_docid=d3&endkey=2&descending=true")
        )
        .await),
        ["d3", "d2"]
    );
    // keys: in the order given, repeated and missing keys as CouchDB.
    let r = get_ok(&s, &q("keys=[5,3,9,1]")).await;
    assert_eq!(ids(&r), ["d5", "d3", "e3", "d1"]);
    let r = s
        .post_json(&q("descending=true"), &json!({"keys": [3, 1]}))
        .await;
    assert_eq!(ids(&r.json()), ["e3", "d3", "d1"]);
    let r = s
        .post_json(&q("limit=2&skip=1"), &json!({"keys": [3, 1]}))
        .await;
    assert_eq!(ids(&r.json()), ["e3", "d1"]);
    // include_docs, the winning revision, and linked documents.
    let r = get_ok(&s, &q("key=5&include_docs=true")).await;
    assert_eq!(r["rows"][0]["doc"]["_id"], "d5");
    assert_eq!(r["rows"][0]["doc"]["tag"], json!(["c", "z"]));
    assert!(
        r["rows"][0]["doc"]["_rev"]
            .as_str()
            .unwrap()
            .starts_with("1-")
    );
    let r = get_ok(&s, "/db/_design/d/_view/link?include_docs=true").await;
    assert_eq!(r["rows"][0]["id"], "link1");
    assert_eq!(r["rows"][0]["value"], json!({"_id": "d2"}));
    assert_eq!(r["rows"][0]["doc"]["_id"], "d2");
    // A document emitting the same key twice keeps both rows.
    let r = get_ok(&s, "/db/_design/d/_view/twice").await;
    assert_eq!(
        r["rows"],
        json!([{"id": "d1", "key": "k", "value": 1}, {"id": "d1", "key": "k", "value": 2}])
    );
    // update_seq, stale, update.
    let r = get_ok(&s, &q("update_seq=true&limit=0")).await;
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["total_rows", "offset", "update_seq", "rows"]);
    assert!(r["update_seq"].as_str().unwrap().starts_with("8-"));
    assert_eq!(get_ok(&s, &q("stale=ok&limit=0")).await["total_rows"], 6);
    assert_eq!(
        get_ok(&s, &q("update=false&limit=0&sorted=false")).await["total_rows"],
        6
    );
    // HEAD answers like GET without a body.
    let r = s.send("HEAD", &q(""), &[], "").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
}

#[tokio::test]
async fn conflicts_and_winner() {
    let s = db_with(numbers_db()).await;
    // A conflicting revision of d1 that wins (higher generation).
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"new_edits": false, "docs": [
                {"_id": "d1", "_rev": "2-aaaa", "n": 10, "tag": ["q", "x"],
                 "_revisions": {"start": 2, "ids": ["aaaa", "0000"]}}]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = get_ok(
        &s,
        "/db/_design/d/_view/by_n?key=10&include_docs=true&conflicts=true",
    )
    .await;
    assert_eq!(ids(&r), ["d1"]);
    assert_eq!(r["rows"][0]["doc"]["_rev"], "2-aaaa");
    assert_eq!(
        r["rows"][0]["doc"]["_conflicts"].as_array().unwrap().len(),
        1
    );
    let r = get_ok(&s, "/db/_design/d/_view/by_n?key=10&include_docs=true").await;
    assert!(r["rows"][0]["doc"].get("_conflicts").is_none());
    assert_eq!(
        get_ok(&s, "/db/_design/d/_view/by_n?key=1").await["rows"],
        json!([])
    );
    // A view that sees `_conflicts`, as CouchDB's documentation suggests for finding them.
    let r = s
        .put_json(
            "/db/_design/c",
            &json!({"views": {"c": {"map": "function (doc) { if (doc._conflicts) emit(doc._id, doc._conflicts.length); }"}}}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        get_ok(&s, "/db/_design/c/_view/c").await["rows"],
        json!([{"id": "d1", "key": "d1", "value": 1}])
    );
}

#[tokio::test]
async fn reduce_and_grouping() {
    let s = db_with(numbers_db()).await;
    let q = |v: &str, p: &str| format!("/db/_design/d/_view/{v}?{p}");
    assert_eq!(
        get_ok(&s, &q("sum", "")).await,
        json!({"rows": [{"key": null, "value": 15}]})
    );
    assert_eq!(get_ok(&s, &q("count", "")).await["rows"][0]["value"], 5);
    assert_eq!(get_ok(&s, &q("js", "")).await["rows"][0]["value"], 15);
    assert_eq!(
        get_ok(&s, &q("stats", "")).await["rows"][0]["value"],
        json!({"sum": 15, "count": 5, "min": 1, "max": 5, "sumsqr": 55})
    );
    assert_eq!(
        get_ok(&s, &q("sum", "group=true")).await["rows"],
        json!([
            {"key": ["a", "x"], "value": 1}, {"key": ["a", "y"], "value": 2},
            {"key": ["b", "x"], "value": 7}, {"key": ["c", "z"], "value": 5}])
    );
    assert_eq!(
        get_ok(&s, &q("count", "group_level=1")).await["rows"],
        json!([{"key": ["a"], "value": 2}, {"key": ["b"], "value": 2}, {"key": ["c"], "value": 1}])
    );
    assert_eq!(
        get_ok(&s, &q("js", "group_level=1&descending=true&skip=1&limit=1")).await["rows"],
        json!([{"key": ["b"], "value": 7}])
    );
    assert_eq!(
        get_ok(&s, &q("sum", "startkey=[\"b\"]&group_level=1")).await["rows"],
        json!([{"key": ["b"], "value": 7}, {"key": ["c"], "value": 5}])
    );
    assert_eq!(
        get_ok(&s, &q("sum", "group_level=0")).await["rows"],
        json!([{"key": null, "value": 15}])
    );
    let r = s
        .post_json(
            &q("sum", "group=true"),
            &json!({"keys": [["c", "z"], ["nope"], ["a", "x"]]}),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"rows": [{"key": ["c", "z"], "value": 5}, {"key": ["a", "x"], "value": 1}]})
    );
    let r = get_ok(&s, &q("sum", "reduce=false&limit=1")).await;
    assert_eq!(
        r["rows"],
        json!([{"id": "d1", "key": ["a", "x"], "value": 1}])
    );
    let r = get_ok(&s, &q("sum", "update_seq=true&key=[\"zz\"]")).await;
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["update_seq", "rows"]);
    assert_eq!(r["rows"], json!([]));
    // Multi-query.
    let r = s
        .post_json(
            &q("sum", ""),
            &json!({"queries": [{}, {"reduce": false, "limit": 1}, {"group": true, "limit": 1}]}),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"results": [
            {"rows": [{"key": null, "value": 15}]},
            {"total_rows": 5, "offset": 0, "rows": [{"id": "d1", "key": ["a", "x"], "value": 1}]},
            {"rows": [{"key": ["a", "x"], "value": 1}]}]})
    );
}

#[tokio::test]
async fn errors_as_couchdb() {
    let s = db_with(numbers_db()).await;
    let q = |v: &str, p: &str| format!("/db/_design/d/_view/{v}?{p}");
    let qp = "query_parse_error";
    for (path, reason) in [
        (
            q("by_n", "reduce=true"),
            "Reduce is invalid for map-only views.",
        ),
        (
            q("sum", "include_docs=true"),
            "`include_docs` is invalid for reduce",
        ),
        (
            q("sum", "reduce=false&group=true"),
            "Invalid use of grouping on a map view.",
        ),
        (
            q("by_n", "group_level=1"),
            "Invalid use of grouping on a map view.",
        ),
        (
            q("sum", "keys=[1]"),
            "Multi-key fetchs for reduce views must use `group=true`",
        ),
        (
            q("by_n", "keys=[1]&key=1"),
            "`keys` is incompatible with `key`, `start_key` and `end_key`",
        ),
        (
            q("by_n", "keys=[1]&startkey=1"),
            "`keys` is incompatible with `key`, `start_key` and `end_key`",
        ),
        (q("by_n", "keys=1"), "`keys` must be an array of strings."),
        (
            q("sum", "group=false&group_level=2"),
            "Can't specify group=false and group_level>0 at the same time",
        ),
        (
            q("sum", "conflicts=true"),
            "`conflicts` is invalid for reduce views.",
        ),
        (
            q("by_n", "limit=-1"),
            "Invalid value for positive integer: \"-1\"",
        ),
        (q("by_n", "skip=x"), "Invalid value for integer: \"x\""),
        (
            q("by_n", "descending=maybe"),
            "Invalid boolean parameter: \"maybe\"",
        ),
        (q("by_n", "stale=later"), "Invalid value for `stale`."),
        (q("by_n", "update=soon"), "Invalid value for `update`."),
        (
            q("by_n", "startkey=5&endkey=1"),
            "No rows can match your key range, reverse your start_key and end_key or set descending=true",
        ),
        (
            q("by_n", "startkey=1&endkey=5&descending=true"),
            "No rows can match your key range, reverse your start_key and end_key or set descending=false",
        ),
    ] {
        let r = s.get(&path).await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (400, json!({"error": qp, "reason": reason})),
            "{path}"
        );
    }
    s.get(&q("by_n", "key=nojson"))
        .await
        .assert_error(400, "bad_request");
    assert_couch_error(
        &s.get("/db/_design/d/_view/nope").await,
        404,
        "not_found",
        "missing_named_view",
    );
    assert_couch_error(
        &s.get("/db/_design/none/_view/v").await,
        404,
        "not_found",
        "missing",
    );
    assert_couch_error(
        &s.get("/nodb/_design/d/_view/by_n").await,
        404,
        "not_found",
        "Database does not exist.",
    );
    let r = s
        .send(
            "POST",
            &q("by_n", ""),
            &[("content-type", "text/plain")],
            "{}",
        )
        .await;
    r.assert_error(415, "bad_content_type");
    assert_couch_error(
        &s.post_json(&q("by_n", ""), &json!({})).await,
        400,
        "bad_request",
        "POST body must contain `keys` or `queries` field",
    );
    s.send("PUT", &q("by_n", ""), &[], "")
        .await
        .assert_error(405, "method_not_allowed");
    // A deleted design document.
    let rev = get_ok(&s, "/db/_design/d").await["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.delete(&format!("/db/_design/d?rev={rev}")).await.status,
        200
    );
    assert_couch_error(&s.get(&q("by_n", "")).await, 404, "not_found", "deleted");
    // Another language, and a map function that does not compile.
    let r = s
        .put_json(
            "/db/_design/py",
            &json!({"language": "python", "views": {"v": {"map": "def f(d): pass"}}}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_couch_error(
        &s.get("/db/_design/py/_view/v").await,
        500,
        "unknown_query_language",
        "python",
    );
    let r = s
        .put_json(
            "/db/_design/bad",
            &json!({"views": {"v": {"map": "function (doc) { emit( }"}}}),
        )
        .await;
    assert_eq!(r.status, 201);
    s.get("/db/_design/bad/_view/v")
        .await
        .assert_error(400, "compilation_error");
    // `_show` and friends keep CouchDB's answer without a query server.
    s.get("/db/_design/py/_show/x")
        .await
        .assert_error(500, "unknown_query_language");
}

#[tokio::test]
async fn incremental_updates_rebuilds_info_and_cleanup() {
    let s = db_with(numbers_db()).await;
    let q = "/db/_design/d/_view/by_n";
    assert_eq!(get_ok(&s, q).await["total_rows"], 6);
    // Update, delete, add.
    let d2 = get_ok(&s, "/db/d2").await;
    let r = s
        .put_json("/db/d2", &json!({"_rev": d2["_rev"], "n": 20}))
        .await;
    assert_eq!(r.status, 201);
    let d5 = get_ok(&s, "/db/d5").await;
    assert_eq!(
        s.delete(&format!("/db/d5?rev={}", d5["_rev"].as_str().unwrap()))
            .await
            .status,
        200
    );
    bulk(&s, json!([{"_id": "new", "n": 0}])).await;
    // stale=ok still answers from the old index.
    assert_eq!(get_ok(&s, &format!("{q}?stale=ok")).await["total_rows"], 6);
    let r = get_ok(&s, q).await;
    assert_eq!(ids(&r), ["new", "d1", "d3", "e3", "d4", "d2"]);
    assert_eq!(r["rows"][5]["key"], 20);
    let info = get_ok(&s, "/db/_design/d/_info").await;
    assert_eq!(info["name"], "d");
    assert_eq!(info["view_index"]["update_seq"], 11);
    assert_eq!(info["view_index"]["updates_pending"]["total"], 0);
    assert_eq!(info["view_index"]["language"], "javascript");
    let sig1 = info["view_index"]["signature"].as_str().unwrap().to_owned();
    assert_eq!(sig1.len(), 32);
    // update=lazy answers first, then catches up.
    bulk(&s, json!([{"_id": "lazy", "n": 100}])).await;
    assert_eq!(
        get_ok(&s, &format!("{q}?update=lazy")).await["total_rows"],
        6
    );
    let mut seen = 0;
    for _ in 0..200 {
        seen = get_ok(&s, &format!("{q}?stale=ok")).await["total_rows"]
            .as_u64()
            .unwrap();
        if seen == 7 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::timeout(
            std::time::Duration::from_millis(10),
            std::future::pending::<()>(),
        )
        .await
        .ok();
    }
    assert_eq!(seen, 7);
    // A changed design document is a new index, built from scratch.
    let mut ddoc = get_ok(&s, "/db/_design/d").await;
    ddoc["views"]["by_n"]["map"] = json!("function (doc) { if (doc.n > 3) emit(doc.n, 'v2'); }");
    assert_eq!(s.put_json("/db/_design/d", &ddoc).await.status, 201);
    let r = get_ok(&s, q).await;
    assert_eq!(ids(&r), ["d4", "d2", "lazy"]);
    assert_eq!(r["rows"][0]["value"], "v2");
    let sig2 = get_ok(&s, "/db/_design/d/_info").await["view_index"]["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(sig1, sig2);
    let db = s.store.db("db").unwrap();
    let tables = view::index_tables(&db).unwrap();
    assert!(tables.iter().any(|t| t.contains(&sig1)), "{tables:?}");
    assert!(tables.iter().any(|t| t.contains(&sig2)));
    let r = s
        .send(
            "POST",
            "/db/_view_cleanup",
            &[("content-type", "application/json")],
            "",
        )
        .await;
    assert_eq!((r.status.as_u16(), r.json()), (202, json!({"ok": true})));
    let tables = view::index_tables(&db).unwrap();
    assert!(!tables.iter().any(|t| t.contains(&sig1)), "{tables:?}");
    assert!(tables.iter().any(|t| t.contains(&sig2)));
    assert_eq!(ids(&get_ok(&s, q).await), ["d4", "d2", "lazy"]);
    s.get("/db/_view_cleanup")
        .await
        .assert_error(405, "method_not_allowed");
    assert_couch_error(
        &s.get("/db/_design/none/_info").await,
        404,
        "not_found",
        "missing",
    );
}

// ---- the library API: restarts, hostile functions, filters, the model ----------------------

fn put(db: &Database, doc: Value) {
    let dir = std::env::temp_dir();
    let update = DocUpdate::from_json(
        doc.as_object().unwrap().clone(),
        ParseOptions {
            compress: false,
            tmp_dir: &dir,
        },
    )
    .unwrap();
    db.put(None, update, true).unwrap();
}

fn query(db: &Database, ddoc: &str, view: &str, params: &[(&str, &str)]) -> Value {
    let q = ViewQuery::parse(params.iter().map(|(k, v)| (*k, Param::Text(v)))).unwrap();
    view::query(db, ddoc, view, &q, None).unwrap()
}

#[test]
fn restart_keeps_the_index_without_mapping_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let db = store.create_db("db").unwrap();
        put(
            &db,
            json!({"_id": "_design/d", "views": {"v": {"map": "function (doc) { emit(doc.n, Math.random()); }"}}}),
        );
        for n in 0..50 {
            put(&db, json!({"_id": format!("doc{n:02}"), "n": n}));
        }
        let out = query(&db, "d", "v", &[]);
        assert_eq!(out["total_rows"], 50);
        assert_eq!(view::docs_mapped(&db), 50);
        out
    };
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let db = store.db("db").unwrap();
    assert_eq!(
        query(&db, "d", "v", &[]),
        first,
        "same random values: not re-mapped"
    );
    assert_eq!(view::docs_mapped(&db), 0);
    put(&db, json!({"_id": "late", "n": 99}));
    assert_eq!(query(&db, "d", "v", &[])["total_rows"], 51);
    assert_eq!(view::docs_mapped(&db), 1);
}

#[test]
fn many_documents_index_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let db = store.create_db("db").unwrap();
    let docs: Vec<_> = (0..2500)
        .map(|n| {
            let dir = std::env::temp_dir();
            DocUpdate::from_json(
                json!({"_id": format!("{n:05}"), "n": n % 10})
                    .as_object()
                    .unwrap()
                    .clone(),
                ParseOptions {
                    compress: false,
                    tmp_dir: &dir,
                },
            )
        })
        .collect();
    db.bulk_docs(docs, true).unwrap();
    put(
        &db,
        json!({"_id": "_design/d", "views": {"v": {"map": "function (doc) { emit(doc.n, 1); }", "reduce": "_count"}}}),
    );
    assert_eq!(query(&db, "d", "v", &[])["rows"][0]["value"], 2500);
    let g = query(&db, "d", "v", &[("group", "true")]);
    assert_eq!(g["rows"].as_array().unwrap().len(), 10);
    assert_eq!(g["rows"][3], json!({"key": 3, "value": 250}));
    let m = query(
        &db,
        "d",
        "v",
        &[
            ("reduce", "false"),
            ("key", "7"),
            ("skip", "100"),
            ("limit", "2"),
        ],
    );
    assert_eq!(m["offset"], 1750 + 100);
    assert_eq!(m["rows"][0]["id"], "01007");
}

#[test]
fn hostile_map_functions_emit_nothing_and_the_rest_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let db = store.create_db("db").unwrap();
    put(
        &db,
        json!({"_id": "_design/h", "views": {
            "v": {"map": "function (doc) {
                if (doc.kind === 'loop') { while (true) {} }
                if (doc.kind === 'alloc') { var a = []; while (true) { a.push(new Array(1e6).fill(1)); } }
                if (doc.kind === 'throw') { throw new Error('boom'); }
                if (doc.kind === 'deep') { var f = function (n) { return f(n + 1) + 1; }; f(0); }
                emit(doc._id, doc.kind);
            }"},
            "other": {"map": "function (doc) { emit(doc.kind, null); }"}
        }}),
    );
    for kind in ["ok1", "loop", "alloc", "throw", "deep", "ok2"] {
        put(&db, json!({"_id": kind, "kind": kind}));
    }
    let out = query(&db, "h", "v", &[]);
    assert_eq!(
        out["rows"],
        json!([{"id": "ok1", "key": "ok1", "value": "ok1"}, {"id": "ok2", "key": "ok2", "value": "ok2"}])
    );
    // The other view of the same design document saw every document.
    assert_eq!(query(&db, "h", "other", &[])["total_rows"], 6);
    // The sandbox still works for later documents.
    put(&db, json!({"_id": "ok3", "kind": "ok3"}));
    assert_eq!(query(&db, "h", "v", &[])["total_rows"], 3);
}

struct Hide;

impl DocFilter for Hide {
    fn allows(&self, _id: &str, doc: &Map<String, Value>) -> bool {
        doc.get("secret") != Some(&Value::Bool(true))
    }
}

#[test]
fn a_filter_hides_rows_and_changes_reductions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let db = store.create_db("db").unwrap();
    put(
        &db,
        json!({"_id": "_design/d", "views": {
        "v": {"map": "function (doc) { emit(doc.k, doc.n); }", "reduce": "_sum"},
        "link": {"map": "function (doc) { if (doc.to) emit(doc._id, {_id: doc.to}); }"}}}),
    );
    put(&db, json!({"_id": "a", "k": 1, "n": 1}));
    put(&db, json!({"_id": "b", "k": 2, "n": 10, "secret": true}));
    put(&db, json!({"_id": "c", "k": 3, "n": 100, "to": "b"}));
    let run = |view: &str, params: &[(&str, &str)], filter: Option<&dyn DocFilter>| {
        let q = ViewQuery::parse(params.iter().map(|(k, v)| (*k, Param::Text(v)))).unwrap();
        view::query(&db, "d", view, &q, filter).unwrap()
    };
    assert_eq!(run("v", &[], None)["rows"][0]["value"], 111);
    assert_eq!(run("v", &[], Some(&Hide))["rows"][0]["value"], 101);
    let m = run("v", &[("reduce", "false"), ("startkey", "2")], Some(&Hide));
    assert_eq!(
        m,
        json!({"total_rows": 2, "offset": 1, "rows": [{"id": "c", "key": 3, "value": 100}]})
    );
    let g = run("v", &[("group", "true")], Some(&Hide));
    assert_eq!(
        g["rows"],
        json!([{"key": 1, "value": 1}, {"key": 3, "value": 100}])
    );
    // A linked document the caller may not see is null.
    let l = run("link", &[("include_docs", "true")], Some(&Hide));
    assert_eq!(l["rows"][0]["doc"], Value::Null);
    assert_eq!(
        run("link", &[("include_docs", "true")], None)["rows"][0]["doc"]["_id"],
        "b"
    );
}

/// Over HTTP: the hook's filter for `ReadView` applies.
struct ViewOnly;

impl Authorize for ViewOnly {
    fn authorize(&self, request: &Parts, op: &Operation<'_>) -> Decision {
        match (
            request.headers.get("x-user").and_then(|v| v.to_str().ok()),
            op,
        ) {
            (
                Some("viewer"),
                Operation::ReadView {
                    ddoc: "d",
                    view: "v",
                    ..
                },
            ) => Decision::AllowFiltered(Arc::new(Hide)),
            (Some("viewer"), _) => Decision::Forbidden("no".into()),
            _ => Decision::Allow,
        }
    }
}

#[tokio::test]
async fn read_view_authorization_and_filter_over_http() {
    let s = common::start_with(ServerConfig::default(), Arc::new(ViewOnly)).await;
    assert_eq!(s.put_json("/db", &json!({})).await.status, 201);
    bulk(&s, json!([
        {"_id": "_design/d", "views": {"v": {"map": "function (doc) { emit(doc._id, 1); }", "reduce": "_count"}}},
        {"_id": "a"}, {"_id": "b", "secret": true}
    ]))
    .await;
    let viewer = [("x-user", "viewer")];
    let r = s.send("GET", "/db/_design/d/_view/v", &viewer, "").await;
    assert_eq!(r.json(), json!({"rows": [{"key": null, "value": 1}]}));
    let r = s
        .send("GET", "/db/_design/d/_view/v?reduce=false", &viewer, "")
        .await;
    assert_eq!(ids(&r.json()), ["a"]);
    s.send("GET", "/db/_all_docs", &viewer, "")
        .await
        .assert_error(403, "forbidden");
    s.send(
        "POST",
        "/db/_view_cleanup",
        &[("x-user", "viewer"), ("content-type", "application/json")],
        "",
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(
        get_ok(&s, "/db/_design/d/_view/v").await["rows"][0]["value"],
        2
    );
}

// ---- model check ---------------------------------------------------------------------------

fn naive_rows(docs: &[(String, Value, i64)]) -> Vec<(Value, String, i64)> {
    let mut rows: Vec<(Value, String, i64)> = docs
        .iter()
        .map(|(id, k, v)| (k.clone(), id.clone(), *v))
        .collect();
    rows.sort_by(|a, b| couch_sync::json::collate(&a.0, &b.0).then_with(|| a.1.cmp(&b.1)));
    rows
}

fn arb_key() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (0i64..6).prop_map(|n| json!(n)),
        "[ab]{0,2}".prop_map(Value::String),
        prop::collection::vec(0i64..3, 0..3).prop_map(|v| json!(v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn queries_match_a_naive_model(
        docs in prop::collection::btree_map("[a-e]{1,2}", (arb_key(), -5i64..20), 0..25),
        start in prop::option::of(arb_key()),
        end in prop::option::of(arb_key()),
        descending in any::<bool>(),
        skip in 0u64..4,
        limit in prop::option::of(0u64..6),
        level in 0u64..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let db = store.create_db("db").unwrap();
        put(&db, json!({"_id": "_design/m", "views": {
            "sum": {"map": "function (doc) { emit(doc.k, doc.v); }", "reduce": "_sum"},
            "count": {"map": "function (doc) { emit(doc.k, doc.v); }", "reduce": "_count"}}}));
        let docs: Vec<(String, Value, i64)> =
            docs.into_iter().map(|(id, (k, v))| (id, k, v)).collect();
        for (id, k, v) in &docs {
            put(&db, json!({"_id": id, "k": k, "v": v}));
        }
        let rows = naive_rows(&docs);
        let (lo, hi) = if descending { (end.clone(), start.clone()) } else { (start.clone(), end.clone()) };
        use std::cmp::Ordering::*;
        let in_range = |k: &Value| {
            lo.as_ref().is_none_or(|l| couch_sync::json::collate(k, l) != Less)
                && hi.as_ref().is_none_or(|h| couch_sync::json::collate(k, h) != Greater)
        };
        let mut selected: Vec<&(Value, String, i64)> = rows.iter().filter(|r| in_range(&r.0)).collect();
        if descending {
            selected.reverse();
        }
        let mut q = ViewQuery::default();
        q.start_key = start.clone();
        q.end_key = end.clone();
        q.descending = descending;
        q.skip = skip;
        q.limit = limit;
        q.reduce = Some(false);
        let bad_range = matches!((&start, &end), (Some(s), Some(e)) if s != e && {
            let o = couch_sync::json::collate(s, e);
            if descending { o == Less } else { o != Less }
        });
        let got = view::query(&db, "m", "sum", &q, None);
        if bad_range {
            prop_assert_eq!(got.unwrap_err().status(), 400);
            return Ok(());
        }
        let got = got.unwrap();
        let want: Vec<Value> = selected
            .iter()
            .skip(skip as usize)
            .take(limit.map_or(usize::MAX, |l| l as usize))
            .map(|(k, id, v)| json!({"id": id, "key": k, "value": v}))
            .collect();
        prop_assert_eq!(&got["rows"], &Value::Array(want));
        prop_assert_eq!(&got["total_rows"], &json!(rows.len()));
        // Reductions by group_level.
        let group = |k: &Value| match (level, k) {
            (0, _) => Value::Null,
            (n, Value::Array(a)) => Value::Array(a.iter().take(n as usize).cloned().collect()),
            (_, k) => k.clone(),
        };
        let mut groups: Vec<(Value, i64, u64)> = Vec::new();
        for (k, _, v) in &selected {
            let g = group(k);
            match groups.last_mut() {
                Some(last) if last.0 == g => { last.1 += v; last.2 += 1; }
                _ => groups.push((g, *v, 1)),
            }
        }
        let page = |i: usize| i >= skip as usize && limit.is_none_or(|l| ((i - skip as usize) as u64) < l);
        q.reduce = None;
        q.group_level = Some(level);
        for (viewname, pick) in [("sum", 1usize), ("count", 2)] {
            let got = view::query(&db, "m", viewname, &q, None).unwrap();
            let want: Vec<Value> = groups
                .iter()
                .enumerate()
                .filter(|(i, _)| page(*i))
                .map(|(_, (g, s, c))| json!({"key": g, "value": if pick == 1 { json!(s) } else { json!(c) }}))
                .collect();
            prop_assert_eq!(&got["rows"], &Value::Array(want), "{}", viewname);
        }
    }
}
