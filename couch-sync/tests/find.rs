//! Mango over HTTP (`_find`, `_explain`, `_index`), checked against what Apache CouchDB 3.4.3
//! answers (shapes, defaults, warnings and error strings from CouchDB's `src/mango`).

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

use std::collections::BTreeSet;

use common::start;
use proptest::prelude::*;
use serde_json::{Value, json};

async fn db_with(docs: Value) -> common::TestServer {
    let s = start().await;
    assert_eq!(s.put_json("/db", &json!({})).await.status, 201);
    let r = s
        .post_json("/db/_bulk_docs", &json!({ "docs": docs }))
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    s
}

fn people() -> Value {
    json!([
        {"_id": "alice", "name": "Alice", "age": 31, "city": {"name": "Oslo", "zip": "0150"}},
        {"_id": "bob", "name": "Bob", "age": 25, "city": {"name": "Bergen"}},
        {"_id": "carol", "name": "Carol", "age": 42},
        {"_id": "dave", "name": "Dave", "age": 25, "active": true},
        {"_id": "erin", "age": 19},
        {"_id": "_design/app", "views": {}}
    ])
}

fn ids(r: &common::Reply) -> Vec<String> {
    r.json()["docs"]
        .as_array()
        .unwrap_or_else(|| panic!("no docs: {}", r.json()))
        .iter()
        .map(|d| d["_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[track_caller]
fn assert_couch_error(r: &common::Reply, status: u16, error: &str, reason: &str) {
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (status, json!({"error": error, "reason": reason}))
    );
}

#[tokio::test]
async fn find_without_index_scans_all_docs_with_couchdb_warning() {
    let s = db_with(people()).await;
    let r = s
        .post_json("/db/_find", &json!({"selector": {"age": {"$gt": 20}}}))
        .await;
    assert_eq!(r.status, 200);
    let body = r.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["docs", "bookmark", "warning"]);
    assert_eq!(ids(&r), ["alice", "bob", "carol", "dave"]);
    assert_eq!(
        body["warning"],
        "No matching index found, create an index to optimize query time."
    );
    // Design documents are never results, even for an empty selector.
    let r = s.post_json("/db/_find", &json!({"selector": {}})).await;
    assert_eq!(ids(&r), ["alice", "bob", "carol", "dave", "erin"]);
    // No match: CouchDB's bookmark is "nil".
    let r = s
        .post_json("/db/_find", &json!({"selector": {"age": 1000}}))
        .await;
    assert_eq!(r.json()["docs"], json!([]));
    assert_eq!(r.json()["bookmark"], "nil");
}

#[tokio::test]
async fn request_errors_are_couchdb_s() {
    let s = db_with(people()).await;
    let cases = [
        (
            json!({}),
            400,
            "missing_required_key",
            "Missing required key: selector",
        ),
        (
            json!({"selector": 1}),
            400,
            "invalid_selector_json",
            "Selector must be a JSON object, not: 1",
        ),
        (
            json!({"selector": {}, "limit": -1}),
            400,
            "invalid_non_neg_integer",
            "-1 is not an integer greater than or equal to zero",
        ),
        (
            json!({"selector": {}, "limit": "x"}),
            400,
            "invalid_non_neg_integer",
            "<<120>> is not an integer greater than or equal to zero",
        ),
        (
            json!({"selector": {}, "skip": 1.5}),
            400,
            "invalid_non_neg_integer",
            "1.5 is not an integer greater than or equal to zero",
        ),
        (
            json!({"selector": {}, "r": 0}),
            400,
            "invalid_pos_integer",
            "0 is not an integer greater than zero",
        ),
        (
            json!({"selector": {}, "conflicts": "yes"}),
            400,
            "invalid_boolean",
            "Invalid boolean value: <<121,101,115>>",
        ),
        (
            json!({"selector": {}, "foo": 1}),
            400,
            "invalid_key",
            "Invalid key foo for this request.",
        ),
        (
            json!({"selector": {}, "sort": {"a": "asc"}}),
            400,
            "invalid_sort_json",
            "Sort must be an array of sort specs, not: {[{<<97>>,<<97,115,99>>}]}",
        ),
        (
            json!({"selector": {}, "sort": [{"a": "up"}]}),
            400,
            "invalid_sort_field",
            "Invalid sort field: {[{<<97>>,<<117,112>>}]}",
        ),
        (
            json!({"selector": {}, "sort": [{"a": "asc"}, {"b": "desc"}]}),
            400,
            "unsupported_mixed_sort",
            "Sorts currently only support a single direction for all fields.",
        ),
        (
            json!({"selector": {}, "fields": "a"}),
            400,
            "invalid_fields",
            "Fields must be an array of strings, not: <<97>>",
        ),
        (
            json!({"selector": {}, "fields": [1]}),
            400,
            "invalid_field",
            "Invalid JSON for field spec: 1",
        ),
        (
            json!({"selector": {}, "use_index": 5}),
            400,
            "invalid_index_name",
            "Invalid index name: 5",
        ),
        (
            json!({"selector": {}, "use_index": "a/b/c"}),
            400,
            "invalid_index_name",
            "Invalid index name: <<97,47,98,47,99>>",
        ),
        (
            json!({"selector": {}, "bookmark": "!!!"}),
            400,
            "invalid_bookmark",
            "Invalid bookmark value: \"!!!\"",
        ),
        (
            json!({"selector": {}, "sort": ["name"]}),
            400,
            "no_usable_index",
            "No index exists for this sort, try indexing by the sort fields.",
        ),
    ];
    for (body, status, error, reason) in cases {
        for endpoint in ["/db/_find", "/db/_explain"] {
            let r = s.post_json(endpoint, &body).await;
            if error == "invalid_bookmark" && endpoint == "/db/_explain" {
                continue; // _explain does not read the bookmark.
            }
            assert_eq!(
                (r.status.as_u16(), r.json()),
                (status, json!({"error": error, "reason": reason})),
                "{endpoint} {body}"
            );
        }
    }
    let r = s.get("/db/_find").await;
    assert_couch_error(&r, 405, "method_not_allowed", "Only POST allowed");
    let r = s
        .send("POST", "/db/_find", &[("content-type", "text/plain")], "{}")
        .await;
    assert_couch_error(
        &r,
        415,
        "bad_content_type",
        "Content-Type must be application/json",
    );
    let r = s
        .send(
            "POST",
            "/db/_find",
            &[("content-type", "application/json")],
            "[]",
        )
        .await;
    assert_couch_error(&r, 400, "bad_request", "Request body must be a JSON object");
    let r = s.post_json("/nodb/_find", &json!({"selector": {}})).await;
    r.assert_error(404, "not_found");
}

#[tokio::test]
async fn index_crud_shapes() {
    let s = db_with(people()).await;
    let r = s.get("/db/_index").await;
    assert_eq!(
        r.json(),
        json!({"total_rows": 1, "indexes": [{"ddoc": null, "name": "_all_docs", "type": "special",
            "def": {"fields": [{"_id": "asc"}]}}]})
    );
    let r = s
        .post_json(
            "/db/_index",
            &json!({"index": {"fields": ["age"]}, "name": "by-age", "ddoc": "people"}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (
            200,
            json!({"result": "created", "id": "_design/people", "name": "by-age"})
        )
    );
    let r = s
        .post_json("/db/_index", &json!({"index": {"fields": ["age"]}, "name": "by-age", "ddoc": "_design/people", "type": "json"}))
        .await;
    assert_eq!(r.json()["result"], "exists");
    // Stored exactly as CouchDB stores it.
    let ddoc = s.get("/db/_design/people").await.json();
    assert_eq!(ddoc["language"], "query");
    assert_eq!(
        ddoc["views"]["by-age"],
        json!({"map": {"fields": {"age": "asc"}, "partial_filter_selector": {}},
               "reduce": "_count", "options": {"def": {"fields": ["age"]}}})
    );
    // Generated names: the same hash names the design document and the index.
    let r = s
        .post_json(
            "/db/_index",
            &json!({"index": {"fields": [{"name": "asc"}]}}),
        )
        .await;
    let created = r.json();
    let name = created["name"].as_str().unwrap().to_owned();
    assert_eq!(name.len(), 40);
    assert_eq!(created["id"], format!("_design/{name}"));
    let again = s
        .post_json(
            "/db/_index",
            &json!({"index": {"fields": [{"name": "asc"}]}}),
        )
        .await
        .json();
    assert_eq!(
        (again["result"].clone(), again["id"].clone()),
        (json!("exists"), created["id"].clone())
    );

    let list = s.get("/db/_index").await.json();
    assert_eq!(list["total_rows"], 3);
    // Listed in design document order: the generated name sorts first here.
    assert_eq!(list["indexes"][1]["name"], name.as_str());
    assert_eq!(
        list["indexes"][2],
        json!({"ddoc": "_design/people", "name": "by-age", "type": "json", "partitioned": false,
               "def": {"fields": [{"age": "asc"}]}})
    );
    let page = s.get("/db/_index?skip=1&limit=1").await.json();
    assert_eq!(
        (
            page["total_rows"].clone(),
            page["indexes"].as_array().unwrap().len()
        ),
        (json!(3), 1)
    );

    // Errors.
    let cases = [
        (
            json!({}),
            400,
            "missing_required_key",
            "Missing required key: index",
        ),
        (
            json!({"index": ["a"]}),
            400,
            "invalid_index",
            "JSON indexes must be an object, not: [<<97>>]",
        ),
        (
            json!({"index": {}}),
            400,
            "missing_required_key",
            "Missing required key: fields",
        ),
        (
            json!({"index": {"fields": ["a"]}, "type": "geo"}),
            400,
            "invalid_index",
            "Invalid type for index: geo",
        ),
        (
            json!({"index": {"fields": ["a"]}, "name": 1}),
            400,
            "invalid_string",
            "Invalid string: 1",
        ),
        (
            json!({"index": {"fields": ["a"]}, "bogus": 1}),
            400,
            "invalid_key",
            "Invalid key bogus for this request.",
        ),
        (
            json!({"index": {"fields": ["a"], "bogus": 1}}),
            400,
            "invalid_key",
            "Invalid key bogus for this request.",
        ),
        (
            json!({"index": {"fields": [{"a": "asc"}, {"b": "desc"}]}}),
            400,
            "unsupported_mixed_sort",
            "Sorts currently only support a single direction for all fields.",
        ),
    ];
    for (body, status, error, reason) in cases {
        let r = s.post_json("/db/_index", &body).await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (status, json!({"error": error, "reason": reason})),
            "{body}"
        );
    }
    // A design document of another language is not touched.
    let r = s
        .post_json(
            "/db/_index",
            &json!({"index": {"fields": ["a"]}, "ddoc": "app"}),
        )
        .await;
    assert_couch_error(
        &r,
        400,
        "invalid_ddoc_lang",
        "Existing design doc has an invalid language: undefined",
    );

    // Delete, with or without the _design/ prefix; the emptied design document goes away.
    let r = s.delete("/db/_index/_design/people/json/by-age").await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"ok": true})));
    assert_eq!(s.get("/db/_design/people").await.status, 404);
    let r = s.delete("/db/_index/people/json/by-age").await;
    assert_couch_error(&r, 404, "not_found", "Index not found");
    let r = s.delete(&format!("/db/_index/{name}/json/{name}")).await;
    assert_eq!(r.json(), json!({"ok": true}));
    assert_eq!(s.get("/db/_index").await.json()["total_rows"], 1);
    let r = s.get("/db/_index/x/json/y").await;
    assert_couch_error(&r, 405, "method_not_allowed", "Only DELETE allowed");
}

#[tokio::test]
async fn sort_limit_skip_and_bookmarks_page_through_everything_once() {
    let docs: Vec<Value> = (0..23)
        .map(|i| json!({"_id": format!("d{i:02}"), "n": (i * 7) % 10, "tag": if i % 3 == 0 { "x" } else { "y" }}))
        .collect();
    let s = db_with(Value::Array(docs)).await;
    let r = s
        .post_json(
            "/db/_index",
            &json!({"index": {"fields": ["n"]}, "ddoc": "n", "name": "n"}),
        )
        .await;
    assert_eq!(r.json()["result"], "created");
    for dir in ["asc", "desc"] {
        let mut seen = Vec::new();
        let mut bookmark = Value::Null;
        loop {
            let r = s
                .post_json(
                    "/db/_find",
                    &json!({"selector": {"n": {"$gte": 0}}, "sort": [{"n": dir}], "limit": 4, "bookmark": bookmark}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.json());
            assert!(r.json().get("warning").is_none(), "{}", r.json());
            let page = r.json()["docs"].as_array().unwrap().clone();
            if page.is_empty() {
                break;
            }
            seen.extend(page.iter().map(|d| {
                (
                    d["n"].as_i64().unwrap(),
                    d["_id"].as_str().unwrap().to_owned(),
                )
            }));
            bookmark = r.json()["bookmark"].clone();
        }
        let mut expected = seen.clone();
        expected.sort();
        if dir == "desc" {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{dir}");
        assert_eq!(seen.iter().map(|s| &s.1).collect::<BTreeSet<_>>().len(), 23);
    }
    // skip and limit, sorted by the index.
    let r = s
        .post_json("/db/_find", &json!({"selector": {"n": {"$gt": 5}}, "sort": ["n"], "skip": 2, "limit": 3, "fields": ["n"]}))
        .await;
    assert_eq!(r.json()["docs"], json!([{"n": 7}, {"n": 7}, {"n": 7}]));
    let r = s
        .post_json("/db/_find", &json!({"selector": {"n": {"$gt": 5}}, "sort": ["n"], "skip": 1, "limit": 2, "fields": ["n"]}))
        .await;
    assert_eq!(r.json()["docs"], json!([{"n": 6}, {"n": 7}]));
    // _id sorts are served by _all_docs.
    let r = s
        .post_json(
            "/db/_find",
            &json!({"selector": {"tag": "x"}, "sort": [{"_id": "desc"}], "limit": 2}),
        )
        .await;
    assert_eq!(ids(&r), ["d21", "d18"]);
    // A JSON index holds only documents with all its fields.
    let r = s
        .post_json(
            "/db/_find",
            &json!({"selector": {}, "sort": ["n"], "limit": 100}),
        )
        .await;
    assert_eq!(r.json()["docs"].as_array().unwrap().len(), 23);
}

#[tokio::test]
async fn fields_projection_and_conflicts() {
    let s = db_with(people()).await;
    let r = s
        .post_json("/db/_find", &json!({"selector": {"_id": "alice"}, "fields": ["name", "city.zip", "missing", "_id"]}))
        .await;
    assert_eq!(
        r.json()["docs"],
        json!([{"name": "Alice", "city": {"zip": "0150"}, "_id": "alice"}])
    );
    // A conflict, made the way replication makes them.
    let r = s
        .post_json("/db/_bulk_docs", &json!({"new_edits": false, "docs": [{"_id": "carol", "_rev": "1-ffff", "name": "Carol", "age": 42}]}))
        .await;
    assert_eq!(r.status, 201);
    let r = s
        .post_json("/db/_find", &json!({"selector": {"_id": "carol"}, "conflicts": true, "fields": ["_id", "_conflicts"]}))
        .await;
    let doc = &r.json()["docs"][0];
    assert_eq!(doc["_conflicts"].as_array().map(Vec::len), Some(1), "{doc}");
    let r = s
        .post_json("/db/_find", &json!({"selector": {"_id": "carol"}}))
        .await;
    assert!(r.json()["docs"][0].get("_conflicts").is_none());
}

#[tokio::test]
async fn partial_indexes_and_use_index_warnings() {
    let s = db_with(people()).await;
    let r = s
        .post_json("/db/_index", &json!({"index": {"fields": ["age"], "partial_filter_selector": {"name": {"$exists": true}}}, "ddoc": "named", "name": "age"}))
        .await;
    assert_eq!(r.json()["result"], "created");
    let stored = s.get("/db/_design/named").await.json();
    assert_eq!(
        stored["views"]["age"]["map"]["partial_filter_selector"],
        json!({"name": {"$exists": true}})
    );
    // Not chosen unless named.
    let r = s
        .post_json("/db/_find", &json!({"selector": {"age": {"$lt": 30}}}))
        .await;
    assert_eq!(ids(&r), ["bob", "dave", "erin"]);
    assert_eq!(
        r.json()["warning"],
        "No matching index found, create an index to optimize query time."
    );
    // Named: the index's own semantics (erin has no name, so is not in it).
    let r = s
        .post_json(
            "/db/_find",
            &json!({"selector": {"age": {"$lt": 30}}, "use_index": "named"}),
        )
        .await;
    assert_eq!(ids(&r), ["bob", "dave"]);
    assert!(r.json().get("warning").is_none());
    let r = s
        .post_json(
            "/db/_find",
            &json!({"selector": {"age": {"$lt": 30}}, "use_index": ["named", "age"]}),
        )
        .await;
    assert_eq!(ids(&r), ["bob", "dave"]);
    // An index that cannot serve the query: CouchDB falls back and says so.
    let r = s
        .post_json(
            "/db/_find",
            &json!({"selector": {"name": "Bob"}, "use_index": "_design/nothing"}),
        )
        .await;
    assert_eq!(ids(&r), ["bob"]);
    assert_eq!(
        r.json()["warning"],
        "_design/nothing was not used because it does not contain a valid index for this query.\nNo matching index found, create an index to optimize query time."
    );
    let r = s
        .post_json(
            "/db/_find",
            &json!({"selector": {"name": "Bob"}, "use_index": ["nothing", "x"]}),
        )
        .await;
    assert_eq!(
        r.json()["warning"].as_str().unwrap().lines().next(),
        Some("_design/nothing, x was not used because it is not a valid index for this query.")
    );
}

#[tokio::test]
async fn execution_stats_keys_and_scan_warning() {
    let docs: Vec<Value> = (0..30)
        .map(|i| json!({"_id": format!("{i:02}"), "i": i}))
        .collect();
    let s = db_with(Value::Array(docs)).await;
    let r = s
        .post_json(
            "/db/_find",
            &json!({"selector": {"i": 29}, "execution_stats": true}),
        )
        .await;
    let body = r.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["docs", "bookmark", "execution_stats", "warning"]);
    let stats = &body["execution_stats"];
    let stat_keys: Vec<&str> = stats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        stat_keys,
        [
            "total_keys_examined",
            "total_docs_examined",
            "total_quorum_docs_examined",
            "results_returned",
            "execution_time_ms"
        ]
    );
    assert_eq!(
        (
            stats["total_docs_examined"].clone(),
            stats["results_returned"].clone()
        ),
        (json!(30), json!(1))
    );
    assert_eq!(
        body["warning"],
        "No matching index found, create an index to optimize query time.\nThe number of documents examined is high in proportion to the number of results returned. Consider adding a more specific index to improve this."
    );
}

#[tokio::test]
async fn explain_shape() {
    let s = db_with(people()).await;
    s.post_json(
        "/db/_index",
        &json!({"index": {"fields": ["age", "name"]}, "ddoc": "an", "name": "an"}),
    )
    .await;
    let r = s
        .post_json("/db/_explain", &json!({"selector": {"age": {"$gt": 20}, "name": {"$exists": true}}, "fields": ["name"], "limit": 2}))
        .await;
    let e = r.json();
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "dbname",
            "index",
            "partitioned",
            "selector",
            "opts",
            "limit",
            "skip",
            "fields",
            "index_candidates",
            "selector_hints",
            "mrargs",
            "covering"
        ]
    );
    assert_eq!(e["dbname"], "db");
    assert_eq!(e["index"]["name"], "an");
    assert_eq!(
        e["selector"],
        json!({"$and": [{"age": {"$gt": 20}}, {"name": {"$exists": true}}]})
    );
    assert_eq!(
        e["opts"],
        json!({"use_index": [], "bookmark": "nil", "limit": 2, "skip": 0, "sort": {}, "fields": ["name"],
               "partition": "", "r": 1, "conflicts": false, "stale": false, "update": true,
               "stable": false, "execution_stats": false})
    );
    assert_eq!(
        (e["limit"].clone(), e["skip"].clone(), e["fields"].clone()),
        (json!(2), json!(0), json!(["name"]))
    );
    assert_eq!(
        e["mrargs"],
        json!({"include_docs": false, "view_type": "map", "reduce": false, "partition": null,
               "start_key": [20, null], "end_key": ["<MAX>", "<MAX>", "<MAX>"], "direction": "fwd",
               "stable": false, "update": true, "conflicts": "undefined"})
    );
    assert_eq!(e["covering"], true);
    assert_eq!(e["index_candidates"][0]["index"]["name"], "_all_docs");
    assert_eq!(
        e["index_candidates"][0]["analysis"]["reasons"],
        json!([{"name": "unfavored_type"}])
    );
    // Without an index: _all_docs.
    let e = s
        .post_json("/db/_explain", &json!({"selector": {"x": 1}}))
        .await
        .json();
    assert_eq!(e["index"]["type"], "special");
    assert_eq!(e["fields"], json!([]));
    assert_eq!(e["mrargs"]["start_key"], Value::Null);
    assert_eq!(e["mrargs"]["end_key"], "<MAX>");
}

/// A naive model of `_find`: filter the documents, in id order.
fn naive(docs: &[Value], selector: &Value) -> BTreeSet<String> {
    let sel = couch_sync::mango::Selector::parse(selector).unwrap();
    docs.iter()
        .filter(|d| sel.matches(d))
        .map(|d| d["_id"].as_str().unwrap().to_owned())
        .collect()
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..5).prop_map(|n| json!(n)),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|s| json!(s)),
    ]
}

fn arb_selector() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec!["x", "y"]);
    let op = prop::sample::select(vec!["$eq", "$gt", "$lte", "$ne", "$exists"]);
    prop::collection::vec((field, op, arb_value()), 1..3).prop_map(|conds| {
        let mut and = Vec::new();
        for (f, op, v) in conds {
            let v = if op == "$exists" {
                json!(v.as_bool().unwrap_or(true))
            } else {
                v
            };
            and.push(json!({ f: { op: v } }));
        }
        json!({ "$and": and })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn find_with_and_without_index_agrees_with_a_naive_filter(
        docs in prop::collection::vec((prop::option::of(arb_value()), prop::option::of(arb_value())), 0..25),
        selector in arb_selector(),
    ) {
        let docs: Vec<Value> = docs.into_iter().enumerate().map(|(i, (x, y))| {
            let mut d = json!({"_id": format!("doc{i:03}")});
            if let Some(x) = x { d["x"] = x; }
            if let Some(y) = y { d["y"] = y; }
            d
        }).collect();
        let expected = naive(&docs, &selector);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = db_with(Value::Array(docs.clone())).await;
            s.post_json("/db/_index", &json!({"index": {"fields": ["x"]}, "ddoc": "x", "name": "x"})).await;
            for extra in [json!({}), json!({"use_index": "_all_docs"}), json!({"use_index": "x"})] {
                let mut body = json!({"selector": selector, "limit": 1000});
                for (k, v) in extra.as_object().unwrap() { body[k] = v.clone(); }
                let r = s.post_json("/db/_find", &body).await;
                assert_eq!(r.status, 200, "{}", r.json());
                let got: BTreeSet<String> = ids(&r).into_iter().collect();
                assert_eq!(&got, &expected, "{body}");
            }
        });
    }
}

/// One change to a document in the index-consistency property.
#[derive(Debug, Clone)]
enum Op {
    Put(Option<Value>, Option<Value>),
    Delete,
    /// A conflicting revision of the document, as replication writes it.
    Conflict(Option<Value>),
}

fn arb_op() -> impl Strategy<Value = (usize, Op)> {
    let op = prop_oneof![
        3 => (prop::option::of(arb_value()), prop::option::of(arb_value()))
            .prop_map(|(x, y)| Op::Put(x, y)),
        1 => Just(Op::Delete),
        1 => prop::option::of(arb_value()).prop_map(Op::Conflict),
    ];
    (0usize..6, op)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Indexes created first and then kept up to date write by write (updates, deletions,
    /// conflicting revisions, compaction) answer as a filter over the winning revisions does,
    /// in index order.
    #[test]
    fn indexes_follow_writes_deletes_conflicts_and_compaction(
        ops in prop::collection::vec(arb_op(), 1..30),
        selector in arb_selector(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = db_with(json!([])).await;
            for (ddoc, fields) in [("x", json!(["x"])), ("xy", json!(["x", "y"]))] {
                let r = s.post_json("/db/_index", &json!({"index": {"fields": fields}, "ddoc": ddoc, "name": ddoc})).await;
                assert_eq!(r.status, 200, "{}", r.json());
            }
            for (n, (i, op)) in ops.iter().enumerate() {
                let id = format!("doc{i}");
                let current = s.get(&format!("/db/{id}")).await;
                let rev = (current.status == 200).then(|| current.json()["_rev"].as_str().unwrap().to_owned());
                let with = |x: &Option<Value>, y: &Option<Value>| {
                    let mut d = json!({});
                    if let Some(x) = x { d["x"] = x.clone(); }
                    if let Some(y) = y { d["y"] = y.clone(); }
                    d
                };
                match op {
                    Op::Put(x, y) => {
                        let mut d = with(x, y);
                        if let Some(rev) = &rev { d["_rev"] = json!(rev); }
                        let r = s.put_json(&format!("/db/{id}"), &d).await;
                        assert_eq!(r.status, 201, "{}", r.json());
                    }
                    Op::Delete => {
                        if let Some(rev) = &rev {
                            let r = s.send("DELETE", &format!("/db/{id}?rev={rev}"), &[], "").await;
                            assert_eq!(r.status, 200, "{}", r.json());
                        }
                    }
                    Op::Conflict(x) => {
                        let mut d = with(x, &None);
                        d["_id"] = json!(id);
                        d["_rev"] = json!(format!("1-{:032x}", n + 1));
                        let r = s.post_json("/db/_bulk_docs", &json!({"docs": [d], "new_edits": false})).await;
                        assert_eq!(r.status, 201, "{}", r.json());
                    }
                }
            }
            for compacted in [false, true] {
                if compacted {
                    let r = s.send("POST", "/db/_compact", &[("content-type", "application/json")], "").await;
                    assert_eq!(r.status, 202, "{}", r.json());
                }
                let all = s.get("/db/_all_docs?include_docs=true").await.json();
                let winners: Vec<Value> = all["rows"].as_array().unwrap().iter()
                    .map(|r| r["doc"].clone())
                    .filter(|d| !d["_id"].as_str().unwrap().starts_with("_design/"))
                    .collect();
                let expected = naive(&winners, &selector);
                for use_index in ["x", "xy", "_all_docs"] {
                    let body = json!({"selector": selector, "limit": 1000, "use_index": use_index});
                    let r = s.post_json("/db/_find", &body).await;
                    assert_eq!(r.status, 200, "{}", r.json());
                    let got: BTreeSet<String> = ids(&r).into_iter().collect();
                    assert_eq!(&got, &expected, "{body} (compacted: {compacted})");
                }
                // Sorted through the index: the order of x (then id), as collation says.
                let body = json!({"selector": {"x": {"$gte": null}}, "sort": ["x"], "limit": 1000});
                let r = s.post_json("/db/_find", &body).await;
                assert_eq!(r.status, 200, "{}", r.json());
                let docs = r.json()["docs"].as_array().unwrap().clone();
                let mut want: Vec<&Value> = winners.iter().filter(|d| d.get("x").is_some()).collect();
                want.sort_by(|a, b| couch_sync::json::collate(&a["x"], &b["x"])
                    .then_with(|| a["_id"].as_str().cmp(&b["_id"].as_str())));
                let want: Vec<&str> = want.iter().map(|d| d["_id"].as_str().unwrap()).collect();
                let got: Vec<&str> = docs.iter().map(|d| d["_id"].as_str().unwrap()).collect();
                assert_eq!(got, want);
            }
        });
    }
}

/// An index kept in tables is read within the selector's range and stops at the limit: the keys
/// examined say so (a scan would examine every document). A write acknowledged is in the next
/// query's index, and deleting the index's design document drops it.
#[tokio::test]
async fn indexed_queries_read_only_their_range_and_see_every_acknowledged_write() {
    let docs: Vec<Value> = (0..100)
        .map(|i| json!({"_id": format!("d{i:03}"), "x": i}))
        .collect();
    let s = db_with(Value::Array(docs)).await;
    let r = s
        .post_json(
            "/db/_index",
            &json!({"index": {"fields": ["x"]}, "ddoc": "by-x", "name": "x"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let find = async |body: Value| s.post_json("/db/_find", &body).await;
    let r = find(json!({"selector": {"x": {"$gte": 90}}, "execution_stats": true})).await;
    assert_eq!(ids(&r).len(), 10);
    assert_eq!(r.json()["execution_stats"]["total_keys_examined"], 10);
    let r = find(json!({"selector": {"x": {"$gt": 10, "$lt": 20}}, "execution_stats": true})).await;
    assert_eq!(ids(&r).len(), 9);
    assert_eq!(r.json()["execution_stats"]["total_keys_examined"], 9);
    let r = find(
        json!({"selector": {"x": {"$gte": 0}}, "limit": 3, "execution_stats": true,
                        "sort": [{"x": "desc"}]}),
    )
    .await;
    assert_eq!(ids(&r), ["d099", "d098", "d097"]);
    assert_eq!(r.json()["execution_stats"]["total_keys_examined"], 3);
    // Acknowledged writes are in the next query: a new document, a change, a deletion.
    assert_eq!(s.put_json("/db/new", &json!({"x": 1000})).await.status, 201);
    let rev = s.get("/db/d095").await.json()["_rev"].clone();
    assert_eq!(
        s.put_json("/db/d095", &json!({"_rev": rev, "x": -1}))
            .await
            .status,
        201
    );
    let rev = s.get("/db/d096").await.json()["_rev"].clone();
    let path = format!("/db/d096?rev={}", rev.as_str().unwrap());
    assert_eq!(s.send("DELETE", &path, &[], "").await.status, 200);
    let r = find(json!({"selector": {"x": {"$gte": 90}}})).await;
    assert_eq!(
        ids(&r),
        [
            "d090", "d091", "d092", "d093", "d094", "d097", "d098", "d099", "new"
        ]
    );
    let r = find(json!({"selector": {"x": {"$lt": 1}}})).await;
    assert_eq!(ids(&r), ["d095", "d000"]);
    // The index gone with its design document: queries scan again, with CouchDB's warning.
    let ddoc = s.get("/db/_design/by-x").await.json();
    let path = format!("/db/_design/by-x?rev={}", ddoc["_rev"].as_str().unwrap());
    assert_eq!(s.send("DELETE", &path, &[], "").await.status, 200);
    let r = find(json!({"selector": {"x": {"$gte": 90}}, "execution_stats": true})).await;
    assert_eq!(r.json()["execution_stats"]["total_keys_examined"], 100);
    assert!(
        r.json()["warning"]
            .as_str()
            .unwrap()
            .contains("No matching index")
    );
}

/// A large `_bulk_docs` leaves the indexes to the next query, which catches them up: every
/// acknowledged write is in its answer, also after single writes in between and changes that
/// move, remove and re-add rows.
#[tokio::test]
async fn large_batches_are_indexed_by_the_next_query() {
    let s = db_with(json!([])).await;
    let r = s
        .post_json(
            "/db/_index",
            &json!({"index": {"fields": ["x"]}, "ddoc": "by-x", "name": "x"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let bulk = async |docs: Vec<Value>| {
        let r = s
            .post_json("/db/_bulk_docs", &json!({ "docs": docs }))
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        r.json()
    };
    let written = bulk(
        (0..200)
            .map(|i| json!({"_id": format!("d{i:03}"), "x": (i * 37) % 200}))
            .collect(),
    )
    .await;
    // A single write in between goes to the index in its own transaction.
    assert_eq!(
        s.put_json("/db/single", &json!({"x": 5.5})).await.status,
        201
    );
    let find = async |selector: Value| {
        let r = s
            .post_json(
                "/db/_find",
                &json!({"selector": selector, "sort": ["x"], "limit": 1000, "execution_stats": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        assert!(r.json().get("warning").is_none(), "{}", r.json());
        r
    };
    let r = find(json!({"x": {"$lt": 10}})).await;
    let mut want: Vec<(f64, String)> = (0..200)
        .filter(|i| (i * 37) % 200 < 10)
        .map(|i| (((i * 37) % 200) as f64, format!("d{i:03}")))
        .collect();
    want.push((5.5, "single".into()));
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let want_ids: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids(&r), want_ids);
    assert_eq!(
        r.json()["execution_stats"]["total_keys_examined"],
        json!(want_ids.len())
    );
    // Another large batch: every document moves (x + 1000), odd ones lose x, and a tenth are
    // deleted; then the old range is empty and the new one is exact.
    let revs: Vec<(String, String)> = written
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["rev"].as_str().unwrap().into(),
            )
        })
        .collect();
    let changes: Vec<Value> = revs
        .iter()
        .enumerate()
        .map(|(i, (id, rev))| match i % 10 {
            9 => json!({"_id": id, "_rev": rev, "_deleted": true}),
            n if n % 2 == 1 => json!({"_id": id, "_rev": rev, "y": 1}),
            _ => json!({"_id": id, "_rev": rev, "x": 1000 + (i * 37) % 200}),
        })
        .collect();
    bulk(changes).await;
    let r = find(json!({"x": {"$lt": 1000}})).await;
    assert_eq!(ids(&r), ["single"]);
    let r = find(json!({"x": {"$gte": 1000}})).await;
    let expected = (0..200).filter(|i| i % 10 != 9 && i % 2 == 0).count();
    assert_eq!(ids(&r).len(), expected);
    assert_eq!(
        r.json()["execution_stats"]["total_keys_examined"],
        json!(expected)
    );
}
