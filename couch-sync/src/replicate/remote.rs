//! A database at the other end of HTTP: requests over connections from a [`Connector`], kept
//! alive and reused, with answers read as a whole (JSON, bounded) or streamed (multipart
//! `open_revs`), and request bodies sent whole or streamed (multipart document writes).
//!
//! Timeouts are inactivity timeouts on the [`Clock`]: a request fails when no byte has moved in
//! either direction for [`Remote::with_timeout`] (plus a longpoll's own wait before the first
//! byte), so a large attachment on a slow link is not cut off while it still flows.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use super::connector::Connector;
use super::fetched::{Fetched, MultipartBody};
use super::multipart::{OpenRevsReader, media_type};
use crate::clock::Clock;
use crate::error::{Error, Result};

/// A database at the other end of HTTP.
pub struct Remote {
    url: url::Url,
    connector: Arc<dyn Connector>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    max_response_bytes: usize,
    authorization: Option<String>,
    session: Option<Session>,
    idle: Mutex<Vec<SendRequest<OutBody>>>,
    pub(crate) bulk_get: AtomicBool,
    keeps_encoded: Mutex<Option<bool>>,
    /// Until when (milliseconds on `clock`) the last 429/503 answer's `Retry-After` asked to be
    /// left alone; see [`Remote::take_retry_after`].
    retry_after: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.display_url())
            .finish_non_exhaustive()
    }
}

pub(crate) fn transport(what: impl std::fmt::Display) -> Error {
    Error::Transport(what.to_string())
}

/// A peer's HTTP error as a CouchDB-style error with the peer's status, error and reason.
pub(crate) fn peer_error(status: StatusCode, body: &[u8]) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("http_error")
        .chars()
        .take(100)
        .collect::<String>();
    let reason = parsed
        .as_ref()
        .and_then(|v| v.get("reason"))
        .and_then(Value::as_str)
        .map(|r| r.chars().take(300).collect::<String>())
        .unwrap_or_else(|| format!("HTTP {status}"));
    Error::couch(status.as_u16(), error, reason)
}

fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A document id as a URL path segment, as CouchDB's replicator writes it (`_design/` and
/// `_local/` keep their slash).
pub(crate) fn doc_path(id: &str) -> String {
    for prefix in ["_design/", "_local/"] {
        if let Some(rest) = id.strip_prefix(prefix) {
            return format!("/{prefix}{}", enc(rest));
        }
    }
    format!("/{}", enc(id))
}

/// A request body: whole, or streamed from a channel with a known length.
pub(crate) struct OutBody {
    kind: OutKind,
    progress: Option<Arc<AtomicU64>>,
}

enum OutKind {
    Full(Option<Bytes>),
    Stream {
        rx: mpsc::Receiver<std::io::Result<Bytes>>,
        length: u64,
    },
}

impl OutBody {
    fn full(bytes: Vec<u8>) -> OutBody {
        OutBody {
            kind: OutKind::Full((!bytes.is_empty()).then(|| Bytes::from(bytes))),
            progress: None,
        }
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            OutKind::Full(bytes) => Poll::Ready(bytes.take().map(Ok)),
            OutKind::Stream { rx, .. } => rx.poll_recv(cx),
        };
        if let (Poll::Ready(Some(Ok(bytes))), Some(progress)) = (&polled, &this.progress) {
            progress.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        polled.map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, OutKind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            OutKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            OutKind::Stream { length, .. } => SizeHint::with_exact(*length),
        }
    }
}

/// Cookie authentication (`POST /_session`): the credentials, and the cookie while it is good.
struct Session {
    name: String,
    password: String,
    cookie: tokio::sync::Mutex<Option<String>>,
}

/// The `AuthSession=…` pair of a `Set-Cookie` header, if it sets one with a value (an empty
/// value is how CouchDB clears the cookie: not a session to send).
fn auth_session_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all(hyper::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
        .find(|pair| pair.starts_with("AuthSession=") && pair.len() > "AuthSession=".len())
        .map(str::to_owned)
}

/// An answer whose body is still to be read, and the connection it arrived on.
struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Incoming,
    sender: SendRequest<OutBody>,
}

impl Remote {
    /// A remote database at `url` (e.g. `http://127.0.0.1:5984/mydb`; user info in the URL is
    /// sent as HTTP basic authentication). A request fails when nothing moves for the timeout
    /// ([`with_timeout`](Self::with_timeout)), measured on `clock`.
    pub fn new(url: &str, connector: Arc<dyn Connector>, clock: Arc<dyn Clock>) -> Result<Remote> {
        let mut url = url::Url::parse(url)
            .map_err(|e| Error::bad_request(format!("invalid database URL {url:?}: {e}")))?;
        if url.host_str().is_none() {
            return Err(Error::bad_request("database URL has no host"));
        }
        if url.path().trim_matches('/').is_empty() {
            return Err(Error::bad_request("database URL names no database"));
        }
        let authorization = if url.username().is_empty() {
            None
        } else {
            let user = percent_encoding::percent_decode_str(url.username())
                .decode_utf8_lossy()
                .into_owned();
            let pass = url
                .password()
                .map(|p| {
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            Some(format!(
                "Basic {}",
                data_encoding::BASE64.encode(format!("{user}:{pass}").as_bytes())
            ))
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        url.set_query(None);
        url.set_fragment(None);
        Ok(Remote {
            url,
            connector,
            clock,
            timeout: Duration::from_secs(60),
            max_response_bytes: 512 * 1024 * 1024,
            authorization,
            session: None,
            idle: Mutex::new(Vec::new()),
            bulk_get: AtomicBool::new(true),
            keeps_encoded: Mutex::new(None),
            retry_after: Mutex::new(None),
        })
    }

    /// Sets how long a request may go without any byte moving before it counts as failed
    /// (default 60 s; a longpoll wait adds its own timeout on top).
    pub fn with_timeout(mut self, timeout: Duration) -> Remote {
        self.timeout = timeout;
        self
    }

    /// Sends `name` and `password` as HTTP basic authentication with every request (replaces
    /// credentials given in the URL, and a session).
    pub fn with_basic_auth(mut self, name: &str, password: &str) -> Remote {
        self.session = None;
        self.authorization = Some(format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{name}:{password}").as_bytes())
        ));
        self
    }

    /// Logs in with `name` and `password` through the server's `_session` (CouchDB's cookie
    /// authentication) before the first request, and sends the `AuthSession` cookie instead of
    /// the password from then on, taking the fresh cookie a server sends as a session nears its
    /// end. A refused cookie (the session ended) fails that request as a transport error — the
    /// replicator retries it, and the retry logs in again; a refused login fails with the
    /// server's 401 (wrong name or password), which stops a replication. Replaces
    /// credentials given in the URL.
    pub fn with_session(mut self, name: &str, password: &str) -> Remote {
        self.authorization = None;
        self.session = Some(Session {
            name: name.to_owned(),
            password: password.to_owned(),
            cookie: tokio::sync::Mutex::new(None),
        });
        self
    }

    /// Sets the largest answer accepted from the peer (default 512 MiB), attachments included.
    pub fn with_max_response_bytes(mut self, limit: usize) -> Remote {
        self.max_response_bytes = limit;
        self
    }

    /// The URL without credentials (used in replication ids and logs).
    pub fn display_url(&self) -> String {
        self.url.to_string()
    }

    /// The server's root path (`/` or the path above the database, behind a proxy prefix).
    fn server_root(&self) -> String {
        match self.url.path().rsplit_once('/') {
            Some((parent, _)) => format!("{parent}/"),
            None => "/".to_owned(),
        }
    }

    /// The session cookie, logging in first when there is none.
    async fn session_cookie(&self, session: &Session) -> Result<String> {
        let mut cookie = session.cookie.lock().await;
        if let Some(c) = cookie.as_ref() {
            return Ok(c.clone());
        }
        let uri = format!("{}_session", self.server_root());
        let body = serde_json::json!({"name": session.name, "password": session.password});
        let progress = AtomicU64::new(0);
        let work = async {
            let mut answer = self
                .send(
                    Method::POST,
                    &uri,
                    "application/json",
                    Some("application/json"),
                    OutBody::full(body.to_string().into_bytes()),
                    None,
                )
                .await?;
            let reply = self.read_all(&mut answer, &progress, &uri).await?;
            Ok((answer, reply))
        };
        let (answer, reply) = self.watched(&progress, Duration::ZERO, &uri, work).await?;
        let status = answer.status;
        let set = auth_session_cookie(&answer.headers);
        self.release(answer.sender);
        if status != StatusCode::OK {
            return Err(peer_error(status, &reply));
        }
        let got = set.ok_or_else(|| {
            Error::PeerMisbehaved(format!(
                "{} accepted the login at {uri} but set no AuthSession cookie",
                self.display_url()
            ))
        })?;
        *cookie = Some(got.clone());
        Ok(got)
    }

    /// Remembers how long a busy server (429 Too Many Requests, 503 Service Unavailable) asked
    /// to be left alone: its `Retry-After` in seconds (an HTTP-date is not read: the replicator's
    /// own backoff applies then).
    fn note_retry_after(&self, status: StatusCode, headers: &hyper::HeaderMap) {
        if !matches!(status.as_u16(), 429 | 503) {
            return;
        }
        let Some(secs) = headers
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return;
        };
        let until = self
            .clock
            .now_millis()
            .saturating_add(secs.saturating_mul(1000));
        if let Ok(mut r) = self.retry_after.lock() {
            *r = Some(until);
        }
    }

    /// What is left of the wait the last 429/503 answer's `Retry-After` asked for (`None`: none
    /// asked, or it is over), forgotten once read: the replicator waits at least this long
    /// before its next attempt.
    pub(crate) fn take_retry_after(&self) -> Option<Duration> {
        let until = self.retry_after.lock().ok()?.take()?;
        let left = until.saturating_sub(self.clock.now_millis());
        (left > 0).then(|| Duration::from_millis(left))
    }

    fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    async fn sender(&self) -> Result<SendRequest<OutBody>> {
        loop {
            let candidate = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            match candidate {
                Some(sender) if !sender.is_closed() => return Ok(sender),
                Some(_) => continue,
                None => break,
            }
        }
        let host = self.url.host_str().unwrap_or_default().to_owned();
        let stream = self
            .connector
            .connect(self.url.scheme(), &host, self.port())
            .await
            .map_err(|e| transport(format!("connecting to {}:{}: {e}", host, self.port())))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| transport(format!("HTTP handshake with {host}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn release(&self, sender: SendRequest<OutBody>) {
        if !sender.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(sender);
            }
        }
    }

    /// Runs `work`, failing it when `progress` stops moving for the timeout (the first wait
    /// is longer by `extra`).
    async fn watched<T>(
        &self,
        progress: &AtomicU64,
        extra: Duration,
        what: &str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let watchdog = async {
            let mut wait = self.timeout + extra;
            let mut seen = progress.load(Ordering::Relaxed);
            loop {
                self.clock.sleep(wait).await;
                let now = progress.load(Ordering::Relaxed);
                if now == seen {
                    return;
                }
                seen = now;
                wait = self.timeout;
            }
        };
        tokio::select! {
            // The work first: what finishes at once never starts the watchdog's clock.
            biased;
            r = work => r,
            () = watchdog => Err(transport(format!("{what} timed out"))),
        }
    }

    /// Sends a request (to `uri`, an absolute path) with this remote's credentials and waits
    /// for the answer's head.
    async fn start(
        &self,
        method: Method,
        uri: &str,
        accept: &str,
        content_type: Option<&str>,
        body: OutBody,
    ) -> Result<Answer> {
        let Some(session) = &self.session else {
            let auth = self
                .authorization
                .as_ref()
                .map(|a| (hyper::header::AUTHORIZATION, a.clone()));
            return self
                .send(method, uri, accept, content_type, body, auth)
                .await;
        };
        let cookie = self.session_cookie(session).await?;
        let answer = self
            .send(
                method,
                uri,
                accept,
                content_type,
                body,
                Some((hyper::header::COOKIE, cookie.clone())),
            )
            .await?;
        let fresh = auth_session_cookie(&answer.headers);
        let mut current = session.cookie.lock().await;
        if answer.status == StatusCode::UNAUTHORIZED {
            // The session ended (or was revoked): log in again on the next request.
            if current.as_deref() == Some(cookie.as_str()) {
                *current = None;
            }
            return Err(transport(format!(
                "{} refused the session cookie for {uri} (the session ended); logging in again",
                self.display_url()
            )));
        }
        if let Some(fresh) = fresh {
            *current = Some(fresh);
        }
        Ok(answer)
    }

    /// Sends a request with the credential header given (if any) and waits for the answer's
    /// head.
    async fn send(
        &self,
        method: Method,
        uri: &str,
        accept: &str,
        content_type: Option<&str>,
        body: OutBody,
        credential: Option<(hyper::header::HeaderName, String)>,
    ) -> Result<Answer> {
        let host = match self.url.port() {
            Some(p) => format!("{}:{p}", self.url.host_str().unwrap_or_default()),
            None => self.url.host_str().unwrap_or_default().to_owned(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT, accept)
            .header(hyper::header::ACCEPT_ENCODING, "identity");
        if let Some(ct) = content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, ct);
        }
        if let Some((name, value)) = credential {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(body)
            .map_err(|e| Error::bad_request(format!("building a request for {uri}: {e}")))?;
        let mut sender = self.sender().await?;
        sender
            .ready()
            .await
            .map_err(|e| transport(format!("connection to peer: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(format!("request {uri}: {e}")))?;
        let (parts, body) = response.into_parts();
        self.note_retry_after(parts.status, &parts.headers);
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            sender,
        })
    }

    /// The next piece of an answer's body (`None` at its end), counted as progress.
    async fn next_chunk(
        body: &mut Incoming,
        progress: &AtomicU64,
        uri: &str,
    ) -> Result<Option<Bytes>> {
        loop {
            match body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(transport(format!("reading the answer to {uri}: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        progress.fetch_add(data.len() as u64 + 1, Ordering::Relaxed);
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Reads a whole answer body, at most `max_response_bytes`.
    async fn read_all(
        &self,
        answer: &mut Answer,
        progress: &AtomicU64,
        uri: &str,
    ) -> Result<Bytes> {
        let mut out = Vec::new();
        while let Some(chunk) = Self::next_chunk(&mut answer.body, progress, uri).await? {
            if out.len() + chunk.len() > self.max_response_bytes {
                return Err(Error::PeerMisbehaved(format!(
                    "the answer to {uri} is larger than {} bytes",
                    self.max_response_bytes
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// One request to `uri` (an absolute path) and its whole (bounded) answer.
    async fn exchange(
        &self,
        method: Method,
        uri: String,
        content_type: Option<&str>,
        mut body: OutBody,
        extra_wait: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        let progress = Arc::new(AtomicU64::new(0));
        body.progress = Some(progress.clone());
        let work = async {
            let mut answer = self
                .start(method, &uri, "application/json", content_type, body)
                .await?;
            let bytes = self.read_all(&mut answer, &progress, &uri).await?;
            Ok((answer, bytes))
        };
        let (answer, bytes) = self.watched(&progress, extra_wait, &uri, work).await?;
        let status = answer.status;
        self.release(answer.sender);
        Ok((status, bytes))
    }

    /// Sends one request; `path` is relative to the database URL (`""`, `"/_changes?..."`).
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        extra_wait: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        let uri = format!("{}{}", self.url.path(), path);
        let content_type = body.is_some().then_some("application/json");
        self.exchange(
            method,
            uri,
            content_type,
            OutBody::full(body.unwrap_or_default()),
            extra_wait,
        )
        .await
    }

    /// Sends `body` as `content_type` (an attachment's raw bytes); `path` as in [`Remote::request`].
    #[cfg(feature = "backup")]
    pub(crate) async fn request_typed(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)> {
        let uri = format!("{}{}", self.url.path(), path);
        self.exchange(
            method,
            uri,
            Some(content_type),
            OutBody::full(body),
            Duration::ZERO,
        )
        .await
    }

    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Result<Value> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let (status, reply) = self.request(method, path, bytes, Duration::ZERO).await?;
        if !ok.contains(&status.as_u16()) {
            return Err(peer_error(status, &reply));
        }
        serde_json::from_slice(&reply)
            .map_err(|e| Error::PeerMisbehaved(format!("answer to {path} is not JSON: {e}")))
    }

    /// Whether the target stores gzip-encoded multipart parts as they are (`"encoding":
    /// "gzip"`), as Apache CouchDB and this crate's server do: asked once, by the server's
    /// welcome (`GET /` answering `{"couchdb": "Welcome"}`). Other servers (pouchdb-server
    /// stores a part's bytes as the content, whatever its encoding) get decoded content.
    pub(crate) async fn keeps_encoded_parts(&self) -> Result<bool> {
        if let Some(known) = self.keeps_encoded.lock().ok().and_then(|k| *k) {
            return Ok(known);
        }
        let root = self.server_root();
        let (status, reply) = self
            .exchange(
                Method::GET,
                root,
                None,
                OutBody::full(Vec::new()),
                Duration::ZERO,
            )
            .await?;
        let welcome: Option<Value> = serde_json::from_slice(&reply).ok();
        let keeps = status == StatusCode::OK
            && welcome
                .as_ref()
                .and_then(|w| w.get("couchdb"))
                .and_then(Value::as_str)
                == Some("Welcome");
        if let Ok(mut known) = self.keeps_encoded.lock() {
            *known = Some(keeps);
        }
        Ok(keeps)
    }

    /// `GET /db/doc?open_revs=…` with `Accept: multipart/mixed`, read as it streams (attachment
    /// content spooled under `tmp`); a peer that answers JSON instead is read as JSON. A
    /// document the source no longer has gives nothing.
    pub(crate) async fn open_revs(
        &self,
        id: &str,
        query: &str,
        tmp: &std::path::Path,
    ) -> Result<Vec<Fetched>> {
        let uri = format!("{}{}?{query}", self.url.path(), doc_path(id));
        let progress = AtomicU64::new(0);
        let limit = self.max_response_bytes as u64;
        let work = async {
            let mut answer = self
                .start(
                    Method::GET,
                    &uri,
                    "multipart/mixed, application/json",
                    None,
                    OutBody::full(Vec::new()),
                )
                .await?;
            if answer.status == StatusCode::NOT_FOUND {
                self.read_all(&mut answer, &progress, &uri).await?;
                return Ok((answer, Vec::new()));
            }
            let content_type = answer
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            if answer.status != StatusCode::OK {
                let reply = self.read_all(&mut answer, &progress, &uri).await?;
                return Err(peer_error(answer.status, &reply));
            }
            let (mime, _) = media_type(&content_type);
            if mime == "multipart/mixed" {
                let mut reader = OpenRevsReader::new(&content_type, limit, tmp)?;
                while let Some(chunk) = Self::next_chunk(&mut answer.body, &progress, &uri).await? {
                    reader.push(&chunk)?;
                }
                let revs = reader.finish()?;
                return Ok((answer, revs));
            }
            let reply = self.read_all(&mut answer, &progress, &uri).await?;
            let list: Value = serde_json::from_slice(&reply).map_err(|e| {
                Error::PeerMisbehaved(format!("open_revs answer for {id:?} is not JSON: {e}"))
            })?;
            let mut revs = Vec::new();
            for item in list.as_array().into_iter().flatten() {
                if let Some(Value::Object(doc)) = item.get("ok") {
                    revs.push(Fetched::build(doc.clone(), Vec::new(), tmp)?);
                }
            }
            Ok((answer, revs))
        };
        let (answer, revs) = self.watched(&progress, Duration::ZERO, &uri, work).await?;
        self.release(answer.sender);
        Ok(revs)
    }

    /// `PUT /db/doc?new_edits=false` with the revision as `multipart/related`, its content
    /// streamed from the spool. Returns the status and answer.
    pub(crate) async fn put_multipart(&self, doc: Fetched) -> Result<(StatusCode, Bytes)> {
        let uri = format!("{}{}?new_edits=false", self.url.path(), doc_path(&doc.id));
        let body = MultipartBody::new(doc)?;
        let content_type = body.content_type.clone();
        let (tx, rx) = mpsc::channel(4);
        let length = body.length;
        let producer = tokio::task::spawn_blocking(move || body.produce(&tx));
        let out = OutBody {
            kind: OutKind::Stream { rx, length },
            progress: None,
        };
        let result = self
            .exchange(Method::PUT, uri, Some(&content_type), out, Duration::ZERO)
            .await;
        let _ = producer.await;
        result
    }
}
