//! CouchDB's built-in reduce functions (`_sum`, `_count`, `_stats`, `_approx_count_distinct`), in
//! Rust, so views whose reduces are all built-in need no JavaScript engine.
//!
//! Ported from CouchDB 3's `couch_query_servers.erl` (`builtin_reduce`, `sum_values`,
//! `builtin_stats`, `approx_count_distinct`, `finalize`), with the same results and errors:
//!
//! - `_sum` adds numbers, arrays of numbers element-wise (the shorter one padded), and objects
//!   member-wise (recursively; members only one side has are kept). A value `_sum` cannot add
//!   does not fail the query: the reduction *is* CouchDB's error object
//!   `{"error": "builtin_reduce_error", "reason": ..., "caused_by": ...}`, and a rereduce that
//!   meets such an object passes it on. (CouchDB also turns a sum whose output grows faster than
//!   its input into such an error — `reduce_limit`; that check is not made here.)
//! - `_count` counts rows; its rereduce sums the counts with `_sum`'s rules.
//! - `_stats` gives `{"sum", "count", "min", "max", "sumsqr"}` for numbers, an array of those for
//!   arrays of numbers (element-wise), and also accepts pre-computed stats objects as map values.
//!   Anything else is an error ([`ReduceError`]), as in CouchDB.
//! - `_approx_count_distinct` estimates the number of distinct *keys* with a HyperLogLog sketch of
//!   precision 11 (2048 registers), as CouchDB does (`couch_hyper:new(11)`). The hash differs from
//!   CouchDB's (SHA-256 of the key's canonical JSON rather than Erlang's term encoding), so the
//!   estimate for large key sets can differ from CouchDB's by its error (about 2%); small sets
//!   (below a few hundred keys) are counted exactly by the sketch's linear-counting range.
//!   The reduction between [`Builtin::reduce`]/[`Builtin::rereduce`] and [`Builtin::finalize`]
//!   is the sketch, as `{"hll": "<base64 of the 2048 registers>"}`.
//!
//! Like CouchDB, a reduce source is recognised by its prefix (`_sum` also matches `_sum_x`).
//! CouchDB 3.5's `_top_N`, `_bottom_N`, `_first` and `_last` are not implemented yet.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The message of CouchDB's `_sum` error object.
pub const SUM_ERROR: &str = "The _sum function requires that map values be numbers, arrays of \
numbers, or objects. Objects cannot be mixed with other data structures. Objects can be \
arbitrarily nested, provided that the values for all fields are themselves numbers, arrays of \
numbers, or objects.";

/// A built-in reduce failed (CouchDB answers these with a 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReduceError {
    /// A value the reduce cannot take (`_stats` on a string, say). CouchDB's `invalid_value`.
    #[error("invalid_value: {0}")]
    InvalidValue(String),
}

impl From<ReduceError> for crate::Error {
    fn from(e: ReduceError) -> crate::Error {
        match e {
            ReduceError::InvalidValue(reason) => crate::Error::couch(500, "invalid_value", reason),
        }
    }
}

/// One of CouchDB's built-in reduce functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Builtin {
    /// `_sum`.
    Sum,
    /// `_count`.
    Count,
    /// `_stats`.
    Stats,
    /// `_approx_count_distinct`.
    ApproxCountDistinct,
}

impl Builtin {
    /// The built-in a design document's `reduce` source names, if it names one (CouchDB matches
    /// the prefix: `_sum`, `_count`, `_stats`, `_approx_count_distinct`).
    pub fn parse(source: &str) -> Option<Builtin> {
        let source = source.trim();
        // Longest names first is not needed: no name is a prefix of another.
        [
            ("_sum", Builtin::Sum),
            ("_count", Builtin::Count),
            ("_stats", Builtin::Stats),
            ("_approx_count_distinct", Builtin::ApproxCountDistinct),
        ]
        .into_iter()
        .find(|(name, _)| source.starts_with(name))
        .map(|(_, b)| b)
    }

    /// Reduces map rows (`(key, value)` pairs). The result may be rereduced with
    /// [`Builtin::rereduce`]; pass the final one through [`Builtin::finalize`].
    pub fn reduce(self, rows: &[(Value, Value)]) -> Result<Value, ReduceError> {
        match self {
            Builtin::Sum => sum_rows(rows.iter().map(|(_, v)| v)),
            Builtin::Count => Ok(Value::from(rows.len() as u64)),
            Builtin::Stats => stats(rows.iter().map(|(_, v)| v)),
            Builtin::ApproxCountDistinct => {
                let mut hll = Hll::new();
                let mut buf = Vec::new();
                for (key, _) in rows {
                    buf.clear();
                    crate::json::canonical(key, &mut buf);
                    hll.insert(&buf);
                }
                Ok(hll.to_value())
            }
        }
    }

    /// Combines earlier reductions (CouchDB's rereduce).
    pub fn rereduce(self, reductions: &[Value]) -> Result<Value, ReduceError> {
        match self {
            Builtin::Sum | Builtin::Count => sum_rows(reductions.iter()),
            Builtin::Stats => stats(reductions.iter()),
            Builtin::ApproxCountDistinct => {
                let mut hll = Hll::new();
                for r in reductions {
                    hll.union(&Hll::from_value(r)?);
                }
                Ok(hll.to_value())
            }
        }
    }

    /// The value a query returns for a reduction (CouchDB's `finalize`): the estimate for
    /// `_approx_count_distinct`, the reduction itself for the others.
    pub fn finalize(self, reduction: Value) -> Result<Value, ReduceError> {
        match self {
            Builtin::ApproxCountDistinct => {
                Ok(Value::from(Hll::from_value(&reduction)?.estimate()))
            }
            _ => Ok(reduction),
        }
    }
}

// ---- numbers: Erlang keeps integers exact and floats as doubles --------------------------------

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(value: &Value) -> Option<Num> {
        let Value::Number(n) = value else {
            return None;
        };
        let text = n.to_string();
        if !text.contains(['.', 'e', 'E']) {
            if let Ok(i) = text.parse::<i128>() {
                return Some(Num::Int(i));
            }
        }
        text.parse::<f64>().ok().map(Num::Float)
    }

    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            (a, b) => Num::Float(a.f64() + b.f64()),
        }
    }

    fn mul(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_mul(b)
                .map_or(Num::Float(a as f64 * b as f64), Num::Int),
            (a, b) => Num::Float(a.f64() * b.f64()),
        }
    }

    fn cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (a, b) => a.f64().partial_cmp(&b.f64()).unwrap_or(Ordering::Equal),
        }
    }

    fn is_int_zero(value: &Value) -> bool {
        matches!(Num::of(value), Some(Num::Int(0)))
    }

    fn to_value(self) -> Value {
        match self {
            Num::Int(i) => i64::try_from(i)
                .map(Value::from)
                .or_else(|_| u64::try_from(i).map(Value::from))
                .unwrap_or_else(|_| Value::from(i as f64)),
            Num::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        }
    }
}

// ---- _sum ----------------------------------------------------------------------------------------

enum SumFail {
    /// A value that is already CouchDB's error object: it becomes the result.
    Propagate(Value),
    /// A value `_sum` cannot add: the result is the error object naming it.
    Invalid(Value),
}

/// CouchDB's `builtin_sum_rows`: adds the values to 0; an invalid value makes the whole result
/// CouchDB's error object.
fn sum_rows<'a>(values: impl Iterator<Item = &'a Value>) -> Result<Value, ReduceError> {
    let mut acc = Value::from(0);
    for value in values {
        match sum_values(value, acc) {
            Ok(next) => acc = next,
            Err(SumFail::Propagate(obj)) => return Ok(obj),
            Err(SumFail::Invalid(cause)) => {
                return Ok(json!({
                    "error": "builtin_reduce_error",
                    "reason": SUM_ERROR,
                    "caused_by": cause,
                }));
            }
        }
    }
    Ok(acc)
}

fn sum_values(value: &Value, acc: Value) -> Result<Value, SumFail> {
    match (value, acc) {
        (Value::Number(_), Value::Number(a)) => {
            let (Some(v), Some(a)) = (Num::of(value), Num::of(&Value::Number(a))) else {
                return Err(SumFail::Invalid(value.clone()));
            };
            Ok(v.add(a).to_value())
        }
        (Value::Array(v), Value::Array(a)) => sum_arrays(&a, v),
        (Value::Number(_), Value::Array(a)) => sum_arrays(&a, std::slice::from_ref(value)),
        (Value::Array(v), acc @ Value::Number(_)) => sum_arrays(std::slice::from_ref(&acc), v),
        (Value::Object(props), acc) => {
            if props.get("error").and_then(Value::as_str) == Some("builtin_reduce_error") {
                return Err(SumFail::Propagate(value.clone()));
            }
            match acc {
                ref zero if Num::is_int_zero(zero) => Ok(value.clone()),
                Value::Object(acc_props) => sum_objects(props, &acc_props).map(Value::Object),
                // CouchDB crashes here (a `case_clause`: objects mixed with numbers or arrays);
                // the error object says what happened instead.
                _ => Err(SumFail::Invalid(value.clone())),
            }
        }
        _ => Err(SumFail::Invalid(value.clone())),
    }
}

/// Member-wise sum; the result's members in byte order of their names (CouchDB sorts both).
fn sum_objects(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
) -> Result<Map<String, Value>, SumFail> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for k in keys {
        let v = match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => sum_values(x, y.clone())?,
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (None, None) => continue,
        };
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// Element-wise sum; the longer array's tail is kept as it is. On a non-number, CouchDB's cause is
/// the rest of the accumulator (`xs`).
fn sum_arrays(xs: &[Value], ys: &[Value]) -> Result<Value, SumFail> {
    let mut out = Vec::with_capacity(xs.len().max(ys.len()));
    for i in 0..xs.len().max(ys.len()) {
        match (xs.get(i), ys.get(i)) {
            (Some(x), Some(y)) => match (Num::of(x), Num::of(y)) {
                (Some(a), Some(b)) => out.push(a.add(b).to_value()),
                _ => return Err(SumFail::Invalid(Value::Array(xs[i..].to_vec()))),
            },
            (Some(v), None) | (None, Some(v)) => out.push(v.clone()),
            (None, None) => {}
        }
    }
    Ok(Value::Array(out))
}

// ---- _stats --------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Stats {
    sum: Num,
    count: Num,
    min: Num,
    max: Num,
    sumsqr: Num,
}

impl Stats {
    fn of(n: Num) -> Stats {
        Stats {
            sum: n,
            count: Num::Int(1),
            min: n,
            max: n,
            sumsqr: n.mul(n),
        }
    }

    fn unpack(props: &Map<String, Value>) -> Result<Stats, ReduceError> {
        let get = |key: &str| -> Result<Num, ReduceError> {
            match props.get(key) {
                None => Err(ReduceError::InvalidValue(format!(
                    "user _stats input missing required field {key} ({})",
                    Value::Object(props.clone())
                ))),
                Some(v) => Num::of(v).ok_or_else(|| {
                    ReduceError::InvalidValue(format!(
                        "non-numeric _stats input received for {key}: {v}"
                    ))
                }),
            }
        };
        Ok(Stats {
            sum: get("sum")?,
            count: get("count")?,
            min: get("min")?,
            max: get("max")?,
            sumsqr: get("sumsqr")?,
        })
    }

    fn combine(self, o: Stats) -> Stats {
        Stats {
            sum: self.sum.add(o.sum),
            count: self.count.add(o.count),
            min: if o.min.cmp(self.min) == Ordering::Less {
                o.min
            } else {
                self.min
            },
            max: if o.max.cmp(self.max) == Ordering::Greater {
                o.max
            } else {
                self.max
            },
            sumsqr: self.sumsqr.add(o.sumsqr),
        }
    }

    fn pack(self) -> Value {
        json!({
            "sum": self.sum.to_value(),
            "count": self.count.to_value(),
            "min": self.min.to_value(),
            "max": self.max.to_value(),
            "sumsqr": self.sumsqr.to_value(),
        })
    }
}

/// The `_stats` accumulator: one stats tuple, or an array of accumulators.
enum StatAcc {
    One(Stats),
    Many(Vec<StatAcc>),
}

impl StatAcc {
    fn initial(value: &Value) -> Result<StatAcc, ReduceError> {
        match value {
            Value::Array(items) => items
                .iter()
                .map(StatAcc::initial)
                .collect::<Result<_, _>>()
                .map(StatAcc::Many),
            Value::Object(props) => Stats::unpack(props).map(StatAcc::One),
            other => Num::of(other)
                .map(|n| StatAcc::One(Stats::of(n)))
                .ok_or_else(|| {
                    ReduceError::InvalidValue(format!("non-numeric _stats input: {other}"))
                }),
        }
    }

    fn add(self, value: &Value) -> Result<StatAcc, ReduceError> {
        let error = || {
            ReduceError::InvalidValue(format!(
                "The _stats function requires that map values be numbers or arrays of numbers, \
                 not '{value}'"
            ))
        };
        match (self, value) {
            (StatAcc::Many(accs), Value::Array(items)) => {
                if accs.len() != items.len() {
                    return Err(error());
                }
                accs.into_iter()
                    .zip(items)
                    .map(|(acc, item)| acc.add(item))
                    .collect::<Result<_, _>>()
                    .map(StatAcc::Many)
            }
            (StatAcc::One(acc), Value::Object(props)) => {
                Ok(StatAcc::One(Stats::unpack(props)?.combine(acc)))
            }
            (StatAcc::One(acc), v) => match Num::of(v) {
                Some(n) => Ok(StatAcc::One(Stats::of(n).combine(acc))),
                None => Err(error()),
            },
            (StatAcc::Many(_), _) => Err(error()),
        }
    }

    fn pack(self) -> Value {
        match self {
            StatAcc::One(s) => s.pack(),
            StatAcc::Many(items) => Value::Array(items.into_iter().map(StatAcc::pack).collect()),
        }
    }
}

fn stats<'a>(mut values: impl Iterator<Item = &'a Value>) -> Result<Value, ReduceError> {
    let Some(first) = values.next() else {
        let zero = Num::Int(0);
        return Ok(Stats {
            sum: zero,
            count: zero,
            min: zero,
            max: zero,
            sumsqr: zero,
        }
        .pack());
    };
    let mut acc = StatAcc::initial(first)?;
    for v in values {
        acc = acc.add(v)?;
    }
    Ok(acc.pack())
}

// ---- _approx_count_distinct: HyperLogLog, precision 11 --------------------------------------------

const HLL_P: u32 = 11;
const HLL_M: usize = 1 << HLL_P;

struct Hll {
    registers: Vec<u8>,
}

impl Hll {
    fn new() -> Hll {
        Hll {
            registers: vec![0; HLL_M],
        }
    }

    fn insert(&mut self, item: &[u8]) {
        let digest = Sha256::digest(item);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let hash = u64::from_be_bytes(first);
        let index = (hash >> (64 - HLL_P)) as usize;
        // The remaining 53 bits, with a guard bit so the rank is at most 54.
        let rest = (hash << HLL_P) | (1 << (HLL_P - 1));
        let rank = (rest.leading_zeros() + 1) as u8;
        if let Some(r) = self.registers.get_mut(index) {
            *r = (*r).max(rank);
        }
    }

    fn union(&mut self, other: &Hll) {
        for (a, b) in self.registers.iter_mut().zip(&other.registers) {
            *a = (*a).max(*b);
        }
    }

    fn estimate(&self) -> u64 {
        let m = HLL_M as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self
            .registers
            .iter()
            .map(|&r| 2f64.powi(-i32::from(r)))
            .sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        let e = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        e.round() as u64
    }

    fn to_value(&self) -> Value {
        json!({ "hll": data_encoding::BASE64.encode(&self.registers) })
    }

    fn from_value(value: &Value) -> Result<Hll, ReduceError> {
        let registers = value
            .get("hll")
            .and_then(Value::as_str)
            .and_then(|s| data_encoding::BASE64.decode(s.as_bytes()).ok())
            .filter(|r| r.len() == HLL_M)
            .ok_or_else(|| {
                ReduceError::InvalidValue(format!("_approx_count_distinct cannot rereduce {value}"))
            })?;
        Ok(Hll { registers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[Value]) -> Vec<(Value, Value)> {
        values.iter().map(|v| (Value::Null, v.clone())).collect()
    }

    #[test]
    fn parse_by_prefix() {
        assert_eq!(Builtin::parse("_sum"), Some(Builtin::Sum));
        assert_eq!(Builtin::parse(" _count "), Some(Builtin::Count));
        assert_eq!(Builtin::parse("_stats"), Some(Builtin::Stats));
        assert_eq!(
            Builtin::parse("_approx_count_distinct"),
            Some(Builtin::ApproxCountDistinct)
        );
        assert_eq!(Builtin::parse("_sumx"), Some(Builtin::Sum));
        assert_eq!(Builtin::parse("function(k,v){}"), None);
        assert_eq!(Builtin::parse("_median"), None);
    }

    #[test]
    fn sum_numbers_arrays_objects() {
        let s = Builtin::Sum;
        assert_eq!(
            s.reduce(&rows(&[json!(1), json!(2), json!(3.5)])),
            Ok(json!(6.5))
        );
        assert_eq!(s.reduce(&rows(&[json!(1), json!(2)])), Ok(json!(3)));
        assert_eq!(s.reduce(&rows(&[])), Ok(json!(0)));
        // CouchDB's sum_values_test.
        assert_eq!(
            s.reduce(&rows(&[json!([1, 4, 6]), json!(1)])),
            Ok(json!([2, 4, 6]))
        );
        assert_eq!(
            s.reduce(&rows(&[json!([0, 3, 3]), json!([3, 2, 4])])),
            Ok(json!([3, 5, 7]))
        );
        assert_eq!(
            s.reduce(&rows(&[json!([1]), json!([1, 2, 3])])),
            Ok(json!([2, 2, 3]))
        );
        let x = json!({"a": 1, "b": [1, 2], "c": {"d": 3}, "g": 1});
        let y = json!({"a": 2, "b": 3, "c": {"e": 5}, "f": 1, "g": 1});
        let z = json!({"a": 3, "b": [4, 2], "c": {"d": 3, "e": 5}, "f": 1, "g": 2});
        assert_eq!(s.reduce(&rows(&[x.clone(), y.clone()])), Ok(z.clone()));
        assert_eq!(s.reduce(&rows(&[y, x])), Ok(z.clone()));
        assert_eq!(s.rereduce(&[json!(3), json!(4)]), Ok(json!(7)));
        // Big integers stay exact.
        assert_eq!(
            s.reduce(&rows(&[json!(9007199254740993_i64), json!(1)])),
            Ok(json!(9007199254740994_i64))
        );
    }

    #[test]
    fn sum_errors_are_values() {
        let s = Builtin::Sum;
        let r = s
            .reduce(&rows(&[json!(1), json!("two")]))
            .unwrap_or_default();
        assert_eq!(r["error"], "builtin_reduce_error");
        assert_eq!(r["reason"], SUM_ERROR);
        assert_eq!(r["caused_by"], "two");
        // The error object passes through a rereduce.
        assert_eq!(s.rereduce(&[json!(5), r.clone(), json!(6)]), Ok(r));
        // Array with a non-number: the cause is the accumulator's rest (as CouchDB).
        let r = s
            .reduce(&rows(&[json!([1, 2]), json!([1, "x"])]))
            .unwrap_or_default();
        assert_eq!(r["caused_by"], json!([2]));
        // Objects mixed with numbers.
        let r = s
            .reduce(&rows(&[json!(1), json!({"a": 1})]))
            .unwrap_or_default();
        assert_eq!(r["error"], "builtin_reduce_error");
        let r = s.reduce(&rows(&[json!(null)])).unwrap_or_default();
        assert_eq!(r["caused_by"], Value::Null);
    }

    #[test]
    fn count() {
        let c = Builtin::Count;
        assert_eq!(
            c.reduce(&rows(&[json!("a"), json!(null), json!({})])),
            Ok(json!(3))
        );
        assert_eq!(c.rereduce(&[json!(3), json!(4), json!(0)]), Ok(json!(7)));
        assert_eq!(c.reduce(&[]), Ok(json!(0)));
    }

    #[test]
    fn stats() {
        let st = Builtin::Stats;
        assert_eq!(
            st.reduce(&rows(&[json!(2)])),
            Ok(json!({"sum": 2, "count": 1, "min": 2, "max": 2, "sumsqr": 4}))
        );
        let a = st
            .reduce(&rows(&[json!(1), json!(5), json!(-2)]))
            .unwrap_or_default();
        assert_eq!(
            a,
            json!({"sum": 4, "count": 3, "min": -2, "max": 5, "sumsqr": 30})
        );
        let b = st.reduce(&rows(&[json!(10)])).unwrap_or_default();
        assert_eq!(
            st.rereduce(&[a, b]),
            Ok(json!({"sum": 14, "count": 4, "min": -2, "max": 10, "sumsqr": 130}))
        );
        // CouchDB's stat_values_test: arrays element-wise.
        assert_eq!(
            st.reduce(&rows(&[json!([2, 3, 5]), json!([7, 11, 13])])),
            Ok(json!([
                {"sum": 9, "count": 2, "min": 2, "max": 7, "sumsqr": 53},
                {"sum": 14, "count": 2, "min": 3, "max": 11, "sumsqr": 130},
                {"sum": 18, "count": 2, "min": 5, "max": 13, "sumsqr": 194},
            ]))
        );
        assert_eq!(
            st.reduce(&[]),
            Ok(json!({"sum": 0, "count": 0, "min": 0, "max": 0, "sumsqr": 0}))
        );
        // Pre-computed stats as map values.
        assert_eq!(
            st.reduce(&rows(&[
                json!({"sum": 3, "count": 2, "min": 1, "max": 2, "sumsqr": 5}),
                json!(4)
            ])),
            Ok(json!({"sum": 7, "count": 3, "min": 1, "max": 4, "sumsqr": 21}))
        );
        assert!(matches!(
            st.reduce(&rows(&[json!(1), json!("x")])),
            Err(ReduceError::InvalidValue(m)) if m.contains("numbers or arrays of numbers")
        ));
        assert!(st.reduce(&rows(&[json!("x")])).is_err());
        assert!(st.reduce(&rows(&[json!({"sum": 1})])).is_err());
        assert!(st.reduce(&rows(&[json!([1, 2]), json!([1])])).is_err());
    }

    #[test]
    fn approx_count_distinct() {
        let a = Builtin::ApproxCountDistinct;
        let kv = |k: Value| (k, Value::Null);
        let r1 = a
            .reduce(&[
                kv(json!("a")),
                kv(json!("b")),
                kv(json!("a")),
                kv(json!([1, 2])),
            ])
            .unwrap_or_default();
        assert_eq!(a.finalize(r1.clone()), Ok(json!(3)));
        let r2 = a
            .reduce(&[kv(json!("b")), kv(json!("c"))])
            .unwrap_or_default();
        let both = a.rereduce(&[r1, r2]).unwrap_or_default();
        assert_eq!(a.finalize(both), Ok(json!(4)));
        assert_eq!(a.finalize(a.reduce(&[]).unwrap_or_default()), Ok(json!(0)));
        // A large set: within a few percent.
        let rows: Vec<_> = (0..20_000).map(|i| kv(json!(i))).collect();
        let est = a
            .finalize(a.reduce(&rows).unwrap_or_default())
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        assert!((19_000..=21_000).contains(&est), "estimate {est}");
        assert!(a.rereduce(&[json!(3)]).is_err());
    }
}
