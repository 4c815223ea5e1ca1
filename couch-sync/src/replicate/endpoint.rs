//! The two kinds of replication endpoint: a database of this process ([`Endpoint::Local`], no
//! HTTP), and any CouchDB-compatible database reached over HTTP through a [`Connector`]
//! ([`Endpoint::Remote`]). Both answer the same questions with the same JSON shapes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::connector::Connector;
use crate::clock::Clock;
use crate::doc::{DocUpdate, ParseOptions};
use crate::error::{Error, Result};
use crate::read::{AttachmentMode, ChangesFilter, ChangesQuery, GetOptions, OpenRev, OpenRevs};
use crate::rev::RevId;
use crate::store::{Database, parse_seq};

/// One row of a source's changes.
#[derive(Debug, Clone)]
pub(crate) struct ChangeRow {
    pub(crate) id: String,
    pub(crate) revs: Vec<String>,
}

/// A batch of changes.
#[derive(Debug, Clone)]
pub(crate) struct ChangesBatch {
    pub(crate) rows: Vec<ChangeRow>,
    pub(crate) last_seq: Value,
    pub(crate) pending: Option<u64>,
}

/// What a `_revs_diff` says about one document.
#[derive(Debug, Clone, Default)]
pub(crate) struct Missing {
    pub(crate) missing: Vec<String>,
    pub(crate) possible_ancestors: Vec<String>,
}

/// Which documents a replication carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) doc_ids: Option<Vec<String>>,
    pub(crate) selector: Option<Value>,
}

/// A database at the other end of HTTP.
pub struct Remote {
    url: url::Url,
    connector: Arc<dyn Connector>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    max_response_bytes: usize,
    authorization: Option<String>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    bulk_get: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.display_url())
            .finish_non_exhaustive()
    }
}

/// A replication endpoint.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A database of this process, used directly.
    Local(Database),
    /// A database reached over HTTP.
    Remote(Arc<Remote>),
}

fn transport(what: impl std::fmt::Display) -> Error {
    Error::Transport(what.to_string())
}

impl Remote {
    /// A remote database at `url` (e.g. `http://127.0.0.1:5984/mydb`; user info in the URL is
    /// sent as HTTP basic authentication). Requests time out after `timeout` on `clock`.
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
            idle: Mutex::new(Vec::new()),
            bulk_get: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Sets how long one request may take before it counts as failed (default 60 s; a longpoll
    /// wait adds its own timeout on top).
    pub fn with_timeout(mut self, timeout: Duration) -> Remote {
        self.timeout = timeout;
        self
    }

    /// Sets the largest answer accepted from the peer (default 512 MiB).
    pub fn with_max_response_bytes(mut self, limit: usize) -> Remote {
        self.max_response_bytes = limit;
        self
    }

    /// The URL without credentials (used in replication ids and logs).
    pub fn display_url(&self) -> String {
        self.url.to_string()
    }

    fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>> {
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

    /// Sends one request; `path` is relative to the database URL (`""`, `"/_changes?..."`).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        extra_wait: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        let uri = format!("{}{}", self.url.path(), path);
        let host = match self.url.port() {
            Some(p) => format!("{}:{p}", self.url.host_str().unwrap_or_default()),
            None => self.url.host_str().unwrap_or_default().to_owned(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(&uri)
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::ACCEPT_ENCODING, "identity");
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &self.authorization {
            builder = builder.header(hyper::header::AUTHORIZATION, auth);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::bad_request(format!("building a request for {uri}: {e}")))?;
        let mut sender = self.sender().await?;
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| transport(format!("connection to peer: {e}")))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| transport(format!("request {uri}: {e}")))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| transport(format!("reading the answer to {uri}: {e}")))?
                .to_bytes();
            Ok::<_, Error>((status, body))
        };
        let deadline = self.clock.sleep(self.timeout + extra_wait);
        let result = tokio::select! {
            r = exchange => r,
            () = deadline => Err(transport(format!("request {uri} timed out"))),
        };
        if result.is_ok() && !sender.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(sender);
            }
        }
        result
    }

    async fn json(
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
}

/// A peer's HTTP error as a CouchDB-style error with the peer's status, error and reason.
fn peer_error(status: StatusCode, body: &[u8]) -> Error {
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

fn enc(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A `_local` id's URL path: `/_local/<id>` with the id encoded.
fn local_path(id: &str) -> String {
    format!("/_local/{}", enc(id))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::couch(500, "internal_server_error", format!("worker failed: {e}")))?
}

impl Endpoint {
    /// A stable name for replication ids: the URL without credentials, or the local database's
    /// name and instance tag (so a recreated database starts afresh).
    pub(crate) fn identity(&self) -> String {
        match self {
            Endpoint::Local(db) => format!("local:{}:{}", db.name(), db.inner.tag),
            Endpoint::Remote(r) => r.display_url(),
        }
    }

    /// Checks the database exists (404 → `not_found`).
    pub(crate) async fn info(&self) -> Result<Value> {
        match self {
            Endpoint::Local(db) => {
                let d = db.clone();
                let info = blocking(move || d.info()).await?;
                Ok(
                    json!({"db_name": info.db_name, "update_seq": db.seq_string(info.update_seq), "doc_count": info.doc_count}),
                )
            }
            Endpoint::Remote(r) => r.json(Method::GET, "/", None, &[200]).await,
        }
    }

    /// Creates the database (for `create_target`); an existing one is fine.
    pub(crate) async fn create(&self) -> Result<()> {
        match self {
            Endpoint::Local(_) => Ok(()),
            Endpoint::Remote(r) => {
                let (status, body) = r.request(Method::PUT, "", None, Duration::ZERO).await?;
                match status.as_u16() {
                    201 | 202 | 412 => Ok(()),
                    _ => Err(peer_error(status, &body)),
                }
            }
        }
    }

    pub(crate) async fn get_local(&self, id: &str) -> Result<Option<Value>> {
        match self {
            Endpoint::Local(db) => {
                let (d, id) = (db.clone(), format!("_local/{id}"));
                match blocking(move || d.get_local(&id)).await {
                    Ok(doc) => Ok(Some(Value::Object(doc))),
                    Err(e) if e.status() == 404 => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Endpoint::Remote(r) => match r.json(Method::GET, &local_path(id), None, &[200]).await {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.status() == 404 => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Writes a `_local` document; returns its new revision (as the peer reports it).
    pub(crate) async fn put_local(&self, id: &str, mut doc: Map<String, Value>) -> Result<Value> {
        doc.remove("_id");
        match self {
            Endpoint::Local(db) => {
                let rev = doc
                    .remove("_rev")
                    .and_then(|v| v.as_str().map(str::to_owned));
                let (d, id) = (db.clone(), format!("_local/{id}"));
                blocking(move || d.put_local(&id, doc, rev.as_deref()))
                    .await
                    .map(|rev| Value::String(rev.to_string()))
            }
            Endpoint::Remote(r) => {
                let reply = r
                    .json(
                        Method::PUT,
                        &local_path(id),
                        Some(&Value::Object(doc)),
                        &[200, 201],
                    )
                    .await?;
                Ok(reply.get("rev").cloned().unwrap_or(Value::Null))
            }
        }
    }

    /// Changes after `since` (all leaves), at most `limit`. With `wait`, blocks up to that long
    /// for the first change when there is none (longpoll).
    pub(crate) async fn changes(
        &self,
        since: &Value,
        limit: u64,
        filter: &Filter,
        wait: Option<Duration>,
    ) -> Result<ChangesBatch> {
        match self {
            Endpoint::Local(db) => {
                let since_n = seq_number(since);
                let query = ChangesQuery {
                    since: since_n,
                    limit: Some(limit),
                    all_docs: true,
                    filter: local_filter(filter)?,
                    ..ChangesQuery::default()
                };
                let mut rx = db.subscribe();
                loop {
                    let (d, q) = (db.clone(), query.clone());
                    let page = blocking(move || d.changes(&q, None)).await?;
                    if !page.results.is_empty() || wait.is_none() {
                        return Ok(ChangesBatch {
                            rows: page
                                .results
                                .into_iter()
                                .map(|c| ChangeRow {
                                    id: c.id,
                                    revs: c.changes.iter().map(ToString::to_string).collect(),
                                })
                                .collect(),
                            last_seq: Value::String(db.seq_string(page.last_seq)),
                            pending: Some(page.pending),
                        });
                    }
                    // Nothing yet: wait for the next write (the caller bounds the wait).
                    if rx.changed().await.is_err() || db.is_deleted() {
                        return Err(Error::no_db());
                    }
                }
            }
            Endpoint::Remote(r) => {
                let since_text = match since {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut path = format!(
                    "/_changes?style=all_docs&limit={limit}&since={}",
                    enc(&since_text)
                );
                let mut extra = Duration::ZERO;
                if let Some(w) = wait {
                    path.push_str(&format!(
                        "&feed=longpoll&timeout={}&heartbeat=10000",
                        w.as_millis()
                    ));
                    extra = w;
                } else {
                    path.push_str("&feed=normal");
                }
                let body = if let Some(ids) = &filter.doc_ids {
                    path.push_str("&filter=_doc_ids");
                    Some(json!({"doc_ids": ids}))
                } else if let Some(sel) = &filter.selector {
                    path.push_str("&filter=_selector");
                    Some(json!({"selector": sel}))
                } else {
                    None
                };
                let (method, bytes) = match &body {
                    Some(b) => (
                        Method::POST,
                        Some(serde_json::to_vec(b).unwrap_or_default()),
                    ),
                    None => (Method::GET, None),
                };
                let (status, reply) = r.request(method, &path, bytes, extra).await?;
                if status != StatusCode::OK {
                    return Err(peer_error(status, &reply));
                }
                parse_changes(&reply)
            }
        }
    }

    pub(crate) async fn revs_diff(
        &self,
        query: &BTreeMap<String, Vec<String>>,
    ) -> Result<BTreeMap<String, Missing>> {
        match self {
            Endpoint::Local(db) => {
                let mut parsed = BTreeMap::new();
                for (id, revs) in query {
                    let revs: Vec<RevId> = revs.iter().map(|r| r.parse()).collect::<Result<_>>()?;
                    parsed.insert(id.clone(), revs);
                }
                let d = db.clone();
                let diff = blocking(move || d.revs_diff(&parsed)).await?;
                Ok(diff
                    .into_iter()
                    .map(|(id, d)| {
                        (
                            id,
                            Missing {
                                missing: d.missing.iter().map(ToString::to_string).collect(),
                                possible_ancestors: d
                                    .possible_ancestors
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect(),
                            },
                        )
                    })
                    .collect())
            }
            Endpoint::Remote(r) => {
                let body = serde_json::to_value(query).unwrap_or_default();
                let reply = r
                    .json(Method::POST, "/_revs_diff", Some(&body), &[200])
                    .await?;
                let Value::Object(map) = reply else {
                    return Err(Error::PeerMisbehaved(
                        "_revs_diff answer is not an object".into(),
                    ));
                };
                let strings = |v: Option<&Value>| -> Vec<String> {
                    v.and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                Ok(map
                    .into_iter()
                    .map(|(id, v)| {
                        let m = Missing {
                            missing: strings(v.get("missing")),
                            possible_ancestors: strings(v.get("possible_ancestors")),
                        };
                        (id, m)
                    })
                    .collect())
            }
        }
    }

    /// The given revisions with `_revisions` and the content of attachments newer than
    /// `atts_since` inline; revisions the source no longer has are skipped.
    pub(crate) async fn fetch(
        &self,
        wanted: &[(String, String, Vec<String>)],
    ) -> Result<Vec<Value>> {
        match self {
            Endpoint::Local(db) => {
                let (d, wanted) = (db.clone(), wanted.to_vec());
                blocking(move || {
                    let mut out = Vec::with_capacity(wanted.len());
                    for (id, rev, since) in wanted {
                        let opts = GetOptions {
                            revs: true,
                            latest: true,
                            attachments: AttachmentMode::Inline,
                            atts_since: since.iter().filter_map(|r| r.parse().ok()).collect(),
                            ..GetOptions::default()
                        };
                        let rev: RevId = rev.parse()?;
                        match d.open_revs(&id, &OpenRevs::Revs(vec![rev]), &opts) {
                            Ok(found) => {
                                for r in found {
                                    if let OpenRev::Ok(doc) = r {
                                        out.push(Value::Object(doc.json));
                                    }
                                }
                            }
                            Err(e) if e.status() == 404 => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(out)
                })
                .await
            }
            Endpoint::Remote(r) => {
                if r.bulk_get.load(std::sync::atomic::Ordering::Relaxed) {
                    let docs: Vec<Value> = wanted
                        .iter()
                        .map(|(id, rev, since)| json!({"id": id, "rev": rev, "atts_since": since}))
                        .collect();
                    let body = json!({"docs": docs});
                    let (status, reply) = r
                        .request(
                            Method::POST,
                            "/_bulk_get?revs=true&latest=true&attachments=true",
                            Some(serde_json::to_vec(&body).unwrap_or_default()),
                            Duration::ZERO,
                        )
                        .await?;
                    match status.as_u16() {
                        200 => return parse_bulk_get(&reply),
                        // No _bulk_get on this peer: fall back to open_revs, and remember.
                        400 | 404 | 405 | 415 | 501 => r
                            .bulk_get
                            .store(false, std::sync::atomic::Ordering::Relaxed),
                        _ => return Err(peer_error(status, &reply)),
                    }
                }
                let mut out = Vec::with_capacity(wanted.len());
                for (id, rev, since) in wanted {
                    let path = format!(
                        "/{}?revs=true&latest=true&attachments=true&open_revs={}&atts_since={}",
                        enc(id),
                        enc(&json!([rev]).to_string()),
                        enc(&json!(since).to_string())
                    );
                    let reply = r.json(Method::GET, &path, None, &[200]).await?;
                    for item in reply.as_array().into_iter().flatten() {
                        if let Some(doc) = item.get("ok") {
                            out.push(doc.clone());
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Writes replicated revisions (`new_edits=false`). Returns per-document failures.
    pub(crate) async fn write(
        &self,
        docs: Vec<Value>,
        tmp_dir: &std::path::Path,
    ) -> Result<Vec<(String, Error)>> {
        match self {
            Endpoint::Local(db) => {
                let (d, tmp) = (db.clone(), tmp_dir.to_path_buf());
                blocking(move || {
                    let updates = docs
                        .into_iter()
                        .map(|doc| match doc {
                            Value::Object(map) => DocUpdate::from_json(
                                map,
                                ParseOptions {
                                    compress: true,
                                    tmp_dir: &tmp,
                                },
                            ),
                            _ => Err(Error::PeerMisbehaved(
                                "a fetched document is not an object".into(),
                            )),
                        })
                        .collect();
                    let results = d.bulk_docs(updates, false)?;
                    Ok(results
                        .into_iter()
                        .filter_map(|r| r.result.err().map(|e| (r.id.unwrap_or_default(), e)))
                        .collect())
                })
                .await
            }
            Endpoint::Remote(r) => {
                // Bodies of at most WRITE_BODY_BYTES each (a peer's request limit is often 64 MiB
                // or less); a body the peer still refuses as too large is split further, down to
                // one document, which then fails alone.
                let mut failures = Vec::new();
                let mut pending: Vec<Vec<Box<RawValue>>> = Vec::new();
                let mut current = Vec::new();
                let mut size = 0;
                for doc in docs {
                    let raw = serde_json::value::to_raw_value(&doc).map_err(|e| {
                        Error::PeerMisbehaved(format!("unserialisable document: {e}"))
                    })?;
                    if !current.is_empty() && size + raw.get().len() > WRITE_BODY_BYTES {
                        pending.push(std::mem::take(&mut current));
                        size = 0;
                    }
                    size += raw.get().len();
                    current.push(raw);
                }
                if !current.is_empty() {
                    pending.push(current);
                }
                while let Some(group) = pending.pop() {
                    let body = serde_json::to_vec(&BulkDocsBody {
                        docs: &group,
                        new_edits: false,
                    })
                    .unwrap_or_default();
                    let (status, reply) = r
                        .request(Method::POST, "/_bulk_docs", Some(body), Duration::ZERO)
                        .await?;
                    match status.as_u16() {
                        201 | 202 => failures.extend(bulk_failures(&reply)),
                        413 if group.len() > 1 => {
                            let mut first = group;
                            let second = first.split_off(first.len() / 2);
                            pending.push(first);
                            pending.push(second);
                        }
                        413 => {
                            let id = serde_json::from_str::<Value>(
                                group.first().map_or("{}", |d| d.get()),
                            )
                            .ok()
                            .and_then(|d| d.get("_id").and_then(Value::as_str).map(str::to_owned))
                            .unwrap_or_default();
                            failures.push((id, peer_error(status, &reply)));
                        }
                        _ => return Err(peer_error(status, &reply)),
                    }
                }
                Ok(failures)
            }
        }
    }
}

#[derive(serde::Serialize)]
struct BulkDocsBody<'a> {
    docs: &'a [Box<RawValue>],
    new_edits: bool,
}

/// The largest `_bulk_docs` body the replicator sends.
const WRITE_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Per-document failures in a `_bulk_docs` answer.
fn bulk_failures(reply: &[u8]) -> Vec<(String, Error)> {
    let rows: Value = serde_json::from_slice(reply).unwrap_or(Value::Null);
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let error = row.get("error")?.as_str()?.to_owned();
            let reason = row
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let id = row
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            Some((id, Error::couch(400, error, reason)))
        })
        .collect()
}

fn seq_number(since: &Value) -> u64 {
    match since {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => parse_seq(s).unwrap_or(0),
        _ => 0,
    }
}

fn local_filter(filter: &Filter) -> Result<ChangesFilter> {
    Ok(if let Some(ids) = &filter.doc_ids {
        ChangesFilter::DocIds(ids.iter().cloned().collect())
    } else if let Some(sel) = &filter.selector {
        ChangesFilter::Selector(crate::mango::Selector::parse(sel)?)
    } else {
        ChangesFilter::None
    })
}

fn parse_changes(bytes: &[u8]) -> Result<ChangesBatch> {
    let bad = |what: &str| Error::PeerMisbehaved(format!("_changes answer: {what}"));
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
    let results = value
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no results"))?;
    let mut rows = Vec::with_capacity(results.len());
    for row in results {
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("row without id"))?;
        let revs = row
            .get("changes")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(|r| r.get("rev").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        rows.push(ChangeRow {
            id: id.to_owned(),
            revs,
        });
    }
    let last_seq = value.get("last_seq").cloned().unwrap_or(Value::Null);
    let pending = value.get("pending").and_then(Value::as_u64);
    Ok(ChangesBatch {
        rows,
        last_seq,
        pending,
    })
}

fn parse_bulk_get(bytes: &[u8]) -> Result<Vec<Value>> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::PeerMisbehaved(format!("_bulk_get answer: {e}")))?;
    let mut out = Vec::new();
    for result in value
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for doc in result
            .get("docs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(ok) = doc.get("ok") {
                out.push(ok.clone());
            }
        }
    }
    Ok(out)
}
