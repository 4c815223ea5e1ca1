//! Request options of `_find`, `_explain` and `_index`, validated as CouchDB's `mango_opts`,
//! `mango_sort` and `mango_fields` do, with CouchDB's error strings (`mango_error.erl`).

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::mango::Selector;

/// Which way a sort runs (CouchDB supports one direction for all fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Asc,
    Desc,
}

impl Dir {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dir::Asc => "asc",
            Dir::Desc => "desc",
        }
    }
}

/// A validated `sort` (also an index's `fields`): field names with one direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sort {
    pub(crate) fields: Vec<(String, Dir)>,
}

impl Sort {
    /// `mango_sort:new/1`.
    pub(crate) fn parse(value: &Value) -> Result<Sort> {
        let Value::Array(items) = value else {
            return Err(mango(
                400,
                "invalid_sort_json",
                format!("Sort must be an array of sort specs, not: {}", erl_w(value)),
            ));
        };
        let mut fields = Vec::with_capacity(items.len());
        for item in items {
            let field = match item {
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some((s.clone(), Dir::Asc)),
                Value::Object(m) if m.len() == 1 => match m.iter().next() {
                    Some((k, Value::String(d))) if d == "asc" => Some((k.clone(), Dir::Asc)),
                    Some((k, Value::String(d))) if d == "desc" => Some((k.clone(), Dir::Desc)),
                    _ => None,
                },
                _ => None,
            };
            match field {
                Some(f) => fields.push(f),
                None => {
                    return Err(mango(
                        400,
                        "invalid_sort_field",
                        format!("Invalid sort field: {}", erl_w(item)),
                    ));
                }
            }
        }
        if fields.windows(2).any(|w| w[0].1 != w[1].1) {
            return Err(mango(
                400,
                "unsupported_mixed_sort",
                "Sorts currently only support a single direction for all fields.",
            ));
        }
        Ok(Sort { fields })
    }

    pub(crate) fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|(f, _)| f.as_str()).collect()
    }

    pub(crate) fn dir(&self) -> Dir {
        self.fields.first().map_or(Dir::Asc, |f| f.1)
    }

    /// As CouchDB shows a sort (`{"field": "asc", ...}`).
    pub(crate) fn to_json(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(f, d)| (f.clone(), Value::String(d.as_str().into())))
                .collect(),
        )
    }
}

/// `use_index` as `mango_opts:validate_use_index/1` splits it: `[ddoc]` or `[ddoc, name]`.
pub(crate) type UseIndex = Vec<String>;

/// The validated body of `_find` / `_explain`.
#[derive(Debug, Clone)]
pub(crate) struct FindOpts {
    pub(crate) selector: Selector,
    /// The selector as given (normalised for `_explain` and index analysis).
    pub(crate) selector_json: Value,
    pub(crate) use_index: UseIndex,
    pub(crate) bookmark: Option<String>,
    pub(crate) limit: u64,
    pub(crate) skip: u64,
    pub(crate) sort: Sort,
    /// Empty means all fields.
    pub(crate) fields: Vec<String>,
    pub(crate) partition: String,
    pub(crate) r: u64,
    pub(crate) conflicts: bool,
    /// `stale: "ok"`.
    pub(crate) stale_ok: bool,
    pub(crate) update: bool,
    pub(crate) stable: bool,
    pub(crate) execution_stats: bool,
}

/// CouchDB's default `limit` (`[mango] default_limit`).
pub(crate) const DEFAULT_LIMIT: u64 = 25;

const FIND_KEYS: &[&str] = &[
    "selector",
    "use_index",
    "bookmark",
    "limit",
    "skip",
    "sort",
    "fields",
    "partition",
    "r",
    "conflicts",
    "stale",
    "update",
    "stable",
    "execution_stats",
];

impl FindOpts {
    /// `mango_opts:validate_find/1`: options are checked in CouchDB's order, then unknown keys.
    pub(crate) fn parse(body: &Map<String, Value>) -> Result<FindOpts> {
        let selector_json = match body.get("selector") {
            None => {
                return Err(mango(
                    400,
                    "missing_required_key",
                    "Missing required key: selector",
                ));
            }
            Some(v @ Value::Object(_)) => v.clone(),
            Some(v) => {
                return Err(mango(
                    400,
                    "invalid_selector_json",
                    format!("Selector must be a JSON object, not: {}", erl_w(v)),
                ));
            }
        };
        let selector = Selector::parse(&selector_json)?;
        let use_index = match body.get("use_index") {
            None => Vec::new(),
            Some(v) => parse_use_index(v)?,
        };
        let bookmark = match body.get("bookmark") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            // mango_error has no clause for this one: CouchDB answers its generic 500.
            Some(v) => {
                return Err(mango(
                    500,
                    "unknown_error",
                    format!(
                        "Unknown Error: mango_opts :: {{invalid_bookmark,{}}}",
                        erl_w(v)
                    ),
                ));
            }
        };
        let limit = non_neg(body.get("limit"))?.unwrap_or(DEFAULT_LIMIT);
        let skip = non_neg(body.get("skip"))?.unwrap_or(0);
        let sort = match body.get("sort") {
            None => Sort::default(),
            Some(v) => Sort::parse(v)?,
        };
        let fields = match body.get("fields") {
            None => Vec::new(),
            Some(v) => parse_fields(v)?,
        };
        let partition = match body.get("partition") {
            None => String::new(),
            Some(Value::String(s)) if s.is_empty() => String::new(),
            Some(Value::String(s)) if s.starts_with('_') => {
                return Err(Error::bad_request(
                    "Partition must not start with an underscore",
                ));
            }
            Some(Value::String(_)) => {
                return Err(Error::bad_request(
                    "`partition` parameter is not supported on this database",
                ));
            }
            Some(v) => {
                return Err(Error::bad_request(format!(
                    "Partition must be a string: {}",
                    erl_w(v)
                )));
            }
        };
        let r = match body.get("r") {
            None => 1,
            Some(v) => pos_int(v)?,
        };
        let conflicts = boolean(body.get("conflicts"))?.unwrap_or(false);
        let stale_ok = match body.get("stale") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) if s == "false" => false,
            Some(Value::String(s)) if s == "ok" => true,
            // mango_error has no clause for this one either.
            Some(v) => {
                return Err(mango(
                    500,
                    "unknown_error",
                    format!(
                        "Unknown Error: mango_opts :: {{invalid_ok_or_false_value,{}}}",
                        erl_w(v)
                    ),
                ));
            }
        };
        let update = boolean(body.get("update"))?.unwrap_or(true);
        let stable = boolean(body.get("stable"))?.unwrap_or(false);
        let execution_stats = boolean(body.get("execution_stats"))?.unwrap_or(false);
        if let Some(key) = body.keys().find(|k| !FIND_KEYS.contains(&k.as_str())) {
            return Err(invalid_key(key));
        }
        Ok(FindOpts {
            selector,
            selector_json,
            use_index,
            bookmark,
            limit,
            skip,
            sort,
            fields,
            partition,
            r,
            conflicts,
            stale_ok,
            update,
            stable,
            execution_stats,
        })
    }

    /// The options as `_explain` shows them (`opts`), in CouchDB's order.
    pub(crate) fn explain_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("use_index".into(), self.use_index.clone().into());
        m.insert(
            "bookmark".into(),
            Value::String(self.bookmark.clone().unwrap_or_else(|| "nil".into())),
        );
        m.insert("limit".into(), self.limit.into());
        m.insert("skip".into(), self.skip.into());
        m.insert("sort".into(), self.sort.to_json());
        m.insert("fields".into(), self.fields.clone().into());
        m.insert("partition".into(), self.partition.clone().into());
        m.insert("r".into(), self.r.into());
        m.insert("conflicts".into(), self.conflicts.into());
        m.insert(
            "stale".into(),
            if self.stale_ok {
                Value::String("ok".into())
            } else {
                Value::Bool(false)
            },
        );
        m.insert("update".into(), self.update.into());
        m.insert("stable".into(), self.stable.into());
        m.insert("execution_stats".into(), self.execution_stats.into());
        Value::Object(m)
    }
}

/// `mango_opts:validate_use_index/1`.
fn parse_use_index(v: &Value) -> Result<UseIndex> {
    let bad = || {
        mango(
            400,
            "invalid_index_name",
            format!("Invalid index name: {}", erl_w(v)),
        )
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => {
            let parts: Vec<&str> = s.splitn(2, '/').collect();
            match parts.as_slice() {
                [ddoc] => Ok(vec![(*ddoc).to_owned()]),
                ["_design", rest] => match rest.split_once('/') {
                    None => Ok(vec![(*rest).to_owned()]),
                    Some((d, n)) if !n.contains('/') => Ok(vec![d.to_owned(), n.to_owned()]),
                    Some(_) => Err(bad()),
                },
                [d, n] if !n.contains('/') => Ok(vec![(*d).to_owned(), (*n).to_owned()]),
                _ => Err(bad()),
            }
        }
        Value::Array(items) => match items.as_slice() {
            [] => Ok(Vec::new()),
            [Value::String(d)] => Ok(vec![d.clone()]),
            [Value::String(d), Value::String(n)] => Ok(vec![d.clone(), n.clone()]),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `mango_fields:new/1`.
fn parse_fields(v: &Value) -> Result<Vec<String>> {
    let Value::Array(items) = v else {
        return Err(mango(
            400,
            "invalid_fields",
            format!("Fields must be an array of strings, not: {}", erl_w(v)),
        ));
    };
    items
        .iter()
        .map(|f| match f {
            Value::String(s) => Ok(s.clone()),
            other => Err(mango(
                400,
                "invalid_field",
                format!("Invalid JSON for field spec: {}", erl_w(other)),
            )),
        })
        .collect()
}

fn non_neg(v: Option<&Value>) -> Result<Option<u64>> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(mango(
            400,
            "invalid_non_neg_integer",
            format!(
                "{} is not an integer greater than or equal to zero",
                erl_w(other)
            ),
        )),
    }
}

pub(crate) fn pos_int(v: &Value) -> Result<u64> {
    match v {
        Value::Number(n) if n.as_u64().is_some_and(|n| n > 0) => Ok(n.as_u64().unwrap_or(1)),
        other => Err(mango(
            400,
            "invalid_pos_integer",
            format!("{} is not an integer greater than zero", erl_w(other)),
        )),
    }
}

fn boolean(v: Option<&Value>) -> Result<Option<bool>> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(mango(
            400,
            "invalid_boolean",
            format!("Invalid boolean value: {}", erl_w(other)),
        )),
    }
}

pub(crate) fn invalid_key(key: &str) -> Error {
    mango(
        400,
        "invalid_key",
        format!("Invalid key {key} for this request."),
    )
}

/// A mango error: CouchDB's status, `error` and `reason`.
pub(crate) fn mango(
    status: u16,
    error: &'static str,
    reason: impl Into<std::borrow::Cow<'static, str>>,
) -> Error {
    Error::couch(status, error, reason)
}

/// How Erlang's `io_lib:format("~w", [Term])` prints a JSON value decoded by CouchDB (jiffy's
/// EJSON): strings as binaries (`<<97,98>>`), objects as `{[{K,V}]}`, `null`/`true`/`false` as
/// atoms. CouchDB puts offending values in its error reasons this way. Output is bounded.
pub(crate) fn erl_w(value: &Value) -> String {
    let mut out = String::new();
    write_w(value, &mut out, 0);
    if out.len() > 400 {
        let mut end = 400;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

fn write_w(value: &Value, out: &mut String, depth: usize) {
    if depth > 20 || out.len() > 400 {
        out.push_str("...");
        return;
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => binary_w(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_w(item, out, depth + 1);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("{[");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('{');
                binary_w(k, out);
                out.push(',');
                write_w(v, out, depth + 1);
                out.push('}');
            }
            out.push_str("]}");
        }
    }
}

fn binary_w(s: &str, out: &mut String) {
    out.push_str("<<");
    for (i, b) in s.bytes().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&b.to_string());
    }
    out.push_str(">>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<FindOpts> {
        FindOpts::parse(v.as_object().unwrap_or(&Map::new()))
    }

    #[test]
    fn erlang_term_format() {
        assert_eq!(erl_w(&json!("ab")), "<<97,98>>");
        assert_eq!(erl_w(&json!({"a": [1, null]})), "{[{<<97>>,[1,null]}]}");
    }

    #[test]
    fn defaults_and_errors() {
        let o = parse(json!({"selector": {}})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((o.limit, o.skip, o.r, o.update), (25, 0, 1, true));
        let e = parse(json!({"selector": {}, "limit": -1}))
            .err()
            .map(|e| e.reason().into_owned());
        assert_eq!(
            e.as_deref(),
            Some("-1 is not an integer greater than or equal to zero")
        );
        let e = parse(json!({"selector": {}, "sort": [{"a": "asc"}, {"b": "desc"}]}))
            .err()
            .map(|e| e.error().to_owned());
        assert_eq!(e.as_deref(), Some("unsupported_mixed_sort"));
        assert_eq!(
            parse(json!({"selector": {}, "use_index": "_design/a/b"}))
                .map(|o| o.use_index)
                .ok(),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
    }
}
