//! Revision ids: `N-<hash>`.
//!
//! `N` is the generation (1 for a new document, +1 per edit) and the hash part names the edit.
//! Revisions this store creates have 32 lowercase hex digits: the MD5 of the edit (see
//! [`RevId::compute`]), so the same edit on two replicas gets the same id. As in CouchDB, the
//! hash part of a revision from elsewhere is an opaque string (`1-x`, `2-some`, even `1-`), with
//! one rule: a hash of exactly 32 characters must be hex (it is CouchDB's binary MD5 form, and is
//! kept lowercase). Hashes compare as CouchDB compares them: a 32-hex hash as its 16 bytes, any
//! other as its UTF-8 bytes.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::error::Error;

/// The longest hash part of a revision id this store accepts, in bytes.
pub const MAX_REV_HASH_LEN: usize = 255;

/// A revision id `pos-hash`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RevId {
    pos: u64,
    hash: Box<str>,
}

impl RevId {
    /// A revision id from its parts, with CouchDB's rule for the hash: at most
    /// [`MAX_REV_HASH_LEN`] bytes, and hex when it is exactly 32 characters long (then kept
    /// lowercase). Fails with CouchDB's `Invalid rev format`.
    pub fn new(pos: u64, hash: &str) -> Result<RevId, Error> {
        Ok(RevId {
            pos,
            hash: check_hash(hash).ok_or_else(|| Error::bad_rev(hash))?,
        })
    }

    /// The revision `0-N` of a `_local` document (a counter, not a hash).
    pub fn local(counter: u64) -> RevId {
        RevId {
            pos: 0,
            hash: counter.to_string().into(),
        }
    }

    /// The generation.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The hex part.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The id of an edit: `(parent.pos + 1)-md5(...)` over the deleted flag, the parent, the
    /// canonical JSON of the body, and the attachments' names, types and digests (sorted by name).
    ///
    /// The MD5 input, byte by byte: `"couch-sync rev v1\0"`, one byte `1`/`0` for deleted, the
    /// parent's generation as u64 big-endian (0 for none), the parent's hash length as u32
    /// big-endian and its bytes, the body's canonical JSON length (u64 BE) and bytes
    /// ([`crate::json::canonical`]), then per attachment: name, content type and digest, each
    /// as u32 BE length + bytes.
    pub fn compute(
        parent: Option<&RevId>,
        deleted: bool,
        canonical_body: &[u8],
        attachments: &[(&str, &str, &str)],
    ) -> RevId {
        let mut md5 = Md5::new();
        md5.update(b"couch-sync rev v1\0");
        md5.update([u8::from(deleted)]);
        let (ppos, phash) = parent.map_or((0, ""), |p| (p.pos, &*p.hash));
        md5.update(ppos.to_be_bytes());
        md5.update((phash.len() as u32).to_be_bytes());
        md5.update(phash.as_bytes());
        md5.update((canonical_body.len() as u64).to_be_bytes());
        md5.update(canonical_body);
        let mut atts: Vec<_> = attachments.to_vec();
        atts.sort_unstable();
        for (name, content_type, digest) in atts {
            for part in [name, content_type, digest] {
                md5.update((part.len() as u32).to_be_bytes());
                md5.update(part.as_bytes());
            }
        }
        let digest = md5.finalize();
        RevId {
            pos: ppos + 1,
            hash: data_encoding::HEXLOWER.encode(&digest).into(),
        }
    }
}

impl RevId {
    /// The id Apache CouchDB gives an edit (`couch_db:new_revid`): `(parent.pos + 1)-md5(…)` of
    /// the Erlang external term format (`term_to_binary(…, [{minor_version, 1}])`) of
    /// `[Deleted, ParentPos, ParentHash, Body, Atts]`, where the body is CouchDB's decoded JSON
    /// (`{[{Key, Value}, …]}` in member order), the parent hash is its 16 bytes when it is 32 hex
    /// digits (else its text), and `Atts` lists `{Name, Type, Md5}` in reverse attachment order.
    /// The same edit made on CouchDB and here gets the same revision id.
    pub fn couchdb(
        parent: Option<&RevId>,
        deleted: bool,
        body: &serde_json::Map<String, serde_json::Value>,
        attachments: &[(&str, &str, [u8; 16])],
    ) -> RevId {
        let mut out = Vec::with_capacity(256);
        out.push(131);
        // A proper list of five elements.
        out.push(108);
        out.extend_from_slice(&5u32.to_be_bytes());
        etf::atom(&mut out, if deleted { "true" } else { "false" });
        let (ppos, phash) = parent.map_or((0, None), |p| (p.pos, Some(&*p.hash)));
        etf::unsigned(&mut out, ppos);
        match phash {
            None => etf::unsigned(&mut out, 0),
            Some(hash) => match raw_hash(hash) {
                Some(raw) => etf::binary(&mut out, &raw),
                None => etf::binary(&mut out, hash.as_bytes()),
            },
        }
        etf::object(&mut out, body);
        if attachments.is_empty() {
            out.push(106);
        } else {
            out.push(108);
            out.extend_from_slice(&(attachments.len() as u32).to_be_bytes());
            for (name, content_type, md5) in attachments.iter().rev() {
                out.extend_from_slice(&[104, 3]);
                etf::binary(&mut out, name.as_bytes());
                etf::binary(&mut out, content_type.as_bytes());
                etf::binary(&mut out, md5);
            }
            out.push(106);
        }
        out.push(106);
        let digest = Md5::digest(&out);
        RevId {
            pos: ppos + 1,
            hash: data_encoding::HEXLOWER.encode(&digest).into(),
        }
    }
}

/// Just enough of Erlang's external term format to hash a document as CouchDB does.
mod etf {
    use serde_json::{Map, Value};

    pub(super) fn atom(out: &mut Vec<u8>, name: &str) {
        out.push(100);
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
    }

    pub(super) fn binary(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(109);
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    pub(super) fn unsigned(out: &mut Vec<u8>, n: u64) {
        integer(out, false, &n.to_le_bytes());
    }

    /// An integer from its sign and magnitude (little-endian bytes): `SMALL_INTEGER_EXT`,
    /// `INTEGER_EXT` or a bignum, as Erlang picks.
    fn integer(out: &mut Vec<u8>, negative: bool, magnitude_le: &[u8]) {
        let len = magnitude_le
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |i| i + 1);
        let magnitude = magnitude_le.get(..len).unwrap_or(&[]);
        let small = len <= 4 && {
            let mut v = 0u64;
            for (i, b) in magnitude.iter().enumerate() {
                v |= u64::from(*b) << (8 * i);
            }
            if !negative && v < 256 {
                out.extend_from_slice(&[97, v as u8]);
                return;
            }
            let fits = if negative { v <= 1 << 31 } else { v < 1 << 31 };
            if fits {
                let signed = if negative { -(v as i64) } else { v as i64 };
                out.push(98);
                out.extend_from_slice(&(signed as i32).to_be_bytes());
            }
            fits
        };
        if small {
            return;
        }
        if len <= 255 {
            out.extend_from_slice(&[110, len as u8]);
        } else {
            out.push(111);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        out.push(u8::from(negative));
        out.extend_from_slice(magnitude);
    }

    /// A JSON number as jiffy decodes it: an integer (of any size) unless it has a fraction or
    /// an exponent, then a double.
    fn number(out: &mut Vec<u8>, n: &serde_json::Number) {
        let text = n.to_string();
        if text.contains(['.', 'e', 'E']) {
            let f: f64 = text.parse().unwrap_or(0.0);
            out.push(70);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
            return;
        }
        let (negative, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text.as_str()),
        };
        // Decimal digits to little-endian base-256 magnitude.
        let mut magnitude: Vec<u8> = Vec::new();
        for d in digits.bytes().filter(u8::is_ascii_digit) {
            let mut carry = u32::from(d - b'0');
            for byte in magnitude.iter_mut() {
                let v = u32::from(*byte) * 10 + carry;
                *byte = (v & 0xff) as u8;
                carry = v >> 8;
            }
            while carry > 0 {
                magnitude.push((carry & 0xff) as u8);
                carry >>= 8;
            }
        }
        let zero = magnitude.iter().all(|b| *b == 0);
        integer(out, negative && !zero, &magnitude);
    }

    fn value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::Null => atom(out, "null"),
            Value::Bool(b) => atom(out, if *b { "true" } else { "false" }),
            Value::Number(n) => number(out, n),
            Value::String(s) => binary(out, s.as_bytes()),
            Value::Array(items) => array(out, items),
            Value::Object(map) => object(out, map),
        }
    }

    fn small_int(v: &Value) -> Option<u8> {
        match v {
            Value::Number(n) if !n.to_string().contains(['.', 'e', 'E', '-']) => {
                n.as_u64().and_then(|x| u8::try_from(x).ok())
            }
            _ => None,
        }
    }

    /// A list; Erlang writes a list of small integers as `STRING_EXT`.
    fn array(out: &mut Vec<u8>, items: &[Value]) {
        if items.is_empty() {
            out.push(106);
            return;
        }
        if items.len() <= usize::from(u16::MAX) {
            let bytes: Option<Vec<u8>> = items.iter().map(small_int).collect();
            if let Some(bytes) = bytes {
                out.push(107);
                out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                out.extend_from_slice(&bytes);
                return;
            }
        }
        out.push(108);
        out.extend_from_slice(&(items.len() as u32).to_be_bytes());
        for item in items {
            value(out, item);
        }
        out.push(106);
    }

    /// `{[{Key, Value}, …]}`.
    pub(super) fn object(out: &mut Vec<u8>, map: &Map<String, Value>) {
        out.extend_from_slice(&[104, 1]);
        if map.is_empty() {
            out.push(106);
            return;
        }
        out.push(108);
        out.extend_from_slice(&(map.len() as u32).to_be_bytes());
        for (k, v) in map {
            out.extend_from_slice(&[104, 2]);
            binary(out, k.as_bytes());
            value(out, v);
        }
        out.push(106);
    }
}

impl Ord for RevId {
    /// CouchDB's order: by generation, then by hash as a string.
    fn cmp(&self, other: &Self) -> Ordering {
        self.pos
            .cmp(&other.pos)
            .then_with(|| compare_hashes(&self.hash, &other.hash))
    }
}

impl PartialOrd for RevId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pos, self.hash)
    }
}

impl fmt::Debug for RevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for RevId {
    type Err = Error;
    /// CouchDB's `parse_rev`: the generation before the first `-` (decimal digits), then the hash
    /// (see [`RevId::new`]).
    fn from_str(s: &str) -> Result<RevId, Error> {
        let (pos, hash) = s.split_once('-').ok_or_else(|| Error::bad_rev(s))?;
        if pos.is_empty() || pos.len() > 19 || !pos.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::bad_rev(s));
        }
        let pos: u64 = pos.parse().map_err(|_| Error::bad_rev(s))?;
        RevId::new(pos, hash)
    }
}

/// The hash as stored: checked, and lowercase when it is CouchDB's 32-hex form.
fn check_hash(hash: &str) -> Option<Box<str>> {
    if hash.len() > MAX_REV_HASH_LEN {
        return None;
    }
    if hash.chars().count() == 32 {
        if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return Some(hash.to_ascii_lowercase().into());
    }
    Some(hash.into())
}

/// The 16 bytes of a 32-hex hash (CouchDB's binary form of it).
fn raw_hash(hash: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if hash.len() != 32 {
        return None;
    }
    data_encoding::HEXLOWER_PERMISSIVE
        .decode_mut(hash.as_bytes(), &mut out)
        .ok()?;
    Some(out)
}

/// CouchDB compares the 32-hex form as 16 raw bytes and every other hash as its bytes.
fn compare_hashes(a: &str, b: &str) -> Ordering {
    let raw = raw_hash;
    let order = match (raw(a), raw(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => x.as_slice().cmp(b.as_bytes()),
        (None, Some(y)) => a.as_bytes().cmp(y.as_slice()),
        (None, None) => a.as_bytes().cmp(b.as_bytes()),
    };
    // Two different hashes never compare equal (a 16-byte text could equal a hash's bytes).
    order.then_with(|| a.cmp(b))
}

impl serde::Serialize for RevId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        let a: RevId = "1-abc".parse().unwrap();
        let b: RevId = "2-0".parse().unwrap();
        let c: RevId = "2-ff".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(c.to_string(), "2-ff");
        assert_eq!("0-12".parse::<RevId>().unwrap(), RevId::local(12));
        // CouchDB's parse_rev: the hash is opaque unless it is 32 characters long.
        for lenient in ["1-x", "1-", "1-a-b", "3-totally_fake_rev", "2-some"] {
            let rev: RevId = lenient.parse().unwrap();
            assert_eq!(rev.to_string(), lenient);
        }
        let upper: RevId = "1-0123456789ABCDEF0123456789ABCDEF".parse().unwrap();
        assert_eq!(upper.to_string(), "1-0123456789abcdef0123456789abcdef");
        for bad in [
            "",
            "1",
            "-a",
            "a-b",
            "+1-a",
            "99999999999999999999-a",
            "1-0123456789abcdef0123456789abcdeg",
        ] {
            let err = bad.parse::<RevId>().unwrap_err();
            assert_eq!(
                (err.status(), err.reason().as_ref()),
                (400, "Invalid rev format"),
                "{bad}"
            );
        }
    }

    #[test]
    fn order_is_couchdbs() {
        let r = |s: &str| s.parse::<RevId>().unwrap();
        // 32-hex hashes compare as their 16 bytes, not as text ('7' < 'a', but 0x7f > 0x61).
        assert!(r("1-7fffffffffffffffffffffffffffffff") > r("1-a"));
        assert!(r("1-0123456789abcdef0123456789abcdef") < r("1-1"));
        assert!(r("1-z") > r("1-a"));
        assert!(r("2-0") > r("1-zzz"));
    }

    /// Revision ids a real Apache CouchDB gave these edits.
    #[test]
    fn couchdb_revision_ids() {
        let body = |v: serde_json::Value| v.as_object().unwrap().clone();
        // `PUT /db/0 {}` (measured on CouchDB 3.4.3).
        assert_eq!(
            RevId::couchdb(None, false, &body(serde_json::json!({})), &[]).to_string(),
            "1-967a00dff5e02add41819138abb3284d"
        );
        // The recipe of CouchDB's API documentation (`PUT /recipes/SpaghettiWithMeatballs`).
        let recipe = body(serde_json::json!({
            "description": "An Italian-American dish that usually consists of spaghetti, tomato sauce and meatballs.",
            "ingredients": ["spaghetti", "tomato sauce", "meatballs"],
            "name": "Spaghetti with meatballs"
        }));
        assert_eq!(
            RevId::couchdb(None, false, &recipe, &[]).to_string(),
            "1-917fa2381192822767f010b95b45325b"
        );
    }

    /// The term encoding, byte by byte, for the shapes a body can take.
    #[test]
    fn erlang_terms() {
        let enc = |v: serde_json::Value| {
            let mut out = Vec::new();
            etf::object(&mut out, v.as_object().unwrap());
            data_encoding::HEXLOWER.encode(&out)
        };
        // {[{<<"a">>, 1}]}
        assert_eq!(
            enc(serde_json::json!({"a": 1})),
            "6801".to_owned() + "6c00000001" + "6802" + "6d0000000161" + "6101" + "6a"
        );
        // 256 and -1 are INTEGER_EXT; 2^31 and 2^64 are bignums; 1.5 a NEW_FLOAT_EXT.
        let n = |text: &str| {
            let v: serde_json::Value = serde_json::from_str(&format!("{{\"n\":{text}}}")).unwrap();
            let hex = enc(v);
            hex[hex.find("6d000000016e").unwrap() + 12..hex.len() - 2].to_owned()
        };
        assert_eq!(n("256"), "6200000100");
        assert_eq!(n("-1"), "62ffffffff");
        assert_eq!(n("-2147483648"), "6280000000");
        assert_eq!(n("2147483648"), "6e040000000080");
        assert_eq!(n("18446744073709551616"), "6e0900000000000000000001");
        assert_eq!(n("1.5"), "463ff8000000000000");
        assert_eq!(n("1e2"), "464059000000000000");
        assert_eq!(n("-0"), "6100");
        // A list of small integers is a STRING_EXT; other lists are LIST_EXT.
        let v = |text: &str| {
            let v: serde_json::Value = serde_json::from_str(&format!("{{\"n\":{text}}}")).unwrap();
            let hex = enc(v);
            hex[hex.find("6d000000016e").unwrap() + 12..hex.len() - 2].to_owned()
        };
        assert_eq!(v("[1,2,255]"), "6b000301 02ff".replace(' ', ""));
        assert_eq!(v("[1,256]"), "6c0000000261016200000100 6a".replace(' ', ""));
        assert_eq!(v("[]"), "6a");
        assert_eq!(v("[true,null]"), "6c00000002640004747275656400046e756c6c6a");
    }

    #[test]
    fn compute_is_deterministic_and_sensitive() {
        let parent: RevId = "1-aa".parse().unwrap();
        let r1 = RevId::compute(
            Some(&parent),
            false,
            b"{\"a\":1}",
            &[("x", "text/plain", "md5-1")],
        );
        let r2 = RevId::compute(
            Some(&parent),
            false,
            b"{\"a\":1}",
            &[("x", "text/plain", "md5-1")],
        );
        assert_eq!(r1, r2);
        assert_eq!(r1.pos(), 2);
        assert_eq!(r1.hash().len(), 32);
        let others = [
            RevId::compute(None, false, b"{\"a\":1}", &[("x", "text/plain", "md5-1")]),
            RevId::compute(
                Some(&parent),
                true,
                b"{\"a\":1}",
                &[("x", "text/plain", "md5-1")],
            ),
            RevId::compute(
                Some(&parent),
                false,
                b"{\"a\":2}",
                &[("x", "text/plain", "md5-1")],
            ),
            RevId::compute(
                Some(&parent),
                false,
                b"{\"a\":1}",
                &[("x", "text/plain", "md5-2")],
            ),
            RevId::compute(Some(&parent), false, b"{\"a\":1}", &[]),
        ];
        for other in others {
            assert_ne!(other.hash(), r1.hash());
        }
    }
}
