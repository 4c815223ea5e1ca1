//! `POST /_replicate` and `GET /_active_tasks`: CouchDB's own way to drive the replicator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Ctx, Operation, json_response, method_not_allowed};
use crate::error::{Error, Result};
use crate::replicate::{Endpoint, Remote, Replication, ReplicationOptions, State, TokioClock};

/// Replications started through `_replicate` that are still running.
#[derive(Default)]
pub(crate) struct Registry {
    running: Mutex<HashMap<String, Running>>,
}

struct Running {
    replication: Arc<Replication>,
    source: String,
    target: String,
    continuous: bool,
    started_on: u64,
}

fn endpoint(ctx: &Ctx, spec: &Value) -> Result<(Endpoint, String)> {
    let text = match spec {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_request("an endpoint object needs a `url`"))?
            .to_owned(),
        _ => {
            return Err(Error::bad_request(
                "source and target must be database names or URLs",
            ));
        }
    };
    if text.contains("://") {
        let remote = Remote::new(
            &text,
            ctx.app.config.connector.clone(),
            Arc::new(TokioClock),
        )?;
        let shown = remote.display_url();
        Ok((Endpoint::Remote(Arc::new(remote)), shown))
    } else {
        let db = ctx.app.store.db(&text)?;
        Ok((Endpoint::Local(db), text))
    }
}

pub(super) async fn replicate(mut ctx: Ctx, method: &Method, body: Body) -> Result<Response> {
    if *method != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    let bytes = ctx.body_bytes(body).await?;
    let Value::Object(req) = crate::json::parse_value(&bytes)? else {
        return Err(Error::bad_request("_replicate body must be an object"));
    };
    let source_spec = req
        .get("source")
        .ok_or_else(|| Error::bad_request("`source` is required"))?
        .clone();
    let target_spec = req
        .get("target")
        .ok_or_else(|| Error::bad_request("`target` is required"))?
        .clone();
    let name = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .or_else(|| v.get("url").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    };
    ctx.check(Operation::Replicate {
        source: &name(&source_spec),
        target: &name(&target_spec),
    })?;
    let flag = |k: &str| req.get(k).and_then(Value::as_bool).unwrap_or(false);
    let doc_ids = match req.get("doc_ids") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => Some(
            ids.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| Error::bad_request("`doc_ids` must be strings"))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(_) => return Err(Error::bad_request("`doc_ids` must be an array")),
    };
    let selector = req.get("selector").cloned().filter(|v| !v.is_null());
    if let Some(sel) = &selector {
        crate::mango::Selector::parse(sel)?;
    }
    // A design-document filter (`ddoc/name`, or `_view` with `query_params.view`) and the
    // parameters its function sees in `req.query`, as CouchDB takes them.
    let filter = match req.get("filter") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if f.is_empty() => None,
        Some(Value::String(f)) => Some(f.clone()),
        Some(_) => return Err(Error::bad_request("`filter` must be a string")),
    };
    let query_params = match req.get("query_params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(Error::bad_request("`query_params` must be an object")),
    };
    let options = ReplicationOptions {
        continuous: flag("continuous"),
        doc_ids,
        selector,
        filter,
        query_params,
        create_target: flag("create_target"),
        retry: crate::replicate::RetryPolicy {
            max_attempts: if flag("continuous") { None } else { Some(10) },
            ..crate::replicate::RetryPolicy::default()
        },
        ..ReplicationOptions::default()
    };
    let create_target = options.create_target;
    let (source, source_name) = endpoint(&ctx, &source_spec)?;
    let target = match endpoint(&ctx, &target_spec) {
        Ok(t) => t,
        Err(e) if e.status() == 404 && create_target && !name(&target_spec).contains("://") => {
            let store = ctx.app.store.clone();
            let n = name(&target_spec);
            super::blocking(move || store.create_db(&n).map(|_| ())).await?;
            endpoint(&ctx, &target_spec)?
        }
        Err(e) => return Err(e),
    };
    let (target, target_name) = target;
    let continuous = options.continuous;
    let replication = Replication::new(source, target, options)
        .with_tmp_dir(ctx.app.store.tmp_dir().to_path_buf());
    let id = replication.id().to_owned();
    let local_id = if continuous {
        format!("{id}+continuous")
    } else {
        id.clone()
    };
    let registry = ctx.app.replications.clone();

    if flag("cancel") {
        let running = registry
            .running
            .lock()
            .map(|mut r| r.remove(&id))
            .ok()
            .flatten();
        return match running {
            Some(r) => {
                r.replication.canceller().cancel();
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"ok": true, "_local_id": local_id}),
                ))
            }
            None => Err(Error::not_found(format!(
                "Replication {local_id} is not running"
            ))),
        };
    }

    let replication = Arc::new(replication);
    let entry = Running {
        replication: replication.clone(),
        source: source_name,
        target: target_name,
        continuous,
        started_on: TokioClockNow::now(),
    };
    if let Ok(mut running) = registry.running.lock() {
        if running.contains_key(&id) {
            return Err(Error::couch(
                409,
                "conflict",
                format!("Replication {local_id} is already running"),
            ));
        }
        running.insert(id.clone(), entry);
    }
    if continuous {
        let reg = registry.clone();
        let key = id.clone();
        tokio::spawn(async move {
            let _ = replication.run().await;
            if let Ok(mut running) = reg.running.lock() {
                running.remove(&key);
            }
        });
        return Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({"ok": true, "_local_id": local_id}),
        ));
    }
    let result = replication.run().await;
    if let Ok(mut running) = registry.running.lock() {
        running.remove(&id);
    }
    let result = match result {
        Ok(result) => result,
        // CouchDB's error and reason (naming the document a failed write was about), with
        // how far the replication got: it checkpointed nothing past the failure.
        Err(e) => {
            let p = replication.progress();
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(json_response(
                status,
                &json!({
                    "error": e.error(),
                    "reason": e.reason(),
                    "docs_read": p.docs_read,
                    "docs_written": p.docs_written,
                    "doc_write_failures": p.doc_write_failures,
                    "checkpointed_source_seq": p.checkpointed_source_seq,
                    "_local_id": local_id,
                }),
            ));
        }
    };
    if result.no_changes {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"ok": true, "no_changes": true, "session_id": result.session_id, "source_last_seq": result.source_last_seq, "_local_id": local_id}),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "ok": true,
            "session_id": result.session_id,
            "source_last_seq": result.source_last_seq,
            "replication_id_version": 4,
            "history": [result.history],
            "_local_id": local_id,
        }),
    ))
}

struct TokioClockNow;

impl TokioClockNow {
    fn now() -> u64 {
        use crate::replicate::Clock;
        TokioClock.now_millis() / 1000
    }
}

pub(super) async fn active_tasks(mut ctx: Ctx, method: &Method) -> Result<Response> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(method_not_allowed("GET,HEAD"));
    }
    ctx.check(Operation::ActiveTasks)?;
    let tasks: Vec<Value> = ctx
        .app
        .replications
        .running
        .lock()
        .map(|running| {
            running
                .values()
                .map(|r| {
                    let p = r.replication.progress();
                    json!({
                        "type": "replication",
                        "replication_id": p.replication_id,
                        "source": r.source,
                        "target": r.target,
                        "continuous": r.continuous,
                        "state": p.state,
                        "docs_read": p.docs_read,
                        "docs_written": p.docs_written,
                        "doc_write_failures": p.doc_write_failures,
                        "missing_revisions_found": p.missing_found,
                        "revisions_checked": p.missing_checked,
                        "changes_pending": p.pending,
                        "checkpointed_source_seq": p.checkpointed_source_seq,
                        "retries": p.retries,
                        "last_error": p.last_error,
                        "started_on": r.started_on,
                        "updated_on": TokioClockNow::now(),
                        "idle": p.state == State::Idle,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(json_response(StatusCode::OK, &Value::Array(tasks)))
}
