//! The replicator between in-process databases and over our HTTP API: conflicts, deletions and
//! attachments arrive intact, checkpoints make the second run incremental, filters apply.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use couch_sync::replicate::{
    Endpoint, Remote, Replication, ReplicationOptions, TcpConnector, TokioClock,
};
use couch_sync::{Database, DocUpdate, GetOptions, Revisions, Store, StoreConfig};
use serde_json::{Value, json};

use common::{body, put, store};

/// Everything a replica shows of a document: winner, body, conflicts.
fn snapshot(db: &Database) -> Vec<Value> {
    let all = db
        .all_docs(&couch_sync::AllDocsQuery::default(), None)
        .unwrap();
    let mut out = Vec::new();
    for row in all.rows {
        if let couch_sync::AllDocsRow::Doc { id, .. } = row {
            let opts = GetOptions {
                conflicts: true,
                deleted_conflicts: true,
                attachments: couch_sync::AttachmentMode::Inline,
                ..GetOptions::default()
            };
            out.push(Value::Object(db.get(&id, &opts).unwrap().json));
        }
    }
    out
}

fn remote(s: &common::TestServer, db: &str) -> Endpoint {
    remote_at(s.addr, db)
}

/// Database `db` of the server at `addr`, over plain HTTP.
fn remote_at(addr: std::net::SocketAddr, db: &str) -> Endpoint {
    Endpoint::Remote(Arc::new(
        Remote::new(
            &format!("http://{addr}/{db}"),
            Arc::new(TcpConnector),
            Arc::new(TokioClock),
        )
        .unwrap(),
    ))
}

/// Serves `app` on a free loopback port; the task ends the server when aborted.
async fn serve(app: axum::Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

fn seed(db: &Database) {
    for i in 0..25 {
        put(db, &format!("doc{i:02}"), json!({"i": i}));
    }
    // A conflict, a deletion, an attachment.
    let rev = put(db, "conflicted", json!({"v": "base"}));
    db.put(
        Some("conflicted"),
        DocUpdate {
            rev: Some(rev.parse().unwrap()),
            body: body(json!({"v": "mine"})),
            ..DocUpdate::default()
        },
        true,
    )
    .unwrap();
    let theirs = DocUpdate {
        rev: Some("2-ffffffffffffffffffffffffffffffff".parse().unwrap()),
        revisions: Some(Revisions {
            start: 2,
            ids: vec!["f".repeat(32), rev.split('-').nth(1).unwrap().to_owned()],
        }),
        body: body(json!({"v": "theirs"})),
        ..DocUpdate::default()
    };
    db.put(Some("conflicted"), theirs, false).unwrap();
    let gone = put(db, "gone", json!({}));
    db.put(
        Some("gone"),
        DocUpdate {
            rev: Some(gone.parse().unwrap()),
            deleted: true,
            ..DocUpdate::default()
        },
        true,
    )
    .unwrap();
    let content = couch_sync::PreparedAttachment::from_bytes(
        "text/plain",
        &b"attached words ".repeat(40),
        true,
        &std::env::temp_dir(),
    )
    .unwrap();
    db.put_attachment("withatt", None, "a.txt", content)
        .unwrap();
}

#[tokio::test]
async fn local_to_local_is_exact_and_incremental() {
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let a = s1.create_db("a").unwrap();
    let b = s2.create_db("b").unwrap();
    seed(&a);
    let rep = Replication::new(
        Endpoint::Local(a.clone()),
        Endpoint::Local(b.clone()),
        ReplicationOptions::default(),
    );
    let first = rep.run().await.unwrap();
    assert_eq!(
        first.progress.docs_written, 29,
        "25 docs, 2 conflicting leaves, a tombstone, an attachment doc: {:?}",
        first.progress
    );
    assert_eq!(snapshot(&a), snapshot(&b));
    assert_eq!(
        b.get("gone", &GetOptions::default()).unwrap_err().reason(),
        "deleted"
    );
    // Checkpoints on both sides.
    let id = rep.id().to_owned();
    assert!(a.get_local(&format!("_local/{id}")).is_ok());
    let ckpt = b.get_local(&format!("_local/{id}")).unwrap();
    assert_eq!(ckpt["history"].as_array().unwrap().len(), 1);
    // A second run transfers nothing; after one more edit, exactly that.
    let again = Replication::new(
        Endpoint::Local(a.clone()),
        Endpoint::Local(b.clone()),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(
        (again.progress.docs_read, again.progress.missing_checked),
        (0, 0)
    );
    assert!(again.no_changes);
    let r = a.get("doc03", &GetOptions::default()).unwrap().rev;
    a.put(
        Some("doc03"),
        DocUpdate {
            rev: Some(r),
            body: body(json!({"i": 333})),
            ..DocUpdate::default()
        },
        true,
    )
    .unwrap();
    let third = Replication::new(
        Endpoint::Local(a.clone()),
        Endpoint::Local(b.clone()),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(
        (third.progress.missing_checked, third.progress.docs_written),
        (1, 1)
    );
    assert_eq!(
        b.get("doc03", &GetOptions::default()).unwrap().json["i"],
        333
    );
    assert_eq!(snapshot(&a), snapshot(&b));
}

#[tokio::test]
async fn over_http_both_ways_with_filters() {
    let server = common::start().await;
    server.put_json("/remote", &json!({})).await;
    let (_d, s) = store();
    let local = s.create_db("local").unwrap();
    seed(&local);
    // Push to the HTTP server, then pull into a fresh local database.
    let push = Replication::new(
        Endpoint::Local(local.clone()),
        remote(&server, "remote"),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(push.progress.docs_written, 29);
    let fresh = s.create_db("fresh").unwrap();
    Replication::new(
        remote(&server, "remote"),
        Endpoint::Local(fresh.clone()),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(snapshot(&local), snapshot(&fresh));
    let text = fresh
        .get(
            "withatt",
            &GetOptions {
                attachments: couch_sync::AttachmentMode::Inline,
                ..GetOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        text.json["_attachments"]["a.txt"]["data"],
        data_encoding::BASE64.encode(&b"attached words ".repeat(40))
    );

    // doc_ids and selector filters; create_target.
    let opts = ReplicationOptions {
        doc_ids: Some(vec!["doc01".into(), "doc02".into()]),
        create_target: true,
        ..ReplicationOptions::default()
    };
    Replication::new(remote(&server, "remote"), remote(&server, "only2"), opts)
        .run()
        .await
        .unwrap();
    assert_eq!(server.get("/only2").await.json()["doc_count"], 2);
    let opts = ReplicationOptions {
        selector: Some(json!({"i": {"$gte": 20}})),
        create_target: true,
        ..ReplicationOptions::default()
    };
    Replication::new(remote(&server, "remote"), remote(&server, "big"), opts)
        .run()
        .await
        .unwrap();
    assert_eq!(server.get("/big").await.json()["doc_count"], 5);
    // A missing source is a permanent error, not a retry loop.
    let err = Replication::new(
        remote(&server, "nope"),
        remote(&server, "x"),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap_err();
    assert_eq!(err.status(), 404, "{err}");
}

#[tokio::test]
async fn continuous_follows_until_cancelled() {
    let (_d, s) = store();
    let a = s.create_db("a").unwrap();
    let b = s.create_db("b").unwrap();
    put(&a, "first", json!({}));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = ReplicationOptions {
        continuous: true,
        idle_wait: Duration::from_millis(200),
        ..ReplicationOptions::default()
    };
    let rep = Arc::new(
        Replication::new(Endpoint::Local(a.clone()), Endpoint::Local(b.clone()), opts)
            .with_events(tx),
    );
    let cancel = rep.canceller();
    let runner = tokio::spawn({
        let rep = rep.clone();
        async move { rep.run().await }
    });
    // Wait until idle, write, and see it arrive; idle periods longer than idle_wait are survived.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            couch_sync::replicate::Event::Idle(_) => break,
            _ => continue,
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    put(&a, "second", json!({"late": true}));
    for _ in 0..100 {
        if b.get("second", &GetOptions::default()).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        b.get("second", &GetOptions::default()).unwrap().json["late"],
        true
    );
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(result.progress.docs_written, 2);
}

#[tokio::test]
async fn replicate_endpoint_and_active_tasks() {
    let s = common::start().await;
    s.put_json("/src", &json!({})).await;
    for i in 0..10 {
        s.put_json(&format!("/src/d{i}"), &json!({"i": i})).await;
    }
    let url = format!("http://{}/src", s.addr);
    // Remote URL to a local name, creating the target.
    let r = s
        .post_json(
            "/_replicate",
            &json!({"source": url, "target": "dst", "create_target": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let body = r.json();
    assert_eq!(body["ok"], true);
    assert_eq!(body["history"][0]["docs_written"], 10);
    assert!(body["session_id"].is_string());
    assert_eq!(s.get("/dst").await.json()["doc_count"], 10);
    let again = s
        .post_json("/_replicate", &json!({"source": url, "target": "dst"}))
        .await
        .json();
    assert_eq!(again["no_changes"], true);
    // Errors: missing fields, bad selector, missing source.
    s.post_json("/_replicate", &json!({"source": "src"}))
        .await
        .assert_error(400, "bad_request");
    s.post_json(
        "/_replicate",
        &json!({"source": "src", "target": "dst", "selector": {"$nope": 1}}),
    )
    .await
    .assert_error(400, "bad_request");
    s.post_json(
        "/_replicate",
        &json!({"source": "missing", "target": "dst"}),
    )
    .await
    .assert_error(404, "not_found");
    // Continuous: 202, listed in _active_tasks, cancellable.
    let r = s
        .post_json(
            "/_replicate",
            &json!({"source": "src", "target": "live", "continuous": true, "create_target": true}),
        )
        .await;
    assert_eq!(r.status, 202);
    let local_id = r.json()["_local_id"].as_str().unwrap().to_owned();
    assert!(local_id.ends_with("+continuous"));
    s.put_json("/src/late", &json!({"late": 1})).await;
    let mut seen = false;
    for _ in 0..100 {
        if s.get("/live/late").await.status == 200 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "continuous replication carried a later write");
    let tasks = s.get("/_active_tasks").await.json();
    assert_eq!(tasks[0]["type"], "replication");
    assert_eq!(tasks[0]["continuous"], true);
    assert_eq!(tasks[0]["docs_written"], 11);
    let r = s
        .post_json(
            "/_replicate",
            &json!({"source": "src", "target": "live", "continuous": true, "cancel": true}),
        )
        .await;
    assert_eq!(r.json()["ok"], true);
    for _ in 0..100 {
        if s.get("/_active_tasks").await.json() == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.get("/_active_tasks").await.json(), json!([]));
    s.post_json(
        "/_replicate",
        &json!({"source": "src", "target": "live", "continuous": true, "cancel": true}),
    )
    .await
    .assert_error(404, "not_found");
}

/// A peer without `_bulk_get` (older CouchDB, some servers): the replicator falls back to
/// `open_revs` per document and still copies everything, attachments included.
#[tokio::test]
async fn falls_back_to_open_revs_without_bulk_get() {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    let dir = tempfile::tempdir().unwrap();
    let old_store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let db = old_store.create_db("old").unwrap();
    seed(&db);
    let inner = couch_sync::server::router(
        old_store.clone(),
        couch_sync::server::ServerConfig::default(),
        Arc::new(couch_sync::server::AllowAll),
    );
    let bulk_get_calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let calls = bulk_get_calls.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let inner = inner.clone();
        let calls = calls.clone();
        async move {
            if req.uri().path().ends_with("/_bulk_get") {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return (
                    axum::http::StatusCode::NOT_FOUND,
                    r#"{"error":"not_found","reason":"missing"}"#,
                )
                    .into_response();
            }
            use tower::ServiceExt;
            inner.oneshot(req).await.into_response()
        }
    });
    let (addr, server) = serve(app).await;
    let (_d2, s2) = store();
    let target = s2.create_db("new").unwrap();
    let source = remote_at(addr, "old");
    let result = Replication::new(
        source,
        Endpoint::Local(target.clone()),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(result.progress.docs_written, 29);
    assert_eq!(
        bulk_get_calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "tried once, then remembered"
    );
    assert_eq!(snapshot(&db), snapshot(&target));
    server.abort();
}

/// Backoff runs on the clock seam: with a simulated clock and a peer that cannot be reached, the
/// replicator retries with exponentially growing, jittered delays — and no real time passes.
#[tokio::test]
async fn backoff_on_simulated_time() {
    use couch_sync::clock::SimulatedClock;
    use couch_sync::replicate::{Connecting, Connector, RetryPolicy};
    struct Unreachable(std::sync::atomic::AtomicU64);
    impl Connector for Unreachable {
        fn connect(&self, _: &str, _: &str, _: u16) -> Connecting {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "refused",
                ))
            })
        }
    }
    let clock = SimulatedClock::new(0);
    let connector = Arc::new(Unreachable(Default::default()));
    let remote = Remote::new(
        "http://10.255.255.1:5984/db",
        connector.clone(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let (_d, s) = store();
    let local = s.create_db("l").unwrap();
    let options = ReplicationOptions {
        retry: RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: Some(8),
        },
        jitter_seed: Some(42),
        ..ReplicationOptions::default()
    };
    let started = std::time::Instant::now();
    let err = Replication::new(
        Endpoint::Remote(Arc::new(remote)),
        Endpoint::Local(local),
        options,
    )
    .with_clock(Arc::new(clock.clone()))
    .run()
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no real waiting"
    );
    assert_eq!(err.kind(), couch_sync::ErrorKind::Transient, "{err}");
    assert_eq!(
        connector.0.load(std::sync::atomic::Ordering::SeqCst),
        8,
        "one connection attempt per try"
    );
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 7);
    for (i, d) in sleeps.iter().enumerate() {
        let base = Duration::from_millis(100) * (1 << i);
        let base = base.min(Duration::from_secs(5));
        assert!(
            *d >= base / 2 && *d <= base * 3 / 2,
            "attempt {i}: {d:?} within ±50% of {base:?}"
        );
    }
    assert!(
        sleeps[5] > sleeps[0] * 8,
        "delays grow exponentially: {sleeps:?}"
    );
}

/// A busy peer's `Retry-After` (on a 429 or 503) is a floor under the backoff, capped at 60 s:
/// the source answers its first four `_changes` requests 503 `Retry-After: 7`, 429
/// `Retry-After: 3`, 503 `Retry-After: 3600` and 503 with an HTTP-date (not read), and the
/// replicator — whose own backoff here is at most 75 ms — waits 7 s, 3 s, 60 s and its backoff
/// (on the simulated clock), then copies everything.
#[tokio::test]
async fn a_busy_peer_is_left_alone_as_long_as_it_asks() {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    use couch_sync::clock::SimulatedClock;
    use couch_sync::replicate::{Event, RetryPolicy};
    let dir = tempfile::tempdir().unwrap();
    let busy_store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let db = busy_store.create_db("busy").unwrap();
    seed(&db);
    let inner = couch_sync::server::router(
        busy_store.clone(),
        couch_sync::server::ServerConfig::default(),
        Arc::new(couch_sync::server::AllowAll),
    );
    let answers: Vec<(u16, &str)> = vec![
        (503, "7"),
        (429, "3"),
        (503, "3600"),
        (503, "Wed, 21 Oct 2037 07:28:00 GMT"),
    ];
    let answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
    let app = axum::Router::new().fallback(move |req: Request| {
        let inner = inner.clone();
        let answers = answers.clone();
        async move {
            if req.uri().path().ends_with("/_changes") {
                if let Some((status, after)) = answers.lock().unwrap().next() {
                    return (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("retry-after", after)],
                        r#"{"error":"busy","reason":"come back later"}"#,
                    )
                        .into_response();
                }
            }
            use tower::ServiceExt;
            inner.oneshot(req).await.into_response()
        }
    });
    let (addr, server) = serve(app).await;
    let (_d2, s2) = store();
    let target = s2.create_db("patient").unwrap();
    let source = remote_at(addr, "busy");
    let clock = SimulatedClock::new(0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = ReplicationOptions {
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_attempts: Some(10),
        },
        jitter_seed: Some(42),
        ..ReplicationOptions::default()
    };
    let result = Replication::new(source, Endpoint::Local(target.clone()), options)
        .with_clock(Arc::new(clock.clone()))
        .with_events(tx)
        .run()
        .await
        .unwrap();
    assert_eq!(result.progress.docs_written, 29);
    assert_eq!(snapshot(&db), snapshot(&target));
    server.abort();

    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 4, "one wait per busy answer: {sleeps:?}");
    // The Retry-After counts from the answer (on the remote's real clock): a few ms may pass.
    let about = |wait: Duration, secs: u64| {
        wait <= Duration::from_secs(secs)
            && wait > Duration::from_secs(secs) - Duration::from_secs(1)
    };
    assert!(about(sleeps[0], 7), "503 Retry-After: 7 -> {sleeps:?}");
    assert!(about(sleeps[1], 3), "429 Retry-After: 3 -> {sleeps:?}");
    assert_eq!(
        sleeps[2],
        Duration::from_secs(60),
        "capped at 60 s: {sleeps:?}"
    );
    assert!(
        sleeps[3] <= Duration::from_millis(75),
        "an HTTP-date is not read: the backoff applies: {sleeps:?}"
    );
    let mut delays = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::Retrying { delay, error, .. } = event {
            assert!(error.contains("come back later"), "{error}");
            delays.push(delay);
        }
    }
    assert_eq!(delays, sleeps, "the events report the waits");
}

/// A peer that refuses (403) stops the replication at once with that error: no retries.
#[tokio::test]
async fn permanent_errors_stop_at_once() {
    use couch_sync::server::{Authorize, Decision, Operation};
    struct ReadOnly;
    impl Authorize for ReadOnly {
        fn authorize(&self, _: &axum::http::request::Parts, op: &Operation<'_>) -> Decision {
            match op {
                Operation::WriteDb { .. } => Decision::Forbidden("read-only peer".into()),
                _ => Decision::Allow,
            }
        }
    }
    let server = common::start_with(
        couch_sync::server::ServerConfig::default(),
        Arc::new(ReadOnly),
    )
    .await;
    server.put_json("/ro", &json!({})).await;
    let (_d, s) = store();
    let local = s.create_db("l").unwrap();
    put(&local, "x", json!({}));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let err = Replication::new(
        Endpoint::Local(local),
        remote(&server, "ro"),
        ReplicationOptions::default(),
    )
    .with_events(tx)
    .run()
    .await
    .unwrap_err();
    assert_eq!((err.status(), err.error()), (403, "forbidden"), "{err}");
    while let Ok(e) = rx.try_recv() {
        assert!(
            !matches!(e, couch_sync::replicate::Event::Retrying { .. }),
            "a 403 is not retried"
        );
    }
}

/// Continuous replication from an HTTP peer survives idle periods longer than its wait and picks
/// up a write made afterwards.
#[tokio::test]
async fn continuous_over_http_survives_idle_periods() {
    let server = common::start().await;
    server.put_json("/src", &json!({})).await;
    server.put_json("/src/a", &json!({})).await;
    let (_d, s) = store();
    let local = s.create_db("l").unwrap();
    let opts = ReplicationOptions {
        continuous: true,
        idle_wait: Duration::from_millis(300),
        ..ReplicationOptions::default()
    };
    let rep = Arc::new(Replication::new(
        remote(&server, "src"),
        Endpoint::Local(local.clone()),
        opts,
    ));
    let runner = tokio::spawn({
        let rep = rep.clone();
        async move { rep.run().await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await; // several idle waits
    server.put_json("/src/b", &json!({"late": true})).await;
    let mut arrived = false;
    for _ in 0..100 {
        if local.get("b", &GetOptions::default()).is_ok() {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(arrived);
    assert_eq!(rep.progress().docs_written, 2);
    rep.canceller().cancel();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn both_ways_converges_two_edited_replicas() {
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let (a, b) = (s1.create_db("a").unwrap(), s2.create_db("b").unwrap());
    put(&a, "only-a", json!({}));
    put(&b, "only-b", json!({}));
    put(&a, "both", json!({"from": "a"}));
    put(&b, "both", json!({"from": "b"}));
    let (ab, ba) = couch_sync::replicate::sync_both_ways(
        Endpoint::Local(a.clone()),
        Endpoint::Local(b.clone()),
        ReplicationOptions::default(),
    )
    .await;
    assert_eq!(
        (
            ab.unwrap().progress.docs_written,
            ba.unwrap().progress.docs_written
        ),
        (2, 2)
    );
    assert_eq!(snapshot(&a), snapshot(&b));
    assert!(
        a.get(
            "both",
            &GetOptions {
                conflicts: true,
                ..GetOptions::default()
            }
        )
        .unwrap()
        .json
        .get("_conflicts")
        .is_some()
    );
}
