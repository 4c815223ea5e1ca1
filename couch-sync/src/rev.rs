//! Revision ids: `N-<hex>`.
//!
//! `N` is the generation (1 for a new document, +1 per edit) and the hex part names the edit.
//! Revisions this store creates have 32 lowercase hex digits: the MD5 of the edit (see
//! [`RevId::compute`]), so the same edit on two replicas gets the same id. Revisions from peers
//! (`new_edits=false`) are accepted with any non-empty hex part up to [`MAX_REV_HASH_LEN`]
//! characters, kept as written, and compared as strings, as CouchDB does.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::error::Error;

/// The longest hex part of a revision id this store accepts.
pub const MAX_REV_HASH_LEN: usize = 128;

/// A revision id `pos-hash`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RevId {
    pos: u64,
    hash: Box<str>,
}

impl RevId {
    /// A revision id from its parts; the hash must be non-empty hex of at most
    /// [`MAX_REV_HASH_LEN`] characters and the generation at least 1.
    pub fn new(pos: u64, hash: &str) -> Result<RevId, Error> {
        if pos == 0 {
            return Err(Error::bad_rev(format!("{pos}-{hash}")));
        }
        if hash.is_empty()
            || hash.len() > MAX_REV_HASH_LEN
            || !hash.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::bad_rev(format!("{pos}-{hash}")));
        }
        Ok(RevId {
            pos,
            hash: hash.into(),
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

impl Ord for RevId {
    /// CouchDB's order: by generation, then by hash as a string.
    fn cmp(&self, other: &Self) -> Ordering {
        self.pos
            .cmp(&other.pos)
            .then_with(|| self.hash.as_bytes().cmp(other.hash.as_bytes()))
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
    fn from_str(s: &str) -> Result<RevId, Error> {
        let (pos, hash) = s.split_once('-').ok_or_else(|| Error::bad_rev(s))?;
        if pos.is_empty() || pos.len() > 19 || !pos.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::bad_rev(s));
        }
        let pos: u64 = pos.parse().map_err(|_| Error::bad_rev(s))?;
        if pos == 0 {
            // `0-N`: a `_local` document's revision.
            return match hash.parse::<u64>() {
                Ok(n) if hash.bytes().all(|b| b.is_ascii_digit()) => Ok(RevId::local(n)),
                _ => Err(Error::bad_rev(s)),
            };
        }
        RevId::new(pos, hash).map_err(|_| Error::bad_rev(s))
    }
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
        for bad in [
            "",
            "1",
            "-a",
            "0-a",
            "a-b",
            "1-",
            "1-xyz",
            "1-a-b",
            "+1-a",
            "99999999999999999999-a",
        ] {
            assert!(bad.parse::<RevId>().is_err(), "{bad}");
        }
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
