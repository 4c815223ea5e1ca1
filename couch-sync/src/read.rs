//! Reading documents: single revisions, `open_revs`, `_all_docs`, `_changes`, `_revs_diff`,
//! `_local` documents and attachment content.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;

use redb::ReadableTable;
use serde_json::{Map, Value, json};

use crate::attachment::{CHUNK_SIZE, Encoding, chunk_count};
use crate::error::{Error, Result};
use crate::records::{AttRecord, DocRecord, RevRecord};
use crate::rev::RevId;
use crate::revtree::RevTree;
use crate::store::{Database, Reader};

/// Options of a document read (`GET /db/doc?...`).
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// A specific revision (`rev=`).
    pub rev: Option<RevId>,
    /// Include `_revisions`.
    pub revs: bool,
    /// Include `_revs_info`.
    pub revs_info: bool,
    /// Include `_conflicts`.
    pub conflicts: bool,
    /// Include `_deleted_conflicts`.
    pub deleted_conflicts: bool,
    /// Include `_local_seq`.
    pub local_seq: bool,
    /// With `rev`: return the latest leaf descending from it.
    pub latest: bool,
    /// How to show attachments.
    pub attachments: AttachmentMode,
    /// Only attachments newer than these revisions get content (`atts_since`).
    pub atts_since: Vec<RevId>,
    /// Show `encoding`/`encoded_length` of stored attachments.
    pub att_encoding_info: bool,
}

/// How attachments appear in a rendered document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachmentMode {
    /// Stubs (`"stub": true`).
    #[default]
    Stubs,
    /// Content inline as base64 `data`.
    Inline,
    /// `"follows": true`: content will follow in multipart parts, in `_attachments` order, as
    /// stored (a gzip-stored attachment shows `encoding`/`encoded_length` and follows as gzip).
    Follows,
}

/// A stored attachment, for streaming its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRef {
    /// Name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Decoded length.
    pub length: u64,
    /// Stored length.
    pub stored_len: u64,
    /// Stored encoding.
    pub encoding: Encoding,
    /// `md5-<base64>` of the stored bytes.
    pub digest: String,
    /// Generation that introduced it.
    pub revpos: u64,
    key: [u8; 32],
}

impl AttachmentRef {
    fn from_record(a: &AttRecord) -> Result<AttachmentRef> {
        Ok(AttachmentRef {
            name: a.name.clone(),
            content_type: a.content_type.clone(),
            length: a.length,
            stored_len: a.stored_len,
            encoding: a.encoding(),
            digest: a.digest.clone(),
            revpos: a.revpos,
            key: a.key_bytes()?,
        })
    }

    /// Number of stored chunks.
    pub fn chunks(&self) -> u32 {
        chunk_count(self.stored_len)
    }
}

/// One revision rendered as JSON.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Document id.
    pub id: String,
    /// Revision.
    pub rev: RevId,
    /// Whether it is a deletion.
    pub deleted: bool,
    /// The document as CouchDB shows it (`_id`, `_rev`, body, `_attachments`, ...).
    pub json: Map<String, Value>,
    /// Attachments whose content follows (in [`AttachmentMode::Follows`]), in `_attachments` order.
    pub follows: Vec<AttachmentRef>,
}

/// Which revisions `open_revs` asks for.
#[derive(Debug, Clone)]
pub enum OpenRevs {
    /// Every leaf.
    All,
    /// These revisions.
    Revs(Vec<RevId>),
}

/// One answer of `open_revs`.
#[derive(Debug, Clone)]
pub enum OpenRev {
    /// The revision.
    Ok(Doc),
    /// A revision this database does not have.
    Missing(RevId),
}

/// Per-document visibility, as an authorization hook decides it (see
/// `server::Authorize`): documents it refuses are left out of listings and reads.
pub trait DocFilter: Send + Sync {
    /// Whether the caller may see document `id` whose winning revision is `doc`.
    fn allows(&self, id: &str, doc: &Map<String, Value>) -> bool;
}

/// `_all_docs` options.
#[derive(Debug, Clone, Default)]
pub struct AllDocsQuery {
    /// First key (inclusive).
    pub start_key: Option<String>,
    /// Last key (inclusive unless `inclusive_end` is false).
    pub end_key: Option<String>,
    /// Only these keys, in this order (`keys`, or `key`).
    pub keys: Option<Vec<String>>,
    /// Newest keys first.
    pub descending: bool,
    /// Rows to skip.
    pub skip: u64,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// Whether `end_key` is included (default true).
    pub exclusive_end: bool,
    /// Include documents.
    pub include_docs: bool,
    /// Include `_conflicts` in included documents.
    pub conflicts: bool,
    /// Inline attachment content in included documents.
    pub attachments: bool,
}

/// One `_all_docs` row.
#[derive(Debug, Clone)]
pub enum AllDocsRow {
    /// A document (`deleted` only when asked for by key).
    Doc {
        /// Id (also the key).
        id: String,
        /// Winning revision.
        rev: RevId,
        /// Whether the winner is a deletion.
        deleted: bool,
        /// The document, with `include_docs` (null for deleted ones).
        doc: Option<Value>,
    },
    /// A key that is not a document.
    NotFound(String),
}

/// `_all_docs` result.
#[derive(Debug, Clone)]
pub struct AllDocs {
    /// Number of (non-deleted) documents in the database.
    pub total_rows: u64,
    /// Rows before the first returned one.
    pub offset: u64,
    /// The rows.
    pub rows: Vec<AllDocsRow>,
    /// Update sequence of the snapshot read.
    pub update_seq: u64,
}

/// What `_changes` reports for each document.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ChangesFilter {
    /// Every document.
    None,
    /// Only these ids (`filter=_doc_ids`).
    DocIds(HashSet<String>),
    /// Only documents whose winning revision matches (`filter=_selector`).
    Selector(crate::mango::Selector),
    /// Only design documents (`filter=_design`).
    Design,
    /// Only revisions a design document's filter function passes (`filter=ddoc/name`), or for
    /// which a view's map function emits (`filter=_view`) (feature `js`). With `style=all_docs`
    /// each leaf is tried, and only those that pass are reported.
    #[cfg(feature = "js")]
    Js(crate::js::JsFilter),
}

/// `_changes` options.
#[derive(Debug, Clone)]
pub struct ChangesQuery {
    /// Changes after this sequence.
    pub since: u64,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// Newest first (then `since` is ignored).
    pub descending: bool,
    /// `style=all_docs`: every leaf, not only the winner.
    pub all_docs: bool,
    /// Include the winning revision's document.
    pub include_docs: bool,
    /// Include `_conflicts` in included documents.
    pub conflicts: bool,
    /// Inline attachment content in included documents.
    pub attachments: bool,
    /// Which documents.
    pub filter: ChangesFilter,
}

impl Default for ChangesQuery {
    fn default() -> ChangesQuery {
        ChangesQuery {
            since: 0,
            limit: None,
            descending: false,
            all_docs: false,
            include_docs: false,
            conflicts: false,
            attachments: false,
            filter: ChangesFilter::None,
        }
    }
}

/// One `_changes` row.
#[derive(Debug, Clone)]
pub struct Change {
    /// Sequence.
    pub seq: u64,
    /// Document id.
    pub id: String,
    /// The winning revision, or every leaf with `style=all_docs` (winner first).
    pub changes: Vec<RevId>,
    /// Whether the winner is a deletion.
    pub deleted: bool,
    /// The document, with `include_docs`.
    pub doc: Option<Value>,
}

/// A page of `_changes`.
#[derive(Debug, Clone)]
pub struct Changes {
    /// The rows.
    pub results: Vec<Change>,
    /// The sequence to resume from.
    pub last_seq: u64,
    /// Changes after `last_seq` not yet reported.
    pub pending: u64,
}

/// `_revs_diff` answer for one document.
#[derive(Debug, Clone, Default)]
pub struct RevsDiff {
    /// Revisions the database lacks.
    pub missing: Vec<RevId>,
    /// Leaves the database has that may be ancestors of the missing ones.
    pub possible_ancestors: Vec<RevId>,
}

impl GetOptions {
    /// Options for documents included in a listing (`include_docs`).
    pub(crate) fn included(conflicts: bool, attachments: bool) -> GetOptions {
        GetOptions {
            conflicts,
            attachments: if attachments {
                AttachmentMode::Inline
            } else {
                AttachmentMode::Stubs
            },
            ..GetOptions::default()
        }
    }
}

impl Reader {
    pub(crate) fn doc_record(&self, id: &str) -> Result<Option<DocRecord>> {
        match self.docs.get(id)? {
            Some(v) => Ok(Some(DocRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// A revision's record: inline in the document record (the winner's, when small), or in
    /// `revs`.
    fn rev_record_of(&self, id: &str, rec: &DocRecord, rev: &RevId) -> Result<Option<RevRecord>> {
        if let Some(inline) = rec.inline_record(rev)? {
            return Ok(Some(inline));
        }
        let text = rev.to_string();
        match self.revs.get((id, text.as_str()))? {
            Some(v) => Ok(Some(RevRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn content(&self, att: &AttachmentRef) -> Result<Vec<u8>> {
        let mut stored = Vec::with_capacity(usize::try_from(att.stored_len).unwrap_or(0));
        for index in 0..att.chunks() {
            let chunk = self.chunks.get((&att.key, index))?.ok_or_else(|| {
                Error::Corrupt(format!("attachment {} lost chunk {index}", att.name))
            })?;
            stored.extend_from_slice(chunk.value());
        }
        match att.encoding {
            Encoding::Identity => Ok(stored),
            Encoding::Gzip => {
                let mut out = Vec::with_capacity(usize::try_from(att.length).unwrap_or(0));
                flate2::read::GzDecoder::new(stored.as_slice())
                    .read_to_end(&mut out)
                    .map_err(|e| Error::Corrupt(format!("attachment {}: {e}", att.name)))?;
                Ok(out)
            }
        }
    }

    /// Renders revision `index` of `id`'s tree.
    pub(crate) fn render(
        &self,
        id: &str,
        rec: &DocRecord,
        index: usize,
        opts: &GetOptions,
    ) -> Result<Option<Doc>> {
        let tree = &rec.tree;
        let Some(node) = tree.node(index) else {
            return Ok(None);
        };
        let Some(stored) = self.rev_record_of(id, rec, &node.rev)? else {
            return Ok(None);
        };
        let body: Map<String, Value> = serde_json::from_slice(&stored.body)
            .map_err(|e| Error::Corrupt(format!("stored body of {id}: {e}")))?;
        // CouchDB's member order: `_id`, `_rev`, the body, `_deleted`, `_revisions`, the meta
        // members, `_attachments` (couch_doc:to_json_obj).
        let mut json = Map::with_capacity(body.len() + 4);
        json.insert("_id".into(), Value::String(id.to_owned()));
        json.insert("_rev".into(), Value::String(node.rev.to_string()));
        json.extend(body);
        if node.deleted {
            json.insert("_deleted".into(), Value::Bool(true));
        }
        if opts.revs {
            let (start, ids) = tree.revisions(index);
            json.insert("_revisions".into(), json!({"start": start, "ids": ids}));
        }
        if opts.revs_info {
            let info: Vec<Value> = tree
                .path(index)
                .into_iter()
                .filter_map(|i| {
                    tree.node(i).map(
                        |n| json!({"rev": n.rev.to_string(), "status": tree.status(i).as_str()}),
                    )
                })
                .collect();
            json.insert("_revs_info".into(), Value::Array(info));
        }
        let mut follows = Vec::new();
        let mut attachments = None;
        if !stored.attachments.is_empty() {
            let since_pos = self.atts_since_pos(tree, index, &opts.atts_since);
            let mut atts = Map::new();
            for a in &stored.attachments {
                let att = AttachmentRef::from_record(a)?;
                // Without `atts_since` every attachment has content, even one with `revpos` 0
                // (replicated without one), as in CouchDB, where only `atts_since` makes stubs.
                let wants_content = opts.atts_since.is_empty() || a.revpos > since_pos;
                let mut entry = Map::new();
                entry.insert("content_type".into(), json!(a.content_type));
                entry.insert("revpos".into(), json!(a.revpos));
                entry.insert("digest".into(), json!(a.digest));
                match opts.attachments {
                    AttachmentMode::Inline if wants_content => {
                        let data = self.content(&att)?;
                        entry.insert("data".into(), json!(data_encoding::BASE64.encode(&data)));
                    }
                    AttachmentMode::Follows if wants_content => {
                        entry.insert("length".into(), json!(a.length));
                        entry.insert("follows".into(), Value::Bool(true));
                        follows.push(att);
                    }
                    _ => {
                        entry.insert("length".into(), json!(a.length));
                        entry.insert("stub".into(), Value::Bool(true));
                    }
                }
                // Following content is sent as stored, so its encoding is always shown.
                let follows_stored = opts.attachments == AttachmentMode::Follows && wants_content;
                if a.gzip && (opts.att_encoding_info || follows_stored) {
                    entry.insert("encoding".into(), json!("gzip"));
                    entry.insert("encoded_length".into(), json!(a.stored_len));
                }
                atts.insert(a.name.clone(), Value::Object(entry));
            }
            attachments = Some(Value::Object(atts));
        }
        let is_winner = tree.winner() == Some(index);
        if opts.conflicts || opts.deleted_conflicts {
            let (mut live, mut dead) = (Vec::new(), Vec::new());
            for leaf in tree.ranked_leaves() {
                if leaf == index {
                    continue;
                }
                if let Some(n) = tree.node(leaf) {
                    let text = Value::String(n.rev.to_string());
                    if n.deleted {
                        dead.push(text)
                    } else {
                        live.push(text)
                    }
                }
            }
            if opts.conflicts && !live.is_empty() && is_winner {
                json.insert("_conflicts".into(), Value::Array(live));
            }
            if opts.deleted_conflicts && !dead.is_empty() && is_winner {
                json.insert("_deleted_conflicts".into(), Value::Array(dead));
            }
        }
        if opts.local_seq {
            json.insert("_local_seq".into(), json!(rec.seq));
        }
        if let Some(atts) = attachments {
            json.insert("_attachments".into(), atts);
        }
        Ok(Some(Doc {
            id: id.to_owned(),
            rev: node.rev.clone(),
            deleted: node.deleted,
            json,
            follows,
        }))
    }

    /// The highest generation among `atts_since` revisions on `index`'s path (0 if none):
    /// attachments with a higher `revpos` are new to the caller.
    fn atts_since_pos(&self, tree: &RevTree, index: usize, since: &[RevId]) -> u64 {
        if since.is_empty() {
            return 0;
        }
        let path: HashSet<&RevId> = tree
            .path(index)
            .into_iter()
            .filter_map(|i| tree.node(i).map(|n| &n.rev))
            .collect();
        since
            .iter()
            .filter(|r| path.contains(r))
            .map(RevId::pos)
            .max()
            .unwrap_or(0)
    }

    fn get(&self, id: &str, opts: &GetOptions) -> Result<Doc> {
        let rec = self
            .doc_record(id)?
            .ok_or_else(|| Error::not_found("missing"))?;
        let index = match &opts.rev {
            Some(rev) => {
                let i = rec
                    .tree
                    .find(rev)
                    .ok_or_else(|| Error::not_found("missing"))?;
                if opts.latest {
                    latest_leaf(&rec.tree, i)
                } else {
                    i
                }
            }
            None => {
                let w = rec
                    .tree
                    .winner()
                    .ok_or_else(|| Error::not_found("missing"))?;
                if rec.tree.node(w).is_some_and(|n| n.deleted) {
                    return Err(Error::not_found("deleted"));
                }
                w
            }
        };
        self.render(id, &rec, index, opts)?
            .ok_or_else(|| Error::not_found("missing"))
    }

    fn winner_body(&self, id: &str, rec: &DocRecord) -> Result<Option<Map<String, Value>>> {
        let Some(w) = rec.tree.winner() else {
            return Ok(None);
        };
        Ok(self
            .render(id, rec, w, &GetOptions::default())?
            .map(|d| d.json))
    }
}

/// The best leaf descending from `index` (itself if a leaf).
fn latest_leaf(tree: &RevTree, index: usize) -> usize {
    let leaves = tree.leaves_under(index);
    tree.ranked_leaves()
        .into_iter()
        .find(|l| leaves.contains(l))
        .unwrap_or(index)
}

impl Database {
    /// Reads a document (404 `missing`, or `deleted` when the winner is a deletion and no
    /// revision was asked for).
    pub fn get(&self, id: &str, opts: &GetOptions) -> Result<Doc> {
        self.read(|r| r.get(id, opts))
    }

    /// `open_revs`: the requested revisions (or all leaves), each found or missing. With
    /// `opts.latest` each requested revision is replaced by its latest leaf.
    pub fn open_revs(&self, id: &str, revs: &OpenRevs, opts: &GetOptions) -> Result<Vec<OpenRev>> {
        self.read(|r| {
            let rec = r.doc_record(id)?;
            let mut out = Vec::new();
            match revs {
                OpenRevs::All => {
                    let Some(rec) = rec else {
                        return Err(Error::not_found("missing"));
                    };
                    for leaf in rec.tree.ranked_leaves() {
                        if let Some(doc) = r.render(id, &rec, leaf, opts)? {
                            out.push(OpenRev::Ok(doc));
                        }
                    }
                }
                OpenRevs::Revs(list) => {
                    let mut seen = HashSet::new();
                    for rev in list {
                        let found = rec.as_ref().and_then(|rec| {
                            rec.tree.find(rev).map(|i| {
                                (
                                    rec,
                                    if opts.latest {
                                        latest_leaf(&rec.tree, i)
                                    } else {
                                        i
                                    },
                                )
                            })
                        });
                        match found {
                            Some((rec, i)) => {
                                if !seen.insert(i) {
                                    continue;
                                }
                                match r.render(id, rec, i, opts)? {
                                    Some(doc) => out.push(OpenRev::Ok(doc)),
                                    None => out.push(OpenRev::Missing(rev.clone())),
                                }
                            }
                            None => out.push(OpenRev::Missing(rev.clone())),
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// Reads a `_local` document: its body with `_id` and `_rev` (`0-N`).
    pub fn get_local(&self, id: &str) -> Result<Map<String, Value>> {
        self.read(|r| {
            let v = r
                .local
                .get(id)?
                .ok_or_else(|| Error::not_found("missing"))?;
            let (counter, body) = v
                .value()
                .split_at_checked(8)
                .ok_or_else(|| Error::Corrupt("local document truncated".into()))?;
            let counter = u64::from_be_bytes(
                counter
                    .try_into()
                    .map_err(|_| Error::Corrupt("local".into()))?,
            );
            let body: Map<String, Value> = serde_json::from_slice(body)
                .map_err(|e| Error::Corrupt(format!("local document {id}: {e}")))?;
            let mut json = Map::with_capacity(body.len() + 2);
            json.insert("_id".into(), Value::String(id.to_owned()));
            json.insert("_rev".into(), Value::String(format!("0-{counter}")));
            json.extend(body);
            Ok(json)
        })
    }

    /// Metadata of attachment `name` of the winning revision (or of `rev`).
    pub fn attachment(
        &self,
        id: &str,
        name: &str,
        rev: Option<&RevId>,
    ) -> Result<(RevId, AttachmentRef)> {
        self.read(|r| {
            let rec = r
                .doc_record(id)?
                .ok_or_else(|| Error::not_found("missing"))?;
            let index = match rev {
                Some(rev) => rec
                    .tree
                    .find(rev)
                    .ok_or_else(|| Error::not_found("missing"))?,
                None => {
                    let w = rec
                        .tree
                        .winner()
                        .ok_or_else(|| Error::not_found("missing"))?;
                    if rec.tree.node(w).is_some_and(|n| n.deleted) {
                        return Err(Error::not_found("deleted"));
                    }
                    w
                }
            };
            let node_rev = rec
                .tree
                .node(index)
                .map(|n| n.rev.clone())
                .ok_or_else(|| Error::not_found("missing"))?;
            let stored = r
                .rev_record_of(id, &rec, &node_rev)?
                .ok_or_else(|| Error::not_found("missing"))?;
            let att = stored
                .attachments
                .iter()
                .find(|a| a.name == name)
                .ok_or_else(|| Error::not_found("Document is missing attachment"))?;
            Ok((node_rev, AttachmentRef::from_record(att)?))
        })
    }

    /// Chunk `index` of an attachment's stored bytes (each read is its own snapshot, so a long
    /// download never holds up writers or compaction; content removed by a compaction in the
    /// meantime ends the download with an error).
    pub fn attachment_chunk(&self, att: &AttachmentRef, index: u32) -> Result<Vec<u8>> {
        self.read(|r| {
            r.chunks
                .get((&att.key, index))?
                .map(|c| c.value().to_vec())
                .ok_or_else(|| Error::not_found("attachment content is gone (compacted?)"))
        })
    }

    /// `_all_docs`.
    pub fn all_docs(&self, q: &AllDocsQuery, filter: Option<&dyn DocFilter>) -> Result<AllDocs> {
        self.read(|r| {
            let total_rows = r.meta.doc_count;
            let opts = GetOptions::included(q.conflicts, q.attachments);
            let mut rows = Vec::new();
            let limit = q.limit.unwrap_or(u64::MAX);
            if let Some(keys) = &q.keys {
                for key in keys
                    .iter()
                    .skip(usize::try_from(q.skip).unwrap_or(usize::MAX))
                {
                    if rows.len() as u64 >= limit {
                        break;
                    }
                    match r.doc_record(key)? {
                        Some(rec) => {
                            let Some(w) = rec.tree.winner() else { continue };
                            let Some(node) = rec.tree.node(w) else {
                                continue;
                            };
                            let body = if filter.is_some() || (q.include_docs && !node.deleted) {
                                r.render(key, &rec, w, &opts)?
                            } else {
                                None
                            };
                            if let (Some(f), Some(doc)) = (filter, &body) {
                                if !f.allows(key, &doc.json) {
                                    rows.push(AllDocsRow::NotFound(key.clone()));
                                    continue;
                                }
                            }
                            let doc = if q.include_docs {
                                Some(match body {
                                    Some(d) if !node.deleted => Value::Object(d.json),
                                    _ => Value::Null,
                                })
                            } else {
                                None
                            };
                            rows.push(AllDocsRow::Doc {
                                id: key.clone(),
                                rev: node.rev.clone(),
                                deleted: node.deleted,
                                doc,
                            });
                        }
                        None => rows.push(AllDocsRow::NotFound(key.clone())),
                    }
                }
                return Ok(AllDocs {
                    total_rows,
                    offset: 0,
                    rows,
                    update_seq: r.meta.update_seq,
                });
            }
            let (lo, hi) = if q.descending {
                (q.end_key.as_deref(), q.start_key.as_deref())
            } else {
                (q.start_key.as_deref(), q.end_key.as_deref())
            };
            // The end bound is the one the scan stops at: exclusive_end applies to it.
            let exclusive_hi = q.exclusive_end && !q.descending;
            let exclusive_lo = q.exclusive_end && q.descending;
            let range = r.docs.range::<&str>(lo.unwrap_or("")..)?;
            let in_range = |key: &str| -> bool {
                let above_lo = match lo {
                    Some(lo) => {
                        if exclusive_lo {
                            key > lo
                        } else {
                            key >= lo
                        }
                    }
                    None => true,
                };
                let below_hi = match hi {
                    Some(hi) => {
                        if exclusive_hi {
                            key < hi
                        } else {
                            key <= hi
                        }
                    }
                    None => true,
                };
                above_lo && below_hi
            };
            let mut offset = 0u64;
            let mut skipped = 0u64;
            let mut visit = |key: &str, value: &[u8]| -> Result<bool> {
                if !in_range(key) {
                    return Ok(true);
                }
                if DocRecord::peek_winner_deleted(value) {
                    return Ok(true);
                }
                let rec = DocRecord::decode(value)?;
                let Some(w) = rec.tree.winner() else {
                    return Ok(true);
                };
                let doc = if filter.is_some() || q.include_docs {
                    r.render(key, &rec, w, &opts)?
                } else {
                    None
                };
                if let (Some(f), Some(d)) = (filter, &doc) {
                    if !f.allows(key, &d.json) {
                        return Ok(true);
                    }
                }
                if skipped < q.skip {
                    skipped += 1;
                    offset += 1;
                    return Ok(true);
                }
                if rows.len() as u64 >= limit {
                    return Ok(false);
                }
                let rev = rec
                    .tree
                    .node(w)
                    .map(|n| n.rev.clone())
                    .ok_or_else(|| Error::Corrupt("winner".into()))?;
                rows.push(AllDocsRow::Doc {
                    id: key.to_owned(),
                    rev,
                    deleted: false,
                    doc: if q.include_docs {
                        doc.map(|d| Value::Object(d.json))
                    } else {
                        None
                    },
                });
                Ok(true)
            };
            if q.descending {
                for entry in range.rev() {
                    let (k, v) = entry?;
                    if let Some(hi) = hi {
                        if k.value() > hi {
                            continue;
                        }
                    }
                    if !visit(k.value(), v.value())? {
                        break;
                    }
                }
            } else {
                for entry in range {
                    let (k, v) = entry?;
                    if let Some(hi) = hi {
                        if k.value() > hi {
                            break;
                        }
                    }
                    if !visit(k.value(), v.value())? {
                        break;
                    }
                }
            }
            // Rows before the first one: documents before the start key (plus those skipped).
            if let Some(start) = if q.descending { hi } else { lo } {
                let before = if q.descending {
                    r.docs
                        .range::<&str>(start..)?
                        .filter_map(|e| e.ok())
                        .filter(|(k, v)| {
                            k.value() > start && !DocRecord::peek_winner_deleted(v.value())
                        })
                        .count()
                } else {
                    r.docs
                        .range::<&str>(..start)?
                        .filter_map(|e| e.ok())
                        .filter(|(_, v)| !DocRecord::peek_winner_deleted(v.value()))
                        .count()
                };
                offset += before as u64;
            }
            Ok(AllDocs {
                total_rows,
                offset,
                rows,
                update_seq: r.meta.update_seq,
            })
        })
    }

    /// One page of `_changes`.
    pub fn changes(&self, q: &ChangesQuery, filter: Option<&dyn DocFilter>) -> Result<Changes> {
        self.read(|r| {
            let limit = q.limit.unwrap_or(u64::MAX).max(1);
            let opts = GetOptions::included(q.conflicts, q.attachments);
            let needs_body = q.include_docs
                || filter.is_some()
                || matches!(q.filter, ChangesFilter::Selector(_));
            let mut results = Vec::new();
            let mut stopped_early = false;
            let iter: Box<
                dyn Iterator<Item = std::result::Result<SeqEntry<'_>, redb::StorageError>>,
            > = if q.descending {
                Box::new(r.seqs.iter()?.rev())
            } else {
                Box::new(r.seqs.range(q.since.saturating_add(1)..)?)
            };
            for entry in iter {
                if results.len() as u64 >= limit {
                    stopped_early = true;
                    break;
                }
                let (seq, id) = entry?;
                let (seq, id) = (seq.value(), id.value().to_owned());
                match &q.filter {
                    ChangesFilter::DocIds(ids) if !ids.contains(&id) => continue,
                    ChangesFilter::Design if !id.starts_with("_design/") => continue,
                    _ => {}
                }
                let Some(rec) = r.doc_record(&id)? else {
                    continue;
                };
                let ranked = rec.tree.ranked_leaves();
                let Some(&winner) = ranked.first() else {
                    continue;
                };
                let deleted = rec.tree.node(winner).is_some_and(|n| n.deleted);
                let body = if needs_body {
                    r.render(&id, &rec, winner, &opts)?
                } else {
                    None
                };
                if let ChangesFilter::Selector(sel) = &q.filter {
                    let matches = body
                        .as_ref()
                        .is_some_and(|d| sel.matches(&Value::Object(d.json.clone())));
                    if !matches {
                        continue;
                    }
                }
                if let Some(f) = filter {
                    if !body.as_ref().is_some_and(|d| f.allows(&id, &d.json)) {
                        continue;
                    }
                }
                #[cfg(feature = "js")]
                let mut passing: Option<Vec<RevId>> = None;
                #[cfg(feature = "js")]
                if let ChangesFilter::Js(js) = &q.filter {
                    let tried: Vec<usize> = if q.all_docs {
                        ranked.clone()
                    } else {
                        vec![winner]
                    };
                    let js_opts = GetOptions {
                        revs: true,
                        conflicts: true,
                        ..GetOptions::default()
                    };
                    let mut revs = Vec::new();
                    for leaf in tried {
                        let Some(doc) = r.render(&id, &rec, leaf, &js_opts)? else {
                            continue;
                        };
                        if js.passes(&js_doc(doc.json))? {
                            revs.push(doc.rev);
                        }
                    }
                    if revs.is_empty() {
                        continue;
                    }
                    passing = Some(revs);
                }
                #[cfg(feature = "js")]
                let passing = passing.filter(|_| q.all_docs);
                #[cfg(not(feature = "js"))]
                let passing: Option<Vec<RevId>> = None;
                let changes = if let Some(revs) = passing {
                    revs
                } else if q.all_docs {
                    ranked
                        .iter()
                        .filter_map(|&i| rec.tree.node(i).map(|n| n.rev.clone()))
                        .collect()
                } else {
                    rec.tree
                        .node(winner)
                        .map(|n| vec![n.rev.clone()])
                        .unwrap_or_default()
                };
                let doc = if q.include_docs {
                    body.map(|d| Value::Object(d.json))
                } else {
                    None
                };
                results.push(Change {
                    seq,
                    id,
                    changes,
                    deleted,
                    doc,
                });
            }
            // Resume point: the last row when the limit cut the page short, else everything up to
            // the snapshot's update sequence has been looked at.
            let last_seq = match results.last() {
                Some(last) if stopped_early || q.descending => last.seq,
                _ if q.descending => r.meta.update_seq,
                _ => q.since.max(r.meta.update_seq),
            };
            let pending = if q.descending {
                0
            } else {
                r.seqs.range(last_seq.saturating_add(1)..)?.count() as u64
            };
            Ok(Changes {
                results,
                last_seq,
                pending,
            })
        })
    }

    /// `_revs_diff`: which of the given revisions are missing, per document.
    pub fn revs_diff(
        &self,
        query: &BTreeMap<String, Vec<RevId>>,
    ) -> Result<BTreeMap<String, RevsDiff>> {
        self.read(|r| {
            let mut out = BTreeMap::new();
            for (id, revs) in query {
                let rec = r.doc_record(id)?;
                let missing: Vec<RevId> = revs
                    .iter()
                    .filter(|rev| rec.as_ref().is_none_or(|rec| rec.tree.find(rev).is_none()))
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                let max_pos = missing.iter().map(RevId::pos).max().unwrap_or(0);
                let possible_ancestors = rec
                    .map(|rec| {
                        rec.tree
                            .leaves()
                            .into_iter()
                            .filter_map(|i| rec.tree.node(i).map(|n| n.rev.clone()))
                            .filter(|rev| rev.pos() < max_pos)
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(
                    id.clone(),
                    RevsDiff {
                        missing,
                        possible_ancestors,
                    },
                );
            }
            Ok(out)
        })
    }

    /// The winning revision's body, for hooks that filter by content.
    pub fn winner_json(&self, id: &str) -> Result<Option<Map<String, Value>>> {
        self.read(|r| match r.doc_record(id)? {
            Some(rec) => r.winner_body(id, &rec),
            None => Ok(None),
        })
    }
}

/// A revision as CouchDB hands it to a filter function (`json_doc`): at most 20 ids in
/// `_revisions` (`query_server_config/revs_limit`).
#[cfg(feature = "js")]
fn js_doc(mut json: Map<String, Value>) -> Value {
    if let Some(Value::Array(ids)) = json.get_mut("_revisions").and_then(|r| r.get_mut("ids")) {
        ids.truncate(20);
    }
    Value::Object(json)
}

type SeqEntry<'a> = (
    redb::AccessGuard<'a, u64>,
    redb::AccessGuard<'a, &'static str>,
);

/// Chunk size of stored attachment content (for callers sizing buffers).
pub const ATTACHMENT_CHUNK_SIZE: usize = CHUNK_SIZE;
