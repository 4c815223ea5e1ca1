//! The cloud as an optional peer, with hubs as processes: a real pouchdb-server (npm, from
//! `interop/node_modules`, which `scripts/test` installs) with a server admin, behind a TLS
//! terminator the test runs (rustls, a fresh self-signed key the hubs pin; both in
//! `support::cloud`). Hub A pushes a database — documents, a conflict, an attachment — with
//! cookie authentication; hub B pulls it with basic authentication and ends up with the same
//! documents, conflicts and attachment; a hub with the wrong password stops with the server's
//! reason on its status page; a push whose connection is cut mid-way resumes from its
//! checkpoint once it is back. Beneath the hub, couch-sync's `Remote` alone: its `_session`
//! login carries a push (creating the database needs a server admin there) and a pull, and a
//! wrong password ends a replication with the server's own 401.
//!
//! Without node or the npm packages each test prints a SKIPPED line and passes — unless `CI` is
//! set, where skipping fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use couch_sync::replicate::{
    Endpoint, Remote, Replication, ReplicationOptions, RetryPolicy, TcpConnector, TokioClock,
};
use couch_sync::{Database, DocUpdate, GetOptions, Store, StoreConfig};
use serde_json::{Value, json};
use support::cloud::{ADMIN, PASSWORD, PouchServer, Terminator, pouch_server};
use support::{Hub, eventually};

/// Adds the cloud peer `backup` to `hub`.
fn add_cloud(hub: &Hub, port: u16, pin: &str, password: &str, extra: &[&str]) {
    let file = hub.dir.path().join("password.txt");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let url = format!("https://127.0.0.1:{port}/");
    let mut args = vec![
        "cloud",
        "add",
        "backup",
        &url,
        "--db",
        "notes",
        "--user",
        ADMIN,
        "--password-file",
        file.to_str().unwrap(),
        "--pin",
        pin,
    ];
    args.extend_from_slice(extra);
    hub.cli_ok(&args);
    std::fs::remove_file(&file).unwrap();
    let secret = hub.dir.path().join("cloud/backup.secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the stored password is private");
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), password);
    let toml = std::fs::read_to_string(hub.dir.path().join("hub.toml")).unwrap();
    assert!(
        !toml.contains(password),
        "hub.toml does not hold the password"
    );
}

/// The status page's row for `cloud:backup`, `direction`.
async fn cloud_row(hub: &Hub, direction: &str) -> Option<Value> {
    let (status, s) = hub
        .request(Some(&hub.owner()), "GET", "/_hub/api/status", None)
        .await;
    assert_eq!(status, 200, "{s}");
    s["replication"]
        .as_array()?
        .iter()
        .find(|r| r["peer"] == "cloud:backup" && r["direction"] == direction)
        .cloned()
}

/// A document as the hub serves it, with its conflicts and attachment content.
async fn doc(hub: &Hub, id: &str) -> Value {
    let (status, d) = hub
        .request(
            Some(&hub.owner()),
            "GET",
            &format!("/notes/{id}?conflicts=true&attachments=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{id}: {d}");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_pushes_to_a_stock_server_and_another_pulls_it_intact() {
    let Some(server) =
        pouch_server("cloud::a_hub_pushes_to_a_stock_server_and_another_pulls_it_intact")
    else {
        return;
    };
    let terminator = Terminator::start(server.port).await;
    let (port, pin) = (terminator.port, terminator.pin.clone());
    let a = Hub::start("a");
    let owner = a.owner();
    assert_eq!(a.request(Some(&owner), "PUT", "/notes", None).await.0, 201);
    for i in 0..30 {
        let (status, body) = a
            .request(
                Some(&owner),
                "PUT",
                &format!("/notes/n{i:02}"),
                Some(&json!({"text": format!("note {i}")})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // A conflict (two leaves) and an attachment.
    let (status, body) = a
        .request(
            Some(&owner),
            "POST",
            "/notes/_bulk_docs",
            Some(&json!({"new_edits": false, "docs": [
                {"_id": "c", "_rev": "1-aaaa", "side": "one"},
                {"_id": "c", "_rev": "1-bbbb", "side": "two"},
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let photo: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (status, body) = a
        .request(
            Some(&owner),
            "PUT",
            "/notes/photo",
            Some(&json!({"_attachments": {"p.bin": {
                "content_type": "application/octet-stream",
                "data": data_encoding::BASE64.encode(&photo),
            }}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    add_cloud(&a, port, &pin, PASSWORD, &["--cookie", "--push"]);
    let row = eventually(
        90,
        "A's push to the cloud has written every document",
        || async {
            cloud_row(&a, "push")
                .await
                .filter(|r| r["docs_written"].as_u64() >= Some(33) && r["pending"] == json!(0))
        },
    )
    .await;
    assert!(row["last_error"].is_null(), "{row}");

    let b = Hub::start("b");
    add_cloud(&b, port, &pin, PASSWORD, &["--pull"]);
    eventually(90, "B has pulled every document", || async {
        let (status, info) = b.request(Some(&b.owner()), "GET", "/notes", None).await;
        (status == 200 && info["doc_count"] == json!(32)).then_some(())
    })
    .await;
    for id in ["n00", "n29", "c", "photo"] {
        let (from_a, from_b) = (doc(&a, id).await, doc(&b, id).await);
        assert_eq!(from_a, from_b, "{id} arrived intact");
    }
    let c = doc(&b, "c").await;
    assert_eq!(c["_conflicts"].as_array().map(Vec::len), Some(1), "{c}");
    let p = doc(&b, "photo").await;
    assert_eq!(
        p["_attachments"]["p.bin"]["data"],
        json!(data_encoding::BASE64.encode(&photo))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_with_the_servers_reason() {
    let Some(server) = pouch_server("cloud::a_wrong_password_stops_with_the_servers_reason") else {
        return;
    };
    let terminator = Terminator::start(server.port).await;
    let (port, pin) = (terminator.port, terminator.pin.clone());
    let hub = Hub::start("wrong");
    let owner = hub.owner();
    assert_eq!(
        hub.request(Some(&owner), "PUT", "/notes", None).await.0,
        201
    );
    add_cloud(
        &hub,
        port,
        &pin,
        "not the password",
        &["--cookie", "--push"],
    );
    let row = eventually(60, "the push stops", || async {
        cloud_row(&hub, "push")
            .await
            .filter(|r| r["state"] == "stopped")
    })
    .await;
    let why = row["stopped"][1].as_str().unwrap_or_default();
    assert!(why.contains("Name or password is incorrect"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_key_is_refused() {
    let Some(server) = pouch_server("cloud::a_server_with_another_key_is_refused") else {
        return;
    };
    let terminator = Terminator::start(server.port).await;
    let port = terminator.port;
    let hub = Hub::start("pinned");
    let owner = hub.owner();
    assert_eq!(
        hub.request(Some(&owner), "PUT", "/notes", None).await.0,
        201
    );
    let other = data_encoding::BASE64.encode(&[9u8; 32]);
    add_cloud(&hub, port, &other, PASSWORD, &["--push"]);
    let row = eventually(60, "the push reports the key", || async {
        cloud_row(&hub, "push").await.filter(|r| {
            r["last_error"]
                .as_str()
                .or(r["stopped"][1].as_str())
                .is_some_and(|e| e.contains("not the pinned one"))
        })
    })
    .await;
    assert_eq!(row["docs_written"], json!(0), "{row}");
}

/// A connection cut mid-push resumes from the checkpoint. Hub A pushes 2,000 documents (several
/// batches: 500 changes each, as the hub replicates); the terminator cuts the connection when the
/// third batch asks the server what it lacks (`_revs_diff`) — the earlier batches written and
/// checkpointed on the server, that request never arriving — and keeps it cut until A's status
/// page shows the failure. Restored, the push finishes with every document on the server, and
/// the server's checkpoint document shows that it resumed: the first session after the cut
/// started at the sequence checkpointed before it (not at 0), and the sessions after the cut
/// together checked and wrote only the documents the server did not have yet. (Starting over
/// would check all 2,000 again; A's `docs_written` would not tell, as `_revs_diff` keeps a
/// restart from writing anything twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_from_the_checkpoint() {
    const N: u64 = 2_000;
    let Some(server) = pouch_server("cloud::a_cut_connection_resumes_from_the_checkpoint") else {
        return;
    };
    let terminator = Terminator::start(server.port).await;
    let a = Hub::start("resume");
    let owner = a.owner();
    assert_eq!(a.request(Some(&owner), "PUT", "/notes", None).await.0, 201);
    for chunk in 0..N / 500 {
        let docs: Vec<Value> = (chunk * 500..(chunk + 1) * 500)
            .map(|i| json!({"_id": format!("n{i:04}"), "text": format!("note {i}")}))
            .collect();
        let (status, body) = a
            .request(
                Some(&owner),
                "POST",
                "/notes/_bulk_docs",
                Some(&json!({ "docs": docs })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    terminator.cut_at("/notes/_revs_diff", 3);
    add_cloud(
        &a,
        terminator.port,
        &terminator.pin,
        PASSWORD,
        &["--cookie", "--push"],
    );
    eventually(
        120,
        "the push reaches its third batch and the connection is cut",
        || async { terminator.is_cut().then_some(()) },
    )
    .await;

    // While cut: what the server holds (read past the terminator).
    let checkpoint = terminator
        .requests()
        .iter()
        .find_map(|r| {
            r.strip_prefix("PUT ")
                .filter(|path| path.starts_with("/notes/_local/"))
                .map(str::to_owned)
        })
        .expect("A wrote a checkpoint on the server before the cut");
    let (status, before) = server.request("GET", &checkpoint, None).await;
    assert_eq!(status, 200, "{before}");
    let (status, info) = server.request("GET", "/notes", None).await;
    assert_eq!(status, 200, "{info}");
    let had = info["doc_count"].as_u64().unwrap();
    assert!(
        had > 0 && had < N,
        "the cut came mid-push: {had} of {N} on the server"
    );
    let row = eventually(60, "A's status shows the cut", || async {
        cloud_row(&a, "push")
            .await
            .filter(|r| r["state"] == "retrying" && r["last_error"].is_string())
    })
    .await;
    assert_eq!(row["docs_written"], json!(had), "{row}");
    assert!(terminator.is_cut(), "still cut while A retried");
    assert_eq!(terminator.cuts(), 1);
    let (_, still) = server.request("GET", &checkpoint, None).await;
    assert_eq!(still, before, "no checkpoint moved while cut");
    terminator.restore();

    let row = eventually(180, "every document is on the server", || async {
        let (_, info) = server.request("GET", "/notes", None).await;
        if info["doc_count"] != json!(N) {
            return None;
        }
        cloud_row(&a, "push")
            .await
            .filter(|r| r["state"] == "idle" && r["pending"] == json!(0))
    })
    .await;
    assert_eq!(
        row["docs_written"],
        json!(N),
        "each document written once: {row}"
    );
    for id in ["n0000", "n0999", "n1000", "n1999"] {
        let (status, d) = server.request("GET", &format!("/notes/{id}"), None).await;
        assert_eq!(status, 200, "{id}: {d}");
        let i: u64 = id[1..].parse().unwrap();
        assert_eq!(d["text"], json!(format!("note {i}")), "{d}");
    }

    // Resumed, not restarted: the sessions after the cut (newest first in the history, down to
    // the one that was cut) began at the checkpoint and only went through what came after it.
    let (status, after) = server.request("GET", &checkpoint, None).await;
    assert_eq!(status, 200, "{after}");
    let history = after["history"].as_array().unwrap();
    let cut_session = &before["session_id"];
    let later: Vec<&Value> = history
        .iter()
        .take_while(|h| &h["session_id"] != cut_session)
        .collect();
    assert!(
        !later.is_empty() && later.len() < history.len(),
        "sessions after the cut, then the cut one: {after}"
    );
    assert_eq!(
        later.last().unwrap()["start_last_seq"],
        before["source_last_seq"],
        "the first session after the cut started from the checkpoint: {after}"
    );
    let sum = |field: &str| -> u64 {
        later
            .iter()
            .map(|h| h[field].as_u64().unwrap_or_else(|| panic!("{field}: {h}")))
            .sum()
    };
    assert_eq!(
        sum("missing_checked"),
        N - had,
        "after the cut only the documents past the checkpoint were checked: {after}"
    );
    assert_eq!(sum("docs_written"), N - had, "{after}");
}

// couch-sync's Remote on its own.

fn remote(server: &PouchServer, db: &str, password: &str) -> Endpoint {
    Endpoint::Remote(Arc::new(
        Remote::new(
            &format!("http://127.0.0.1:{}/{db}", server.port),
            Arc::new(TcpConnector),
            Arc::new(TokioClock),
        )
        .unwrap()
        .with_session(ADMIN, password),
    ))
}

fn seed(db: &Database) {
    for i in 0..20 {
        let body = json!({"i": i, "text": format!("note {i}")});
        db.put(
            Some(&format!("doc{i:02}")),
            DocUpdate {
                body: body.as_object().unwrap().clone(),
                ..DocUpdate::default()
            },
            true,
        )
        .unwrap();
    }
}

fn bodies(db: &Database) -> Vec<Value> {
    (0..20)
        .map(|i| {
            Value::Object(
                db.get(&format!("doc{i:02}"), &GetOptions::default())
                    .unwrap()
                    .json,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_carries_a_push_and_a_pull() {
    let Some(server) = pouch_server("cloud::a_session_cookie_carries_a_push_and_a_pull") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let local = store.create_db("local").unwrap();
    seed(&local);
    // Creating the target needs a server admin here: only the session makes it possible
    // (pouchdb-server leaves an anonymous attempt unanswered, hence the bound).
    let push = Replication::new(
        Endpoint::Local(local.clone()),
        remote(&server, "cloud", PASSWORD),
        ReplicationOptions {
            create_target: true,
            ..ReplicationOptions::default()
        },
    );
    let push = tokio::time::timeout(Duration::from_secs(60), push.run())
        .await
        .expect("the push ends")
        .unwrap();
    assert_eq!(push.progress.docs_written, 20);
    let back = store.create_db("back").unwrap();
    let pull = Replication::new(
        remote(&server, "cloud", PASSWORD),
        Endpoint::Local(back.clone()),
        ReplicationOptions::default(),
    );
    let pull = tokio::time::timeout(Duration::from_secs(60), pull.run())
        .await
        .expect("the pull ends")
        .unwrap();
    assert_eq!(pull.progress.docs_written, 20);
    assert_eq!(bodies(&local), bodies(&back));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_with_the_servers_401() {
    let Some(server) = pouch_server("cloud::a_wrong_password_stops_with_the_servers_401") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let local = store.create_db("local").unwrap();
    seed(&local);
    let replication = Replication::new(
        Endpoint::Local(local),
        remote(&server, "cloud", "not the password"),
        ReplicationOptions {
            create_target: true,
            retry: RetryPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(200),
                max_attempts: Some(3),
            },
            ..ReplicationOptions::default()
        },
    );
    let err = tokio::time::timeout(Duration::from_secs(60), replication.run())
        .await
        .expect("a refused login ends the replication, it does not retry for ever")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Name or password is incorrect"),
        "the server's reason reaches the caller: {text}"
    );
    assert_eq!(err.status(), 401, "{text}");
}
