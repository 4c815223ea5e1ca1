//! The four kinds of design-document function, compiled in a [`Sandbox`] and run there.

use serde_json::Value;

use super::JsError;
use super::sandbox::{Answer, Output, Sandbox, to_json};

/// A compiled function: which sandbox, which slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Compiled {
    sandbox: u64,
    index: usize,
    name: String,
}

impl Compiled {
    fn new(
        sb: &mut Sandbox,
        kind: &'static str,
        name: &str,
        source: &str,
    ) -> Result<Self, JsError> {
        Ok(Compiled {
            sandbox: sb.id(),
            index: sb.compile(kind, name, source)?,
            name: name.to_owned(),
        })
    }

    fn invoke(
        &self,
        sb: &mut Sandbox,
        entry: &'static str,
        args: &[String],
        flag: Option<bool>,
    ) -> Result<Answer, JsError> {
        if sb.id() != self.sandbox {
            return Err(JsError::WrongSandbox);
        }
        sb.invoke(entry, self.index, args, flag)
    }
}

/// A view's map function: `function (doc) { emit(key, value); }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFn(Compiled);

/// A view's JavaScript reduce function: `function (keys, values, rereduce) { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduceFn(Compiled);

/// A `_changes` filter function: `function (doc, req) { return ...; }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFn(Compiled);

/// A `validate_doc_update` function: `function (newDoc, oldDoc, userCtx, secObj) { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidateFn(Compiled);

/// What a `validate_doc_update` function decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Validation {
    /// It returned (whatever it returned): the update may go ahead.
    Allowed,
    /// It threw `{forbidden: message}`: CouchDB answers 403 `forbidden`.
    Forbidden(String),
    /// It threw `{unauthorized: message}`: CouchDB answers 401 `unauthorized`.
    Unauthorized(String),
}

impl Sandbox {
    /// Compiles a map function; `name` (the view's) appears in errors.
    pub fn compile_map(&mut self, name: &str, source: &str) -> Result<MapFn, JsError> {
        Compiled::new(self, "map", name, source).map(MapFn)
    }

    /// Compiles a JavaScript reduce function (built-ins such as `_sum` are in
    /// [`crate::reduce`]).
    pub fn compile_reduce(&mut self, name: &str, source: &str) -> Result<ReduceFn, JsError> {
        Compiled::new(self, "reduce", name, source).map(ReduceFn)
    }

    /// Compiles a filter function.
    pub fn compile_filter(&mut self, name: &str, source: &str) -> Result<FilterFn, JsError> {
        Compiled::new(self, "filter", name, source).map(FilterFn)
    }

    /// Compiles a `validate_doc_update` function.
    pub fn compile_validate(&mut self, name: &str, source: &str) -> Result<ValidateFn, JsError> {
        Compiled::new(self, "validate_doc_update", name, source).map(ValidateFn)
    }
}

fn json_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl MapFn {
    /// The name it was compiled with.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Runs the function on `doc` (frozen, as CouchDB seals it) and returns the `(key, value)`
    /// pairs it emitted, in order. Values JSON cannot hold become `null` as in CouchDB
    /// (`emit(k)` emits a `null` value). If it throws ([`JsError::Thrown`]), CouchDB indexes
    /// nothing for this document and logs the error; the other documents are unaffected.
    pub fn run(
        &self,
        sb: &mut Sandbox,
        doc: &Value,
    ) -> Result<Output<Vec<(Value, Value)>>, JsError> {
        let answer = self.0.invoke(sb, "map", &[to_json(doc)?], None)?;
        let rows = answer
            .rows
            .into_iter()
            .map(|row| match row {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let value = pair.pop().unwrap_or(Value::Null);
                    let key = pair.pop().unwrap_or(Value::Null);
                    Ok((key, value))
                }
                other => Err(JsError::Engine(format!("malformed emitted row {other}"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Output {
            value: rows,
            logs: answer.logs,
        })
    }
}

impl ReduceFn {
    /// The name it was compiled with.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Runs `reduce(keys, values, rereduce)`. `keys` are the rows' `[key, doc id]` pairs on a
    /// first reduce; on a rereduce pass `None` (the function sees `null`) and earlier reductions
    /// as `values`. A result JSON cannot hold (`undefined`) is `null`. If it throws, CouchDB logs
    /// the error and uses `null` as the reduction.
    pub fn run(
        &self,
        sb: &mut Sandbox,
        keys: Option<&[(Value, String)]>,
        values: &[Value],
        rereduce: bool,
    ) -> Result<Output<Value>, JsError> {
        let keys = match keys {
            Some(keys) => Value::Array(
                keys.iter()
                    .map(|(k, id)| Value::Array(vec![k.clone(), Value::String(id.clone())]))
                    .collect(),
            ),
            None => Value::Null,
        };
        let values = Value::Array(values.to_vec());
        let answer = self.0.invoke(
            sb,
            "reduce",
            &[to_json(&keys)?, to_json(&values)?],
            Some(rereduce),
        )?;
        Ok(Output {
            value: answer.value,
            logs: answer.logs,
        })
    }
}

impl FilterFn {
    /// The name it was compiled with.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Runs `filter(doc, req)` with the design document as `this`; passes on any truthy result,
    /// as CouchDB (`(fun(...) && true) || false`). If it throws, the request fails.
    pub fn run(&self, sb: &mut Sandbox, doc: &Value, req: &Value) -> Result<Output<bool>, JsError> {
        let answer = self
            .0
            .invoke(sb, "filter", &[to_json(doc)?, to_json(req)?], None)?;
        Ok(Output {
            value: answer.value == Value::Bool(true),
            logs: answer.logs,
        })
    }
}

impl ValidateFn {
    /// The name it was compiled with.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Runs `validate_doc_update(newDoc, oldDoc, userCtx, secObj)` with the design document as
    /// `this`. `old_doc` is `None` (`null`) for a new document. As CouchDB
    /// (`couch_query_servers:validate_doc_update`): returning is [`Validation::Allowed`];
    /// throwing `{forbidden: m}` or `{unauthorized: m}` is [`Validation::Forbidden`] or
    /// [`Validation::Unauthorized`]; throwing any other one-member object or a string is
    /// CouchDB's 500 `unknown_error` (here [`JsError::Thrown`] named `unknown_error`), and
    /// throwing an `Error` object is that error ([`JsError::Thrown`] with its name).
    pub fn run(
        &self,
        sb: &mut Sandbox,
        new_doc: &Value,
        old_doc: Option<&Value>,
        user_ctx: &Value,
        sec_obj: &Value,
    ) -> Result<Output<Validation>, JsError> {
        let args = Value::Array(vec![
            new_doc.clone(),
            old_doc.cloned().unwrap_or(Value::Null),
            user_ctx.clone(),
            sec_obj.clone(),
        ]);
        let answer = self.0.invoke(sb, "validate", &[to_json(&args)?], None)?;
        // `threw` is set whenever it threw, even a value JSON drops (a function).
        let thrown = match answer.value {
            Value::Object(mut o) if o.get("threw") == Some(&Value::Bool(true)) => {
                Some(o.remove("thrown").unwrap_or(Value::Null))
            }
            _ => None,
        };
        let value = match thrown {
            None => Validation::Allowed,
            Some(Value::Object(o)) if o.len() == 1 => match o.into_iter().next() {
                Some((k, m)) if k == "forbidden" => Validation::Forbidden(json_string(&m)),
                Some((k, m)) if k == "unauthorized" => Validation::Unauthorized(json_string(&m)),
                Some((_, m)) => return Err(unknown_error(json_string(&m))),
                None => return Err(unknown_error(String::new())),
            },
            Some(Value::String(m)) => return Err(unknown_error(m)),
            Some(other) => return Err(unknown_error(other.to_string())),
        };
        Ok(Output {
            value,
            logs: answer.logs,
        })
    }
}

fn unknown_error(message: String) -> JsError {
    JsError::Thrown {
        name: "unknown_error".into(),
        message,
    }
}
