//! The store: a directory of databases, one redb file each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::records::{CHUNKS, DOCS, LOCAL, META, REVS, SEQS};

/// Settings for a [`Store`].
#[derive(Clone)]
pub struct StoreConfig {
    /// Store compressible attachment types gzip-compressed, as CouchDB does (default `true`).
    pub compress_attachments: bool,
    /// redb page cache per open database, in bytes (default 16 MiB; allocated as used).
    pub cache_bytes: usize,
    /// `_revs_limit` of new databases (default 1000).
    pub default_revs_limit: u64,
    /// The clock for hybrid-logical-clock stamps of last-writer-wins databases.
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("compress_attachments", &self.compress_attachments)
            .field("cache_bytes", &self.cache_bytes)
            .field("default_revs_limit", &self.default_revs_limit)
            .finish_non_exhaustive()
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            compress_attachments: true,
            cache_bytes: 16 * 1024 * 1024,
            default_revs_limit: 1000,
            clock: Arc::new(crate::clock::TokioClock),
        }
    }
}

/// A directory of CouchDB databases.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    uuid: String,
    dir: PathBuf,
    tmp: PathBuf,
    config: StoreConfig,
    open: Mutex<HashMap<String, Database>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

const DB_SUFFIX: &str = ".couch.redb";

/// Checks a database name with CouchDB's rule: `^[a-z][a-z0-9_$()+/-]*$`, at most 238
/// characters, or one of the system names `_users`, `_replicator`, `_global_changes`.
pub fn check_db_name(name: &str) -> Result<()> {
    if matches!(name, "_users" | "_replicator" | "_global_changes") {
        return Ok(());
    }
    let mut bytes = name.bytes();
    let ok = name.len() <= 238
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_$()+/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::illegal_db_name(name))
    }
}

fn file_name(db: &str) -> String {
    let mut out = String::with_capacity(db.len() + DB_SUFFIX.len());
    for b in db.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(DB_SUFFIX);
    out
}

fn db_name_of(file: &str) -> Option<String> {
    let stem = file.strip_suffix(DB_SUFFIX)?;
    let mut out = Vec::with_capacity(stem.len());
    let bytes = stem.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    check_db_name(&name).ok()?;
    Some(name)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Leftover temporary files from a crash are
    /// removed.
    pub fn open(dir: impl Into<PathBuf>, config: StoreConfig) -> Result<Store> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let tmp = dir.join("tmp");
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        let uuid = load_or_create_uuid(&dir)?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                uuid,
                dir,
                tmp,
                config,
                open: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// This store's uuid (32 hex digits), created once and kept in `store.uuid`: the server uuid
    /// clients see (PouchDB's replication ids include it, so it must survive restarts).
    pub fn uuid(&self) -> &str {
        &self.inner.uuid
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where attachment uploads are spooled.
    pub fn tmp_dir(&self) -> &Path {
        &self.inner.tmp
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.inner.dir.join(file_name(name))
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Database>> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates database `name` (412 `file_exists` if it exists).
    pub fn create_db(&self, name: &str) -> Result<Database> {
        check_db_name(name)?;
        let mut open = self.lock_open();
        let path = self.path_of(name);
        if open.contains_key(name) || path.exists() {
            return Err(Error::db_exists());
        }
        let redb = redb::Builder::new()
            .set_cache_size(self.inner.config.cache_bytes)
            .create(&path)?;
        let db = Database::init(name, path, redb, self)?;
        open.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// Opens database `name` (404 if it does not exist).
    pub fn db(&self, name: &str) -> Result<Database> {
        check_db_name(name).map_err(|_| Error::no_db())?;
        let mut open = self.lock_open();
        if let Some(db) = open.get(name) {
            return Ok(db.clone());
        }
        let path = self.path_of(name);
        if !path.exists() {
            return Err(Error::no_db());
        }
        let redb = redb::Builder::new()
            .set_cache_size(self.inner.config.cache_bytes)
            .open(&path)?;
        let db = Database::init(name, path, redb, self)?;
        open.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// Database `name` if it is already open (no file access; for hot paths).
    pub fn db_if_open(&self, name: &str) -> Option<Database> {
        self.lock_open().get(name).cloned()
    }

    /// Whether database `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        check_db_name(name).is_ok()
            && (self.lock_open().contains_key(name) || self.path_of(name).exists())
    }

    /// Deletes database `name` and its file (404 if it does not exist). Operations in flight on
    /// it finish first; later ones get 404.
    pub fn delete_db(&self, name: &str) -> Result<()> {
        check_db_name(name).map_err(|_| Error::no_db())?;
        let mut open = self.lock_open();
        let path = self.path_of(name);
        if let Some(db) = open.remove(name) {
            db.close();
        } else if !path.exists() {
            return Err(Error::no_db());
        }
        std::fs::remove_file(&path).map_err(|e| Error::io("deleting", &path, e))?;
        Ok(())
    }

    /// Names of all databases, sorted.
    pub fn all_dbs(&self) -> Result<Vec<String>> {
        let dir = &self.inner.dir;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
            let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
            if let Some(name) = entry.file_name().to_str().and_then(db_name_of) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

fn load_or_create_uuid(dir: &Path) -> Result<String> {
    let path = dir.join("store.uuid");
    match std::fs::read_to_string(&path) {
        Ok(text)
            if text.trim().len() == 32 && text.trim().bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            return Ok(text.trim().to_owned());
        }
        Ok(_) => {
            return Err(Error::Corrupt(format!(
                "{} does not hold a 32-hex-digit uuid",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading", &path, e)),
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Corrupt(format!("random source: {e}")))?;
    let uuid = data_encoding::HEXLOWER.encode(&bytes);
    // Written to a temporary name and renamed, so a crash never leaves a half-written uuid.
    let tmp = dir.join("store.uuid.tmp");
    std::fs::write(&tmp, format!("{uuid}\n")).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("renaming", &path, e))?;
    Ok(uuid)
}

/// Counters kept in the `meta` table: one record, `counters`, of nine `u64` BE values in the
/// order of `Meta::fields` (databases written by earlier versions kept one key per counter; they
/// are read when `counters` is absent). One record means one B-tree update per transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) update_seq: u64,
    pub(crate) doc_count: u64,
    pub(crate) doc_del_count: u64,
    pub(crate) revs_limit: u64,
    pub(crate) external_size: u64,
    pub(crate) conflict_policy: u64,
    pub(crate) hlc_millis: u64,
    pub(crate) hlc_counter: u64,
    pub(crate) live_bytes: u64,
}

/// The key of the counters record.
const META_RECORD: &str = "counters";

/// Keys of [`Meta`]'s fields in earlier versions, in the order of `Meta::fields`.
const META_KEYS: [&str; 9] = [
    "update_seq",
    "doc_count",
    "doc_del_count",
    "revs_limit",
    "external_size",
    "conflict_policy",
    "hlc_millis",
    "hlc_counter",
    "live_bytes",
];

impl Meta {
    fn fields(&mut self) -> [&mut u64; 9] {
        [
            &mut self.update_seq,
            &mut self.doc_count,
            &mut self.doc_del_count,
            &mut self.revs_limit,
            &mut self.external_size,
            &mut self.conflict_policy,
            &mut self.hlc_millis,
            &mut self.hlc_counter,
            &mut self.live_bytes,
        ]
    }

    fn load(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Meta> {
        let mut meta = Meta::default();
        if let Some(v) = table.get(META_RECORD)? {
            let bytes = v.value();
            if bytes.len() != 8 * META_KEYS.len() {
                return Err(Error::Corrupt(
                    "meta counters record has a wrong length".into(),
                ));
            }
            for (chunk, field) in bytes.chunks_exact(8).zip(meta.fields()) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                *field = u64::from_be_bytes(word);
            }
            return Ok(meta);
        }
        for (key, field) in META_KEYS.iter().zip(meta.fields()) {
            if let Some(v) = table.get(*key)? {
                let bytes: [u8; 8] = v
                    .value()
                    .try_into()
                    .map_err(|_| Error::Corrupt(format!("meta {key} is not 8 bytes")))?;
                *field = u64::from_be_bytes(bytes);
            }
        }
        Ok(meta)
    }

    fn save(&mut self, table: &mut redb::Table<'_, &'static str, &'static [u8]>) -> Result<()> {
        let mut record = [0u8; 8 * META_KEYS.len()];
        for (chunk, field) in record.chunks_exact_mut(8).zip(self.fields()) {
            chunk.copy_from_slice(&field.to_be_bytes());
        }
        table.insert(META_RECORD, record.as_slice())?;
        Ok(())
    }
}

/// An open database. Cheap to clone; all clones share the file.
#[derive(Clone)]
pub struct Database {
    pub(crate) inner: Arc<DbInner>,
}

pub(crate) struct DbInner {
    pub(crate) name: String,
    path: PathBuf,
    redb: RwLock<Option<redb::Database>>,
    seq_tx: watch::Sender<u64>,
    pub(crate) tag: String,
    /// 48 bits of the instance uuid: this database's name in HLC stamps.
    pub(crate) node: u64,
    clock: Arc<dyn crate::clock::Clock>,
    /// Compiled design-document functions the write path runs (`validate_doc_update`).
    pub(crate) ddoc_cache: crate::write::DdocCache,
    /// View indexes: compiled design documents, one updater at a time per design document.
    #[cfg(feature = "js")]
    pub(crate) views: crate::view::Indexes,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// Tables open for writing, and the counters, during one write transaction.
pub(crate) struct Writer<'t> {
    pub(crate) docs: redb::Table<'t, &'static str, &'static [u8]>,
    pub(crate) revs: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub(crate) seqs: redb::Table<'t, u64, &'static str>,
    pub(crate) local: redb::Table<'t, &'static str, &'static [u8]>,
    pub(crate) chunks: redb::Table<'t, (&'static [u8; 32], u32), &'static [u8]>,
    pub(crate) meta: Meta,
    pub(crate) clock: &'t dyn crate::clock::Clock,
    pub(crate) node: u64,
    /// The language of a design document with a `validate_doc_update` function, if any (looked
    /// up once per transaction, again after a design document changes).
    pub(crate) validator: Option<Option<String>>,
    /// The database's compiled validation functions (shared by its transactions).
    #[cfg_attr(not(feature = "js"), allow(dead_code))]
    pub(crate) ddoc_cache: &'t crate::write::DdocCache,
    /// Who writes, as `validate_doc_update` sees it (`None`: an admin).
    pub(crate) write_ctx: Option<crate::write::WriteContext>,
    /// Revision records of the document being written, placed by `finish_doc` (inline in the
    /// document record, or in `revs`).
    pub(crate) staged: Vec<(crate::rev::RevId, crate::records::RevRecord)>,
    /// The transaction, for tables opened by name (Mango index tables).
    pub(crate) txn: &'t redb::WriteTransaction,
    /// The Mango indexes kept in tables, loaded once per transaction (again after a design
    /// document changes).
    pub(crate) mango: Option<std::sync::Arc<Vec<crate::find::stored::Live>>>,
    /// The Mango index tables opened so far in this transaction, by signature.
    pub(crate) mango_tables: Vec<(String, crate::find::stored::Tables<'t>)>,
    /// Leave the Mango indexes behind for the next query to update (a large batch).
    pub(crate) mango_defer: bool,
}

/// Tables open for reading in one snapshot.
pub(crate) struct Reader {
    pub(crate) docs: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    pub(crate) revs: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    pub(crate) seqs: redb::ReadOnlyTable<u64, &'static str>,
    pub(crate) local: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    pub(crate) chunks: redb::ReadOnlyTable<(&'static [u8; 32], u32), &'static [u8]>,
    pub(crate) meta: Meta,
    /// The snapshot, for tables opened by name (Mango index tables).
    pub(crate) txn: redb::ReadTransaction,
}

/// Information about a database, as `GET /db` reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbInfo {
    /// Name.
    pub db_name: String,
    /// Documents whose winning revision is not deleted.
    pub doc_count: u64,
    /// Documents whose winning revision is deleted.
    pub doc_del_count: u64,
    /// Latest sequence number.
    pub update_seq: u64,
    /// Size of the file on disk.
    pub file_size: u64,
    /// Bytes of live data in the file.
    pub active_size: u64,
    /// Bytes of document bodies and attachments as clients see them.
    pub external_size: u64,
    /// Opaque tag of this database instance (part of every sequence string).
    pub tag: String,
}

impl Database {
    fn init(name: &str, path: PathBuf, redb: redb::Database, store: &Store) -> Result<Database> {
        let txn = redb.begin_write()?;
        let (meta, uuid) = {
            let mut meta_table = txn.open_table(META)?;
            let mut meta = Meta::load(&meta_table)?;
            if meta.revs_limit == 0 {
                meta.revs_limit = store.inner.config.default_revs_limit.max(1);
            }
            let uuid = match meta_table.get("uuid")? {
                Some(v) => v.value().to_vec(),
                None => {
                    let mut uuid = [0u8; 16];
                    getrandom::fill(&mut uuid)
                        .map_err(|e| Error::Corrupt(format!("random source: {e}")))?;
                    uuid.to_vec()
                }
            };
            meta_table.insert("uuid", uuid.as_slice())?;
            meta.save(&mut meta_table)?;
            // Create every table so read transactions can always open them.
            txn.open_table(DOCS)?;
            txn.open_table(REVS)?;
            txn.open_table(SEQS)?;
            txn.open_table(LOCAL)?;
            txn.open_table(CHUNKS)?;
            (meta, uuid)
        };
        txn.commit()?;
        let tag = data_encoding::BASE64URL_NOPAD.encode(uuid.get(..9).unwrap_or(&uuid));
        let node = uuid
            .iter()
            .take(6)
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let (seq_tx, _) = watch::channel(meta.update_seq);
        Ok(Database {
            inner: Arc::new(DbInner {
                name: name.to_owned(),
                path,
                redb: RwLock::new(Some(redb)),
                seq_tx,
                tag,
                node,
                clock: store.inner.config.clock.clone(),
                ddoc_cache: crate::write::DdocCache::default(),
                #[cfg(feature = "js")]
                views: crate::view::Indexes::default(),
            }),
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn close(&self) {
        let mut guard = self.inner.redb.write().unwrap_or_else(|p| p.into_inner());
        *guard = None;
        // Wake change listeners so they notice the database is gone.
        self.inner.seq_tx.send_modify(|_| {});
    }

    /// Whether the database was deleted while this handle was held.
    pub fn is_deleted(&self) -> bool {
        self.inner.redb.read().map(|g| g.is_none()).unwrap_or(true)
    }

    /// A receiver that changes whenever the update sequence does (for `_changes` feeds).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.seq_tx.subscribe()
    }

    /// Formats a sequence number as the opaque string clients see: `N-<tag>`.
    pub fn seq_string(&self, seq: u64) -> String {
        format!("{seq}-{}", self.inner.tag)
    }

    /// Runs `f` on a consistent read snapshot.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Reader) -> Result<T>) -> Result<T> {
        let guard = self.inner.redb.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or_else(Error::no_db)?;
        let txn = db.begin_read()?;
        let meta_table = txn.open_table(META)?;
        let reader = Reader {
            docs: txn.open_table(DOCS)?,
            revs: txn.open_table(REVS)?,
            seqs: txn.open_table(SEQS)?,
            local: txn.open_table(LOCAL)?,
            chunks: txn.open_table(CHUNKS)?,
            meta: Meta::load(&meta_table)?,
            txn,
        };
        f(&reader)
    }

    /// Runs `f` on the open redb file, for the secondary indexes kept in it (views).
    #[cfg(feature = "js")]
    pub(crate) fn with_redb<T>(&self, f: impl FnOnce(&redb::Database) -> Result<T>) -> Result<T> {
        let guard = self.inner.redb.read().unwrap_or_else(|p| p.into_inner());
        f(guard.as_ref().ok_or_else(Error::no_db)?)
    }

    /// Runs `f` in one write transaction, committed durably before this returns `Ok`. An `Err`
    /// from `f` aborts the whole transaction.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T> {
        let guard = self.inner.redb.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or_else(Error::no_db)?;
        let txn = db.begin_write()?;
        let (result, seq) = {
            let mut meta_table = txn.open_table(META)?;
            let meta = Meta::load(&meta_table)?;
            let loaded = meta.clone();
            let before = meta.update_seq;
            let mut w = Writer {
                docs: txn.open_table(DOCS)?,
                revs: txn.open_table(REVS)?,
                seqs: txn.open_table(SEQS)?,
                local: txn.open_table(LOCAL)?,
                chunks: txn.open_table(CHUNKS)?,
                meta,
                clock: &*self.inner.clock,
                node: self.inner.node,
                validator: None,
                ddoc_cache: &self.inner.ddoc_cache,
                write_ctx: None,
                staged: Vec::new(),
                txn: &txn,
                mango: None,
                mango_tables: Vec::new(),
                mango_defer: false,
            };
            let result = f(&mut w)?;
            if w.meta != loaded {
                w.meta.save(&mut meta_table)?;
            }
            let seq = (w.meta.update_seq != before).then_some(w.meta.update_seq);
            (result, seq)
        };
        txn.commit()?;
        if let Some(seq) = seq {
            self.inner.seq_tx.send_replace(seq);
        }
        Ok(result)
    }

    /// Database information. Constant time: sizes come from counters kept as the database
    /// changes (and recounted exactly by compaction), never from walking the file.
    pub fn info(&self) -> Result<DbInfo> {
        let meta = self.read(|r| Ok(r.meta.clone()))?;
        let file_size = std::fs::metadata(&self.inner.path)
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(DbInfo {
            db_name: self.inner.name.clone(),
            doc_count: meta.doc_count,
            doc_del_count: meta.doc_del_count,
            update_seq: meta.update_seq,
            file_size,
            active_size: meta.live_bytes,
            external_size: meta.external_size,
            tag: self.inner.tag.clone(),
        })
    }

    /// The current update sequence.
    pub fn update_seq(&self) -> Result<u64> {
        self.read(|r| Ok(r.meta.update_seq))
    }

    /// `_revs_limit`.
    pub fn revs_limit(&self) -> Result<u64> {
        self.read(|r| Ok(r.meta.revs_limit))
    }

    /// Sets `_revs_limit` (at least 1); applies to documents as they are next written.
    pub fn set_revs_limit(&self, limit: u64) -> Result<()> {
        if limit == 0 {
            return Err(Error::bad_request("revs_limit must be a positive integer"));
        }
        self.write(|w| {
            w.meta.revs_limit = limit;
            Ok(())
        })
    }

    /// How this database resolves conflicts.
    pub fn conflict_policy(&self) -> Result<crate::hlc::ConflictPolicy> {
        self.read(|r| {
            Ok(crate::hlc::ConflictPolicy::from_code(
                r.meta.conflict_policy,
            ))
        })
    }

    /// Sets how conflicts are resolved from now on (documents already in conflict are resolved
    /// when they next change).
    pub fn set_conflict_policy(&self, policy: crate::hlc::ConflictPolicy) -> Result<()> {
        self.write(|w| {
            w.meta.conflict_policy = policy.code();
            Ok(())
        })
    }

    /// Compaction: drops the bodies of non-leaf revisions and attachment content no remaining
    /// revision refers to, then rewrites the file to release the space. Writers wait while the
    /// file is rewritten.
    pub fn compact(&self) -> Result<()> {
        self.write(crate::write::drop_unreferenced)?;
        let mut guard = self.inner.redb.write().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_mut().ok_or_else(Error::no_db)?;
        // A second pass lets redb move the last pages, as its own docs suggest.
        while db.compact()? {}
        Ok(())
    }
}

/// Parses a `since`-style sequence as clients send it back: `N`, `"N"`, or `"N-anything"`.
pub fn parse_seq(text: &str) -> Option<u64> {
    let digits = text.split('-').next()?;
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_files() {
        for good in ["a", "abc-1", "a$()+/-_9", "_users"] {
            check_db_name(good).unwrap();
            assert_eq!(db_name_of(&file_name(good)).as_deref(), Some(good));
        }
        for bad in ["", "A", "1a", "_foo", "a b", "a.b", &"a".repeat(239)] {
            assert_eq!(
                check_db_name(bad).unwrap_err().error(),
                "illegal_database_name"
            );
        }
        assert_eq!(file_name("a/b"), "a%2Fb.couch.redb");
    }

    #[test]
    fn create_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        store.create_db("b/x").unwrap();
        store.create_db("a").unwrap();
        assert_eq!(store.create_db("a").unwrap_err().status(), 412);
        assert_eq!(store.all_dbs().unwrap(), vec!["a", "b/x"]);
        let held = store.db("a").unwrap();
        store.delete_db("a").unwrap();
        assert!(held.is_deleted());
        assert_eq!(held.info().unwrap_err().status(), 404);
        assert_eq!(store.db("a").unwrap_err().status(), 404);
        assert_eq!(store.delete_db("a").unwrap_err().status(), 404);
        assert_eq!(store.all_dbs().unwrap(), vec!["b/x"]);
        // Reopening from disk in a new store.
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let info = store.db("b/x").unwrap().info().unwrap();
        assert_eq!(info.db_name, "b/x");
        assert_eq!(info.update_seq, 0);
        assert!(info.file_size > 0);
    }

    #[test]
    fn seq_strings() {
        assert_eq!(parse_seq("12-g1AAA"), Some(12));
        assert_eq!(parse_seq("12"), Some(12));
        assert_eq!(parse_seq("x"), None);
        assert_eq!(parse_seq(""), None);
    }
}
