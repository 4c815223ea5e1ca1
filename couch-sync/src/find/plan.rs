//! The query planner: which index answers a query (`mango_idx:get_usable_indexes/4`,
//! `mango_cursor:create/4`, `mango_cursor_view:choose_best_index/1`), and the warnings CouchDB
//! adds about that choice.

use std::cmp::Ordering;

use serde_json::{Value, json};

use super::index::Index;
use super::opts::{FindOpts, mango};
use super::selector::{self, Norm, Range};
use crate::error::Result;

/// The chosen index and what the planner learnt on the way.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) index: Index,
    pub(crate) norm: Norm,
    /// Ranges of the chosen index's leading columns the selector restricts.
    pub(crate) prefix: Vec<Range>,
    /// Every index considered, for `_explain`'s `index_candidates`.
    candidates: Vec<Value>,
}

/// `mango_cursor:filter_indexes/2,3`: whether `use_index` names this index.
fn named_by(index: &Index, use_index: &[String]) -> bool {
    let Some(first) = use_index.first() else {
        return false;
    };
    let ddoc = if first.starts_with("_design/") {
        first.clone()
    } else {
        format!("_design/{first}")
    };
    index.ddoc.as_deref() == Some(ddoc.as_str())
        && use_index.get(1).is_none_or(|n| *n == index.name)
}

fn prefix_of(index: &Index, ranges: &[(String, Range)]) -> Vec<Range> {
    let mut out = Vec::new();
    for c in index.columns() {
        match ranges.iter().find(|(f, _)| *f == c) {
            Some((_, r)) => out.push(r.clone()),
            None => break,
        }
    }
    out
}

impl Plan {
    /// Chooses the index for `opts` among `indexes` (`_all_docs` first, as listed).
    pub(crate) fn new(indexes: &[Index], opts: &FindOpts) -> Result<Plan> {
        let norm = selector::normalize(&opts.selector_json);
        let ranges = selector::field_ranges(&norm);
        // Partial indexes are only candidates when use_index names them.
        let considered: Vec<&Index> = indexes
            .iter()
            .filter(|i| i.partial().is_none() || named_by(i, &opts.use_index))
            .collect();
        let usable: Vec<&Index> = considered
            .iter()
            .copied()
            .filter(|i| i.is_usable(&norm, &opts.sort))
            .collect();
        if usable.is_empty() {
            return Err(mango(
                400,
                "no_usable_index",
                "No index exists for this sort, try indexing by the sort fields.",
            ));
        }
        let named: Vec<&Index> = usable
            .iter()
            .copied()
            .filter(|i| named_by(i, &opts.use_index))
            .collect();
        let pool = if named.is_empty() { &usable } else { &named };
        // JSON indexes are preferred to _all_docs; among them, the one whose leading columns
        // cover most of the selector's ranges, then the narrowest, then by name.
        let mut json: Vec<(&Index, usize)> = pool
            .iter()
            .filter(|i| !i.is_special())
            .map(|i| (*i, ranges.len().saturating_sub(prefix_of(i, &ranges).len())))
            .collect();
        json.sort_by(|(a, da), (b, db)| {
            da.cmp(db)
                .then(a.columns().len().cmp(&b.columns().len()))
                .then_with(|| (&a.ddoc, &a.name).cmp(&(&b.ddoc, &b.name)))
        });
        let winner = match json.first() {
            Some((i, _)) => (*i).clone(),
            None => Index::special(),
        };
        let candidates = candidates(indexes, &winner, &considered, &usable, pool, &json, opts);
        Ok(Plan {
            prefix: prefix_of(&winner, &ranges),
            index: winner,
            norm,
            candidates,
        })
    }

    /// `mango_cursor:invalid_index_warning/2` and `no_index_warning/1`.
    pub(crate) fn warnings(&self, opts: &FindOpts) -> Vec<String> {
        let mut out = Vec::new();
        if !opts.use_index.is_empty() && !named_by(&self.index, &opts.use_index) {
            let d = &opts.use_index[0];
            let d = d.strip_prefix("_design/").unwrap_or(d);
            out.push(match opts.use_index.get(1) {
                None => format!(
                    "_design/{d} was not used because it does not contain a valid index for this query."
                ),
                Some(n) => format!(
                    "_design/{d}, {n} was not used because it is not a valid index for this query."
                ),
            });
        }
        if self.index.is_special() {
            out.push("No matching index found, create an index to optimize query time.".into());
        }
        out
    }

    /// `mango_idx_view:covers/2`: the index alone answers the query (no document needed).
    pub(crate) fn covering(&self, opts: &FindOpts) -> bool {
        if self.index.is_special() || opts.fields.is_empty() {
            return false;
        }
        let cols = self.index.columns();
        let mut needed = selector_fields(&self.norm);
        needed.extend(opts.fields.iter().cloned());
        needed
            .iter()
            .all(|f| f == "_id" || cols.iter().any(|c| c == f))
    }

    /// Whether the selector can match nothing by construction (`mango_cursor:maybe_noop_range`).
    pub(crate) fn is_noop(&self) -> bool {
        matches!(&self.norm, Norm::Combine("$and" | "$or", args) if args.is_empty())
    }

    /// The view arguments `_explain` shows (`mrargs`).
    pub(crate) fn mrargs(&self, opts: &FindOpts) -> Value {
        let (start, end) = if self.is_noop() {
            (Value::Null, Value::Null)
        } else if self.index.is_special() {
            let r = self.prefix.first();
            (
                r.and_then(|r| r.low.as_ref())
                    .map_or(Value::Null, |l| l.0.clone()),
                r.and_then(|r| r.high.as_ref())
                    .map_or(Value::String("<MAX>".into()), |h| h.0.clone()),
            )
        } else {
            let start: Vec<Value> = self
                .prefix
                .iter()
                .map(|r| r.low.as_ref().map_or(Value::Null, |l| l.0.clone()))
                .collect();
            let mut end: Vec<Value> = self
                .prefix
                .iter()
                .map(|r| {
                    r.high
                        .as_ref()
                        .map_or(Value::String("<MAX>".into()), |h| h.0.clone())
                })
                .collect();
            end.push(Value::String("<MAX>".into()));
            (Value::Array(start), Value::Array(end))
        };
        let desc = opts.sort.dir() == super::opts::Dir::Desc;
        let (start, end) = if desc { (end, start) } else { (start, end) };
        json!({
            "include_docs": opts.r == 1 && !self.covering(opts),
            "view_type": "map",
            "reduce": false,
            "partition": null,
            "start_key": start,
            "end_key": end,
            "direction": if desc { "rev" } else { "fwd" },
            "stable": opts.stable || opts.stale_ok,
            "update": opts.update && !opts.stale_ok,
            "conflicts": if opts.conflicts { json!(true) } else { json!("undefined") },
        })
    }

    pub(crate) fn candidates(&self) -> &[Value] {
        &self.candidates
    }

    /// `mango_cursor:extract_selector_hints/1`.
    pub(crate) fn selector_hints(&self) -> Value {
        let indexable: Vec<String> = selector::field_ranges(&self.norm)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        let mut all: Vec<String> = selector_fields(&self.norm).into_iter().collect();
        all.retain(|f| !indexable.contains(f));
        json!([{"type": "json", "indexable_fields": indexable, "unindexable_fields": all}])
    }
}

/// `mango_selector:fields/1`: every field the selector names.
fn selector_fields(norm: &Norm) -> std::collections::BTreeSet<String> {
    match norm {
        Norm::All => Default::default(),
        Norm::Combine(_, args) => args.iter().flat_map(selector_fields).collect(),
        Norm::Not(inner) => selector_fields(inner),
        Norm::Cond { field, .. } => std::iter::once(field.clone()).collect(),
    }
}

/// `mango_cursor:extract_candidate_indexes/1`: why each index that lost was not chosen.
fn candidates(
    all: &[Index],
    winner: &Index,
    considered: &[&Index],
    usable: &[&Index],
    pool: &[&Index],
    ranked: &[(&Index, usize)],
    opts: &FindOpts,
) -> Vec<Value> {
    let same = |a: &Index, b: &Index| a.ddoc == b.ddoc && a.name == b.name;
    let contains = |set: &[&Index], i: &Index| set.iter().any(|s| same(s, i));
    let partial: Vec<&Index> = all.iter().filter(|i| !contains(considered, i)).collect();
    let not_usable: Vec<&Index> = considered
        .iter()
        .copied()
        .filter(|i| !contains(usable, i))
        .collect();
    let excluded: Vec<&Index> = usable
        .iter()
        .copied()
        .filter(|i| !contains(pool, i))
        .collect();
    let unfavored: Vec<&Index> = pool
        .iter()
        .copied()
        .filter(|i| i.is_special() != winner.is_special())
        .collect();
    let mut rank = ranked.len().max(1);
    let unfavored_rank = rank;
    let mut next = |set: &[&Index]| {
        if !set.is_empty() {
            rank += 1;
        }
        rank
    };
    let excluded_rank = next(&excluded);
    let not_usable_rank = next(&not_usable);
    let partial_rank = next(&partial);
    let winner_cols = winner.columns().len();
    let mut out = Vec::new();
    let mut push = |i: &Index, usable: bool, reason: &str, ranking: usize| {
        if same(i, winner) {
            return;
        }
        let covering = if i.is_special() {
            Value::Null
        } else {
            let plan = Plan {
                index: i.clone(),
                norm: selector::normalize(&opts.selector_json),
                prefix: Vec::new(),
                candidates: Vec::new(),
            };
            Value::Bool(plan.covering(opts))
        };
        out.push(json!({
            "index": i.to_json(),
            "analysis": {"usable": usable, "reasons": [{"name": reason}],
                         "ranking": ranking, "covering": covering}
        }));
    };
    for (n, (i, distance)) in ranked.iter().enumerate() {
        let reason = if *distance > 0 {
            "less_overlap"
        } else if i.columns().len() > winner_cols {
            "too_many_fields"
        } else {
            "alphabetically_comes_after"
        };
        push(i, true, reason, n);
    }
    for i in unfavored {
        push(i, true, "unfavored_type", unfavored_rank);
    }
    for i in excluded {
        push(i, true, "excluded_by_user", excluded_rank);
    }
    for i in not_usable {
        let reason = if opts.sort.fields.is_empty() {
            "field_mismatch"
        } else {
            "sort_order_mismatch"
        };
        push(i, false, reason, not_usable_rank);
    }
    for i in partial {
        push(i, false, "is_partial", partial_rank);
    }
    out
}

/// Orders index keys as a view does: keys in CouchDB collation, then document ids.
pub(crate) fn cmp_rows(a: (&Value, &str), b: (&Value, &str)) -> Ordering {
    crate::json::collate(a.0, b.0).then_with(|| a.1.cmp(b.1))
}
