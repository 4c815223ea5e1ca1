//! The persisted index of a design document and its lazy updater.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_json::{Map, Value};

use super::design::{Design, Reduce};
use super::key::{self, ViewKey};
use crate::error::{Error, Result};
use crate::js::{JsError, MapFn, ReduceFn, Sandbox, SandboxConfig};
use crate::read::{AllDocsQuery, AllDocsRow, ChangesQuery};
use crate::store::Database;

/// Documents mapped per write transaction: document writes wait for at most one batch.
pub(crate) const BATCH: u64 = 1000;

/// Every index's progress: signature -> `u64` BE sequence indexed, then the design document id.
pub(crate) const VIEW_SEQS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("view_seqs");

/// Prefix of every index table's name.
const PREFIX: &str = "view/";

pub(crate) fn rows_table(sig: &str, view: usize) -> String {
    format!("{PREFIX}{sig}/rows/{view}")
}

pub(crate) fn ids_table(sig: &str) -> String {
    format!("{PREFIX}{sig}/ids")
}

/// The views' state in one open database: per design document, its compiled functions and a
/// lock so that one updater at a time runs for it.
#[derive(Default)]
pub(crate) struct Indexes {
    by_ddoc: Mutex<HashMap<String, Arc<Mutex<IndexState>>>>,
    /// Documents run through map functions since the database was opened (for tests and
    /// statistics).
    pub(crate) mapped: AtomicU64,
}

impl std::fmt::Debug for Indexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexes")
            .field("mapped", &self.mapped)
            .finish_non_exhaustive()
    }
}

impl Indexes {
    /// The state of `design`'s index, replacing one of an earlier version of the document.
    pub(crate) fn state(&self, design: &Design) -> Arc<Mutex<IndexState>> {
        let mut map = self.by_ddoc.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&design.id) {
            let same = lock(s).design.signature == design.signature;
            if same {
                return s.clone();
            }
        }
        let s = Arc::new(Mutex::new(IndexState {
            design: design.clone(),
            runner: None,
        }));
        map.insert(design.id.clone(), s.clone());
        s
    }
}

pub(crate) fn lock(s: &Mutex<IndexState>) -> MutexGuard<'_, IndexState> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// One design document's index in memory: its definition and, once needed, its sandbox.
pub(crate) struct IndexState {
    pub(crate) design: Design,
    runner: Option<Runner>,
}

/// A sandbox with the design document's functions compiled in it.
pub(crate) struct Runner {
    pub(crate) sandbox: Sandbox,
    maps: Vec<MapFn>,
    pub(crate) reduces: Vec<Option<ReduceFn>>,
}

impl IndexState {
    /// The compiled functions, compiling them on first use.
    pub(crate) fn runner(&mut self) -> Result<&mut Runner> {
        if self.runner.is_none() {
            let mut sandbox = Sandbox::new(SandboxConfig::default())?;
            let mut maps = Vec::new();
            let mut reduces = Vec::new();
            for v in &self.design.views {
                maps.push(sandbox.compile_map(&v.name, &v.map)?);
                reduces.push(match &v.reduce {
                    Some(Reduce::Js(src)) => Some(sandbox.compile_reduce(&v.name, src)?),
                    _ => None,
                });
            }
            self.runner = Some(Runner {
                sandbox,
                maps,
                reduces,
            });
        }
        self.runner
            .as_mut()
            .ok_or_else(|| Error::Corrupt("view runner".into()))
    }
}

/// Opens a read transaction on the database's file.
pub(crate) fn read_txn(db: &Database) -> Result<redb::ReadTransaction> {
    db.with_redb(|r| Ok(r.begin_read()?))
}

/// The sequence an index has reached (0 if it was never built).
pub(crate) fn indexed_seq(txn: &redb::ReadTransaction, sig: &str) -> Result<u64> {
    let table = match txn.open_table(VIEW_SEQS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(match table.get(sig)? {
        Some(v) => seq_of(v.value())?,
        None => 0,
    })
}

fn seq_of(record: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = record
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Corrupt("view_seqs record is too short".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The rows one document emitted, per view: (row key, value JSON).
type Emitted = Vec<Vec<(Vec<u8>, Vec<u8>)>>;

/// Brings the index up to date with the database, in batches of [`BATCH`] documents, each
/// written in its own transaction. Returns the sequence indexed.
pub(crate) fn update(db: &Database, state: &mut IndexState) -> Result<u64> {
    let sig = state.design.signature.clone();
    let nviews = state.design.views.len();
    let include_design = state.design.include_design;
    let local_seq = state.design.local_seq;
    let mut since = indexed_seq(&read_txn(db)?, &sig)?;
    loop {
        let changes = db.changes(
            &ChangesQuery {
                since,
                limit: Some(BATCH),
                include_docs: true,
                conflicts: true,
                ..ChangesQuery::default()
            },
            None,
        )?;
        if changes.results.is_empty() && changes.last_seq <= since {
            return Ok(since);
        }
        let done = (changes.results.len() as u64) < BATCH;
        let mut batch: Vec<(String, Emitted)> = Vec::with_capacity(changes.results.len());
        for change in changes.results {
            let skip = change.deleted
                || (change.id.starts_with("_design/") && !include_design)
                || nviews == 0;
            let emitted = match change.doc {
                Some(Value::Object(mut doc)) if !skip => {
                    if local_seq {
                        doc.insert("_local_seq".into(), Value::from(change.seq));
                    }
                    map_doc(db, state, &change.id, &Value::Object(doc))?
                }
                _ => vec![Vec::new(); nviews],
            };
            batch.push((change.id, emitted));
        }
        let seq = changes.last_seq;
        write_batch(db, &state.design, &sig, &batch, seq, done)?;
        since = seq;
        if done {
            return Ok(since);
        }
    }
}

/// Runs every map function on one document. A function that throws, runs out of its budget or
/// memory emits nothing for this document (logged); the other functions still run.
fn map_doc(db: &Database, state: &mut IndexState, id: &str, doc: &Value) -> Result<Emitted> {
    let ddoc = state.design.id.clone();
    let runner = state.runner()?;
    db.inner.views.mapped.fetch_add(1, Ordering::Relaxed);
    let mut out = Vec::with_capacity(runner.maps.len());
    for map in &runner.maps {
        let rows = match map.run(&mut runner.sandbox, doc) {
            Ok(output) => {
                for line in &output.logs {
                    tracing::info!(db = %db.name(), ddoc = %ddoc, view = %map.name(), "map log: {line}");
                }
                output.value
            }
            Err(e @ (JsError::WrongSandbox | JsError::Engine(_))) => {
                tracing::warn!(db = %db.name(), ddoc = %ddoc, view = %map.name(), doc = %id,
                    "map function failed: {e}");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(db = %db.name(), ddoc = %ddoc, view = %map.name(), doc = %id,
                    "map function raised an error, the document emits nothing: {e}");
                Vec::new()
            }
        };
        let mut emitted: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(rows.len());
        let mut dups: HashMap<Vec<u8>, u32> = HashMap::new();
        for (k, v) in rows {
            let dup = dups.entry(key::prefix(&k)).or_insert(0);
            emitted.push((
                key::encode(&k, id, *dup),
                serde_json::to_vec(&v).unwrap_or_else(|_| b"null".to_vec()),
            ));
            *dup += 1;
        }
        out.push(emitted);
    }
    Ok(out)
}

/// The by-id record: for each row, `u32` BE view number, `u32` BE key length, the key.
fn encode_ids(emitted: &Emitted) -> Vec<u8> {
    let mut out = Vec::new();
    for (view, rows) in emitted.iter().enumerate() {
        for (k, _) in rows {
            out.extend_from_slice(&(view as u32).to_be_bytes());
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
        }
    }
    out
}

fn decode_ids(mut bytes: &[u8]) -> Result<Vec<(usize, &[u8])>> {
    let bad = || Error::Corrupt("view by-id record is malformed".into());
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (head, rest) = bytes.split_at_checked(8).ok_or_else(bad)?;
        let mut view = [0u8; 4];
        let mut len = [0u8; 4];
        view.copy_from_slice(head.get(..4).ok_or_else(bad)?);
        len.copy_from_slice(head.get(4..).ok_or_else(bad)?);
        let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| bad())?;
        let (k, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        let view = usize::try_from(u32::from_be_bytes(view)).map_err(|_| bad())?;
        out.push((view, k));
        bytes = rest;
    }
    Ok(out)
}

fn write_batch(
    db: &Database,
    design: &Design,
    sig: &str,
    batch: &[(String, Emitted)],
    seq: u64,
    last: bool,
) -> Result<()> {
    db.with_redb(|r| {
        let mut txn = r.begin_write()?;
        if !last {
            // Intermediate batches need no fsync: the last one's durable commit persists them,
            // and a crash before it only loses progress (rows and sequence commit together).
            let _ = txn.set_durability(redb::Durability::None);
        }
        {
            let ids_name = ids_table(sig);
            let mut ids = txn.open_table(TableDefinition::<&str, &[u8]>::new(&ids_name))?;
            let names: Vec<String> = (0..design.views.len())
                .map(|i| rows_table(sig, i))
                .collect();
            let mut tables = names
                .iter()
                .map(|n| txn.open_table(TableDefinition::<ViewKey<'static>, &[u8]>::new(n)))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            for (id, emitted) in batch {
                if let Some(old) = ids.remove(id.as_str())? {
                    for (view, k) in decode_ids(old.value())? {
                        if let Some(t) = tables.get_mut(view) {
                            t.remove(ViewKey(k))?;
                        }
                    }
                }
                let mut any = false;
                for (view, rows) in emitted.iter().enumerate() {
                    if let Some(t) = tables.get_mut(view) {
                        for (k, v) in rows {
                            t.insert(ViewKey(k), v.as_slice())?;
                            any = true;
                        }
                    }
                }
                if any {
                    ids.insert(id.as_str(), encode_ids(emitted).as_slice())?;
                }
            }
            let mut seqs = txn.open_table(VIEW_SEQS)?;
            let mut record = seq.to_be_bytes().to_vec();
            record.extend_from_slice(design.id.as_bytes());
            seqs.insert(sig, record.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    })
}

/// The signatures of the current design documents' indexes.
fn live_signatures(db: &Database) -> Result<HashSet<String>> {
    let all = db.all_docs(
        &AllDocsQuery {
            start_key: Some("_design/".into()),
            end_key: Some("_design0".into()),
            include_docs: true,
            ..AllDocsQuery::default()
        },
        None,
    )?;
    let mut live = HashSet::new();
    for row in all.rows {
        if let AllDocsRow::Doc {
            id,
            doc: Some(Value::Object(doc)),
            ..
        } = row
        {
            if let Ok(design) = Design::parse(&id, &doc) {
                live.insert(design.signature);
            }
        }
    }
    Ok(live)
}

/// `_view_cleanup`: drops the tables of indexes no current design document has.
pub(crate) fn cleanup(db: &Database) -> Result<()> {
    let live = live_signatures(db)?;
    db.with_redb(|r| {
        let txn = r.begin_write()?;
        {
            let names: Vec<String> = txn
                .list_tables()?
                .map(|h| redb::TableHandle::name(&h).to_owned())
                .collect();
            for name in names {
                let Some(rest) = name.strip_prefix(PREFIX) else {
                    continue;
                };
                let sig = rest.split('/').next().unwrap_or("");
                if !live.contains(sig) {
                    txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&name))?;
                }
            }
            let mut seqs = txn.open_table(VIEW_SEQS)?;
            let dead: Vec<String> = seqs
                .iter()?
                .filter_map(|e| e.ok())
                .map(|(k, _)| k.value().to_owned())
                .filter(|sig| !live.contains(sig))
                .collect();
            for sig in dead {
                seqs.remove(sig.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    })
}

/// Names of the index tables in the file (for tests and `_info`).
pub(crate) fn table_names(db: &Database) -> Result<Vec<String>> {
    let txn = read_txn(db)?;
    Ok(txn
        .list_tables()?
        .map(|h| redb::TableHandle::name(&h).to_owned())
        .filter(|n| n.starts_with(PREFIX))
        .collect())
}

/// Bytes the index's rows take (keys and values, as stored).
pub(crate) fn sizes(txn: &redb::ReadTransaction, design: &Design) -> Result<(u64, u64)> {
    let (mut active, mut external) = (0u64, 0u64);
    let mut names: Vec<String> = (0..design.views.len())
        .map(|i| rows_table(&design.signature, i))
        .collect();
    names.push(ids_table(&design.signature));
    for name in names {
        match txn.open_untyped_table(TableDefinition::<&[u8], &[u8]>::new(&name)) {
            Ok(t) => {
                let stats = t.stats()?;
                active += stats.stored_bytes() + stats.metadata_bytes();
                external += stats.stored_bytes();
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((active, external))
}

/// Reads the design document `id`'s JSON (404 `missing` or `deleted`).
pub(crate) fn design_doc(db: &Database, id: &str) -> Result<Map<String, Value>> {
    Ok(db.get(id, &crate::read::GetOptions::default())?.json)
}
