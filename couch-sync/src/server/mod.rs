//! CouchDB's HTTP API as an axum [`Router`] (feature `server`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use couch_sync::{Store, StoreConfig};
//! use couch_sync::server::{router, ServerConfig, AllowAll};
//! let store = Store::open("data", StoreConfig::default())?;
//! let app = router(store, ServerConfig::default(), std::sync::Arc::new(AllowAll));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5984").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Every request is checked with an [`Authorize`] hook before it touches the store; the embedding
//! program decides from the request (its extensions carry whatever identity the program attached,
//! e.g. a TLS client key) and the [`Operation`]. Errors are CouchDB's JSON `{"error","reason"}` with
//! CouchDB's status codes. Timeouts and heartbeats of `_changes` feeds use tokio's timer, so tests
//! can run them on paused time.

mod changes;
mod docs;
mod find;
mod multipart;
#[cfg(feature = "client")]
mod replicate;
#[cfg(feature = "js")]
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::read::DocFilter;
use crate::store::{Database, Store};

/// Settings of the HTTP API.
#[derive(Clone)]
pub struct ServerConfig {
    /// Largest JSON request body accepted (413 beyond). Default 64 MiB.
    pub max_body_bytes: usize,
    /// Largest single document accepted (413 beyond). Default 8 MiB, as CouchDB.
    pub max_document_bytes: usize,
    /// Largest attachment upload (standalone or multipart part). Default 1 GiB.
    pub max_attachment_bytes: u64,
    /// Most rows a single `_changes`, `_all_docs` or `_bulk_get` request may ask for at once
    /// (`limit` above it is capped). Default 100 000.
    pub max_rows: u64,
    /// The server uuid reported by `GET /` (default: the store's persistent uuid).
    pub uuid: Option<String>,
    /// When this turns `true` the server is shutting down: `longpoll` and `continuous` feeds end
    /// at once (with what they have), so a graceful stop does not wait out their timeouts.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// How `POST /_replicate` reaches remote URLs (plain TCP by default; the embedding program
    /// supplies TLS).
    #[cfg(feature = "client")]
    pub connector: Arc<dyn crate::replicate::Connector>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_body_bytes: 64 * 1024 * 1024,
            max_document_bytes: 8 * 1024 * 1024,
            max_attachment_bytes: 1024 * 1024 * 1024,
            max_rows: 100_000,
            uuid: None,
            shutdown: None,
            #[cfg(feature = "client")]
            connector: Arc::new(crate::replicate::TcpConnector),
        }
    }
}

/// What a request is about to do, for the [`Authorize`] hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation<'a> {
    /// Server-level information: `GET /`, `/_up`, `/_uuids`, `/_session`.
    Server,
    /// `GET /_all_dbs` (each listed database is then checked with [`Operation::ReadDb`]).
    ListDbs,
    /// `PUT /db`.
    CreateDb {
        /// Database name.
        db: &'a str,
    },
    /// `DELETE /db`.
    DeleteDb {
        /// Database name.
        db: &'a str,
    },
    /// Reading: database info, documents, attachments, `_all_docs`, `_changes`, `_bulk_get`,
    /// `_revs_diff`, `_local` documents.
    ReadDb {
        /// Database name.
        db: &'a str,
    },
    /// Reading one view: `GET/POST /db/_design/D/_view/V`, or `_find` through the index `V` of
    /// `_design/D` by a caller [`Operation::ReadDb`] refused. A view may be readable by callers
    /// who may not read the database; documents a returned [`DocFilter`] refuses never appear
    /// in its rows, reductions or `include_docs`.
    ReadView {
        /// Database name.
        db: &'a str,
        /// The design document's name, without `_design/`.
        ddoc: &'a str,
        /// The view's (or index's) name.
        view: &'a str,
    },
    /// Writing ordinary documents and attachments, `_bulk_docs`.
    WriteDb {
        /// Database name.
        db: &'a str,
    },
    /// Writing a `_design/` document.
    WriteDesign {
        /// Database name.
        db: &'a str,
    },
    /// Writing a `_local/` document (replication checkpoints, also written by readers that pull).
    WriteLocal {
        /// Database name.
        db: &'a str,
    },
    /// Administration: `_compact`, setting `_revs_limit`, `_security`.
    AdminDb {
        /// Database name.
        db: &'a str,
    },
    /// `POST /_replicate` between these endpoints (database names or URLs).
    Replicate {
        /// Source as given.
        source: &'a str,
        /// Target as given.
        target: &'a str,
    },
    /// `GET /_active_tasks`.
    ActiveTasks,
}

/// The hook's verdict.
#[derive(Clone)]
#[non_exhaustive]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Go ahead, but documents the filter refuses are invisible: left out of `_all_docs`,
    /// `_changes`, `_bulk_get`, `open_revs`, and 404 when read directly.
    AllowFiltered(Arc<dyn DocFilter>),
    /// 401 `unauthorized`: the caller is not identified well enough.
    Unauthorized(String),
    /// 403 `forbidden`: the caller is known and may not do this.
    Forbidden(String),
    /// 507 `insufficient_storage` (CouchDB's answer when its storage is full): the write may
    /// succeed later, so a replicator retries it rather than skipping the documents.
    InsufficientStorage(String),
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Allow => f.write_str("Allow"),
            Decision::AllowFiltered(_) => f.write_str("AllowFiltered(..)"),
            Decision::Unauthorized(r) => write!(f, "Unauthorized({r:?})"),
            Decision::Forbidden(r) => write!(f, "Forbidden({r:?})"),
            Decision::InsufficientStorage(r) => write!(f, "InsufficientStorage({r:?})"),
        }
    }
}

/// The authorization hook an embedding program implements.
pub trait Authorize: Send + Sync + 'static {
    /// Decides whether the request described by `request` (method, URI, headers and extensions)
    /// may perform `op`.
    fn authorize(&self, request: &Parts, op: &Operation<'_>) -> Decision;

    /// The user context design-document functions see for this request on database `db`
    /// (`userCtx` of `validate_doc_update`, `req.userCtx` of filter functions), as CouchDB
    /// builds it: `{"db": db, "name": user or null, "roles": [...]}`. The default is CouchDB's
    /// administrator in "admin party" (no users): `{"db": db, "name": null, "roles": ["_admin"]}`.
    fn user_ctx(&self, request: &Parts, db: &str) -> Value {
        let _ = request;
        serde_json::json!({"db": db, "name": null, "roles": ["_admin"]})
    }
}

/// Allows everything: for standalone use on a trusted network or loopback.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorize for AllowAll {
    fn authorize(&self, _: &Parts, _: &Operation<'_>) -> Decision {
        Decision::Allow
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_document_bytes", &self.max_document_bytes)
            .field("max_attachment_bytes", &self.max_attachment_bytes)
            .field("max_rows", &self.max_rows)
            .field("uuid", &self.uuid)
            .finish_non_exhaustive()
    }
}

impl App {
    /// A factory of futures that complete when the server shuts down (never, without a
    /// shutdown signal configured).
    pub(crate) fn shutdown(
        &self,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + 'static
    {
        let rx = self.config.shutdown.clone();
        move || {
            let mut rx = rx.clone();
            Box::pin(async move {
                match &mut rx {
                    Some(rx) => {
                        let _ = rx.wait_for(|closing| *closing).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            })
        }
    }
}

pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) config: ServerConfig,
    pub(crate) auth: Arc<dyn Authorize>,
    #[cfg(feature = "client")]
    pub(crate) replications: Arc<replicate::Registry>,
}

/// The CouchDB API over `store`, checking every request with `auth`.
pub fn router(store: Store, config: ServerConfig, auth: Arc<dyn Authorize>) -> Router {
    let app = Arc::new(App {
        store,
        config,
        auth,
        #[cfg(feature = "client")]
        replications: Arc::new(replicate::Registry::default()),
    });
    Router::new().fallback(dispatch).with_state(app)
}

/// A CouchDB-style JSON response.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    response
}

pub(crate) fn error_response(err: &Error) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
    }
    json_response(
        status,
        &json!({"error": err.error(), "reason": err.reason()}),
    )
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::couch(500, "internal_server_error", format!("worker failed: {e}")))?
}

/// Query parameters, decoded.
#[derive(Debug, Default)]
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| Error::query_parse(format!("Invalid query string: {e}")))?;
        Ok(Query(pairs.into_iter().collect()))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(crate) fn flag(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(Error::query_parse(format!(
                "Invalid boolean parameter: {key}={}",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }

    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim_matches('"').parse().map(Some).map_err(|_| {
                Error::query_parse(format!(
                    "Invalid value for {key}: expected a non-negative integer, got {:?}",
                    v.chars().take(40).collect::<String>()
                ))
            }),
        }
    }

    /// A JSON-valued parameter (`startkey`, `open_revs`, ...).
    pub(crate) fn json(&self, key: &str) -> Result<Option<Value>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_str(v).map(Some).map_err(|_| {
                Error::bad_request(format!(
                    "Invalid JSON for query parameter {key}: {:?}",
                    v.chars().take(80).collect::<String>()
                ))
            }),
        }
    }
}

/// What the dispatcher hands each handler.
pub(crate) struct Ctx {
    pub(crate) app: Arc<App>,
    pub(crate) parts: Parts,
    pub(crate) query: Query,
    pub(crate) filter: Option<Arc<dyn DocFilter>>,
}

impl Ctx {
    /// Applies the hook; on `Allow`/`AllowFiltered` records the filter for the handler.
    pub(crate) fn check(&mut self, op: Operation<'_>) -> Result<()> {
        match self.app.auth.authorize(&self.parts, &op) {
            Decision::Allow => Ok(()),
            Decision::AllowFiltered(f) => {
                self.filter = Some(f);
                Ok(())
            }
            Decision::Unauthorized(reason) => Err(Error::unauthorized(reason)),
            Decision::Forbidden(reason) => Err(Error::forbidden(reason)),
            Decision::InsufficientStorage(reason) => {
                Err(Error::couch(507, "insufficient_storage", reason))
            }
        }
    }

    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    pub(crate) fn method(&self) -> &Method {
        &self.parts.method
    }

    pub(crate) async fn db(&self, name: &str) -> Result<Database> {
        if let Some(db) = self.app.store.db_if_open(name) {
            return Ok(db);
        }
        let store = self.app.store.clone();
        let name = name.to_owned();
        blocking(move || store.db(&name)).await
    }

    /// A JSON object body: `chttpd:validate_ctype(Req, "application/json")` (415 otherwise),
    /// then `chttpd:json_body_obj/1` (400 for anything but an object).
    pub(crate) async fn json_object(&self, body: Body) -> Result<Map<String, Value>> {
        let ctype = self
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ctype.split(';').next().map(str::trim) != Some("application/json") {
            return Err(Error::couch(
                415,
                "bad_content_type",
                "Content-Type must be application/json",
            ));
        }
        let bytes = self.body_bytes(body).await?;
        match crate::json::parse_value(&bytes)? {
            Value::Object(m) => Ok(m),
            _ => Err(Error::bad_request("Request body must be a JSON object")),
        }
    }

    /// Reads a whole (JSON) body, bounded by `max_body_bytes`.
    pub(crate) async fn body_bytes(&self, body: Body) -> Result<bytes::Bytes> {
        axum::body::to_bytes(body, self.app.config.max_body_bytes)
            .await
            .map_err(|_| Error::too_large("The request entity"))
    }
}

fn decode_segment(raw: &str) -> Result<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::bad_request("URL path is not valid UTF-8"))
}

async fn dispatch(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let head = parts.method == Method::HEAD;
    let response = match route(app, parts, body).await {
        Ok(response) => response,
        Err(err) => error_response(&err),
    };
    if head {
        let (mut p, _) = response.into_parts();
        p.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(p, Body::empty());
    }
    response
}

fn method_not_allowed(allowed: &'static str) -> Error {
    Error::couch(405, "method_not_allowed", format!("Only {allowed} allowed"))
}

async fn route(app: Arc<App>, parts: Parts, body: Body) -> Result<Response> {
    let path = parts.uri.path().to_owned();
    let query = Query::parse(parts.uri.query())?;
    let mut segments: Vec<String> = path
        .split('/')
        .skip(1)
        .map(decode_segment)
        .collect::<Result<_>>()?;
    if segments.last().is_some_and(String::is_empty) {
        segments.pop();
    }
    let mut ctx = Ctx {
        app,
        parts,
        query,
        filter: None,
    };
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = ctx.method().clone();
    match seg.as_slice() {
        [] => {
            ctx.check(Operation::Server)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "couchdb": "Welcome",
                    "version": "3.4.3",
                    "git_sha": "",
                    "uuid": ctx.app.config.uuid.as_deref().unwrap_or(ctx.app.store.uuid()),
                    "features": ["access-ready", "partitioned"],
                    "vendor": {"name": "couch-sync", "version": env!("CARGO_PKG_VERSION")}
                }),
            ))
        }
        ["_up"] => {
            ctx.check(Operation::Server)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"status": "ok", "seeds": {}}),
            ))
        }
        ["_uuids"] => {
            ctx.check(Operation::Server)?;
            let count = ctx.query.u64("count")?.unwrap_or(1);
            if count > 1000 {
                return Err(Error::bad_request("count parameter too large"));
            }
            let uuids: Vec<String> = (0..count)
                .map(|_| {
                    let mut b = [0u8; 16];
                    let _ = getrandom::fill(&mut b);
                    data_encoding::HEXLOWER.encode(&b)
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!({"uuids": uuids})))
        }
        #[cfg(feature = "client")]
        ["_replicate"] => replicate::replicate(ctx, &method, body).await,
        #[cfg(feature = "client")]
        ["_active_tasks"] => replicate::active_tasks(ctx, &method).await,
        ["_session"] => {
            ctx.check(Operation::Server)?;
            session(&ctx, &method, body).await
        }
        ["_all_dbs"] => {
            if method != Method::GET && method != Method::HEAD {
                return Err(method_not_allowed("GET,HEAD"));
            }
            ctx.check(Operation::ListDbs)?;
            let store = ctx.app.store.clone();
            let names = blocking(move || store.all_dbs()).await?;
            let visible: Vec<String> = names
                .into_iter()
                .filter(|db| {
                    !matches!(
                        ctx.app
                            .auth
                            .authorize(&ctx.parts, &Operation::ReadDb { db }),
                        Decision::Unauthorized(_)
                            | Decision::Forbidden(_)
                            | Decision::InsufficientStorage(_)
                    )
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!(visible)))
        }
        [name, ..] if name.starts_with('_') && crate::store::check_db_name(name).is_err() => {
            Err(Error::not_found("missing"))
        }
        [db] => database(ctx, &method, db, body).await,
        [db, rest @ ..] => docs::route(ctx, &method, db, rest, body).await,
    }
}

async fn session(ctx: &Ctx, method: &Method, body: Body) -> Result<Response> {
    match *method {
        Method::GET | Method::HEAD => Ok(json_response(
            StatusCode::OK,
            &json!({"ok": true, "userCtx": {"name": null, "roles": []},
                    "info": {"authentication_handlers": ["tls"]}}),
        )),
        Method::POST => {
            // Identity comes from the TLS layer; a password login is acknowledged for clients
            // (CouchDB's replicator) that insist on one, and grants nothing by itself.
            let bytes = ctx.body_bytes(body).await?;
            let name = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                .ok()
                .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "name").map(|(_, v)| v))
                .or_else(|| {
                    serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
                });
            Ok(json_response(
                StatusCode::OK,
                &json!({"ok": true, "name": name, "roles": []}),
            ))
        }
        Method::DELETE => Ok(json_response(StatusCode::OK, &json!({"ok": true}))),
        _ => Err(method_not_allowed("GET,HEAD,POST,DELETE")),
    }
}

pub(crate) fn db_info_json(db: &Database, info: &crate::store::DbInfo) -> Value {
    json!({
        "db_name": info.db_name,
        "purge_seq": "0",
        "update_seq": db.seq_string(info.update_seq),
        "sizes": {"file": info.file_size, "external": info.external_size, "active": info.active_size},
        "props": {},
        "doc_del_count": info.doc_del_count,
        "doc_count": info.doc_count,
        "disk_format_version": 8,
        "compact_running": false,
        "cluster": {"q": 1, "n": 1, "w": 1, "r": 1},
        "instance_start_time": "0"
    })
}

async fn database(mut ctx: Ctx, method: &Method, name: &str, body: Body) -> Result<Response> {
    match *method {
        Method::GET | Method::HEAD => {
            ctx.check(Operation::ReadDb { db: name })?;
            let db = ctx.db(name).await?;
            let d = db.clone();
            let info = blocking(move || d.info()).await?;
            Ok(json_response(StatusCode::OK, &db_info_json(&db, &info)))
        }
        Method::PUT => {
            crate::store::check_db_name(name)?;
            ctx.check(Operation::CreateDb { db: name })?;
            let store = ctx.app.store.clone();
            let n = name.to_owned();
            blocking(move || store.create_db(&n).map(|_| ())).await?;
            let mut response = json_response(StatusCode::CREATED, &json!({"ok": true}));
            if let Ok(location) = HeaderValue::from_str(&format!("/{name}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
        Method::DELETE => {
            ctx.check(Operation::DeleteDb { db: name })?;
            if ctx.query.get("rev").is_some() {
                return Err(Error::bad_request(
                    "You tried to DELETE a database with a ?rev= parameter. Did you mean to DELETE a document instead?",
                ));
            }
            let store = ctx.app.store.clone();
            let n = name.to_owned();
            blocking(move || store.delete_db(&n)).await?;
            Ok(json_response(StatusCode::OK, &json!({"ok": true})))
        }
        Method::POST => docs::post_doc(ctx, name, body).await,
        _ => Err(method_not_allowed("DELETE,GET,HEAD,POST,PUT")),
    }
}

/// Builds a response with a body and content type.
pub(crate) fn bytes_response(status: StatusCode, content_type: &str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}
