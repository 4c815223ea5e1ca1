//! The two kinds of replication endpoint: a database of this process ([`Endpoint::Local`], no
//! HTTP), and any CouchDB-compatible database reached over HTTP through a
//! [`Connector`](super::Connector) ([`Endpoint::Remote`]). Both answer the same questions; the
//! revisions they exchange travel as [`Fetched`] (JSON plus spooled attachment content).
//!
//! How revisions travel (see the [module docs](super) for why):
//! * From a remote source: `_bulk_get?revs=true&latest=true&attachments=false` for a group of
//!   revisions; those whose attachments the target lacks (a stub newer than every possible
//!   ancestor) are then fetched one by one with `GET /db/doc?open_revs=[rev]&latest=true&revs=true`
//!   and `Accept: multipart/mixed` (plus `atts_since` = the possible ancestors), streaming the
//!   content into spool files exactly as the source stores it. A peer without `_bulk_get`
//!   gets the `open_revs` request for every revision; a peer that answers JSON is read as JSON.
//! * From a local source: the stored bytes themselves (gzip stays gzip).
//! * To a local target: one `bulk_docs` transaction per group, content stored as it came.
//! * To a remote target: revisions without content in `_bulk_docs` (`new_edits=false`); with
//!   content, `PUT /db/doc?new_edits=false` as `multipart/related`, content streamed from the
//!   spool, gzip content sent encoded with its digest where the target keeps encoded parts
//!   (CouchDB, this crate) — small plain content goes inline in `_bulk_docs` instead, which
//!   carries it exactly and keeps batching.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::fetched::{self, Content, Fetched};
use super::remote::{Remote, peer_error};
use crate::error::{Error, Result};
use crate::read::{
    AttachmentMode, ChangesFilter, ChangesQuery, Doc, GetOptions, OpenRev, OpenRevs,
};
use crate::rev::RevId;
use crate::store::{Database, parse_seq};

/// A revision to copy: the document, the revision, and the target's possible ancestors of it
/// (attachments no newer than these need not travel).
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub(crate) id: String,
    pub(crate) rev: String,
    pub(crate) since: Vec<String>,
}

/// A revision the target did not take, and why.
#[derive(Debug)]
pub(crate) struct WriteFailure {
    pub(crate) id: String,
    pub(crate) rev: String,
    pub(crate) error: Error,
}

/// Revisions one fetch takes at most.
pub(crate) const FETCH_GROUP: usize = 100;
/// A fetch takes no further revision once it holds this many bytes of attachment content (so
/// memory and spool space stay bounded whatever the attachments weigh).
const FETCH_CONTENT_BYTES: u64 = 16 * 1024 * 1024;
/// Plain attachment content up to this many bytes per revision travels inline in `_bulk_docs`
/// to a remote target (batched); more is streamed in a multipart `PUT`.
const INLINE_CONTENT_BYTES: u64 = 1024 * 1024;
/// `atts_since` is cut short so a request line stays within what servers accept.
const MAX_ATTS_SINCE_CHARS: usize = 6000;

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
    /// `ddoc/name` or `_view` (with `query_params.view`).
    pub(crate) ddoc_filter: Option<String>,
    pub(crate) query_params: Map<String, Value>,
    /// The design-document filter compiled for a local source (by `prepare_filter`).
    pub(crate) local: Option<ChangesFilter>,
}

/// A replication endpoint.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A database of this process, used directly.
    Local(Database),
    /// A database reached over HTTP.
    Remote(Arc<Remote>),
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

    /// The source code of filter function `ddoc/name` (CouchDB's 404 when the design
    /// document or the function is missing).
    pub(crate) async fn filter_code(&self, filter: &str) -> Result<String> {
        let mut parts = filter.split('/').filter(|p| !p.is_empty());
        let (Some(ddoc), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::bad_request(
                "`filter` must be of the form `designname/filtername`",
            ));
        };
        let doc = match self {
            Endpoint::Local(db) => {
                let (d, id) = (db.clone(), format!("_design/{ddoc}"));
                Value::Object(
                    blocking(move || d.get(&id, &GetOptions::default()))
                        .await?
                        .json,
                )
            }
            Endpoint::Remote(r) => {
                r.json(
                    Method::GET,
                    &format!("/_design/{}", enc(ddoc)),
                    None,
                    &[200],
                )
                .await?
            }
        };
        match doc.get("filters").and_then(|f| f.get(name)) {
            Some(Value::String(code)) => Ok(code.clone()),
            Some(other) => Ok(other.to_string()),
            None => Err(Error::not_found(format!(
                "missing json key: {}",
                name.chars().take(200).collect::<String>()
            ))),
        }
    }

    /// Readies a design-document filter: a local source compiles it here (as CouchDB's
    /// replicator does for a local database, with the request it simulates); a remote one
    /// runs it itself.
    pub(crate) async fn prepare_filter(&self, filter: &mut Filter) -> Result<()> {
        let Some(name) = filter.ddoc_filter.clone() else {
            return Ok(());
        };
        let Endpoint::Local(db) = self else {
            return Ok(());
        };
        let (db, params) = (db.clone(), filter.query_params.clone());
        filter.local = Some(blocking(move || local_ddoc_filter(&db, &name, params)).await?);
        Ok(())
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
                if let Some(name) = &filter.ddoc_filter {
                    // As CouchDB's replicator: the filter and each query parameter in the
                    // query string (those of the request itself win); `_view`'s view
                    // options as JSON.
                    let taken = ["style", "limit", "since", "feed", "timeout", "heartbeat"];
                    path.push_str(&format!("&filter={}", enc(name)));
                    for (k, v) in &filter.query_params {
                        if taken.contains(&k.as_str()) || k == "filter" {
                            continue;
                        }
                        let text = match v {
                            Value::String(s) if name != "_view" || k == "view" => s.clone(),
                            Value::String(s) if !VIEW_FIELDS.contains(&k.as_str()) => s.clone(),
                            other => other.to_string(),
                        };
                        path.push_str(&format!("&{}={}", enc(k), enc(&text)));
                    }
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

    /// Up to [`FETCH_GROUP`] of `wanted`, from the start, with `_revisions` and the content
    /// of attachments newer than their possible ancestors; revisions the source no longer has
    /// are skipped. Returns them and how many of `wanted` were taken (at least one, fewer than
    /// the group once [`FETCH_CONTENT_BYTES`] of content is held).
    pub(crate) async fn fetch(
        &self,
        wanted: &[Wanted],
        tmp: &Path,
    ) -> Result<(Vec<Fetched>, usize)> {
        let wanted = wanted
            .get(..wanted.len().min(FETCH_GROUP))
            .unwrap_or_default();
        match self {
            Endpoint::Local(db) => {
                let (d, wanted, tmp) = (db.clone(), wanted.to_vec(), tmp.to_path_buf());
                blocking(move || {
                    let mut out = Vec::with_capacity(wanted.len());
                    let mut held = 0u64;
                    for (taken, w) in wanted.iter().enumerate() {
                        let opts = GetOptions {
                            revs: true,
                            latest: true,
                            attachments: AttachmentMode::Follows,
                            atts_since: w.since.iter().filter_map(|r| r.parse().ok()).collect(),
                            ..GetOptions::default()
                        };
                        let rev: RevId = w.rev.parse()?;
                        match d.open_revs(&w.id, &OpenRevs::Revs(vec![rev]), &opts) {
                            Ok(found) => {
                                for r in found {
                                    if let OpenRev::Ok(doc) = r {
                                        let f = from_local(&d, doc, &tmp)?;
                                        held += f.content_bytes();
                                        out.push(f);
                                    }
                                }
                            }
                            Err(e) if e.status() == 404 => {}
                            Err(e) => return Err(e),
                        }
                        if held >= FETCH_CONTENT_BYTES {
                            return Ok((out, taken + 1));
                        }
                    }
                    Ok((out, wanted.len()))
                })
                .await
            }
            Endpoint::Remote(r) => {
                let mut from_bulk: Vec<BulkGetResult> = Vec::new();
                let mut have_bulk = false;
                if r.bulk_get.load(Ordering::Relaxed) {
                    let docs: Vec<Value> = wanted
                        .iter()
                        .map(|w| json!({"id": w.id, "rev": w.rev}))
                        .collect();
                    let body = json!({"docs": docs});
                    let (status, reply) = r
                        .request(
                            Method::POST,
                            "/_bulk_get?revs=true&latest=true&attachments=false",
                            Some(serde_json::to_vec(&body).unwrap_or_default()),
                            Duration::ZERO,
                        )
                        .await?;
                    match status.as_u16() {
                        200 => {
                            from_bulk = parse_bulk_get(&reply)?;
                            have_bulk = true;
                        }
                        // No _bulk_get on this peer: open_revs for each, and remember.
                        400 | 404 | 405 | 415 | 501 => r.bulk_get.store(false, Ordering::Relaxed),
                        _ => return Err(peer_error(status, &reply)),
                    }
                }
                let mut out = Vec::with_capacity(wanted.len());
                let mut held = 0u64;
                for (taken, w) in wanted.iter().enumerate() {
                    // `_bulk_get` answers in request order; look the id up if it did not.
                    let slot = if from_bulk.get(taken).is_some_and(|(id, _)| *id == w.id) {
                        Some(taken)
                    } else {
                        from_bulk.iter().position(|(id, _)| *id == w.id)
                    };
                    let docs = slot.and_then(|i| from_bulk.get_mut(i)).map(|(id, docs)| {
                        id.clear(); // used
                        std::mem::take(docs)
                    });
                    let mut open = Vec::new();
                    match docs {
                        Some(docs) if have_bulk => {
                            for doc in docs {
                                if fetched::needs_content(&doc, &w.since) {
                                    let rev = doc
                                        .get("_rev")
                                        .and_then(Value::as_str)
                                        .unwrap_or(&w.rev)
                                        .to_owned();
                                    open.push(rev);
                                } else {
                                    out.push(Fetched::build(doc, Vec::new(), tmp)?);
                                }
                            }
                        }
                        _ => open.push(w.rev.clone()),
                    }
                    for rev in open {
                        let query = open_revs_query(&rev, &w.since);
                        let found = r
                            .open_revs(&w.id, &query, tmp)
                            .await
                            .map_err(|e| reading(&w.id, &rev, e))?;
                        for f in found {
                            held += f.content_bytes();
                            out.push(f);
                        }
                    }
                    if held >= FETCH_CONTENT_BYTES {
                        return Ok((out, taken + 1));
                    }
                }
                Ok((out, wanted.len()))
            }
        }
    }

    /// Writes replicated revisions (`new_edits=false`). Returns the revisions the target did
    /// not take; an error means the write as a whole failed (nothing is known to be written).
    pub(crate) async fn write(&self, docs: Vec<Fetched>, tmp: &Path) -> Result<Vec<WriteFailure>> {
        match self {
            Endpoint::Local(db) => {
                let (d, tmp) = (db.clone(), tmp.to_path_buf());
                blocking(move || {
                    let mut keys = Vec::with_capacity(docs.len());
                    let mut updates = Vec::with_capacity(docs.len());
                    for doc in docs {
                        keys.push((doc.id.clone(), doc.rev.clone()));
                        updates.push(doc.into_update(&tmp));
                    }
                    // A failure of the whole batch (storage, a validation that cannot run)
                    // is not about one document: say which documents it held.
                    let results = d
                        .bulk_docs(updates, false)
                        .map_err(|e| batch_error(e, &keys))?;
                    Ok(results
                        .into_iter()
                        .zip(keys)
                        .filter_map(|(r, (id, rev))| {
                            r.result.err().map(|error| WriteFailure { id, rev, error })
                        })
                        .collect())
                })
                .await
            }
            Endpoint::Remote(r) => {
                let keeps_encoded = if docs.iter().any(Fetched::has_gzip) {
                    r.keeps_encoded_parts().await?
                } else {
                    true
                };
                let tmp = tmp.to_path_buf();
                let (bulk, puts, mut failures) = blocking(move || {
                    let (mut bulk, mut puts, mut failures) = (Vec::new(), Vec::new(), Vec::new());
                    for mut doc in docs {
                        let (id, rev) = (doc.id.clone(), doc.rev.clone());
                        if doc.atts.is_empty() {
                            bulk.push((id, rev, Value::Object(doc.json)));
                            continue;
                        }
                        // Gzip content goes encoded (exact bytes and digest) where the target
                        // keeps it so; small content that needs no encoding goes inline.
                        let inline = doc.decoded_bytes() <= INLINE_CONTENT_BYTES
                            && (!keeps_encoded || !doc.has_gzip());
                        let prepared = if inline {
                            doc.into_inline()
                                .map(|json| bulk.push((id.clone(), rev.clone(), json)))
                        } else if keeps_encoded {
                            puts.push(doc);
                            Ok(())
                        } else {
                            doc.decode_gzip(&tmp).map(|()| puts.push(doc))
                        };
                        if let Err(error) = prepared {
                            failures.push(WriteFailure { id, rev, error });
                        }
                    }
                    Ok((bulk, puts, failures))
                })
                .await?;
                failures.extend(bulk_docs(r, bulk).await?);
                for doc in puts {
                    let (id, rev) = (doc.id.clone(), doc.rev.clone());
                    let (status, reply) = r.put_multipart(doc).await?;
                    if !(200..=202).contains(&status.as_u16()) {
                        failures.push(WriteFailure {
                            id,
                            rev,
                            error: peer_error(status, &reply),
                        });
                    }
                }
                Ok(failures)
            }
        }
    }
}

/// A failure reading a revision from the source, naming it where the error does not.
fn reading(id: &str, rev: &str, e: Error) -> Error {
    let what = format!("reading document {id:?} (revision {rev}) from the source");
    match e {
        Error::PeerMisbehaved(m) => Error::PeerMisbehaved(format!("{what}: {m}")),
        Error::Corrupt(m) => Error::Corrupt(format!("{what}: {m}")),
        other => other,
    }
}

/// A local revision with the content that follows it, spooled as stored.
pub(crate) fn from_local(db: &Database, doc: Doc, tmp: &Path) -> Result<Fetched> {
    let mut contents = Vec::with_capacity(doc.follows.len());
    for att in &doc.follows {
        contents.push(Content {
            name: att.name.clone(),
            revpos: Some(att.revpos),
            data: fetched::spool_stored(db, att, tmp)?,
        });
    }
    Fetched::build(doc.json, contents, tmp)
}

fn open_revs_query(rev: &str, since: &[String]) -> String {
    let mut query = format!(
        "revs=true&latest=true&attachments=true&open_revs={}",
        enc(&json!([rev]).to_string())
    );
    let mut kept: Vec<&String> = Vec::new();
    for ancestor in since {
        kept.push(ancestor);
        if enc(&json!(kept).to_string()).len() > MAX_ATTS_SINCE_CHARS {
            kept.pop();
            break;
        }
    }
    if !kept.is_empty() {
        query.push_str("&atts_since=");
        query.push_str(&enc(&json!(kept).to_string()));
    }
    query
}

/// `_bulk_docs` with `new_edits=false` in bodies of at most [`WRITE_BODY_BYTES`] (a peer's
/// request limit is often 64 MiB or less); a body the peer still refuses as too large is split
/// further, down to one document, which then fails alone (413, as CouchDB's replicator counts it).
async fn bulk_docs(r: &Remote, docs: Vec<(String, String, Value)>) -> Result<Vec<WriteFailure>> {
    let mut failures = Vec::new();
    let mut revs: BTreeMap<String, String> = BTreeMap::new();
    let mut pending: Vec<Vec<Box<RawValue>>> = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for (id, rev, doc) in docs {
        let raw = serde_json::value::to_raw_value(&doc)
            .map_err(|e| Error::PeerMisbehaved(format!("unserialisable document: {e}")))?;
        revs.insert(id, rev);
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
            201 | 202 => {
                for (id, rev, error) in bulk_failures(&reply) {
                    let rev = rev.or_else(|| revs.get(&id).cloned()).unwrap_or_default();
                    failures.push(WriteFailure { id, rev, error });
                }
            }
            413 if group.len() > 1 => {
                let mut first = group;
                let second = first.split_off(first.len() / 2);
                pending.push(first);
                pending.push(second);
            }
            413 => {
                let id = serde_json::from_str::<Value>(group.first().map_or("{}", |d| d.get()))
                    .ok()
                    .and_then(|d| d.get("_id").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                let rev = revs.get(&id).cloned().unwrap_or_default();
                failures.push(WriteFailure {
                    id,
                    rev,
                    error: peer_error(status, &reply),
                });
            }
            _ => return Err(peer_error(status, &reply)),
        }
    }
    Ok(failures)
}

#[derive(serde::Serialize)]
struct BulkDocsBody<'a> {
    docs: &'a [Box<RawValue>],
    new_edits: bool,
}

/// The largest `_bulk_docs` body the replicator sends.
const WRITE_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The status CouchDB would give a per-document error of a `_bulk_docs` answer.
fn row_status(error: &str) -> u16 {
    match error {
        "unauthorized" => 401,
        "forbidden" => 403,
        "not_found" => 404,
        "conflict" => 409,
        "missing_stub" => 412,
        "too_large" | "document_too_large" | "request_body_too_large" | "attachment_too_large" => {
            413
        }
        "unsupported_media_type" => 415,
        "internal_server_error" | "unknown_error" | "timeout" | "service_unavailable" => 500,
        _ => 400,
    }
}

/// Per-document failures in a `_bulk_docs` answer: id, revision (if given), error.
fn bulk_failures(reply: &[u8]) -> Vec<(String, Option<String>, Error)> {
    let rows: Value = serde_json::from_slice(reply).unwrap_or(Value::Null);
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let error: String = row.get("error")?.as_str()?.chars().take(100).collect();
            let reason: String = row
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            let id = row
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let rev = row.get("rev").and_then(Value::as_str).map(str::to_owned);
            Some((id, rev, Error::couch(row_status(&error), error, reason)))
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

/// View query options CouchDB's replicator sends as JSON for a `_view` filter.
const VIEW_FIELDS: &[&str] = &[
    "key",
    "start_key",
    "end_key",
    "startkey",
    "endkey",
    "keys",
    "descending",
    "limit",
    "skip",
    "group_level",
    "reduce",
    "include_docs",
    "inclusive_end",
];

/// The design-document filter `name` of local database `db`, with the request CouchDB's
/// replicator simulates for a local source (`couch_replicator_api_wrap:changes_json_req`).
#[cfg(feature = "js")]
fn local_ddoc_filter(
    db: &Database,
    name: &str,
    params: Map<String, Value>,
) -> Result<ChangesFilter> {
    let ddoc_of = |ddoc: &str| -> Result<(String, Map<String, Value>)> {
        let id = format!("_design/{ddoc}");
        let doc = db.get(&id, &GetOptions::default())?;
        Ok((id, doc.json))
    };
    let split = |text: &str| -> Option<(String, String)> {
        let mut parts = text.split('/').filter(|p| !p.is_empty());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(n), None) => Some((d.to_owned(), n.to_owned())),
            _ => None,
        }
    };
    if name == "_view" {
        let view = params.get("view").and_then(Value::as_str).unwrap_or("");
        if view.is_empty() {
            return Err(Error::bad_request(
                "`view` filter parameter is not provided.",
            ));
        }
        let (ddoc, view) = split(view).ok_or_else(|| {
            Error::bad_request("`view` must be of the form `designname/viewname`")
        })?;
        let (id, doc) = ddoc_of(&ddoc)?;
        return Ok(ChangesFilter::Js(crate::js::JsFilter::view(
            &id, &doc, &view,
        )?));
    }
    let (ddoc, fname) = split(name).ok_or_else(|| {
        Error::bad_request("`filter` must be of the form `designname/filtername`")
    })?;
    let (id, doc) = ddoc_of(&ddoc)?;
    let info = db.info()?;
    let mut query = Map::new();
    query.insert("filter".into(), Value::String(name.to_owned()));
    query.extend(params);
    let req = json!({
        "info": {
            "db_name": info.db_name,
            "doc_count": info.doc_count,
            "doc_del_count": info.doc_del_count,
            "update_seq": db.seq_string(info.update_seq),
        },
        "id": null,
        "method": "GET",
        "path": [db.name(), "_changes"],
        "query": query,
        "headers": [],
        "body": [],
        "peer": "replicator",
        "form": [],
        "cookie": [],
        "userCtx": {"db": db.name(), "name": null, "roles": ["_admin"]},
    });
    Ok(ChangesFilter::Js(crate::js::JsFilter::filter(
        &id, &doc, &fname, req,
    )?))
}

/// Without the `js` feature a local source cannot run a design-document filter: CouchDB's
/// answer when no query server runs JavaScript.
#[cfg(not(feature = "js"))]
fn local_ddoc_filter(
    db: &Database,
    name: &str,
    params: Map<String, Value>,
) -> Result<ChangesFilter> {
    let _ = (db, name, params);
    Err(Error::couch(500, "unknown_query_language", "javascript"))
}

fn local_filter(filter: &Filter) -> Result<ChangesFilter> {
    if let Some(compiled) = &filter.local {
        return Ok(compiled.clone());
    }
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

/// One document of a `_bulk_get` answer: its id and the revisions found.
type BulkGetResult = (String, Vec<Map<String, Value>>);

/// A `_bulk_get` answer: per requested document, in answer order, its id and the revisions
/// found (errors, such as a revision the source no longer has, are left out).
fn parse_bulk_get(bytes: &[u8]) -> Result<Vec<BulkGetResult>> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::PeerMisbehaved(format!("_bulk_get answer: {e}")))?;
    let results = value
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::PeerMisbehaved("_bulk_get answer without results".into()))?;
    let mut out = Vec::with_capacity(results.len());
    for result in results {
        let id = result
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let docs = result
            .get("docs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|doc| match doc.get("ok") {
                Some(Value::Object(ok)) => Some(ok.clone()),
                _ => None,
            })
            .collect();
        out.push((id, docs));
    }
    Ok(out)
}

/// A whole-batch write error, naming the batch (first document and how many).
fn batch_error(e: Error, keys: &[(String, String)]) -> Error {
    let Some((id, rev)) = keys.first() else {
        return e;
    };
    let more = match keys.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    match e {
        Error::Couch {
            status,
            error,
            reason,
        } => Error::Couch {
            status,
            error,
            reason: format!("writing {id} {rev}{more}: {reason}").into(),
        },
        other => other,
    }
}
