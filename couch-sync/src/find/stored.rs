//! JSON indexes kept in the database's own redb file, updated inside the write transaction that
//! changes a document: a write acknowledged is in the next `_find`'s index.
//!
//! Tables (in the database file, beside the documents):
//! - `mango_indexes`: signature → the index definition (`{"fields": [...], "partial": ...}`) of
//!   every JSON index some live design document declares. Two indexes with one definition share
//!   one signature, and one pair of tables.
//! - `mango_rows:<signature>`: the row key of views ([`crate::view::key`]: byte order is
//!   CouchDB's collation of the key, then the id) → `u32` BE id length, the id, the key as JSON.
//! - `mango_ids:<signature>`: doc id → its row key, to remove the row when the document changes.
//!
//! - `mango_behind`: signature → the first sequence an index has not seen, for indexes a large
//!   `_bulk_docs` (more than [`DEFER_BATCH`] documents) left behind: rewriting an index row by
//!   row in document order touches most of its pages in every batch, so such a batch only
//!   marks the indexes, and the next `_find` first brings them up to date in one pass in key
//!   order ([`catch_up`]). Single writes and small batches update the indexes in their own
//!   transaction. Either way, an acknowledged write is in the next `_find`'s results.
//!
//! Writing a design document re-reads the JSON indexes of every live design document: a new
//! definition gets its tables and is built from every document in the same transaction; a
//! definition no design document declares any more loses its tables. An ordinary document's
//! write moves its row in each index (or removes it: deleted, or no longer matching the index's
//! fields and partial filter). Design documents are in no index, as in CouchDB.

use std::ops::Bound;
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::cursor::{Row, RowSource};
use super::index::{Index, Kind};
use super::selector::Range;
use crate::error::{Error, Result};
use crate::mango::Selector;
use crate::read::{DocFilter, GetOptions};
use crate::records::DocRecord;
use crate::rev::RevId;
use crate::store::{Reader, Writer};

const REGISTRY: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("mango_indexes");

/// Indexes left behind by a large batch: signature → the first sequence not yet indexed.
const BEHIND: TableDefinition<'static, &str, u64> = TableDefinition::new("mango_behind");

/// A `_bulk_docs` of more documents than this leaves the indexes to the next query.
pub(crate) const DEFER_BATCH: usize = 64;

/// Documents a catch-up holds in memory at once.
const CATCH_UP_CHUNK: usize = 4096;

fn rows_table(sig: &str) -> String {
    format!("mango_rows:{sig}")
}

fn ids_table(sig: &str) -> String {
    format!("mango_ids:{sig}")
}

/// The signature of a JSON index's definition; `None` for `_all_docs`.
pub(crate) fn signature(index: &Index) -> Option<String> {
    let Kind::Json { columns, partial } = &index.kind else {
        return None;
    };
    let def = json!({"fields": columns, "partial": partial});
    let digest = sha2::Sha256::digest(def.to_string().as_bytes());
    Some(data_encoding::HEXLOWER.encode(&digest[..16]))
}

/// An index's two tables, open for writing: rows, and row key by document id.
pub(crate) type Tables<'t> = (
    redb::Table<'t, &'static [u8], &'static [u8]>,
    redb::Table<'t, &'static str, &'static [u8]>,
);

/// What a write left of a document, for its index rows.
#[derive(Debug)]
pub(crate) struct Written<'a> {
    /// The winning revision, unless the document is deleted.
    pub(crate) winner: Option<&'a RevId>,
    /// The winner's stored body, when this write made it (else it is read back).
    pub(crate) body: Option<&'a [u8]>,
    /// The document did not exist before: it has no rows to move.
    pub(crate) is_new: bool,
}

/// A JSON index the write path keeps up to date.
#[derive(Debug)]
pub(crate) struct Live {
    sig: String,
    index: Index,
    partial: Option<Selector>,
    /// Left behind by a large batch: the next query catches it up.
    behind: bool,
}

impl Live {
    fn from_def(sig: &str, def: &[u8]) -> Result<Live> {
        let corrupt = || Error::Corrupt(format!("Mango index definition {sig}"));
        let def: Value = serde_json::from_slice(def).map_err(|_| corrupt())?;
        let columns = def
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(corrupt)?
            .iter()
            .map(|c| c.as_str().map(str::to_owned).ok_or_else(corrupt))
            .collect::<Result<Vec<_>>>()?;
        let partial = def.get("partial").filter(|p| !p.is_null()).cloned();
        let selector = partial.as_ref().map(Selector::parse).transpose()?;
        Ok(Live {
            sig: sig.to_owned(),
            index: Index {
                ddoc: None,
                name: String::new(),
                kind: Kind::Json { columns, partial },
            },
            partial: selector,
            behind: false,
        })
    }

    fn row(&self, id: &str, doc: &Value) -> Option<(Vec<u8>, Vec<u8>)> {
        let key = self.index.key_of(id, doc, self.partial.as_ref())?;
        let row_key = crate::view::key::encode(&key, id, 0);
        let mut value = Vec::with_capacity(32 + id.len());
        value.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
        value.extend_from_slice(id.as_bytes());
        let _ = serde_json::to_writer(&mut value, &key);
        Some((row_key, value))
    }
}

/// Splits a row's value into the document id and the key.
fn decode_row(value: &[u8]) -> Result<(String, Value)> {
    let corrupt = || Error::Corrupt("Mango index row".into());
    let len_bytes: [u8; 4] = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let id = value
        .get(4..4 + len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(corrupt)?;
    let key =
        serde_json::from_slice(value.get(4 + len..).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    Ok((id.to_owned(), key))
}

/// A stored body as `_find` sees it (with `_id` and `_rev`).
fn as_indexed(id: &str, rev: &RevId, stored: &[u8]) -> Result<Value> {
    let body: Map<String, Value> = serde_json::from_slice(stored)
        .map_err(|e| Error::Corrupt(format!("stored body of {id}: {e}")))?;
    let mut doc = Map::with_capacity(body.len() + 2);
    doc.insert("_id".into(), Value::String(id.to_owned()));
    doc.insert("_rev".into(), Value::String(rev.to_string()));
    doc.extend(body);
    Ok(Value::Object(doc))
}

impl<'t> Writer<'t> {
    /// The winning revision's body as `_find` sees it (with `_id` and `_rev`).
    fn indexed_body(&self, id: &str, rev: &RevId) -> Result<Option<Value>> {
        let Some(record) = self.load_rev(id, rev)? else {
            return Ok(None);
        };
        if record.deleted {
            return Ok(None);
        }
        as_indexed(id, rev, &record.body).map(Some)
    }

    /// The tables of index `sig`, opened once per transaction.
    fn tables(&mut self, sig: &str) -> Result<&mut Tables<'t>> {
        let at = match self.mango_tables.iter().position(|(s, _)| s == sig) {
            Some(at) => at,
            None => {
                let rows = self
                    .txn
                    .open_table(TableDefinition::<&[u8], &[u8]>::new(&rows_table(sig)))?;
                let ids = self
                    .txn
                    .open_table(TableDefinition::<&str, &[u8]>::new(&ids_table(sig)))?;
                self.mango_tables.push((sig.to_owned(), (rows, ids)));
                self.mango_tables.len() - 1
            }
        };
        match self.mango_tables.get_mut(at) {
            Some((_, tables)) => Ok(tables),
            None => Err(Error::Corrupt("Mango index tables".into())),
        }
    }

    fn live_indexes(&mut self) -> Result<Arc<Vec<Live>>> {
        if let Some(live) = &self.mango {
            return Ok(live.clone());
        }
        let registry = self.txn.open_table(REGISTRY)?;
        let behind = self.txn.open_table(BEHIND)?;
        let mut live = Vec::new();
        for entry in registry.iter()? {
            let (sig, def) = entry?;
            let mut index = Live::from_def(sig.value(), def.value())?;
            index.behind = behind.get(sig.value())?.is_some();
            live.push(index);
        }
        let live = Arc::new(live);
        self.mango = Some(live.clone());
        Ok(live)
    }

    /// Moves `id`'s rows after a write.
    pub(crate) fn index_doc(&mut self, id: &str, written: &Written<'_>) -> Result<()> {
        if id.starts_with("_design/") {
            return self.sync_indexes();
        }
        let live = self.live_indexes()?;
        if live.is_empty() {
            return Ok(());
        }
        if self.mango_defer {
            // Mark every index behind from this document's sequence on, once.
            if live.iter().any(|i| !i.behind) {
                let seq = self.meta.update_seq;
                let mut behind = self.txn.open_table(BEHIND)?;
                for index in live.iter().filter(|i| !i.behind) {
                    behind.insert(index.sig.as_str(), seq)?;
                }
                self.mango = None;
            }
            return Ok(());
        }
        let doc = match (written.winner, written.body) {
            (Some(rev), Some(body)) => Some(as_indexed(id, rev, body)?),
            (Some(rev), None) => self.indexed_body(id, rev)?,
            (None, _) => None,
        };
        for index in live.iter().filter(|i| !i.behind) {
            let row = doc.as_ref().and_then(|d| index.row(id, d));
            let (rows, ids) = self.tables(&index.sig)?;
            let old = if written.is_new {
                None
            } else {
                ids.get(id)?.map(|v| v.value().to_vec())
            };
            if old.as_deref() == row.as_ref().map(|(k, _)| k.as_slice()) {
                continue;
            }
            if let Some(old) = old {
                rows.remove(old.as_slice())?;
            }
            match row {
                Some((key, value)) => {
                    rows.insert(key.as_slice(), value.as_slice())?;
                    ids.insert(id, key.as_slice())?;
                }
                None => {
                    ids.remove(id)?;
                }
            }
        }
        Ok(())
    }

    /// After a design document changed: tables for new definitions (built from every
    /// document), none for definitions no live design document declares.
    fn sync_indexes(&mut self) -> Result<()> {
        // Tables are deleted and built below: none may stay open.
        self.mango_tables.clear();
        let mut ddocs = Vec::new();
        for entry in self.docs.range::<&str>("_design/".."_design0")? {
            let (key, value) = entry?;
            if !DocRecord::peek_winner_deleted(value.value()) {
                ddocs.push((key.value().to_owned(), DocRecord::decode(value.value())?));
            }
        }
        let mut bodies = Vec::new();
        for (id, rec) in ddocs {
            let Some(winner) = rec.tree.winner().and_then(|w| rec.tree.node(w)) else {
                continue;
            };
            if let Some(Value::Object(body)) = self.indexed_body(&id, &winner.rev)? {
                bodies.push((id, body));
            }
        }
        let mut wanted = std::collections::BTreeMap::new();
        for index in super::index::from_ddocs(&bodies) {
            if let (Some(sig), Kind::Json { columns, partial }) = (signature(&index), &index.kind) {
                wanted.insert(
                    sig,
                    json!({"fields": columns, "partial": partial}).to_string(),
                );
            }
        }
        let mut registry = self.txn.open_table(REGISTRY)?;
        let mut present = Vec::new();
        for entry in registry.iter()? {
            present.push(entry?.0.value().to_owned());
        }
        let mut behind = self.txn.open_table(BEHIND)?;
        for sig in &present {
            if !wanted.contains_key(sig) {
                registry.remove(sig.as_str())?;
                behind.remove(sig.as_str())?;
                self.txn
                    .delete_table(TableDefinition::<&[u8], &[u8]>::new(&rows_table(sig)))?;
                self.txn
                    .delete_table(TableDefinition::<&str, &[u8]>::new(&ids_table(sig)))?;
            }
        }
        let mut added = Vec::new();
        for (sig, def) in &wanted {
            if !present.contains(sig) {
                registry.insert(sig.as_str(), def.as_bytes())?;
                added.push(Live::from_def(sig, def.as_bytes())?);
            }
        }
        drop(registry);
        drop(behind);
        self.mango = None;
        if !added.is_empty() {
            self.build(&added)?;
        }
        Ok(())
    }

    /// Fills new indexes' tables from every live document.
    fn build(&mut self, added: &[Live]) -> Result<()> {
        let mut winners = Vec::new();
        for entry in self.docs.iter()? {
            let (key, value) = entry?;
            let id = key.value();
            if id.starts_with("_design/") || DocRecord::peek_winner_deleted(value.value()) {
                continue;
            }
            let rec = DocRecord::decode(value.value())?;
            if let Some(node) = rec.tree.winner().and_then(|w| rec.tree.node(w)) {
                winners.push((id.to_owned(), node.rev.clone()));
            }
        }
        for index in added {
            let mut rows =
                self.txn
                    .open_table(TableDefinition::<&[u8], &[u8]>::new(&rows_table(
                        &index.sig,
                    )))?;
            let mut ids = self
                .txn
                .open_table(TableDefinition::<&str, &[u8]>::new(&ids_table(&index.sig)))?;
            for (id, rev) in &winners {
                let Some(doc) = self.indexed_body(id, rev)? else {
                    continue;
                };
                if let Some((key, value)) = index.row(id, &doc) {
                    rows.insert(key.as_slice(), value.as_slice())?;
                    ids.insert(id.as_str(), key.as_slice())?;
                }
            }
        }
        Ok(())
    }
}

impl Writer<'_> {
    /// Brings the indexes a large batch left behind up to date: every document written since,
    /// its old row removed and its new one inserted, in key order.
    fn catch_up_indexes(&mut self) -> Result<()> {
        let behind: Vec<(String, u64)> = {
            let table = self.txn.open_table(BEHIND)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (sig, seq) = entry?;
                out.push((sig.value().to_owned(), seq.value()));
            }
            out
        };
        let Some(from) = behind.iter().map(|(_, seq)| *seq).min() else {
            return Ok(());
        };
        let mut changed = Vec::new();
        for entry in self.seqs.range(from..)? {
            changed.push(entry?.1.value().to_owned());
        }
        // In chunks, so memory stays bounded however many documents a batch wrote; each chunk
        // is applied in key order.
        let live = self.live_indexes()?;
        for chunk in changed.chunks(CATCH_UP_CHUNK) {
            let mut docs = Vec::with_capacity(chunk.len());
            for id in chunk {
                if id.starts_with("_design/") {
                    continue;
                }
                let winner = self
                    .load_doc(id)?
                    .filter(|rec| !rec.winner_deleted)
                    .and_then(|rec| {
                        rec.tree
                            .winner()
                            .and_then(|w| rec.tree.node(w))
                            .map(|n| n.rev.clone())
                    });
                let doc = match winner {
                    Some(rev) => self.indexed_body(id, &rev)?,
                    None => None,
                };
                docs.push((id.clone(), doc));
            }
            for index in live.iter().filter(|i| i.behind) {
                let (rows, ids) = self.tables(&index.sig)?;
                let mut removes = Vec::new();
                let mut inserts = Vec::new();
                for (id, doc) in &docs {
                    let row = doc.as_ref().and_then(|d| index.row(id, d));
                    let old = ids.get(id.as_str())?.map(|v| v.value().to_vec());
                    if old.as_deref() == row.as_ref().map(|(k, _)| k.as_slice()) {
                        continue;
                    }
                    match &row {
                        Some((key, _)) => {
                            ids.insert(id.as_str(), key.as_slice())?;
                        }
                        None => {
                            ids.remove(id.as_str())?;
                        }
                    }
                    removes.extend(old);
                    inserts.extend(row);
                }
                // In key order: each page of the index is rewritten once.
                removes.sort_unstable();
                inserts.sort_unstable();
                for key in removes {
                    rows.remove(key.as_slice())?;
                }
                for (key, value) in inserts {
                    rows.insert(key.as_slice(), value.as_slice())?;
                }
            }
        }
        let mut table = self.txn.open_table(BEHIND)?;
        for (sig, _) in &behind {
            table.remove(sig.as_str())?;
        }
        self.mango = None;
        Ok(())
    }
}

/// Updates the indexes a large batch left behind, so the next query sees every acknowledged
/// write. Reads first: nothing is written when every index is current.
pub(crate) fn catch_up(db: &crate::store::Database) -> Result<()> {
    let behind = db.read(|r| match r.txn.open_table(BEHIND) {
        Ok(table) => Ok(!table.is_empty()?),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.into()),
    })?;
    if behind {
        db.write(|w| w.catch_up_indexes())?;
    }
    Ok(())
}

/// Rows read from the index tables (and `_all_docs` from the documents table) of one snapshot,
/// lazily, so a query with a limit stops early.
pub(crate) struct Stored<'r> {
    pub(crate) reader: &'r Reader,
    pub(crate) conflicts: bool,
    pub(crate) filter: Option<&'r dyn DocFilter>,
}

impl Stored<'_> {
    /// Whether `index` has its tables (a database written before indexes were kept in tables
    /// has none until a design document changes; its queries scan).
    pub(crate) fn has(&self, index: &Index) -> Result<bool> {
        let Some(sig) = signature(index) else {
            return Ok(true);
        };
        let registry = match self.reader.txn.open_table(REGISTRY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        Ok(registry.get(sig.as_str())?.is_some())
    }

    /// The visible winning revision of `id`, as `_find` returns it.
    fn doc(&self, id: &str) -> Result<Option<Value>> {
        let Some(rec) = self.reader.doc_record(id)? else {
            return Ok(None);
        };
        let Some(w) = rec.tree.winner() else {
            return Ok(None);
        };
        if rec.winner_deleted {
            return Ok(None);
        }
        let opts = GetOptions::included(self.conflicts, false);
        let Some(doc) = self.reader.render(id, &rec, w, &opts)? else {
            return Ok(None);
        };
        if self.filter.is_some_and(|f| !f.allows(id, &doc.json)) {
            return Ok(None);
        }
        Ok(Some(Value::Object(doc.json)))
    }
}

/// The byte range of rows whose first column is within `range`.
fn byte_range(range: Option<&Range>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let Some(range) = range else {
        return (Bound::Unbounded, Bound::Unbounded);
    };
    // A row's key is an array: the rows whose first column equals `v` are those starting with
    // the encoding of `[v]` without its closing byte, and `FF` sorts above every continuation.
    let prefix = |v: &Value| {
        let mut out = crate::view::key::prefix(&Value::Array(vec![v.clone()]));
        out.pop();
        out
    };
    let above = |v: &Value| {
        let mut out = prefix(v);
        out.push(0xFF);
        out
    };
    let low = match &range.low {
        None => Bound::Unbounded,
        Some((v, true)) => Bound::Included(prefix(v)),
        Some((v, false)) => Bound::Excluded(above(v)),
    };
    let high = match &range.high {
        None => Bound::Unbounded,
        Some((v, true)) => Bound::Excluded(above(v)),
        Some((v, false)) => Bound::Excluded(prefix(v)),
    };
    (low, high)
}

impl RowSource for Stored<'_> {
    fn rows<'a>(
        &'a self,
        index: &Index,
        first: Option<&Range>,
        desc: bool,
    ) -> Result<Box<dyn Iterator<Item = Result<Row>> + 'a>> {
        let Some(sig) = signature(index) else {
            // `_all_docs`: the documents table in id order.
            let iter = self.reader.docs.range::<&str>(..)?;
            let iter: Box<dyn Iterator<Item = _>> = if desc {
                Box::new(iter.rev())
            } else {
                Box::new(iter)
            };
            return Ok(Box::new(iter.filter_map(move |entry| {
                let id = match entry {
                    Ok((k, v)) => {
                        if DocRecord::peek_winner_deleted(v.value()) {
                            return None;
                        }
                        k.value().to_owned()
                    }
                    Err(e) => return Some(Err(e.into())),
                };
                if id.starts_with("_design/") {
                    return None;
                }
                match self.doc(&id) {
                    Ok(Some(doc)) => Some(Ok(Row {
                        key: Value::String(id.clone()),
                        id,
                        doc,
                    })),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                }
            })));
        };
        let table = self
            .reader
            .txn
            .open_table(TableDefinition::<&[u8], &[u8]>::new(&rows_table(&sig)))?;
        let (low, high) = byte_range(first);
        let bounds = (
            low.as_ref().map(Vec::as_slice),
            high.as_ref().map(Vec::as_slice),
        );
        let iter = table.range::<&[u8]>(bounds)?;
        let iter: Box<dyn Iterator<Item = _>> = if desc {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        Ok(Box::new(iter.filter_map(move |entry| {
            let (id, key) = match entry {
                Ok((_, v)) => match decode_row(v.value()) {
                    Ok(row) => row,
                    Err(e) => return Some(Err(e)),
                },
                Err(e) => return Some(Err(e.into())),
            };
            match self.doc(&id) {
                Ok(Some(doc)) => Some(Ok(Row { key, id, doc })),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        })))
    }
}
