//! CouchDB Mango selectors (the `selector` of `POST /{db}/_find`): [`Selector::parse`] validates a
//! selector once, [`Selector::matches`] tests documents against it.
//!
//! # Syntax
//!
//! A selector is a JSON object. Each member is either a field with a condition or an operator:
//!
//! ```json
//! {"director": "Lars von Trier"}                   // implicit $eq
//! {"director": "Lars von Trier", "year": 2003}     // implicit $and of the members
//! {"year": {"$gt": 2000, "$lt": 2010}}             // operators on one field (implicit $and)
//! {"imdb": {"rating": 8}}                          // nested object = path: same as {"imdb.rating": 8}
//! {"imdb.rating": {"$gte": 8}}                     // dotted path
//! {"genre": {"$elemMatch": {"$eq": "Horror"}}}     // operator on the elements of an array
//! {"$or": [{"director": "George Lucas"}, {"director": "Steven Spielberg"}]}
//! {"tags.0": "first"}                              // a numeric path segment indexes an array
//! {"a\\.b": 1}                                     // the field named "a.b" (`\.` escaped in JSON)
//! {"\\$ref": 1}                                    // the field named "$ref"
//! {}                                               // matches every document
//! ```
//!
//! A member whose name starts with `$` is an operator; any other name is a field path. In a path, an
//! unescaped `.` separates segments and a backslash makes the next character literal (`\.` a dot,
//! `\$` a dollar, `\\` a backslash). An empty name or an empty segment (`"a..b"`) is an error. A
//! segment that is a decimal integer (`"0"`, `"12"`) indexes into an array; other segments look up
//! object members. A condition that is not a JSON object means `$eq` (so `{"tags": ["a"]}` compares
//! the whole array); an object operand whose members are not operators is read as nested paths,
//! and the empty object `{}` as a field's operand means "equals `{}`". To compare with an object, use
//! `$eq` explicitly: `{"a": {"$eq": {"b": 1}}}`.
//!
//! # Operators
//!
//! Combination operators, usable at any level (relative to the current field path, so
//! `{"age": {"$or": [{"$lt": 18}, {"$gt": 65}]}}` works):
//!
//! | operator | argument | matches when |
//! | --- | --- | --- |
//! | `$and` | array of selectors | all of them match (an empty array matches) |
//! | `$or` | array of selectors | any of them matches (an empty array matches, as in CouchDB) |
//! | `$nor` | array of selectors | none of them matches (an empty array matches) |
//! | `$not` | selector (object) | the selector does not match — see *negation* below |
//!
//! Condition operators, applied to the value of the field they are under:
//!
//! | operator | argument | matches when the field exists and |
//! | --- | --- | --- |
//! | `$lt` `$lte` `$eq` `$ne` `$gte` `$gt` | any JSON | it compares so with the argument in CouchDB collation (`null < false < true < numbers < strings < arrays < objects`), so `{"$lt": 5}` also matches `null` and booleans |
//! | `$exists` | boolean | `true`: always; `false`: never (`{"$exists": false}` matches a *missing* field) |
//! | `$type` | `"null"`, `"boolean"`, `"number"`, `"string"`, `"array"` or `"object"` | its JSON type is that |
//! | `$in` | array | it equals one of the values; if it is an array, one of its *elements* does |
//! | `$nin` | array | it equals none of the values; if it is an array, none of its elements does |
//! | `$all` | array | it is an array containing every value (an empty `$all` never matches), or the argument is `[x]` and the field equals `x` |
//! | `$size` | integer ≥ 0 | it is an array of that length |
//! | `$mod` | `[divisor, remainder]`, integers, divisor ≠ 0 | it is an integer (not `4.0`) and `value % divisor == remainder` (remainder takes the sign of the value, as Erlang's `rem`) |
//! | `$beginsWith` | string | it is a string starting with the argument |
//! | `$regex` | string: a regular expression | it is a string containing a match of the pattern (unanchored: anchor with `^` and `$`) — see *regular expressions* below |
//! | `$elemMatch` | selector | it is an array and at least one element matches the selector |
//! | `$allMatch` | selector | it is a non-empty array and every element matches the selector |
//! | `$keyMapMatch` | selector | it is an object and at least one of its *keys* (as a string) matches the selector |
//!
//! Inside `$elemMatch`, `$allMatch` and `$keyMapMatch` the selector applies to the element (or key):
//! operators without a field test the element itself (`{"$elemMatch": {"$gt": 3}}`), fields look
//! inside it (`{"$elemMatch": {"name": "x"}}`).
//!
//! # Regular expressions
//!
//! `$regex` matches as CouchDB's `re:run(Value, Regex, [{capture, none}])` does: the pattern may
//! match anywhere in the string (`{"$regex": "ar"}` matches `"Mario"`), a field that is not a
//! string never matches (`{"debut": {"$regex": "^19"}}` does not match `{"debut": 1981}`), and a
//! pattern that does not compile is refused when the selector is parsed, with a 400
//! `Bad argument for operator $regex: "(" (unclosed group)`. Flags go inside the pattern:
//! `(?i)mario` ignores case, `(?s)` lets `.` match a newline, `(?m)` makes `^`/`$` match at line
//! ends.
//!
//! Patterns are compiled once, at parse time, by the [`regex`](https://docs.rs/regex) crate, whose
//! matching takes time linear in the pattern and the string: selectors come from peers, and
//! `(a+)+$` on a long string cannot backtrack catastrophically here. The crate's syntax is Perl's
//! without the features that need backtracking (see the deviations). A pattern is limited to 1024
//! bytes, its compiled form to 1 MiB (Unicode classes are large: `\w{10}` takes about half of it,
//! `\w{100}` is refused; `\w+` or `[a-z]{100}` are small), and a selector to 16 `$regex` members
//! (counted anywhere in the selector JSON), which bounds the memory one selector can take.
//!
//! # Missing fields and negation
//!
//! As in CouchDB, a condition on a field that is missing never matches, except `$exists: false`.
//! In particular `{"a": {"$ne": 1}}` does **not** match a document without `a`. A path that cannot
//! be followed (through a number or string, an array segment that is not an index in range) matches
//! nothing at all, not even `$exists: false`: `{"a.b": {"$exists": false}}` does not match
//! `{"a": 5}` (CouchDB's `bad_path`).
//!
//! `$not` and `$nor` follow what CouchDB really does (it rewrites negations into the complementary
//! operators, pushing them down to the fields), not the naive "the sub-selector does not match": a
//! negated condition still needs its field to exist, except that a negated `$exists` flips. So
//! `{"$not": {"a": 1}}` and `{"a": {"$not": {"$eq": 1}}}` mean `{"a": {"$ne": 1}}` — `a` exists and is
//! not 1 — while `{"a": {"$not": {"$exists": true}}}` matches documents without `a`. De Morgan's laws
//! apply: `{"$not": {"$and": [x, y]}}` is `{"$or": [{"$not": x}, {"$not": y}]}`. Operators with no
//! complement (`$regex`, `$size`, `$type`, `$all`, `$mod`, `$beginsWith`, `$elemMatch`, ...) keep the
//! negation, as CouchDB's `negate/1` does, so `{"a": {"$not": {"$regex": "^x"}}}` matches when `a`
//! exists and is not a string starting with `x` (a number, say), but not when `a` is missing.
//!
//! # Errors
//!
//! [`Selector::parse`] answers 400 `bad_request` with CouchDB's reason where CouchDB has one:
//! `Invalid operator: $foo`, `Bad argument for operator $in: 5` (for `$regex`, followed by why the
//! pattern was refused), `Unsupported operator: $where`,
//! `One or more conditions is missing a field name.` (an empty field name, or a condition with no
//! field to apply to, such as `{"$gt": 1}`), plus `Invalid field name: a..b`,
//! `Selector must be a JSON object`, `Selector is nested too deeply` for JSON nesting deeper
//! than 64 (operands included), and `Selector has too many $regex operators` past 16. Operator
//! names are case-sensitive.
//!
//! # Deviations from CouchDB
//!
//! - `$regex` patterns are the [`regex`](https://docs.rs/regex/latest/regex/#syntax) crate's
//!   syntax, not PCRE's (CouchDB's `re`). Refused as a bad argument: look-around (`(?=`, `(?!`,
//!   `(?<=`, `(?<!`), backreferences (`\1`), atomic groups (`(?>`), conditionals (`(?(1)`),
//!   `\Q...\E`, `\Z`, `\G`, `\K`, `\R`, `\h`. Accepted but read differently: possessive
//!   quantifiers (`a++` is a greedy `(a+)+` here, so `a++a` matches `"aa"`); `(?R)` (the CRLF flag
//!   here, recursion in PCRE); CouchDB compiles without the `unicode` option, so PCRE runs on the
//!   UTF-8 bytes (`.` matches one byte of `é`, `\w` `\d` `\s` `\b` and `(?i)` know only ASCII
//!   and Latin-1), while here patterns run on characters with Unicode classes and case folding;
//!   and `$` (without `(?m)`) matches only at the very end, where PCRE also matches before a final
//!   newline. Patterns are bounded (1024 bytes, 1 MiB compiled, 16 per selector); CouchDB bounds
//!   none of these.
//! - A `$regex` or `$beginsWith` argument that is not a string is `Bad argument for operator ...`;
//!   CouchDB has no clause for it and answers `Invalid operator: $regex` (or `$beginsWith`).
//! - `$text` (and its internal `$default`) need a text index: refused as `Unsupported operator`,
//!   like CouchDB's `$where`, `$geoWithin`, `$geoIntersects`, `$near` and `$nearSphere`.
//! - Errors are all 400 `bad_request`; CouchDB uses the `error` strings `invalid_operator`,
//!   `bad_arg`, `not_supported`, `invalid_selector` (still 400).
//! - `$type` with an unknown type name is an error; CouchDB accepts it and matches nothing.
//! - Negation is rewritten the same way at every level. CouchDB does not rewrite negations inside
//!   `$elemMatch`/`$allMatch`/`$keyMapMatch` under a field, so there `{"$not": {"b": 1}}` matches an
//!   element *without* `b` in CouchDB but not here, and `$nor` there fails in CouchDB but works here.
//! - `{}` as a sub-selector at the top level (`{"$and": [{}]}`, `{"$not": {}}`) is the empty
//!   selector (matches everything; negated, nothing). CouchDB compares the whole document with `{}`
//!   there (matching nothing) or refuses it. As a field's operand (`{"a": {}}`) or inside
//!   `$elemMatch`, `{}` means "equals `{}`", as in CouchDB.
//! - Conditions without a field anywhere at document level (`{"$or": [1]}`) are refused with
//!   `One or more conditions is missing a field name.`; CouchDB refuses them only at the very top
//!   and otherwise compares the whole document (matching nothing).
//! - `$all` and the `[x]` form of `$all` compare with collation (so `1` equals `1.0`); CouchDB uses
//!   exact Erlang term equality there.
//! - A backslash in a field name escapes the next character, so `\\` is a literal backslash and a
//!   trailing lone backslash is kept. CouchDB drops every backslash, so it cannot name a field that
//!   contains one.
//! - Strings compare by Unicode code point (see [`collate`]), not by ICU collation as CouchDB does
//!   for every field but `_id`; `$beginsWith` compares code points, not grapheme clusters.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json::collate;

/// Deepest JSON nesting (objects and arrays, operands included) a selector may have.
const MAX_DEPTH: usize = 64;

/// How many characters of an offending operand or field name an error reason quotes.
const MAX_SHOWN: usize = 100;

/// Longest `$regex` pattern, in bytes.
const MAX_REGEX_LEN: usize = 1024;

/// Most `$regex` members one selector may hold (counted anywhere in its JSON).
const MAX_REGEXES: usize = 16;

/// Bound on the compiled form (the NFA) of one `$regex` pattern (`RegexBuilder::size_limit`), in
/// bytes; the crate's default is 10 MiB. Literals and ASCII classes are small (`[a-z]{1000}`
/// takes about 90 KiB), Unicode classes large (`^[\w.+-]+@[\w-]+\.[\w.-]+$` about 170 KiB,
/// `\w{10}` about 520 KiB, `\w{100}` 6 MiB: refused). With [`MAX_REGEXES`] it bounds what one
/// selector from a peer can make us allocate.
const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// Bound on the lazy DFA's cache (and one-pass DFA) of one `$regex`
/// (`RegexBuilder::dfa_size_limit`), in bytes; the crate's default is 2 MiB.
const REGEX_DFA_SIZE_LIMIT: usize = 1024 * 1024;

/// A parsed, validated Mango selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    root: Node,
}

impl Selector {
    /// Parses a selector JSON object; invalid operators/operands -> Err(Error::bad_request(..))
    /// with a precise reason (CouchDB's where it has one, e.g. `Invalid operator: $foo`). Never
    /// panics; selectors nested deeper than 64 levels are refused, which bounds the recursion of
    /// both parsing and matching.
    pub fn parse(selector: &Value) -> Result<Selector> {
        let Value::Object(map) = selector else {
            return Err(Error::bad_request("Selector must be a JSON object"));
        };
        check_limits(selector)?;
        let root = if map.is_empty() {
            Node::All
        } else {
            parse_object(map, &[], true)?
        };
        Ok(Selector { root })
    }

    /// Whether a document (a JSON object including its `_id`, `_rev`, ... members) matches.
    /// Total: any JSON value may be passed, and a non-object simply has no fields.
    pub fn matches(&self, doc: &Value) -> bool {
        eval(&self.root, doc, false)
    }
}

/// A selector after normalisation: field paths are pushed down to the conditions, so every
/// condition knows the path it tests, relative to the value the node is evaluated on (the document,
/// or an element inside `$elemMatch`).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// The empty selector: matches everything.
    All,
    /// `$and`, and the implicit and of several members.
    And(Vec<Node>),
    /// `$or`.
    Or(Vec<Node>),
    /// `$nor`.
    Nor(Vec<Node>),
    /// `$not`.
    Not(Box<Node>),
    /// A condition on the value at `path` (an empty path: the value itself).
    Field { path: Vec<String>, cond: Cond },
}

/// A condition operator with its validated argument.
#[derive(Debug, Clone, PartialEq)]
enum Cond {
    /// `$lt`, `$lte`, `$eq`, `$ne`, `$gte`, `$gt`.
    Compare(CmpOp, Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    All(Vec<Value>),
    Exists(bool),
    Type(JsonType),
    Size(u64),
    /// Integers as `i128`, which holds every integer serde_json can hold (`i64` and `u64`).
    Mod {
        divisor: i128,
        remainder: i128,
    },
    BeginsWith(String),
    Regex(Pattern),
    ElemMatch(Box<Node>),
    AllMatch(Box<Node>),
    KeyMapMatch(Box<Node>),
}

/// A compiled `$regex` pattern. Every pattern is compiled with the same options, so two are equal
/// when their source strings are.
#[derive(Debug, Clone)]
struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Lt,
    Lte,
    Eq,
    Ne,
    Gte,
    Gt,
}

impl CmpOp {
    fn holds(self, order: Ordering) -> bool {
        match self {
            CmpOp::Lt => order == Ordering::Less,
            CmpOp::Lte => order != Ordering::Greater,
            CmpOp::Eq => order == Ordering::Equal,
            CmpOp::Ne => order != Ordering::Equal,
            CmpOp::Gte => order != Ordering::Less,
            CmpOp::Gt => order == Ordering::Greater,
        }
    }
}

/// The type names of `$type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    fn from_name(name: &str) -> Option<JsonType> {
        Some(match name {
            "null" => JsonType::Null,
            "boolean" => JsonType::Boolean,
            "number" => JsonType::Number,
            "string" => JsonType::String,
            "array" => JsonType::Array,
            "object" => JsonType::Object,
            _ => return None,
        })
    }

    fn of(value: &Value) -> JsonType {
        match value {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Boolean,
            Value::Number(_) => JsonType::Number,
            Value::String(_) => JsonType::String,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Refuses JSON nested deeper than [`MAX_DEPTH`] or with more than [`MAX_REGEXES`] `$regex`
/// members, without recursing (the value may be arbitrarily deep when it was not built by a
/// depth-limited parser).
fn check_limits(value: &Value) -> Result<()> {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    let mut regexes = 0usize;
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => {
                regexes += usize::from(map.contains_key("$regex"));
                if regexes > MAX_REGEXES {
                    return Err(Error::bad_request(format!(
                        "Selector has too many $regex operators (more than {MAX_REGEXES})"
                    )));
                }
                Box::new(map.values())
            }
            _ => continue,
        };
        if depth > MAX_DEPTH {
            return Err(Error::bad_request(format!(
                "Selector is nested too deeply (more than {MAX_DEPTH} levels)"
            )));
        }
        stack.extend(
            children
                .filter(|child| matches!(child, Value::Array(_) | Value::Object(_)))
                .map(|child| (child, depth + 1)),
        );
    }
    Ok(())
}

/// Parses `value` as the condition on `path`. `document_level` is true while the value being
/// tested is the document itself (not an element inside `$elemMatch` and the like), where a
/// condition needs a field name and `{}` with no path is the empty selector.
fn parse_value(value: &Value, path: &[String], document_level: bool) -> Result<Node> {
    match value {
        Value::Object(map) if map.is_empty() && path.is_empty() && document_level => Ok(Node::All),
        Value::Object(map) if !map.is_empty() => parse_object(map, path, document_level),
        // A bare value (or `{}` as an operand) is an implicit `$eq`.
        _ => field(
            path,
            document_level,
            Cond::Compare(CmpOp::Eq, value.clone()),
        ),
    }
}

/// Parses the members of a non-empty selector object: several members are an implicit `$and`.
fn parse_object(map: &Map<String, Value>, path: &[String], document_level: bool) -> Result<Node> {
    let mut nodes = Vec::with_capacity(map.len());
    for (key, arg) in map {
        nodes.push(parse_member(key, arg, path, document_level)?);
    }
    Ok(match <[Node; 1]>::try_from(nodes) {
        Ok([only]) => only,
        Err(nodes) => Node::And(nodes),
    })
}

/// Parses one `key: arg` member of a selector object found at `path`.
fn parse_member(key: &str, arg: &Value, path: &[String], document_level: bool) -> Result<Node> {
    if !key.starts_with('$') {
        if key.is_empty() {
            return Err(missing_field_name());
        }
        let mut full = path.to_vec();
        full.extend(split_field(key)?);
        return parse_value(arg, &full, document_level);
    }
    let leaf = |cond| field(path, document_level, cond);
    match key {
        "$and" => Ok(Node::And(parse_list(key, arg, path, document_level)?)),
        "$or" => Ok(Node::Or(parse_list(key, arg, path, document_level)?)),
        "$nor" => Ok(Node::Nor(parse_list(key, arg, path, document_level)?)),
        "$not" => match arg {
            Value::Object(_) => Ok(Node::Not(Box::new(parse_value(arg, path, document_level)?))),
            _ => Err(bad_arg(key, arg)),
        },
        "$lt" => leaf(Cond::Compare(CmpOp::Lt, arg.clone())),
        "$lte" => leaf(Cond::Compare(CmpOp::Lte, arg.clone())),
        "$eq" => leaf(Cond::Compare(CmpOp::Eq, arg.clone())),
        "$ne" => leaf(Cond::Compare(CmpOp::Ne, arg.clone())),
        "$gte" => leaf(Cond::Compare(CmpOp::Gte, arg.clone())),
        "$gt" => leaf(Cond::Compare(CmpOp::Gt, arg.clone())),
        "$in" => leaf(Cond::In(array_arg(key, arg)?)),
        "$nin" => leaf(Cond::Nin(array_arg(key, arg)?)),
        "$all" => leaf(Cond::All(array_arg(key, arg)?)),
        "$exists" => match arg {
            Value::Bool(should) => leaf(Cond::Exists(*should)),
            _ => Err(bad_arg(key, arg)),
        },
        "$type" => match arg.as_str().and_then(JsonType::from_name) {
            Some(wanted) => leaf(Cond::Type(wanted)),
            None => Err(Error::bad_request(format!(
                "Bad argument for operator $type: {} (expected one of \"null\", \"boolean\", \
                 \"number\", \"string\", \"array\", \"object\")",
                shown(arg)
            ))),
        },
        "$size" => match arg.as_u64() {
            Some(size) => leaf(Cond::Size(size)),
            None => Err(bad_arg(key, arg)),
        },
        "$mod" => match arg.as_array().map(Vec::as_slice) {
            Some([divisor, remainder]) => match (integer(divisor), integer(remainder)) {
                (Some(0), Some(_)) => Err(Error::bad_request(format!(
                    "Bad argument for operator $mod: {} (the divisor must not be zero)",
                    shown(arg)
                ))),
                (Some(divisor), Some(remainder)) => leaf(Cond::Mod { divisor, remainder }),
                _ => Err(bad_arg(key, arg)),
            },
            _ => Err(bad_arg(key, arg)),
        },
        "$beginsWith" => match arg {
            Value::String(prefix) => leaf(Cond::BeginsWith(prefix.clone())),
            _ => Err(bad_arg(key, arg)),
        },
        "$elemMatch" => leaf(Cond::ElemMatch(Box::new(sub_selector(key, arg)?))),
        "$allMatch" => leaf(Cond::AllMatch(Box::new(sub_selector(key, arg)?))),
        "$keyMapMatch" => leaf(Cond::KeyMapMatch(Box::new(sub_selector(key, arg)?))),
        "$regex" => leaf(Cond::Regex(compile_regex(arg)?)),
        "$text" | "$default" | "$where" | "$geoWithin" | "$geoIntersects" | "$near"
        | "$nearSphere" => Err(Error::bad_request(format!("Unsupported operator: {key}"))),
        _ => Err(Error::bad_request(format!(
            "Invalid operator: {}",
            truncate(key)
        ))),
    }
}

/// A condition on `path`; refused when it has no field to apply to (at document level).
fn field(path: &[String], document_level: bool, cond: Cond) -> Result<Node> {
    if path.is_empty() && document_level {
        return Err(missing_field_name());
    }
    Ok(Node::Field {
        path: path.to_vec(),
        cond,
    })
}

/// The argument of `$and`, `$or`, `$nor`: an array of selectors relative to `path`.
fn parse_list(op: &str, arg: &Value, path: &[String], document_level: bool) -> Result<Vec<Node>> {
    let Value::Array(items) = arg else {
        return Err(bad_arg(op, arg));
    };
    items
        .iter()
        .map(|item| parse_value(item, path, document_level))
        .collect()
}

/// The argument of `$elemMatch`, `$allMatch`, `$keyMapMatch`: a selector (object) applied to
/// each element or key, so relative to it.
fn sub_selector(op: &str, arg: &Value) -> Result<Node> {
    match arg {
        Value::Object(_) => parse_value(arg, &[], false),
        _ => Err(bad_arg(op, arg)),
    }
}

fn array_arg(op: &str, arg: &Value) -> Result<Vec<Value>> {
    match arg {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(bad_arg(op, arg)),
    }
}

/// The argument of `$regex`: a string that compiles (within the size limits). CouchDB checks it
/// with `re:compile` and answers `Bad argument for operator $regex: ...`; the reason here also
/// says what is wrong with the pattern.
fn compile_regex(arg: &Value) -> Result<Pattern> {
    let Value::String(pattern) = arg else {
        return Err(bad_arg("$regex", arg));
    };
    let refuse = |why: &str| {
        Error::bad_request(format!(
            "Bad argument for operator $regex: {} ({why})",
            shown(arg)
        ))
    };
    if pattern.len() > MAX_REGEX_LEN {
        return Err(refuse(&format!(
            "the pattern is longer than {MAX_REGEX_LEN} bytes"
        )));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
        .map(Pattern)
        .map_err(|e| refuse(&regex_error_reason(&e)))
}

/// One line saying why a pattern was refused. The crate's syntax errors span several lines (the
/// pattern, a caret under the fault, then `error: <what>`); the last line is the reason.
fn regex_error_reason(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .map_or_else(|| one_line(text), str::to_owned),
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled pattern is larger than {limit} bytes")
        }
        other => one_line(&other.to_string()),
    }
}

fn one_line(text: &str) -> String {
    truncate(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Splits a field name into path segments at unescaped dots; a backslash makes the next
/// character literal.
fn split_field(name: &str) -> Result<Vec<String>> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.push(chars.next().unwrap_or('\\')),
            '.' => segments.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    segments.push(current);
    if segments.iter().any(String::is_empty) {
        return Err(Error::bad_request(format!(
            "Invalid field name: {}",
            truncate(name)
        )));
    }
    Ok(segments)
}

fn integer(value: &Value) -> Option<i128> {
    value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
}

fn missing_field_name() -> Error {
    Error::bad_request("One or more conditions is missing a field name.")
}

fn bad_arg(op: &str, arg: &Value) -> Error {
    Error::bad_request(format!("Bad argument for operator {op}: {}", shown(arg)))
}

/// `value` as compact JSON, cut to [`MAX_SHOWN`] characters.
fn shown(value: &Value) -> String {
    truncate(&serde_json::to_string(value).unwrap_or_default())
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

/// Evaluates `node` on `value`, or its negation when `negated` (negations are pushed down to the
/// conditions, as CouchDB's normalisation does: see the module docs).
fn eval(node: &Node, value: &Value, negated: bool) -> bool {
    match node {
        Node::All => !negated,
        Node::And(items) => eval_and(items, value, negated),
        Node::Or(items) => eval_or(items, value, negated),
        Node::Nor(items) => eval_or(items, value, !negated),
        Node::Not(inner) => eval(inner, value, !negated),
        Node::Field { path, cond } => match lookup(value, path) {
            Lookup::Found(found) => test(cond, found) != negated,
            // Only `$exists: false` (or a negated `$exists: true`) matches a missing field.
            Lookup::Missing => matches!(cond, Cond::Exists(should) if *should == negated),
            Lookup::BadPath => false,
        },
    }
}

/// `$and` (or, negated, the `$or` of the negations). Empty: matches, either way, as in CouchDB.
fn eval_and(items: &[Node], value: &Value, negated: bool) -> bool {
    if negated {
        items.is_empty() || items.iter().any(|item| eval(item, value, true))
    } else {
        items.iter().all(|item| eval(item, value, false))
    }
}

/// `$or` (or, negated, the `$and` of the negations). Empty: matches, either way, as in CouchDB.
fn eval_or(items: &[Node], value: &Value, negated: bool) -> bool {
    if negated {
        items.iter().all(|item| eval(item, value, true))
    } else {
        items.is_empty() || items.iter().any(|item| eval(item, value, false))
    }
}

/// Whether a condition holds for a value that exists.
fn test(cond: &Cond, value: &Value) -> bool {
    match cond {
        Cond::Compare(op, arg) => op.holds(collate(value, arg)),
        Cond::In(args) => is_in(value, args),
        Cond::Nin(args) => !is_in(value, args),
        Cond::All(args) => match value {
            Value::Array(items) if !args.is_empty() => {
                args.iter()
                    .all(|arg| items.iter().any(|item| equal(item, arg)))
                    || matches!(args.as_slice(), [only @ Value::Array(_)] if equal(only, value))
            }
            _ => false,
        },
        Cond::Exists(should) => *should,
        Cond::Type(wanted) => JsonType::of(value) == *wanted,
        Cond::Size(size) => match value {
            Value::Array(items) => u64::try_from(items.len()).is_ok_and(|len| len == *size),
            _ => false,
        },
        Cond::Mod { divisor, remainder } => {
            integer(value).and_then(|v| v.checked_rem(*divisor)) == Some(*remainder)
        }
        Cond::BeginsWith(prefix) => match value {
            Value::String(text) => text.starts_with(prefix.as_str()),
            _ => false,
        },
        // Unanchored, strings only: CouchDB's `re:run(Value, Regex, [{capture, none}])` when
        // `is_binary(Value)`, and no match otherwise.
        Cond::Regex(pattern) => match value {
            Value::String(text) => pattern.0.is_match(text),
            _ => false,
        },
        Cond::ElemMatch(inner) => match value {
            Value::Array(items) => items.iter().any(|item| eval(inner, item, false)),
            _ => false,
        },
        Cond::AllMatch(inner) => match value {
            Value::Array(items) => {
                !items.is_empty() && items.iter().all(|item| eval(inner, item, false))
            }
            _ => false,
        },
        Cond::KeyMapMatch(inner) => match value {
            Value::Object(map) => map
                .keys()
                .any(|key| eval(inner, &Value::String(key.clone()), false)),
            _ => false,
        },
    }
}

/// `$in`: the value equals an argument; for an array, one of its elements does.
fn is_in(value: &Value, args: &[Value]) -> bool {
    match value {
        Value::Array(items) => args
            .iter()
            .any(|arg| items.iter().any(|item| equal(item, arg))),
        _ => args.iter().any(|arg| equal(value, arg)),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    collate(a, b) == Ordering::Equal
}

/// Where a path leads in a value.
enum Lookup<'a> {
    Found(&'a Value),
    /// An object on the way lacks the member.
    Missing,
    /// The path goes through a scalar, or an array with a segment that is not an index in range.
    BadPath,
}

fn lookup<'a>(mut value: &'a Value, path: &[String]) -> Lookup<'a> {
    for segment in path {
        value = match value {
            Value::Object(map) => match map.get(segment) {
                Some(member) => member,
                None => return Lookup::Missing,
            },
            Value::Array(items) => match array_index(segment).and_then(|i| items.get(i)) {
                Some(item) => item,
                None => return Lookup::BadPath,
            },
            _ => return Lookup::BadPath,
        };
    }
    Lookup::Found(value)
}

/// A path segment as an array index, read as Erlang's `list_to_integer` does (an optional sign,
/// then decimal digits); `None` when it is not one, or is negative.
fn array_index(segment: &str) -> Option<usize> {
    let (negative, digits) = match segment.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, segment.strip_prefix('+').unwrap_or(segment)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    if negative {
        return None;
    }
    significant.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn selector(value: Value) -> Selector {
        match Selector::parse(&value) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{value} should parse: {e:?}"),
        }
    }

    fn reason(value: Value) -> String {
        match Selector::parse(&value) {
            Ok(parsed) => panic!("{value} should be refused, parsed as {parsed:?}"),
            Err(e) => {
                assert_eq!(e.status(), 400, "{value}");
                format!("{e}")
            }
        }
    }

    /// Runs `(selector, doc, expected)` rows.
    fn check(rows: &[(Value, Value, bool)]) {
        for (sel, doc, expected) in rows {
            assert_eq!(
                selector(sel.clone()).matches(doc),
                *expected,
                "selector {sel} on {doc}"
            );
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let all = selector(json!({}));
        for doc in [
            json!({}),
            json!({"_id": "x", "a": 1}),
            json!(null),
            json!([1]),
            json!(5),
        ] {
            assert!(all.matches(&doc), "{doc}");
        }
    }

    #[test]
    fn implicit_eq_and_implicit_and() {
        let doc = json!({"_id": "d1", "_rev": "1-a", "name": "x", "n": 3, "tags": ["a", "b"], "o": {"p": 1}});
        check(&[
            (json!({"name": "x"}), doc.clone(), true),
            (json!({"name": "y"}), doc.clone(), false),
            (json!({"_id": "d1"}), doc.clone(), true),
            (json!({"_rev": "1-a"}), doc.clone(), true),
            (json!({"n": 3.0}), doc.clone(), true),
            (json!({"n": "3"}), doc.clone(), false),
            (json!({"missing": null}), doc.clone(), false),
            (json!({"name": "x", "n": 3}), doc.clone(), true),
            (json!({"name": "x", "n": 4}), doc.clone(), false),
            // A bare array compares the whole array, not its elements.
            (json!({"tags": ["a", "b"]}), doc.clone(), true),
            (json!({"tags": ["b", "a"]}), doc.clone(), false),
            (json!({"tags": "a"}), doc.clone(), false),
            // An explicit $eq compares objects; {} as an operand means "equals {}".
            (json!({"o": {"$eq": {"p": 1}}}), doc.clone(), true),
            (json!({"o": {"$eq": {"p": 2}}}), doc.clone(), false),
            (json!({"o": {}}), doc.clone(), false),
            (json!({"o": {}}), json!({"o": {}}), true),
            (json!({"name": "x"}), json!("not an object"), false),
        ]);
    }

    #[test]
    fn paths() {
        let doc = json!({
            "a": {"b": {"c": 1}, "list": [{"x": 1}, {"x": 2}]},
            "a.b": {"c": 2},
            "$ref": 7,
            "back\\slash": 8,
            "arr": [10, 20, 30],
            "s": "str",
        });
        check(&[
            (json!({"a.b.c": 1}), doc.clone(), true),
            (json!({"a": {"b": {"c": 1}}}), doc.clone(), true),
            (json!({"a": {"b.c": 1}}), doc.clone(), true),
            (json!({"a": {"b": {"c": {"$gt": 0}}}}), doc.clone(), true),
            (json!({"a.b.c": 2}), doc.clone(), false),
            // Escaped dot: a member whose name contains a dot.
            (json!({"a\\.b.c": 2}), doc.clone(), true),
            (json!({"a\\.b": {"c": 2}}), doc.clone(), true),
            // Escaped dollar: a member whose name starts with `$`.
            (json!({"\\$ref": 7}), doc.clone(), true),
            (json!({"\\\\": 1}), json!({"\\": 1}), true),
            (json!({"back\\\\slash": 8}), doc.clone(), true),
            // Array indexes.
            (json!({"arr.0": 10}), doc.clone(), true),
            (json!({"arr.2": 30}), doc.clone(), true),
            (json!({"arr.02": 30}), doc.clone(), true),
            (json!({"arr.+1": 20}), doc.clone(), true),
            (json!({"arr.1": 10}), doc.clone(), false),
            (json!({"a.list.1.x": 2}), doc.clone(), true),
            (json!({"a.list.0.x": 2}), doc.clone(), false),
            // Out of range, negative, non-numeric on an array, through a scalar: bad paths that
            // match nothing, not even $exists: false.
            (json!({"arr.3": {"$exists": false}}), doc.clone(), false),
            (json!({"arr.-1": {"$exists": false}}), doc.clone(), false),
            (json!({"arr.x": {"$exists": false}}), doc.clone(), false),
            (json!({"s.x": {"$exists": false}}), doc.clone(), false),
            (
                json!({"arr.3": {"$not": {"$exists": true}}}),
                doc.clone(),
                false,
            ),
            // A missing member on the way is "missing".
            (
                json!({"a.nope.deeper": {"$exists": false}}),
                doc.clone(),
                true,
            ),
            (
                json!({"nope.deeper": {"$exists": false}}),
                doc.clone(),
                true,
            ),
        ]);
    }

    #[test]
    fn field_name_splitting() {
        let split = |name: &str| split_field(name).ok();
        assert_eq!(split("a"), Some(vec!["a".to_owned()]));
        assert_eq!(
            split("a.b.c"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(split("a\\.b"), Some(vec!["a.b".into()]));
        assert_eq!(split("a.b\\.c"), Some(vec!["a".into(), "b.c".into()]));
        assert_eq!(split("\\$a"), Some(vec!["$a".into()]));
        assert_eq!(split("a\\\\.b"), Some(vec!["a\\".into(), "b".into()]));
        assert_eq!(split("a\\"), Some(vec!["a\\".into()]));
        assert_eq!(split("a..b"), None);
        assert_eq!(split(".a"), None);
        assert_eq!(split("a."), None);
        assert_eq!(split(""), None);
    }

    #[test]
    fn array_indexes() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("007"), Some(7));
        assert_eq!(array_index("+3"), Some(3));
        assert_eq!(array_index("-0"), Some(0));
        assert_eq!(array_index("-1"), None);
        assert_eq!(array_index("x"), None);
        assert_eq!(array_index("1x"), None);
        assert_eq!(array_index("+"), None);
        assert_eq!(array_index(""), None);
        assert_eq!(array_index("99999999999999999999999999"), None);
    }

    #[test]
    fn comparison_operators() {
        let doc = json!({"n": 5, "s": "m", "z": null, "b": false, "arr": [1, 2], "o": {"k": 1}});
        check(&[
            (json!({"n": {"$lt": 6}}), doc.clone(), true),
            (json!({"n": {"$lt": 5}}), doc.clone(), false),
            (json!({"n": {"$lte": 5}}), doc.clone(), true),
            (json!({"n": {"$lte": 4.5}}), doc.clone(), false),
            (json!({"n": {"$eq": 5}}), doc.clone(), true),
            (json!({"n": {"$eq": 5.0}}), doc.clone(), true),
            (json!({"n": {"$eq": 6}}), doc.clone(), false),
            (json!({"n": {"$ne": 6}}), doc.clone(), true),
            (json!({"n": {"$ne": 5}}), doc.clone(), false),
            (json!({"n": {"$gte": 5}}), doc.clone(), true),
            (json!({"n": {"$gte": 5.5}}), doc.clone(), false),
            (json!({"n": {"$gt": 4}}), doc.clone(), true),
            (json!({"n": {"$gt": 5}}), doc.clone(), false),
            (json!({"n": {"$gt": 1, "$lt": 10}}), doc.clone(), true),
            (json!({"n": {"$gt": 1, "$lt": 3}}), doc.clone(), false),
            // Collation across types: null < false < true < numbers < strings < arrays < objects.
            (json!({"z": {"$lt": 5}}), doc.clone(), true),
            (json!({"b": {"$lt": 0}}), doc.clone(), true),
            (json!({"s": {"$gt": 1000}}), doc.clone(), true),
            (json!({"s": {"$gt": "a", "$lt": "z"}}), doc.clone(), true),
            (json!({"arr": {"$gt": "zzz"}}), doc.clone(), true),
            (json!({"arr": {"$lt": [1, 3]}}), doc.clone(), true),
            (json!({"arr": {"$gt": [1]}}), doc.clone(), true),
            (json!({"o": {"$gt": [9]}}), doc.clone(), true),
            (json!({"_id": {"$gt": null}}), json!({"_id": "a"}), true),
            // A missing field matches no comparison, $ne included.
            (json!({"missing": {"$ne": 1}}), doc.clone(), false),
            (json!({"missing": {"$lt": 1}}), doc.clone(), false),
            (json!({"missing": {"$gt": null}}), doc.clone(), false),
            (json!({"missing": {"$eq": null}}), doc.clone(), false),
        ]);
    }

    #[test]
    fn exists_and_type() {
        let doc = json!({"z": null, "b": true, "n": 1.5, "s": "", "a": [], "o": {}});
        check(&[
            (json!({"z": {"$exists": true}}), doc.clone(), true),
            (json!({"z": {"$exists": false}}), doc.clone(), false),
            (json!({"q": {"$exists": true}}), doc.clone(), false),
            (json!({"q": {"$exists": false}}), doc.clone(), true),
            (json!({"o.q": {"$exists": false}}), doc.clone(), true),
            (json!({"z": {"$type": "null"}}), doc.clone(), true),
            (json!({"b": {"$type": "boolean"}}), doc.clone(), true),
            (json!({"n": {"$type": "number"}}), doc.clone(), true),
            (json!({"s": {"$type": "string"}}), doc.clone(), true),
            (json!({"a": {"$type": "array"}}), doc.clone(), true),
            (json!({"o": {"$type": "object"}}), doc.clone(), true),
            (json!({"n": {"$type": "string"}}), doc.clone(), false),
            (json!({"a": {"$type": "object"}}), doc.clone(), false),
            (json!({"q": {"$type": "null"}}), doc.clone(), false),
        ]);
    }

    #[test]
    fn in_nin_all_size() {
        let doc = json!({"n": 2, "tags": ["a", "b", "c"], "empty": [], "nested": [[1, 2]]});
        check(&[
            (json!({"n": {"$in": [1, 2, 3]}}), doc.clone(), true),
            (json!({"n": {"$in": [1, 3]}}), doc.clone(), false),
            (json!({"n": {"$in": []}}), doc.clone(), false),
            (json!({"tags": {"$in": ["z", "b"]}}), doc.clone(), true),
            (json!({"tags": {"$in": ["z"]}}), doc.clone(), false),
            // For an array field, $in compares elements, never the whole array.
            (
                json!({"tags": {"$in": [["a", "b", "c"]]}}),
                doc.clone(),
                false,
            ),
            (json!({"missing": {"$in": [null]}}), doc.clone(), false),
            (json!({"n": {"$nin": [1, 3]}}), doc.clone(), true),
            (json!({"n": {"$nin": [2]}}), doc.clone(), false),
            (json!({"n": {"$nin": []}}), doc.clone(), true),
            (json!({"tags": {"$nin": ["x", "y"]}}), doc.clone(), true),
            (json!({"tags": {"$nin": ["x", "c"]}}), doc.clone(), false),
            (json!({"missing": {"$nin": [1]}}), doc.clone(), false),
            (json!({"tags": {"$all": ["a", "c"]}}), doc.clone(), true),
            (
                json!({"tags": {"$all": ["c", "a", "b"]}}),
                doc.clone(),
                true,
            ),
            (json!({"tags": {"$all": ["a", "z"]}}), doc.clone(), false),
            (json!({"tags": {"$all": []}}), doc.clone(), false),
            (json!({"n": {"$all": [2]}}), doc.clone(), false),
            (
                json!({"tags": {"$all": [["a", "b", "c"]]}}),
                doc.clone(),
                true,
            ),
            (json!({"tags": {"$all": [["a", "b"]]}}), doc.clone(), false),
            (json!({"nested": {"$all": [[1, 2]]}}), doc.clone(), true),
            (json!({"tags": {"$size": 3}}), doc.clone(), true),
            (json!({"tags": {"$size": 2}}), doc.clone(), false),
            (json!({"empty": {"$size": 0}}), doc.clone(), true),
            (json!({"n": {"$size": 1}}), doc.clone(), false),
            (json!({"missing": {"$size": 0}}), doc.clone(), false),
        ]);
    }

    #[test]
    fn mod_and_begins_with() {
        let doc = json!({"n": 7, "neg": -7, "f": 7.0, "big": u64::MAX, "min": i64::MIN, "s": "hello", "u": "ünïcode"});
        check(&[
            (json!({"n": {"$mod": [3, 1]}}), doc.clone(), true),
            (json!({"n": {"$mod": [3, 2]}}), doc.clone(), false),
            (json!({"n": {"$mod": [-3, 1]}}), doc.clone(), true),
            (json!({"neg": {"$mod": [3, -1]}}), doc.clone(), true),
            (json!({"neg": {"$mod": [3, 2]}}), doc.clone(), false),
            (json!({"n": {"$mod": [7, 0]}}), doc.clone(), true),
            // Only integers: 7.0 is a float.
            (json!({"f": {"$mod": [7, 0]}}), doc.clone(), false),
            (json!({"s": {"$mod": [7, 0]}}), doc.clone(), false),
            (json!({"big": {"$mod": [2, 1]}}), doc.clone(), true),
            (json!({"min": {"$mod": [-1, 0]}}), doc.clone(), true),
            (json!({"min": {"$mod": [i64::MIN, 0]}}), doc.clone(), true),
            (json!({"n": {"$mod": [u64::MAX, 7]}}), doc.clone(), true),
            (json!({"s": {"$beginsWith": "he"}}), doc.clone(), true),
            (json!({"s": {"$beginsWith": ""}}), doc.clone(), true),
            (json!({"s": {"$beginsWith": "hello!"}}), doc.clone(), false),
            (json!({"s": {"$beginsWith": "H"}}), doc.clone(), false),
            (json!({"u": {"$beginsWith": "ün"}}), doc.clone(), true),
            (json!({"n": {"$beginsWith": "7"}}), doc.clone(), false),
            (json!({"missing": {"$beginsWith": ""}}), doc.clone(), false),
        ]);
    }

    #[test]
    fn elem_match_all_match_key_map_match() {
        let doc = json!({
            "scores": [70, 82, 95],
            "people": [{"name": "ann", "age": 30}, {"name": "bob", "age": 17}],
            "empty": [],
            "map": {"alpha": 1, "beta": 2},
            "emptymap": {},
            "n": 3,
        });
        check(&[
            (
                json!({"scores": {"$elemMatch": {"$gte": 80, "$lt": 85}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"scores": {"$elemMatch": {"$gte": 83, "$lt": 85}}}),
                doc.clone(),
                false,
            ),
            (
                json!({"scores": {"$elemMatch": {"$eq": 95}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"people": {"$elemMatch": {"name": "bob", "age": {"$lt": 18}}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"people": {"$elemMatch": {"name": "ann", "age": {"$lt": 18}}}}),
                doc.clone(),
                false,
            ),
            (
                json!({"people": {"$elemMatch": {"$or": [{"name": "zed"}, {"age": 30}]}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"empty": {"$elemMatch": {"$exists": true}}}),
                doc.clone(),
                false,
            ),
            (json!({"n": {"$elemMatch": {"$eq": 3}}}), doc.clone(), false),
            (json!({"scores": {"$elemMatch": {}}}), doc.clone(), false),
            (
                json!({"l": {"$elemMatch": {}}}),
                json!({"l": [1, {}]}),
                true,
            ),
            (
                json!({"scores": {"$allMatch": {"$gt": 60}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"scores": {"$allMatch": {"$gt": 75}}}),
                doc.clone(),
                false,
            ),
            (
                json!({"people": {"$allMatch": {"age": {"$exists": true}}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"people": {"$allMatch": {"age": {"$gte": 18}}}}),
                doc.clone(),
                false,
            ),
            (
                json!({"empty": {"$allMatch": {"$gt": 0}}}),
                doc.clone(),
                false,
            ),
            (json!({"n": {"$allMatch": {"$gt": 0}}}), doc.clone(), false),
            (
                json!({"map": {"$keyMapMatch": {"$eq": "beta"}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"map": {"$keyMapMatch": {"$beginsWith": "al"}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"map": {"$keyMapMatch": {"$eq": "gamma"}}}),
                doc.clone(),
                false,
            ),
            (
                json!({"emptymap": {"$keyMapMatch": {"$exists": true}}}),
                doc.clone(),
                false,
            ),
            (
                json!({"scores": {"$keyMapMatch": {"$exists": true}}}),
                doc.clone(),
                false,
            ),
            // Nested $elemMatch.
            (
                json!({"m": {"$elemMatch": {"$elemMatch": {"$eq": 2}}}}),
                json!({"m": [[1], [3, 2]]}),
                true,
            ),
            (
                json!({"m": {"$elemMatch": {"$elemMatch": {"$eq": 4}}}}),
                json!({"m": [[1], [3, 2]]}),
                false,
            ),
        ]);
    }

    #[test]
    fn combination_operators() {
        let doc = json!({"a": 1, "b": 2});
        check(&[
            (json!({"$and": [{"a": 1}, {"b": 2}]}), doc.clone(), true),
            (json!({"$and": [{"a": 1}, {"b": 3}]}), doc.clone(), false),
            (json!({"$and": []}), doc.clone(), true),
            (json!({"$or": [{"a": 9}, {"b": 2}]}), doc.clone(), true),
            (json!({"$or": [{"a": 9}, {"b": 9}]}), doc.clone(), false),
            // As CouchDB: an empty $or matches.
            (json!({"$or": []}), doc.clone(), true),
            (json!({"$nor": [{"a": 9}, {"b": 9}]}), doc.clone(), true),
            (json!({"$nor": [{"a": 9}, {"b": 2}]}), doc.clone(), false),
            (json!({"$nor": []}), doc.clone(), true),
            (json!({"$not": {"a": 9}}), doc.clone(), true),
            (json!({"$not": {"a": 1}}), doc.clone(), false),
            (json!({"a": {"$not": {"$gt": 5}}}), doc.clone(), true),
            (json!({"a": {"$not": {"$lt": 5}}}), doc.clone(), false),
            // Combinators under a field apply to that field.
            (
                json!({"a": {"$or": [{"$lt": 0}, {"$gt": 0}]}}),
                doc.clone(),
                true,
            ),
            (json!({"a": {"$or": [5, 1]}}), doc.clone(), true),
            (
                json!({"a": {"$and": [{"$gt": 0}, {"$lt": 1}]}}),
                doc.clone(),
                false,
            ),
            (json!({"a": {"$nor": [{"$lt": 0}, 1]}}), doc.clone(), false),
            // Mixed members: implicit and.
            (
                json!({"a": 1, "$or": [{"b": 9}, {"b": 2}]}),
                doc.clone(),
                true,
            ),
            (
                json!({"a": 2, "$or": [{"b": 9}, {"b": 2}]}),
                doc.clone(),
                false,
            ),
            // {} as a sub-selector at document level is the empty selector.
            (json!({"$and": [{}]}), doc.clone(), true),
            (json!({"$not": {}}), doc.clone(), false),
        ]);
    }

    #[test]
    fn negation_follows_couchdb_normalisation() {
        let without_a = json!({"b": 1});
        let with_a = json!({"a": 2, "b": 1});
        check(&[
            // A negated condition still needs its field.
            (json!({"$not": {"a": 1}}), without_a.clone(), false),
            (json!({"$not": {"a": 1}}), with_a.clone(), true),
            (json!({"a": {"$not": {"$eq": 1}}}), without_a.clone(), false),
            (json!({"a": {"$ne": 1}}), without_a.clone(), false),
            (json!({"$nor": [{"a": 1}]}), without_a.clone(), false),
            (
                json!({"a": {"$not": {"$size": 1}}}),
                without_a.clone(),
                false,
            ),
            (
                json!({"a": {"$not": {"$in": [1]}}}),
                without_a.clone(),
                false,
            ),
            (json!({"a": {"$not": {"$in": [1]}}}), with_a.clone(), true),
            // ... except $exists, which flips.
            (
                json!({"a": {"$not": {"$exists": true}}}),
                without_a.clone(),
                true,
            ),
            (
                json!({"a": {"$not": {"$exists": true}}}),
                with_a.clone(),
                false,
            ),
            (
                json!({"a": {"$not": {"$exists": false}}}),
                without_a.clone(),
                false,
            ),
            (
                json!({"a": {"$not": {"$exists": false}}}),
                with_a.clone(),
                true,
            ),
            (
                json!({"$nor": [{"a": {"$exists": true}}]}),
                without_a.clone(),
                true,
            ),
            // Double negation cancels.
            (
                json!({"$not": {"$not": {"a": 1}}}),
                without_a.clone(),
                false,
            ),
            (
                json!({"$not": {"$not": {"a": {"$exists": false}}}}),
                without_a.clone(),
                true,
            ),
            // De Morgan.
            (
                json!({"$not": {"$and": [{"a": 2}, {"b": 1}]}}),
                with_a.clone(),
                false,
            ),
            (
                json!({"$not": {"$and": [{"a": 3}, {"b": 1}]}}),
                with_a.clone(),
                true,
            ),
            (
                json!({"$not": {"$and": [{"a": 3}, {"b": 1}]}}),
                without_a.clone(),
                false,
            ),
            (
                json!({"$not": {"$or": [{"a": 3}, {"b": 2}]}}),
                with_a.clone(),
                true,
            ),
            (
                json!({"$not": {"$or": [{"a": 3}, {"b": 2}]}}),
                without_a.clone(),
                false,
            ),
            (
                json!({"$not": {"$nor": [{"a": 3}, {"b": 1}]}}),
                with_a.clone(),
                true,
            ),
            (json!({"$not": {"$and": []}}), with_a.clone(), true),
            (json!({"$not": {"$or": []}}), with_a.clone(), true),
            // Negated $elemMatch: the field must exist; then the plain negation.
            (
                json!({"l": {"$not": {"$elemMatch": {"$eq": 1}}}}),
                json!({"l": [2, 3]}),
                true,
            ),
            (
                json!({"l": {"$not": {"$elemMatch": {"$eq": 1}}}}),
                json!({"l": [1]}),
                false,
            ),
            (
                json!({"l": {"$not": {"$elemMatch": {"$eq": 1}}}}),
                json!({}),
                false,
            ),
            // Inside $elemMatch negation is rewritten too (a deviation from CouchDB).
            (
                json!({"l": {"$elemMatch": {"$not": {"b": 1}}}}),
                json!({"l": [{"c": 1}]}),
                false,
            ),
            (
                json!({"l": {"$elemMatch": {"$not": {"b": 1}}}}),
                json!({"l": [{"b": 2}]}),
                true,
            ),
            (
                json!({"l": {"$elemMatch": {"$nor": [{"$eq": 1}]}}}),
                json!({"l": [1, 2]}),
                true,
            ),
        ]);
    }

    /// PouchDB's `tests/find/test-suite-1/test.regex.js`, which runs against CouchDB too.
    #[test]
    fn regex_matches_as_pouchdb_find_tests_expect() {
        let docs = [
            json!({"name": "Mario", "_id": "mario", "rank": 5, "series": "Mario", "debut": 1981}),
            json!({"name": "Jigglypuff", "_id": "puff", "rank": 8, "series": "Pokemon", "debut": 1996}),
            json!({"name": "Link", "rank": 10, "_id": "link", "series": "Zelda", "debut": 1986}),
            json!({"name": "Donkey Kong", "rank": 7, "_id": "dk", "series": "Mario", "debut": 1981}),
            json!({"name": "Pikachu", "series": "Pokemon", "_id": "pikachu", "rank": 1, "debut": 1996}),
            json!({"name": "Captain Falcon", "_id": "falcon", "rank": 4, "series": "F-Zero", "debut": 1990}),
            json!({"name": "Luigi", "rank": 11, "_id": "luigi", "series": "Mario", "debut": 1983}),
            json!({"name": "Fox", "_id": "fox", "rank": 3, "series": "Star Fox", "debut": 1993}),
            json!({"name": "Ness", "rank": 9, "_id": "ness", "series": "Earthbound", "debut": 1994}),
            json!({"name": "Samus", "rank": 12, "_id": "samus", "series": "Metroid", "debut": 1986}),
            json!({"name": "Yoshi", "_id": "yoshi", "rank": 6, "series": "Mario", "debut": 1990}),
            json!({"name": "Kirby", "_id": "kirby", "series": "Kirby", "rank": 2, "debut": 1992}),
            json!({"name": "Master Hand", "_id": "master_hand", "series": "Smash Bros", "rank": 0, "debut": 1999}),
        ];
        let ids = |sel: Value| -> Vec<String> {
            let parsed = selector(sel);
            let mut ids: Vec<String> = docs
                .iter()
                .filter(|doc| parsed.matches(doc))
                .filter_map(|doc| doc.get("_id").and_then(Value::as_str).map(str::to_owned))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            ids(json!({"name": {"$gte": null}, "series": {"$regex": "^Mario"}})),
            ["dk", "luigi", "mario", "yoshi"]
        );
        assert!(ids(json!({"name": {"$gte": null}, "series": {"$regex": "^Wrong"}})).is_empty());
        // A regex never matches a field that is not a string.
        assert!(ids(json!({"name": {"$gte": null}, "debut": {"$regex": "^Mario"}})).is_empty());
        assert!(ids(json!({"debut": {"$regex": "19"}})).is_empty());
        assert_eq!(
            ids(json!({"name": {"$regex": "^Luig"}, "debut": {"$gt": 1980}})),
            ["luigi"]
        );
        assert_eq!(
            ids(json!({"$and": [{"name": {"$regex": "in"}}, {"name": {"$regex": "n"}}]})),
            ["falcon", "link"]
        );
    }

    #[test]
    fn regex_is_unanchored_on_strings_only() {
        let doc = json!({
            "s": "Hello, World",
            "multi": "one\ntwo",
            "n": 12,
            "b": true,
            "z": null,
            "arr": ["abc", "xyz"],
            "o": {"abc": 1},
            "u": "Ünïcödé 42",
        });
        check(&[
            // Anywhere in the string; anchors when asked.
            (json!({"s": {"$regex": "World"}}), doc.clone(), true),
            (json!({"s": {"$regex": "o, W"}}), doc.clone(), true),
            (json!({"s": {"$regex": "^World"}}), doc.clone(), false),
            (json!({"s": {"$regex": "^Hello"}}), doc.clone(), true),
            (json!({"s": {"$regex": "World$"}}), doc.clone(), true),
            (
                json!({"s": {"$regex": "^Hello, World$"}}),
                doc.clone(),
                true,
            ),
            (json!({"s": {"$regex": "^Hello$"}}), doc.clone(), false),
            (json!({"s": {"$regex": ""}}), doc.clone(), true),
            (json!({"s": {"$regex": "world"}}), doc.clone(), false),
            (
                json!({"s": {"$regex": "[A-Z]\\w+, [A-Z]"}}),
                doc.clone(),
                true,
            ),
            (json!({"s": {"$regex": "\\d"}}), doc.clone(), false),
            (json!({"s": {"$regex": "l{2}o"}}), doc.clone(), true),
            (json!({"s": {"$regex": "Hello|Bye"}}), doc.clone(), true),
            (
                json!({"s": {"$regex": "(?<greeting>Hel+o)"}}),
                doc.clone(),
                true,
            ),
            // `.` stops at a newline unless (?s); ^ and $ are line anchors under (?m).
            (json!({"multi": {"$regex": "one.two"}}), doc.clone(), false),
            (
                json!({"multi": {"$regex": "(?s)one.two"}}),
                doc.clone(),
                true,
            ),
            (json!({"multi": {"$regex": "^two"}}), doc.clone(), false),
            (json!({"multi": {"$regex": "(?m)^two$"}}), doc.clone(), true),
            // Not strings: never a match, even for a pattern matching everything.
            (json!({"n": {"$regex": "12"}}), doc.clone(), false),
            (json!({"n": {"$regex": ""}}), doc.clone(), false),
            (json!({"b": {"$regex": "true"}}), doc.clone(), false),
            (json!({"z": {"$regex": "null"}}), doc.clone(), false),
            (json!({"z": {"$regex": ""}}), doc.clone(), false),
            (json!({"arr": {"$regex": "abc"}}), doc.clone(), false),
            (json!({"o": {"$regex": "abc"}}), doc.clone(), false),
            (json!({"missing": {"$regex": ""}}), doc.clone(), false),
            // ... but its elements, keys and array indexes can be tested.
            (
                json!({"arr": {"$elemMatch": {"$regex": "^x"}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"arr": {"$allMatch": {"$regex": "^[a-z]{3}$"}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"arr": {"$allMatch": {"$regex": "^a"}}}),
                doc.clone(),
                false,
            ),
            (json!({"arr.1": {"$regex": "y"}}), doc.clone(), true),
            (
                json!({"o": {"$keyMapMatch": {"$regex": "^a.c$"}}}),
                doc.clone(),
                true,
            ),
            (
                json!({"_id": {"$regex": "^doc-"}}),
                json!({"_id": "doc-1"}),
                true,
            ),
            // Case-insensitive flag, Unicode classes and case folding.
            (
                json!({"s": {"$regex": "(?i)^hello, world$"}}),
                doc.clone(),
                true,
            ),
            (json!({"s": {"$regex": "(?i:WORLD)"}}), doc.clone(), true),
            (json!({"u": {"$regex": "(?i)^üNÏCÖDÉ"}}), doc.clone(), true),
            (json!({"u": {"$regex": "^\\w+ \\d+$"}}), doc.clone(), true),
            (json!({"u": {"$regex": "^.{7} "}}), doc.clone(), true),
            (
                json!({"u": {"$regex": "^\\p{Lu}\\p{Ll}+"}}),
                doc.clone(),
                true,
            ),
            (json!({"u": {"$regex": "\\p{Greek}"}}), doc.clone(), false),
            (
                json!({"g": {"$regex": "^\\p{Greek}+$"}}),
                json!({"g": "αβγ"}),
                true,
            ),
        ]);
    }

    #[test]
    fn regex_negation_follows_couchdb_normalisation() {
        // CouchDB's negate/1 has no complement for $regex: it keeps {"$not": {"$regex": ..}}
        // under the field, so the field must exist, and a non-string then matches.
        let sel = json!({"a": {"$not": {"$regex": "^x"}}});
        let outer = json!({"$not": {"a": {"$regex": "^x"}}});
        let nor = json!({"$nor": [{"a": {"$regex": "^x"}}]});
        for sel in [sel, outer, nor] {
            check(&[
                (sel.clone(), json!({"a": "xylophone"}), false),
                (sel.clone(), json!({"a": "piano"}), true),
                (sel.clone(), json!({"a": 5}), true),
                (sel.clone(), json!({"a": null}), true),
                (sel.clone(), json!({"a": ["xylophone"]}), true),
                (sel.clone(), json!({"b": "xylophone"}), false),
                (sel.clone(), json!({}), false),
                (sel.clone(), json!({"a": {"b": 1}, "c": 2}), true),
            ]);
        }
        check(&[
            // Double negation cancels.
            (
                json!({"$not": {"a": {"$not": {"$regex": "^x"}}}}),
                json!({"a": "xy"}),
                true,
            ),
            (
                json!({"$not": {"a": {"$not": {"$regex": "^x"}}}}),
                json!({"a": 5}),
                false,
            ),
            // De Morgan with a regex on each side.
            (
                json!({"$not": {"$or": [{"a": {"$regex": "^x"}}, {"b": {"$regex": "^y"}}]}}),
                json!({"a": "q", "b": "q"}),
                true,
            ),
            (
                json!({"$not": {"$or": [{"a": {"$regex": "^x"}}, {"b": {"$regex": "^y"}}]}}),
                json!({"a": "q"}),
                false,
            ),
            (
                json!({"$not": {"$and": [{"a": {"$regex": "^x"}}, {"b": {"$regex": "^y"}}]}}),
                json!({"a": "x", "b": "q"}),
                true,
            ),
            // Inside $elemMatch: an element that is not a string is "not matching the regex".
            (
                json!({"l": {"$elemMatch": {"$not": {"$regex": "^x"}}}}),
                json!({"l": ["xa", 3]}),
                true,
            ),
            (
                json!({"l": {"$elemMatch": {"$not": {"$regex": "^x"}}}}),
                json!({"l": ["xa", "xb"]}),
                false,
            ),
            (
                json!({"l": {"$not": {"$elemMatch": {"$regex": "^x"}}}}),
                json!({"l": ["ya", 3]}),
                true,
            ),
        ]);
    }

    #[test]
    fn regex_refuses_bad_patterns_with_couchdb_reason() {
        let rows: Vec<(Value, &str)> = vec![
            (json!({"a": {"$regex": "("}}), "(unclosed group)"),
            (
                json!({"a": {"$regex": "[a-"}}),
                "Bad argument for operator $regex: \"[a-\"",
            ),
            (
                json!({"a": {"$regex": "*"}}),
                "(repetition operator missing expression)",
            ),
            (
                json!({"a": {"$regex": "a{2,1}"}}),
                "Bad argument for operator $regex",
            ),
            // PCRE features the regex crate lacks (they need backtracking).
            (
                json!({"a": {"$regex": "foo(?=bar)"}}),
                "(look-around, including look-ahead and look-behind, is not supported)",
            ),
            (json!({"a": {"$regex": "(?!x)"}}), "look-around"),
            (json!({"a": {"$regex": "(?<=x)y"}}), "look-around"),
            (json!({"a": {"$regex": "(?<!x)y"}}), "look-around"),
            (
                json!({"a": {"$regex": "(a)\\1"}}),
                "(backreferences are not supported)",
            ),
            (
                json!({"a": {"$regex": "(?>a)"}}),
                "Bad argument for operator $regex",
            ),
            (
                json!({"a": {"$regex": "\\Qa.b\\E"}}),
                "Bad argument for operator $regex",
            ),
            (
                json!({"a": {"$regex": "a\\Z"}}),
                "Bad argument for operator $regex",
            ),
            // Not a string.
            (
                json!({"a": {"$regex": 1}}),
                "Bad argument for operator $regex: 1",
            ),
            (
                json!({"a": {"$regex": null}}),
                "Bad argument for operator $regex: null",
            ),
            (
                json!({"a": {"$regex": ["^a"]}}),
                "Bad argument for operator $regex: [\"^a\"]",
            ),
            (
                json!({"a": {"$regex": {"p": "a"}}}),
                "Bad argument for operator $regex",
            ),
            // Found deep inside too, and with no field it is the usual error.
            (
                json!({"$or": [{"a": 1}, {"b": {"$elemMatch": {"$regex": ")"}}}]}),
                "Bad argument for operator $regex: \")\"",
            ),
            (
                json!({"$regex": "a"}),
                "One or more conditions is missing a field name.",
            ),
        ];
        for (sel, expected) in rows {
            let got = reason(sel.clone());
            assert!(
                got.contains(expected),
                "{sel}: got {got:?}, expected {expected:?}"
            );
            assert!(!got.contains('\n'), "one line: {got:?}");
        }
    }

    #[test]
    fn regex_size_is_bounded() {
        // Pattern length.
        let at_limit = "a".repeat(MAX_REGEX_LEN);
        assert!(
            selector(json!({"a": {"$regex": at_limit.clone()}})).matches(&json!({"a": at_limit}))
        );
        let got = reason(json!({"a": {"$regex": "a".repeat(MAX_REGEX_LEN + 1)}}));
        assert!(got.contains("longer than 1024 bytes"), "{got}");
        assert!(got.len() < 300, "{got}");
        // Compiled size: a short pattern with a large compiled form.
        let got = reason(json!({"a": {"$regex": "\\w{100}"}}));
        assert!(
            got.contains("Bad argument for operator $regex: \"\\\\w{100}\" (the compiled pattern is larger than"),
            "{got}"
        );
        let got = reason(json!({"a": {"$regex": "(((a{100}){100}){100})"}}));
        assert!(got.contains("the compiled pattern is larger than"), "{got}");
        // Common patterns fit.
        for pattern in [
            "^[\\w.+-]+@[\\w-]+\\.[\\w.-]+$",
            "\\w{10}",
            "[a-z]{1000}",
            "(?i)\\b(foo|bar|baz)\\b",
            "^\\d{4}-\\d{2}-\\d{2}T",
        ] {
            selector(json!({"a": {"$regex": pattern}}));
        }
        // Number of $regex members in one selector.
        let many = |n: usize| {
            let items: Vec<Value> = (0..n)
                .map(|i| json!({"a": {"$regex": format!("{i}")}}))
                .collect();
            json!({"$or": items})
        };
        assert!(selector(many(MAX_REGEXES)).matches(&json!({"a": "x1"})));
        let got = reason(many(MAX_REGEXES + 1));
        assert!(got.contains("too many $regex operators"), "{got}");
    }

    #[test]
    fn regex_pathological_patterns_run_in_linear_time() {
        // With a backtracking engine (PCRE included) each of these takes time exponential in the
        // length of the string; here each is one linear scan, so this test finishes at once.
        let long = format!("{}!", "a".repeat(100_000));
        for pattern in [
            "(a+)+$",
            "^(a|a)*$",
            "(a|aa)+$",
            "^(a*)*b",
            "(.*a){20}$",
            "(x+x+)+y",
        ] {
            let sel = selector(json!({"s": {"$regex": pattern}}));
            assert!(!sel.matches(&json!({"s": long})), "{pattern}");
        }
        let sel = selector(json!({"s": {"$regex": "(a+)+!$"}}));
        assert!(sel.matches(&json!({"s": long})));
    }

    #[test]
    fn regex_selectors_compare_by_pattern() {
        let a = selector(json!({"s": {"$regex": "^a"}}));
        assert_eq!(a, selector(json!({"s": {"$regex": "^a"}})));
        assert_ne!(a, selector(json!({"s": {"$regex": "^b"}})));
        assert_ne!(a, selector(json!({"t": {"$regex": "^a"}})));
        assert_ne!(a, selector(json!({"s": {"$beginsWith": "a"}})));
        let copy = a.clone();
        assert_eq!(copy, a);
        assert!(copy.matches(&json!({"s": "abc"})));
        assert!(format!("{a:?}").contains("^a"));
    }

    #[test]
    fn invalid_selectors_are_refused() {
        let rows: Vec<(Value, &str)> = vec![
            (json!(null), "Selector must be a JSON object"),
            (json!([]), "Selector must be a JSON object"),
            (json!("a"), "Selector must be a JSON object"),
            (json!({"$foo": 1}), "Invalid operator: $foo"),
            (json!({"$": 1}), "Invalid operator: $"),
            (json!({"a": {"$foo": 1}}), "Invalid operator: $foo"),
            (json!({"a": {"$GT": 1}}), "Invalid operator: $GT"),
            (
                json!({"a": {"$elemMatch": {"$bar": 1}}}),
                "Invalid operator: $bar",
            ),
            (
                json!({"": 1}),
                "One or more conditions is missing a field name.",
            ),
            (
                json!({"a": {"": 1}}),
                "One or more conditions is missing a field name.",
            ),
            (
                json!({"$gt": 1}),
                "One or more conditions is missing a field name.",
            ),
            (
                json!({"$eq": 1}),
                "One or more conditions is missing a field name.",
            ),
            (
                json!({"$exists": true}),
                "One or more conditions is missing a field name.",
            ),
            (
                json!({"$elemMatch": {"a": 1}}),
                "One or more conditions is missing a field name.",
            ),
            (
                json!({"$not": {"$gt": 1}}),
                "One or more conditions is missing a field name.",
            ),
            (
                json!({"$or": [1]}),
                "One or more conditions is missing a field name.",
            ),
            (
                json!({"$and": [{"$lt": 1}]}),
                "One or more conditions is missing a field name.",
            ),
            (json!({"a..b": 1}), "Invalid field name: a..b"),
            (json!({".a": 1}), "Invalid field name: .a"),
            (json!({"a.": 1}), "Invalid field name: a."),
            (json!({"a": {"b.": 1}}), "Invalid field name: b."),
            (
                json!({"$and": {"a": 1}}),
                "Bad argument for operator $and: {\"a\":1}",
            ),
            (json!({"$or": 1}), "Bad argument for operator $or: 1"),
            (
                json!({"$nor": "x"}),
                "Bad argument for operator $nor: \"x\"",
            ),
            (
                json!({"$not": [{"a": 1}]}),
                "Bad argument for operator $not: [{\"a\":1}]",
            ),
            (
                json!({"a": {"$not": 1}}),
                "Bad argument for operator $not: 1",
            ),
            (json!({"a": {"$in": 1}}), "Bad argument for operator $in: 1"),
            (
                json!({"a": {"$nin": {"x": 1}}}),
                "Bad argument for operator $nin",
            ),
            (
                json!({"a": {"$all": "x"}}),
                "Bad argument for operator $all",
            ),
            (
                json!({"a": {"$exists": 1}}),
                "Bad argument for operator $exists: 1",
            ),
            (
                json!({"a": {"$exists": "true"}}),
                "Bad argument for operator $exists",
            ),
            (
                json!({"a": {"$type": 1}}),
                "Bad argument for operator $type: 1",
            ),
            (
                json!({"a": {"$type": "integer"}}),
                "Bad argument for operator $type: \"integer\"",
            ),
            (
                json!({"a": {"$size": -1}}),
                "Bad argument for operator $size: -1",
            ),
            (
                json!({"a": {"$size": 1.5}}),
                "Bad argument for operator $size",
            ),
            (
                json!({"a": {"$size": 2.0}}),
                "Bad argument for operator $size",
            ),
            (
                json!({"a": {"$size": "2"}}),
                "Bad argument for operator $size",
            ),
            (
                json!({"a": {"$mod": [0, 1]}}),
                "the divisor must not be zero",
            ),
            (
                json!({"a": {"$mod": [2]}}),
                "Bad argument for operator $mod: [2]",
            ),
            (
                json!({"a": {"$mod": [2, 1, 0]}}),
                "Bad argument for operator $mod",
            ),
            (
                json!({"a": {"$mod": [2.0, 1]}}),
                "Bad argument for operator $mod",
            ),
            (
                json!({"a": {"$mod": [2, 0.5]}}),
                "Bad argument for operator $mod",
            ),
            (
                json!({"a": {"$mod": 2}}),
                "Bad argument for operator $mod: 2",
            ),
            (
                json!({"a": {"$beginsWith": 1}}),
                "Bad argument for operator $beginsWith: 1",
            ),
            (
                json!({"a": {"$elemMatch": 1}}),
                "Bad argument for operator $elemMatch: 1",
            ),
            (
                json!({"a": {"$allMatch": [1]}}),
                "Bad argument for operator $allMatch: [1]",
            ),
            (
                json!({"a": {"$keyMapMatch": "k"}}),
                "Bad argument for operator $keyMapMatch",
            ),
            (
                json!({"a": {"$regex": "("}}),
                "Bad argument for operator $regex: \"(\" (unclosed group)",
            ),
            (
                json!({"a": {"$regex": 1}}),
                "Bad argument for operator $regex: 1",
            ),
            (json!({"$text": "x"}), "Unsupported operator: $text"),
            (json!({"$where": "x"}), "Unsupported operator: $where"),
            (
                json!({"a": {"$near": [1, 2]}}),
                "Unsupported operator: $near",
            ),
            (
                json!({"a": {"$geoWithin": {}}}),
                "Unsupported operator: $geoWithin",
            ),
            // Errors deep inside are found too.
            (
                json!({"$or": [{"a": 1}, {"b": {"$in": 3}}]}),
                "Bad argument for operator $in: 3",
            ),
            (
                json!({"a": {"$elemMatch": {"b": {"$size": "x"}}}}),
                "Bad argument for operator $size",
            ),
        ];
        for (sel, expected) in rows {
            let got = reason(sel.clone());
            assert!(
                got.contains(expected),
                "{sel}: got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn long_operands_are_cut_in_reasons() {
        let long = "x".repeat(10_000);
        let got = reason(json!({"a": {"$in": long}}));
        assert!(got.len() < 300, "{got}");
        assert!(got.ends_with("..."), "{got}");
        let got = reason(json!({ format!("${long}"): 1 }));
        assert!(got.len() < 300, "{got}");
    }

    fn nested_objects(levels: usize) -> Value {
        // {"a": {"a": ... {"a": 1}}} with `levels` objects.
        // Built by hand: `json!` would serialise the inner value recursively.
        let mut value = json!(1);
        for _ in 0..levels {
            let mut map = Map::new();
            map.insert("a".to_owned(), value);
            value = Value::Object(map);
        }
        value
    }

    fn nested_nots(levels: usize) -> Value {
        let mut value = json!({"a": 1});
        for _ in 1..levels {
            let mut map = Map::new();
            map.insert("$not".to_owned(), value);
            value = Value::Object(map);
        }
        value
    }

    #[test]
    fn nesting_is_bounded() {
        assert!(Selector::parse(&nested_objects(MAX_DEPTH)).is_ok());
        let got = reason(nested_objects(MAX_DEPTH + 1));
        assert!(got.contains("nested too deeply"), "{got}");
        assert!(reason(nested_objects(2000)).contains("nested too deeply"));
        // Operands count too.
        let mut deep_operand = json!(1);
        for _ in 0..MAX_DEPTH {
            deep_operand = Value::Array(vec![deep_operand]);
        }
        assert!(reason(json!({"a": {"$eq": deep_operand}})).contains("nested too deeply"));
        // At the limit, parsing and matching work.
        // MAX_DEPTH levels: MAX_DEPTH - 1 (odd) `$not`s around {"a": 1}.
        let nots = selector(nested_nots(MAX_DEPTH));
        assert!(nots.matches(&json!({"a": 2})));
        assert!(!nots.matches(&json!({"a": 1})));
        assert!(!nots.matches(&json!({"b": 1})));
        assert!(selector(nested_nots(MAX_DEPTH - 1)).matches(&json!({"a": 1})));
        assert!(reason(nested_nots(MAX_DEPTH + 1)).contains("nested too deeply"));
        // A deep path selector against a deep document.
        let deep = selector(nested_objects(MAX_DEPTH));
        assert!(deep.matches(&nested_objects(MAX_DEPTH)));
        assert!(!deep.matches(&nested_objects(MAX_DEPTH - 1)));
    }

    #[test]
    fn nested_object_equals_dotted_path() {
        assert_eq!(
            selector(json!({"a": {"b": {"c": 1}}})),
            selector(json!({"a.b.c": 1}))
        );
        assert_eq!(
            selector(json!({"a": {"b": {"$gt": 1}}})),
            selector(json!({"a.b": {"$gt": 1}}))
        );
    }

    // -----------------------------------------------------------------------------------------
    // Property tests
    // -----------------------------------------------------------------------------------------

    const KEYS: &[&str] = &[
        "$and",
        "$or",
        "$nor",
        "$not",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$eq",
        "$ne",
        "$in",
        "$nin",
        "$all",
        "$elemMatch",
        "$allMatch",
        "$keyMapMatch",
        "$exists",
        "$type",
        "$size",
        "$mod",
        "$regex",
        "$beginsWith",
        "$text",
        "$foo",
        "$",
        "a",
        "b",
        "a.b",
        "0",
        "1",
        "_id",
        "",
        "a..b",
        "\\$x",
        "a\\.b",
        "\\",
    ];

    fn arb_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-4i64..4).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-10.0f64..10.0).prop_map(Value::from),
            prop::sample::select(vec![
                "", "a", "b", "ab", "null", "boolean", "number", "string", "array", "object",
            ])
            .prop_map(Value::from),
            "[a-c$.\\\\]{0,3}".prop_map(Value::from),
        ]
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(KEYS).prop_map(str::to_owned),
            1 => "[a-c0-1$.\\\\]{0,3}",
        ]
    }

    /// Arbitrary JSON, with object keys that are often operators.
    fn arb_json() -> impl Strategy<Value = Value> {
        arb_leaf().prop_recursive(6, 96, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((arb_key(), inner), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    fn arb_doc() -> impl Strategy<Value = Value> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["_id", "a", "b", "c", "n", "0"]).prop_map(str::to_owned),
                arb_json(),
            ),
            0..5,
        )
        .prop_map(|members| Value::Object(members.into_iter().collect()))
    }

    fn arb_field() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "a.b", "a.0", "c.a", "_id", "n", "0"])
            .prop_map(str::to_owned)
    }

    /// A condition operator object (always an object).
    fn arb_operator() -> impl Strategy<Value = Value> {
        let ops = vec!["$lt", "$lte", "$eq", "$ne", "$gte", "$gt"];
        prop_oneof![
            (prop::sample::select(ops), arb_json()).prop_map(|(op, v)| json!({ op: v })),
            prop::collection::vec(arb_leaf(), 0..3).prop_map(|v| json!({"$in": v})),
            prop::collection::vec(arb_leaf(), 0..3).prop_map(|v| json!({"$nin": v})),
            prop::collection::vec(arb_leaf(), 0..3).prop_map(|v| json!({"$all": v})),
            any::<bool>().prop_map(|b| json!({"$exists": b})),
            prop::sample::select(vec![
                "null", "boolean", "number", "string", "array", "object"
            ])
            .prop_map(|t| json!({"$type": t})),
            (0u64..4).prop_map(|n| json!({"$size": n})),
            ((1i64..4), any::<bool>(), (-3i64..3))
                .prop_map(|(d, neg, r)| json!({"$mod": [if neg { -d } else { d }, r]})),
            "[a-c]{0,2}".prop_map(|p| json!({"$beginsWith": p})),
            prop::sample::select(REGEXES).prop_map(|p| json!({"$regex": p})),
        ]
    }

    /// Valid `$regex` patterns for the generators.
    const REGEXES: &[&str] = &[
        "", "a", "^a", "b$", "^$", "(?i)A", "[a-c]+", "^[ab]*$", "\\d", "a|b", ".", "^.{2}$",
    ];

    /// Well-formed selectors, to exercise matching.
    fn arb_selector() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            (arb_field(), arb_leaf()).prop_map(|(f, v)| json!({ f: v })),
            (arb_field(), arb_operator()).prop_map(|(f, c)| json!({ f: c })),
        ];
        leaf.prop_recursive(4, 48, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"$and": v})),
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"$or": v})),
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"$nor": v})),
                inner.clone().prop_map(|s| json!({"$not": s})),
                (arb_field(), inner.clone()).prop_map(|(f, s)| json!({ f: s })),
                (arb_field(), inner.clone()).prop_map(|(f, s)| json!({ f: {"$elemMatch": s} })),
                (arb_field(), arb_operator()).prop_map(|(f, c)| json!({ f: {"$elemMatch": c} })),
                (arb_field(), inner.clone()).prop_map(|(f, s)| json!({ f: {"$allMatch": s} })),
                (arb_field(), arb_operator()).prop_map(|(f, c)| json!({ f: {"$keyMapMatch": c} })),
                (arb_field(), arb_operator()).prop_map(|(f, c)| json!({ f: {"$not": c} })),
                (inner.clone(), inner).prop_map(|(x, y)| {
                    let mut merged = x.as_object().cloned().unwrap_or_default();
                    merged.extend(y.as_object().cloned().unwrap_or_default());
                    Value::Object(merged)
                }),
            ]
        })
    }

    fn matches(sel: &Value, doc: &Value) -> bool {
        selector(sel.clone()).matches(doc)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parse_never_panics(value in arb_json()) {
            let wrapped = json!({"a": value.clone()});
            for candidate in [value, wrapped] {
                if let Err(e) = Selector::parse(&candidate) {
                    prop_assert_eq!(e.status(), 400);
                }
            }
        }

        #[test]
        fn matches_never_panics(
            sel in arb_json(),
            members in prop::collection::vec((arb_key(), arb_json()), 1..4),
            doc in arb_json(),
            doc2 in arb_doc(),
        ) {
            let object = Value::Object(members.into_iter().collect());
            for candidate in [sel, object] {
                if let Ok(parsed) = Selector::parse(&candidate) {
                    let _ = parsed.matches(&doc);
                    let _ = parsed.matches(&doc2);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn well_formed_selectors_parse_and_obey_logic(s in arb_selector(), t in arb_selector(), doc in arb_doc()) {
            let ms = matches(&s, &doc);
            let mt = matches(&t, &doc);
            prop_assert_eq!(matches(&json!({"$not": {"$not": s.clone()}}), &doc), ms);
            prop_assert_eq!(matches(&json!({"$and": [s.clone(), t.clone()]}), &doc), ms && mt);
            prop_assert_eq!(matches(&json!({"$or": [s.clone(), t.clone()]}), &doc), ms || mt);
            prop_assert_eq!(
                matches(&json!({"$nor": [s.clone(), t.clone()]}), &doc),
                matches(&json!({"$not": {"$or": [s.clone(), t.clone()]}}), &doc)
            );
            prop_assert_eq!(
                matches(&json!({"$not": {"$or": [s.clone(), t.clone()]}}), &doc),
                matches(&json!({"$and": [{"$not": s.clone()}, {"$not": t.clone()}]}), &doc)
            );
            prop_assert_eq!(
                matches(&json!({"$not": {"$and": [s.clone(), t.clone()]}}), &doc),
                matches(&json!({"$or": [{"$not": s}, {"$not": t}]}), &doc)
            );
        }

        #[test]
        fn ne_is_exists_and_not_eq(field in arb_field(), v in arb_json(), doc in arb_doc()) {
            let ne = matches(&json!({ field.clone(): {"$ne": v.clone()} }), &doc);
            let exists = matches(&json!({ field.clone(): {"$exists": true} }), &doc);
            let eq = matches(&json!({ field.clone(): {"$eq": v.clone()} }), &doc);
            prop_assert_eq!(ne, exists && !eq);
            prop_assert_eq!(matches(&json!({ field.clone(): {"$not": {"$eq": v}} }), &doc), ne);
            // $exists false and true never both hold; at least one does unless the path is bad.
            let missing = matches(&json!({ field: {"$exists": false} }), &doc);
            prop_assert!(!(exists && missing));
        }

        #[test]
        fn not_regex_is_exists_and_not_regex(field in arb_field(), p in prop::sample::select(REGEXES), doc in arb_doc()) {
            let exists = matches(&json!({ field.clone(): {"$exists": true} }), &doc);
            let regex = matches(&json!({ field.clone(): {"$regex": p} }), &doc);
            let not_regex = matches(&json!({ field.clone(): {"$not": {"$regex": p}} }), &doc);
            prop_assert_eq!(not_regex, exists && !regex);
            prop_assert_eq!(matches(&json!({"$not": { field.clone(): {"$regex": p} }}), &doc), not_regex);
            prop_assert_eq!(matches(&json!({"$nor": [{ field: {"$regex": p} }]}), &doc), not_regex);
        }

        #[test]
        fn anchored_literal_regex_is_begins_with(field in arb_field(), prefix in "[a-c.$^*()\\[\\]\\\\]{0,3}", doc in arb_doc()) {
            let regex = format!("^{}", regex::escape(&prefix));
            prop_assert_eq!(
                matches(&json!({ field.clone(): {"$regex": regex} }), &doc),
                matches(&json!({ field: {"$beginsWith": prefix} }), &doc)
            );
        }

        #[test]
        fn in_and_nin_are_complementary_on_present_fields(field in arb_field(), args in prop::collection::vec(arb_leaf(), 0..4), doc in arb_doc()) {
            let exists = matches(&json!({ field.clone(): {"$exists": true} }), &doc);
            let is_in = matches(&json!({ field.clone(): {"$in": args.clone()} }), &doc);
            let nin = matches(&json!({ field: {"$nin": args} }), &doc);
            prop_assert_eq!(nin, exists && !is_in);
        }
    }
}
