//! A couch-sync server on 127.0.0.1 for tests, and a minimal HTTP/1.1 client (hyper) to talk to it.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use couch_sync::server::{AllowAll, Authorize, ServerConfig, router};
use couch_sync::{Store, StoreConfig};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Store,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start() -> TestServer {
    start_with(ServerConfig::default(), Arc::new(AllowAll)).await
}

pub async fn start_with(config: ServerConfig, auth: Arc<dyn Authorize>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("data"), StoreConfig::default()).unwrap();
    let app = router(store.clone(), config, auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestServer {
        addr,
        store,
        dir,
        task,
    }
}

/// Percent-encodes the characters tests write literally in query strings (`"`, `[`, `]`, space).
pub fn encode_uri(path: &str) -> String {
    path.replace('"', "%22")
        .replace('[', "%5B")
        .replace(']', "%5D")
        .replace(' ', "%20")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a CouchDB error reply.
    #[track_caller]
    pub fn assert_error(&self, status: u16, error: &str) {
        let json = self.json();
        assert_eq!(
            (self.status.as_u16(), json["error"].as_str().unwrap_or("")),
            (status, error),
            "reply: {json}"
        );
        assert!(json["reason"].is_string(), "reason missing: {json}");
    }
}

impl TestServer {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(encode_uri(path))
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(30), sender.send_request(req))
                .await
                .expect("request timed out")
                .unwrap();
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(std::time::Duration::from_secs(30), body.collect())
            .await
            .expect("body timed out")
            .unwrap()
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], Bytes::new()).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Reply {
        self.send(
            "PUT",
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, &[], Bytes::new()).await
    }
}

/// A JSON object as a document body.
pub fn body(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Writes `v` as document `id` (a new edit); returns the new revision.
pub fn put(db: &couch_sync::Database, id: &str, v: Value) -> String {
    db.put(
        Some(id),
        couch_sync::DocUpdate {
            body: body(v),
            ..couch_sync::DocUpdate::default()
        },
        true,
    )
    .unwrap()
    .1
    .to_string()
}

/// A fresh store in a temporary directory (kept while the `TempDir` lives).
pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    (dir, store)
}
