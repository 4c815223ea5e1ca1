//! CouchDB map/reduce views (feature `js`), kept in the database's own redb file.
//!
//! # Lazy on read
//!
//! As in CouchDB, writing a document does no view work. A query (unless `stale=ok` /
//! `update=false`) first brings its design document's index up to date: it reads the changes
//! since the sequence the index reached, runs every map function of the design document on
//! each changed document's winning revision (with `_conflicts`), and writes the rows. All views
//! of one design document are built together, as CouchDB does, in one JavaScript sandbox per
//! design document kept for the life of the open database. One updater runs per design
//! document at a time; concurrent queries wait for it and then read. `stale=update_after` /
//! `update=lazy` answers from the index as it is and updates afterwards on a thread of its own.
//!
//! Deleted documents emit nothing, nor do design documents unless the design document sets
//! `options.include_design`. A map function that throws, exceeds the sandbox's operation
//! budget (an endless loop) or its memory limit (64 MiB) emits nothing for that document; the
//! error is logged (`tracing::warn!`) and the other documents and functions are indexed.
//!
//! # Storage
//!
//! An index is named by its signature: the first 16 bytes of a SHA-256, in hex, over the
//! views' names, map and reduce sources, the language and the options that change rows. A
//! changed design document is a new signature, built from scratch in new tables; the old
//! tables stay until `POST /db/_view_cleanup` (`view::cleanup`) drops every index no current
//! design document has. Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `view/<sig>/rows/<n>` | row key (`key.rs`: CouchDB collation of the key, then doc id, then a `u32` emit counter) | the emitted value's JSON text |
//! | `view/<sig>/ids` | document id | the row keys the document emitted: per row `u32` BE view number `n`, `u32` BE length, the key |
//! | `view_seqs` | signature | `u64` BE sequence indexed, then the design document id |
//!
//! `n` numbers the views in order of name. Rows and the sequence reached commit together, so
//! an index is always consistent with some sequence. Batches of at most 1000 documents
//! are written in one write transaction each, so document writes wait for one batch at most;
//! batches before the last are committed without fsync (a crash only loses progress).
//!
//! # Queries
//!
//! Reduce is computed at query time from the stored rows: built-in reduces ([`crate::reduce`])
//! in Rust, JavaScript reduces in the design document's sandbox on chunks of rows, rereduced.
//! `total_rows` and `offset` are counted by walking the rows before the range (redb has no
//! counted B-tree): cost grows with the offset. A [`crate::DocFilter`] drops the rows of documents it
//! refuses before reducing, counting and `include_docs`.

#[cfg_attr(not(feature = "js"), allow(dead_code))]
pub(crate) mod key;

#[cfg(feature = "js")]
mod design;
#[cfg(feature = "js")]
mod index;
#[cfg(feature = "js")]
mod query;

#[cfg(feature = "js")]
pub(crate) use index::Indexes;
#[cfg(feature = "js")]
pub use query::{Param, Update, ViewQuery};

#[cfg(feature = "js")]
mod api {
    use serde_json::{Value, json};

    use super::design::Design;
    use super::index::{self, lock};
    use super::query::{self, Target, Update, ViewQuery};
    use crate::error::{Error, Result};
    use crate::read::DocFilter;
    use crate::store::Database;

    fn ddoc_id(ddoc: &str) -> String {
        if ddoc.starts_with("_design/") {
            ddoc.to_owned()
        } else {
            format!("_design/{ddoc}")
        }
    }

    fn check_language(design: &Design) -> Result<()> {
        if design.language == "javascript" {
            Ok(())
        } else {
            Err(Error::couch(
                500,
                "unknown_query_language",
                design.language.chars().take(100).collect::<String>(),
            ))
        }
    }

    /// Answers `GET /db/_design/{ddoc}/_view/{view}` as CouchDB does: the JSON body
    /// (`{"total_rows","offset","rows"}` for a map query, `{"rows"}` for a reduce one, with
    /// `update_seq` when asked). `ddoc` is the design document's name, with or without
    /// `_design/`. Errors: 404 `missing`/`deleted` (no design document), 404
    /// `missing_named_view`, 400 `query_parse_error` (CouchDB's texts), 500
    /// `unknown_query_language`, 400 `compilation_error`.
    pub fn query(
        db: &Database,
        ddoc: &str,
        view: &str,
        q: &ViewQuery,
        filter: Option<&dyn DocFilter>,
    ) -> Result<Value> {
        let id = ddoc_id(ddoc);
        let doc = index::design_doc(db, &id)?;
        let design = Design::parse(&id, &doc)?;
        let n = design
            .view(view)
            .ok_or_else(|| Error::not_found("missing_named_view"))?;
        check_language(&design)?;
        let reduce = design.views.get(n).and_then(|v| v.reduce.clone());
        let state = db.inner.views.state(&design);
        let seq = match q.update {
            Update::True => index::update(db, &mut lock(&state))?,
            Update::False | Update::Lazy => {
                index::indexed_seq(&index::read_txn(db)?, &design.signature)?
            }
        };
        let txn = index::read_txn(db)?;
        let target = Target {
            db,
            state: &state,
            view: n,
            reduce,
            sig: design.signature.clone(),
        };
        let out = query::run(&target, q, filter, seq, &txn);
        drop(txn);
        if q.update == Update::Lazy {
            let (db, state) = (db.clone(), state.clone());
            let spawned = std::thread::Builder::new()
                .name("view-update".into())
                .spawn(move || {
                    if let Err(e) = index::update(&db, &mut lock(&state)) {
                        tracing::warn!(db = %db.name(), "view update after the query failed: {e}");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("could not start a view updater: {e}");
            }
        }
        out
    }

    /// `GET /db/_design/{ddoc}/_info`: `{"name", "view_index": {...}}` as CouchDB answers it.
    pub fn info(db: &Database, ddoc: &str) -> Result<Value> {
        let id = ddoc_id(ddoc);
        let doc = index::design_doc(db, &id)?;
        let design = Design::parse(&id, &doc)?;
        let txn = index::read_txn(db)?;
        let seq = index::indexed_seq(&txn, &design.signature)?;
        let (active, external) = index::sizes(&txn, &design)?;
        drop(txn);
        let state = db.inner.views.state(&design);
        let running = state.try_lock().is_err();
        let changes = db.changes(
            &crate::read::ChangesQuery {
                since: seq,
                limit: Some(1),
                ..crate::read::ChangesQuery::default()
            },
            None,
        )?;
        let pending = changes.results.len() as u64 + changes.pending;
        let name = id.strip_prefix("_design/").unwrap_or(&id);
        Ok(json!({
            "name": name,
            "view_index": {
                "compact_running": false,
                "language": design.language,
                "purge_seq": 0,
                "signature": design.signature,
                "sizes": {"active": active, "external": external, "file": active},
                "update_seq": seq,
                "updater_running": running,
                "updates_pending": {"minimum": pending, "preferred": pending, "total": pending},
                "waiting_clients": 0,
                "waiting_commit": false
            }
        }))
    }

    /// `POST /db/_view_cleanup`: drops the index tables of signatures no current design
    /// document has.
    pub fn cleanup(db: &Database) -> Result<()> {
        index::cleanup(db)
    }

    /// Documents run through map functions since `db` was opened (to prove an index survived
    /// a restart without re-mapping).
    #[doc(hidden)]
    pub fn docs_mapped(db: &Database) -> u64 {
        db.inner
            .views
            .mapped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Names of the index tables in `db`'s file.
    #[doc(hidden)]
    pub fn index_tables(db: &Database) -> Result<Vec<String>> {
        index::table_names(db)
    }
}

#[cfg(feature = "js")]
pub use api::{cleanup, docs_mapped, index_tables, info, query};
