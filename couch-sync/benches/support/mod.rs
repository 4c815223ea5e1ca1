//! Shared by the HTTP benches: start couch-sync's release server and pouchdb-server on free
//! loopback ports, a keep-alive HTTP/1.1 client, and resident-memory readings from /proc.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

pub struct Server {
    pub name: &'static str,
    pub child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// RSS of a process and its children (pouchdb-server is node; our server is one process).
pub fn rss_tree_kb(pid: u32, field: &str) -> u64 {
    let mut total = rss_kb(pid, field);
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            total += rss_tree_kb(child, field);
        }
    }
    total
}

pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender,
            host: addr.to_string(),
        }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: String) -> (u16, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept-encoding", "identity")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

pub async fn wait_ready(addr: SocketAddr) {
    for _ in 0..200 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
            drop(tcp);
            let mut c = Client::connect(addr).await;
            if c.send("GET", "/", String::new()).await.0 == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on {addr} did not come up");
}

pub async fn start_ours() -> Server {
    let bin = std::env::var("SERVE_BIN")
        .expect("set SERVE_BIN to the release `serve` example (scripts/bench-couch does)");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(addr).await;
    Server {
        name: "couch-sync",
        child,
        addr,
        _dir: dir,
    }
}

pub async fn start_pouchdb() -> Server {
    let script = std::env::var("POUCHDB_SERVER")
        .expect("set POUCHDB_SERVER to node_modules/pouchdb-server/bin/pouchdb-server");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("node")
        .args([
            "--unhandled-rejections=warn",
            &script,
            "-o",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-d",
        ])
        .arg(dir.path())
        .arg("-n")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(addr).await;
    Server {
        name: "pouchdb-server",
        child,
        addr,
        _dir: dir,
    }
}
