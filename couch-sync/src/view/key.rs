//! Keys of index rows: a JSON key and a document id, ordered by CouchDB collation of the key
//! ([`crate::json::collate`]), then by document id, as a redb key type whose comparison is a
//! plain byte comparison.
//!
//! # Encoding
//!
//! A row key is `value string(doc id) u32-BE(dup) [tail]`:
//!
//! ```text
//! value  := 0x01                              null
//!         | 0x02                              false
//!         | 0x03                              true
//!         | 0x04 f64(8 bytes)                 number: IEEE 754 bits, sign bit flipped when
//!                                             positive, all bits flipped when negative, so
//!                                             that byte order is numeric order (-0 is 0)
//!         | 0x05 string                       string
//!         | 0x06 value* 0x00                  array
//!         | 0x07 (0x01 string value)* 0x00    object, members in their order
//! string := (byte other than 0x00 | 0x00 0xFF)* 0x00 0x01
//! ```
//!
//! Every `value` and `string` is self-delimiting and no encoding is a prefix of another, so
//! byte order is collation order (strings by code point, as `collate`: UTF-8 byte order is
//! code-point order; arrays and objects element by element, the shorter first). `dup` tells
//! apart rows one document emits more than once with the same key. `tail`, usually empty, is
//! the key's JSON text when decoding `value` would not give the key back exactly (a number
//! whose text is not the shortest form of its double, such as `1.0` or `1e400`).
//!
//! Range bounds ([`prefix`], [`after_key`], [`with_id`], [`after_id`]) are byte strings that
//! are not full row keys; comparison never parses, so they work as redb range bounds.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

const NULL: u8 = 0x01;
const FALSE: u8 = 0x02;
const TRUE: u8 = 0x03;
const NUMBER: u8 = 0x04;
const STRING: u8 = 0x05;
const ARRAY: u8 = 0x06;
const OBJECT: u8 = 0x07;
const END: u8 = 0x00;
const MEMBER: u8 = 0x01;

/// A row key as stored (see the module documentation): the redb key type of view rows and
/// JSON-index rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ViewKey<'a>(pub(crate) &'a [u8]);

impl redb::Value for ViewKey<'_> {
    type SelfType<'a>
        = ViewKey<'a>
    where
        Self: 'a;
    type AsBytes<'a>
        = &'a [u8]
    where
        Self: 'a;

    fn fixed_width() -> Option<usize> {
        None
    }

    fn from_bytes<'a>(data: &'a [u8]) -> ViewKey<'a>
    where
        Self: 'a,
    {
        ViewKey(data)
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a ViewKey<'b>) -> &'a [u8]
    where
        Self: 'b,
    {
        value.0
    }

    fn type_name() -> redb::TypeName {
        redb::TypeName::new("couch_sync::ViewKey")
    }
}

impl redb::Key for ViewKey<'_> {
    fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
        data1.cmp(data2)
    }

    /// The shortest prefix of `right` that is still above `left` (any byte string is a valid
    /// key here: comparison never parses).
    fn separator<'a>(left: &'a [u8], right: &'a [u8]) -> Cow<'a, [u8]> {
        let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
        match right.get(..=common) {
            Some(short) if short.len() < right.len() => Cow::Borrowed(short),
            _ => Cow::Borrowed(left),
        }
    }
}

/// Appends `value`'s collation encoding.
fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&ordered_f64(n.as_f64().unwrap_or(0.0)));
        }
        Value::String(s) => {
            out.push(STRING);
            encode_str(s, out);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            for item in items {
                encode_value(item, out);
            }
            out.push(END);
        }
        Value::Object(map) => {
            out.push(OBJECT);
            for (k, v) in map {
                out.push(MEMBER);
                encode_str(k, out);
                encode_value(v, out);
            }
            out.push(END);
        }
    }
}

fn escape_str(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

fn encode_str(s: &str, out: &mut Vec<u8>) {
    escape_str(s, out);
    out.extend_from_slice(&[0x00, 0x01]);
}

fn ordered_f64(x: f64) -> [u8; 8] {
    let x = if x == 0.0 { 0.0 } else { x };
    let bits = x.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

fn unordered_f64(bytes: [u8; 8]) -> f64 {
    let ordered = u64::from_be_bytes(bytes);
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    f64::from_bits(bits)
}

/// A double as JSON the way JavaScript prints it where it matters: integers without `.0`.
fn number_of(x: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if x.fract() == 0.0 && x.abs() < EXACT {
        #[allow(clippy::cast_possible_truncation)]
        return Value::Number(Number::from(x as i64));
    }
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// The collation encoding of `key` alone: every row with this key (any document, any dup)
/// starts with it, and it sorts before all of them.
pub(crate) fn prefix(key: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    encode_value(key, &mut out);
    out
}

/// Above every row whose key is `key`, below every row with a greater key (0xFF never occurs
/// in UTF-8, so no document id starts with it).
pub(crate) fn after_key(key: &Value) -> Vec<u8> {
    let mut out = prefix(key);
    out.push(0xFF);
    out
}

/// Below every row of `key` and document `id` (and above those of smaller ids).
pub(crate) fn with_id(key: &Value, id: &str) -> Vec<u8> {
    let mut out = prefix(key);
    encode_str(id, &mut out);
    out
}

/// Above every row of `key` and document `id`, below those of greater ids.
pub(crate) fn after_id(key: &Value, id: &str) -> Vec<u8> {
    let mut out = prefix(key);
    escape_str(id, &mut out);
    out.extend_from_slice(&[0x00, 0x02]);
    out
}

/// The row key of `key` emitted by document `id`, the `dup`-th time (from 0) this document
/// emitted a key collating equal to it.
pub(crate) fn encode(key: &Value, id: &str, dup: u32) -> Vec<u8> {
    let mut out = with_id(key, id);
    out.extend_from_slice(&dup.to_be_bytes());
    let mut check = prefix(key);
    let exact = parse_value(&mut check.as_slice()).is_ok_and(|v| v == *key);
    if !exact {
        // serde_json cannot fail writing a Value into a Vec.
        let _ = serde_json::to_writer(&mut out, key);
    }
    check.clear();
    out
}

/// A decoded row key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    pub(crate) key: Value,
    pub(crate) id: String,
    pub(crate) dup: u32,
}

fn corrupt() -> Error {
    Error::Corrupt("malformed index row key".into())
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    let (head, rest) = input.split_at_checked(n).ok_or_else(corrupt)?;
    *input = rest;
    Ok(head)
}

fn byte(input: &mut &[u8]) -> Result<u8> {
    take(input, 1)?.first().copied().ok_or_else(corrupt)
}

fn parse_str(input: &mut &[u8]) -> Result<String> {
    let mut bytes = Vec::new();
    loop {
        match byte(input)? {
            0 => match byte(input)? {
                0x01 => break,
                0xFF => bytes.push(0),
                _ => return Err(corrupt()),
            },
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| corrupt())
}

fn parse_value(input: &mut &[u8]) -> Result<Value> {
    parse_value_at(input, 0)
}

fn parse_value_at(input: &mut &[u8], depth: u32) -> Result<Value> {
    if depth > 256 {
        return Err(corrupt());
    }
    Ok(match byte(input)? {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        NUMBER => {
            let mut b = [0u8; 8];
            b.copy_from_slice(take(input, 8)?);
            number_of(unordered_f64(b))
        }
        STRING => Value::String(parse_str(input)?),
        ARRAY => {
            let mut items = Vec::new();
            while input.first() != Some(&END) {
                items.push(parse_value_at(input, depth + 1)?);
            }
            take(input, 1)?;
            Value::Array(items)
        }
        OBJECT => {
            let mut map = Map::new();
            loop {
                match byte(input)? {
                    END => break,
                    MEMBER => {
                        let k = parse_str(input)?;
                        let v = parse_value_at(input, depth + 1)?;
                        map.insert(k, v);
                    }
                    _ => return Err(corrupt()),
                }
            }
            Value::Object(map)
        }
        _ => return Err(corrupt()),
    })
}

/// Decodes a row key written by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded> {
    let mut input = bytes;
    let key = parse_value(&mut input)?;
    let id = parse_str(&mut input)?;
    let mut dup = [0u8; 4];
    dup.copy_from_slice(take(&mut input, 4)?);
    let key = if input.is_empty() {
        key
    } else {
        serde_json::from_slice(input).map_err(|_| corrupt())?
    };
    Ok(Decoded {
        key,
        id,
        dup: u32::from_be_bytes(dup),
    })
}

/// The length of the key's collation encoding at the start of a row key: two rows have keys
/// collating equal exactly when these prefixes are equal.
pub(crate) fn key_len(bytes: &[u8]) -> Result<usize> {
    let mut input = bytes;
    skip_value(&mut input, 0)?;
    Ok(bytes.len() - input.len())
}

fn skip_str(input: &mut &[u8]) -> Result<()> {
    loop {
        if byte(input)? == 0 && byte(input)? == 0x01 {
            return Ok(());
        }
    }
}

fn skip_value(input: &mut &[u8], depth: u32) -> Result<()> {
    if depth > 256 {
        return Err(corrupt());
    }
    match byte(input)? {
        NULL | FALSE | TRUE => {}
        NUMBER => {
            take(input, 8)?;
        }
        STRING => skip_str(input)?,
        ARRAY => {
            while input.first() != Some(&END) {
                skip_value(input, depth + 1)?;
            }
            take(input, 1)?;
        }
        OBJECT => loop {
            match byte(input)? {
                END => break,
                MEMBER => {
                    skip_str(input)?;
                    skip_value(input, depth + 1)?;
                }
                _ => return Err(corrupt()),
            }
        },
        _ => return Err(corrupt()),
    }
    Ok(())
}

/// The encoding of the first `level` elements of an array key (the key's own encoding for any
/// other key): rows in one `group_level` group share it.
pub(crate) fn group_prefix(bytes: &[u8], level: u64) -> Result<&[u8]> {
    if bytes.first() != Some(&ARRAY) {
        let len = key_len(bytes)?;
        return bytes.get(..len).ok_or_else(corrupt);
    }
    let mut input = bytes.get(1..).ok_or_else(corrupt)?;
    let mut n = 0;
    while n < level && input.first() != Some(&END) {
        skip_value(&mut input, 1)?;
        n += 1;
    }
    let len = bytes.len() - input.len();
    bytes.get(..len).ok_or_else(corrupt)
}

/// The key a `group_level` group reports: the first `level` elements of an array key, any
/// other key whole.
pub(crate) fn group_key(key: &Value, level: u64) -> Value {
    match key {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .take(usize::try_from(level).unwrap_or(usize::MAX))
                .cloned()
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::collate;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(|n| json!(n)),
            (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
            prop_oneof![Just(0.0f64), Just(-0.0), Just(1e300), Just(-1e-300)]
                .prop_map(|f| json!(f)),
            "[a-c\u{0}\u{e9}\u{10000}]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[ab\u{0}]{0,2}", inner), 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_id() -> impl Strategy<Value = String> {
        "[a-b\u{0}\u{ff}]{0,3}"
    }

    proptest! {
        #[test]
        fn byte_order_is_collation_then_id(
            a in arb_json(), b in arb_json(), ia in arb_id(), ib in arb_id(),
            da in 0u32..3, db in 0u32..3,
        ) {
            let (ka, kb) = (encode(&a, &ia, da), encode(&b, &ib, db));
            let want = collate(&a, &b).then_with(|| ia.cmp(&ib));
            let got = <ViewKey<'_> as redb::Key>::compare(&ka, &kb);
            if want != Ordering::Equal {
                prop_assert_eq!(got, want);
            } else {
                prop_assert_eq!(got, da.cmp(&db).then_with(|| ka.cmp(&kb)));
            }
            // Equal keys have equal collation prefixes, and only they.
            let (la, lb) = (key_len(&ka).unwrap(), key_len(&kb).unwrap());
            prop_assert_eq!(ka[..la] == kb[..lb], collate(&a, &b) == Ordering::Equal);
            // Round trip.
            let d = decode(&ka).unwrap();
            prop_assert_eq!((d.key, d.id, d.dup), (a.clone(), ia.clone(), da));
            // Bounds bracket the rows.
            prop_assert!(prefix(&a) < ka && ka < after_key(&a));
            prop_assert!(with_id(&a, &ia) < ka && ka < after_id(&a, &ia));
            if collate(&a, &b) == Ordering::Less {
                prop_assert!(after_key(&a) < kb);
            }
            if collate(&a, &b) == Ordering::Equal && ia < ib {
                prop_assert!(after_id(&a, &ia) < kb);
            }
        }

        #[test]
        fn separators_route(a in arb_json(), b in arb_json(), ia in arb_id(), ib in arb_id()) {
            let (ka, kb) = (encode(&a, &ia, 0), encode(&b, &ib, 0));
            let (l, r) = if ka < kb { (ka, kb) } else { (kb, ka) };
            if l < r {
                let s = <ViewKey<'_> as redb::Key>::separator(&l, &r);
                prop_assert!(l.as_slice() <= s.as_ref() && s.as_ref() < r.as_slice());
            }
        }
    }

    #[test]
    fn inexact_numbers_keep_their_text() {
        for text in ["1.0", "1e400", "12345678901234567890123", "-0", "0.1"] {
            let key: Value = serde_json::from_str(text).unwrap();
            let d = decode(&encode(&key, "x", 0)).unwrap();
            assert_eq!(d.key.to_string(), key.to_string(), "{text}");
        }
        // The shortest form needs no tail.
        assert_eq!(encode(&json!(1), "x", 0).len(), 1 + 8 + 3 + 4);
    }

    #[test]
    fn group_prefixes() {
        let k = encode(&json!([1, [2], "x"]), "d", 0);
        let g1 = group_prefix(&k, 1).unwrap();
        let g2 = group_prefix(&k, 2).unwrap();
        assert!(g1.len() < g2.len());
        let other = encode(&json!([1, [3]]), "e", 0);
        assert_eq!(group_prefix(&other, 1).unwrap(), g1);
        assert_ne!(group_prefix(&other, 2).unwrap(), g2);
        assert_eq!(group_key(&json!([1, 2, 3]), 2), json!([1, 2]));
        assert_eq!(group_key(&json!("a"), 2), json!("a"));
        assert_eq!(
            group_prefix(&encode(&json!("a"), "d", 0), 1).unwrap(),
            prefix(&json!("a"))
        );
    }

    #[test]
    fn hex_snapshot() {
        let k = encode(&json!([null, true, "a\u{0}", 2]), "id", 1);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&k),
            "0601030561 00ff0001 04c000000000000000 00 696400 01 00000001".replace(' ', "")
        );
    }
}
