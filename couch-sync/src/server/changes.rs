//! `_changes`: the `normal`, `longpoll`, `continuous` and `eventsource` feeds.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Ctx, Operation, blocking, json_response, method_not_allowed};
use crate::error::{Error, Result};
use crate::read::{Change, Changes, ChangesFilter, ChangesQuery, DocFilter};
use crate::store::{Database, parse_seq};

/// Rows fetched per read while streaming a continuous feed.
const BATCH: u64 = 500;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Feed {
    Normal,
    LongPoll,
    Continuous,
    EventSource,
}

/// `ddoc/name` as CouchDB splits it (`string:tokens(Name, "/")`): exactly two non-empty parts.
fn two_names(text: &str) -> Option<(&str, &str)> {
    let mut parts = text.split('/').filter(|p| !p.is_empty());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(ddoc), Some(name), None) => Some((ddoc, name)),
        _ => None,
    }
}

/// Design document `_design/<name>`: its id and body (CouchDB's 404 when it is missing or
/// deleted).
#[cfg(feature = "js")]
async fn design_doc(db: &Database, name: &str) -> Result<(String, serde_json::Map<String, Value>)> {
    let (d, id) = (db.clone(), format!("_design/{name}"));
    let key = id.clone();
    let doc = blocking(move || d.get(&key, &crate::GetOptions::default())).await?;
    Ok((id, doc.json))
}

/// The request object a filter function gets as `req`, as CouchDB builds it
/// (`chttpd_external:json_req_obj`): `info`, `uuid`, `id`, `method`, `requested_path`,
/// `path`, `raw_path`, `query` (`key`, `startkey`, `endkey` and `descending` decoded as
/// JSON), `headers`, `body` (`"undefined"` without one), `peer`, `form`, `cookie`, `userCtx`,
/// `secObj`.
#[cfg(feature = "js")]
async fn filter_req(ctx: &Ctx, db: &Database, db_name: &str, body: Option<&str>) -> Result<Value> {
    let d = db.clone();
    let info = blocking(move || d.info()).await?;
    let info = super::db_info_json(db, &info);
    let uri = &ctx.parts.uri;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let mut query = serde_json::Map::new();
    for (k, v) in pairs {
        let value = match k.as_str() {
            "key" | "startkey" | "endkey" | "descending" => {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            }
            _ => Value::String(v),
        };
        query.insert(k, value);
    }
    let mut headers = serde_json::Map::new();
    let mut cookie = serde_json::Map::new();
    for (name, value) in &ctx.parts.headers {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == axum::http::header::COOKIE {
            for pair in text.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    cookie.insert(k.to_owned(), Value::String(v.to_owned()));
                }
            }
        }
        headers.insert(name.as_str().to_owned(), Value::String(text));
    }
    let path: Vec<Value> = uri
        .path()
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| {
            Value::String(
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect();
    let raw_path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let peer = ctx
        .parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(Value::Null, |c| Value::String(c.0.ip().to_string()));
    let mut uuid = [0u8; 16];
    getrandom::fill(&mut uuid).map_err(|e| Error::Corrupt(format!("random source: {e}")))?;
    Ok(json!({
        "info": info,
        "uuid": data_encoding::HEXLOWER.encode(&uuid),
        "id": null,
        "method": ctx.method().as_str(),
        "requested_path": path,
        "path": path,
        "raw_path": raw_path,
        "query": query,
        "headers": headers,
        "body": body.unwrap_or("undefined"),
        "peer": peer,
        "form": {},
        "cookie": cookie,
        "userCtx": ctx.app.auth.user_ctx(&ctx.parts, db_name),
        "secObj": {},
    }))
}

/// The error for a request that needs design document `_design/<ddoc>`'s JavaScript function
/// `member.name`: CouchDB's `not_found` when the document or the function is missing, else
/// CouchDB's answer when it has no query server for the document's language.
#[cfg(not(feature = "js"))]
pub(super) async fn js_needed(db: &Database, ddoc: &str, member: &str, name: &str) -> Error {
    let (d, id) = (db.clone(), format!("_design/{ddoc}"));
    let doc = match blocking(move || d.get(&id, &crate::GetOptions::default())).await {
        Ok(doc) => doc,
        Err(e) => return e,
    };
    let functions = match doc.json.get(member) {
        Some(Value::Object(map)) => map,
        _ => return Error::not_found(format!("missing json key: {member}")),
    };
    if !functions.contains_key(name) {
        let shown: String = name.chars().take(200).collect();
        return Error::not_found(format!("missing json key: {shown}"));
    }
    unknown_language(&doc.json)
}

/// 500 `unknown_query_language`, as CouchDB answers when no query server runs the design
/// document's language (`javascript` unless it says otherwise).
pub(super) fn unknown_language(ddoc: &serde_json::Map<String, Value>) -> Error {
    let language = ddoc
        .get("language")
        .and_then(Value::as_str)
        .unwrap_or("javascript")
        .chars()
        .take(100)
        .collect::<String>();
    Error::couch(500, "unknown_query_language", language)
}

fn change_json(db: &Database, c: Change) -> Value {
    let mut row = json!({
        "seq": db.seq_string(c.seq),
        "id": c.id,
        "changes": c.changes.iter().map(|r| json!({"rev": r.to_string()})).collect::<Vec<_>>(),
    });
    if c.deleted {
        row["deleted"] = Value::Bool(true);
    }
    if let Some(doc) = c.doc {
        row["doc"] = doc;
    }
    row
}

pub(super) async fn handle(
    mut ctx: Ctx,
    method: &Method,
    db_name: &str,
    body: Body,
) -> Result<Response> {
    if *method != Method::GET && *method != Method::HEAD && *method != Method::POST {
        return Err(method_not_allowed("GET,HEAD,POST"));
    }
    ctx.check(Operation::ReadDb { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let q = &ctx.query;
    let feed = match q.get("feed").unwrap_or("normal") {
        "normal" => Feed::Normal,
        "longpoll" => Feed::LongPoll,
        "continuous" => Feed::Continuous,
        "eventsource" => Feed::EventSource,
        other => {
            return Err(Error::bad_request(format!(
                "Supported `feed` types: normal, continuous, live, longpoll, eventsource (got {:?})",
                other.chars().take(40).collect::<String>()
            )));
        }
    };
    let since = match q.get("since").or_else(|| {
        ctx.headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
    }) {
        None => 0,
        Some("now") => {
            let d = db.clone();
            blocking(move || d.update_seq()).await?
        }
        Some(text) => parse_seq(text.trim_matches('"')).ok_or_else(|| {
            Error::bad_request(format!(
                "Malformed sequence supplied in 'since' parameter: {:?}",
                text.chars().take(80).collect::<String>()
            ))
        })?,
    };
    let limit = q.u64("limit")?.map(|l| l.min(ctx.app.config.max_rows));
    let heartbeat = match q.get("heartbeat") {
        Some("true") => Some(Duration::from_secs(60)),
        Some(_) => q
            .u64("heartbeat")?
            .map(|ms| Duration::from_millis(ms.max(100))),
        None => None,
    };
    let timeout = q.u64("timeout")?.map(Duration::from_millis);
    let mut body_json = None;
    let mut body_text: Option<String> = None;
    if *method == Method::POST {
        let bytes = ctx.body_bytes(body).await?;
        if !bytes.is_empty() {
            body_json = Some(crate::json::parse_value(&bytes)?);
            body_text = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    let _ = &body_text;
    let filter = match q.get("filter") {
        None => ChangesFilter::None,
        Some("_doc_ids") => {
            let ids = match (&body_json, q.json("doc_ids")?) {
                (Some(Value::Object(m)), _) if m.contains_key("doc_ids") => {
                    m.get("doc_ids").cloned()
                }
                (_, from_query) => from_query,
            };
            let Some(Value::Array(ids)) = ids else {
                return Err(Error::bad_request(
                    "filter=_doc_ids requires a `doc_ids` array",
                ));
            };
            ChangesFilter::DocIds(
                ids.into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(Error::bad_request("`doc_ids` must be strings")),
                    })
                    .collect::<Result<HashSet<String>>>()?,
            )
        }
        Some("_selector") => {
            let selector = match &body_json {
                Some(Value::Object(m)) => m.get("selector").cloned(),
                _ => None,
            }
            .ok_or_else(|| {
                Error::bad_request("filter=_selector requires a `selector` in the request body")
            })?;
            if !selector.is_object() {
                return Err(Error::bad_request("Selector error: expected a JSON object"));
            }
            ChangesFilter::Selector(crate::mango::Selector::parse(&selector)?)
        }
        Some("_design") => ChangesFilter::Design,
        // Filter functions and views are JavaScript (feature `js`). The design document and
        // the function must exist (CouchDB's errors when they do not).
        Some("_view") => {
            let view = match q.get("view") {
                Some(v) if !v.is_empty() => v,
                _ => {
                    return Err(Error::bad_request(
                        "`view` filter parameter is not provided.",
                    ));
                }
            };
            let Some((ddoc, name)) = two_names(view) else {
                return Err(Error::bad_request(
                    "`view` must be of the form `designname/viewname`",
                ));
            };
            #[cfg(feature = "js")]
            {
                let (id, doc) = design_doc(&db, ddoc).await?;
                ChangesFilter::Js(crate::js::JsFilter::view(&id, &doc, name)?)
            }
            #[cfg(not(feature = "js"))]
            return Err(js_needed(&db, ddoc, "views", name).await);
        }
        Some(other) if other.starts_with('_') => {
            return Err(Error::bad_request("unknown builtin filter name"));
        }
        Some(other) if !other.split('/').any(|p| !p.is_empty()) => ChangesFilter::None,
        Some(other) => {
            let Some((ddoc, name)) = two_names(other) else {
                return Err(Error::bad_request(
                    "`filter` must be of the form `designname/filtername`",
                ));
            };
            #[cfg(feature = "js")]
            {
                let (id, doc) = design_doc(&db, ddoc).await?;
                let req = filter_req(&ctx, &db, db_name, body_text.as_deref()).await?;
                ChangesFilter::Js(crate::js::JsFilter::filter(&id, &doc, name, req)?)
            }
            #[cfg(not(feature = "js"))]
            return Err(js_needed(&db, ddoc, "filters", name).await);
        }
    };
    let query = ChangesQuery {
        since,
        limit,
        descending: q.flag("descending")?,
        all_docs: q.get("style") == Some("all_docs"),
        include_docs: q.flag("include_docs")?,
        conflicts: q.flag("conflicts")?,
        attachments: q.flag("attachments")?,
        filter,
    };
    let doc_filter = ctx.filter.clone();
    match feed {
        Feed::Normal | Feed::LongPoll => {
            let mut page = read_page(&db, &query, doc_filter.clone()).await?;
            if feed == Feed::LongPoll && page.results.is_empty() {
                let mut rx = db.subscribe();
                let wait = timeout.unwrap_or(Duration::from_secs(60));
                let mut q2 = query.clone();
                q2.since = page.last_seq;
                let deadline = tokio::time::Instant::now() + wait;
                let mut closing = ctx.app.shutdown();
                loop {
                    let changed = tokio::select! {
                        r = tokio::time::timeout_at(deadline, rx.changed()) => r,
                        () = closing(), if true => break,
                    };
                    if !matches!(changed, Ok(Ok(()))) || db.is_deleted() {
                        break;
                    }
                    page = read_page(&db, &q2, doc_filter.clone()).await?;
                    if !page.results.is_empty() {
                        break;
                    }
                    q2.since = page.last_seq;
                }
            }
            let last = db.seq_string(page.last_seq);
            let pending = page.pending;
            let results: Vec<Value> = page
                .results
                .into_iter()
                .map(|c| change_json(&db, c))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"results": results, "last_seq": last, "pending": pending}),
            ))
        }
        Feed::Continuous | Feed::EventSource => {
            let closing = ctx.app.shutdown();
            Ok(stream_feed(
                db, query, doc_filter, feed, heartbeat, timeout, closing,
            ))
        }
    }
}

async fn read_page(
    db: &Database,
    q: &ChangesQuery,
    filter: Option<std::sync::Arc<dyn DocFilter>>,
) -> Result<Changes> {
    let (d, q) = (db.clone(), q.clone());
    blocking(move || d.changes(&q, filter.as_deref())).await
}

fn stream_feed(
    db: Database,
    query: ChangesQuery,
    filter: Option<std::sync::Arc<dyn DocFilter>>,
    feed: Feed,
    heartbeat: Option<Duration>,
    timeout: Option<Duration>,
    mut closing: impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    + Send
    + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(16);
    let content_type = if feed == Feed::EventSource {
        "text/event-stream"
    } else {
        "application/json"
    };
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let response = super::bytes_response(StatusCode::OK, content_type, body);
    tokio::spawn(async move {
        let line = |v: &Value, seq: &str| -> Bytes {
            match feed {
                Feed::EventSource => Bytes::from(format!("data: {v}\nid: {seq}\n\n")),
                _ => Bytes::from(format!("{v}\n")),
            }
        };
        let mut rx = db.subscribe();
        let mut q = query;
        let mut remaining = q.limit;
        // Without a heartbeat, CouchDB ends an idle continuous feed after `timeout` (default 60 s).
        let idle_limit = if heartbeat.is_some() {
            timeout
        } else {
            Some(timeout.unwrap_or(Duration::from_secs(60)))
        };
        let tick = heartbeat.unwrap_or(Duration::from_secs(3600));
        let mut last_seq = q.since;
        'feed: loop {
            loop {
                let mut page_q = q.clone();
                page_q.limit = Some(remaining.map_or(BATCH, |r| r.min(BATCH)));
                let page = match read_page(&db, &page_q, filter.clone()).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx
                            .send(Ok(Bytes::from(format!(
                                "{}\n",
                                json!({"error": e.error(), "reason": e.reason()})
                            ))))
                            .await;
                        break 'feed;
                    }
                };
                let count = page.results.len() as u64;
                for change in page.results {
                    let seq = db.seq_string(change.seq);
                    if tx
                        .send(Ok(line(&change_json(&db, change), &seq)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                last_seq = page.last_seq;
                q.since = page.last_seq;
                if let Some(r) = &mut remaining {
                    *r = r.saturating_sub(count);
                    if *r == 0 {
                        break 'feed;
                    }
                }
                if page.pending == 0 {
                    break;
                }
            }
            // Wait for the next change, sending heartbeats.
            let idle_deadline = idle_limit.map(|d| tokio::time::Instant::now() + d);
            loop {
                let next_tick = tokio::time::Instant::now() + tick;
                let wake = match idle_deadline {
                    Some(d) if d < next_tick => d,
                    _ => next_tick,
                };
                let woke = tokio::select! {
                    r = tokio::time::timeout_at(wake, rx.changed()) => r,
                    () = closing() => break 'feed,
                };
                match woke {
                    Ok(Ok(())) => {
                        if db.is_deleted() {
                            break 'feed;
                        }
                        continue 'feed;
                    }
                    Ok(Err(_)) => break 'feed,
                    Err(_) => {
                        if idle_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                            break 'feed;
                        }
                        if heartbeat.is_some()
                            && tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
        if feed == Feed::Continuous {
            let end = json!({"last_seq": db.seq_string(last_seq), "pending": 0});
            let _ = tx.send(Ok(Bytes::from(format!("{end}\n")))).await;
        }
    });
    response
}
