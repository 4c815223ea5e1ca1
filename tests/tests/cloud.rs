//! The cloud as an optional peer, with hubs as processes: a real pouchdb-server (npm, from
//! `interop/node_modules`, which `scripts/test` installs) with a server admin, behind a TLS
//! terminator this test runs (rustls, a fresh self-signed key the hubs pin). Hub A pushes a
//! database — documents, a conflict, an attachment — with cookie authentication; hub B pulls it
//! with basic authentication and ends up with the same documents, conflicts and attachment; a
//! hub with the wrong password stops with the server's reason on its status page. Beneath the
//! hub, couch-sync's `Remote` alone: its `_session` login carries a push (creating the database
//! needs a server admin there) and a pull, and a wrong password ends a replication with the
//! server's own 401.
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

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use couch_sync::replicate::{
    Endpoint, Remote, Replication, ReplicationOptions, RetryPolicy, TcpConnector, TokioClock,
};
use couch_sync::{Database, DocUpdate, GetOptions, Store, StoreConfig};
use serde_json::{Value, json};
use sha2::Digest;
use support::{Hub, eventually};

const ADMIN: &str = "alice";
const PASSWORD: &str = "wonder land:/?";

/// pouchdb-server on a free loopback port, killed on drop.
struct PouchServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PouchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pouch_server(test: &str) -> Option<PouchServer> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/node_modules/pouchdb-server/bin/pouchdb-server");
    let missing = if !bin.exists() {
        Some("interop/node_modules has no pouchdb-server (scripts/test runs `npm ci` there)")
    } else if Command::new("node").arg("--version").output().is_err() {
        Some("no node on PATH")
    } else {
        None
    };
    if let Some(reason) = missing {
        let line = format!("SKIPPED (cloud::{test}): {reason}");
        assert!(std::env::var_os("CI").is_none(), "{line}, and CI is set");
        eprintln!("!!!!!!!! {line}");
        println!("!!!!!!!! {line}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"admins": {ADMIN: PASSWORD}, "log": {"level": "error"}});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let port = support::free_port();
    let child = Command::new("node")
        .arg("--unhandled-rejections=warn")
        .arg(&bin)
        .args([
            "-o",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-n",
            "--no-color",
        ])
        .arg("-d")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("config.json"))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = PouchServer {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("pouchdb-server did not listen on {port} within 30 s");
}

/// A TLS terminator on a free port in front of `backend`: a fresh self-signed key; returns the
/// port and the key's pin (base64 SHA-256 of its SubjectPublicKeyInfo).
async fn tls_terminator(backend: u16) -> (u16, String, tokio::task::JoinHandle<()>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["cloud.test".to_owned()]).unwrap();
    let pin = data_encoding::BASE64.encode(&sha2::Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&signing_key),
    ));
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, pin, task)
}

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
    let Some(server) = pouch_server("a_hub_pushes_to_a_stock_server_and_another_pulls_it_intact")
    else {
        return;
    };
    let (port, pin, _terminator) = tls_terminator(server.port).await;
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
    let Some(server) = pouch_server("a_wrong_password_stops_with_the_servers_reason") else {
        return;
    };
    let (port, pin, _terminator) = tls_terminator(server.port).await;
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
    let Some(server) = pouch_server("a_server_with_another_key_is_refused") else {
        return;
    };
    let (port, _pin, _terminator) = tls_terminator(server.port).await;
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
    let Some(server) = pouch_server("a_session_cookie_carries_a_push_and_a_pull") else {
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
    let Some(server) = pouch_server("a_wrong_password_stops_with_the_servers_401") else {
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
