//! Design documents' functions where the database uses them: `validate_doc_update` on writes
//! (compiled once per set of design-document revisions, see [`Validators`]) and `_changes`
//! filter functions and `filter=_view` ([`JsFilter`]), as Apache CouchDB 3.4 runs them
//! (`couch_db:validate_doc_update`, `couch_changes:configure_filter` and `filter/3`,
//! `couch_query_servers:filter_docs` and `filter_view`).

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::{FilterFn, JsError, MapFn, Sandbox, SandboxConfig, ValidateFn, Validation};
use crate::error::{Error, Result};

/// The `language` of a design document (`javascript` unless it says otherwise).
pub(crate) fn language(ddoc: &Map<String, Value>) -> &str {
    ddoc.get("language")
        .and_then(Value::as_str)
        .unwrap_or("javascript")
}

/// 500 `unknown_query_language`, CouchDB's answer when no query server runs a design
/// document's language.
pub(crate) fn unknown_language(ddoc: &Map<String, Value>) -> Error {
    let shown: String = language(ddoc).chars().take(100).collect();
    Error::couch(500, "unknown_query_language", shown)
}

/// One design document's compiled `validate_doc_update`, in a sandbox of its own (the design
/// document is its `this`).
struct Compiled {
    sandbox: Sandbox,
    function: ValidateFn,
}

/// The `validate_doc_update` functions of a database's live design documents, compiled, with
/// the design documents' ids and winning revisions they were compiled from.
pub(crate) struct Validators {
    key: Vec<(String, String)>,
    /// In design-document id order, as CouchDB runs them; a function that did not compile
    /// fails every write (as it would in CouchDB) with its error.
    functions: Vec<std::result::Result<Compiled, Failed>>,
}

/// Why a design document's function cannot run (kept to answer every write with it).
#[derive(Debug, Clone)]
struct Failed {
    status: u16,
    error: String,
    reason: String,
}

impl From<Error> for Failed {
    fn from(e: Error) -> Failed {
        Failed {
            status: e.status(),
            error: e.error().to_owned(),
            reason: e.reason().into_owned(),
        }
    }
}

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validators")
            .field("key", &self.key)
            .field("functions", &self.functions.len())
            .finish()
    }
}

impl Validators {
    /// Whether these were compiled from exactly these design documents (`(id, rev)` of every
    /// live one).
    pub(crate) fn matches(&self, key: &[(String, String)]) -> bool {
        self.key == key
    }

    /// Compiles the `validate_doc_update` of each design document (id, body); `key` names
    /// every live design document and its winning revision.
    pub(crate) fn compile(
        key: Vec<(String, String)>,
        ddocs: Vec<(String, Map<String, Value>)>,
    ) -> Validators {
        let mut functions = Vec::new();
        for (id, body) in ddocs {
            let Some(source) = body.get("validate_doc_update") else {
                continue;
            };
            if language(&body) != "javascript" {
                functions.push(Err(unknown_language(&body).into()));
                continue;
            }
            functions.push(compile_one(&id, source, &body).map_err(Failed::from));
        }
        Validators { key, functions }
    }

    /// Whether any design document has a `validate_doc_update`.
    pub(crate) fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// Runs every function on the update, in order; the first refusal is the answer:
    /// `forbidden` 403, `unauthorized` 401. A function that throws an error, runs out of its
    /// budget or memory fails the write with a 500.
    pub(crate) fn check(
        &mut self,
        new_doc: &Value,
        old_doc: Option<&Value>,
        user_ctx: &Value,
        sec_obj: &Value,
    ) -> Result<()> {
        for compiled in &mut self.functions {
            let compiled = match compiled {
                Ok(c) => c,
                Err(e) => return Err(Error::couch(e.status, e.error.clone(), e.reason.clone())),
            };
            let verdict = compiled
                .function
                .run(&mut compiled.sandbox, new_doc, old_doc, user_ctx, sec_obj)
                .map_err(Error::from)?;
            match verdict.value {
                Validation::Allowed => {}
                Validation::Forbidden(reason) => return Err(Error::forbidden(reason)),
                Validation::Unauthorized(reason) => return Err(Error::unauthorized(reason)),
            }
        }
        Ok(())
    }
}

fn compile_one(
    id: &str,
    source: &Value,
    ddoc: &Map<String, Value>,
) -> std::result::Result<Compiled, Error> {
    let Value::String(source) = source else {
        return Err(JsError::Compile {
            kind: "validate_doc_update",
            name: id.to_owned(),
            message: "validate_doc_update is not a string".into(),
        }
        .into());
    };
    let mut sandbox = Sandbox::new(SandboxConfig::default())?;
    sandbox.set_design_doc(&ddoc_json(id, ddoc))?;
    let function = sandbox.compile_validate(id, source)?;
    Ok(Compiled { sandbox, function })
}

/// The design document as its functions see it (`this`): the body with its `_id`.
fn ddoc_json(id: &str, body: &Map<String, Value>) -> Value {
    let mut json = Map::with_capacity(body.len() + 1);
    json.insert("_id".into(), Value::String(id.to_owned()));
    json.extend(body.iter().map(|(k, v)| (k.clone(), v.clone())));
    Value::Object(json)
}

enum FilterKind {
    /// `filter=ddoc/name`: `filter(doc, req)`.
    Function { function: FilterFn, req: Value },
    /// `filter=_view&view=ddoc/name`: the document passes when the map function emits.
    View(MapFn),
}

struct FilterState {
    sandbox: Sandbox,
    kind: FilterKind,
}

/// A `_changes` filter function or `_view` filter, compiled for one request (or one
/// replication): cheap to clone, the clones share one sandbox.
#[derive(Clone)]
pub struct JsFilter(Arc<Mutex<FilterState>>);

impl std::fmt::Debug for JsFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsFilter(..)")
    }
}

/// `missing json key: <key>`, CouchDB's 404 for a design document without the member.
fn missing_key(key: &str) -> Error {
    let shown: String = key.chars().take(200).collect();
    Error::not_found(format!("missing json key: {shown}"))
}

/// The function source at `ddoc[member][name]` (`ddoc.views[name].map` for views), or
/// CouchDB's error (`couch_util:get_nested_json_value`).
fn member<'a>(ddoc: &'a Map<String, Value>, path: &[&str]) -> Result<&'a Value> {
    let mut current: Option<&Value> = None;
    let mut object = ddoc;
    for (i, key) in path.iter().enumerate() {
        let value = object.get(*key).ok_or_else(|| missing_key(key))?;
        current = Some(value);
        if i + 1 < path.len() {
            object = value
                .as_object()
                .ok_or_else(|| Error::not_found("json_mismatch"))?;
        }
    }
    current.ok_or_else(|| Error::not_found("missing"))
}

impl JsFilter {
    /// Filter function `name` of design document `id` (its body `ddoc`), run with `req` as its
    /// second argument. CouchDB's 404 when the document lacks it, 500 `unknown_query_language`
    /// for a language other than JavaScript.
    pub fn filter(id: &str, ddoc: &Map<String, Value>, name: &str, req: Value) -> Result<JsFilter> {
        let source = member(ddoc, &["filters", name])?;
        if language(ddoc) != "javascript" {
            return Err(unknown_language(ddoc));
        }
        let source = source.as_str().ok_or_else(|| JsError::Compile {
            kind: "filter",
            name: name.to_owned(),
            message: "the filter is not a string".into(),
        })?;
        let mut sandbox = Sandbox::new(SandboxConfig::default())?;
        sandbox.set_design_doc(&ddoc_json(id, ddoc))?;
        let function = sandbox.compile_filter(name, source)?;
        Ok(JsFilter(Arc::new(Mutex::new(FilterState {
            sandbox,
            kind: FilterKind::Function { function, req },
        }))))
    }

    /// View `name`'s map function of design document `id`, as a filter (`filter=_view`).
    pub fn view(id: &str, ddoc: &Map<String, Value>, name: &str) -> Result<JsFilter> {
        member(ddoc, &["views", name])?;
        let source = member(ddoc, &["views", name, "map"])?;
        if language(ddoc) != "javascript" {
            return Err(unknown_language(ddoc));
        }
        let source = source.as_str().ok_or_else(|| JsError::Compile {
            kind: "map",
            name: name.to_owned(),
            message: "the map function is not a string".into(),
        })?;
        let mut sandbox = Sandbox::new(SandboxConfig::default())?;
        sandbox.set_design_doc(&ddoc_json(id, ddoc))?;
        let function = sandbox.compile_map(name, source)?;
        Ok(JsFilter(Arc::new(Mutex::new(FilterState {
            sandbox,
            kind: FilterKind::View(function),
        }))))
    }

    /// Whether `doc` (a revision as CouchDB passes it: with `_revisions`, and `_deleted` for a
    /// deletion) passes. A filter that throws fails the request with its error; a map
    /// function that throws emits nothing, so the document does not pass.
    pub fn passes(&self, doc: &Value) -> Result<bool> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        match &state.kind {
            FilterKind::Function { function, req } => Ok(function
                .run(&mut state.sandbox, doc, req)
                .map_err(Error::from)?
                .value),
            FilterKind::View(map) => match map.run(&mut state.sandbox, doc) {
                Ok(out) => Ok(!out.value.is_empty()),
                Err(JsError::Thrown { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            },
        }
    }
}
