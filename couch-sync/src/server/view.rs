//! Views over HTTP (feature `js`): `GET`/`POST /db/_design/D/_view/V`, `GET
//! /db/_design/D/_info`, `POST /db/_view_cleanup` (CouchDB's `chttpd_view.erl` and
//! `couch_mrview_http.erl`).
//!
//! A view query is checked as [`Operation::ReadView`]; the filter the hook returns hides the
//! rows of refused documents (and their share of reductions). `_info` is checked as
//! [`Operation::ReadDb`], `_view_cleanup` as [`Operation::AdminDb`].

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Ctx, Operation, blocking, json_response, method_not_allowed};
use crate::error::{Error, Result};
use crate::view::{self, Param, ViewQuery};

/// The query string's parameters, in order.
fn query_string(ctx: &Ctx) -> Result<Vec<(String, String)>> {
    serde_urlencoded::from_str(ctx.parts.uri.query().unwrap_or(""))
        .map_err(|e| Error::query_parse(format!("Invalid query string: {e}")))
}

fn parse(qs: &[(String, String)], extra: Option<&Map<String, Value>>) -> Result<ViewQuery> {
    let mut q = ViewQuery::parse(qs.iter().map(|(k, v)| (k.as_str(), Param::Text(v))))?;
    if let Some(extra) = extra {
        for (k, v) in extra {
            q.set(k, Param::Json(v))?;
        }
    }
    Ok(q)
}

/// `/db/_design/{ddoc}/_view/{rest..}`.
pub(super) async fn view(
    mut ctx: Ctx,
    method: &Method,
    db_name: &str,
    ddoc: &str,
    rest: &[&str],
    body: Body,
) -> Result<Response> {
    let name = match rest {
        [name] => *name,
        _ => "",
    };
    ctx.check(Operation::ReadView {
        db: db_name,
        ddoc,
        view: name,
    })?;
    let db = ctx.db(db_name).await?;
    let qs = query_string(&ctx)?;
    let (queries, multi) = match *method {
        Method::GET | Method::HEAD => (vec![parse(&qs, None)?], false),
        Method::POST => {
            let body = ctx.json_object(body).await?;
            match (body.get("keys"), body.get("queries")) {
                (Some(keys), None) => {
                    let mut q = parse(&qs, None)?;
                    q.set("keys", Param::Json(keys))?;
                    (vec![q], false)
                }
                (None, Some(Value::Array(list))) => {
                    let mut out = Vec::with_capacity(list.len());
                    for item in list {
                        let obj = item.as_object().ok_or_else(|| {
                            Error::bad_request("Each query must be a JSON object")
                        })?;
                        out.push(parse(&qs, Some(obj))?);
                    }
                    (out, true)
                }
                (None, Some(_)) => {
                    return Err(Error::bad_request("`queries` member must be an array."));
                }
                (None, None) => {
                    return Err(Error::bad_request(
                        "POST body must contain `keys` or `queries` field",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(Error::bad_request(
                        "`keys` and `queries` are mutually exclusive",
                    ));
                }
            }
        }
        _ => return Err(method_not_allowed("GET,POST,HEAD")),
    };
    let filter = ctx.filter.clone();
    let (ddoc, name) = (ddoc.to_owned(), name.to_owned());
    let results = blocking(move || {
        queries
            .iter()
            .map(|q| view::query(&db, &ddoc, &name, q, filter.as_deref()))
            .collect::<Result<Vec<Value>>>()
    })
    .await?;
    let body = if multi {
        json!({ "results": results })
    } else {
        results.into_iter().next().unwrap_or(Value::Null)
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /db/_design/{ddoc}/_info`.
pub(super) async fn info(
    mut ctx: Ctx,
    method: &Method,
    db_name: &str,
    ddoc: &str,
) -> Result<Response> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(method_not_allowed("GET"));
    }
    ctx.check(Operation::ReadDb { db: db_name })?;
    let db = ctx.db(db_name).await?;
    let ddoc = ddoc.to_owned();
    let body = blocking(move || view::info(&db, &ddoc)).await?;
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /db/_view_cleanup`.
pub(super) async fn cleanup(
    mut ctx: Ctx,
    method: &Method,
    db_name: &str,
    body: Body,
) -> Result<Response> {
    if *method != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    ctx.check(Operation::AdminDb { db: db_name })?;
    ctx.json_object(body).await.or_else(|e| match e.status() {
        // CouchDB checks the content type only; an empty body is fine.
        400 => Ok(Map::new()),
        _ => Err(e),
    })?;
    let db = ctx.db(db_name).await?;
    blocking(move || view::cleanup(&db)).await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"ok": true})))
}
