//! View query parameters (CouchDB's `couch_mrview_http:parse_params` and
//! `couch_mrview_util:validate_args`) and their execution over an index's rows.

use std::collections::HashMap;
use std::ops::Bound;

use redb::{ReadableTableMetadata, TableDefinition};
use serde_json::{Map, Value, json};

use super::design::Reduce;
use super::index::{self, IndexState, Runner};
use super::key::{self, ViewKey};
use crate::error::{Error, Result};
use crate::js::JsError;
use crate::read::{AttachmentMode, DocFilter, GetOptions};
use crate::reduce::Builtin;
use crate::rev::RevId;
use crate::store::Database;

/// When a query brings the index up to date (`update`, or `stale`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// Before answering (the default).
    #[default]
    True,
    /// Never: answer from the index as it is (`stale=ok`).
    False,
    /// After answering (`stale=update_after`, `update=lazy`).
    Lazy,
}

/// A parameter as it arrived: query-string text (JSON-valued ones still to decode), or a JSON
/// value from a request body (`keys`, an element of `queries`).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Param<'a> {
    /// From the query string.
    Text(&'a str),
    /// From a JSON body.
    Json(&'a Value),
}

/// A view query's parameters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ViewQuery {
    /// `reduce` (default: reduce when the view has a reduce function).
    pub reduce: Option<bool>,
    /// `startkey` / `start_key` (`key` sets both ends).
    pub start_key: Option<Value>,
    /// `endkey` / `end_key`.
    pub end_key: Option<Value>,
    /// `startkey_docid`.
    pub start_key_docid: Option<String>,
    /// `endkey_docid`.
    pub end_key_docid: Option<String>,
    /// `keys`: only rows with these keys, in this order (any JSON until validated: CouchDB
    /// refuses a non-array when the query runs).
    pub keys: Option<Value>,
    /// `descending`.
    pub descending: bool,
    /// `limit`.
    pub limit: Option<u64>,
    /// `skip`.
    pub skip: u64,
    /// `group`.
    pub group: Option<bool>,
    /// `group_level`.
    pub group_level: Option<u64>,
    /// `include_docs`.
    pub include_docs: bool,
    /// `inclusive_end` (default true).
    pub inclusive_end: bool,
    /// `conflicts` (with `include_docs`).
    pub conflicts: Option<bool>,
    /// `attachments`: inline attachment content in included documents.
    pub attachments: bool,
    /// `att_encoding_info`.
    pub att_encoding_info: bool,
    /// `update_seq`: report the sequence the index reached.
    pub update_seq: bool,
    /// `update` / `stale`.
    pub update: Update,
}

impl Default for ViewQuery {
    fn default() -> ViewQuery {
        ViewQuery {
            reduce: None,
            start_key: None,
            end_key: None,
            start_key_docid: None,
            end_key_docid: None,
            keys: None,
            descending: false,
            limit: None,
            skip: 0,
            group: None,
            group_level: None,
            include_docs: false,
            inclusive_end: true,
            conflicts: None,
            attachments: false,
            att_encoding_info: false,
            update_seq: false,
            update: Update::True,
        }
    }
}

fn show(p: Param<'_>) -> String {
    match p {
        Param::Text(t) => format!("{:?}", t.chars().take(100).collect::<String>()),
        Param::Json(v) => {
            let s = v.to_string();
            s.chars().take(100).collect()
        }
    }
}

fn parse_bool(p: Param<'_>) -> Result<bool> {
    let text = match p {
        Param::Json(Value::Bool(b)) => return Ok(*b),
        Param::Json(Value::String(s)) => s.as_str(),
        Param::Text(t) => t,
        Param::Json(_) => "",
    };
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::query_parse(format!(
            "Invalid boolean parameter: {}",
            show(p)
        ))),
    }
}

fn parse_pos_int(p: Param<'_>) -> Result<u64> {
    let n: Option<i128> = match p {
        Param::Json(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Param::Json(Value::String(s)) => s.parse().ok(),
        Param::Text(t) => t.parse().ok(),
        Param::Json(_) => None,
    };
    match n {
        None => Err(Error::query_parse(format!(
            "Invalid value for integer: {}",
            show(p)
        ))),
        Some(n) => u64::try_from(n).map_err(|_| {
            Error::query_parse(format!("Invalid value for positive integer: {}", show(p)))
        }),
    }
}

fn parse_json(p: Param<'_>) -> Result<Value> {
    match p {
        Param::Json(v) => Ok(v.clone()),
        Param::Text(t) => {
            serde_json::from_str(t).map_err(|_| Error::bad_request("invalid UTF-8 JSON"))
        }
    }
}

fn parse_string(p: Param<'_>, name: &str) -> Result<String> {
    match p {
        Param::Text(t) => Ok(t.to_owned()),
        Param::Json(Value::String(s)) => Ok(s.clone()),
        Param::Json(_) => Err(Error::query_parse(format!("`{name}` must be a string."))),
    }
}

fn text_of(p: Param<'_>) -> Option<&str> {
    match p {
        Param::Text(t) => Some(t),
        Param::Json(Value::String(s)) => Some(s),
        Param::Json(_) => None,
    }
}

impl ViewQuery {
    /// Parses parameters in order (a later one overrides an earlier one, as in CouchDB);
    /// unknown names are ignored.
    pub fn parse<'a>(params: impl IntoIterator<Item = (&'a str, Param<'a>)>) -> Result<ViewQuery> {
        let mut q = ViewQuery::default();
        for (name, p) in params {
            q.set(name, p)?;
        }
        Ok(q)
    }

    /// Sets one parameter.
    pub fn set(&mut self, name: &str, p: Param<'_>) -> Result<()> {
        match name {
            "reduce" => self.reduce = Some(parse_bool(p)?),
            "key" => {
                let k = parse_json(p)?;
                self.start_key = Some(k.clone());
                self.end_key = Some(k);
            }
            "keys" => self.keys = Some(parse_json(p)?),
            "startkey" | "start_key" => self.start_key = Some(parse_json(p)?),
            "endkey" | "end_key" => self.end_key = Some(parse_json(p)?),
            "startkey_docid" | "start_key_doc_id" => {
                self.start_key_docid = Some(parse_string(p, "start_key_docid")?)
            }
            "endkey_docid" | "end_key_doc_id" => {
                self.end_key_docid = Some(parse_string(p, "end_key_docid")?)
            }
            "limit" => self.limit = Some(parse_pos_int(p)?),
            "skip" => self.skip = parse_pos_int(p)?,
            "stale" => {
                self.update = match text_of(p) {
                    Some("ok") => Update::False,
                    Some("update_after") => Update::Lazy,
                    _ => return Err(Error::query_parse("Invalid value for `stale`.")),
                }
            }
            "stable"
                if !matches!(text_of(p), Some("true" | "false"))
                    && !matches!(p, Param::Json(Value::Bool(_))) =>
            {
                return Err(Error::query_parse("Invalid value for `stable`."));
            }
            "update" => {
                self.update = match (text_of(p), p) {
                    (Some("true"), _) | (_, Param::Json(Value::Bool(true))) => Update::True,
                    (Some("false"), _) | (_, Param::Json(Value::Bool(false))) => Update::False,
                    (Some("lazy"), _) => Update::Lazy,
                    _ => return Err(Error::query_parse("Invalid value for `update`.")),
                }
            }
            "descending" => self.descending = parse_bool(p)?,
            "group" => self.group = Some(parse_bool(p)?),
            "group_level" => self.group_level = Some(parse_pos_int(p)?),
            "inclusive_end" => self.inclusive_end = parse_bool(p)?,
            "include_docs" => self.include_docs = parse_bool(p)?,
            "attachments" => self.attachments = parse_bool(p)?,
            "att_encoding_info" => self.att_encoding_info = parse_bool(p)?,
            "update_seq" => self.update_seq = parse_bool(p)?,
            "conflicts" => self.conflicts = Some(parse_bool(p)?),
            "sorted" => {
                parse_bool(p)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// How rows are grouped for reducing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// By the whole key (`group=true`).
    Exact,
    /// By the first N elements of array keys; 0 is one group of everything.
    Level(u64),
}

/// `couch_mrview_util:validate_args`, for a view with (`has_reduce`) or without a reduce
/// function. Returns the grouping when the query reduces.
fn validate(q: &ViewQuery, has_reduce: bool) -> Result<Option<Grouping>> {
    let reduces = has_reduce && q.reduce != Some(false);
    let level = match (q.group, q.group_level) {
        (None | Some(false), None) => Grouping::Level(0),
        (Some(false), Some(l)) if l > 0 => {
            return Err(Error::query_parse(
                "Can't specify group=false and group_level>0 at the same time",
            ));
        }
        (Some(true), None) => Grouping::Exact,
        (_, Some(l)) => Grouping::Level(l),
    };
    if !has_reduce && q.reduce == Some(true) {
        return Err(Error::query_parse("Reduce is invalid for map-only views."));
    }
    let keys = match &q.keys {
        None => None,
        Some(Value::Array(k)) => Some(k),
        Some(_) => None,
    };
    if reduces && level != Grouping::Exact && keys.is_some() {
        return Err(Error::query_parse(
            "Multi-key fetchs for reduce views must use `group=true`",
        ));
    }
    if q.keys.is_some() && keys.is_none() {
        return Err(Error::query_parse("`keys` must be an array of strings."));
    }
    if keys.is_some_and(|k| !k.is_empty()) && (q.start_key.is_some() || q.end_key.is_some()) {
        return Err(Error::query_parse(
            "`keys` is incompatible with `key`, `start_key` and `end_key`",
        ));
    }
    if !reduces && level != Grouping::Level(0) {
        return Err(Error::query_parse("Invalid use of grouping on a map view."));
    }
    if reduces && q.include_docs {
        return Err(Error::query_parse("`include_docs` is invalid for reduce"));
    }
    if reduces && q.conflicts.is_some() {
        return Err(Error::query_parse(
            "`conflicts` is invalid for reduce views.",
        ));
    }
    Ok(reduces.then_some(level))
}

/// `couch_mrview_util:check_range`.
fn check_range(q: &ViewQuery) -> Result<()> {
    let (Some(sk), Some(ek)) = (&q.start_key, &q.end_key) else {
        return Ok(());
    };
    if sk == ek {
        return Ok(());
    }
    // Absent document ids are the lowest ("") or highest (<<255>>) id.
    let id = |docid: &Option<String>, high: bool| match docid {
        Some(d) => (0u8, d.clone()),
        None if high => (1, String::new()),
        None => (0, String::new()),
    };
    let (sd, ed) = if q.descending {
        (id(&q.start_key_docid, true), id(&q.end_key_docid, false))
    } else {
        (id(&q.start_key_docid, false), id(&q.end_key_docid, true))
    };
    let less = crate::json::collate(sk, ek).then_with(|| sd.cmp(&ed)) == std::cmp::Ordering::Less;
    match (q.descending, less) {
        (false, false) => Err(Error::query_parse(
            "No rows can match your key range, reverse your start_key and end_key or set \
             descending=true",
        )),
        (true, true) => Err(Error::query_parse(
            "No rows can match your key range, reverse your start_key and end_key or set \
             descending=false",
        )),
        _ => Ok(()),
    }
}

type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The byte range of rows from `start` to `end` in the query's direction.
fn range_of(
    start: Option<&Value>,
    start_docid: Option<&str>,
    end: Option<&Value>,
    end_docid: Option<&str>,
    descending: bool,
    inclusive_end: bool,
) -> Range {
    // The lowest and highest possible encodings of (key, id) for an end of the range.
    let low = |k: &Value, d: Option<&str>| match d {
        None => key::prefix(k),
        Some(d) => key::with_id(k, d),
    };
    let high = |k: &Value, d: Option<&str>| match d {
        None => key::after_key(k),
        Some(d) => key::after_id(k, d),
    };
    if descending {
        let hi = start.map_or(Bound::Unbounded, |k| Bound::Excluded(high(k, start_docid)));
        let lo = end.map_or(Bound::Unbounded, |k| {
            Bound::Included(if inclusive_end {
                low(k, end_docid)
            } else {
                high(k, end_docid)
            })
        });
        (lo, hi)
    } else {
        let lo = start.map_or(Bound::Unbounded, |k| Bound::Included(low(k, start_docid)));
        let hi = end.map_or(Bound::Unbounded, |k| {
            Bound::Excluded(if inclusive_end {
                high(k, end_docid)
            } else {
                low(k, end_docid)
            })
        });
        (lo, hi)
    }
}

fn is_empty(r: &Range) -> bool {
    match (&r.0, &r.1) {
        (Bound::Included(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

fn as_key(b: &Bound<Vec<u8>>) -> Bound<ViewKey<'_>> {
    match b {
        Bound::Included(v) => Bound::Included(ViewKey(v)),
        Bound::Excluded(v) => Bound::Excluded(ViewKey(v)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Rows as (key bytes, value bytes).
type RowIter<'t> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 't>;

type RowsTable = redb::ReadOnlyTable<ViewKey<'static>, &'static [u8]>;

/// Iterates a range's rows (key bytes, value bytes) in the query's direction.
fn rows_in<'t>(table: &'t RowsTable, range: &Range, descending: bool) -> Result<RowIter<'t>> {
    if is_empty(range) {
        return Ok(Box::new(std::iter::empty()));
    }
    let iter = table.range::<ViewKey<'_>>((as_key(&range.0), as_key(&range.1)))?;
    let map = |e: std::result::Result<
        (
            redb::AccessGuard<'_, ViewKey<'static>>,
            redb::AccessGuard<'_, &'static [u8]>,
        ),
        redb::StorageError,
    >| {
        let (k, v) = e?;
        Ok((k.value().0.to_vec(), v.value().to_vec()))
    };
    if descending {
        Ok(Box::new(iter.rev().map(map)))
    } else {
        Ok(Box::new(iter.map(map)))
    }
}

/// Which documents the caller may see (cached per query).
struct Visibility<'a> {
    db: &'a Database,
    filter: Option<&'a dyn DocFilter>,
    seen: HashMap<String, bool>,
}

impl Visibility<'_> {
    fn allows(&mut self, id: &str) -> Result<bool> {
        let Some(filter) = self.filter else {
            return Ok(true);
        };
        if let Some(v) = self.seen.get(id) {
            return Ok(*v);
        }
        let ok = match self.db.winner_json(id)? {
            Some(doc) => filter.allows(id, &doc),
            None => false,
        };
        self.seen.insert(id.to_owned(), ok);
        Ok(ok)
    }
}

/// What a query needs of the index.
pub(crate) struct Target<'a> {
    pub(crate) db: &'a Database,
    pub(crate) state: &'a std::sync::Mutex<IndexState>,
    pub(crate) view: usize,
    pub(crate) reduce: Option<Reduce>,
    pub(crate) sig: String,
}

/// Runs a validated query against an index that is as up to date as the query asked; `seq`
/// is the sequence the index reached.
pub(crate) fn run(
    t: &Target<'_>,
    q: &ViewQuery,
    filter: Option<&dyn DocFilter>,
    seq: u64,
    txn: &redb::ReadTransaction,
) -> Result<Value> {
    let grouping = validate(q, t.reduce.is_some())?;
    check_range(q)?;
    let name = index::rows_table(&t.sig, t.view);
    let table = match txn.open_table(TableDefinition::<ViewKey<'static>, &[u8]>::new(&name)) {
        Ok(table) => Some(table),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let keys: Option<&Vec<Value>> = match &q.keys {
        Some(Value::Array(k)) if !k.is_empty() => Some(k),
        _ => None,
    };
    let ranges: Vec<Range> = match keys {
        Some(keys) => keys
            .iter()
            .map(|k| {
                range_of(
                    Some(k),
                    q.start_key_docid.as_deref(),
                    Some(k),
                    q.end_key_docid.as_deref(),
                    q.descending,
                    q.inclusive_end,
                )
            })
            .collect(),
        None => vec![range_of(
            q.start_key.as_ref(),
            q.start_key_docid.as_deref(),
            q.end_key.as_ref(),
            q.end_key_docid.as_deref(),
            q.descending,
            q.inclusive_end,
        )],
    };
    let mut vis = Visibility {
        db: t.db,
        filter,
        seen: HashMap::new(),
    };
    let update_seq = q.update_seq.then(|| Value::String(t.db.seq_string(seq)));
    match grouping {
        Some(grouping) => {
            let rows = match &table {
                Some(table) => reduce_rows(t, q, table, &ranges, grouping, &mut vis)?,
                None => Vec::new(),
            };
            let mut out = Map::new();
            if let Some(s) = update_seq {
                out.insert("update_seq".into(), s);
            }
            out.insert("rows".into(), Value::Array(rows));
            Ok(Value::Object(out))
        }
        None => {
            let (total, offset, rows) = match &table {
                Some(table) => map_rows(q, table, &ranges, &mut vis)?,
                None => (0, 0, Vec::new()),
            };
            let mut out = Map::new();
            out.insert("total_rows".into(), json!(total));
            out.insert("offset".into(), json!(offset));
            if let Some(s) = update_seq {
                out.insert("update_seq".into(), s);
            }
            let rows = if q.include_docs {
                include_docs(t.db, q, rows, &mut vis)?
            } else {
                rows
            };
            out.insert("rows".into(), Value::Array(rows));
            Ok(Value::Object(out))
        }
    }
}

fn count(
    table: &RowsTable,
    range: (Bound<ViewKey<'_>>, Bound<ViewKey<'_>>),
    vis: &mut Visibility<'_>,
) -> Result<u64> {
    if vis.filter.is_none() {
        return Ok(table.range::<ViewKey<'_>>(range)?.count() as u64);
    }
    let mut n = 0;
    for e in table.range::<ViewKey<'_>>(range)? {
        let (k, _) = e?;
        let id = key::decode(k.value().0)?.id;
        if vis.allows(&id)? {
            n += 1;
        }
    }
    Ok(n)
}

/// A map query: total rows, offset, rows.
fn map_rows(
    q: &ViewQuery,
    table: &RowsTable,
    ranges: &[Range],
    vis: &mut Visibility<'_>,
) -> Result<(u64, u64, Vec<Value>)> {
    let total = if vis.filter.is_none() {
        table.len()?
    } else {
        count(table, (Bound::Unbounded, Bound::Unbounded), vis)?
    };
    // Rows before the first range, in the query's direction.
    let before = match ranges.first() {
        Some(r) if !q.descending => match &r.0 {
            Bound::Unbounded => 0,
            b => count(table, (Bound::Unbounded, flip(as_key(b))), vis)?,
        },
        Some(r) => match &r.1 {
            Bound::Unbounded => 0,
            b => count(table, (flip(as_key(b)), Bound::Unbounded), vis)?,
        },
        None => 0,
    };
    let limit = q.limit.unwrap_or(u64::MAX);
    let mut skipped = 0u64;
    let mut rows = Vec::new();
    'ranges: for range in ranges {
        for entry in rows_in(table, range, q.descending)? {
            if rows.len() as u64 >= limit {
                break 'ranges;
            }
            let (k, v) = entry?;
            let d = key::decode(&k)?;
            if !vis.allows(&d.id)? {
                continue;
            }
            if skipped < q.skip {
                skipped += 1;
                continue;
            }
            let value: Value = serde_json::from_slice(&v)
                .map_err(|e| Error::Corrupt(format!("view row value: {e}")))?;
            rows.push(json!({"id": d.id, "key": d.key, "value": value}));
        }
    }
    Ok((total, before + skipped, rows))
}

/// The complement side of a bound: rows before `Included(x)` are those `< x`.
fn flip(b: Bound<ViewKey<'_>>) -> Bound<ViewKey<'_>> {
    match b {
        Bound::Included(x) => Bound::Excluded(x),
        Bound::Excluded(x) => Bound::Included(x),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Adds `doc` to each row: the emitting document, or the one a `{"_id": X}` value (and
/// `"_rev"`) links to; `null` when it is missing, deleted or hidden from the caller.
fn include_docs(
    db: &Database,
    q: &ViewQuery,
    rows: Vec<Value>,
    vis: &mut Visibility<'_>,
) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(rows.len());
    for mut row in rows {
        let linked = row
            .get("value")
            .and_then(Value::as_object)
            .and_then(|v| v.get("_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let rev = if linked.is_some() {
            row.get("value")
                .and_then(|v| v.get("_rev"))
                .and_then(Value::as_str)
                .and_then(|r| r.parse::<RevId>().ok())
        } else {
            None
        };
        let id = match linked {
            Some(id) => id,
            None => row
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        };
        let opts = GetOptions {
            rev,
            conflicts: q.conflicts == Some(true),
            attachments: if q.attachments {
                AttachmentMode::Inline
            } else {
                AttachmentMode::Stubs
            },
            att_encoding_info: q.att_encoding_info,
            ..GetOptions::default()
        };
        let doc = match db.get(&id, &opts) {
            Ok(doc) if vis.allows(&id)? => Value::Object(doc.json),
            Ok(_) => Value::Null,
            Err(e) if e.status() == 404 => Value::Null,
            Err(e) => return Err(e),
        };
        if let Some(obj) = row.as_object_mut() {
            obj.insert("doc".into(), doc);
        }
        out.push(row);
    }
    Ok(out)
}

/// Reductions at most this many values each, and rereduced when this many pile up.
const CHUNK: usize = 500;

/// One group's running reduction.
struct Acc {
    rows: Vec<(Value, String, Value)>,
    partials: Vec<Value>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            rows: Vec::new(),
            partials: Vec::new(),
        }
    }

    fn push(&mut self, r: &mut Reducer<'_>, row: (Value, String, Value)) -> Result<()> {
        self.rows.push(row);
        if self.rows.len() >= CHUNK {
            self.flush(r)?;
        }
        Ok(())
    }

    fn flush(&mut self, r: &mut Reducer<'_>) -> Result<()> {
        if !self.rows.is_empty() {
            let rows = std::mem::take(&mut self.rows);
            self.partials.push(r.reduce(&rows)?);
        }
        if self.partials.len() >= CHUNK {
            let partials = std::mem::take(&mut self.partials);
            self.partials.push(r.rereduce(&partials)?);
        }
        Ok(())
    }

    fn finish(mut self, r: &mut Reducer<'_>) -> Result<Value> {
        self.flush(r)?;
        let value = match self.partials.len() {
            1 => self.partials.pop().unwrap_or(Value::Null),
            _ => r.rereduce(&self.partials)?,
        };
        r.finalize(value)
    }
}

/// A view's reduce function, built-in or JavaScript (run in the design document's sandbox).
enum Reducer<'a> {
    Builtin(Builtin),
    Js(&'a mut Runner, usize),
}

fn js_value(result: std::result::Result<crate::js::Output<Value>, JsError>) -> Result<Value> {
    match result {
        Ok(out) => Ok(out.value),
        Err(JsError::Thrown { name, message }) => {
            tracing::warn!("reduce function raised {name}: {message}; the reduction is null");
            Ok(Value::Null)
        }
        Err(e) => Err(e.into()),
    }
}

impl Reducer<'_> {
    fn reduce(&mut self, rows: &[(Value, String, Value)]) -> Result<Value> {
        match self {
            Reducer::Builtin(b) => {
                let kv: Vec<(Value, Value)> = rows
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.clone()))
                    .collect();
                Ok(b.reduce(&kv)?)
            }
            Reducer::Js(runner, view) => {
                let keys: Vec<(Value, String)> = rows
                    .iter()
                    .map(|(k, id, _)| (k.clone(), id.clone()))
                    .collect();
                let values: Vec<Value> = rows.iter().map(|(_, _, v)| v.clone()).collect();
                let f = runner
                    .reduces
                    .get(*view)
                    .and_then(Option::clone)
                    .ok_or_else(|| Error::Corrupt("reduce function".into()))?;
                js_value(f.run(&mut runner.sandbox, Some(&keys), &values, false))
            }
        }
    }

    fn rereduce(&mut self, partials: &[Value]) -> Result<Value> {
        match self {
            Reducer::Builtin(b) => Ok(b.rereduce(partials)?),
            Reducer::Js(runner, view) => {
                let f = runner
                    .reduces
                    .get(*view)
                    .and_then(Option::clone)
                    .ok_or_else(|| Error::Corrupt("reduce function".into()))?;
                js_value(f.run(&mut runner.sandbox, None, partials, true))
            }
        }
    }

    fn finalize(&mut self, value: Value) -> Result<Value> {
        match self {
            Reducer::Builtin(b) => Ok(b.finalize(value)?),
            Reducer::Js(..) => Ok(value),
        }
    }
}

/// A reduce query's rows.
fn reduce_rows(
    t: &Target<'_>,
    q: &ViewQuery,
    table: &RowsTable,
    ranges: &[Range],
    grouping: Grouping,
    vis: &mut Visibility<'_>,
) -> Result<Vec<Value>> {
    let mut guard;
    let mut reducer = match &t.reduce {
        Some(Reduce::Builtin(b)) => Reducer::Builtin(*b),
        Some(Reduce::Js(_)) => {
            guard = index::lock(t.state);
            Reducer::Js(guard.runner()?, t.view)
        }
        None => return Ok(Vec::new()),
    };
    let limit = q.limit.unwrap_or(u64::MAX);
    let mut skipped = 0u64;
    let mut out = Vec::new();
    // The open group: its prefix, its key, its reduction.
    let mut open: Option<(Vec<u8>, Value, Acc)> = None;
    let mut emit = |group: Option<(Vec<u8>, Value, Acc)>,
                    reducer: &mut Reducer<'_>,
                    out: &mut Vec<Value>|
     -> Result<bool> {
        let Some((_, key, acc)) = group else {
            return Ok(true);
        };
        if out.len() as u64 >= limit {
            return Ok(false);
        }
        if skipped < q.skip {
            skipped += 1;
            return Ok(true);
        }
        let value = acc.finish(reducer)?;
        out.push(json!({"key": key, "value": value}));
        Ok((out.len() as u64) < limit)
    };
    'ranges: for range in ranges {
        for entry in rows_in(table, range, q.descending)? {
            let (k, v) = entry?;
            let d = key::decode(&k)?;
            if !vis.allows(&d.id)? {
                continue;
            }
            let prefix: Vec<u8> = match grouping {
                Grouping::Level(0) => Vec::new(),
                Grouping::Exact => k.get(..key::key_len(&k)?).unwrap_or(&[]).to_vec(),
                Grouping::Level(n) => key::group_prefix(&k, n)?.to_vec(),
            };
            let same = open.as_ref().is_some_and(|(p, _, _)| *p == prefix);
            if !same {
                let key = match grouping {
                    Grouping::Level(0) => Value::Null,
                    Grouping::Exact => d.key.clone(),
                    Grouping::Level(n) => key::group_key(&d.key, n),
                };
                if !emit(open.take(), &mut reducer, &mut out)? {
                    break 'ranges;
                }
                open = Some((prefix, key, Acc::new()));
            }
            let value: Value = serde_json::from_slice(&v)
                .map_err(|e| Error::Corrupt(format!("view row value: {e}")))?;
            if let Some((_, _, acc)) = open.as_mut() {
                acc.push(&mut reducer, (d.key, d.id, value))?;
            }
        }
        // With `keys`, each key is its own group even when two keys collate equal.
        if keys_mode(q) && !emit(open.take(), &mut reducer, &mut out)? {
            break 'ranges;
        }
    }
    emit(open.take(), &mut reducer, &mut out)?;
    Ok(out)
}

fn keys_mode(q: &ViewQuery) -> bool {
    matches!(&q.keys, Some(Value::Array(k)) if !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ViewQuery> {
        ViewQuery::parse(pairs.iter().map(|(k, v)| (*k, Param::Text(v))))
    }

    fn reason(e: Error) -> String {
        e.reason().to_string()
    }

    #[test]
    fn params_and_errors() {
        let q = parse(&[("key", "\"a\""), ("limit", "2"), ("stale", "ok")]).unwrap();
        assert_eq!(q.start_key, Some(json!("a")));
        assert_eq!(q.end_key, Some(json!("a")));
        assert_eq!(q.limit, Some(2));
        assert_eq!(q.update, Update::False);
        assert_eq!(
            reason(parse(&[("limit", "-1")]).unwrap_err()),
            "Invalid value for positive integer: \"-1\""
        );
        assert_eq!(
            reason(parse(&[("limit", "x")]).unwrap_err()),
            "Invalid value for integer: \"x\""
        );
        assert_eq!(
            reason(parse(&[("descending", "yes")]).unwrap_err()),
            "Invalid boolean parameter: \"yes\""
        );
        assert_eq!(parse(&[("key", "{")]).unwrap_err().error(), "bad_request");
        assert_eq!(
            reason(parse(&[("stale", "x")]).unwrap_err()),
            "Invalid value for `stale`."
        );
    }

    #[test]
    fn validation() {
        let v = |pairs: &[(&str, &str)], red: bool| {
            parse(pairs).and_then(|q| validate(&q, red)).map_err(reason)
        };
        assert_eq!(v(&[], true), Ok(Some(Grouping::Level(0))));
        assert_eq!(v(&[("reduce", "false")], true), Ok(None));
        assert_eq!(v(&[("group", "true")], true), Ok(Some(Grouping::Exact)));
        assert_eq!(
            v(&[("reduce", "true")], false).unwrap_err(),
            "Reduce is invalid for map-only views."
        );
        assert_eq!(
            v(&[("include_docs", "true")], true).unwrap_err(),
            "`include_docs` is invalid for reduce"
        );
        assert_eq!(
            v(&[("group", "true"), ("reduce", "false")], true).unwrap_err(),
            "Invalid use of grouping on a map view."
        );
        assert_eq!(
            v(&[("keys", "[1]")], true).unwrap_err(),
            "Multi-key fetchs for reduce views must use `group=true`"
        );
        assert_eq!(
            v(&[("keys", "[1]"), ("key", "1")], false).unwrap_err(),
            "`keys` is incompatible with `key`, `start_key` and `end_key`"
        );
        assert_eq!(
            v(&[("keys", "1")], false).unwrap_err(),
            "`keys` must be an array of strings."
        );
        assert_eq!(
            v(&[("group", "false"), ("group_level", "1")], true).unwrap_err(),
            "Can't specify group=false and group_level>0 at the same time"
        );
        assert_eq!(
            v(&[("conflicts", "true")], true).unwrap_err(),
            "`conflicts` is invalid for reduce views."
        );
        let q = parse(&[("startkey", "2"), ("endkey", "1")]).unwrap();
        assert!(reason(check_range(&q).unwrap_err()).ends_with("descending=true"));
        let q = parse(&[("startkey", "1"), ("endkey", "2"), ("descending", "true")]).unwrap();
        assert!(reason(check_range(&q).unwrap_err()).ends_with("descending=false"));
    }
}
