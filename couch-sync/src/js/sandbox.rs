//! The bounded QuickJS runtime and context that design-document functions run in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rquickjs::context::{EvalOptions, intrinsic};
use rquickjs::{Context, Ctx, Function, Object, Runtime};
use serde_json::Value;

use super::JsError;

/// The helpers and entry points (see `prelude.js`).
const PRELUDE: &str = include_str!("prelude.js");

/// Promise jobs run after a call, at most.
const MAX_JOBS: u32 = 10_000;

/// Gives each sandbox an id, so a function is only ever run where it was compiled.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A sandbox's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SandboxConfig {
    /// Bytes the runtime may allocate in all (default 64 MiB).
    pub memory_limit: usize,
    /// Bytes of native stack a call may use (default 512 KiB; the calling thread needs more).
    pub max_stack_size: usize,
    /// Operations a call (or a compilation) may run, in QuickJS interrupt checks, each about
    /// 10,000 bytecode branches or calls. Default 2,000 (20 million branches): an endless loop
    /// stops after 0.25 to 1 s on a desktop CPU in a release build (measured: `while (true)
    /// {i++}` 0.24 s, a loop reading `doc.x.length` 1.1 s), several times that on a small ARM
    /// board; CouchDB's own limit is a 5 s `os_process_timeout`. A real map function uses a
    /// tiny fraction of it.
    pub budget: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_limit: 64 << 20,
            max_stack_size: 512 << 10,
            budget: 2_000,
        }
    }
}

impl SandboxConfig {
    /// With this memory limit in bytes.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// With this native stack limit in bytes.
    pub fn with_max_stack_size(mut self, bytes: usize) -> Self {
        self.max_stack_size = bytes;
        self
    }

    /// With this operation budget per call.
    pub fn with_budget(mut self, budget: u64) -> Self {
        self.budget = budget;
        self
    }
}

/// What a function returned, with the messages it passed to `log()`, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Output<T> {
    /// The result.
    pub value: T,
    /// The `log()` messages (non-strings as JSON, as CouchDB).
    pub logs: Vec<String>,
}

/// Counts interrupt checks during one call.
struct Budget {
    used: AtomicU64,
    limit: AtomicU64,
}

impl Budget {
    fn exhausted(&self) -> bool {
        self.used.load(Ordering::Relaxed) >= self.limit.load(Ordering::Relaxed)
    }
}

/// One QuickJS runtime and context, reused across calls; `Send`, so a worker thread can own it.
///
/// Compile functions with `compile_*`, run them with their `run` method and this sandbox.
pub struct Sandbox {
    /// Compiled functions so far (they live in the prelude's closure).
    functions: usize,
    context: Context,
    runtime: Runtime,
    budget: Arc<Budget>,
    config: SandboxConfig,
    id: u64,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("functions", &self.functions)
            .field("config", &self.config)
            .finish()
    }
}

/// How one call into the engine failed, before it is classified.
enum Failure {
    /// A JavaScript exception: its name and message.
    Exception(String, String),
    /// rquickjs failed otherwise.
    Engine(rquickjs::Error),
}

impl Sandbox {
    /// A new sandbox with these bounds and CouchDB's helpers defined.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, JsError> {
        let runtime = Runtime::new().map_err(|e| JsError::Engine(e.to_string()))?;
        runtime.set_memory_limit(config.memory_limit);
        runtime.set_max_stack_size(config.max_stack_size);
        let budget = Arc::new(Budget {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(config.budget),
        });
        let counter = Arc::clone(&budget);
        runtime.set_interrupt_handler(Some(Box::new(move || {
            counter.used.fetch_add(1, Ordering::Relaxed);
            counter.exhausted()
        })));
        // The standard built-ins CouchDB's functions use; no `performance` (a clock), no
        // WeakRef (GC-dependent). Promise is needed: `async` functions and `import()` make
        // promises whatever the intrinsics, and QuickJS only frees them cleanly with it.
        let context = Context::custom::<(
            intrinsic::Date,
            intrinsic::Eval,
            intrinsic::RegExpCompiler,
            intrinsic::RegExp,
            intrinsic::Json,
            intrinsic::Proxy,
            intrinsic::MapSet,
            intrinsic::TypedArrays,
            intrinsic::Promise,
        )>(&runtime)
        .map_err(|e| JsError::Engine(e.to_string()))?;
        budget.used.store(0, Ordering::Relaxed);
        context.with(|ctx| {
            ctx.eval_with_options::<(), _>(PRELUDE, eval_options("couchdb-prelude"))
                .map_err(|e| JsError::Engine(format!("prelude: {e}")))
        })?;
        Ok(Sandbox {
            functions: 0,
            context,
            runtime,
            budget,
            config,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The bounds this sandbox was made with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Bytes the runtime has allocated now.
    pub fn memory_used(&self) -> u64 {
        u64::try_from(self.runtime.memory_usage().malloc_size).unwrap_or(0)
    }

    /// Sets the design document functions see as `this` (filters, `validate_doc_update`), as
    /// CouchDB does.
    pub fn set_design_doc(&mut self, ddoc: &Value) -> Result<(), JsError> {
        let json = to_json(ddoc)?;
        self.call(|_, helper| {
            let set: Function<'_> = helper.get("setDdoc")?;
            set.call::<_, ()>((json,))?;
            Ok(String::new())
        })
        .map(|_| ())
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Compiles a function expression the way CouchDB does: the source, with surrounding
    /// whitespace and comments, must evaluate to a function. Returns its index.
    pub(super) fn compile(
        &mut self,
        kind: &'static str,
        name: &str,
        source: &str,
    ) -> Result<usize, JsError> {
        let compile_error = |message: String| JsError::Compile {
            kind,
            name: name.to_owned(),
            message,
        };
        if source.trim().is_empty() {
            return Err(compile_error("missing function".into()));
        }
        self.budget.used.store(0, Ordering::Relaxed);
        let saved = self.context.with(|ctx| {
            let attempt = |text: String| -> Result<rquickjs::Value<'_>, Failure> {
                ctx.eval_with_options(text, eval_options(name))
                    .map_err(|e| failure(&ctx, e))
            };
            // A trailing `;` (common in hand-written design docs) is allowed, as CouchDB's
            // SpiderMonkey rewrite did.
            let value = attempt(format!("({source}\n)")).or_else(|first| {
                let trimmed = source.trim_end().trim_end_matches(';');
                if trimmed.len() < source.trim_end().len() && !self.budget.exhausted() {
                    attempt(format!("({trimmed}\n)")).map_err(|_| first)
                } else {
                    Err(first)
                }
            })?;
            match value.into_function() {
                Some(f) => {
                    let add: Function<'_> = helper(&ctx)
                        .and_then(|h| h.get("add"))
                        .map_err(|e| failure(&ctx, e))?;
                    add.call::<_, usize>((f,))
                        .map(Some)
                        .map_err(|e| failure(&ctx, e))
                }
                None => Ok(None),
            }
        });
        self.drain_jobs();
        match saved {
            Ok(Some(index)) => {
                self.functions = self.functions.max(index + 1);
                Ok(index)
            }
            Ok(None) => Err(compile_error(format!(
                "Expression does not eval to a function. ({source})"
            ))),
            Err(failure) => match self.classify_and_collect(failure) {
                JsError::Thrown { name, message } => {
                    Err(compile_error(format!("{name}: {message}")))
                }
                other => Err(other),
            },
        }
    }

    /// Calls helper entry `entry` with compiled function `fun` and these JSON-text arguments
    /// (plus a trailing boolean for reduce); returns the parsed `{rows, logs, value}` answer.
    pub(super) fn invoke(
        &mut self,
        entry: &'static str,
        fun: usize,
        args: &[String],
        flag: Option<bool>,
    ) -> Result<Answer, JsError> {
        if fun >= self.functions {
            return Err(JsError::WrongSandbox);
        }
        let text = self.call(|ctx, helper| {
            let entry: Function<'_> = helper.get(entry)?;
            let mut call_args = rquickjs::function::Args::new(ctx.clone(), args.len() + 2);
            call_args.push_arg(fun)?;
            for a in args {
                call_args.push_arg(a.as_str())?;
            }
            if let Some(flag) = flag {
                call_args.push_arg(flag)?;
            }
            let out: rquickjs::String<'_> = entry.call_arg(call_args)?;
            out.to_string()
        })?;
        let mut answer: serde_json::Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| JsError::Engine(format!("function answer is not JSON: {e}")))?;
        let logs = match answer.remove("logs") {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        };
        let rows = match answer.remove("rows") {
            Some(Value::Array(rows)) => rows,
            _ => Vec::new(),
        };
        Ok(Answer {
            rows,
            logs,
            value: answer.remove("value").unwrap_or(Value::Null),
        })
    }

    /// Runs `f` in the context under a fresh budget; classifies a failure and collects garbage
    /// after it, so the next call starts clean.
    fn call<F>(&mut self, f: F) -> Result<String, JsError>
    where
        F: for<'js> FnOnce(&Ctx<'js>, &Object<'js>) -> rquickjs::Result<String>,
    {
        self.budget.used.store(0, Ordering::Relaxed);
        let result = self.context.with(|ctx| {
            let helper = helper(&ctx).map_err(|e| failure(&ctx, e))?;
            f(&ctx, &helper).map_err(|e| failure(&ctx, e))
        });
        self.drain_jobs();
        result.map_err(|failure| self.classify_and_collect(failure))
    }

    /// Classifies a failure, then frees what the failed call left (a half-built huge array).
    fn classify_and_collect(&mut self, failure: Failure) -> JsError {
        let error = self.classify(failure);
        self.runtime.run_gc();
        error
    }

    /// Runs the promise jobs a call left (an `async` function's continuation, a rejected
    /// `import()`), within what is left of the call's budget and at most [`MAX_JOBS`] of them,
    /// so that nothing of one call runs during the next. Their results are discarded: CouchDB's
    /// functions are synchronous.
    fn drain_jobs(&mut self) {
        let mut jobs = 0;
        while jobs < MAX_JOBS && self.runtime.is_job_pending() {
            let _ = self.runtime.execute_pending_job();
            jobs += 1;
        }
    }

    fn classify(&self, failure: Failure) -> JsError {
        if self.budget.exhausted() {
            return JsError::BudgetExhausted {
                budget: self.config.budget,
            };
        }
        match failure {
            Failure::Exception(name, message) => {
                if message.contains("out of memory") {
                    JsError::OutOfMemory {
                        limit: self.config.memory_limit,
                    }
                } else {
                    JsError::Thrown { name, message }
                }
            }
            Failure::Engine(rquickjs::Error::Allocation) => JsError::OutOfMemory {
                limit: self.config.memory_limit,
            },
            Failure::Engine(e) => JsError::Engine(e.to_string()),
        }
    }
}

/// The parsed answer of a helper entry point.
pub(super) struct Answer {
    pub(super) rows: Vec<Value>,
    pub(super) logs: Vec<String>,
    pub(super) value: Value,
}

/// The prelude's entry points.
fn helper<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    ctx.globals().get("__couchdb__")
}

fn eval_options(name: &str) -> EvalOptions {
    let mut options = EvalOptions::default();
    // Design-document functions run in sloppy mode, as in CouchDB.
    options.strict = false;
    options.global = true;
    options.filename = Some(name.to_owned());
    options
}

pub(super) fn to_json(value: &Value) -> Result<String, JsError> {
    serde_json::to_string(value).map_err(|e| JsError::Engine(e.to_string()))
}

/// Takes the pending exception (if that is what failed) and describes it.
fn failure(ctx: &Ctx<'_>, error: rquickjs::Error) -> Failure {
    if !matches!(error, rquickjs::Error::Exception) {
        return Failure::Engine(error);
    }
    let thrown = ctx.catch();
    if let Some(obj) = thrown.as_object() {
        let name: Option<String> = obj.get("name").ok().flatten();
        let message: Option<String> = obj.get("message").ok().flatten();
        if thrown.is_error() || (name.is_some() && message.is_some()) {
            return Failure::Exception(
                name.unwrap_or_else(|| "Error".into()),
                message.unwrap_or_default(),
            );
        }
    }
    let text = match ctx.json_stringify(thrown) {
        Ok(Some(s)) => s.to_string().unwrap_or_default(),
        Ok(None) => "undefined".into(),
        Err(_) => {
            let _ = ctx.catch();
            "(a value JSON cannot represent)".into()
        }
    };
    Failure::Exception("unnamed_error".into(), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn sandbox_is_send() {
        assert_send::<Sandbox>();
    }

    #[test]
    fn moves_to_another_thread() {
        let mut sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
        let map = sandbox
            .compile("map", "m", "function(doc){ emit(doc.a, null); }")
            .unwrap();
        let handle = std::thread::spawn(move || {
            let answer = sandbox
                .invoke("map", map, &["{\"a\":1}".to_string()], None)
                .unwrap();
            answer.rows
        });
        assert_eq!(handle.join().unwrap(), vec![serde_json::json!([1, null])]);
    }
}
