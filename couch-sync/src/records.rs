//! What each table stores, and the byte layout of each record.
//!
//! One redb file per database, with these tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `docs` | document id (`&str`) | [`DocRecord`]: flags, current seq, revision tree |
//! | `revs` | (document id, revision id text) | [`RevRecord`]: one revision's body and attachments |
//! | `seqs` | sequence number (`u64`) | document id: each document appears once, at its latest change |
//! | `local` | `_local/` document id | `u64` BE revision counter, then the JSON body |
//! | `chunks` | (SHA-256 of stored content, `u32` chunk index) | up to 64 KiB of attachment content |
//! | `meta` | name (`&str`) | `counters`: nine `u64` BE counters (`update_seq`, `doc_count`, …, see `store::Meta`); `uuid`: 16 bytes |
//!
//! All integers are big-endian and fixed width; nothing depends on pointer width.

use serde::{Deserialize, Serialize};

use crate::attachment::Encoding;
use crate::error::{Error, Result};
use crate::revtree::RevTree;

pub(crate) const DOCS: redb::TableDefinition<'static, &str, &[u8]> =
    redb::TableDefinition::new("docs");
pub(crate) const REVS: redb::TableDefinition<'static, (&str, &str), &[u8]> =
    redb::TableDefinition::new("revs");
pub(crate) const SEQS: redb::TableDefinition<'static, u64, &str> =
    redb::TableDefinition::new("seqs");
pub(crate) const LOCAL: redb::TableDefinition<'static, &str, &[u8]> =
    redb::TableDefinition::new("local");
pub(crate) const CHUNKS: redb::TableDefinition<'static, (&[u8; 32], u32), &[u8]> =
    redb::TableDefinition::new("chunks");
pub(crate) const META: redb::TableDefinition<'static, &str, &[u8]> =
    redb::TableDefinition::new("meta");

/// `docs` value, version 2: `u8` version (2), `u8` flags (bit 0: the winning revision is
/// deleted; bit 1: the winner's [`RevRecord`] is inline), `u64` sequence of the document's latest
/// change, `u32` length of the [`RevTree`] encoding and the tree, then (bit 1) the winning
/// revision's [`RevRecord`] to the end. Version 1 (written by earlier versions): the version, the
/// flags and the sequence, then the tree to the end, never an inline record.
///
/// A small winning revision without attachments is kept inline, so writing a new document
/// touches one B-tree less; every other revision's record is in `revs`. A revision's record is
/// in exactly one of the two places.
#[derive(Debug, Clone)]
pub(crate) struct DocRecord {
    pub(crate) seq: u64,
    pub(crate) winner_deleted: bool,
    pub(crate) tree: RevTree,
    /// The encoded [`RevRecord`] of the tree's winning revision, when it is kept inline.
    pub(crate) inline: Option<Vec<u8>>,
}

/// Largest winning-revision record kept inline in its document record.
pub(crate) const INLINE_RECORD_BYTES: usize = 2048;

impl DocRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let tree = self.tree.encode();
        let inline = self.inline.as_deref().unwrap_or(&[]);
        let mut out = Vec::with_capacity(14 + tree.len() + inline.len());
        out.push(2);
        out.push(u8::from(self.winner_deleted) | (u8::from(self.inline.is_some()) << 1));
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&(tree.len() as u32).to_be_bytes());
        out.extend_from_slice(&tree);
        out.extend_from_slice(inline);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<DocRecord> {
        let truncated = || Error::Corrupt("document record truncated".into());
        let (header, rest) = bytes.split_at_checked(10).ok_or_else(truncated)?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&header[2..10]);
        let (tree, inline) = match header[0] {
            1 => (rest, None),
            2 => {
                let (len, rest) = rest.split_at_checked(4).ok_or_else(truncated)?;
                let mut n = [0u8; 4];
                n.copy_from_slice(len);
                let len = usize::try_from(u32::from_be_bytes(n)).map_err(|_| truncated())?;
                let (tree, inline) = rest.split_at_checked(len).ok_or_else(truncated)?;
                let inline = (header[1] & 2 != 0).then(|| inline.to_vec());
                (tree, inline)
            }
            _ => return Err(Error::Corrupt("document record: unknown version".into())),
        };
        Ok(DocRecord {
            seq: u64::from_be_bytes(seq),
            winner_deleted: header[1] & 1 != 0,
            tree: RevTree::decode(tree)?,
            inline,
        })
    }

    /// The inline record, if it is the one of `rev`.
    pub(crate) fn inline_record(&self, rev: &crate::rev::RevId) -> Result<Option<RevRecord>> {
        let Some(bytes) = &self.inline else {
            return Ok(None);
        };
        let winner = self.tree.winner().and_then(|w| self.tree.node(w));
        if winner.is_some_and(|n| n.rev == *rev) {
            RevRecord::decode(bytes).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Only the flags, without decoding the tree.
    pub(crate) fn peek_winner_deleted(bytes: &[u8]) -> bool {
        bytes.get(1).is_some_and(|f| f & 1 != 0)
    }
}

/// One attachment of a revision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct AttRecord {
    /// Name.
    pub(crate) name: String,
    /// MIME type.
    pub(crate) content_type: String,
    /// Decoded length.
    pub(crate) length: u64,
    /// Stored length.
    pub(crate) stored_len: u64,
    /// Generation that introduced this content.
    pub(crate) revpos: u64,
    /// `md5-<base64>` of the stored bytes.
    pub(crate) digest: String,
    /// Whether the stored bytes are gzip.
    pub(crate) gzip: bool,
    /// Storage key: SHA-256 of the stored bytes, hex.
    pub(crate) key: String,
}

impl AttRecord {
    pub(crate) fn encoding(&self) -> Encoding {
        if self.gzip {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }

    /// The 16 bytes of the digest (zeros for a digest that is not `md5-<base64>`).
    pub(crate) fn md5(&self) -> [u8; 16] {
        self.digest
            .strip_prefix("md5-")
            .and_then(|b64| data_encoding::BASE64.decode(b64.as_bytes()).ok())
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
            .unwrap_or([0; 16])
    }

    pub(crate) fn key_bytes(&self) -> Result<[u8; 32]> {
        let bytes = data_encoding::HEXLOWER
            .decode(self.key.as_bytes())
            .map_err(|_| Error::Corrupt("attachment key not hex".into()))?;
        bytes
            .try_into()
            .map_err(|_| Error::Corrupt("attachment key not 32 bytes".into()))
    }
}

/// `revs` value: `u8` version (1), `u8` flags (bit 0 deleted), `u32` body length + the body as
/// compact JSON (an object without `_` members), then the attachments as a JSON array of
/// [`AttRecord`] objects (to the end; empty when there are none).
#[derive(Debug, Clone)]
pub(crate) struct RevRecord {
    pub(crate) deleted: bool,
    pub(crate) body: Vec<u8>,
    pub(crate) attachments: Vec<AttRecord>,
}

impl RevRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.body.len() + 64 * self.attachments.len());
        out.push(1);
        out.push(u8::from(self.deleted));
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        if !self.attachments.is_empty() {
            let _ = serde_json::to_writer(&mut out, &self.attachments);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<RevRecord> {
        let corrupt = |what: &str| Error::Corrupt(format!("revision record: {what}"));
        let (header, rest) = bytes
            .split_at_checked(6)
            .ok_or_else(|| corrupt("truncated"))?;
        if header[0] != 1 {
            return Err(corrupt("unknown version"));
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[2..6]);
        let len = u32::from_be_bytes(len) as usize;
        let (body, atts) = rest
            .split_at_checked(len)
            .ok_or_else(|| corrupt("body truncated"))?;
        let attachments = if atts.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(atts).map_err(|e| corrupt(&e.to_string()))?
        };
        Ok(RevRecord {
            deleted: header[1] & 1 != 0,
            body: body.to_vec(),
            attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let rec = RevRecord {
            deleted: true,
            body: br#"{"a":1}"#.to_vec(),
            attachments: vec![AttRecord {
                name: "n".into(),
                content_type: "text/plain".into(),
                length: 3,
                stored_len: 20,
                revpos: 1,
                digest: "md5-x".into(),
                gzip: true,
                key: "00".repeat(32),
            }],
        };
        let back = RevRecord::decode(&rec.encode()).unwrap();
        assert_eq!(back.body, rec.body);
        assert_eq!(back.attachments, rec.attachments);
        assert!(back.deleted);
        assert_eq!(back.attachments[0].key_bytes().unwrap(), [0; 32]);
        let mut tree = RevTree::new();
        let rev: crate::rev::RevId = "1-a".parse().unwrap();
        tree.add_child(None, rev.clone(), true);
        let doc = DocRecord {
            seq: 7,
            winner_deleted: true,
            tree,
            inline: Some(rec.encode()),
        };
        let bytes = doc.encode();
        assert!(DocRecord::peek_winner_deleted(&bytes));
        let back = DocRecord::decode(&bytes).unwrap();
        assert_eq!(
            (back.seq, back.inline.as_deref()),
            (7, doc.inline.as_deref())
        );
        assert_eq!(back.inline_record(&rev).unwrap().unwrap().body, rec.body);
        assert!(
            back.inline_record(&"1-b".parse().unwrap())
                .unwrap()
                .is_none()
        );
        assert!(DocRecord::decode(&bytes[..5]).is_err());
        assert!(DocRecord::decode(&bytes[..15]).is_err());
        // Version 1, as earlier versions wrote it: no inline record.
        let mut v1 = vec![1, 1];
        v1.extend_from_slice(&9u64.to_be_bytes());
        v1.extend_from_slice(&doc.tree.encode());
        let old = DocRecord::decode(&v1).unwrap();
        assert_eq!((old.seq, old.inline), (9, None));
        assert!(RevRecord::decode(&[1, 0, 0, 0, 0, 9]).is_err());
    }
}
