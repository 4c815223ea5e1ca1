//! `_changes` feeds, `_local` documents, compaction, `_revs_limit`, and concurrent writers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::time::Duration;

use common::start;
use serde_json::{Value, json};

fn seq_num(v: &Value) -> u64 {
    v.as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn normal_feed_options() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    for id in ["a", "b", "c"] {
        s.put_json(&format!("/db/{id}"), &json!({"v": id})).await;
    }
    let rev_a = s.get("/db/a").await.json()["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    s.put_json("/db/a", &json!({"_rev": rev_a, "v": "a2"}))
        .await; // a moves to seq 4
    let all = s.get("/db/_changes").await.json();
    let ids: Vec<&str> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["b", "c", "a"],
        "each doc once, at its latest change"
    );
    assert_eq!(seq_num(&all["last_seq"]), 4);
    assert_eq!(all["pending"], 0);
    let page = s.get("/db/_changes?limit=1").await.json();
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    assert_eq!(page["pending"], 2);
    // Resume from the opaque last_seq string, passed back unchanged.
    let last = page["last_seq"].as_str().unwrap().to_owned();
    let rest = s.get(&format!("/db/_changes?since={last}")).await.json();
    assert_eq!(rest["results"].as_array().unwrap().len(), 2);
    let rest = s.get("/db/_changes?since=3&include_docs=true").await.json();
    assert_eq!(rest["results"][0]["doc"]["v"], "a2");
    let desc = s.get("/db/_changes?descending=true&limit=2").await.json();
    assert_eq!(desc["results"][0]["id"], "a");
    let now = s.get("/db/_changes?since=now").await.json();
    assert_eq!(now["results"], json!([]));
    assert_eq!(seq_num(&now["last_seq"]), 4);
    let ids = s
        .get("/db/_changes?filter=_doc_ids&doc_ids=[\"c\"]")
        .await
        .json();
    assert_eq!(ids["results"].as_array().unwrap().len(), 1);
    let ids = s
        .post_json(
            "/db/_changes?filter=_doc_ids",
            &json!({"doc_ids": ["a", "b"]}),
        )
        .await
        .json();
    assert_eq!(ids["results"].as_array().unwrap().len(), 2);
    s.get("/db/_changes?filter=_doc_ids")
        .await
        .assert_error(400, "bad_request");
    let sel = s
        .post_json(
            "/db/_changes?filter=_selector&include_docs=true",
            &json!({"selector": {"v": {"$in": ["c", "a2"]}}}),
        )
        .await
        .json();
    let picked: Vec<&str> = sel["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(picked, vec!["c", "a"]);
    s.post_json(
        "/db/_changes?filter=_selector",
        &json!({"selector": {"v": {"$bogus": 1}}}),
    )
    .await
    .assert_error(400, "bad_request");
    s.post_json("/db/_changes?filter=_selector", &json!({}))
        .await
        .assert_error(400, "bad_request");
    s.get("/db/_changes?filter=app/f")
        .await
        .assert_error(404, "not_found");

    // Conflicts show as all leaves with style=all_docs; deletions are flagged.
    s.post_json(
        "/db/_bulk_docs",
        &json!({"new_edits": false, "docs": [
        {"_id": "k", "_rev": "1-aa"}, {"_id": "k", "_rev": "1-bb"}]}),
    )
    .await;
    let r = s.get("/db/_changes?since=4&style=all_docs").await.json();
    let changes = r["results"][0]["changes"].as_array().unwrap().clone();
    assert_eq!(
        changes,
        vec![json!({"rev": "1-bb"}), json!({"rev": "1-aa"})]
    );
    let rev_b = s.get("/db/b").await.json()["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    s.delete(&format!("/db/b?rev={rev_b}")).await;
    let r = s.get("/db/_changes?since=6").await.json();
    assert_eq!(r["results"][0]["id"], "b");
    assert_eq!(r["results"][0]["deleted"], true);
}

#[tokio::test]
async fn longpoll_waits_for_a_change() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let poll = s.get("/db/_changes?feed=longpoll&since=now&timeout=10000");
    let write = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.put_json("/db/late", &json!({})).await
    };
    let (r, _) = tokio::join!(poll, write);
    let r = r.json();
    assert_eq!(r["results"][0]["id"], "late");
    // And times out empty when nothing happens.
    let r = s
        .get("/db/_changes?feed=longpoll&since=now&timeout=200")
        .await
        .json();
    assert_eq!(r["results"], json!([]));
}

#[tokio::test]
async fn continuous_and_eventsource_feeds() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    s.put_json("/db/one", &json!({})).await;
    // A continuous feed with a limit ends after that many rows and a last_seq line.
    let r = s.get("/db/_changes?feed=continuous&limit=1").await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["id"], "one");
    assert_eq!(seq_num(&lines[1]["last_seq"]), 1);
    // Without a limit it follows new writes until the idle timeout, sending heartbeats.
    let feed = s.get("/db/_changes?feed=continuous&since=now&timeout=800&heartbeat=100");
    let write = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.put_json("/db/two", &json!({})).await
    };
    let (r, _) = tokio::join!(feed, write);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(text.contains("\"id\":\"two\""), "{text}");
    assert!(
        text.contains("\n\n"),
        "heartbeat newlines expected: {text:?}"
    );
    assert!(text.trim_end().ends_with('}') && text.contains("last_seq"));
    let r = s.get("/db/_changes?feed=eventsource&timeout=300").await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(text.starts_with("data: {"), "{text}");
    assert!(text.contains("\nid: 1-"), "{text}");
}

#[tokio::test]
async fn local_documents_follow_couchdb() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let r = s.put_json("/db/_local/ck", &json!({"last_seq": 1})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["rev"], "0-1");
    // Never conflicts: a stale or missing rev still replaces it.
    let r = s
        .put_json("/db/_local/ck", &json!({"_rev": "0-1", "last_seq": 2}))
        .await;
    assert_eq!(r.json()["rev"], "0-2");
    let r = s.put_json("/db/_local/ck", &json!({"last_seq": 3})).await;
    assert_eq!(r.json()["rev"], "0-1");
    assert_eq!(
        s.get("/db/_local/ck").await.json(),
        json!({"_id": "_local/ck", "_rev": "0-1", "last_seq": 3})
    );
    // Slashes in local ids must be encoded: more path segments name an attachment, which a
    // local document cannot have (CouchDB's answer). And local docs via _bulk_docs.
    s.put_json("/db/_local/a/b", &json!({}))
        .await
        .assert_error(400, "bad_request");
    assert_eq!(s.put_json("/db/_local/a%2Fb", &json!({})).await.status, 201);
    assert_eq!(
        s.get("/db/_local%2Fa%2Fb").await.json()["_id"],
        "_local/a/b"
    );
    s.post_json(
        "/db/_bulk_docs",
        &json!({"docs": [{"_id": "_local/bulk", "x": 1}]}),
    )
    .await;
    assert_eq!(s.get("/db/_local/bulk").await.json()["x"], 1);
    // Not in _changes or _all_docs, not counted, not in update_seq.
    assert_eq!(s.get("/db/_changes").await.json()["results"], json!([]));
    assert_eq!(s.get("/db/_all_docs").await.json()["rows"], json!([]));
    let info = s.get("/db").await.json();
    assert_eq!(
        (info["doc_count"].as_u64(), seq_num(&info["update_seq"])),
        (Some(0), 0)
    );
    let r = s.delete("/db/_local/ck").await;
    assert_eq!(
        r.json(),
        json!({"ok": true, "id": "_local/ck", "rev": "0-0"})
    );
    s.get("/db/_local/ck").await.assert_error(404, "not_found");
    s.delete("/db/_local/ck")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn compaction_revs_limit_and_full_commit() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let r = s.post_json("/db/_ensure_full_commit", &json!({})).await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (201, json!({"ok": true, "instance_start_time": "0"}))
    );
    assert_eq!(s.get("/db/_revs_limit").await.json(), 1000);
    s.put_json("/db/_revs_limit", &json!(3)).await;
    assert_eq!(s.get("/db/_revs_limit").await.json(), 3);
    s.put_json("/db/_revs_limit", &json!(0))
        .await
        .assert_error(400, "bad_request");
    let big = "x".repeat(100_000);
    let mut rev = s.put_json("/db/d", &json!({"big": big})).await.json()["rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = rev.clone();
    let mut second = String::new();
    for i in 0..5 {
        rev = s
            .put_json("/db/d", &json!({"_rev": rev, "big": big, "i": i}))
            .await
            .json()["rev"]
            .as_str()
            .unwrap()
            .to_owned();
        if i == 3 {
            second = rev.clone();
        }
    }
    // Stemmed to 3 revisions.
    let doc = s.get("/db/d?revs=true").await.json();
    assert_eq!(doc["_revisions"]["ids"].as_array().unwrap().len(), 3);
    s.get(&format!("/db/d?rev={first}"))
        .await
        .assert_error(404, "not_found");
    // The previous revision is readable until compaction, gone after.
    assert_eq!(s.get(&format!("/db/d?rev={second}")).await.json()["i"], 3);
    for i in 0..30 {
        s.put_json(&format!("/db/junk{i}"), &json!({"big": big}))
            .await;
    }
    for i in 0..30 {
        let r = s.get(&format!("/db/junk{i}")).await.json()["_rev"]
            .as_str()
            .unwrap()
            .to_owned();
        s.delete(&format!("/db/junk{i}?rev={r}")).await;
    }
    let before = s.get("/db").await.json()["sizes"]["file"].as_u64().unwrap();
    let r = s.post_json("/db/_compact", &json!({})).await;
    assert_eq!(r.status, 202);
    s.get(&format!("/db/d?rev={second}"))
        .await
        .assert_error(404, "not_found");
    let after = s.get("/db").await.json()["sizes"]["file"].as_u64().unwrap();
    assert!(
        after < before,
        "compaction shrinks the file: {before} -> {after}"
    );
    let doc = s.get("/db/d?revs_info=true").await.json();
    assert_eq!(doc["i"], 4);
    assert_eq!(doc["_revs_info"][1]["status"], "missing");
}

#[tokio::test]
async fn concurrent_writers_one_wins() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    for round in 0..10 {
        let id = format!("/db/race{round}");
        let rev = s.put_json(&id, &json!({})).await.json()["rev"]
            .as_str()
            .unwrap()
            .to_owned();
        let (body_a, body_b) = (
            json!({"_rev": rev, "who": "a"}),
            json!({"_rev": rev, "who": "b"}),
        );
        let a = s.put_json(&id, &body_a);
        let b = s.put_json(&id, &body_b);
        let (a, b) = tokio::join!(a, b);
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}");
        let winner = if a.status == 201 { "a" } else { "b" };
        assert_eq!(s.get(&id).await.json()["who"], winner);
        assert!(
            s.get(&format!("{id}?conflicts=true"))
                .await
                .json()
                .get("_conflicts")
                .is_none()
        );
    }
}
