//! Database-level endpoints below `/db/`: documents, attachments, `_all_docs`, `_bulk_docs`,
//! `_bulk_get`, `_revs_diff`, `_local`, and maintenance.

use std::collections::{BTreeMap, HashSet};

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Ctx, Operation, blocking, json_response, method_not_allowed};
use crate::doc::{DocUpdate, IdKind, ParseOptions, check_id};
use crate::error::{Error, Result};
use crate::read::{AllDocsQuery, AllDocsRow, AttachmentMode, GetOptions, OpenRev, OpenRevs};
use crate::rev::RevId;
use crate::store::Database;

pub(super) async fn route(
    ctx: Ctx,
    method: &Method,
    db: &str,
    rest: &[&str],
    body: Body,
) -> Result<Response> {
    match rest {
        ["_all_docs"] => all_docs(ctx, method, db, body).await,
        ["_find" | "_explain" | "_index", ..] => {
            super::find::route(ctx, method, db, rest, body).await
        }
        ["_changes"] => super::changes::handle(ctx, method, db, body).await,
        ["_bulk_docs"] => bulk_docs(ctx, method, db, body).await,
        ["_bulk_get"] => bulk_get(ctx, method, db, body).await,
        ["_revs_diff"] => revs_diff(ctx, method, db, body).await,
        ["_ensure_full_commit"] => ensure_full_commit(ctx, method, db).await,
        ["_compact", ..] => compact(ctx, method, db).await,
        #[cfg(feature = "js")]
        ["_view_cleanup"] => super::view::cleanup(ctx, method, db, body).await,
        ["_revs_limit"] => revs_limit(ctx, method, db, body).await,
        ["_local"] => Err(Error::bad_request("Invalid _local document id.")),
        ["_local", id] => document(ctx, method, db, &format!("_local/{id}"), body).await,
        ["_local", ..] => Err(Error::bad_request(
            "_local documents do not accept attachments.",
        )),
        ["_design", name] => document(ctx, method, db, &format!("_design/{name}"), body).await,
        ["_design", name, action, rest @ ..] if action.starts_with('_') => {
            design_handler(ctx, method, db, name, action, rest, body).await
        }
        ["_design", name, att @ ..] => {
            attachment(
                ctx,
                method,
                db,
                &format!("_design/{name}"),
                &att.join("/"),
                body,
            )
            .await
        }
        [id] => document(ctx, method, db, id, body).await,
        [id, att @ ..] => attachment(ctx, method, db, id, &att.join("/"), body).await,
        [] => Err(Error::not_found("missing")),
    }
}

/// `/db/_design/D/_action/...`: the design document's handlers. With the `js` feature `_view`
/// and `_info` are served by [`super::view`]. Those that run JavaScript otherwise
/// (`_view`, `_show`, `_list`, `_update`, `_rewrite`) answer as Apache CouchDB does when it has
/// no query server for the document's language, after CouchDB's checks that the document (and
/// a named view) exist; any other `_action` is an attachment request, as in CouchDB.
async fn design_handler(
    mut ctx: Ctx,
    method: &Method,
    db_name: &str,
    name: &str,
    action: &str,
    rest: &[&str],
    body: Body,
) -> Result<Response> {
    #[cfg(feature = "js")]
    match action {
        "_view" => return super::view::view(ctx, method, db_name, name, rest, body).await,
        "_info" if rest.is_empty() => return super::view::info(ctx, method, db_name, name).await,
        _ => {}
    }
    let id = format!("_design/{name}");
    if !matches!(action, "_view" | "_show" | "_list" | "_update" | "_rewrite") {
        let att = std::iter::once(action)
            .chain(rest.iter().copied())
            .collect::<Vec<_>>()
            .join("/");
        return attachment(ctx, method, db_name, &id, &att, body).await;
    }
    ctx.check(Operation::ReadDb { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let d = db.clone();
    let doc = blocking(move || d.get(&id, &GetOptions::default())).await?;
    if action == "_view" {
        let views = doc.json.get("views").and_then(Value::as_object);
        let found = match rest.first() {
            Some(view) => views.is_some_and(|v| v.contains_key(*view)),
            None => false,
        };
        if !found {
            return Err(Error::not_found("missing_named_view"));
        }
    }
    Err(super::changes::unknown_language(&doc.json))
}

fn parse_opts(ctx: &Ctx) -> ParseOptions<'_> {
    ParseOptions {
        compress: ctx.app.store.config().compress_attachments,
        tmp_dir: ctx.app.store.tmp_dir(),
    }
}

/// Who writes, for `validate_doc_update`: the hook's user context.
fn write_context(ctx: &Ctx, db: &str) -> crate::WriteContext {
    crate::WriteContext::new(ctx.app.auth.user_ctx(&ctx.parts, db))
}

fn check_write(ctx: &mut Ctx, db: &str, id: &str) -> Result<()> {
    let op = match check_id(id)? {
        IdKind::Design => Operation::WriteDesign { db },
        IdKind::Local => Operation::WriteLocal { db },
        IdKind::Normal => Operation::WriteDb { db },
    };
    ctx.check(op)
}

/// Hides a document the caller's filter refuses (404, as if it did not exist).
async fn check_visible(ctx: &Ctx, db: &Database, id: &str) -> Result<()> {
    let Some(filter) = ctx.filter.clone() else {
        return Ok(());
    };
    let d = db.clone();
    let key = id.to_owned();
    let winner = blocking(move || d.winner_json(&key)).await?;
    match winner {
        Some(doc) if filter.allows(id, &doc) => Ok(()),
        _ => Err(Error::not_found("missing")),
    }
}

fn rev_param(ctx: &Ctx) -> Result<Option<RevId>> {
    if let Some(rev) = ctx.query.get("rev") {
        return rev.parse().map(Some);
    }
    if let Some(v) = ctx.headers().get(header::IF_MATCH) {
        let text = v.to_str().map_err(|_| Error::bad_rev("If-Match"))?;
        return text.trim_matches('"').parse().map(Some);
    }
    Ok(None)
}

fn etag(rev: &RevId) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{rev}\"")).ok()
}

fn ok_rev(status: StatusCode, id: &str, rev: &RevId) -> Response {
    let mut response = json_response(
        status,
        &json!({"ok": true, "id": id, "rev": rev.to_string()}),
    );
    if let Some(tag) = etag(rev) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

pub(crate) fn get_options(ctx: &Ctx) -> Result<GetOptions> {
    let q = &ctx.query;
    let meta = q.flag("meta")?;
    let mut opts = GetOptions {
        rev: match q.get("rev") {
            Some(r) => Some(r.parse()?),
            None => None,
        },
        revs: q.flag("revs")?,
        revs_info: q.flag("revs_info")? || meta,
        conflicts: q.flag("conflicts")? || meta,
        deleted_conflicts: q.flag("deleted_conflicts")? || meta,
        local_seq: q.flag("local_seq")?,
        latest: q.flag("latest")?,
        attachments: if q.flag("attachments")? {
            AttachmentMode::Inline
        } else {
            AttachmentMode::Stubs
        },
        atts_since: Vec::new(),
        att_encoding_info: q.flag("att_encoding_info")?,
    };
    if let Some(since) = q.json("atts_since")? {
        opts.atts_since = rev_list(&since)?;
        if opts.attachments == AttachmentMode::Stubs {
            opts.attachments = AttachmentMode::Inline;
        }
    }
    Ok(opts)
}

fn rev_list(value: &Value) -> Result<Vec<RevId>> {
    let Value::Array(items) = value else {
        return Err(Error::bad_request("expected a JSON array of revisions"));
    };
    items
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| Error::bad_rev(v.to_string()))?
                .parse()
        })
        .collect()
}

fn wants_multipart(ctx: &Ctx, kind: &str) -> bool {
    ctx.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(kind))
}

async fn document(
    mut ctx: Ctx,
    method: &Method,
    db_name: &str,
    id: &str,
    body: Body,
) -> Result<Response> {
    let kind = match check_id(id) {
        Ok(kind) => kind,
        // Reading an id that cannot exist finds nothing (CouchDB checks ids on writes).
        Err(_) if matches!(*method, Method::GET | Method::HEAD) => {
            return Err(Error::not_found("missing"));
        }
        Err(e) => return Err(e),
    };
    match *method {
        Method::GET | Method::HEAD => {
            ctx.check(Operation::ReadDb { db: db_name })?;
            let db = ctx.db(db_name).await?;
            if kind == IdKind::Local {
                let d = db.clone();
                let key = id.to_owned();
                let doc = blocking(move || d.get_local(&key)).await?;
                return Ok(json_response(StatusCode::OK, &Value::Object(doc)));
            }
            check_visible(&ctx, &db, id).await?;
            let mut opts = get_options(&ctx)?;
            if let Some(open_revs) = ctx.query.get("open_revs") {
                let revs = if open_revs == "all" {
                    OpenRevs::All
                } else {
                    let value: Value = serde_json::from_str(open_revs).map_err(|_| {
                        Error::bad_request("Invalid open_revs: expected \"all\" or a JSON array")
                    })?;
                    OpenRevs::Revs(rev_list(&value)?)
                };
                let multipart = wants_multipart(&ctx, "multipart/mixed");
                if multipart {
                    // As CouchDB's `send_docs_multipart`: always `attachments, follows,
                    // att_encoding_info`, whatever `attachments=` says (`atts_since` still
                    // keeps older attachments as stubs).
                    opts.attachments = AttachmentMode::Follows;
                    opts.att_encoding_info = true;
                }
                let (d, key, o) = (db.clone(), id.to_owned(), opts.clone());
                let results = blocking(move || d.open_revs(&key, &revs, &o)).await?;
                if multipart {
                    return Ok(super::multipart::open_revs_response(db, results));
                }
                let list: Vec<Value> = results
                    .into_iter()
                    .map(|r| match r {
                        OpenRev::Ok(doc) => json!({"ok": Value::Object(doc.json)}),
                        OpenRev::Missing(rev) => json!({"missing": rev.to_string()}),
                    })
                    .collect();
                return Ok(json_response(StatusCode::OK, &Value::Array(list)));
            }
            let (d, key) = (db.clone(), id.to_owned());
            let doc = blocking(move || d.get(&key, &opts)).await?;
            let tag = etag(&doc.rev);
            if let (Some(tag), Some(inm)) = (&tag, ctx.headers().get(header::IF_NONE_MATCH)) {
                if inm == tag {
                    let mut response = Response::new(Body::empty());
                    *response.status_mut() = StatusCode::NOT_MODIFIED;
                    response.headers_mut().insert(header::ETAG, tag.clone());
                    return Ok(response);
                }
            }
            let mut response = json_response(StatusCode::OK, &Value::Object(doc.json));
            if let Some(tag) = tag {
                response.headers_mut().insert(header::ETAG, tag);
            }
            Ok(response)
        }
        Method::PUT => {
            check_write(&mut ctx, db_name, id)?;
            let db = ctx.db(db_name).await?;
            let content_type = ctx
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut update = if content_type.starts_with("multipart/related") {
                super::multipart::parse_related(&ctx, &content_type, body).await?
            } else {
                let bytes = ctx.body_bytes(body).await?;
                let oversized = bytes.len() > ctx.app.config.max_document_bytes;
                let update = parse_doc_body(&ctx, bytes).await?;
                if oversized {
                    update
                        .check_size(ctx.app.config.max_document_bytes)
                        .map_err(|_| Error::document_too_large(id))?;
                }
                update
            };
            // As CouchDB: the URL names the document; an `_id` in the body is ignored.
            update.id = None;
            match (&update.rev, rev_param(&ctx)?) {
                (None, from_request) => update.rev = from_request,
                (Some(body_rev), Some(request_rev)) if *body_rev != request_rev => {
                    return Err(Error::bad_request(
                        "Document rev from request body and query string have different values",
                    ));
                }
                _ => {}
            }
            let new_edits = ctx.query.get("new_edits") != Some("false");
            let deleted = update.deleted;
            let batch = ctx.query.get("batch") == Some("ok");
            let (d, key, who) = (db.clone(), id.to_owned(), write_context(&ctx, db_name));
            let (id, rev) = blocking(move || d.put_as(Some(&key), update, new_edits, &who)).await?;
            if batch {
                return Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({"ok": true, "id": id}),
                ));
            }
            let status = if deleted {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(ok_rev(status, &id, &rev))
        }
        Method::DELETE => {
            check_write(&mut ctx, db_name, id)?;
            let db = ctx.db(db_name).await?;
            if kind == IdKind::Local {
                let (d, key) = (db.clone(), id.to_owned());
                blocking(move || d.delete_local(&key)).await?;
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({"ok": true, "id": id, "rev": "0-0"}),
                ));
            }
            let rev = rev_param(&ctx)?.ok_or_else(Error::conflict)?;
            let update = DocUpdate {
                rev: Some(rev),
                deleted: true,
                ..DocUpdate::default()
            };
            let (d, key, who) = (db.clone(), id.to_owned(), write_context(&ctx, db_name));
            let (id, rev) = blocking(move || d.put_as(Some(&key), update, true, &who)).await?;
            Ok(ok_rev(StatusCode::OK, &id, &rev))
        }
        _ => Err(method_not_allowed("GET,HEAD,PUT,DELETE")),
    }
}

/// Parses a document body: small ones right here, large ones (inline attachments to decode and
/// compress) on the blocking pool.
async fn parse_doc_body(ctx: &Ctx, bytes: bytes::Bytes) -> Result<DocUpdate> {
    let opts = parse_opts(ctx);
    if bytes.len() <= 64 * 1024 {
        let object = crate::json::parse_object(&bytes)?;
        return DocUpdate::from_json(object, opts);
    }
    let (tmp, compress) = (opts.tmp_dir.to_path_buf(), opts.compress);
    blocking(move || {
        let object = crate::json::parse_object(&bytes)?;
        DocUpdate::from_json(
            object,
            ParseOptions {
                compress,
                tmp_dir: &tmp,
            },
        )
    })
    .await
}

pub(super) async fn post_doc(mut ctx: Ctx, db_name: &str, body: Body) -> Result<Response> {
    let bytes = ctx.body_bytes(body).await?;
    let oversized = bytes.len() > ctx.app.config.max_document_bytes;
    let update = parse_doc_body(&ctx, bytes).await?;
    if oversized {
        update.check_size(ctx.app.config.max_document_bytes)?;
    }
    match &update.id {
        Some(id) => check_write(&mut ctx, db_name, id)?,
        None => ctx.check(Operation::WriteDb { db: db_name })?,
    }
    let db = ctx.db(db_name).await?;
    let batch = ctx.query.get("batch") == Some("ok");
    let who = write_context(&ctx, db_name);
    let (id, rev) = blocking(move || db.put_as(None, update, true, &who)).await?;
    if batch {
        return Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({"ok": true, "id": id}),
        ));
    }
    let mut response = ok_rev(StatusCode::CREATED, &id, &rev);
    if let Ok(location) = HeaderValue::from_str(&format!("/{db_name}/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn bulk_docs(mut ctx: Ctx, method: &Method, db_name: &str, body: Body) -> Result<Response> {
    if *method != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    let bytes = ctx.body_bytes(body).await?;
    let max_doc = ctx.app.config.max_document_bytes;
    let opts = parse_opts(&ctx);
    let (tmp, compress) = (opts.tmp_dir.to_path_buf(), opts.compress);
    // Parse (and classify for authorization) off the async threads.
    let parsed = blocking(move || {
        let (docs, new_edits) = crate::doc::parse_bulk_docs(
            &bytes,
            max_doc,
            ParseOptions {
                compress,
                tmp_dir: &tmp,
            },
        )?;
        let mut kinds = HashSet::new();
        for doc in &docs {
            match &doc.id {
                Some(id) => {
                    if let Ok(kind) = check_id(id) {
                        kinds.insert(kind);
                    }
                }
                None => {
                    kinds.insert(IdKind::Normal);
                }
            }
        }
        Ok((docs, new_edits, kinds))
    })
    .await?;
    let (docs, new_edits, kinds) = parsed;
    if kinds.contains(&IdKind::Normal) || kinds.is_empty() {
        ctx.check(Operation::WriteDb { db: db_name })?;
    }
    if kinds.contains(&IdKind::Design) {
        ctx.check(Operation::WriteDesign { db: db_name })?;
    }
    if kinds.contains(&IdKind::Local) {
        ctx.check(Operation::WriteLocal { db: db_name })?;
    }
    let db = ctx.db(db_name).await?;
    // Replicated writes name the revision in their error rows, as CouchDB's do.
    let revs: Vec<Option<String>> = docs
        .iter()
        .map(|d| d.rev.as_ref().map(ToString::to_string))
        .collect();
    let who = write_context(&ctx, db_name);
    let results =
        blocking(move || db.bulk_docs_as(docs.into_iter().map(Ok).collect(), new_edits, &who))
            .await?;
    let rows: Vec<Value> = results
        .into_iter()
        .zip(revs)
        .filter_map(|(r, rev)| match r.result {
            Ok(rev) if new_edits => Some(json!({"ok": true, "id": r.id, "rev": rev.to_string()})),
            Ok(_) => None,
            Err(e) if new_edits => {
                Some(json!({"id": r.id, "error": e.error(), "reason": e.reason()}))
            }
            Err(e) => {
                Some(json!({"id": r.id, "rev": rev, "error": e.error(), "reason": e.reason()}))
            }
        })
        .collect();
    Ok(json_response(StatusCode::CREATED, &Value::Array(rows)))
}

#[derive(Deserialize)]
struct BulkGetBody {
    docs: Vec<BulkGetItem>,
}

#[derive(Deserialize)]
struct BulkGetItem {
    id: Option<String>,
    rev: Option<String>,
    #[serde(default)]
    atts_since: Option<Vec<String>>,
}

async fn bulk_get(mut ctx: Ctx, method: &Method, db_name: &str, body: Body) -> Result<Response> {
    if *method != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    ctx.check(Operation::ReadDb { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let bytes = ctx.body_bytes(body).await?;
    crate::json::parse_value(&bytes)?;
    let request: BulkGetBody = serde_json::from_slice(&bytes).map_err(|e| {
        Error::bad_request(format!("_bulk_get body must be {{\"docs\": [...]}}: {e}"))
    })?;
    if request.docs.len() as u64 > ctx.app.config.max_rows {
        return Err(Error::too_large("_bulk_get request"));
    }
    let base = get_options(&ctx)?;
    let filter = ctx.filter.clone();
    let results = blocking(move || {
        let mut out = Vec::with_capacity(request.docs.len());
        for item in request.docs {
            let Some(id) = item.id else {
                out.push(json!({"id": null, "docs": [{"error": {"id": null, "rev": null, "error": "illegal_docid", "reason": "Document id must be a string"}}]}));
                continue;
            };
            let error = |rev: Option<&str>, e: &Error| {
                json!({"error": {"id": id, "rev": rev, "error": e.error(), "reason": e.reason()}})
            };
            let mut opts = base.clone();
            // An empty `atts_since` changes nothing (CouchDB: stubs unless `attachments=true`).
            if let Some(since) = item.atts_since.as_ref().filter(|s| !s.is_empty()) {
                match since.iter().map(|r| r.parse()).collect::<Result<Vec<RevId>>>() {
                    Ok(revs) => {
                        opts.atts_since = revs;
                        opts.attachments = AttachmentMode::Inline;
                    }
                    Err(e) => {
                        out.push(json!({"id": id, "docs": [error(None, &e)]}));
                        continue;
                    }
                }
            }
            if let Some(f) = &filter {
                let visible = db.winner_json(&id)?.is_some_and(|doc| f.allows(&id, &doc));
                if !visible {
                    out.push(json!({"id": id, "docs": [error(item.rev.as_deref(), &Error::not_found("missing"))]}));
                    continue;
                }
            }
            let docs: Vec<Value> = match &item.rev {
                Some(rev_text) => match rev_text.parse::<RevId>() {
                    Ok(rev) => match db.open_revs(&id, &OpenRevs::Revs(vec![rev]), &opts) {
                        Ok(revs) => revs
                            .into_iter()
                            .map(|r| match r {
                                OpenRev::Ok(doc) => json!({"ok": Value::Object(doc.json)}),
                                OpenRev::Missing(rev) => error(Some(&rev.to_string()), &Error::not_found("missing")),
                            })
                            .collect(),
                        Err(e) => vec![error(Some(rev_text), &e)],
                    },
                    Err(e) => vec![error(Some(rev_text), &e)],
                },
                None => match db.get(&id, &opts) {
                    Ok(doc) => vec![json!({"ok": Value::Object(doc.json)})],
                    Err(e) => vec![error(None, &e)],
                },
            };
            out.push(json!({"id": id, "docs": docs}));
        }
        Ok(out)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"results": results})))
}

async fn revs_diff(mut ctx: Ctx, method: &Method, db_name: &str, body: Body) -> Result<Response> {
    if *method != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    ctx.check(Operation::ReadDb { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let bytes = ctx.body_bytes(body).await?;
    let Value::Object(map) = crate::json::parse_value(&bytes)? else {
        return Err(Error::bad_request(
            "_revs_diff body must be an object of id: [revs]",
        ));
    };
    let mut query: BTreeMap<String, Vec<RevId>> = BTreeMap::new();
    for (id, revs) in map {
        query.insert(id, rev_list(&revs)?);
    }
    let filter = ctx.filter.clone();
    let diff = blocking(move || {
        // Documents the caller may not see are reported as entirely missing: their existence
        // does not leak.
        let mut hidden = BTreeMap::new();
        if let Some(f) = &filter {
            for (id, revs) in &query {
                if !db.winner_json(id)?.is_some_and(|doc| f.allows(id, &doc)) {
                    hidden.insert(id.clone(), revs.clone());
                }
            }
            query.retain(|id, _| !hidden.contains_key(id));
        }
        let mut diff = db.revs_diff(&query)?;
        for (id, missing) in hidden {
            diff.insert(
                id,
                crate::read::RevsDiff {
                    missing,
                    possible_ancestors: Vec::new(),
                },
            );
        }
        Ok(diff)
    })
    .await?;
    let mut out = Map::new();
    for (id, d) in diff {
        let mut entry = Map::new();
        entry.insert(
            "missing".into(),
            json!(
                d.missing
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        );
        if !d.possible_ancestors.is_empty() {
            entry.insert(
                "possible_ancestors".into(),
                json!(
                    d.possible_ancestors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                ),
            );
        }
        out.insert(id, Value::Object(entry));
    }
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}

async fn ensure_full_commit(mut ctx: Ctx, method: &Method, db_name: &str) -> Result<Response> {
    if *method != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    ctx.check(Operation::ReadDb { db: db_name })?;
    ctx.db(db_name).await?;
    // Every acknowledged write is already durable: there is nothing to flush.
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"ok": true, "instance_start_time": "0"}),
    ))
}

async fn compact(mut ctx: Ctx, method: &Method, db_name: &str) -> Result<Response> {
    if *method != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    ctx.check(Operation::AdminDb { db: db_name })?;
    let db = ctx.db(db_name).await?;
    blocking(move || db.compact()).await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"ok": true})))
}

async fn revs_limit(mut ctx: Ctx, method: &Method, db_name: &str, body: Body) -> Result<Response> {
    match *method {
        Method::GET => {
            ctx.check(Operation::ReadDb { db: db_name })?;
            let db = ctx.db(db_name).await?;
            let limit = blocking(move || db.revs_limit()).await?;
            Ok(json_response(StatusCode::OK, &json!(limit)))
        }
        Method::PUT => {
            ctx.check(Operation::AdminDb { db: db_name })?;
            let db = ctx.db(db_name).await?;
            let bytes = ctx.body_bytes(body).await?;
            let limit = crate::json::parse_value(&bytes)?
                .as_u64()
                .ok_or_else(|| Error::bad_request("_revs_limit must be a positive integer"))?;
            blocking(move || db.set_revs_limit(limit)).await?;
            Ok(json_response(StatusCode::OK, &json!({"ok": true})))
        }
        _ => Err(method_not_allowed("GET,PUT")),
    }
}

fn key_param(ctx: &Ctx, names: &[&str]) -> Result<Option<String>> {
    for name in names {
        if let Some(v) = ctx.query.json(name)? {
            return match v {
                Value::String(s) => Ok(Some(s)),
                _ => Err(Error::query_parse(format!(
                    "{name} must be a JSON string (document ids are strings)"
                ))),
            };
        }
    }
    Ok(None)
}

async fn all_docs(mut ctx: Ctx, method: &Method, db_name: &str, body: Body) -> Result<Response> {
    if *method != Method::GET && *method != Method::HEAD && *method != Method::POST {
        return Err(method_not_allowed("GET,HEAD,POST"));
    }
    ctx.check(Operation::ReadDb { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let mut keys = ctx.query.json("keys")?;
    if keys.as_ref().is_some_and(|k| !k.is_array()) {
        return Err(Error::bad_request("`keys` parameter must be an array."));
    }
    if *method == Method::POST {
        let bytes = ctx.body_bytes(body).await?;
        if !bytes.is_empty() {
            if let Value::Object(mut map) = crate::json::parse_value(&bytes)? {
                match map.remove("keys") {
                    Some(Value::Null) | None => {}
                    Some(k @ Value::Array(_)) => keys = Some(k),
                    Some(_) => {
                        return Err(Error::bad_request("`keys` body member must be an array."));
                    }
                }
            }
        }
    }
    let keys = match keys {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect::<Vec<String>>(),
        ),
        Some(_) => return Err(Error::bad_request("`keys` parameter must be an array.")),
    };
    // `key` is a range of one key (a deleted document is not in it), as in CouchDB.
    let key = key_param(&ctx, &["key"])?;
    let mut start_key = key_param(&ctx, &["startkey", "start_key"])?;
    let mut end_key = key_param(&ctx, &["endkey", "end_key"])?;
    if let Some(key) = key {
        start_key = Some(key.clone());
        end_key = Some(key);
    }
    if keys.as_ref().is_some_and(|k| !k.is_empty()) && (start_key.is_some() || end_key.is_some()) {
        return Err(Error::query_parse(
            "`keys` is incompatible with `key`, `start_key` and `end_key`",
        ));
    }
    let descending = ctx.query.flag("descending")?;
    // With `keys`, `descending` reverses the rows (CouchDB answers them in reverse).
    let keys = keys.map(|mut k| {
        if descending {
            k.reverse();
        }
        k
    });
    let by_keys = keys.is_some();
    let max = ctx.app.config.max_rows;
    let q = AllDocsQuery {
        start_key,
        end_key,
        keys,
        descending,
        skip: ctx.query.u64("skip")?.unwrap_or(0),
        limit: Some(ctx.query.u64("limit")?.unwrap_or(max).min(max)),
        exclusive_end: ctx.query.get("inclusive_end") == Some("false"),
        include_docs: ctx.query.flag("include_docs")?,
        conflicts: ctx.query.flag("conflicts")?,
        attachments: ctx.query.flag("attachments")?,
    };
    if q.keys.as_ref().is_some_and(|k| k.len() as u64 > max) {
        return Err(Error::too_large("keys list"));
    }
    let update_seq = ctx.query.flag("update_seq")?;
    let filter = ctx.filter.clone();
    let d = db.clone();
    let result = blocking(move || d.all_docs(&q, filter.as_deref())).await?;
    let rows: Vec<Value> = result
        .rows
        .into_iter()
        .map(|row| match row {
            AllDocsRow::Doc {
                id,
                rev,
                deleted,
                doc,
            } => {
                let mut value = json!({"rev": rev.to_string()});
                if deleted {
                    value["deleted"] = Value::Bool(true);
                }
                let mut r = json!({"id": id, "key": id, "value": value});
                if let Some(doc) = doc {
                    r["doc"] = doc;
                }
                r
            }
            AllDocsRow::NotFound(key) => json!({"key": key, "error": "not_found"}),
        })
        .collect();
    // CouchDB has no offset for a `keys` query.
    let offset = if by_keys {
        Value::Null
    } else {
        json!(result.offset)
    };
    let mut out = json!({"total_rows": result.total_rows, "offset": offset, "rows": rows});
    if update_seq {
        out["update_seq"] = json!(db.seq_string(result.update_seq));
    }
    Ok(json_response(StatusCode::OK, &out))
}

async fn attachment(
    mut ctx: Ctx,
    method: &Method,
    db_name: &str,
    id: &str,
    name: &str,
    body: Body,
) -> Result<Response> {
    if check_id(id)? == IdKind::Local {
        return Err(Error::bad_request(
            "_local documents do not accept attachments.",
        ));
    }
    if *method != Method::GET && *method != Method::HEAD {
        crate::doc::check_attachment_name(name)?;
    }
    match *method {
        Method::GET | Method::HEAD => {
            ctx.check(Operation::ReadDb { db: db_name })?;
            let db = ctx.db(db_name).await?;
            check_visible(&ctx, &db, id).await?;
            let rev = match ctx.query.get("rev") {
                Some(r) => Some(r.parse::<RevId>()?),
                None => None,
            };
            let (d, key, n) = (db.clone(), id.to_owned(), name.to_owned());
            let (_, att) = blocking(move || d.attachment(&key, &n, rev.as_ref())).await?;
            let accepts_gzip = ctx
                .headers()
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("gzip"));
            Ok(super::multipart::attachment_response(db, att, accepts_gzip))
        }
        Method::PUT => {
            ctx.check(Operation::WriteDb { db: db_name })?;
            if check_id(id)? == IdKind::Design {
                ctx.check(Operation::WriteDesign { db: db_name })?;
            }
            let db = ctx.db(db_name).await?;
            let rev = rev_param(&ctx)?;
            let content_type = ctx
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let content = super::multipart::spool_body(&ctx, &content_type, body).await?;
            let (d, key, n) = (db.clone(), id.to_owned(), name.to_owned());
            let who = write_context(&ctx, db_name);
            let rev = blocking(move || d.put_attachment_as(&key, rev, &n, content, &who)).await?;
            Ok(ok_rev(StatusCode::CREATED, id, &rev))
        }
        Method::DELETE => {
            ctx.check(Operation::WriteDb { db: db_name })?;
            let db = ctx.db(db_name).await?;
            let rev = rev_param(&ctx)?.ok_or_else(Error::conflict)?;
            let (d, key, n) = (db.clone(), id.to_owned(), name.to_owned());
            let who = write_context(&ctx, db_name);
            let rev = blocking(move || d.delete_attachment_as(&key, rev, &n, &who)).await?;
            Ok(ok_rev(StatusCode::OK, id, &rev))
        }
        _ => Err(method_not_allowed("GET,HEAD,PUT,DELETE")),
    }
}
