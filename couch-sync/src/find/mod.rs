//! Mango queries as Apache CouchDB 3.4 answers them: `_find`, `_explain` and JSON indexes
//! (`_index`). Indexes live in design documents exactly as CouchDB stores them; the planner picks
//! an index as CouchDB does; the cursor runs over a [`cursor::RowSource`] (today a scan of the
//! documents, so results are always exact; an index kept in redb is the next step).

pub(crate) mod cursor;
pub(crate) mod index;
pub(crate) mod opts;
pub(crate) mod plan;
pub(crate) mod selector;

use serde_json::{Map, Value, json};

use crate::error::Result;
use crate::read::{AllDocsQuery, AllDocsRow, DocFilter};
use crate::store::Database;

pub(crate) use cursor::{Found, Scan};

pub(crate) use index::{Index, NewIndex};
pub(crate) use opts::FindOpts;
pub(crate) use plan::Plan;

/// The design documents of `db` (`_design/` ids) with their bodies.
pub(crate) fn design_docs(
    db: &Database,
    filter: Option<&dyn DocFilter>,
) -> Result<Vec<(String, Map<String, Value>)>> {
    let q = AllDocsQuery {
        start_key: Some("_design/".into()),
        end_key: Some("_design0".into()),
        exclusive_end: true,
        include_docs: true,
        ..AllDocsQuery::default()
    };
    Ok(db
        .all_docs(&q, filter)?
        .rows
        .into_iter()
        .filter_map(|row| match row {
            AllDocsRow::Doc {
                id,
                doc: Some(Value::Object(body)),
                ..
            } => Some((id, body)),
            _ => None,
        })
        .collect())
}

/// The database's Mango indexes, `_all_docs` first.
pub(crate) fn indexes(db: &Database, filter: Option<&dyn DocFilter>) -> Result<Vec<Index>> {
    Ok(index::from_ddocs(&design_docs(db, filter)?))
}

/// Every visible document (winning revision, non-deleted) in id order.
fn scan(db: &Database, opts: &FindOpts, filter: Option<&dyn DocFilter>) -> Result<Scan> {
    let q = AllDocsQuery {
        include_docs: true,
        conflicts: opts.conflicts,
        ..AllDocsQuery::default()
    };
    let docs = db
        .all_docs(&q, filter)?
        .rows
        .into_iter()
        .filter_map(|row| match row {
            AllDocsRow::Doc {
                id,
                doc: Some(doc @ Value::Object(_)),
                ..
            } => Some((id, doc)),
            _ => None,
        })
        .collect();
    Ok(Scan { docs })
}

/// `POST /db/_find`.
pub(crate) fn find(
    db: &Database,
    opts: &FindOpts,
    filter: Option<&dyn DocFilter>,
    now_millis: &dyn Fn() -> u64,
) -> Result<Value> {
    let started = now_millis();
    let plan = Plan::new(&indexes(db, filter)?, opts)?;
    let source = scan(db, opts, filter)?;
    let mut found: Found = cursor::execute(&plan, opts, &source)?;
    found.stats.execution_time_ms = now_millis().saturating_sub(started) as f64;
    Ok(found.to_json(opts))
}

/// `POST /db/_explain`.
pub(crate) fn explain(
    db: &Database,
    opts: &FindOpts,
    filter: Option<&dyn DocFilter>,
) -> Result<Value> {
    let plan = Plan::new(&indexes(db, filter)?, opts)?;
    Ok(json!({
        "dbname": db.name(),
        "index": plan.index.to_json(),
        "partitioned": false,
        "selector": plan.norm.to_json(),
        "opts": opts.explain_json(),
        "limit": opts.limit,
        "skip": opts.skip,
        "fields": opts.fields,
        "index_candidates": plan.candidates(),
        "selector_hints": plan.selector_hints(),
        "mrargs": plan.mrargs(opts),
        "covering": plan.covering(opts),
    }))
}
