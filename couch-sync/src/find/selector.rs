//! What the planner needs to know about a selector, from CouchDB's normalised form
//! (`mango_selector:normalize/1`): which fields it requires to exist, which it pins to one value,
//! and the key ranges it allows per field. Matching itself stays in [`crate::mango`].

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::json::collate;

/// A normalised selector: combinators, or one operator on one field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Norm {
    /// The empty selector `{}`.
    All,
    /// `$and`, `$or`, `$nor` with their arguments.
    Combine(&'static str, Vec<Norm>),
    /// `$not`.
    Not(Box<Norm>),
    /// `{"field": {"$op": arg}}`.
    Cond {
        field: String,
        op: String,
        arg: Value,
    },
}

impl Norm {
    /// As `_explain` shows the selector.
    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        match self {
            Norm::All => {}
            Norm::Combine(op, args) => {
                m.insert(
                    (*op).to_owned(),
                    Value::Array(args.iter().map(Norm::to_json).collect()),
                );
            }
            Norm::Not(inner) => {
                m.insert("$not".into(), inner.to_json());
            }
            Norm::Cond { field, op, arg } => {
                let mut c = Map::new();
                c.insert(op.clone(), arg.clone());
                m.insert(field.clone(), Value::Object(c));
            }
        }
        Value::Object(m)
    }
}

/// Operators whose argument is itself a selector on the element.
const SUB_SELECTOR_OPS: &[&str] = &["$elemMatch", "$allMatch", "$keyMapMatch"];

/// Normalises a selector that [`crate::mango::Selector::parse`] accepted: nested objects become
/// dotted paths, bare values `$eq`, several members an `$and`.
pub(crate) fn normalize(selector: &Value) -> Norm {
    let mut parts = Vec::new();
    match selector {
        Value::Object(m) if !m.is_empty() => norm_object(m, None, &mut parts),
        _ => return Norm::All,
    }
    match parts.len() {
        1 => parts.pop().unwrap_or(Norm::Combine("$and", Vec::new())),
        _ => Norm::Combine("$and", parts),
    }
}

fn join(prefix: Option<&str>, key: &str) -> String {
    match prefix {
        Some(p) => format!("{p}.{key}"),
        None => key.to_owned(),
    }
}

fn norm_object(m: &Map<String, Value>, prefix: Option<&str>, out: &mut Vec<Norm>) {
    for (k, v) in m {
        match k.as_str() {
            "$and" | "$or" | "$nor" => {
                let op = match k.as_str() {
                    "$and" => "$and",
                    "$or" => "$or",
                    _ => "$nor",
                };
                let args = v
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|item| {
                                let mut parts = Vec::new();
                                match item {
                                    Value::Object(im) => norm_object(im, prefix, &mut parts),
                                    other => parts.push(Norm::Cond {
                                        field: prefix.unwrap_or_default().to_owned(),
                                        op: "$eq".into(),
                                        arg: other.clone(),
                                    }),
                                }
                                collapse(parts)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Norm::Combine(op, args));
            }
            "$not" => {
                let mut parts = Vec::new();
                if let Value::Object(im) = v {
                    norm_object(im, prefix, &mut parts);
                }
                out.push(Norm::Not(Box::new(collapse(parts))));
            }
            op if op.starts_with('$') => {
                let arg = if SUB_SELECTOR_OPS.contains(&op) {
                    match v {
                        Value::Object(_) => normalize(v).to_json(),
                        other => other.clone(),
                    }
                } else {
                    v.clone()
                };
                out.push(Norm::Cond {
                    field: prefix.unwrap_or_default().to_owned(),
                    op: op.to_owned(),
                    arg,
                });
            }
            field => {
                let path = join(prefix, field);
                match v {
                    Value::Object(im) if !im.is_empty() => norm_object(im, Some(&path), out),
                    other => out.push(Norm::Cond {
                        field: path,
                        op: "$eq".into(),
                        arg: other.clone(),
                    }),
                }
            }
        }
    }
}

fn collapse(mut parts: Vec<Norm>) -> Norm {
    if parts.len() == 1 {
        parts.pop().unwrap_or(Norm::Combine("$and", Vec::new()))
    } else {
        Norm::Combine("$and", parts)
    }
}

/// `mango_selector:has_required_fields/2`'s view: the fields every matching document has.
pub(crate) fn required_fields(norm: &Norm) -> BTreeSet<String> {
    match norm {
        Norm::Combine("$and", args) => args.iter().flat_map(required_fields).collect(),
        Norm::Combine("$or", args) => {
            let mut sets = args.iter().map(required_fields);
            match sets.next() {
                None => BTreeSet::new(),
                Some(first) => sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect()),
            }
        }
        Norm::Cond { field, op, arg } => {
            if op == "$exists" && *arg == Value::Bool(false) {
                BTreeSet::new()
            } else {
                BTreeSet::from([field.clone()])
            }
        }
        _ => BTreeSet::new(),
    }
}

/// `mango_selector:is_constant_field/2`: the selector pins `field` with `$eq` at the top.
pub(crate) fn is_constant_field(norm: &Norm, field: &str) -> bool {
    match norm {
        Norm::Combine("$and", args) => args.iter().any(|a| is_constant_field(a, field)),
        Norm::Cond { field: f, op, .. } => f == field && op == "$eq",
        _ => false,
    }
}

/// A key range on one field: bounds with their inclusiveness.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Range {
    pub(crate) low: Option<(Value, bool)>,
    pub(crate) high: Option<(Value, bool)>,
}

/// `mango_idx_view:field_ranges/1`: the top-level conditions an index can serve, merged per
/// field, in the order fields first appear.
pub(crate) fn field_ranges(norm: &Norm) -> Vec<(String, Range)> {
    let mut out: Vec<(String, Range)> = Vec::new();
    let conds: Vec<&Norm> = match norm {
        Norm::Combine("$and", args) => args.iter().collect(),
        other => vec![other],
    };
    for c in conds {
        let Norm::Cond { field, op, arg } = c else {
            continue;
        };
        let (low, high) = match op.as_str() {
            "$eq" => (Some((arg.clone(), true)), Some((arg.clone(), true))),
            "$gt" => (Some((arg.clone(), false)), None),
            "$gte" => (Some((arg.clone(), true)), None),
            "$lt" => (None, Some((arg.clone(), false))),
            "$lte" => (None, Some((arg.clone(), true))),
            "$exists" if *arg == Value::Bool(true) => (None, None),
            "$beginsWith" => match arg {
                Value::String(s) => (
                    Some((arg.clone(), true)),
                    Some((Value::String(format!("{s}\u{10ffff}")), true)),
                ),
                _ => continue,
            },
            _ => continue,
        };
        match out.iter_mut().find(|(f, _)| f == field) {
            Some((_, r)) => {
                if let Some(l) = low {
                    if r.low
                        .as_ref()
                        .is_none_or(|cur| collate(&l.0, &cur.0) == Ordering::Greater)
                    {
                        r.low = Some(l);
                    }
                }
                if let Some(h) = high {
                    if r.high
                        .as_ref()
                        .is_none_or(|cur| collate(&h.0, &cur.0) == Ordering::Less)
                    {
                        r.high = Some(h);
                    }
                }
            }
            None => out.push((field.clone(), Range { low, high })),
        }
    }
    out
}

/// Splits a field path as CouchDB does: `.` separates, a backslash escapes the next character.
pub(crate) fn split_path(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.last_mut().map_or((), |s| s.push(n)),
                None => out.last_mut().map_or((), |s| s.push('\\')),
            },
            '.' => out.push(String::new()),
            c => out.last_mut().map_or((), |s| s.push(c)),
        }
    }
    out
}

/// `mango_doc:get_field/2`: the value at a path, if there is one.
pub(crate) fn get_field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = doc;
    for seg in split_path(path) {
        cur = match cur {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// `mango_doc:set_field/3` into an object being built for a `fields` projection.
pub(crate) fn set_field(out: &mut Map<String, Value>, path: &str, value: Value) {
    let segs = split_path(path);
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = out;
    for seg in parents {
        let entry = cur
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        cur = next;
    }
    cur.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalizes_like_couchdb() {
        assert_eq!(
            normalize(&json!({"a": 1, "b": {"c": {"$gt": 2, "$lt": 5}}})).to_json(),
            json!({"$and": [{"a": {"$eq": 1}}, {"b.c": {"$gt": 2}}, {"b.c": {"$lt": 5}}]})
        );
        assert_eq!(
            normalize(&json!({"a": 1})).to_json(),
            json!({"a": {"$eq": 1}})
        );
    }

    #[test]
    fn required_fields_of_or_are_common_ones() {
        let n = normalize(&json!({"$or": [{"a": 1, "b": 2}, {"a": 3}], "c": {"$exists": false}}));
        assert_eq!(required_fields(&n), BTreeSet::from(["a".to_owned()]));
    }

    #[test]
    fn paths() {
        let doc = json!({"a": {"b.c": [1, {"d": 2}]}});
        assert_eq!(get_field(&doc, "a.b\\.c.1.d"), Some(&json!(2)));
        assert_eq!(get_field(&doc, "a.x"), None);
        let mut out = Map::new();
        set_field(&mut out, "a.b", json!(1));
        set_field(&mut out, "a.c", json!(2));
        assert_eq!(Value::Object(out), json!({"a": {"b": 1, "c": 2}}));
    }
}
