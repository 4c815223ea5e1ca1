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
//! | `meta` | name (`&str`) | `u64` BE counters (`update_seq`, `doc_count`, …) or bytes (`uuid`) |
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

/// `docs` value: `u8` version (1), `u8` flags (bit 0: the winning revision is deleted), `u64`
/// sequence of the document's latest change, then the [`RevTree`] encoding.
#[derive(Debug, Clone)]
pub(crate) struct DocRecord {
    pub(crate) seq: u64,
    pub(crate) winner_deleted: bool,
    pub(crate) tree: RevTree,
}

impl DocRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let tree = self.tree.encode();
        let mut out = Vec::with_capacity(10 + tree.len());
        out.push(1);
        out.push(u8::from(self.winner_deleted));
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&tree);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<DocRecord> {
        let (header, tree) = bytes
            .split_at_checked(10)
            .ok_or_else(|| Error::Corrupt("document record truncated".into()))?;
        if header[0] != 1 {
            return Err(Error::Corrupt("document record: unknown version".into()));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&header[2..10]);
        Ok(DocRecord {
            seq: u64::from_be_bytes(seq),
            winner_deleted: header[1] & 1 != 0,
            tree: RevTree::decode(tree)?,
        })
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
        let doc = DocRecord {
            seq: 7,
            winner_deleted: true,
            tree: RevTree::new(),
        };
        let bytes = doc.encode();
        assert!(DocRecord::peek_winner_deleted(&bytes));
        assert_eq!(DocRecord::decode(&bytes).unwrap().seq, 7);
        assert!(DocRecord::decode(&bytes[..5]).is_err());
        assert!(RevRecord::decode(&[1, 0, 0, 0, 0, 9]).is_err());
    }
}
