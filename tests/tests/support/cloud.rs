//! A cloud peer for the tests: a real pouchdb-server (npm, from `interop/node_modules`, which
//! `scripts/test` installs) with a server admin, and a TLS terminator in front of it (rustls, a
//! fresh self-signed key the hubs pin) that logs the requests passing through and can cut the
//! connection on demand.
//!
//! Without node or the npm packages [`pouch_server`] prints a SKIPPED line and gives `None` (the
//! test then returns and passes) — unless `CI` is set, where skipping fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The server admin of every [`pouch_server`].
pub const ADMIN: &str = "alice";
/// [`ADMIN`]'s password (with characters that need encoding in a URL).
pub const PASSWORD: &str = "wonder land:/?";

/// pouchdb-server on a free loopback port, killed on drop.
pub struct PouchServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PouchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PouchServer {
    /// The directory holding the server's files (its databases, config and log).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// A plain-HTTP request straight to the server (not through a terminator), as [`ADMIN`]:
    /// the status and the JSON answer (`Null` if it is not JSON).
    pub async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let credentials = data_encoding::BASE64.encode(format!("{ADMIN}:{PASSWORD}").as_bytes());
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("authorization", format!("Basic {credentials}"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(
                body.map(Value::to_string).unwrap_or_default(),
            )))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .unwrap_or_else(|_| panic!("pouchdb-server did not answer {method} {path} in 30 s"))
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// Starts pouchdb-server with [`ADMIN`] as its server admin. `test` names the test in the
/// SKIPPED line (e.g. `cloud::a_hub_pushes…`): without node or the npm packages it prints that
/// line and returns `None`, or panics when `CI` is set.
pub fn pouch_server(test: &str) -> Option<PouchServer> {
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
        let line = format!("SKIPPED ({test}): {reason}");
        assert!(std::env::var_os("CI").is_none(), "{line}, and CI is set");
        eprintln!("!!!!!!!! {line}");
        println!("!!!!!!!! {line}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"admins": {ADMIN: PASSWORD}, "log": {"level": "error"}});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let port = super::free_port();
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

/// A key's pin as the hub's `--pin` takes it: base64 of the SHA-256 of its
/// SubjectPublicKeyInfo (DER).
pub fn spki_pin(subject_public_key_info: &[u8]) -> String {
    data_encoding::BASE64.encode(&sha2::Sha256::digest(subject_public_key_info))
}

/// A TLS terminator on a free loopback port in front of a plain-HTTP backend, with a fresh
/// self-signed key. It records the request line of every HTTP request passing through, and can
/// cut the connection: [`cut`](Self::cut) (or an armed [`cut_at`](Self::cut_at)) closes every
/// live connection at once and closes each new one as soon as it is accepted, until
/// [`restore`](Self::restore). Dropping it closes everything.
pub struct Terminator {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its key's pin ([`spki_pin`]).
    pub pin: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    backend: u16,
    /// True while the connection is cut.
    cut: watch::Sender<bool>,
    /// Request lines seen (`POST /notes/_revs_diff`, without the HTTP version), in order.
    requests: Mutex<Vec<String>>,
    /// Armed by `cut_at`: cut when this many more request lines containing the text are seen.
    trigger: Mutex<Option<(String, usize)>>,
    /// How many times the connection was cut.
    cuts: Mutex<u64>,
}

impl Shared {
    /// Records a request line; true when it fires the armed trigger.
    fn record(&self, line: &str) -> bool {
        self.requests.lock().unwrap().push(line.to_owned());
        let mut trigger = self.trigger.lock().unwrap();
        if let Some((text, left)) = trigger.as_mut() {
            if line.contains(text.as_str()) {
                *left -= 1;
                if *left == 0 {
                    *trigger = None;
                    return true;
                }
            }
        }
        false
    }

    fn cut(&self) {
        if !self.cut.send_replace(true) {
            *self.cuts.lock().unwrap() += 1;
        }
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.cut.send_replace(true);
    }
}

impl Terminator {
    /// Starts a terminator in front of 127.0.0.1:`backend`.
    pub async fn start(backend: u16) -> Terminator {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["cloud.test".to_owned()]).unwrap();
        let pin = spki_pin(&rcgen::PublicKeyData::subject_public_key_info(&signing_key));
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
        let shared = Arc::new(Shared {
            backend,
            cut: watch::Sender::new(false),
            requests: Mutex::new(Vec::new()),
            trigger: Mutex::new(None),
            cuts: Mutex::new(0),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                if *state.cut.borrow() {
                    // Cut: the connection closes at once (the client's handshake fails).
                    drop(tcp);
                    continue;
                }
                tokio::spawn(relay(state.clone(), acceptor.clone(), tcp));
            }
        });
        Terminator {
            port,
            pin,
            shared,
            task,
        }
    }

    /// `https://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// Cuts the connection now: every live connection closes, new ones close on arrival.
    pub fn cut(&self) {
        self.shared.cut();
    }

    /// Cuts the connection when the `nth` request line (from now) containing `text` arrives; that
    /// request is not forwarded. Replaces an earlier `cut_at` not yet fired.
    pub fn cut_at(&self, text: &str, nth: usize) {
        assert!(nth > 0);
        *self.shared.trigger.lock().unwrap() = Some((text.to_owned(), nth));
    }

    /// Ends a cut: new connections are relayed again.
    pub fn restore(&self) {
        self.shared.cut.send_replace(false);
    }

    /// Whether the connection is cut now.
    pub fn is_cut(&self) -> bool {
        *self.shared.cut.borrow()
    }

    /// How many times the connection was cut.
    pub fn cuts(&self) -> u64 {
        *self.shared.cuts.lock().unwrap()
    }

    /// The request lines seen so far (`POST /notes/_bulk_docs`, without the HTTP version), in
    /// order; the one that fired a [`cut_at`](Self::cut_at) included.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

/// One client connection: TLS in, plain TCP to the backend, until either side closes or the
/// connection is cut.
async fn relay(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
) {
    let mut cut = shared.cut.subscribe();
    let work = async {
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let Ok(plain) = tokio::net::TcpStream::connect(("127.0.0.1", shared.backend)).await else {
            return;
        };
        let (mut tls_read, mut tls_write) = tokio::io::split(tls);
        let (mut plain_read, mut plain_write) = plain.into_split();
        let upstream = async {
            let mut lines = RequestLines::default();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match tls_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut fire = false;
                for line in lines.push(&buf[..n]) {
                    fire |= shared.record(&line);
                }
                if fire {
                    // Not forwarded: the request that fires the cut never reaches the backend.
                    shared.cut();
                    return;
                }
                if plain_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let downstream = async {
            let _ = tokio::io::copy(&mut plain_read, &mut tls_write).await;
        };
        tokio::select! {
            () = upstream => {}
            () = downstream => {}
        }
    };
    tokio::select! {
        () = work => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

/// Finds the request lines (`METHOD /path`) in an HTTP/1.1 request stream read in pieces: the
/// head up to its blank line, then as many body bytes as its `Content-Length` says (hyper, the
/// hubs' client, sends every body with one). A chunked body, or a head past 64 KiB, ends the
/// parsing for that connection (it still relays).
#[derive(Default)]
struct RequestLines {
    head: Vec<u8>,
    /// Body bytes still to skip.
    body_left: u64,
    lost: bool,
}

impl RequestLines {
    fn push(&mut self, mut input: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        while !input.is_empty() && !self.lost {
            if self.body_left > 0 {
                let skip = input.len().min(usize::try_from(self.body_left).unwrap());
                self.body_left -= skip as u64;
                input = &input[skip..];
                continue;
            }
            let before = self.head.len();
            let from = before.saturating_sub(3);
            self.head.extend_from_slice(input);
            let Some(at) = self.head[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
                self.lost = self.head.len() > 64 * 1024;
                break;
            };
            // The head ends in this input (it did not before): the rest is body or what follows.
            let end = from + at + 4;
            input = &input[end - before..];
            self.head.truncate(end);
            let head = String::from_utf8_lossy(&std::mem::take(&mut self.head)).into_owned();
            let mut lines = head.split("\r\n");
            if let Some(request) = lines.next().and_then(request_line) {
                found.push(request);
            }
            for (name, value) in lines.filter_map(|l| l.split_once(':')) {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    self.body_left = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    self.lost = true;
                }
            }
        }
        found
    }
}

/// `METHOD /path` if `line` is `METHOD /path HTTP/1.x`.
fn request_line(line: &str) -> Option<String> {
    let (head, version) = line.rsplit_once(' ')?;
    let (method, path) = head.split_once(' ')?;
    let methods = ["GET", "HEAD", "PUT", "POST", "DELETE", "COPY", "OPTIONS"];
    (version.starts_with("HTTP/1.") && methods.contains(&method) && path.starts_with('/'))
        .then(|| head.to_owned())
}
