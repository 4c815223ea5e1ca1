//! Mango queries as Apache CouchDB 3.4 answers them: `_find`, `_explain` and JSON indexes
//! (`_index`). Indexes are declared in design documents exactly as CouchDB stores them, and
//! kept in redb tables updated in the documents' own write transactions ([`stored`]); the
//! planner picks an index as CouchDB does; the cursor reads the chosen index's rows lazily
//! ([`cursor::RowSource`]), within the selector's range on its first column.

pub(crate) mod cursor;
pub(crate) mod index;
pub(crate) mod opts;
pub(crate) mod plan;
pub(crate) mod selector;
pub(crate) mod stored;

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
    // Planned over every index, whoever asks (as `chosen_index`, which authorization uses):
    // the filter hides documents, not the server's choice of index.
    let plan = Plan::new(&indexes(db, None)?, opts)?;
    stored::catch_up(db)?;
    let found = db.read(|r| {
        let stored = stored::Stored {
            reader: r,
            conflicts: opts.conflicts,
            filter,
        };
        if stored.has(&plan.index)? {
            cursor::execute(&plan, opts, &stored).map(Some)
        } else {
            Ok(None)
        }
    })?;
    let mut found: Found = match found {
        Some(found) => found,
        None => cursor::execute(&plan, opts, &scan(db, opts, filter)?)?,
    };
    found.stats.execution_time_ms = now_millis().saturating_sub(started) as f64;
    Ok(found.to_json(opts))
}

/// The index `_find` would use for `opts` (every index is considered, whoever asks: the choice
/// must not depend on who may read which design document).
pub(crate) fn chosen_index(db: &Database, opts: &FindOpts) -> Result<Index> {
    Ok(Plan::new(&indexes(db, None)?, opts)?.index.clone())
}

/// `POST /db/_explain`.
/// The plan does not depend on who asks (see [`chosen_index`]), so neither does this.
pub(crate) fn explain(db: &Database, opts: &FindOpts) -> Result<Value> {
    let plan = Plan::new(&indexes(db, None)?, opts)?;
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
