//! Mango indexes: the special `_all_docs` index and JSON indexes kept in design documents with
//! `"language": "query"`, exactly as CouchDB stores them (`mango_idx.erl`, `mango_idx_view.erl`,
//! `mango_idx_special.erl`), so they replicate like CouchDB's:
//!
//! ```json
//! {"_id": "_design/ddoc", "language": "query",
//!  "views": {"name": {"map": {"fields": {"a": "asc"}, "partial_filter_selector": {}},
//!                     "reduce": "_count", "options": {"def": {"fields": ["a"]}}}}}
//! ```

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use sha2::Digest;

use super::opts::{Dir, Sort, erl_w, invalid_key, mango, pos_int};
use super::selector::{self, Norm};
use crate::error::Result;
use crate::mango::Selector;

/// What kind of index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// `_all_docs`: every document, by id.
    Special,
    /// A JSON index: documents that have all its fields (and match its partial filter).
    Json {
        /// The index's fields, in key order.
        columns: Vec<String>,
        /// `partial_filter_selector`, normalised (absent when empty).
        partial: Option<Value>,
    },
}

/// One index.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    /// `_design/...`; `None` for `_all_docs`.
    pub(crate) ddoc: Option<String>,
    pub(crate) name: String,
    pub(crate) kind: Kind,
}

impl Index {
    pub(crate) fn special() -> Index {
        Index {
            ddoc: None,
            name: "_all_docs".into(),
            kind: Kind::Special,
        }
    }

    pub(crate) fn columns(&self) -> Vec<String> {
        match &self.kind {
            Kind::Special => vec!["_id".into()],
            Kind::Json { columns, .. } => columns.clone(),
        }
    }

    pub(crate) fn partial(&self) -> Option<&Value> {
        match &self.kind {
            Kind::Json { partial, .. } => partial.as_ref(),
            Kind::Special => None,
        }
    }

    pub(crate) fn is_special(&self) -> bool {
        self.kind == Kind::Special
    }

    /// `mango_idx:to_json/1`, as `GET /db/_index` and `_explain` show it.
    pub(crate) fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Special => json!({
                "ddoc": null, "name": "_all_docs", "type": "special",
                "def": {"fields": [{"_id": "asc"}]}
            }),
            Kind::Json { columns, partial } => {
                let fields: Vec<Value> = columns.iter().map(|c| json!({ c: "asc" })).collect();
                let mut def = Map::new();
                def.insert("fields".into(), fields.into());
                if let Some(p) = partial {
                    def.insert("partial_filter_selector".into(), p.clone());
                }
                json!({
                    "ddoc": self.ddoc, "name": self.name, "type": "json",
                    "partitioned": false, "def": def
                })
            }
        }
    }

    /// `mango_idx_*:is_usable/3`: whether the index can answer `selector` sorted by `sort`.
    pub(crate) fn is_usable(&self, norm: &Norm, sort: &Sort) -> bool {
        let sort_fields = sort.names();
        match &self.kind {
            Kind::Special => sort_fields.is_empty() || sort_fields == ["_id"],
            Kind::Json { columns, partial } => {
                let mut required: BTreeSet<&str> = columns.iter().map(String::as_str).collect();
                for f in sort_fields.iter().chain(["_id", "_rev"].iter()) {
                    required.remove(f);
                }
                let mut have = selector::required_fields(norm);
                if let Some(p) = partial {
                    have.extend(selector::required_fields(&selector::normalize(p)));
                }
                required.iter().all(|f| have.contains(*f))
                    && can_use_sort(columns, &sort_fields, norm)
            }
        }
    }

    /// Whether a document belongs in the index, and its key there.
    pub(crate) fn key_of(
        &self,
        id: &str,
        doc: &Value,
        partial: Option<&Selector>,
    ) -> Option<Value> {
        match &self.kind {
            Kind::Special => Some(Value::String(id.to_owned())),
            Kind::Json { columns, .. } => {
                if partial.is_some_and(|p| !p.matches(doc)) {
                    return None;
                }
                let mut key = Vec::with_capacity(columns.len());
                for c in columns {
                    key.push(selector::get_field(doc, c)?.clone());
                }
                Some(Value::Array(key))
            }
        }
    }
}

/// `mango_idx_view:can_use_sort/3`: the sort is a prefix of the columns once columns the
/// selector pins to one value are passed over.
fn can_use_sort(columns: &[String], sort: &[&str], norm: &Norm) -> bool {
    if sort.is_empty() {
        return true;
    }
    let mut cols = columns;
    loop {
        match cols.first() {
            None => return false,
            Some(c) if c == sort[0] => {
                return cols.len() >= sort.len() && cols.iter().zip(sort).all(|(c, s)| c == s);
            }
            Some(c) if selector::is_constant_field(norm, c) => cols = &cols[1..],
            Some(_) => return false,
        }
    }
}

/// The indexes a database's design documents define (`mango_idx:list/1`), `_all_docs` first.
pub(crate) fn from_ddocs(ddocs: &[(String, Map<String, Value>)]) -> Vec<Index> {
    let mut out = vec![Index::special()];
    for (id, body) in ddocs {
        if body.get("language").and_then(Value::as_str) != Some("query") {
            continue;
        }
        let Some(views) = body.get("views").and_then(Value::as_object) else {
            continue;
        };
        for (name, view) in views {
            let Some(map) = view.get("map").and_then(Value::as_object) else {
                continue;
            };
            let Some(fields) = map.get("fields").and_then(Value::as_object) else {
                continue;
            };
            let partial = map
                .get("partial_filter_selector")
                .filter(|p| p.as_object().is_some_and(|o| !o.is_empty()))
                .cloned();
            if partial
                .as_ref()
                .is_some_and(|p| Selector::parse(p).is_err())
            {
                continue;
            }
            out.push(Index {
                ddoc: Some(id.clone()),
                name: name.clone(),
                kind: Kind::Json {
                    columns: fields.keys().cloned().collect(),
                    partial,
                },
            });
        }
    }
    out
}

/// A validated `POST /db/_index` body.
#[derive(Debug, Clone)]
pub(crate) struct NewIndex {
    pub(crate) ddoc: String,
    pub(crate) name: String,
    /// The stored `map`: `{"fields": {...}, "partial_filter_selector": {...}}`.
    map: Value,
    /// The definition as given, kept in `options.def`.
    def: Value,
}

const INDEX_KEYS: &[&str] = &["index", "type", "name", "ddoc", "w", "partitioned"];

impl NewIndex {
    /// `mango_opts:validate_idx_create/1` + `mango_idx:new/2` + `mango_idx_view:validate_new/2`.
    pub(crate) fn parse(body: &Map<String, Value>) -> Result<NewIndex> {
        let Some(def) = body.get("index") else {
            return Err(mango(
                400,
                "missing_required_key",
                "Missing required key: index",
            ));
        };
        let string_opt = |key: &str| -> Result<Option<String>> {
            match body.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(mango(
                    400,
                    "invalid_string",
                    format!("Invalid string: {}", erl_w(v)),
                )),
            }
        };
        let kind = string_opt("type")?;
        let name = string_opt("name")?;
        let ddoc = string_opt("ddoc")?;
        if let Some(w) = body.get("w") {
            pos_int(w)?;
        }
        match body.get("partitioned") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                return Err(mango(
                    400,
                    "invalid_partitioned_option",
                    "Partitioned option is only valid on partitioned databases",
                ));
            }
            Some(v) => {
                return Err(mango(
                    500,
                    "unknown_error",
                    format!(
                        "Unknown Error: mango_opts :: {{invalid_partitioned_value,{}}}",
                        erl_w(v)
                    ),
                ));
            }
        }
        if let Some(key) = body.keys().find(|k| !INDEX_KEYS.contains(&k.as_str())) {
            return Err(invalid_key(key));
        }
        match kind.as_deref() {
            None | Some("json") => {}
            Some("text") | Some("nouveau") => {
                return Err(mango(
                    503,
                    "required index service unavailable",
                    kind.unwrap_or_default(),
                ));
            }
            Some(other) => {
                return Err(mango(
                    400,
                    "invalid_index",
                    format!("Invalid type for index: {other}"),
                ));
            }
        }
        let Value::Object(def_map) = def else {
            return Err(mango(
                400,
                "invalid_index",
                format!("JSON indexes must be an object, not: {}", erl_w(def)),
            ));
        };
        let Some(fields) = def_map.get("fields") else {
            return Err(mango(
                400,
                "missing_required_key",
                "Missing required key: fields",
            ));
        };
        let sort = Sort::parse(fields)?;
        if sort.fields.is_empty() {
            return Err(mango(
                400,
                "invalid_index",
                "Index fields must not be empty",
            ));
        }
        let partial = match def_map.get("partial_filter_selector") {
            None => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => {
                Selector::parse(v)?;
                selector::normalize(v).to_json()
            }
            Some(v) => {
                return Err(mango(
                    400,
                    "invalid_selector_json",
                    format!("Selector must be a JSON object, not: {}", erl_w(v)),
                ));
            }
        };
        if let Some(key) = def_map
            .keys()
            .find(|k| !["fields", "partial_filter_selector", "selector"].contains(&k.as_str()))
        {
            return Err(invalid_key(key));
        }
        let map = json!({
            "fields": Value::Object(sort.fields.iter()
                .map(|(f, d)| (f.clone(), Value::String(Dir::as_str(*d).into())))
                .collect()),
            "partial_filter_selector": partial,
        });
        // CouchDB names an index by a hash of its definition and options; the same hash names
        // both the design document and the index when neither is given.
        let generated = {
            let mut bytes = Vec::new();
            crate::json::canonical(&json!([def, kind, name, ddoc]), &mut bytes);
            let digest = sha2::Sha256::digest(&bytes);
            data_encoding::HEXLOWER.encode(&digest[..20])
        };
        let ddoc = match ddoc {
            Some(d) if d.starts_with("_design/") => d,
            Some(d) => format!("_design/{d}"),
            None => format!("_design/{generated}"),
        };
        let name = name.unwrap_or(generated);
        Ok(NewIndex {
            ddoc,
            name,
            map,
            def: def.clone(),
        })
    }

    /// `mango_idx_view:add/2`: the design document with this index in it; `None` when it is
    /// already there, identical (`"result": "exists"`).
    pub(crate) fn add_to(&self, ddoc: &mut Map<String, Value>) -> bool {
        let view = json!({
            "map": self.map,
            "reduce": "_count",
            "options": {"def": self.def},
        });
        if !ddoc.contains_key("language") {
            ddoc.insert("language".into(), "query".into());
        }
        let views = ddoc
            .entry("views")
            .or_insert_with(|| Value::Object(Map::new()));
        if !views.is_object() {
            *views = Value::Object(Map::new());
        }
        let Value::Object(views) = views else {
            return false;
        };
        if views.get(&self.name) == Some(&view) {
            return false;
        }
        views.insert(self.name.clone(), view);
        true
    }
}

/// `mango_idx_view:remove/2`: drops the view; whether the design document is then empty
/// (nothing but `language`), in which case CouchDB deletes it.
pub(crate) fn remove_from(ddoc: &mut Map<String, Value>, name: &str) -> bool {
    if let Some(Value::Object(views)) = ddoc.get_mut("views") {
        views.remove(name);
        if views.is_empty() {
            ddoc.remove("views");
        }
    }
    ddoc.keys()
        .filter(|k| !k.starts_with('_'))
        .all(|k| k == "language")
}
