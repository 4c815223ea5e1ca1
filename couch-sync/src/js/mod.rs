//! Design-document JavaScript on QuickJS (feature `js`): view map and reduce functions, `_changes`
//! filter functions and `validate_doc_update`, run the way CouchDB 3.4's QuickJS query server runs
//! them (`share/server/*.js`, `couch_query_servers.erl`).
//!
//! A [`Sandbox`] is one QuickJS runtime and context, reused across calls and bounded: a memory
//! limit, a native stack limit, and an operation budget per call (no clock is read: the budget
//! counts QuickJS's interrupt checks, one about every 10,000 bytecode branches and calls). A call
//! that exceeds a bound fails with [`JsError::BudgetExhausted`] or [`JsError::OutOfMemory`] and
//! the sandbox stays usable. Functions see the standard ECMAScript built-ins (no `Promise`,
//! `performance` or `WeakRef`), and CouchDB's helpers `emit`, `log`, `sum`, `isArray` and
//! `toJSON`; nothing of the host (no files, network, modules, `require`, `print`, `console`).
//! `Date` is there for dates made from document values (`new Date(doc.time)`, `Date.UTC`,
//! `Date.parse`), but not the clock: `Date.now()`, `new Date()` and `Date()` throw (CouchDB allows
//! them; a view here is a function of the document alone).
//!
//! ```
//! use couch_sync::js::{Sandbox, SandboxConfig};
//! use serde_json::json;
//!
//! let mut sandbox = Sandbox::new(SandboxConfig::default())?;
//! let by_type = sandbox.compile_map("by_type", "function (doc) { emit(doc.type, 1); }")?;
//! let out = by_type.run(&mut sandbox, &json!({"_id": "a", "type": "post"}))?;
//! assert_eq!(out.value, vec![(json!("post"), json!(1))]);
//! # Ok::<(), couch_sync::js::JsError>(())
//! ```
//!
//! Functions compiled in one sandbox share its globals, as functions in one CouchDB query-server
//! process do: give each design document its own sandbox.

pub(crate) mod ddoc;
mod functions;
mod sandbox;

pub use ddoc::JsFilter;
pub use functions::{FilterFn, MapFn, ReduceFn, ValidateFn, Validation};
pub use sandbox::{Output, Sandbox, SandboxConfig};

/// A design-document function failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsError {
    /// The source is not a function expression, or compiling it failed (CouchDB's
    /// `compilation_error`, 400 when a design document is saved).
    #[error("compilation of the {kind} function '{name}' failed: {message}")]
    Compile {
        /// Which kind of function (`map`, `reduce`, `filter`, `validate_doc_update`).
        kind: &'static str,
        /// The function's name (view, filter) as the caller gave it.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The function threw. CouchDB's policy depends on the function: a throwing map function
    /// emits nothing for that document (the error is logged); a throwing reduce gives `null`; a
    /// throwing filter or validation function fails the request.
    #[error("function raised exception {name}: {message}")]
    Thrown {
        /// The error's `name` (`TypeError`, ...), or `unnamed_error` for a thrown non-Error value.
        name: String,
        /// The error's message, or the thrown value as JSON.
        message: String,
    },
    /// The call used up its operation budget (an endless loop, say).
    #[error("JavaScript execution budget of {budget} exhausted")]
    BudgetExhausted {
        /// The budget (interrupt checks per call).
        budget: u64,
    },
    /// The call hit the sandbox's memory limit.
    #[error("JavaScript memory limit of {limit} bytes exceeded")]
    OutOfMemory {
        /// The limit in bytes.
        limit: usize,
    },
    /// A function was run in a sandbox other than the one that compiled it.
    #[error("function compiled in another sandbox")]
    WrongSandbox,
    /// The engine failed, or a function returned something that is not JSON.
    #[error("JavaScript engine: {0}")]
    Engine(String),
}

impl From<JsError> for crate::Error {
    fn from(e: JsError) -> crate::Error {
        let reason = e.to_string();
        match e {
            JsError::Compile { .. } => crate::Error::couch(400, "compilation_error", reason),
            JsError::Thrown { name, message } => crate::Error::couch(500, name, message),
            JsError::BudgetExhausted { .. } | JsError::OutOfMemory { .. } => {
                crate::Error::couch(500, "os_process_error", reason)
            }
            JsError::WrongSandbox | JsError::Engine(_) => {
                crate::Error::couch(500, "internal_server_error", reason)
            }
        }
    }
}
