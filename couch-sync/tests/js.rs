//! Design-document JavaScript (feature `js`): map, reduce, filter and validate_doc_update run as
//! CouchDB runs them, inside a sandbox whose bounds hold and which survives every failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use couch_sync::js::{JsError, Sandbox, SandboxConfig, Validation};
use couch_sync::reduce::Builtin;
use serde_json::{Value, json};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig::default()).unwrap()
}

/// The sandbox still compiles and runs a plain map function.
fn still_works(sb: &mut Sandbox) {
    let f = sb
        .compile_map("check", "function(doc) { emit(doc._id, 1); }")
        .unwrap();
    let out = f.run(sb, &json!({"_id": "ok"})).unwrap();
    assert_eq!(out.value, vec![(json!("ok"), json!(1))]);
}

#[test]
fn map_emits_and_logs() {
    let mut sb = sandbox();
    let f = sb
        .compile_map(
            "by_tag",
            r#"
            // a comment before
            function (doc) {
                log("mapping " + doc._id);
                log({id: doc._id});
                for (var i = 0; i < doc.tags.length; i++) {
                    emit([doc.tags[i], i], {n: doc.n});
                }
                emit(doc._id);
            }
            /* and one after */
            "#,
        )
        .unwrap();
    let out = f
        .run(&mut sb, &json!({"_id": "d1", "tags": ["a", "b"], "n": 2.5}))
        .unwrap();
    assert_eq!(
        out.value,
        vec![
            (json!(["a", 0]), json!({"n": 2.5})),
            (json!(["b", 1]), json!({"n": 2.5})),
            (json!("d1"), Value::Null),
        ]
    );
    assert_eq!(
        out.logs,
        vec!["mapping d1".to_string(), r#"{"id":"d1"}"#.to_string()]
    );
    // Nothing carries over to the next call.
    let out = f.run(&mut sb, &json!({"_id": "d2", "tags": []})).unwrap();
    assert_eq!(out.value, vec![(json!("d2"), Value::Null)]);
    assert_eq!(
        out.logs,
        vec!["mapping d2".to_string(), r#"{"id":"d2"}"#.to_string()]
    );
    assert_eq!(f.name(), "by_tag");
}

#[test]
fn map_values_json_cannot_hold_become_null() {
    let mut sb = sandbox();
    let f = sb
        .compile_map(
            "odd",
            "function(doc) { emit(undefined, undefined); emit(NaN, [undefined, function(){}]); \
             emit(doc.missing, Infinity); emit({a: undefined, b: 1}, null); }",
        )
        .unwrap();
    let out = f.run(&mut sb, &json!({"_id": "x"})).unwrap();
    assert_eq!(
        out.value,
        vec![
            (Value::Null, Value::Null),
            (Value::Null, json!([null, null])),
            (Value::Null, Value::Null),
            (json!({"b": 1}), Value::Null),
        ]
    );
}

#[test]
fn map_sees_a_frozen_doc() {
    let mut sb = sandbox();
    let f = sb
        .compile_map(
            "mutate",
            "function(doc) { doc.added = 1; doc.nested.x = 2; emit(doc.added, doc.nested.x); }",
        )
        .unwrap();
    let out = f
        .run(&mut sb, &json!({"_id": "a", "nested": {"x": 1}}))
        .unwrap();
    assert_eq!(out.value, vec![(Value::Null, json!(1))]);
}

#[test]
fn a_throwing_map_fails_that_doc_only() {
    let mut sb = sandbox();
    let f = sb
        .compile_map(
            "picky",
            "function(doc) { emit('before', 1); if (doc.bad) { doc.no.such.field; } emit(doc._id, 1); }",
        )
        .unwrap();
    let err = f
        .run(&mut sb, &json!({"_id": "b", "bad": true}))
        .unwrap_err();
    assert!(
        matches!(&err, JsError::Thrown { name, .. } if name == "TypeError"),
        "{err:?}"
    );
    // The next document maps normally, with no rows left over from the failed one.
    let out = f.run(&mut sb, &json!({"_id": "g"})).unwrap();
    assert_eq!(
        out.value,
        vec![(json!("before"), json!(1)), (json!("g"), json!(1))]
    );
    // A thrown non-Error value.
    let g = sb
        .compile_map("thrower", "function(doc) { throw {reason: 'no'}; }")
        .unwrap();
    let err = g.run(&mut sb, &json!({})).unwrap_err();
    assert_eq!(
        err,
        JsError::Thrown {
            name: "unnamed_error".into(),
            message: r#"{"reason":"no"}"#.into()
        }
    );
    still_works(&mut sb);
}

#[test]
fn compile_errors_name_the_function() {
    let mut sb = sandbox();
    let err = sb
        .compile_map("broken", "function(doc) { emit(doc._id, }")
        .unwrap_err();
    match &err {
        JsError::Compile {
            kind,
            name,
            message,
        } => {
            assert_eq!(*kind, "map");
            assert_eq!(name, "broken");
            assert!(message.contains("SyntaxError"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("'broken'"));
    let err = sb.compile_map("not_fn", "42").unwrap_err();
    assert!(
        matches!(&err, JsError::Compile { message, .. } if message.contains("does not eval to a function"))
    );
    assert!(matches!(
        sb.compile_map("empty", "  \n").unwrap_err(),
        JsError::Compile { .. }
    ));
    let couch: couch_sync::Error = err.into();
    assert_eq!(couch.status(), 400);
    // A trailing semicolon and a named function are accepted.
    sb.compile_map("semi", "function(doc) { emit(1, 2); };")
        .unwrap();
    sb.compile_map("named", "function byId(doc) { emit(doc._id, null); }")
        .unwrap();
    still_works(&mut sb);
}

#[test]
fn endless_loop_exhausts_the_budget() {
    let mut sb = Sandbox::new(SandboxConfig::default().with_budget(200)).unwrap();
    let f = sb
        .compile_map("spin", "function(doc) { while (true) {} }")
        .unwrap();
    assert_eq!(
        f.run(&mut sb, &json!({})).unwrap_err(),
        JsError::BudgetExhausted { budget: 200 }
    );
    // The loop cannot catch its way out.
    let g = sb
        .compile_map(
            "sly",
            "function(doc) { for (;;) { try { while (true) {} } catch (e) {} } }",
        )
        .unwrap();
    assert!(matches!(
        g.run(&mut sb, &json!({})),
        Err(JsError::BudgetExhausted { .. })
    ));
    // Nor run at compile time.
    assert!(matches!(
        sb.compile_map("eager", "(function(){ while (true) {} })()"),
        Err(JsError::BudgetExhausted { .. })
    ));
    still_works(&mut sb);
    // The budget is per call: many small calls are fine.
    let h = sb
        .compile_map(
            "loop",
            "function(doc) { for (var i = 0; i < 100000; i++) {} emit(i, null); }",
        )
        .unwrap();
    for _ in 0..50 {
        assert_eq!(
            h.run(&mut sb, &json!({})).unwrap().value,
            vec![(json!(100000), Value::Null)]
        );
    }
}

#[test]
fn huge_allocation_hits_the_memory_limit() {
    let mut sb = Sandbox::new(SandboxConfig::default().with_memory_limit(32 << 20)).unwrap();
    let f = sb
        .compile_map(
            "hog",
            "function(doc) { var a = []; while (true) { a.push(new Array(1000000).fill(1)); } }",
        )
        .unwrap();
    assert_eq!(
        f.run(&mut sb, &json!({})).unwrap_err(),
        JsError::OutOfMemory { limit: 32 << 20 }
    );
    // One huge string (256 MiB; QuickJS strings stop short of 1 GiB).
    let g = sb
        .compile_map("big", "function(doc) { emit('x'.repeat(1 << 28), 1); }")
        .unwrap();
    assert!(matches!(
        g.run(&mut sb, &json!({})),
        Err(JsError::OutOfMemory { .. })
    ));
    let h = sb
        .compile_map(
            "buf",
            "function(doc) { emit(new ArrayBuffer(1e9).byteLength, 1); }",
        )
        .unwrap();
    assert!(matches!(
        h.run(&mut sb, &json!({})),
        Err(JsError::OutOfMemory { .. })
    ));
    still_works(&mut sb);
    assert!(
        sb.memory_used() < 16 << 20,
        "garbage left: {}",
        sb.memory_used()
    );
    // A map that used a lot and freed it runs again and again.
    for _ in 0..3 {
        still_works(&mut sb);
    }
}

#[test]
fn deep_recursion_is_an_error_not_a_crash() {
    let mut sb = sandbox();
    let f = sb
        .compile_map(
            "deep",
            "function(doc) { function r(n) { return r(n + 1) + 1; } r(0); }",
        )
        .unwrap();
    assert!(matches!(
        f.run(&mut sb, &json!({})),
        Err(JsError::Thrown { .. })
    ));
    still_works(&mut sb);
}

#[test]
fn no_clock_but_dates_from_documents() {
    let mut sb = sandbox();
    let day = sb
        .compile_map(
            "day",
            "function(doc) { var d = new Date(doc.t); \
             emit([d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate()], Date.parse(doc.s)); }",
        )
        .unwrap();
    let out = day
        .run(
            &mut sb,
            &json!({"t": 1_767_225_600_000u64, "s": "2026-01-02T00:00:00Z"}),
        )
        .unwrap();
    assert_eq!(
        out.value,
        vec![(json!([2026, 1, 1]), json!(1_767_312_000_000u64))]
    );
    for (name, source) in [
        ("now", "function(doc) { emit(Date.now(), 1); }"),
        ("new", "function(doc) { emit(new Date().getTime(), 1); }"),
        ("call", "function(doc) { emit(Date(), 1); }"),
    ] {
        let f = sb.compile_map(name, source).unwrap();
        let err = f.run(&mut sb, &json!({})).unwrap_err();
        assert!(matches!(err, JsError::Thrown { .. }), "{name}: {err:?}");
    }
    // The sandbox still works after each refusal.
    assert_eq!(
        day.run(&mut sb, &json!({"t": 0, "s": "1970-01-01T00:00:00Z"}))
            .unwrap()
            .value
            .len(),
        1
    );
}

#[test]
fn no_host_access() {
    let mut sb = sandbox();
    let f = sb
        .compile_map(
            "probe",
            "function(doc) { emit('names', [typeof require, typeof process, typeof std, typeof os, \
             typeof print, typeof console, typeof fetch, typeof XMLHttpRequest, typeof import_meta, \
             typeof setTimeout, typeof performance, typeof WeakRef, typeof module]); \
             emit('helpers', [typeof emit, typeof log, typeof sum, typeof isArray, typeof toJSON, \
             typeof JSON, typeof Date]); \
             emit('enumerable', Object.keys(globalThis).filter(function (k) { \
               return ['emit', 'log', 'sum', 'isArray', 'toJSON'].indexOf(k) < 0; })); }",
        )
        .unwrap();
    let out = f.run(&mut sb, &json!({})).unwrap();
    assert_eq!(out.value[0].1, json!(vec!["undefined"; 13]));
    assert_eq!(
        out.value[1].1,
        json!([
            "function", "function", "function", "function", "function", "object", "function"
        ])
    );
    assert_eq!(out.value[2].1, json!([]));
    // Dynamic import has no loader: the promise rejects, nothing is loaded.
    let g = sb
        .compile_map(
            "imp",
            "function(doc) { import('os').catch(function (e) { log('no ' + e); }); emit(1, 1); }",
        )
        .unwrap();
    assert_eq!(
        g.run(&mut sb, &json!({})).unwrap().value,
        vec![(json!(1), json!(1))]
    );
    still_works(&mut sb);
}

#[test]
fn async_code_and_promise_jobs_do_not_leak_between_calls() {
    let mut sb = sandbox();
    let f = sb
        .compile_map(
            "async",
            "function(doc) { async function later() { await 1; emit('late', 1); } later(); emit('now', 1); }",
        )
        .unwrap();
    // Only what the function emitted before returning counts; the continuation's emit is dropped.
    assert_eq!(
        f.run(&mut sb, &json!({})).unwrap().value,
        vec![(json!("now"), json!(1))]
    );
    assert_eq!(
        f.run(&mut sb, &json!({})).unwrap().value,
        vec![(json!("now"), json!(1))]
    );
    // An endless promise chain is cut off, and later calls still answer.
    let g = sb
        .compile_map(
            "chain",
            "function(doc) { function f() { Promise.resolve().then(f); } f(); emit(1, 1); }",
        )
        .unwrap();
    assert_eq!(
        g.run(&mut sb, &json!({})).unwrap().value,
        vec![(json!(1), json!(1))]
    );
    still_works(&mut sb);
}

#[test]
fn unserialisable_results_are_errors() {
    let mut sb = sandbox();
    let f = sb
        .compile_map("cyc", "function(doc) { var a = {}; a.a = a; emit(a, 1); }")
        .unwrap();
    assert!(matches!(
        f.run(&mut sb, &json!({})),
        Err(JsError::Thrown { .. })
    ));
    let g = sb
        .compile_map(
            "cyc_throw",
            "function(doc) { var a = {}; a.a = a; throw a; }",
        )
        .unwrap();
    assert!(matches!(
        g.run(&mut sb, &json!({})),
        Err(JsError::Thrown { .. })
    ));
    still_works(&mut sb);
}

#[test]
fn helpers_sum_isarray_tojson() {
    let mut sb = sandbox();
    let f = sb
        .compile_map(
            "h",
            "function(doc) { emit(sum(doc.v), isArray(doc.v)); emit(toJSON({a: [1]}), isArray({})); }",
        )
        .unwrap();
    let out = f.run(&mut sb, &json!({"v": [1, 2, 3.5]})).unwrap();
    assert_eq!(
        out.value,
        vec![
            (json!(6.5), json!(true)),
            (json!("{\"a\":[1]}"), json!(false))
        ]
    );
}

#[test]
fn javascript_reduce_and_rereduce() {
    let mut sb = sandbox();
    let f = sb
        .compile_reduce(
            "total",
            "function(keys, values, rereduce) { \
               if (rereduce) { log('rereduce ' + (keys === null)); return sum(values); } \
               log(keys[0][1]); return sum(values) * 10; }",
        )
        .unwrap();
    let keys = vec![
        (json!("a"), "doc1".to_string()),
        (json!("b"), "doc2".to_string()),
    ];
    let out = f
        .run(&mut sb, Some(&keys), &[json!(1), json!(2)], false)
        .unwrap();
    assert_eq!(out.value, json!(30));
    assert_eq!(out.logs, vec!["doc1".to_string()]);
    let out = f.run(&mut sb, None, &[json!(30), json!(12)], true).unwrap();
    assert_eq!(out.value, json!(42));
    assert_eq!(out.logs, vec!["rereduce true".to_string()]);
    // undefined is null; objects survive.
    let g = sb.compile_reduce("u", "function(k, v) { }").unwrap();
    assert_eq!(g.run(&mut sb, None, &[], true).unwrap().value, Value::Null);
    let h = sb
        .compile_reduce("o", "function(k, v, re) { return {n: v.length, re: re}; }")
        .unwrap();
    assert_eq!(
        h.run(&mut sb, Some(&[]), &[], false).unwrap().value,
        json!({"n": 0, "re": false})
    );
}

#[test]
fn builtin_reduces_match_hand_computed_results() {
    let rows: Vec<(Value, Value)> = vec![
        (json!("a"), json!(3)),
        (json!("b"), json!(-1)),
        (json!("a"), json!(4.5)),
    ];
    assert_eq!(
        Builtin::parse("_sum").unwrap().reduce(&rows).unwrap(),
        json!(6.5)
    );
    assert_eq!(Builtin::Count.reduce(&rows).unwrap(), json!(3));
    assert_eq!(
        Builtin::Count.rereduce(&[json!(3), json!(5)]).unwrap(),
        json!(8)
    );
    let stats = Builtin::Stats.reduce(&rows).unwrap();
    assert_eq!(
        stats,
        json!({"sum": 6.5, "count": 3, "min": -1, "max": 4.5, "sumsqr": 30.25})
    );
    let more = Builtin::Stats.reduce(&[(json!("c"), json!(10))]).unwrap();
    assert_eq!(
        Builtin::Stats.rereduce(&[stats, more]).unwrap(),
        json!({"sum": 16.5, "count": 4, "min": -1, "max": 10, "sumsqr": 130.25})
    );
    let acd = Builtin::ApproxCountDistinct;
    let r = acd.reduce(&rows).unwrap();
    assert_eq!(acd.finalize(r.clone()).unwrap(), json!(2));
    let r2 = acd.reduce(&[(json!("c"), json!(0))]).unwrap();
    assert_eq!(
        acd.finalize(acd.rereduce(&[r, r2]).unwrap()).unwrap(),
        json!(3)
    );
    // The same sums in JavaScript agree.
    let mut sb = sandbox();
    let f = sb
        .compile_reduce("js_sum", "function(k, v) { return sum(v); }")
        .unwrap();
    let values: Vec<Value> = rows.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        f.run(&mut sb, None, &values, false).unwrap().value,
        json!(6.5)
    );
}

#[test]
fn validate_doc_update_outcomes() {
    let mut sb = sandbox();
    sb.set_design_doc(&json!({"_id": "_design/auth", "owner": "bob"}))
        .unwrap();
    let f = sb
        .compile_validate(
            "validate_doc_update",
            r#"function(newDoc, oldDoc, userCtx, secObj) {
                if (!userCtx.name) { throw({unauthorized: "log in first"}); }
                if (newDoc.type === "bad") { throw({forbidden: "no bad docs"}); }
                if (newDoc.type === "other") { throw({other: "something"}); }
                if (newDoc.type === "string") { throw "plain string"; }
                if (newDoc.type === "error") { throw new Error("boom"); }
                if (newDoc.type === "owner" && userCtx.name !== this.owner) {
                    throw({forbidden: "only " + this.owner});
                }
                if (oldDoc && oldDoc.locked) { throw({forbidden: "locked"}); }
                log("ok for " + userCtx.name + " " + secObj.admins.names.length);
                return false;
            }"#,
        )
        .unwrap();
    let user = json!({"db": "db", "name": "alice", "roles": []});
    let sec = json!({"admins": {"names": ["x"], "roles": []}});
    let run = |sb: &mut Sandbox, doc: Value, old: Option<Value>, user: &Value| {
        f.run(sb, &doc, old.as_ref(), user, &sec)
    };
    let out = run(&mut sb, json!({"type": "fine"}), None, &user).unwrap();
    assert_eq!(out.value, Validation::Allowed);
    assert_eq!(out.logs, vec!["ok for alice 1".to_string()]);
    assert_eq!(
        run(&mut sb, json!({"type": "bad"}), None, &user)
            .unwrap()
            .value,
        Validation::Forbidden("no bad docs".into())
    );
    let anon = json!({"db": "db", "name": null, "roles": []});
    assert_eq!(
        run(&mut sb, json!({}), None, &anon).unwrap().value,
        Validation::Unauthorized("log in first".into())
    );
    assert_eq!(
        run(&mut sb, json!({"type": "owner"}), None, &user)
            .unwrap()
            .value,
        Validation::Forbidden("only bob".into())
    );
    assert_eq!(
        run(&mut sb, json!({}), Some(json!({"locked": true})), &user)
            .unwrap()
            .value,
        Validation::Forbidden("locked".into())
    );
    let unknown = JsError::Thrown {
        name: "unknown_error".into(),
        message: "something".into(),
    };
    assert_eq!(
        run(&mut sb, json!({"type": "other"}), None, &user).unwrap_err(),
        unknown
    );
    assert!(matches!(
        run(&mut sb, json!({"type": "string"}), None, &user),
        Err(JsError::Thrown { name, message }) if name == "unknown_error" && message == "plain string"
    ));
    assert!(matches!(
        run(&mut sb, json!({"type": "error"}), None, &user),
        Err(JsError::Thrown { name, message }) if name == "Error" && message == "boom"
    ));
    let couch: couch_sync::Error = unknown.into();
    assert_eq!(couch.status(), 500);
    still_works(&mut sb);
}

#[test]
fn filter_truthiness() {
    let mut sb = sandbox();
    sb.set_design_doc(&json!({"_id": "_design/f", "wanted": "post"}))
        .unwrap();
    let f = sb
        .compile_filter(
            "by_type",
            "function(doc, req) { if (req.query.any) { return doc.n; } \
             return doc.type === (req.query.type || this.wanted); }",
        )
        .unwrap();
    let req = json!({"query": {}});
    assert!(
        f.run(&mut sb, &json!({"type": "post"}), &req)
            .unwrap()
            .value
    );
    assert!(
        !f.run(&mut sb, &json!({"type": "comment"}), &req)
            .unwrap()
            .value
    );
    let req = json!({"query": {"type": "comment"}});
    assert!(
        f.run(&mut sb, &json!({"type": "comment"}), &req)
            .unwrap()
            .value
    );
    // Any truthy value passes, as CouchDB's `(fun(...) && true) || false`.
    let any = json!({"query": {"any": true}});
    assert!(f.run(&mut sb, &json!({"n": 5}), &any).unwrap().value);
    assert!(f.run(&mut sb, &json!({"n": "x"}), &any).unwrap().value);
    assert!(!f.run(&mut sb, &json!({"n": 0}), &any).unwrap().value);
    assert!(!f.run(&mut sb, &json!({"n": ""}), &any).unwrap().value);
    assert!(!f.run(&mut sb, &json!({}), &any).unwrap().value);
    // A throwing filter is an error.
    let g = sb
        .compile_filter("boom", "function(doc, req) { return doc.a.b; }")
        .unwrap();
    assert!(matches!(
        g.run(&mut sb, &json!({}), &req),
        Err(JsError::Thrown { .. })
    ));
}

#[test]
fn functions_belong_to_their_sandbox() {
    let mut a = sandbox();
    let mut b = sandbox();
    let f = a.compile_map("m", "function(doc) { emit(1, 1); }").unwrap();
    assert_eq!(
        f.run(&mut b, &json!({})).unwrap_err(),
        JsError::WrongSandbox
    );
    assert!(f.run(&mut a, &json!({})).is_ok());
}

#[test]
fn sandbox_runs_on_a_worker_thread() {
    let mut sb = sandbox();
    let f = sb
        .compile_map("m", "function(doc) { emit(doc.n * 2, null); }")
        .unwrap();
    let worker = std::thread::spawn(move || {
        (0..10)
            .map(|n| {
                f.run(&mut sb, &json!({ "n": n })).unwrap().value[0]
                    .0
                    .clone()
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(
        worker.join().unwrap(),
        (0..10).map(|n| json!(n * 2)).collect::<Vec<_>>()
    );
}
