//! The authorization hook: denials are CouchDB-style 401/403 before anything is touched, and a
//! document filter hides documents from every read path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::http::request::Parts;
use couch_sync::DocFilter;
use couch_sync::server::{Authorize, Decision, Operation, ServerConfig};
use serde_json::{Map, Value, json};

/// Callers name themselves in an `x-user` header (a stand-in for the TLS identity a real embedder
/// would put into the request extensions). `admin` may do everything; `reader` may read `shared`
/// and sees only documents whose `readers` list names it; anyone else gets 401.
struct HeaderAuth;

struct ReadersFilter(String);

impl DocFilter for ReadersFilter {
    fn allows(&self, _id: &str, doc: &Map<String, Value>) -> bool {
        doc.get("readers")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|v| v.as_str() == Some(&self.0)))
    }
}

impl Authorize for HeaderAuth {
    fn authorize(&self, request: &Parts, op: &Operation<'_>) -> Decision {
        let user = request.headers.get("x-user").and_then(|v| v.to_str().ok());
        match (user, op) {
            (Some("admin"), _) => Decision::Allow,
            (Some("reader"), Operation::Server | Operation::ListDbs) => Decision::Allow,
            (Some("reader"), Operation::ReadDb { db: "shared" }) => {
                Decision::AllowFiltered(Arc::new(ReadersFilter("reader".into())))
            }
            (Some("reader"), Operation::WriteLocal { db: "shared" }) => Decision::Allow,
            (Some("reader"), _) => Decision::Forbidden("reader may only read shared".into()),
            _ => Decision::Unauthorized("identify yourself".into()),
        }
    }
}

#[tokio::test]
async fn denials_and_document_filtering() {
    let s = common::start_with(ServerConfig::default(), Arc::new(HeaderAuth)).await;
    let admin = [("x-user", "admin"), ("content-type", "application/json")];
    let reader = [("x-user", "reader"), ("content-type", "application/json")];
    for db in ["shared", "private"] {
        assert_eq!(
            s.send("PUT", &format!("/{db}"), &admin, "").await.status,
            201
        );
    }
    for (id, readers) in [
        ("open", json!(["reader"])),
        ("secret", json!(["someone"])),
        ("nolist", Value::Null),
    ] {
        let body = json!({"readers": readers}).to_string();
        assert_eq!(
            s.send("PUT", &format!("/shared/{id}"), &admin, body)
                .await
                .status,
            201
        );
    }

    // No identity: 401 everywhere, nothing leaks.
    s.get("/").await.assert_error(401, "unauthorized");
    s.get("/shared/open")
        .await
        .assert_error(401, "unauthorized");
    s.put_json("/evil", &json!({}))
        .await
        .assert_error(401, "unauthorized");
    assert!(!s.store.exists("evil"));

    // The reader: 403 on what it may not do, including writes to a readable database.
    s.send("GET", "/private", &reader, "")
        .await
        .assert_error(403, "forbidden");
    s.send("PUT", "/shared/new", &reader, "{}")
        .await
        .assert_error(403, "forbidden");
    s.send("DELETE", "/shared", &reader, "")
        .await
        .assert_error(403, "forbidden");
    s.send("POST", "/shared/_compact", &reader, "")
        .await
        .assert_error(403, "forbidden");
    s.send(
        "POST",
        "/shared/_bulk_docs",
        &reader,
        r#"{"docs":[{"_id":"x"}]}"#,
    )
    .await
    .assert_error(403, "forbidden");
    s.get("/shared/new").await.assert_error(401, "unauthorized");
    // ... but may write its replication checkpoints.
    assert_eq!(
        s.send("PUT", "/shared/_local/ck", &reader, "{}")
            .await
            .status,
        201
    );

    // _all_dbs lists only what the caller may read.
    let dbs: Value =
        serde_json::from_slice(&s.send("GET", "/_all_dbs", &reader, "").await.body).unwrap();
    assert_eq!(dbs, json!(["shared"]));

    // Filtered documents are invisible on every read path.
    let get = |path: &'static str| s.send("GET", path, &reader, "");
    assert_eq!(get("/shared/open").await.status, 200);
    get("/shared/secret").await.assert_error(404, "not_found");
    get("/shared/nolist").await.assert_error(404, "not_found");
    get("/shared/secret?open_revs=all")
        .await
        .assert_error(404, "not_found");
    let all: Value = serde_json::from_slice(&get("/shared/_all_docs").await.body).unwrap();
    let ids: Vec<&str> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["open"]);
    let keyed = s
        .send(
            "POST",
            "/shared/_all_docs",
            &reader,
            r#"{"keys":["secret","open"]}"#,
        )
        .await;
    let keyed: Value = serde_json::from_slice(&keyed.body).unwrap();
    assert_eq!(
        keyed["rows"][0],
        json!({"key": "secret", "error": "not_found"})
    );
    let changes: Value =
        serde_json::from_slice(&get("/shared/_changes?include_docs=true").await.body).unwrap();
    let ids: Vec<&str> = changes["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["open"]);
    let bulk = s
        .send(
            "POST",
            "/shared/_bulk_get",
            &reader,
            r#"{"docs":[{"id":"secret"},{"id":"open"}]}"#,
        )
        .await;
    let bulk: Value = serde_json::from_slice(&bulk.body).unwrap();
    assert_eq!(bulk["results"][0]["docs"][0]["error"]["error"], "not_found");
    assert_eq!(bulk["results"][1]["docs"][0]["ok"]["_id"], "open");
    let secret_rev = {
        let r = s.send("GET", "/shared/secret", &admin, "").await;
        serde_json::from_slice::<Value>(&r.body).unwrap()["_rev"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let open_rev = {
        let r = s.send("GET", "/shared/open", &admin, "").await;
        serde_json::from_slice::<Value>(&r.body).unwrap()["_rev"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let diff = s
        .send(
            "POST",
            "/shared/_revs_diff",
            &reader,
            json!({"secret": [secret_rev], "open": [open_rev]}).to_string(),
        )
        .await;
    let diff: Value = serde_json::from_slice(&diff.body).unwrap();
    assert_eq!(
        diff,
        json!({"secret": {"missing": [secret_rev]}}),
        "a hidden document looks absent"
    );
    // The admin sees everything.
    let all: Value =
        serde_json::from_slice(&s.send("GET", "/shared/_all_docs", &admin, "").await.body).unwrap();
    assert_eq!(all["rows"].as_array().unwrap().len(), 3);
}

/// `viewer` may not read `private`, but holds the read grant of its Mango index `q/by-n`, and
/// sees only documents whose `readers` list names it.
struct ViewGrant;

impl Authorize for ViewGrant {
    fn authorize(&self, request: &Parts, op: &Operation<'_>) -> Decision {
        let user = request.headers.get("x-user").and_then(|v| v.to_str().ok());
        match (user, op) {
            (Some("admin"), _) => Decision::Allow,
            (
                Some("viewer"),
                Operation::ReadView {
                    db: "private",
                    ddoc: "q",
                    view: "by-n",
                },
            ) => Decision::AllowFiltered(Arc::new(ReadersFilter("viewer".into()))),
            (Some("viewer"), _) => Decision::Forbidden("viewer may read one index".into()),
            _ => Decision::Unauthorized("identify yourself".into()),
        }
    }
}

#[tokio::test]
async fn find_through_a_granted_index_without_reading_the_database() {
    let s = common::start_with(ServerConfig::default(), Arc::new(ViewGrant)).await;
    let admin = [("x-user", "admin"), ("content-type", "application/json")];
    let viewer = [("x-user", "viewer"), ("content-type", "application/json")];
    assert_eq!(s.send("PUT", "/private", &admin, "").await.status, 201);
    for (id, n, readers) in [
        ("a", json!(1), json!(["viewer"])),
        ("b", json!(2), json!(["someone"])),
        ("c", json!(3), json!(["viewer", "someone"])),
        ("d", Value::Null, json!(["viewer"])),
    ] {
        let mut body = json!({"readers": readers, "m": 1});
        if !n.is_null() {
            body["n"] = n;
        }
        let status = s
            .send("PUT", &format!("/private/{id}"), &admin, body.to_string())
            .await
            .status;
        assert_eq!(status, 201);
    }
    for (ddoc, name, field) in [("q", "by-n", "n"), ("other", "by-m", "m")] {
        let index = json!({"index": {"fields": [field]}, "ddoc": ddoc, "name": name});
        let reply = s
            .send("POST", "/private/_index", &admin, index.to_string())
            .await;
        assert_eq!(reply.status, 200, "{}", reply.json());
    }
    let find = |selector: Value, use_index: Option<&str>| {
        let mut body = json!({"selector": selector});
        if let Some(i) = use_index {
            body["use_index"] = json!(i);
        }
        s.send("POST", "/private/_find", &viewer, body.to_string())
    };
    // Through the granted index: only documents in it (those with `n`) that name the viewer.
    let reply = find(json!({"n": {"$gt": 0}}), None).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let ids: Vec<Value> = reply.json()["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("a"), json!("c")]);
    // A query the planner serves from another index, or from `_all_docs`: refused.
    find(json!({"m": {"$gt": 0}}), None)
        .await
        .assert_error(403, "forbidden");
    find(json!({"_id": {"$gt": null}}), None)
        .await
        .assert_error(403, "forbidden");
    // An unusable `use_index` falls back to the index CouchDB would pick (with a warning):
    // the granted one here, so the query is answered through it.
    let reply = find(json!({"n": {"$gt": 0}}), Some("other")).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.json()["docs"].as_array().map(Vec::len), Some(2));
    assert!(reply.json()["warning"].as_str().unwrap().contains("other"));
    // And the database itself stays closed.
    s.send("GET", "/private/_all_docs", &viewer, "")
        .await
        .assert_error(403, "forbidden");
    s.send("GET", "/private/a", &viewer, "")
        .await
        .assert_error(403, "forbidden");
}
