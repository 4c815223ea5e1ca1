//! Device hubs as real processes on 127.0.0.1 for the cross-crate tests, and an HTTPS client with
//! any identity (or none) to talk to them; [`cloud`]: a pouchdb-server behind a TLS terminator.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

pub mod cloud;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use public_key_identity::tls::{client_config, server_name};
use public_key_identity::{Identity, KeyAlgorithm, KeyId, Keystore};
use serde_json::Value;

/// The `device-hub` binary cargo built next to this test, or the one `THALI_HUB_BIN` names
/// (benchmark scripts point it at a release build).
pub fn hub_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("THALI_HUB_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("device-hub");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One hub process with its own data directory and port.
pub struct Hub {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
    pub key_id: KeyId,
    child: Option<Child>,
    pub name: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Hub {
    pub fn start(name: &str) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hub.toml"),
            format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n",
                free_port()
            ),
        )
        .unwrap();
        let mut hub = Hub {
            dir,
            port: 0,
            url: String::new(),
            key_id: KeyId::from_digest([0; 32]),
            child: None,
            name: name.to_owned(),
        };
        hub.launch();
        hub
    }

    fn launch(&mut self) {
        let mut child = Command::new(hub_bin())
            .arg("--data")
            .arg(self.dir.path())
            .arg("serve")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the hub did not report ready in 60 s");
        let url = line
            .strip_prefix("device-hub ready: ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        let parsed: public_key_identity::HttpKeyUrl = url.parse().unwrap();
        self.port = parsed.port();
        self.key_id = parsed.key_id();
        self.url = url;
        self.child = Some(child);
    }

    /// SIGTERM, wait for the clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let status = c.wait().unwrap();
            assert!(status.success(), "{} exited with {status}", self.name);
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.launch();
    }

    /// Runs `device-hub --data DIR ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(hub_bin())
            .arg("--data")
            .arg(self.dir.path())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "device-hub {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The hub's own (owner) identity, from its keystore.
    pub fn owner(&self) -> Identity {
        Keystore::open(self.dir.path().join("keys"))
            .unwrap()
            .load("device")
            .unwrap()
    }

    /// Sends a request to this hub as `who` (None: no client certificate), pinned to its key.
    pub async fn request(
        &self,
        who: Option<&Identity>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        request_pinned(self.port, self.key_id, who, method, path, body)
            .await
            .unwrap()
    }
}

/// A new identity nobody knows.
pub fn stranger() -> Identity {
    Identity::generate(KeyAlgorithm::Ed25519).unwrap()
}

/// An HTTPS request to 127.0.0.1:`port`, pinned to `pin`.
pub async fn request_pinned(
    port: u16,
    pin: KeyId,
    who: Option<&Identity>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let config = Arc::new(client_config(pin, who).unwrap());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name("127.0.0.1"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pairs (or befriends) `b` from `a` through the CLI, confirming the code on both sides.
pub fn pair(a: &Hub, b: &Hub, friend: bool) {
    let args: Vec<&str> = if friend {
        vec!["friend", "add", &b.url, "--no-wait"]
    } else {
        vec!["pair", &b.url, "--no-wait"]
    };
    let out = a.cli_ok(&args);
    let code = out
        .lines()
        .find_map(|l| l.strip_prefix("pairing code: "))
        .unwrap_or_else(|| panic!("no code in: {out}"))
        .trim()
        .to_owned();
    b.cli_ok(&["pair", "--confirm", &code]);
    a.cli_ok(&["pair", "--confirm", &code]);
}
