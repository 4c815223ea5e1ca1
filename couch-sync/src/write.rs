//! Writing documents: CouchDB's update rules (`new_edits` true and false), attachments,
//! `_local` documents, and compaction's clean-up.

use std::collections::HashSet;

use redb::{ReadableTable, ReadableTableMetadata};
use serde_json::{Map, Value};

use crate::attachment::PreparedAttachment;
use crate::doc::{AttachmentKind, DocUpdate, IdKind, check_id};
use crate::error::{Error, Result};
use crate::hlc::{ConflictPolicy, HLC_FIELD, Hlc};
use crate::records::{AttRecord, DocRecord, INLINE_RECORD_BYTES, RevRecord};
use crate::rev::RevId;
use crate::revtree::{Merge, RevTree};
use crate::store::{Database, Writer};

/// The outcome of one document in a bulk write.
#[derive(Debug)]
pub struct BulkResult {
    /// The document id (if one could be determined).
    pub id: Option<String>,
    /// The new revision, or the error for this document.
    pub result: Result<RevId>,
}

/// Who writes a document, as design documents' `validate_doc_update` functions see it
/// (feature `js`; without it no function runs).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WriteContext {
    /// `userCtx`: `{"db": name, "name": user or null, "roles": [...]}`, as CouchDB passes it.
    pub user_ctx: Value,
    /// `secObj`: the database's security object (`{}` by default: this crate keeps none).
    pub sec_obj: Value,
}

impl WriteContext {
    /// CouchDB's context of an administrator in "admin party" (no users configured):
    /// `{"db": db, "name": null, "roles": ["_admin"]}`. The context of every write made
    /// through the functions that take none.
    pub fn admin(db: &str) -> WriteContext {
        WriteContext::new(serde_json::json!({"db": db, "name": null, "roles": ["_admin"]}))
    }

    /// A context with this `userCtx` and an empty `secObj`.
    pub fn new(user_ctx: Value) -> WriteContext {
        WriteContext {
            user_ctx,
            sec_obj: Value::Object(Map::new()),
        }
    }

    /// With this security object.
    pub fn with_sec_obj(mut self, sec_obj: Value) -> WriteContext {
        self.sec_obj = sec_obj;
        self
    }
}

/// A database's compiled `validate_doc_update` functions, kept across transactions and
/// recompiled when its design documents change.
#[derive(Default)]
pub(crate) struct DdocCache {
    #[cfg(feature = "js")]
    validators: std::sync::Mutex<Option<crate::js::ddoc::Validators>>,
}

fn new_doc_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Corrupt(format!("random source: {e}")))?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}

impl Writer<'_> {
    pub(crate) fn load_doc(&self, id: &str) -> Result<Option<DocRecord>> {
        match self.docs.get(id)? {
            Some(v) => Ok(Some(DocRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// A revision's record: in `revs`, or inline in the document record (the winner's).
    pub(crate) fn load_rev(&self, id: &str, rev: &RevId) -> Result<Option<RevRecord>> {
        let rev_text = rev.to_string();
        if let Some(v) = self.revs.get((id, rev_text.as_str()))? {
            return Ok(Some(RevRecord::decode(v.value())?));
        }
        match self.load_doc(id)? {
            Some(doc) => doc.inline_record(rev),
            None => Ok(None),
        }
    }

    fn store_content(&mut self, content: &mut PreparedAttachment) -> Result<()> {
        let key = content.key;
        if self.chunks.get((&key, 0u32))?.is_some() {
            return Ok(()); // already stored: deduplicated
        }
        let chunks = &mut self.chunks;
        let mut added = 0u64;
        content.for_each_chunk(|index, bytes| {
            chunks.insert((&key, index), bytes)?;
            added += bytes.len() as u64 + 36;
            Ok(())
        })?;
        self.meta.live_bytes += added;
        Ok(())
    }

    /// Keeps `live_bytes` (what `sizes.active` reports) in step with a table write: `key` bytes
    /// of key, `new` of value written, `old` of value replaced or removed.
    fn account(&mut self, key: usize, new: Option<usize>, old: Option<usize>) {
        let plus = new.map_or(0, |n| (n + key) as u64);
        let minus = old.map_or(0, |o| (o + key) as u64);
        self.meta.live_bytes = (self.meta.live_bytes + plus).saturating_sub(minus);
    }

    /// Turns the update's attachments into records: stubs resolved against `sources` (revisions
    /// to look in, nearest first), new content stored. New content of a new edit gets `new_pos`
    /// as its `revpos`; replicated content keeps the sender's `revpos` (0 if none), as CouchDB.
    fn resolve_attachments(
        &mut self,
        id: &str,
        update: &mut DocUpdate,
        new_pos: Option<u64>,
        sources: &[RevId],
    ) -> Result<Vec<AttRecord>> {
        let Some(inputs) = update.attachments.take() else {
            return Ok(Vec::new());
        };
        let mut source_records: Option<Vec<RevRecord>> = None;
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            match input.kind {
                AttachmentKind::Stub { digest } => {
                    if source_records.is_none() {
                        let mut recs = Vec::new();
                        for rev in sources {
                            if let Some(rec) = self.load_rev(id, rev)? {
                                recs.push(rec);
                            }
                        }
                        source_records = Some(recs);
                    }
                    let found = source_records.iter().flatten().find_map(|rec| {
                        rec.attachments.iter().find(|a| {
                            a.name == input.name && digest.as_ref().is_none_or(|d| *d == a.digest)
                        })
                    });
                    let found = match found {
                        Some(a) => a.clone(),
                        None => self
                            .find_by_digest(id, &input.name, digest.as_deref())?
                            .ok_or_else(|| {
                                Error::missing_stub(format!(
                                    "Invalid attachment stub in {id} for {}",
                                    input.name
                                ))
                            })?,
                    };
                    out.push(found);
                }
                AttachmentKind::Data {
                    mut content,
                    revpos,
                } => {
                    self.store_content(&mut content)?;
                    out.push(AttRecord {
                        name: input.name,
                        content_type: content.content_type.clone(),
                        length: content.length,
                        stored_len: content.stored_len,
                        revpos: new_pos.unwrap_or(revpos.unwrap_or(0)),
                        digest: content.digest(),
                        gzip: content.encoding == crate::attachment::Encoding::Gzip,
                        key: data_encoding::HEXLOWER.encode(&content.key),
                    });
                }
                AttachmentKind::Follows { .. } => {
                    return Err(Error::bad_request(format!(
                        "Attachment {:?} says it follows, but no multipart part carried it",
                        input.name
                    )));
                }
            }
        }
        // Attachments keep the order the client gave them, as in CouchDB (it is part of the
        // revision id); a name given twice keeps its last content.
        let mut seen = HashSet::new();
        let mut deduped: Vec<AttRecord> = out
            .into_iter()
            .rev()
            .filter(|a| seen.insert(a.name.clone()))
            .collect();
        deduped.reverse();
        let out = deduped;
        Ok(out)
    }

    /// Any stored revision of `id` with attachment `name` (and `digest`, if given).
    fn find_by_digest(
        &self,
        id: &str,
        name: &str,
        digest: Option<&str>,
    ) -> Result<Option<AttRecord>> {
        let Some(digest) = digest else {
            return Ok(None);
        };
        for entry in self.revs.range((id, "")..)? {
            let (key, value) = entry?;
            if key.value().0 != id {
                break;
            }
            let rec = RevRecord::decode(value.value())?;
            if let Some(a) = rec
                .attachments
                .into_iter()
                .find(|a| a.name == name && a.digest == digest)
            {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    /// Adds a new revision's record; `finish_doc` places it.
    fn put_rev(&mut self, rev: &RevId, record: RevRecord) {
        self.meta.external_size +=
            record.body.len() as u64 + record.attachments.iter().map(|a| a.length).sum::<u64>();
        self.staged.push((rev.clone(), record));
    }

    /// Writes a revision's record to `revs`.
    fn store_rev(&mut self, id: &str, rev: &RevId, bytes: &[u8]) -> Result<()> {
        let rev_text = rev.to_string();
        let old = self
            .revs
            .insert((id, rev_text.as_str()), bytes)?
            .map(|o| o.value().len());
        self.account(rev_key_len(id, &rev_text), Some(bytes.len()), old);
        Ok(())
    }

    fn remove_rev(&mut self, id: &str, rev: &RevId) -> Result<()> {
        let rev_text = rev.to_string();
        let removed = self
            .revs
            .remove((id, rev_text.as_str()))?
            .map(|old| old.value().to_vec());
        if let Some(old) = removed {
            self.account(rev_key_len(id, &rev_text), None, Some(old.len()));
            if let Ok(rec) = RevRecord::decode(&old) {
                let size =
                    rec.body.len() as u64 + rec.attachments.iter().map(|a| a.length).sum::<u64>();
                self.meta.external_size = self.meta.external_size.saturating_sub(size);
            }
        }
        Ok(())
    }

    /// Stems the tree, places the staged revision records, stores the tree with a new sequence,
    /// and updates the counters.
    fn finish_doc(&mut self, id: &str, old: Option<&DocRecord>, mut tree: RevTree) -> Result<()> {
        let limit = usize::try_from(self.meta.revs_limit).unwrap_or(usize::MAX);
        for removed in tree.stem(limit) {
            self.remove_rev(id, &removed)?;
        }
        let winner = tree.winner().and_then(|w| tree.node(w));
        let winner_deleted = winner.is_none_or(|n| n.deleted);
        let winner_rev = winner.map(|n| n.rev.clone());
        // The winner's record stays (or goes) inline when it is small and has no attachments;
        // every other record lives in `revs`.
        let mut inline = None;
        if let Some((bytes, old_winner)) = old.and_then(|o| {
            let rev = o
                .tree
                .winner()
                .and_then(|w| o.tree.node(w))
                .map(|n| n.rev.clone());
            o.inline.as_ref().zip(rev)
        }) {
            if winner_rev.as_ref() == Some(&old_winner) {
                inline = Some(bytes.clone());
            } else if tree.find(&old_winner).is_some() {
                self.store_rev(id, &old_winner, bytes)?;
            }
        }
        // The new winner's body, if this write made it, for the Mango indexes.
        let mut winner_body = None;
        for (rev, record) in std::mem::take(&mut self.staged) {
            if winner_rev.as_ref() == Some(&rev) && !record.deleted {
                winner_body = Some(record.body.clone());
            }
            let bytes = record.encode();
            let fits = record.attachments.is_empty() && bytes.len() <= INLINE_RECORD_BYTES;
            if winner_rev.as_ref() == Some(&rev) && fits {
                inline = Some(bytes);
            } else {
                self.store_rev(id, &rev, &bytes)?;
            }
        }
        let seq = self.meta.update_seq + 1;
        self.meta.update_seq = seq;
        if let Some(old) = old {
            if self.seqs.remove(old.seq)?.is_some() {
                self.account(8 + id.len(), None, Some(0));
            }
            if old.winner_deleted {
                self.meta.doc_del_count = self.meta.doc_del_count.saturating_sub(1);
            } else {
                self.meta.doc_count = self.meta.doc_count.saturating_sub(1);
            }
        }
        if winner_deleted {
            self.meta.doc_del_count += 1;
        } else {
            self.meta.doc_count += 1;
        }
        self.seqs.insert(seq, id)?;
        self.account(8 + id.len(), Some(0), None);
        let record = DocRecord {
            seq,
            winner_deleted,
            tree,
            inline,
        };
        let encoded = record.encode();
        let old = self
            .docs
            .insert(id, encoded.as_slice())?
            .map(|o| o.value().len());
        self.account(id.len(), Some(encoded.len()), old);
        // Mango indexes follow in the same transaction (a design document re-reads them).
        let live_winner = (!winner_deleted).then_some(winner_rev).flatten();
        let written = crate::find::stored::Written {
            winner: live_winner.as_ref(),
            body: winner_body.as_deref(),
            is_new: old.is_none(),
        };
        self.index_doc(id, &written)
    }

    /// The language of a live design document with a `validate_doc_update` member, if any.
    #[cfg(not(feature = "js"))]
    fn validator_language(&mut self) -> Result<Option<String>> {
        if let Some(found) = &self.validator {
            return Ok(found.clone());
        }
        let mut ddocs = Vec::new();
        for entry in self.docs.range::<&str>("_design/".."_design0")? {
            let (key, value) = entry?;
            if DocRecord::peek_winner_deleted(value.value()) {
                continue;
            }
            ddocs.push((key.value().to_owned(), DocRecord::decode(value.value())?));
        }
        let mut found = None;
        for (id, rec) in ddocs {
            let Some(winner) = rec.tree.winner().and_then(|w| rec.tree.node(w)) else {
                continue;
            };
            let Some(stored) = self.load_rev(&id, &winner.rev)? else {
                continue;
            };
            let body: Map<String, Value> = serde_json::from_slice(&stored.body)
                .map_err(|e| Error::Corrupt(format!("stored body of {id}: {e}")))?;
            if body.contains_key("validate_doc_update") {
                let language = body
                    .get("language")
                    .and_then(Value::as_str)
                    .unwrap_or("javascript");
                found = Some(language.to_owned());
                break;
            }
        }
        self.validator = Some(found.clone());
        Ok(found)
    }

    /// Applies one document update. `id` has been checked and is not `_local/`.
    ///
    /// Without the `js` feature, a database with a `validate_doc_update` function refuses
    /// every write of an ordinary document as Apache CouchDB does when it has no query server
    /// for the function's language (500 `unknown_query_language`): a validation that cannot
    /// run must not let documents through. With it, every live design document's function
    /// runs on every write of an ordinary document (interactive or replicated) as CouchDB runs
    /// them (`couch_db:validate_doc_update`); design documents are not validated by them.
    pub(crate) fn update_doc(
        &mut self,
        id: &str,
        mut update: DocUpdate,
        new_edits: bool,
    ) -> Result<RevId> {
        self.staged.clear();
        if id.starts_with("_design/") {
            self.validator = None;
        } else {
            #[cfg(not(feature = "js"))]
            if let Some(language) = self.validator_language()? {
                return Err(Error::couch(500, "unknown_query_language", language));
            }
        }
        let existing = self.load_doc(id)?;
        let mut tree = existing
            .as_ref()
            .map(|d| d.tree.clone())
            .unwrap_or_default();
        let lww =
            ConflictPolicy::from_code(self.meta.conflict_policy) == ConflictPolicy::LastWriterWins;

        if new_edits {
            let parent = match &update.rev {
                Some(rev) => match tree.find(rev) {
                    Some(i) if tree.is_leaf(i) => Some(i),
                    _ => return Err(Error::conflict()),
                },
                None => match tree.winner() {
                    None => None,
                    Some(w) if tree.node(w).is_some_and(|n| n.deleted) => Some(w),
                    Some(_) => return Err(Error::conflict()),
                },
            };
            let parent_rev = parent.and_then(|p| tree.node(p)).map(|n| n.rev.clone());
            #[cfg(feature = "js")]
            if !id.starts_with("_design/") && self.has_validators()? {
                // CouchDB's `oldDoc`: the revision edited (null for a new document, also one
                // that replaces a deletion without naming it); `newDoc` carries the `_rev`
                // edited, the new revision is made after validation.
                let old = match (&update.rev, parent) {
                    (Some(_), Some(p)) => self.rev_doc(id, &tree, p)?,
                    _ => None,
                };
                let revisions = update
                    .rev
                    .as_ref()
                    .map(|r| (r.pos(), vec![r.hash().to_owned()]));
                let new_pos = parent_rev.as_ref().map_or(1, |r| r.pos() + 1);
                let new_doc = new_doc_json(
                    id,
                    &update,
                    update.rev.as_ref(),
                    revisions,
                    old.as_ref().map(|(_, r)| r),
                    new_pos,
                );
                self.run_validators(&new_doc, old.as_ref().map(|(v, _)| v))?;
            }
            if lww {
                self.stamp(id, &mut update, parent_rev.as_ref())?;
            }
            let new_pos = parent_rev.as_ref().map_or(1, |r| r.pos() + 1);
            let sources: Vec<RevId> = parent_rev.iter().cloned().collect();
            let attachments = self.resolve_attachments(id, &mut update, Some(new_pos), &sources)?;
            // CouchDB's revision id for this edit: the same edit gets the same id there and here.
            let att_keys: Vec<(&str, &str, [u8; 16])> = attachments
                .iter()
                .map(|a| (a.name.as_str(), a.content_type.as_str(), a.md5()))
                .collect();
            let rev = RevId::couchdb(parent_rev.as_ref(), update.deleted, &update.body, &att_keys);
            if tree.find(&rev).is_some() {
                // The identical edit is already there (a retried request): nothing to do.
                return Ok(rev);
            }
            tree.add_child(parent, rev.clone(), update.deleted);
            let record = RevRecord {
                deleted: update.deleted,
                body: canonical_to_stored(&update.body),
                attachments,
            };
            self.put_rev(&rev, record);
            self.finish_doc(id, existing.as_ref(), tree)?;
            Ok(rev)
        } else {
            // `_revisions`, when given, names the path (CouchDB ignores `_rev` then).
            let path = match (&update.revisions, &update.rev) {
                (Some(revisions), _) if !revisions.ids.is_empty() => revisions.path()?,
                (_, Some(rev)) => vec![rev.clone()],
                _ => {
                    return Err(Error::bad_request(
                        "When `new_edits: false`, the document needs `_rev` or `_revisions` specified",
                    ));
                }
            };
            if path.iter().any(|r| r.pos() == 0) {
                return Err(Error::bad_rev("0-"));
            }
            let Some(leaf_rev) = path.first().cloned() else {
                return Err(Error::bad_request("empty _revisions"));
            };
            // Stubs refer to the nearest ancestor we hold.
            let sources: Vec<RevId> = path.iter().skip(1).cloned().collect();
            if tree.find(&leaf_rev).is_some() {
                return Ok(leaf_rev);
            }
            #[cfg(feature = "js")]
            if !id.starts_with("_design/") && self.has_validators()? {
                // CouchDB's `oldDoc` for a replicated revision: the nearest ancestor on its
                // path whose body is stored (`make_first_doc_on_disk`), else null.
                let mut old = None;
                for rev in &sources {
                    if let Some(index) = tree.find(rev) {
                        if let Some(found) = self.rev_doc(id, &tree, index)? {
                            old = Some(found);
                            break;
                        }
                    }
                }
                let revisions = Some((
                    leaf_rev.pos(),
                    path.iter().map(|r| r.hash().to_owned()).collect(),
                ));
                let new_doc = new_doc_json(
                    id,
                    &update,
                    Some(&leaf_rev),
                    revisions,
                    old.as_ref().map(|(_, r)| r),
                    leaf_rev.pos(),
                );
                self.run_validators(&new_doc, old.as_ref().map(|(v, _)| v))?;
            }
            let attachments = self.resolve_attachments(id, &mut update, None, &sources)?;
            match tree.merge_path(&path, update.deleted) {
                Merge::AlreadyPresent => return Ok(leaf_rev),
                Merge::Added { .. } => {}
            }
            let record = RevRecord {
                deleted: update.deleted,
                body: canonical_to_stored(&update.body),
                attachments,
            };
            self.put_rev(&leaf_rev, record);
            if lww {
                if let Some(seen) = crate::hlc::stamp_of(&update.body) {
                    self.observe(seen);
                }
                self.resolve_lww(id, &mut tree)?;
            }
            self.finish_doc(id, existing.as_ref(), tree)?;
            Ok(leaf_rev)
        }
    }
}

/// `_revisions` ids CouchDB passes to query-server functions at most
/// (`query_server_config/revs_limit`).
#[cfg(feature = "js")]
const JS_REVS_LIMIT: usize = 20;

#[cfg(feature = "js")]
impl Writer<'_> {
    /// Whether a live design document has a `validate_doc_update`; brings the database's
    /// compiled functions up to date with its design documents (once per transaction, again
    /// after a design document is written in it).
    fn has_validators(&mut self) -> Result<bool> {
        if let Some(found) = &self.validator {
            return Ok(found.is_some());
        }
        let mut live = Vec::new();
        for entry in self.docs.range::<&str>("_design/".."_design0")? {
            let (key, value) = entry?;
            if DocRecord::peek_winner_deleted(value.value()) {
                continue;
            }
            live.push((key.value().to_owned(), DocRecord::decode(value.value())?));
        }
        let key: Vec<(String, String)> = live
            .iter()
            .filter_map(|(id, rec)| {
                let winner = rec.tree.winner().and_then(|w| rec.tree.node(w))?;
                Some((id.clone(), winner.rev.to_string()))
            })
            .collect();
        let cache = self.ddoc_cache;
        let mut guard = cache.validators.lock().unwrap_or_else(|p| p.into_inner());
        if !guard.as_ref().is_some_and(|v| v.matches(&key)) {
            let mut ddocs = Vec::new();
            for (id, rec) in &live {
                let Some(winner) = rec.tree.winner().and_then(|w| rec.tree.node(w)) else {
                    continue;
                };
                let Some(stored) = self.load_rev(id, &winner.rev)? else {
                    continue;
                };
                let body: Map<String, Value> = serde_json::from_slice(&stored.body)
                    .map_err(|e| Error::Corrupt(format!("stored body of {id}: {e}")))?;
                if body.contains_key("validate_doc_update") {
                    ddocs.push((id.clone(), body));
                }
            }
            *guard = Some(crate::js::ddoc::Validators::compile(key, ddocs));
        }
        let any = guard.as_ref().is_some_and(|v| !v.is_empty());
        self.validator = Some(any.then(|| "javascript".to_owned()));
        Ok(any)
    }

    /// Runs the validation functions on `new_doc`.
    fn run_validators(&mut self, new_doc: &Value, old_doc: Option<&Value>) -> Result<()> {
        let context = match &self.write_ctx {
            Some(c) => c.clone(),
            None => WriteContext::admin(""),
        };
        let cache = self.ddoc_cache;
        let mut guard = cache.validators.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(validators) => {
                validators.check(new_doc, old_doc, &context.user_ctx, &context.sec_obj)
            }
            None => Ok(()),
        }
    }

    /// A stored revision as CouchDB hands it to a query server (`json_doc`): `_id`, `_rev`,
    /// the body, `_deleted`, `_revisions` (at most 20 ids), attachment stubs. `None` when its
    /// body is not stored.
    fn rev_doc(
        &self,
        id: &str,
        tree: &RevTree,
        index: usize,
    ) -> Result<Option<(Value, RevRecord)>> {
        let Some(node) = tree.node(index) else {
            return Ok(None);
        };
        let Some(record) = self.load_rev(id, &node.rev)? else {
            return Ok(None);
        };
        let body: Map<String, Value> = serde_json::from_slice(&record.body)
            .map_err(|e| Error::Corrupt(format!("stored body of {id}: {e}")))?;
        let mut json = Map::with_capacity(body.len() + 5);
        json.insert("_id".into(), Value::String(id.to_owned()));
        json.insert("_rev".into(), Value::String(node.rev.to_string()));
        json.extend(body);
        if node.deleted {
            json.insert("_deleted".into(), Value::Bool(true));
        }
        let (start, ids) = tree.revisions(index);
        json.insert(
            "_revisions".into(),
            serde_json::json!({"start": start, "ids": ids.iter().take(JS_REVS_LIMIT).collect::<Vec<_>>()}),
        );
        if !record.attachments.is_empty() {
            let stubs: Map<String, Value> = record
                .attachments
                .iter()
                .map(|a| {
                    (
                        a.name.clone(),
                        serde_json::json!({
                            "content_type": a.content_type,
                            "revpos": a.revpos,
                            "digest": a.digest,
                            "length": a.length,
                            "stub": true,
                        }),
                    )
                })
                .collect();
            json.insert("_attachments".into(), Value::Object(stubs));
        }
        Ok(Some((Value::Object(json), record)))
    }
}

/// The document being written as `validate_doc_update` sees it (CouchDB's
/// `couch_doc:to_json_obj(Doc, [revs])` before the new revision is made): `_id`, `_rev` and
/// `_revisions` when the update names a revision, the body, `_deleted`, attachments as stubs
/// (a stub's metadata from `base`, the revision it keeps them from).
#[cfg(feature = "js")]
fn new_doc_json(
    id: &str,
    update: &DocUpdate,
    rev: Option<&RevId>,
    revisions: Option<(u64, Vec<String>)>,
    base: Option<&RevRecord>,
    new_pos: u64,
) -> Value {
    let mut json = Map::with_capacity(update.body.len() + 5);
    json.insert("_id".into(), Value::String(id.to_owned()));
    if let Some(rev) = rev {
        json.insert("_rev".into(), Value::String(rev.to_string()));
    }
    json.extend(update.body.iter().map(|(k, v)| (k.clone(), v.clone())));
    if update.deleted {
        json.insert("_deleted".into(), Value::Bool(true));
    }
    if let Some((start, ids)) = revisions {
        json.insert(
            "_revisions".into(),
            serde_json::json!({"start": start, "ids": ids.into_iter().take(JS_REVS_LIMIT).collect::<Vec<_>>()}),
        );
    }
    if let Some(atts) = &update.attachments {
        let mut stubs = Map::new();
        for att in atts {
            let stub = match &att.kind {
                AttachmentKind::Data { content, revpos } => serde_json::json!({
                    "content_type": content.content_type,
                    "revpos": revpos.unwrap_or(new_pos),
                    "digest": content.digest(),
                    "length": content.length,
                    "stub": true,
                }),
                AttachmentKind::Stub { digest } => {
                    match base.and_then(|b| b.attachments.iter().find(|a| a.name == att.name)) {
                        Some(a) => serde_json::json!({
                            "content_type": a.content_type,
                            "revpos": a.revpos,
                            "digest": a.digest,
                            "length": a.length,
                            "stub": true,
                        }),
                        None => serde_json::json!({"digest": digest, "stub": true}),
                    }
                }
                AttachmentKind::Follows {
                    content_type,
                    length,
                    revpos,
                    digest,
                    ..
                } => serde_json::json!({
                    "content_type": content_type,
                    "revpos": revpos.unwrap_or(new_pos),
                    "digest": digest,
                    "length": length,
                    "stub": true,
                }),
            };
            stubs.insert(att.name.clone(), stub);
        }
        json.insert("_attachments".into(), Value::Object(stubs));
    }
    Value::Object(json)
}

impl Writer<'_> {
    fn last_hlc(&self) -> Hlc {
        Hlc {
            millis: self.meta.hlc_millis,
            counter: u16::try_from(self.meta.hlc_counter).unwrap_or(u16::MAX),
            node: self.node,
        }
    }

    /// Advances this database's clock past a stamp seen from another replica.
    fn observe(&mut self, seen: Hlc) {
        let last = self.last_hlc();
        if (seen.millis, seen.counter) > (last.millis, last.counter) {
            self.meta.hlc_millis = seen.millis;
            self.meta.hlc_counter = u64::from(seen.counter);
        }
    }

    /// Stamps a local edit with a new hybrid-logical-clock value (last-writer-wins databases).
    fn stamp(&mut self, id: &str, update: &mut DocUpdate, parent: Option<&RevId>) -> Result<()> {
        let parent_stamp = match parent {
            Some(rev) => self
                .load_rev(id, rev)?
                .and_then(|rec| serde_json::from_slice::<Map<String, Value>>(&rec.body).ok())
                .and_then(|body| crate::hlc::stamp_of(&body)),
            None => None,
        };
        let next = Hlc::tick(
            self.clock.now_millis(),
            self.last_hlc(),
            parent_stamp,
            self.node,
        );
        self.meta.hlc_millis = next.millis;
        self.meta.hlc_counter = u64::from(next.counter);
        update
            .body
            .insert(HLC_FIELD.to_owned(), Value::String(next.to_string()));
        Ok(())
    }

    /// Last-writer-wins: the leaf with the greatest stamp wins — a live one, or a stamped
    /// deletion, which then deletes the document — with CouchDB's ranking breaking ties and
    /// unstamped leaves ranking last. Every other live leaf gets a tombstone whose revision id
    /// depends only on that leaf, so every replica that resolves the same conflict makes the same
    /// tombstone. A replica that sees only some leaves kills only leaves below a greater stamp,
    /// which the full set would kill too: replicas converge whatever order revisions arrive in.
    fn resolve_lww(&mut self, id: &str, tree: &mut RevTree) -> Result<()> {
        let ranked = tree.ranked_leaves();
        let live: Vec<usize> = ranked
            .iter()
            .copied()
            .filter(|&i| tree.node(i).is_some_and(|n| !n.deleted))
            .collect();
        if live.is_empty() || ranked.len() < 2 {
            return Ok(());
        }
        let mut best: Option<(Option<Hlc>, usize)> = None;
        for &leaf in &ranked {
            let node = tree
                .node(leaf)
                .ok_or_else(|| Error::Corrupt("leaf".into()))?;
            let stamp = self
                .load_rev(id, &node.rev)?
                .and_then(|rec| serde_json::from_slice::<Map<String, Value>>(&rec.body).ok())
                .and_then(|body| crate::hlc::stamp_of(&body));
            if node.deleted && stamp.is_none() {
                continue; // old tombstones take no part
            }
            // `ranked` is in CouchDB's order, so on equal stamps the earlier one stays best.
            if best.as_ref().is_none_or(|(s, _)| stamp > *s) {
                best = Some((stamp, leaf));
            }
        }
        let winner = best.map(|(_, leaf)| leaf);
        for leaf in live {
            if Some(leaf) == winner {
                continue;
            }
            let loser = tree
                .node(leaf)
                .map(|n| n.rev.clone())
                .ok_or_else(|| Error::Corrupt("leaf".into()))?;
            let tombstone = RevId::compute(Some(&loser), true, b"{}", &[]);
            if tree.find(&tombstone).is_some() {
                continue;
            }
            tree.add_child(Some(leaf), tombstone.clone(), true);
            let record = RevRecord {
                deleted: true,
                body: b"{}".to_vec(),
                attachments: Vec::new(),
            };
            self.put_rev(&tombstone, record);
        }
        Ok(())
    }
}

/// Bytes a `revs` key takes as redb stores it (a tuple key carries length prefixes).
fn rev_key_len(id: &str, rev: &str) -> usize {
    let bytes = <(&str, &str) as redb::Value>::as_bytes(&(id, rev));
    AsRef::<[u8]>::as_ref(&bytes).len()
}

/// The stored form of a body: compact JSON in the client's member order.
fn canonical_to_stored(body: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())
}

/// Deletes the bodies of non-leaf revisions and unreferenced attachment content (compaction).
pub(crate) fn drop_unreferenced(w: &mut Writer<'_>) -> Result<()> {
    let mut updates: Vec<(String, DocRecord)> = Vec::new();
    let mut drop_revs: Vec<(String, RevId)> = Vec::new();
    for entry in w.docs.iter()? {
        let (key, value) = entry?;
        let id = key.value().to_owned();
        let mut rec = DocRecord::decode(value.value())?;
        let leaves: HashSet<usize> = rec.tree.leaves().into_iter().collect();
        let mut changed = false;
        for i in 0..rec.tree.nodes().len() {
            let has_body = rec.tree.node(i).is_some_and(|n| n.has_body);
            if has_body && !leaves.contains(&i) {
                if let Some(n) = rec.tree.node(i) {
                    drop_revs.push((id.clone(), n.rev.clone()));
                }
                rec.tree.drop_body(i);
                changed = true;
            }
        }
        if changed {
            updates.push((id, rec));
        }
    }
    for (id, rev) in &drop_revs {
        w.remove_rev(id, rev)?;
    }
    for (id, rec) in &updates {
        w.docs.insert(id.as_str(), rec.encode().as_slice())?;
    }
    let mut referenced: HashSet<[u8; 32]> = HashSet::new();
    for entry in w.revs.iter()? {
        let (_, value) = entry?;
        for att in RevRecord::decode(value.value())?.attachments {
            referenced.insert(att.key_bytes()?);
        }
    }
    let mut unreferenced = Vec::new();
    for entry in w.chunks.iter()? {
        let (key, _) = entry?;
        let (content, index) = key.value();
        if !referenced.contains(content) {
            unreferenced.push((*content, index));
        }
    }
    for (content, index) in unreferenced {
        w.chunks.remove((&content, index))?;
    }
    // Compaction reads everything anyway: take the exact figure, correcting any drift.
    let mut live = 0;
    for stats in [
        w.docs.stats()?,
        w.revs.stats()?,
        w.seqs.stats()?,
        w.local.stats()?,
        w.chunks.stats()?,
    ] {
        live += stats.stored_bytes();
    }
    w.meta.live_bytes = live;
    Ok(())
}

/// The JSON body of a `_local` document as stored: `u64` BE revision counter + JSON.
fn local_record(counter: u64, body: &Map<String, Value>) -> Vec<u8> {
    let mut out = counter.to_be_bytes().to_vec();
    let _ = serde_json::to_writer(&mut out, body);
    out
}

impl Database {
    /// Writes one document with `new_edits=true` semantics (or replicates it with `false`).
    /// `id` is taken from the update if not given. Returns the id and new revision.
    pub fn put(
        &self,
        id: Option<&str>,
        update: DocUpdate,
        new_edits: bool,
    ) -> Result<(String, RevId)> {
        self.put_as(id, update, new_edits, &WriteContext::admin(self.name()))
    }

    /// [`Database::put`] by the writer `context` describes (for `validate_doc_update`).
    pub fn put_as(
        &self,
        id: Option<&str>,
        mut update: DocUpdate,
        new_edits: bool,
        context: &WriteContext,
    ) -> Result<(String, RevId)> {
        let id = match (id, update.id.take()) {
            (Some(id), _) => id.to_owned(),
            (None, Some(id)) => id,
            (None, None) => new_doc_id()?,
        };
        if check_id(&id)? == IdKind::Local {
            let rev = self.write(|w| {
                local_put(
                    w,
                    &id,
                    &update.body,
                    update.rev.map(|r| r.to_string()).as_deref(),
                    update.deleted,
                )
            })?;
            return Ok((id, rev));
        }
        let rev = self.write(|w| {
            w.write_ctx = Some(context.clone());
            w.update_doc(&id, update, new_edits)
        })?;
        Ok((id, rev))
    }

    /// `_bulk_docs`: applies every update in one durable transaction; each gets its own result.
    /// A document without an id gets a new one (also with `new_edits=false`, as CouchDB).
    pub fn bulk_docs(
        &self,
        docs: Vec<Result<DocUpdate>>,
        new_edits: bool,
    ) -> Result<Vec<BulkResult>> {
        self.bulk_docs_as(docs, new_edits, &WriteContext::admin(self.name()))
    }

    /// [`Database::bulk_docs`] by the writer `context` describes (for `validate_doc_update`):
    /// a document a validation function refuses gets its `forbidden` or `unauthorized` error,
    /// the others are written.
    pub fn bulk_docs_as(
        &self,
        docs: Vec<Result<DocUpdate>>,
        new_edits: bool,
        context: &WriteContext,
    ) -> Result<Vec<BulkResult>> {
        self.write(|w| {
            w.write_ctx = Some(context.clone());
            // A large batch leaves the Mango indexes to the next query, which updates them in
            // key order in one pass (far fewer pages written than row by row here).
            w.mango_defer = docs.len() > crate::find::stored::DEFER_BATCH;
            let mut results = Vec::with_capacity(docs.len());
            for doc in docs {
                let mut update = match doc {
                    Ok(u) => u,
                    Err(e) => {
                        results.push(BulkResult {
                            id: None,
                            result: Err(e),
                        });
                        continue;
                    }
                };
                let id = match update.id.take() {
                    Some(id) => id,
                    None => new_doc_id()?,
                };
                let result = match check_id(&id) {
                    Ok(IdKind::Local) => local_put(
                        w,
                        &id,
                        &update.body,
                        update.rev.map(|r| r.to_string()).as_deref(),
                        update.deleted,
                    ),
                    Ok(_) => w.update_doc(&id, update, new_edits),
                    Err(e) => Err(e),
                };
                // A failure that is not about this document (storage, a validation that cannot
                // run) fails the whole request, and nothing of it is written.
                let result = match result {
                    Err(e) if e.status() >= 500 => return Err(e),
                    other => other,
                };
                results.push(BulkResult {
                    id: Some(id),
                    result,
                });
            }
            Ok(results)
        })
    }

    /// Writes a `_local` document. It never conflicts: it replaces what is there and gets
    /// revision `0-(N+1)`, N from the given revision (`0-1` without one), as CouchDB does.
    pub fn put_local(
        &self,
        id: &str,
        body: Map<String, Value>,
        rev: Option<&str>,
    ) -> Result<RevId> {
        self.write(|w| local_put(w, id, &body, rev, false))
    }

    /// Deletes a `_local` document (404 if absent). CouchDB answers revision `0-0`.
    pub fn delete_local(&self, id: &str) -> Result<()> {
        self.write(|w| {
            let old = w.local.remove(id)?.map(|o| o.value().len());
            match old {
                Some(len) => {
                    w.account(id.len(), None, Some(len));
                    Ok(())
                }
                None => Err(Error::not_found("missing")),
            }
        })
    }

    /// Adds (or replaces) attachment `name` as a new revision of `id` after `rev`. Without `rev`
    /// the document must not exist (or be deleted); it is created with just the attachment.
    pub fn put_attachment(
        &self,
        id: &str,
        rev: Option<RevId>,
        name: &str,
        content: PreparedAttachment,
    ) -> Result<RevId> {
        self.put_attachment_as(id, rev, name, content, &WriteContext::admin(self.name()))
    }

    /// [`Database::put_attachment`] by the writer `context` describes.
    pub fn put_attachment_as(
        &self,
        id: &str,
        rev: Option<RevId>,
        name: &str,
        content: PreparedAttachment,
        context: &WriteContext,
    ) -> Result<RevId> {
        crate::doc::check_attachment_name(name)?;
        self.write(|w| {
            w.write_ctx = Some(context.clone());
            let mut update = base_update(w, id, rev.as_ref())?;
            // The new attachment first, then the others (CouchDB's order).
            let atts = update.attachments.get_or_insert_with(Vec::new);
            atts.retain(|a| a.name != name);
            atts.insert(
                0,
                crate::doc::AttachmentInput {
                    name: name.to_owned(),
                    kind: AttachmentKind::Data {
                        content,
                        revpos: None,
                    },
                },
            );
            w.update_doc(id, update, true)
        })
    }

    /// Removes attachment `name` in a new revision after `rev` (404 if there is no such attachment).
    pub fn delete_attachment(&self, id: &str, rev: RevId, name: &str) -> Result<RevId> {
        self.delete_attachment_as(id, rev, name, &WriteContext::admin(self.name()))
    }

    /// [`Database::delete_attachment`] by the writer `context` describes.
    pub fn delete_attachment_as(
        &self,
        id: &str,
        rev: RevId,
        name: &str,
        context: &WriteContext,
    ) -> Result<RevId> {
        self.write(|w| {
            w.write_ctx = Some(context.clone());
            let mut update = base_update(w, id, Some(&rev))?;
            let atts = update.attachments.get_or_insert_with(Vec::new);
            let before = atts.len();
            atts.retain(|a| a.name != name);
            if atts.len() == before {
                return Err(Error::not_found("Document is missing attachment"));
            }
            w.update_doc(id, update, true)
        })
    }
}

/// Writes (or, with `deleted`, removes) a `_local` document. CouchDB answers a deletion with
/// revision `0-0`, whether or not the document existed.
fn local_put(
    w: &mut Writer<'_>,
    id: &str,
    body: &Map<String, Value>,
    rev: Option<&str>,
    deleted: bool,
) -> Result<RevId> {
    let previous = match rev {
        Some(r) => r
            .strip_prefix("0-")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| Error::bad_rev(r))?,
        None => 0,
    };
    if deleted {
        let removed = w.local.remove(id)?.map(|o| o.value().len());
        if let Some(len) = removed {
            w.account(id.len(), None, Some(len));
        }
        return Ok(RevId::local(0));
    }
    let counter = previous.saturating_add(1);
    let record = local_record(counter, body);
    let old = w
        .local
        .insert(id, record.as_slice())?
        .map(|o| o.value().len());
    w.account(id.len(), Some(record.len()), old);
    Ok(RevId::local(counter))
}

/// A document update that re-states revision `rev` of `id` (its body and attachments as stubs),
/// for attachment edits.
fn base_update(w: &Writer<'_>, id: &str, rev: Option<&RevId>) -> Result<DocUpdate> {
    check_id(id)?;
    let existing = w.load_doc(id)?;
    let Some(rev) = rev else {
        return match existing {
            Some(d) if !d.winner_deleted => Err(Error::conflict()),
            _ => Ok(DocUpdate::default()),
        };
    };
    // As CouchDB: a revision the document never had (or whose body compaction dropped) is
    // `missing_rev`; one it has that is not a leaf is a conflict.
    let Some(doc) = existing else {
        return Err(Error::missing_rev());
    };
    let Some(index) = doc.tree.find(rev) else {
        return Err(Error::missing_rev());
    };
    let record = w.load_rev(id, rev)?.ok_or_else(Error::missing_rev)?;
    if !doc.tree.is_leaf(index) {
        return Err(Error::conflict());
    }
    let body: Map<String, Value> = serde_json::from_slice(&record.body)
        .map_err(|e| Error::Corrupt(format!("stored body of {id}: {e}")))?;
    let attachments = record
        .attachments
        .iter()
        .map(|a| crate::doc::AttachmentInput {
            name: a.name.clone(),
            kind: AttachmentKind::Stub {
                digest: Some(a.digest.clone()),
            },
        })
        .collect();
    Ok(DocUpdate {
        id: None,
        rev: Some(rev.clone()),
        deleted: false,
        body,
        attachments: Some(attachments),
        revisions: None,
    })
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;
    use serde_json::{Value, json};

    use crate::doc::DocUpdate;
    use crate::store::{Store, StoreConfig};

    /// The winner's record lives inline in the document record; when a revision stops winning
    /// its record moves to `revs`, so every revision stays readable, through edits, conflicts,
    /// compaction and stemming.
    #[test]
    fn inline_winner_records_move_when_they_stop_winning() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let db = store.create_db("x").unwrap();
        let body = |v: i64| json!({"v": v}).as_object().unwrap().clone();
        let get = |rev: &crate::RevId| {
            let opts = crate::GetOptions {
                rev: Some(rev.clone()),
                ..crate::GetOptions::default()
            };
            db.get("d", &opts)
                .unwrap()
                .json
                .get("v")
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (_, r1) = db
            .put(
                Some("d"),
                DocUpdate {
                    body: body(1),
                    ..DocUpdate::default()
                },
                true,
            )
            .unwrap();
        let stored_inline = |expect: bool| {
            db.read(|r| {
                let rec = r.doc_record("d")?.unwrap();
                assert_eq!(rec.inline.is_some(), expect);
                Ok(())
            })
            .unwrap();
        };
        stored_inline(true);
        let (_, r2) = db
            .put(
                Some("d"),
                DocUpdate {
                    rev: Some(r1.clone()),
                    body: body(2),
                    ..DocUpdate::default()
                },
                true,
            )
            .unwrap();
        assert_eq!((get(&r1), get(&r2)), (json!(1), json!(2)));
        // A replicated branch that wins (longer), then a deletion of it: the old winner wins
        // again and is read from `revs`.
        let branch = DocUpdate {
            body: body(3),
            revisions: Some(crate::Revisions {
                start: 3,
                ids: vec!["b3".into(), "b2".into(), r1.hash().into()],
            }),
            ..DocUpdate::default()
        };
        let (_, r3) = db.put(Some("d"), branch, false).unwrap();
        assert_eq!(db.get("d", &crate::GetOptions::default()).unwrap().rev, r3);
        assert_eq!((get(&r2), get(&r3)), (json!(2), json!(3)));
        let (_, r4) = db
            .put(
                Some("d"),
                DocUpdate {
                    rev: Some(r3.clone()),
                    deleted: true,
                    ..DocUpdate::default()
                },
                true,
            )
            .unwrap();
        assert_eq!(db.get("d", &crate::GetOptions::default()).unwrap().rev, r2);
        assert_eq!((get(&r2), get(&r3)), (json!(2), json!(3)));
        assert!(get(&r4).is_null());
        // A large body is not inline.
        let big = json!({"pad": "x".repeat(5000)})
            .as_object()
            .unwrap()
            .clone();
        db.put(
            Some("big"),
            DocUpdate {
                body: big,
                ..DocUpdate::default()
            },
            true,
        )
        .unwrap();
        db.read(|r| {
            assert!(r.doc_record("big")?.unwrap().inline.is_none());
            Ok(())
        })
        .unwrap();
        // Compaction keeps the leaves (inline or not); stemming to 1 too.
        db.compact().unwrap();
        assert_eq!((get(&r2), get(&r4)), (json!(2), Value::Null));
        db.set_revs_limit(1).unwrap();
        let (_, r5) = db
            .put(
                Some("d"),
                DocUpdate {
                    rev: Some(r2.clone()),
                    body: body(5),
                    ..DocUpdate::default()
                },
                true,
            )
            .unwrap();
        assert_eq!(get(&r5), json!(5));
        stored_inline(true);
    }

    /// `sizes.active` comes from a counter kept on every write; it must equal what the tables
    /// really hold.
    #[test]
    fn live_bytes_counter_matches_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let db = store.create_db("x").unwrap();
        let body = |v: i64| {
            json!({"v": v, "pad": "x".repeat(v as usize)})
                .as_object()
                .unwrap()
                .clone()
        };
        let mut revs = Vec::new();
        for i in 0..20 {
            revs.push(
                db.put(
                    Some(&format!("d{i}")),
                    DocUpdate {
                        body: body(i),
                        ..DocUpdate::default()
                    },
                    true,
                )
                .unwrap()
                .1,
            );
        }
        for (i, rev) in revs.iter().enumerate().take(10) {
            let update = DocUpdate {
                rev: Some(rev.clone()),
                body: body(100 + i as i64),
                ..DocUpdate::default()
            };
            db.put(Some(&format!("d{i}")), update, true).unwrap();
        }
        db.put_local("_local/a", body(3), None).unwrap();
        db.put_local("_local/a", body(30), None).unwrap();
        db.put_local("_local/b", body(1), None).unwrap();
        db.delete_local("_local/b").unwrap();
        let content =
            crate::PreparedAttachment::from_bytes("image/png", &[9; 150_000], true, dir.path())
                .unwrap();
        db.put_attachment("att", None, "a", content).unwrap();
        db.set_revs_limit(1).unwrap();
        let r = db.get("d15", &crate::GetOptions::default()).unwrap().rev;
        db.put(
            Some("d15"),
            DocUpdate {
                rev: Some(r),
                deleted: true,
                ..DocUpdate::default()
            },
            true,
        )
        .unwrap();
        let (counted, real) = db
            .read(|r| {
                let mut real = 0;
                for s in [
                    r.docs.stats()?,
                    r.revs.stats()?,
                    r.seqs.stats()?,
                    r.local.stats()?,
                    r.chunks.stats()?,
                ] {
                    real += s.stored_bytes();
                }
                Ok((r.meta.live_bytes, real))
            })
            .unwrap();
        assert_eq!(counted, real);
        assert_eq!(db.info().unwrap().active_size, real);
    }
}
