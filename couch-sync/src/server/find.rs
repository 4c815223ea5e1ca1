//! Mango over HTTP: `POST /db/_find`, `POST /db/_explain`, `GET`/`POST /db/_index`,
//! `DELETE /db/_index/{ddoc}/json/{name}` (CouchDB's `mango_httpd.erl`).
//!
//! Queries are checked as [`Operation::ReadDb`], or, when that is refused, as
//! [`Operation::ReadView`] of the index the planner picks (never `_all_docs`): a view read grant
//! on a Mango index lets a caller query through it. Creating and deleting indexes writes a design
//! document, so it is checked as [`Operation::WriteDesign`] (as a `PUT /db/_design/...` is).

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Ctx, Operation, blocking, json_response, method_not_allowed};
use crate::doc::{DocUpdate, ParseOptions};
use crate::error::{Error, Result};
use crate::find::{self, FindOpts, NewIndex};
use crate::read::GetOptions;

pub(super) async fn route(
    ctx: Ctx,
    method: &Method,
    db: &str,
    rest: &[&str],
    body: Body,
) -> Result<Response> {
    match rest {
        ["_find"] => query(ctx, method, db, body, false).await,
        ["_explain"] => query(ctx, method, db, body, true).await,
        ["_index"] => match *method {
            Method::GET | Method::HEAD => list(ctx, db).await,
            Method::POST => create(ctx, db, body).await,
            _ => Err(method_not_allowed("GET,POST")),
        },
        ["_index", "_design", ddoc, kind, name] | ["_index", ddoc, kind, name] => {
            if *method != Method::DELETE {
                return Err(method_not_allowed("DELETE"));
            }
            delete(ctx, db, ddoc, kind, name).await
        }
        _ => Err(Error::not_found("missing")),
    }
}

async fn query(
    mut ctx: Ctx,
    method: &Method,
    db_name: &str,
    body: Body,
    explain: bool,
) -> Result<Response> {
    if *method != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    let may_read = ctx.check(Operation::ReadDb { db: db_name });
    let db = ctx.db(db_name).await?;
    let body = ctx.json_object(body).await?;
    let opts = FindOpts::parse(&body)?;
    if let Err(refused) = may_read {
        // A caller who may not read the database may still query through an index whose
        // view read grant it holds: the index the planner picks decides.
        let d = db.clone();
        let o = opts.clone();
        let index = blocking(move || find::chosen_index(&d, &o)).await?;
        let Some(ddoc) = index.ddoc.as_deref() else {
            return Err(refused);
        };
        let ddoc = ddoc.strip_prefix("_design/").unwrap_or(ddoc);
        ctx.check(Operation::ReadView {
            db: db_name,
            ddoc,
            view: &index.name,
        })?;
    }
    let filter = ctx.filter.clone();
    let clock = ctx.app.store.config().clock.clone();
    let value = blocking(move || {
        let filter = filter.as_deref();
        if explain {
            find::explain(&db, &opts)
        } else {
            find::find(&db, &opts, filter, &|| clock.now_millis())
        }
    })
    .await?;
    Ok(json_response(StatusCode::OK, &value))
}

async fn list(mut ctx: Ctx, db_name: &str) -> Result<Response> {
    ctx.check(Operation::ReadDb { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let bad = || {
        Error::couch(
            500,
            "invalid_list_index_params",
            "Index parameter ranges: limit > 1, skip > 0",
        )
    };
    let limit = match ctx.query.get("limit") {
        None => None,
        Some(v) => Some(v.parse::<u64>().ok().filter(|l| *l >= 1).ok_or_else(bad)?),
    };
    let skip = match ctx.query.get("skip") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| bad())?,
    };
    let filter = ctx.filter.clone();
    let indexes = blocking(move || find::indexes(&db, filter.as_deref())).await?;
    let total = indexes.len();
    let shown: Vec<Value> = indexes
        .iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)))
        .map(find::Index::to_json)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"total_rows": total, "indexes": shown}),
    ))
}

fn parse_options(ctx: &Ctx) -> (std::path::PathBuf, bool) {
    (
        ctx.app.store.tmp_dir().to_path_buf(),
        ctx.app.store.config().compress_attachments,
    )
}

fn saving_error(e: Error) -> Error {
    match e.error() {
        "conflict" => Error::couch(
            500,
            "error_saving_ddoc",
            "Encountered a conflict while saving the design document.",
        ),
        _ if e.status() < 500 => e,
        _ => Error::couch(
            500,
            "error_saving_ddoc",
            format!(
                "Unknown error while saving the design document: {}",
                e.reason()
            ),
        ),
    }
}

async fn create(mut ctx: Ctx, db_name: &str, body: Body) -> Result<Response> {
    ctx.check(Operation::WriteDesign { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let body = ctx.json_object(body).await?;
    let index = NewIndex::parse(&body)?;
    let (tmp, compress) = parse_options(&ctx);
    let id = index.ddoc.clone();
    let name = index.name.clone();
    let created = blocking(move || {
        let mut ddoc = match db.get(&index.ddoc, &GetOptions::default()) {
            Ok(doc) => {
                let lang = doc.json.get("language");
                if lang.and_then(Value::as_str) != Some("query") {
                    let shown = lang.map_or("undefined".into(), find::opts::erl_w);
                    return Err(Error::couch(
                        400,
                        "invalid_ddoc_lang",
                        format!("Existing design doc has an invalid language: {shown}"),
                    ));
                }
                doc.json
            }
            Err(e) if e.status() == 404 => {
                let mut m = Map::new();
                m.insert("_id".into(), Value::String(index.ddoc.clone()));
                m.insert("language".into(), "query".into());
                m
            }
            Err(e) => return Err(e),
        };
        if !index.add_to(&mut ddoc) {
            return Ok(false);
        }
        let update = DocUpdate::from_json(
            ddoc,
            ParseOptions {
                compress,
                tmp_dir: &tmp,
            },
        )?;
        db.put(Some(&index.ddoc), update, true)
            .map_err(saving_error)?;
        Ok(true)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"result": if created { "created" } else { "exists" }, "id": id, "name": name}),
    ))
}

async fn delete(
    mut ctx: Ctx,
    db_name: &str,
    ddoc: &str,
    kind: &str,
    name: &str,
) -> Result<Response> {
    ctx.check(Operation::WriteDesign { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let ddoc = if ddoc.starts_with("_design/") {
        ddoc.to_owned()
    } else {
        format!("_design/{ddoc}")
    };
    let (kind, name) = (kind.to_owned(), name.to_owned());
    let (tmp, compress) = parse_options(&ctx);
    let filter = ctx.filter.clone();
    blocking(move || {
        let found = find::indexes(&db, filter.as_deref())?.into_iter().any(|i| {
            i.ddoc.as_deref() == Some(ddoc.as_str())
                && i.name == name
                && (kind == "json" && !i.is_special())
        });
        if !found {
            return Err(Error::not_found("Index not found"));
        }
        let mut body = db.get(&ddoc, &GetOptions::default())?.json;
        if find::index::remove_from(&mut body, &name) {
            let mut stub = Map::new();
            for k in ["_id", "_rev"] {
                if let Some(v) = body.get(k) {
                    stub.insert(k.into(), v.clone());
                }
            }
            stub.insert("_deleted".into(), Value::Bool(true));
            body = stub;
        }
        let update = DocUpdate::from_json(
            body,
            ParseOptions {
                compress,
                tmp_dir: &tmp,
            },
        )?;
        db.put(Some(&ddoc), update, true).map_err(saving_error)?;
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"ok": true})))
}
