//! Running a plan: rows come from a [`RowSource`] in index order, are matched against the
//! selector, skipped, limited and projected as `mango_cursor_view.erl` does, with CouchDB's
//! bookmarks (`mango_json_bookmark.erl`) and execution statistics (`mango_execution_stats.erl`).

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use super::index::Index;
use super::opts::{Dir, FindOpts, mango};
use super::plan::{Plan, cmp_rows};
use super::selector;
use crate::error::Result;
use crate::mango::Selector;

/// One row of an index: its key, the document id and the (winning revision of the) document.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) key: Value,
    pub(crate) id: String,
    pub(crate) doc: Value,
}

/// Where an index's rows come from, in index order (key in CouchDB collation, then document
/// id): the index's own redb tables ([`super::stored::Stored`]), or a scan of the documents
/// ([`Scan`]) for a database whose indexes have no tables yet.
pub(crate) trait RowSource {
    /// The rows of `index` (ascending, or descending with `desc`), at least those whose first
    /// column is within `first` (a source may return more: the selector decides).
    fn rows<'a>(
        &'a self,
        index: &Index,
        first: Option<&super::selector::Range>,
        desc: bool,
    ) -> Result<Box<dyn Iterator<Item = Result<Row>> + 'a>>;
}

/// Indexes computed from the documents themselves (winning, non-deleted revisions; design
/// documents are in no Mango index, as CouchDB's views and `_all_docs` cursor skip them).
pub(crate) struct Scan {
    /// `(id, document)` in id order.
    pub(crate) docs: Vec<(String, Value)>,
}

impl RowSource for Scan {
    fn rows<'a>(
        &'a self,
        index: &Index,
        _first: Option<&super::selector::Range>,
        desc: bool,
    ) -> Result<Box<dyn Iterator<Item = Result<Row>> + 'a>> {
        let partial = index.partial().map(Selector::parse).transpose()?;
        let mut rows: Vec<Row> = self
            .docs
            .iter()
            .filter(|(id, _)| !id.starts_with("_design/"))
            .filter_map(|(id, doc)| {
                index.key_of(id, doc, partial.as_ref()).map(|key| Row {
                    key,
                    id: id.clone(),
                    doc: doc.clone(),
                })
            })
            .collect();
        if !index.is_special() {
            rows.sort_by(|a, b| cmp_rows((&a.key, &a.id), (&b.key, &b.id)));
        }
        if desc {
            rows.reverse();
        }
        Ok(Box::new(rows.into_iter().map(Ok)))
    }
}

/// `mango_execution_stats`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) keys_examined: u64,
    pub(crate) docs_examined: u64,
    pub(crate) results_returned: u64,
    pub(crate) execution_time_ms: f64,
}

impl Stats {
    pub(crate) fn to_json(self) -> Value {
        json!({
            "total_keys_examined": self.keys_examined,
            "total_docs_examined": self.docs_examined,
            "total_quorum_docs_examined": 0,
            "results_returned": self.results_returned,
            "execution_time_ms": self.execution_time_ms,
        })
    }
}

/// What `_find` answers.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) docs: Vec<Value>,
    pub(crate) bookmark: String,
    pub(crate) stats: Stats,
    pub(crate) warnings: Vec<String>,
}

impl Found {
    /// The response body, members in CouchDB's order.
    pub(crate) fn to_json(&self, opts: &FindOpts) -> Value {
        let mut m = Map::new();
        m.insert("docs".into(), Value::Array(self.docs.clone()));
        m.insert("bookmark".into(), Value::String(self.bookmark.clone()));
        if opts.execution_stats {
            m.insert("execution_stats".into(), self.stats.to_json());
        }
        if !self.warnings.is_empty() {
            m.insert("warning".into(), Value::String(self.warnings.join("\n")));
        }
        Value::Object(m)
    }
}

/// `[mango] index_scan_warning_threshold`.
const INDEX_SCAN_WARNING_THRESHOLD: f64 = 10.0;

/// Runs `plan` over the rows `source` gives.
pub(crate) fn execute(plan: &Plan, opts: &FindOpts, source: &dyn RowSource) -> Result<Found> {
    let after = opts.bookmark.as_deref().map(decode_bookmark).transpose()?;
    let mut stats = Stats::default();
    let mut docs = Vec::new();
    let mut last: Option<(Value, String)> = None;
    if !plan.is_noop() {
        let desc = opts.sort.dir() == Dir::Desc;
        let rows = source.rows(&plan.index, plan.prefix.first(), desc)?;
        let covering = plan.covering(opts);
        let mut skip = opts.skip;
        let mut limit = opts.limit;
        for row in rows {
            let row = row?;
            if let Some((key, id)) = &after {
                let ord = cmp_rows((&row.key, &row.id), (key, id));
                let past = if desc {
                    ord == Ordering::Less
                } else {
                    ord == Ordering::Greater
                };
                if !past {
                    continue;
                }
            }
            stats.keys_examined += 1;
            if !covering {
                stats.docs_examined += 1;
            }
            if !opts.selector.matches(&row.doc) {
                continue;
            }
            if limit > 0 {
                last = Some((row.key.clone(), row.id.clone()));
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if limit == 0 {
                break;
            }
            limit -= 1;
            docs.push(project(&row.doc, &opts.fields));
            if limit == 0 {
                // As CouchDB's view fold: no row is read past the last one returned.
                break;
            }
        }
    }
    stats.results_returned = docs.len() as u64;
    let bookmark = match last {
        Some((key, id)) => encode_bookmark(&key, &id),
        None => opts.bookmark.clone().unwrap_or_else(|| "nil".into()),
    };
    let mut warnings = plan.warnings(opts);
    let scanned = stats.docs_examined as f64;
    let ratio = if docs.is_empty() {
        scanned
    } else {
        scanned / docs.len() as f64
    };
    if ratio > INDEX_SCAN_WARNING_THRESHOLD {
        warnings.push(
            "The number of documents examined is high in proportion to the number of results \
             returned. Consider adding a more specific index to improve this."
                .into(),
        );
    }
    Ok(Found {
        docs,
        bookmark,
        stats,
        warnings,
    })
}

/// `mango_fields:extract/2`: only the named fields (nested paths rebuilt), in the order named.
pub(crate) fn project(doc: &Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return doc.clone();
    }
    let mut out = Map::new();
    for f in fields {
        if let Some(v) = selector::get_field(doc, f) {
            selector::set_field(&mut out, f, v.clone());
        }
    }
    Value::Object(out)
}

/// A bookmark: where the last page stopped (the last row's key and document id), opaque to
/// clients. CouchDB packs `[{startkey_docid, Id}, {startkey, Key}]` in Erlang's term format;
/// this packs the same two values as JSON, base64url without padding as CouchDB.
pub(crate) fn encode_bookmark(key: &Value, id: &str) -> String {
    let packed = json!({"startkey_docid": id, "startkey": key});
    data_encoding::BASE64URL_NOPAD.encode(packed.to_string().as_bytes())
}

/// The position a bookmark names; CouchDB's 400 `invalid_bookmark` when it is not one.
pub(crate) fn decode_bookmark(text: &str) -> Result<(Value, String)> {
    let bad = || {
        mango(
            400,
            "invalid_bookmark",
            format!(
                "Invalid bookmark value: {}",
                Value::String(text.chars().take(200).collect())
            ),
        )
    };
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(text.trim_end_matches('=').as_bytes())
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match (value.get("startkey"), value.get("startkey_docid")) {
        (Some(key), Some(Value::String(id))) => Ok((key.clone(), id.clone())),
        _ => Err(bad()),
    }
}
