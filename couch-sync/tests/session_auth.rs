//! Cookie authentication (`POST /_session`) against a real server that requires it:
//! pouchdb-server (npm, from `interop/node_modules`, installed by `scripts/test`) with a server
//! admin configured, so creating a database needs a logged-in admin. The replicator logs in once,
//! sends the `AuthSession` cookie from then on, and stops with the server's own 401 when the
//! password is wrong.
//!
//! Without node or the npm packages each test prints a SKIPPED line and passes — unless `CI` is
//! set, where skipping fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use couch_sync::replicate::{
    Endpoint, Remote, Replication, ReplicationOptions, RetryPolicy, TcpConnector, TokioClock,
};
use couch_sync::{Database, DocUpdate, GetOptions, Store, StoreConfig};
use serde_json::{Value, json};

const ADMIN: &str = "alice";
const PASSWORD: &str = "wonder land:/?";

/// pouchdb-server on a free loopback port, killed (and its directory removed) on drop.
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

fn skip(test: &str, reason: &str) {
    let line = format!("SKIPPED (session_auth::{test}): {reason}");
    assert!(std::env::var_os("CI").is_none(), "{line}, and CI is set");
    eprintln!("!!!!!!!! {line}");
    println!("!!!!!!!! {line}");
}

/// Starts pouchdb-server with `ADMIN` as its server admin, or says why it cannot.
fn start(test: &str) -> Option<PouchServer> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/node_modules/pouchdb-server/bin/pouchdb-server");
    if !bin.exists() {
        skip(
            test,
            "interop/node_modules has no pouchdb-server (scripts/test runs `npm ci` there)",
        );
        return None;
    }
    if Command::new("node").arg("--version").output().is_err() {
        skip(test, "no node on PATH");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"admins": {ADMIN: PASSWORD}, "log": {"level": "error"}});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    // Listening is not answering yet: give it up to 30 s to take a connection.
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("pouchdb-server did not listen on {port} within 30 s");
}

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
    let Some(server) = start("a_session_cookie_carries_a_push_and_a_pull") else {
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
    let Some(server) = start("a_wrong_password_stops_with_the_servers_401") else {
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
