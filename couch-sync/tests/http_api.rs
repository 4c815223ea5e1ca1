//! Every endpoint of the HTTP API over real HTTP on 127.0.0.1, with CouchDB's answers and errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::start;
use serde_json::{Value, json};

#[tokio::test]
async fn server_endpoints() {
    let s = start().await;
    let r = s.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["couchdb"], "Welcome");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(s.get("/_up").await.json()["status"], "ok");
    let uuids = s.get("/_uuids?count=3").await.json();
    let list = uuids["uuids"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_ne!(list[0], list[1]);
    assert_eq!(list[0].as_str().unwrap().len(), 32);
    s.get("/_uuids?count=100000")
        .await
        .assert_error(400, "bad_request");
    s.get("/_uuids?count=abc")
        .await
        .assert_error(400, "query_parse_error");
    let r = s
        .send(
            "POST",
            "/_session",
            &[("content-type", "application/x-www-form-urlencoded")],
            "name=bob&password=x",
        )
        .await;
    assert_eq!(r.json(), json!({"ok": true, "name": "bob", "roles": []}));
    assert_eq!(s.get("/_session").await.json()["ok"], true);
    s.put_json("/b", &json!({})).await;
    s.put_json("/a", &json!({})).await;
    assert_eq!(s.get("/_all_dbs").await.json(), json!(["a", "b"]));
    s.send("POST", "/_all_dbs", &[], "")
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn database_lifecycle() {
    let s = start().await;
    let r = s.put_json("/db", &json!({})).await;
    assert_eq!((r.status.as_u16(), r.json()), (201, json!({"ok": true})));
    s.put_json("/db", &json!({}))
        .await
        .assert_error(412, "file_exists");
    for bad in ["/Bad", "/1db", "/_nope", "/a%20b"] {
        let r = s.put_json(bad, &json!({})).await;
        assert!(r.status == 400 || r.status == 404, "{bad}: {}", r.status);
    }
    s.put_json("/Bad", &json!({}))
        .await
        .assert_error(400, "illegal_database_name");
    let info = s.get("/db").await.json();
    assert_eq!(info["db_name"], "db");
    assert_eq!(info["doc_count"], 0);
    assert_eq!(info["instance_start_time"], "0");
    assert!(info["update_seq"].as_str().unwrap().starts_with("0-"));
    assert!(info["sizes"]["file"].as_u64().unwrap() > 0);
    // The replicator's trailing-slash form.
    assert_eq!(s.get("/db/").await.json()["db_name"], "db");
    let head = s.send("HEAD", "/db", &[], "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    s.get("/missing").await.assert_error(404, "not_found");
    s.put_json("/db/d", &json!({"x": 1})).await;
    let info = s.get("/db").await.json();
    assert_eq!(
        (
            info["doc_count"].as_u64(),
            info["update_seq"].as_str().unwrap().split('-').next()
        ),
        (Some(1), Some("1"))
    );
    assert_eq!(s.delete("/db").await.json(), json!({"ok": true}));
    s.get("/db").await.assert_error(404, "not_found");
    s.delete("/db").await.assert_error(404, "not_found");
    assert!(
        !s.dir.path().join("data/db.couch.redb").exists(),
        "file removed"
    );
    // Names with slashes are %2F-encoded in URLs.
    assert_eq!(s.put_json("/a%2Fb", &json!({})).await.status, 201);
    assert_eq!(s.get("/_all_dbs").await.json(), json!(["a/b"]));
    assert_eq!(s.get("/a%2Fb").await.json()["db_name"], "a/b");
}

#[tokio::test]
async fn document_crud_and_revisions() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let r = s.put_json("/db/doc", &json!({"a": 1})).await;
    assert_eq!(r.status, 201);
    let rev1 = r.json()["rev"].as_str().unwrap().to_owned();
    assert!(rev1.starts_with("1-") && rev1.len() == 34, "{rev1}");
    assert_eq!(r.header("etag"), Some(format!("\"{rev1}\"").as_str()));
    let r = s.get("/db/doc").await;
    assert_eq!(r.json(), json!({"_id": "doc", "_rev": rev1, "a": 1}));
    let etag = r.header("etag").unwrap().to_owned();
    let r = s
        .send("GET", "/db/doc", &[("if-none-match", &etag)], "")
        .await;
    assert_eq!(r.status, 304);

    // Same edit on another database gives the same revision (deterministic ids).
    s.put_json("/other", &json!({})).await;
    let again = s.put_json("/other/doc", &json!({"a": 1})).await.json();
    assert_eq!(again["rev"], rev1);

    s.put_json("/db/doc", &json!({"a": 2}))
        .await
        .assert_error(409, "conflict");
    s.put_json("/db/doc", &json!({"_rev": "1-0000", "a": 2}))
        .await
        .assert_error(409, "conflict");
    let rev2 = s
        .put_json("/db/doc", &json!({"_rev": rev1, "a": 2}))
        .await
        .json()["rev"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(rev2.starts_with("2-"));
    // rev in the query and If-Match work too.
    let rev3 = s
        .put_json(&format!("/db/doc?rev={rev2}"), &json!({"a": 3}))
        .await
        .json()["rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .send(
            "PUT",
            "/db/doc",
            &[
                ("if-match", &format!("\"{rev3}\"")),
                ("content-type", "application/json"),
            ],
            r#"{"a":4}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let rev4 = r.json()["rev"].as_str().unwrap().to_owned();

    // Old revisions stay readable until compaction.
    assert_eq!(s.get(&format!("/db/doc?rev={rev2}")).await.json()["a"], 2);
    let revs = s
        .get("/db/doc?revs=true&revs_info=true&local_seq=true")
        .await
        .json();
    assert_eq!(revs["_revisions"]["start"], 4);
    assert_eq!(revs["_revisions"]["ids"].as_array().unwrap().len(), 4);
    assert_eq!(
        revs["_revisions"]["ids"][3],
        rev1.split('-').nth(1).unwrap()
    );
    assert_eq!(
        revs["_revs_info"][0],
        json!({"rev": rev4, "status": "available"})
    );
    assert_eq!(revs["_local_seq"], 4);

    // Delete, read as deleted, read the tombstone by rev, recreate.
    s.delete("/db/doc").await.assert_error(409, "conflict");
    let r = s.delete(&format!("/db/doc?rev={rev4}")).await;
    assert_eq!(r.status, 200);
    let rev5 = r.json()["rev"].as_str().unwrap().to_owned();
    let missing = s.get("/db/doc").await;
    missing.assert_error(404, "not_found");
    assert_eq!(missing.json()["reason"], "deleted");
    assert_eq!(s.get("/db/nope").await.json()["reason"], "missing");
    assert_eq!(
        s.get(&format!("/db/doc?rev={rev5}")).await.json(),
        json!({"_id": "doc", "_rev": rev5, "_deleted": true})
    );
    let r = s.put_json("/db/doc", &json!({"back": true})).await;
    assert_eq!(r.status, 201);
    assert!(
        r.json()["rev"].as_str().unwrap().starts_with("6-"),
        "recreated on the tombstone"
    );
    let info = s.get("/db").await.json();
    assert_eq!(
        (info["doc_count"].as_u64(), info["doc_del_count"].as_u64()),
        (Some(1), Some(0))
    );

    // PUT with _deleted: true answers 200, as CouchDB.
    let cur = s.get("/db/doc").await.json()["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .put_json("/db/doc", &json!({"_rev": cur, "_deleted": true}))
        .await;
    assert_eq!(r.status, 200);
    let info = s.get("/db").await.json();
    assert_eq!(
        (info["doc_count"].as_u64(), info["doc_del_count"].as_u64()),
        (Some(0), Some(1))
    );

    // POST assigns an id.
    let r = s.post_json("/db", &json!({"p": 1})).await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(r.header("location"), Some(format!("/db/{id}").as_str()));
    let r = s.post_json("/db", &json!({"_id": "chosen"})).await;
    assert_eq!(r.json()["id"], "chosen");
    // Ids with slashes and design documents.
    assert_eq!(s.put_json("/db/a%2Fb", &json!({})).await.status, 201);
    assert_eq!(s.get("/db/a%2Fb").await.json()["_id"], "a/b");
    assert_eq!(
        s.put_json("/db/_design/x", &json!({"views": {}}))
            .await
            .status,
        201
    );
    assert_eq!(s.get("/db/_design/x").await.json()["_id"], "_design/x");
    assert_eq!(s.get("/db/_design%2Fx").await.json()["_id"], "_design/x");
}

#[tokio::test]
async fn bad_input_gets_couchdb_errors() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let put = |body: &'static [u8]| {
        s.send(
            "PUT",
            "/db/x",
            &[("content-type", "application/json")],
            body,
        )
    };
    put(b"{\"a\":").await.assert_error(400, "bad_request");
    put(b"[1,2]").await.assert_error(400, "bad_request");
    put(b"{\"a\":\"\xff\"}")
        .await
        .assert_error(400, "bad_request");
    put(b"{\"_foo\":1}")
        .await
        .assert_error(400, "doc_validation");
    put(b"{\"_rev\":\"abc\"}")
        .await
        .assert_error(400, "bad_request");
    put(b"{\"_attachments\":{\"a\":{\"data\":\"not base64!\"}}}")
        .await
        .assert_error(400, "bad_request");
    s.put_json("/db/_bad", &json!({}))
        .await
        .assert_error(400, "illegal_docid");
    // Reading an id that cannot exist finds nothing, as in CouchDB.
    s.get("/db/_bad").await.assert_error(404, "not_found");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    s.send("PUT", "/db/x", &[], format!("{{\"a\":{deep}}}"))
        .await
        .assert_error(400, "bad_request");
    // Over max_document_size (8 MiB) is CouchDB's 413 document_too_large naming the document;
    // inline attachment data does not count, as in CouchDB.
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(9 * 1024 * 1024));
    let r = s.send("PUT", "/db/x", &[], big).await;
    r.assert_error(413, "document_too_large");
    assert_eq!(r.json()["reason"], "x");
    let data = data_encoding::BASE64.encode(&vec![7u8; 7 * 1024 * 1024]);
    let with_att = format!(
        "{{\"_attachments\":{{\"a.bin\":{{\"content_type\":\"application/octet-stream\",\"data\":\"{data}\"}}}}}}"
    );
    let r = s.send("PUT", "/db/att", &[], with_att).await;
    assert_eq!(r.status, 201);
    let rev = r.json()["rev"].as_str().unwrap().to_owned();
    s.delete(&format!("/db/att?rev={rev}")).await;
    // More than the request limit (64 MiB by default) is 413 too_large.
    let huge = vec![b' '; 65 * 1024 * 1024];
    s.send("PUT", "/db/x", &[], huge)
        .await
        .assert_error(413, "too_large");
    // A rev in the query that differs from the body's is 400.
    s.send("PUT", "/db/x?rev=1-abc", &[], r#"{"_rev":"1-def"}"#)
        .await
        .assert_error(400, "bad_request");
    s.get("/db/x?revs=maybe")
        .await
        .assert_error(400, "query_parse_error");
    s.get("/db/x?rev=nope")
        .await
        .assert_error(400, "bad_request");
    s.get("/db/_all_docs?limit=-1")
        .await
        .assert_error(400, "query_parse_error");
    s.get("/db/_all_docs?limit=18446744073709551615").await;
    s.get("/db/_all_docs?startkey=a")
        .await
        .assert_error(400, "bad_request");
    s.get("/db/_changes?feed=nonsense")
        .await
        .assert_error(400, "bad_request");
    s.get("/db/_changes?since=garbage")
        .await
        .assert_error(400, "bad_request");
    s.send("PATCH", "/db/x", &[], "")
        .await
        .assert_error(405, "method_not_allowed");
    s.post_json("/db/_bulk_docs", &json!({"nodocs": []}))
        .await
        .assert_error(400, "bad_request");
    s.post_json("/db/_revs_diff", &json!([1]))
        .await
        .assert_error(400, "bad_request");
    s.post_json("/db/_bulk_get", &json!({"docs": 5}))
        .await
        .assert_error(400, "bad_request");
    // As CouchDB, the URL wins over an `_id` in the body.
    assert_eq!(put(b"{\"_id\":\"y\"}").await.json()["id"], "x");
    s.get("/db/y").await.assert_error(404, "not_found");
    let rev = s.get("/db/x").await.json()["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    s.delete(&format!("/db/x?rev={rev}")).await;
    // Nothing else above changed the database.
    assert_eq!(s.get("/db").await.json()["doc_count"], 0);
}

#[tokio::test]
async fn bulk_docs_both_modes() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"docs": [{"_id": "a", "v": 1}, {"_id": "b"}, {"v": 3}]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let rows = r.json();
    assert_eq!(rows[0]["id"], "a");
    assert_eq!(rows[0]["ok"], true);
    assert!(rows[2]["id"].as_str().unwrap().len() == 32);
    // An invalid document fails the whole request (CouchDB validates every one first).
    s.post_json(
        "/db/_bulk_docs",
        &json!({"docs": [{"_id": "ok1"}, {"_id": "_x"}]}),
    )
    .await
    .assert_error(400, "illegal_docid");
    s.get("/db/ok1").await.assert_error(404, "not_found");
    // A stale update in a batch fails alone.
    let rev_a = rows[0]["rev"].as_str().unwrap().to_owned();
    let rows = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"docs": [{"_id": "a", "_rev": rev_a, "v": 2}, {"_id": "b", "v": 9}]}),
        )
        .await
        .json();
    assert_eq!(rows[0]["ok"], true);
    assert_eq!(
        rows[1],
        json!({"id": "b", "error": "conflict", "reason": "Document update conflict."})
    );

    // new_edits=false: conflicts as the replicator writes them; the answer is [].
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"new_edits": false, "docs": [
                {"_id": "c", "_rev": "2-bbb", "_revisions": {"start": 2, "ids": ["bbb", "aaa"]}, "side": "b"},
                {"_id": "c", "_rev": "2-ccc", "_revisions": {"start": 2, "ids": ["ccc", "aaa"]}, "side": "c"},
                {"_id": "c", "_rev": "3-ddd", "_revisions": {"start": 3, "ids": ["ddd", "bbb", "aaa"]}, "_deleted": true},
            ]}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.json()), (201, json!([])));
    let doc = s
        .get("/db/c?conflicts=true&deleted_conflicts=true")
        .await
        .json();
    // 3-ddd is deleted, so the non-deleted 2-ccc wins.
    assert_eq!(doc["_rev"], "2-ccc");
    assert_eq!(doc["_deleted_conflicts"], json!(["3-ddd"]));
    assert!(doc.get("_conflicts").is_none());
    // Writing the same revisions again changes nothing.
    let seq_before = s.get("/db").await.json()["update_seq"].clone();
    s.post_json(
        "/db/_bulk_docs",
        &json!({"new_edits": false, "docs": [{"_id": "c", "_rev": "2-ccc", "side": "c"}]}),
    )
    .await;
    assert_eq!(s.get("/db").await.json()["update_seq"], seq_before);
    // Rev ids are opaque, as in CouchDB, except that 32 characters must be hex: such a bad one
    // fails the whole request.
    s.post_json(
        "/db/_bulk_docs",
        &json!({"new_edits": false, "docs": [{"_id": "e", "_rev": "1-ab"},
            {"_id": "d", "_rev": "1-0123456789abcdef0123456789abcdeg"}]}),
    )
    .await
    .assert_error(400, "bad_request");
    s.get("/db/e").await.assert_error(404, "not_found");
    let r = s
        .post_json(
            "/db/_bulk_docs",
            &json!({"new_edits": false, "docs": [{"_id": "d", "_rev": "1-xyz"}]}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.json()), (201, json!([])));
    assert_eq!(s.get("/db/d").await.json()["_rev"], "1-xyz");
    // Big integers survive exactly.
    let r = s
        .send(
            "PUT",
            "/db/nums",
            &[],
            r#"{"big":12345678901234567890123,"neg":-9007199254740993}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let text = String::from_utf8(s.get("/db/nums").await.body.to_vec()).unwrap();
    assert!(
        text.contains(r#""big":12345678901234567890123,"neg":-9007199254740993"#),
        "{text}"
    );
}

#[tokio::test]
async fn open_revs_bulk_get_revs_diff() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    s.post_json(
        "/db/_bulk_docs",
        &json!({"new_edits": false, "docs": [
            {"_id": "c", "_rev": "2-bbb", "_revisions": {"start": 2, "ids": ["bbb", "aaa"]}, "v": "b"},
            {"_id": "c", "_rev": "2-ccc", "_revisions": {"start": 2, "ids": ["ccc", "aaa"]}, "v": "c"},
        ]}),
    )
    .await;
    let all = s.get("/db/c?open_revs=all&revs=true").await.json();
    let revs: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ok"]["_rev"].as_str().unwrap())
        .collect();
    assert_eq!(revs, vec!["2-ccc", "2-bbb"]);
    assert_eq!(
        all[0]["ok"]["_revisions"],
        json!({"start": 2, "ids": ["ccc", "aaa"]})
    );
    let some = s.get("/db/c?open_revs=[\"2-bbb\",\"9-fff\"]").await.json();
    assert_eq!(some[0]["ok"]["v"], "b");
    assert_eq!(some[1], json!({"missing": "9-fff"}));
    // latest=true turns an ancestor into its leaves.
    let latest = s
        .get("/db/c?open_revs=[\"1-aaa\"]&latest=true")
        .await
        .json();
    assert_eq!(latest.as_array().unwrap().len(), 1);
    assert_eq!(latest[0]["ok"]["_rev"], "2-ccc");
    s.get("/db/c?open_revs=nope")
        .await
        .assert_error(400, "bad_request");

    let r = s
        .post_json("/db/_bulk_get?revs=true", &json!({"docs": [{"id": "c", "rev": "2-bbb"}, {"id": "c"}, {"id": "zz"}, {"id": "c", "rev": "5-abc"}]}))
        .await
        .json();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results[0]["docs"][0]["ok"]["_rev"], "2-bbb");
    assert_eq!(
        results[0]["docs"][0]["ok"]["_revisions"]["ids"],
        json!(["bbb", "aaa"])
    );
    assert_eq!(results[1]["docs"][0]["ok"]["_rev"], "2-ccc");
    assert_eq!(results[2]["docs"][0]["error"]["error"], "not_found");
    assert_eq!(
        results[3]["docs"][0]["error"],
        json!({"id": "c", "rev": "5-abc", "error": "not_found", "reason": "missing"})
    );

    let diff = s
        .post_json(
            "/db/_revs_diff",
            &json!({"c": ["2-bbb", "3-eee"], "other": ["1-abc"]}),
        )
        .await
        .json();
    assert_eq!(diff["c"]["missing"], json!(["3-eee"]));
    let mut anc: Vec<String> =
        serde_json::from_value(diff["c"]["possible_ancestors"].clone()).unwrap();
    anc.sort();
    assert_eq!(anc, vec!["2-bbb", "2-ccc"]);
    assert_eq!(diff["other"], json!({"missing": ["1-abc"]}));
    assert_eq!(
        s.post_json("/db/_revs_diff", &json!({"c": ["2-bbb"]}))
            .await
            .json(),
        json!({})
    );
}

#[tokio::test]
async fn all_docs_queries() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    for id in ["a", "b", "c", "d", "e", "B"] {
        s.put_json(&format!("/db/{id}"), &json!({"id": id})).await;
    }
    let rev_e = s.get("/db/e").await.json()["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    s.delete(&format!("/db/e?rev={rev_e}")).await;
    let ids = |v: &Value| -> Vec<String> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = s.get("/db/_all_docs").await.json();
    assert_eq!(all["total_rows"], 5);
    assert_eq!(
        ids(&all),
        vec!["B", "a", "b", "c", "d"],
        "raw collation: uppercase first"
    );
    assert_eq!(all["rows"][0]["value"]["rev"].as_str().unwrap().len(), 34);
    let r = s
        .get("/db/_all_docs?startkey=\"b\"&endkey=\"d\"&inclusive_end=false")
        .await
        .json();
    assert_eq!(ids(&r), vec!["b", "c"]);
    assert_eq!(r["offset"], 2);
    let r = s
        .get("/db/_all_docs?descending=true&startkey=\"c\"&limit=2")
        .await
        .json();
    assert_eq!(ids(&r), vec!["c", "b"]);
    let r = s
        .get("/db/_all_docs?skip=1&limit=2&include_docs=true&update_seq=true")
        .await
        .json();
    assert_eq!(ids(&r), vec!["a", "b"]);
    assert_eq!(r["rows"][0]["doc"]["id"], "a");
    assert!(r["update_seq"].as_str().unwrap().starts_with("7-"));
    let r = s.get("/db/_all_docs?key=\"c\"").await.json();
    assert_eq!(ids(&r), vec!["c"]);
    let r = s
        .post_json(
            "/db/_all_docs?include_docs=true",
            &json!({"keys": ["d", "zz", "e"]}),
        )
        .await
        .json();
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows[0]["id"], "d");
    assert_eq!(rows[1], json!({"key": "zz", "error": "not_found"}));
    assert_eq!(rows[2]["value"]["deleted"], true);
    assert_eq!(rows[2]["doc"], Value::Null);
}
