//! JSON helpers: the canonical form revision ids are computed over, CouchDB's collation order, and
//! bounded parsing of untrusted bodies.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Writes `value` in canonical form: object members sorted by key (byte order), no whitespace,
/// strings and numbers as serde_json writes them. Used for revision ids, so that the same content
/// gets the same id whatever member order a client sent.
pub fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        // Scalars: serde_json's own encoding (it cannot fail writing into a Vec).
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// [`canonical`] for an object.
pub fn canonical_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        canonical(value, out);
    }
    out.push(b'}');
}

/// Parses a request body as a JSON object, with CouchDB's errors: invalid UTF-8 or malformed JSON
/// is 400 `bad_request`; nesting deeper than serde_json's limit (128) is refused the same way.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>> {
    match parse_value(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(Error::bad_request("Document must be a JSON object")),
    }
}

/// Parses a request body as any JSON value (see [`parse_object`]).
pub fn parse_value(bytes: &[u8]) -> Result<Value> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(Error::bad_request("invalid UTF-8 JSON"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            Error::bad_request("JSON nested too deeply")
        } else {
            Error::bad_request(format!("invalid UTF-8 JSON: {e}"))
        }
    })
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(false) => 1,
        Value::Bool(true) => 2,
        Value::Number(_) => 3,
        Value::String(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

/// CouchDB's collation of JSON values: `null < false < true < numbers < strings < arrays <
/// objects`; numbers by value, arrays element-wise then by length, objects member-wise (key then
/// value) then by size. Strings compare by Unicode code point, not by ICU's UCA as CouchDB's
/// views do (the difference shows only between letters of different case or accents).
pub fn collate(a: &Value, b: &Value) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (xi, yi) in x.iter().zip(y) {
                let o = collate(xi, yi);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((kx, vx), (ky, vy)) in x.iter().zip(y) {
                let o = kx.cmp(ky).then_with(|| collate(vx, vy));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_members_recursively() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": null, "y": "é\n"}], "c": true}});
        let b: Value =
            serde_json::from_str(r#"{"a":{"c":true,"d":[1,{"y":"é\n","z":null}]},"b":1}"#).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        canonical(&a, &mut x);
        canonical(&b, &mut y);
        assert_eq!(x, y);
        assert_eq!(
            String::from_utf8(x).unwrap(),
            r#"{"a":{"c":true,"d":[1,{"y":"é\n","z":null}]},"b":1}"#
        );
    }

    #[test]
    fn collation_order() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1),
            json!(2.5),
            json!("A"),
            json!("a"),
            json!("b"),
            json!([1]),
            json!([1, 2]),
            json!({"a": 1}),
        ];
        for w in ordered.windows(2) {
            assert_eq!(collate(&w[0], &w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn parse_errors() {
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{\"a\":").is_err());
        assert!(parse_object(&[b'{', 0xff, b'}']).is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = parse_value(deep.as_bytes()).unwrap_err();
        assert_eq!(err.status(), 400);
    }
}
