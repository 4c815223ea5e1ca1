//! The hub's own endpoints, under `/_hub/` on the same HTTPS listener as the CouchDB API:
//!
//! | path | who | what |
//! |---|---|---|
//! | `GET /_hub/card` | anyone | this hub's signed identity card (the directory entry) |
//! | `POST /_hub/pair/commit`, `/_hub/pair/reveal` | a peer hub (its TLS key) | the pairing exchange |
//! | `GET /_hub/login?token=…` | anyone with a fresh token | starts an owner browser session (cookie) |
//! | `GET /_hub/` | owner or admin | the status page |
//! | `POST /_hub/api/ui-token` | owner or admin | a one-time login URL (10 minutes) |
//! | `GET /_hub/api/status` | owner or admin | identity, peers, replication, databases, pairings (JSON) |
//! | `POST /_hub/api/pair/start` `{url, kind}` | owner or admin | pairs with a hub; answers the code |
//! | `POST /_hub/api/pair/confirm` `{code}` | owner or admin | confirms a pairing showing that code |
//! | `POST /_hub/api/grant`, `/_hub/api/revoke` `{db, member, right}` (`view: "DDOC/VIEW"` for a view's read grant) | owner or admin | changes the ACL |
//! | `POST /_hub/api/revoke-key` `{key}` | owner or admin | revokes a key for good (a lost device): 400 for a malformed key id or this hub's own, 404 for a key the hub does not know |
//! | `POST /_hub/api/replicate` `{peer, db?}` | owner or admin | one-shot sync; progress as JSON lines |
//! | `POST /_hub/api/compact/{db}` | owner or admin | compacts a database |
//!
//! Errors are CouchDB-style `{"error", "reason"}`.

use std::sync::Arc;

use acls_and_groups::{AclScope, Action, Member, Principal, Resource, Right, ViewName};
use anyhow::anyhow;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use public_key_identity::{HttpKeyUrl, KeyId, Peer};
use serde_json::{Value, json};

use crate::authz::{SESSION_COOKIE, principal};
use crate::hub::{Hub, POLICY_DB, now_millis, random_token};
use crate::pairing;
use crate::replication::{Direction, friend_db_name, remote};

const TOKEN_TTL_MS: u64 = 10 * 60 * 1000;
const SESSION_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// A CouchDB-style error response.
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": self.1, "reason": self.2}).to_string(),
        )
            .into_response()
    }
}

impl From<couch_sync::Error> for ApiError {
    fn from(e: couch_sync::Error) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error: &'static str = match status.as_u16() {
            404 => "not_found",
            409 => "conflict",
            400 => "bad_request",
            _ => "error",
        };
        ApiError(status, error, e.reason().into_owned())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, "bad_request", format!("{e:#}"))
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn json_ok(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// Whether the caller may use the owner API: the owner, or a principal with admin on every
/// database.
pub fn is_admin(hub: &Hub, who: Principal) -> bool {
    let policy = hub.policy();
    policy.is_owner(&who)
        || policy
            .may(who, Action::Admin, Resource::Database(POLICY_DB))
            .allowed
}

fn admin(hub: &Hub, parts: &Parts) -> ApiResult<()> {
    let who = principal(hub, parts);
    if is_admin(hub, who) {
        return Ok(());
    }
    Err(match who {
        Principal::Anonymous => ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the hub's owner only: log in with `device-hub ui` or an admin certificate".into(),
        ),
        _ => ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the hub's owner only".into(),
        ),
    })
}

fn peer_key(hub: &Hub, parts: &Parts) -> ApiResult<KeyId> {
    match parts.extensions.get::<Peer>() {
        Some(Peer::Key(k)) if hub.is_revoked(k) => Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("key:{k} was revoked: this hub serves it nothing"),
        )),
        Some(Peer::Key(k)) => Ok(*k),
        _ => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "pairing needs a client certificate".into(),
        )),
    }
}

async fn body_json(body: Body) -> ApiResult<Value> {
    let bytes = axum::body::to_bytes(body, 1024 * 1024).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request entity is too large".into(),
        )
    })?;
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON: {e}"),
        )
    })
}

fn text<'a>(body: &'a Value, key: &str) -> ApiResult<&'a str> {
    body.get(key).and_then(Value::as_str).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`{key}` is required"),
        )
    })
}

/// The hub's routes; CouchDB's API is the fallback.
pub fn router(hub: Arc<Hub>) -> Router<()> {
    Router::new()
        .route("/_hub/card", get(card))
        .route("/_hub/pair/commit", post(pair_commit))
        .route("/_hub/pair/reveal", post(pair_reveal))
        .route("/_hub/login", get(login))
        .route("/_hub/logout", post(logout))
        .route("/_hub", get(crate::ui::page))
        .route("/_hub/", get(crate::ui::page))
        .route("/_hub/api/ui-token", post(ui_token))
        .route("/_hub/api/status", get(status))
        .route("/_hub/api/pair/start", post(pair_start))
        .route("/_hub/api/pair/confirm", post(pair_confirm))
        .route("/_hub/api/grant", post(grant))
        .route("/_hub/api/revoke", post(revoke))
        .route("/_hub/api/revoke-key", post(revoke_key))
        .route("/_hub/api/replicate", post(replicate))
        .route("/_hub/api/compact/{db}", post(compact))
        .with_state(hub)
}

async fn card(State(hub): State<Arc<Hub>>) -> ApiResult<Response> {
    let card = hub.card()?;
    Ok(json_ok(
        serde_json::from_str(&card.to_json()).unwrap_or(Value::Null),
    ))
}

async fn pair_commit(State(hub): State<Arc<Hub>>, parts: Parts, body: Body) -> ApiResult<Response> {
    let peer = peer_key(&hub, &parts)?;
    let body = body_json(body).await?;
    Ok(json_ok(pairing::on_commit(&hub, peer, &body)?))
}

async fn pair_reveal(State(hub): State<Arc<Hub>>, parts: Parts, body: Body) -> ApiResult<Response> {
    let peer = peer_key(&hub, &parts)?;
    let body = body_json(body).await?;
    Ok(json_ok(pairing::on_reveal(&hub, peer, &body)?))
}

async fn ui_token(State(hub): State<Arc<Hub>>, parts: Parts) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    let token = random_token();
    if let Ok(mut tokens) = hub.ui_tokens.lock() {
        let now = now_millis();
        tokens.retain(|_, exp| *exp > now);
        tokens.insert(token.clone(), now + TOKEN_TTL_MS);
    }
    let url = format!("https://{}/_hub/login?token={token}", hub.config.listen);
    Ok(json_ok(
        json!({"url": url, "expires_in_seconds": TOKEN_TTL_MS / 1000}),
    ))
}

async fn login(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let token = q.get("token").cloned().unwrap_or_default();
    let now = now_millis();
    let valid = hub
        .ui_tokens
        .lock()
        .map(|mut t| {
            t.retain(|_, exp| *exp > now);
            t.remove(&token).is_some()
        })
        .unwrap_or(false);
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><title>Login expired</title><p>This login link is invalid, used or expired. Run <code>device-hub ui</code> for a new one.</p>",
        )
            .into_response();
    }
    let session = random_token();
    if let Ok(mut s) = hub.sessions.lock() {
        s.insert(session.clone(), now + SESSION_TTL_MS);
    }
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL_MS / 1000
    );
    let mut response = (StatusCode::SEE_OTHER, "").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/_hub/"));
    response
}

async fn logout(State(hub): State<Arc<Hub>>, parts: Parts) -> Response {
    if let Some(s) = crate::authz::cookie(&parts, SESSION_COOKIE) {
        if let Ok(mut sessions) = hub.sessions.lock() {
            sessions.remove(s);
        }
    }
    let mut response = (StatusCode::SEE_OTHER, "").into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/_hub/"));
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "hub_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

/// Everything the status page shows.
pub fn status_json(hub: &Hub) -> anyhow::Result<Value> {
    let card = hub.card()?;
    let policy = hub.policy();
    let mut peers = Vec::new();
    for (group, kind) in [("me", "me"), ("friends", "friend")] {
        if let Some(g) = policy.group(group) {
            for m in &g.members {
                if let Member::Key(k) = m {
                    if *k == hub.key_id() || hub.is_revoked(k) {
                        continue;
                    }
                    let card = hub.card_of(k);
                    peers.push(json!({
                        "key_id": k.to_string(),
                        "kind": kind,
                        "name": card.as_ref().map(|c| c.name().to_owned()),
                        "endpoints": card.map(|c| c.endpoints().iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
                    }));
                }
            }
        }
    }
    let mut dbs = Vec::new();
    for name in hub.store.all_dbs()? {
        let info = hub.store.db(&name)?.info()?;
        dbs.push(json!({
            "name": name,
            "doc_count": info.doc_count,
            "active_size": info.active_size,
            "file_size": info.file_size,
            "quota": hub.config.quotas.get(&name),
            "local_only": hub.config.local_only.contains(&name),
        }));
    }
    let name_of = |key: &KeyId| -> Option<String> {
        if *key == hub.key_id() {
            Some(hub.config.name.clone())
        } else {
            hub.card_of(key).map(|c| c.name().to_owned())
        }
    };
    let revoked: Vec<Value> = policy
        .revocations()
        .filter(|r| r.key != hub.key_id())
        .map(|r| crate::revocation::status_entry(r, name_of))
        .collect();
    let revoked_self = policy
        .revocation(&hub.key_id())
        .map(|r| crate::revocation::status_entry(r, name_of));
    Ok(json!({
        "identity": {
            "key_id": hub.key_id().to_string(),
            "name": hub.config.name,
            "endpoints": card.endpoints().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "browser_key_id": hub.browser.key_id().to_string(),
            "card": card.to_json(),
            "revoked": revoked_self,
        },
        "peers": peers,
        "revoked": revoked,
        "replication": hub.replication.rows(hub),
        "databases": dbs,
        "pairings": hub.pairing.pending(),
    }))
}

async fn status(State(hub): State<Arc<Hub>>, parts: Parts) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    Ok(json_ok(status_json(&hub)?))
}

async fn pair_start(State(hub): State<Arc<Hub>>, parts: Parts, body: Body) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    let body = body_json(body).await?;
    let url: HttpKeyUrl = text(&body, "url")?
        .parse()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "bad_request", format!("{e}")))?;
    let kind = pairing::kind_of(&body)?;
    let (card, code) = pairing::start(&hub, &url, kind)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, "pairing_failed", format!("{e:#}")))?;
    Ok(json_ok(
        json!({"code": code.to_string(), "peer": card.key_id().to_string(), "name": card.name(), "kind": kind.as_str()}),
    ))
}

async fn pair_confirm(
    State(hub): State<Arc<Hub>>,
    parts: Parts,
    body: Body,
) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    let body = body_json(body).await?;
    let (card, kind) = pairing::confirm(&hub, text(&body, "code")?)
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, "not_found", format!("{e:#}")))?;
    Ok(json_ok(
        json!({"ok": true, "peer": card.key_id().to_string(), "name": card.name(), "kind": kind.as_str()}),
    ))
}

/// Parses `key:ID`, `group:NAME`, `anonymous`, a bare key id, or a bare group name.
pub fn parse_member(text: &str) -> anyhow::Result<Member> {
    if let Ok(m) = text.parse::<Member>() {
        return Ok(m);
    }
    if let Ok(k) = text.parse::<KeyId>() {
        return Ok(Member::Key(k));
    }
    Ok(Member::group(text)?)
}

fn acl_change(hub: &Hub, body: &Value, grant: bool) -> ApiResult<Value> {
    let db = text(body, "db")?;
    let member = parse_member(text(body, "member")?)?;
    let right = match text(body, "right")? {
        "read" => Right::Read,
        "write" => Right::Write,
        "admin" => Right::Admin,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("right must be read, write or admin, not {other:?}"),
            ));
        }
    };
    let bad = |e: &dyn std::fmt::Display| {
        ApiError(StatusCode::BAD_REQUEST, "bad_request", format!("{e}"))
    };
    let scope: AclScope = db.parse().map_err(|e| bad(&e))?;
    let mut changed = false;
    if let Some(view) = body.get("view").filter(|v| !v.is_null()) {
        // A view's own read grant: `DDOC/VIEW` (a Mango index is `DDOC/INDEX`).
        let view = view.as_str().ok_or_else(|| bad(&"view must be a string"))?;
        if right != Right::Read {
            return Err(bad(&"a view grants only read"));
        }
        let (ddoc, name) = view
            .split_once('/')
            .filter(|(d, v)| !d.is_empty() && !v.is_empty() && !v.contains('/'))
            .ok_or_else(|| bad(&format!("a view is named DDOC/VIEW, not {view:?}")))?;
        let AclScope::Database(db) = scope else {
            return Err(bad(&"a view belongs to one database, not to *"));
        };
        let view = ViewName::new(&format!("{ddoc}/{name}")).map_err(|e| bad(&e))?;
        hub.update_policy(|policy| {
            changed = if grant {
                policy.grant_view(&db, &view, member.clone())?
            } else {
                policy.revoke_view(&db, view.as_str(), &member)
            };
            Ok(())
        })?;
        return Ok(json!({"ok": true, "changed": changed}));
    }
    hub.update_policy(|policy| {
        changed = if grant {
            policy.grant(&scope, right, member.clone())?
        } else {
            policy.revoke(&scope, right, &member)
        };
        Ok(())
    })?;
    Ok(json!({"ok": true, "changed": changed}))
}

async fn grant(State(hub): State<Arc<Hub>>, parts: Parts, body: Body) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    let body = body_json(body).await?;
    Ok(json_ok(acl_change(&hub, &body, true)?))
}

async fn revoke(State(hub): State<Arc<Hub>>, parts: Parts, body: Body) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    let body = body_json(body).await?;
    Ok(json_ok(acl_change(&hub, &body, false)?))
}

/// `POST /_hub/api/revoke-key` `{"key": KEYID}` (or `key:KEYID`): revokes the key for good in
/// the replicated policy. Answers `{ok, changed, key, by, at}`.
async fn revoke_key(State(hub): State<Arc<Hub>>, parts: Parts, body: Body) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    let body = body_json(body).await?;
    let text = text(&body, "key")?;
    let key: KeyId = text
        .strip_prefix("key:")
        .unwrap_or(text)
        .parse()
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{text:?} is not a key id (52 base32 characters, or key:ID): {e}"),
            )
        })?;
    if key == hub.key_id() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "{key} is this hub's own key: a device cannot revoke itself (revoke it from another of your devices)"
            ),
        ));
    }
    if !crate::revocation::named_in(&hub.policy(), &key) && hub.card_of(&key).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "{key} is not known to this hub: no paired device, friend, app or grant has that key (`device-hub status` lists the peers)"
            ),
        ));
    }
    let (changed, revocation) = hub.revoke_key(key)?;
    Ok(json_ok(json!({
        "ok": true,
        "changed": changed,
        "key": revocation.key.to_string(),
        "by": revocation.by.to_string(),
        "at": revocation.at,
    })))
}

async fn compact(
    State(hub): State<Arc<Hub>>,
    parts: Parts,
    Path(db): Path<String>,
) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    let store = hub.store.clone();
    let name = db.clone();
    tokio::task::spawn_blocking(move || store.db(&name).and_then(|d| d.compact()))
        .await
        .map_err(|e| anyhow!("{e}"))?
        .map_err(|e| {
            ApiError(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "compaction_failed",
                e.to_string(),
            )
        })?;
    Ok(json_ok(json!({"ok": true, "db": db})))
}

/// One-shot sync with a peer (both ways with my devices, pull from friends), streaming progress
/// as JSON lines: one per checkpoint, then `{"done": true, "ok": …}`.
async fn replicate(State(hub): State<Arc<Hub>>, parts: Parts, body: Body) -> ApiResult<Response> {
    admin(&hub, &parts)?;
    let body = body_json(body).await?;
    let peer_text = text(&body, "peer")?;
    let peer: KeyId = match peer_text.parse() {
        Ok(k) => k,
        Err(_) => {
            let url: HttpKeyUrl = peer_text.parse().map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("peer must be a key id or httpkey URL: {e}"),
                )
            })?;
            url.key_id()
        }
    };
    if hub.is_revoked(&peer) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{peer} was revoked: this hub no longer replicates with it"),
        ));
    }
    let card = hub.card_of(&peer).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{peer} is not paired (no card in the directory)"),
        )
    })?;
    let url = card.endpoints().first().cloned().ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the peer's card has no endpoint".into(),
        )
    })?;
    let policy = hub.policy();
    let is_me = policy
        .group("me")
        .is_some_and(|g| g.members.contains(&Member::Key(peer)));
    let mut jobs: Vec<(String, String, Direction)> = Vec::new();
    if is_me {
        let dbs = match body.get("db").and_then(Value::as_str) {
            Some(db) => vec![db.to_owned()],
            None => hub
                .store
                .all_dbs()?
                .into_iter()
                .filter(|d| !hub.config.local_only.contains(d) && !d.starts_with("from-"))
                .collect(),
        };
        for db in dbs {
            jobs.push((db.clone(), db.clone(), Direction::Push));
            jobs.push((db.clone(), db, Direction::Pull));
        }
    } else {
        let dbs = match body.get("db").and_then(Value::as_str) {
            Some(db) => vec![db.to_owned()],
            None => {
                let client = crate::client::HubClient::new(&url, &hub.device)?;
                let (_, list) = client.call("GET", "/_all_dbs", None).await?;
                list.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            }
        };
        for db in dbs {
            jobs.push((friend_db_name(&peer, &db), db, Direction::Pull));
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut errors = Vec::new();
        for (local, remote_db, direction) in jobs {
            let line = |v: Value| Ok(Bytes::from(format!("{v}\n")));
            let run = async {
                if direction == Direction::Pull && !hub.store.exists(&local) {
                    hub.store.create_db(&local)?;
                }
                let local_ep = couch_sync::replicate::Endpoint::Local(hub.store.db(&local)?);
                let peer_ep = remote(&hub, &url, &remote_db)?;
                let (source, target) = match direction {
                    Direction::Push => (local_ep, peer_ep),
                    Direction::Pull => (peer_ep, local_ep),
                };
                let options = couch_sync::replicate::ReplicationOptions {
                    create_target: direction == Direction::Push,
                    ..Default::default()
                };
                let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
                let rep = couch_sync::replicate::Replication::new(source, target, options)
                    .with_events(events_tx);
                let forward = async {
                    while let Some(event) = events.recv().await {
                        if let couch_sync::replicate::Event::Checkpoint(p) = event {
                            let _ = tx.send(line(json!({"db": local, "direction": direction, "docs_written": p.docs_written, "pending": p.pending}))).await;
                        }
                    }
                };
                // The events end when the replication (which holds their sender) is dropped.
                let replication = async move {
                    let result = rep.run().await;
                    drop(rep);
                    result
                };
                let (result, ()) = tokio::join!(replication, forward);
                anyhow::Ok(result?)
            };
            match run.await {
                Ok(r) => {
                    let _ = tx.send(line(json!({"db": local, "direction": direction, "docs_written": r.progress.docs_written, "pending": 0, "finished": true}))).await;
                }
                Err(e) => {
                    errors.push(format!("{local} {direction:?}: {e:#}"));
                    let _ = tx
                        .send(line(
                            json!({"db": local, "direction": direction, "error": format!("{e:#}")}),
                        ))
                        .await;
                }
            }
        }
        let _ = tx
            .send(Ok(Bytes::from(format!(
                "{}\n",
                json!({"done": true, "ok": errors.is_empty(), "errors": errors})
            ))))
            .await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
