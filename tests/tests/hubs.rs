//! Device hubs as real processes on 127.0.0.1: pairing and convergence, friends that pull only
//! what they were granted, revocation, restarts mid-replication, strangers and wrong pins.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Hub, eventually, pair, request_pinned, stranger};

/// Every document of `db` on `hub`, with conflicts: what a replica shows.
async fn snapshot(hub: &Hub, db: &str) -> Value {
    let owner = hub.owner();
    let (status, all) = hub
        .request(
            Some(&owner),
            "GET",
            &format!("/{db}/_all_docs?include_docs=true&conflicts=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{all}");
    let rows: Vec<Value> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["doc"].clone())
        .collect();
    Value::Array(rows)
}

async fn put(hub: &Hub, path: &str, body: Value) -> Value {
    let owner = hub.owner();
    let (status, reply) = hub.request(Some(&owner), "PUT", path, Some(&body)).await;
    assert!(
        status == 201 || status == 412,
        "PUT {path}: {status} {reply}"
    );
    reply
}

async fn get(hub: &Hub, path: &str) -> (u16, Value) {
    let owner = hub.owner();
    hub.request(Some(&owner), "GET", path, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_pair_and_converge_after_editing_apart() {
    let mut a = Hub::start("laptop");
    let mut b = Hub::start("phone");
    pair(&a, &b, false);
    put(&a, "/notes", json!({})).await;
    put(&a, "/notes/shared", json!({"v": "first"})).await;
    // The replication manager carries it to the other device.
    eventually(30, "notes reach the phone", || async {
        (get(&b, "/notes/shared").await.0 == 200).then_some(())
    })
    .await;
    // Each device is edited while the other is off.
    b.stop();
    let rev = get(&a, "/notes/shared").await.1["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    put(
        &a,
        "/notes/shared",
        json!({"_rev": rev, "v": "edited on the laptop"}),
    )
    .await;
    put(&a, "/notes/from-laptop", json!({"x": 1})).await;
    a.stop();
    b.start_again();
    let rev = get(&b, "/notes/shared").await.1["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    put(
        &b,
        "/notes/shared",
        json!({"_rev": rev, "v": "edited on the phone"}),
    )
    .await;
    put(&b, "/notes/from-phone", json!({"y": 2})).await;
    a.start_again();
    // Both come back online: they converge, and the concurrent edit is a conflict on both sides.
    let converged = eventually(60, "both hubs show the same notes", || async {
        let (x, y) = (snapshot(&a, "notes").await, snapshot(&b, "notes").await);
        (x == y && x.as_array().map(Vec::len) == Some(3)).then_some(x)
    })
    .await;
    let shared = converged
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["_id"] == "shared")
        .unwrap();
    assert_eq!(
        shared["_conflicts"].as_array().map(Vec::len),
        Some(1),
        "{shared}"
    );
    // A one-shot sync from the CLI reports success; the status shows when each side last synced.
    let out = a.cli_ok(&["replicate", &b.key_id.to_string(), "notes"]);
    assert!(out.contains("in sync with"), "{out}");
    // The status shows, per peer and database, when it last synced (retries back off, so allow
    // the laptop's continuous replications a moment after the restart).
    eventually(
        60,
        "the laptop's status shows a recent sync of notes",
        || async {
            let text = a.cli_ok(&["status"]);
            text.lines()
                .any(|l| l.contains("notes") && l.contains("s ago"))
                .then_some(())
        },
    )
    .await;
    // Pairing put each in the other's `me` group: the policy says so on both.
    let (_, status) = get(&a, "/_hub/api/status").await;
    assert!(
        status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["key_id"] == b.key_id.to_string() && p["kind"] == "me")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friend_pulls_only_what_it_was_granted_until_revoked() {
    let a = Hub::start("alice");
    let c = Hub::start("carol");
    pair(&c, &a, true); // carol befriends alice
    put(&a, "/shared", json!({})).await;
    put(&a, "/private", json!({})).await;
    put(&a, "/shared/s1", json!({"n": 1})).await;
    // A document only alice's own devices may read, inside the database carol may read.
    put(
        &a,
        "/shared/mine-only",
        json!({"n": 0, "thali_readers": ["group:me"]}),
    )
    .await;
    put(&a, "/private/p1", json!({"secret": true})).await;
    a.cli_ok(&["grant", "shared", &format!("key:{}", c.key_id), "read"]);
    let local = format!("from-{}-shared", &a.key_id.to_string()[..8]);
    eventually(45, "carol pulls alice's shared database", || async {
        (get(&c, &format!("/{local}/s1")).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        get(&c, &format!("/{local}/mine-only")).await.0,
        404,
        "a per-document reader list was ignored"
    );
    // Nothing else came across, and nothing goes back: carol's hub never pushes to friends.
    let (_, dbs) = get(&c, "/_all_dbs").await;
    let dbs: Vec<&str> = dbs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!dbs.iter().any(|d| d.contains("private")), "{dbs:?}");
    // Carol's key on alice's hub: read shared, nothing else, no writes.
    let carol = c.owner();
    let (status, seen) = a.request(Some(&carol), "GET", "/_all_dbs", None).await;
    assert_eq!(status, 200);
    assert_eq!(seen, json!(["hub-directory", "shared"]));
    assert_eq!(
        a.request(Some(&carol), "GET", "/private/p1", None).await.0,
        403
    );
    assert_eq!(
        a.request(Some(&carol), "GET", "/shared/mine-only", None)
            .await
            .0,
        404
    );
    let (_, listed) = a
        .request(Some(&carol), "GET", "/shared/_all_docs", None)
        .await;
    assert_eq!(listed["rows"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        a.request(Some(&carol), "PUT", "/shared/hack", Some(&json!({})))
            .await
            .0,
        403
    );
    assert_eq!(
        a.request(Some(&carol), "DELETE", "/shared", None).await.0,
        403
    );
    assert_eq!(
        a.request(Some(&carol), "GET", "/_hub/api/status", None)
            .await
            .0,
        403
    );
    assert_eq!(
        a.request(
            Some(&carol),
            "POST",
            "/_replicate",
            Some(&json!({"source": "private", "target": "x"}))
        )
        .await
        .0,
        403
    );
    // Revoked: the next pull is refused, and a later document does not arrive.
    a.cli_ok(&["revoke", "shared", &format!("key:{}", c.key_id), "read"]);
    assert_eq!(
        a.request(Some(&carol), "GET", "/shared/s1", None).await.0,
        403
    );
    put(&a, "/shared/s2", json!({"n": 2})).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        get(&c, &format!("/{local}/s2")).await.0,
        404,
        "a revoked friend pulled again"
    );
    assert_eq!(
        get(&c, &format!("/{local}/s1")).await.0,
        200,
        "what was pulled before stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restarted_mid_replication_resumes() {
    let a = Hub::start("desktop");
    let mut b = Hub::start("tablet");
    pair(&a, &b, false);
    put(&a, "/big", json!({})).await;
    let owner = a.owner();
    for batch in 0..6 {
        let docs: Vec<Value> = (batch * 1000..(batch + 1) * 1000)
            .map(|i| json!({"_id": format!("d{i:05}"), "i": i, "pad": "x".repeat(200)}))
            .collect();
        let (status, _) = a
            .request(
                Some(&owner),
                "POST",
                "/big/_bulk_docs",
                Some(&json!({"docs": docs})),
            )
            .await;
        assert_eq!(status, 201);
    }
    // Kill the tablet while it is part way through.
    let partial = eventually(60, "the tablet has some of the documents", || async {
        let n = get(&b, "/big").await.1["doc_count"].as_u64().unwrap_or(0);
        (n > 0).then_some(n)
    })
    .await;
    b.kill();
    b.start_again();
    eventually(90, "the tablet has all 6000 documents", || async {
        (get(&b, "/big").await.1["doc_count"].as_u64() == Some(6000)).then_some(())
    })
    .await;
    // The pull after the restart started from its checkpoint: it wrote fewer than all documents
    // (the push side of the tablet has nothing to send).
    let (_, status) = get(&b, "/_hub/api/status").await;
    let pull = status["replication"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["db"] == "big" && r["direction"] == "pull")
        .cloned()
        .unwrap();
    let written = pull["docs_written"].as_u64().unwrap();
    assert!(
        partial < 6000 || written < 6000,
        "restart resumed: {partial} before the kill, {written} after"
    );
    assert!(
        written <= 6000 - partial.min(6000) + 600,
        "resumed from a checkpoint, not from zero: {written} written after restart, {partial} before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_see_nothing_and_a_wrong_pin_fails() {
    let a = Hub::start("house");
    put(&a, "/diary", json!({})).await;
    put(&a, "/diary/today", json!({"text": "private"})).await;
    let nobody = stranger();
    let (status, dbs) = a.request(Some(&nobody), "GET", "/_all_dbs", None).await;
    assert_eq!((status, dbs), (200, json!([])));
    for (method, path) in [
        ("GET", "/diary"),
        ("GET", "/diary/today"),
        ("GET", "/diary/_all_docs"),
        ("GET", "/diary/_changes"),
        ("PUT", "/diary/x"),
        ("PUT", "/newdb"),
        ("GET", "/hub-policy/_all_docs"),
    ] {
        let body = (method == "PUT").then(|| json!({}));
        let (status, reply) = a.request(Some(&nobody), method, path, body.as_ref()).await;
        assert_eq!(status, 403, "{method} {path}: {reply}");
        assert_eq!(reply["error"], "forbidden");
        let (status, reply) = a.request(None, method, path, body.as_ref()).await;
        assert_eq!(status, 401, "anonymous {method} {path}: {reply}");
        assert_eq!(reply["error"], "unauthorized");
    }
    // The status page: a login prompt, nothing of the hub's.
    let (status, _) = a
        .request(Some(&nobody), "GET", "/_hub/api/status", None)
        .await;
    assert_eq!(status, 403);
    // A client pinned to another key refuses the hub in the handshake.
    let wrong = stranger().key_id();
    let err = request_pinned(a.port, wrong, Some(&a.owner()), "GET", "/", None)
        .await
        .unwrap_err();
    assert!(err.contains("does not match the pinned key"), "{err}");
    // An app that brings its own certificate is registered and gets exactly its grant.
    let app = stranger();
    let pem = a.dir.path().join("own-app.cert.pem");
    std::fs::write(&pem, app.cert_pem()).unwrap();
    a.cli_ok(&[
        "app",
        "add",
        "bring-your-own",
        "--cert",
        pem.to_str().unwrap(),
        "--grant",
        "diary:read",
    ]);
    let (status, doc) = a.request(Some(&app), "GET", "/diary/today", None).await;
    assert_eq!((status, doc["text"].as_str()), (200, Some("private")));
    assert_eq!(
        a.request(Some(&app), "PUT", "/diary/x", Some(&json!({})))
            .await
            .0,
        403
    );
    assert_eq!(
        a.request(Some(&nobody), "GET", "/diary/today", None)
            .await
            .0,
        403,
        "still nothing for strangers"
    );
    // The card is public and names the hub.
    let (status, card) = a.request(None, "GET", "/_hub/card", None).await;
    assert_eq!(status, 200);
    assert_eq!(card["key_id"], a.key_id.to_string());
    assert_eq!(card["name"], "house");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_writes_and_keeps_what_is_stored() {
    let mut a = Hub::start("small");
    a.stop();
    let config = a.dir.path().join("hub.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[quotas]\nlimited = 20000\n")).unwrap();
    a.start_again();
    put(&a, "/limited", json!({})).await;
    let owner = a.owner();
    let mut stored = Vec::new();
    let refusal = loop {
        let id = format!("d{}", stored.len());
        let (status, reply) = a
            .request(
                Some(&owner),
                "PUT",
                &format!("/limited/{id}"),
                Some(&json!({"pad": "p".repeat(1000)})),
            )
            .await;
        if status != 201 {
            break (status, reply);
        }
        stored.push(id);
        assert!(stored.len() < 100, "the quota never applied");
    };
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert_eq!(refusal.1["error"], "insufficient_storage");
    assert!(
        refusal.1["reason"].as_str().unwrap().contains("quota"),
        "{}",
        refusal.1
    );
    assert!(!stored.is_empty());
    for id in &stored {
        assert_eq!(get(&a, &format!("/limited/{id}")).await.0, 200, "{id} lost");
    }
    // Compaction still runs, and reads still work.
    let (status, _) = a
        .request(Some(&owner), "POST", "/_hub/api/compact/limited", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        get(&a, "/limited").await.1["doc_count"].as_u64(),
        Some(stored.len() as u64)
    );
}

/// A document a hub cannot write is never skipped silently: its pull keeps failing with the
/// reason on the status API and in `device-hub status`, the document is not there, and once the
/// cause is gone it arrives (nothing was checkpointed past it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_hub_refuses_shows_on_the_status_and_is_not_lost() {
    let a = Hub::start("dora");
    let c = Hub::start("eve");
    pair(&c, &a, true); // eve befriends dora: eve pulls, never pushes
    put(&a, "/journal", json!({})).await;
    put(&a, "/journal/first", json!({"n": 1})).await;
    a.cli_ok(&["grant", "journal", &format!("key:{}", c.key_id), "read"]);
    let local = format!("from-{}-journal", &a.key_id.to_string()[..8]);
    eventually(45, "eve pulls dora's journal", || async {
        (get(&c, &format!("/{local}/first")).await.0 == 200).then_some(())
    })
    .await;
    // On eve's copy, a validation function that breaks (throws an error, not `forbidden`) on
    // the next document: the write fails with a 500, which a replicator must neither skip nor
    // checkpoint past.
    let ddoc = put(
        &c,
        &format!("/{local}/_design/rules"),
        json!({"validate_doc_update":
            "function (doc) { if (doc.n === 2) throw new Error('rules broken'); }"}),
    )
    .await;
    put(&a, "/journal/second", json!({"n": 2})).await;
    let row = |status: &Value| {
        status["replication"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["db"] == local.as_str())
            .cloned()
    };
    let failing = eventually(60, "eve's status shows why the pull fails", || async {
        let (_, status) = get(&c, "/_hub/api/status").await;
        row(&status).filter(|r| {
            r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("rules broken"))
        })
    })
    .await;
    assert!(
        failing["last_error"].as_str().unwrap().contains("second"),
        "the error names the document: {failing}"
    );
    let text = c.cli_ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.contains(&local) && l.contains("rules broken")),
        "{text}"
    );
    assert_eq!(get(&c, &format!("/{local}/second")).await.0, 404);
    // The cause goes; the document that failed arrives.
    let rev = ddoc["rev"].as_str().unwrap().to_owned();
    let owner = c.owner();
    let (status, reply) = c
        .request(
            Some(&owner),
            "DELETE",
            &format!("/{local}/_design/rules?rev={rev}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    eventually(90, "the refused document arrives after all", || async {
        (get(&c, &format!("/{local}/second")).await.0 == 200).then_some(())
    })
    .await;
}

/// The seeds' per-view read ACL: a friend may read `_design/stats/_view/daily` of the sensor
/// readings (and `_find` through a granted index) but not the raw readings; documents hidden by
/// `thali_readers` are in none of its rows, reductions or `include_docs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_grant_reads_that_view_and_nothing_else() {
    let a = Hub::start("sensors");
    let friend = stranger();
    let member = format!("key:{}", friend.key_id());
    put(&a, "/readings", json!({})).await;
    for (id, day, temp, hidden) in [
        ("r1", "2026-11-01", 40, false),
        ("r2", "2026-11-01", 45, false),
        ("r3", "2026-11-02", 30, false),
        ("r4", "2026-11-02", 99, true),
    ] {
        let mut doc = json!({"day": day, "temp": temp});
        if hidden {
            doc["thali_readers"] = json!(["group:me"]);
        }
        put(&a, &format!("/readings/{id}"), doc).await;
    }
    put(
        &a,
        "/readings/_design/stats",
        json!({"views": {
            "daily": {"map": "function (doc) { if (doc.day) emit(doc.day, doc.temp); }",
                      "reduce": "_sum"},
            "raw": {"map": "function (doc) { emit(doc._id, doc.temp); }"}
        }}),
    )
    .await;
    let owner = a.owner();
    let (status, reply) = a
        .request(
            Some(&owner),
            "POST",
            "/readings/_index",
            Some(&json!({"index": {"fields": ["temp"]}, "ddoc": "hot", "name": "by-temp"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let daily = "/readings/_design/stats/_view/daily";
    let hot = json!({"selector": {"temp": {"$gt": 35}}});

    // Before any grant: nothing.
    let (status, _) = a
        .request(Some(&friend), "GET", &format!("{daily}?group=true"), None)
        .await;
    assert_eq!(status, 403);
    a.cli_ok(&["grant", "readings/stats/daily", &member, "read"]);
    a.cli_ok(&["grant", "readings/hot/by-temp", &member, "read"]);

    // The granted view, without the hidden reading (the owner sees it).
    let (status, reply) = a
        .request(Some(&friend), "GET", &format!("{daily}?group=true"), None)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["rows"],
        json!([{"key": "2026-11-01", "value": 85}, {"key": "2026-11-02", "value": 30}])
    );
    let (_, mine) = a
        .request(Some(&owner), "GET", &format!("{daily}?group=true"), None)
        .await;
    assert_eq!(mine["rows"][1], json!({"key": "2026-11-02", "value": 129}));
    let (status, reply) = a
        .request(
            Some(&friend),
            "GET",
            &format!("{daily}?reduce=false&include_docs=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let ids: Vec<&str> = reply["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["doc"]["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    // `_find` through the granted index, without the hidden reading.
    let (status, reply) = a
        .request(Some(&friend), "POST", "/readings/_find", Some(&hot))
        .await;
    assert_eq!(status, 200, "{reply}");
    let ids: Vec<&str> = reply["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2"]);

    // Everything else stays closed: the other view, the raw readings, `_find` on `_all_docs`.
    for (method, path) in [
        ("GET", "/readings/_design/stats/_view/raw"),
        ("GET", "/readings/_all_docs"),
        ("GET", "/readings/r1"),
        ("GET", "/readings/_changes"),
        ("GET", "/readings/_design/stats"),
    ] {
        let (status, reply) = a.request(Some(&friend), method, path, None).await;
        assert_eq!(status, 403, "{method} {path}: {reply}");
    }
    let (status, _) = a
        .request(
            Some(&friend),
            "POST",
            "/readings/_find",
            Some(&json!({"selector": {"day": "2026-11-01"}})),
        )
        .await;
    assert_eq!(status, 403);

    // Revoked: closed again.
    a.cli_ok(&["revoke", "readings/stats/daily", &member, "read"]);
    let (status, _) = a
        .request(Some(&friend), "GET", &format!("{daily}?group=true"), None)
        .await;
    assert_eq!(status, 403);

    // validate_doc_update sees the caller as CouchDB's userCtx: its key id as `name`.
    put(&a, "/signed", json!({})).await;
    put(
        &a,
        "/signed/_design/rules",
        json!({"validate_doc_update": "function (doc, old, user) { \
            if (user.roles.indexOf('_admin') < 0 && doc.by !== user.name) \
              throw({forbidden: 'by must be ' + user.name}); }"}),
    )
    .await;
    a.cli_ok(&["grant", "signed", &member, "write"]);
    let me = friend.key_id().to_string();
    let (status, reply) = a
        .request(Some(&friend), "PUT", "/signed/ok", Some(&json!({"by": me})))
        .await;
    assert_eq!(status, 201, "{reply}");
    let (status, reply) = a
        .request(
            Some(&friend),
            "PUT",
            "/signed/forged",
            Some(&json!({"by": "x"})),
        )
        .await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["reason"], format!("by must be {me}"));
    // The owner is `_admin`.
    put(&a, "/signed/by-owner", json!({"by": "anyone"})).await;
}
