//! End-to-end encrypted backup of local databases to a CouchDB-compatible server that is not
//! trusted to read them (feature `backup`).
//!
//! A 32-byte secret, which only the person's devices hold, derives (HKDF-SHA256) two keys: one
//! for names (HMAC-SHA256) and one for content (ChaCha20-Poly1305). Each backed-up document
//! becomes one cloud document:
//!
//! * in the cloud database `thali-backup-<24 base32 chars of HMAC("database")>`, so the name
//!   of the backup's database says nothing of the secret and nothing of the data;
//! * with id = 32 base32 chars of HMAC(local database name, document id) — a stable
//!   pseudonym, so a document updated again replaces its own cloud document;
//! * whose only content is the attachment `c`: the *bundle* of the document — every leaf
//!   revision with its `_revisions` path, its body and its attachments exactly as stored
//!   (gzip-stored content stays gzip, so digests survive) — deflated, then sealed with
//!   ChaCha20-Poly1305 under a fresh random 96-bit nonce. The associated data is the cloud
//!   database and document id, so a sealed bundle moved to another id does not open.
//!
//! One more cloud document, `manifest`, holds the sealed list of backed-up databases and the
//! backup's epoch (a random id: a checkpoint of another epoch is void, so a cloud database
//! wiped and recreated is filled again from the start).
//!
//! **What the server sees** (and so what leaks): how many documents the backup has, when each
//! one changes (its cloud revision count and timing), and the size of each sealed bundle (the
//! deflated size of the document with its revisions and attachments, plus 29 bytes). It sees
//! no database name, document id, body, revision id or attachment name, type or content; the
//! same document always maps to the same cloud id, so it can tell an update from a new
//! document. It can withhold or roll back documents (restore then lacks them, or has an older
//! state); it cannot alter one unnoticed: a bundle that does not authenticate is reported and
//! never imported.
//!
//! Incremental and resumable: each database's position in its changes feed is checkpointed in
//! a `_local` document of that database after every uploaded batch, so only documents changed
//! since are read, sealed and sent, and a run cut short goes on from its last batch.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use hyper::Method;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use serde_json::{Map, Value, json};

use super::endpoint::from_local;
use super::fetched::{Content, Fetched};
use super::remote::{Remote, peer_error};
use crate::attachment::{AttachmentWriter, Encoding};
use crate::error::{Error, Result};
use crate::read::{AttachmentMode, ChangesQuery, GetOptions, OpenRev, OpenRevs};
use crate::store::{Database, Store};

/// Bytes of a backup secret.
pub const SECRET_LEN: usize = 32;
/// The sealed format's version byte.
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Change rows read per page.
const PAGE: u64 = 250;
/// A batch is uploaded once it holds this many sealed bytes (memory stays bounded).
const BATCH_BYTES: usize = 8 << 20;
/// Sealed bundles up to this size go inline in `_bulk_docs`; larger ones alone, as raw bytes.
const INLINE_BYTES: usize = 1 << 20;
/// A bundle inflates to at most this (a damaged one cannot exhaust memory).
const MAX_BUNDLE_BYTES: u64 = 1 << 30;
/// Cloud documents read per `_all_docs` page while restoring.
const RESTORE_PAGE: usize = 200;
/// Sealed bytes one restore read asks for at most (a larger document is read alone).
const FETCH_BYTES: u64 = 16 << 20;
/// The manifest's cloud id.
const MANIFEST: &str = "manifest";
/// The attachment holding a sealed bundle.
const SEALED: &str = "c";

/// The keys of one backup, derived from its secret.
pub struct BackupKey {
    names: hmac::Key,
    data: LessSafeKey,
    cloud_db: String,
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupKey")
            .field("cloud_db", &self.cloud_db)
            .finish_non_exhaustive()
    }
}

fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(bytes)
        .to_ascii_lowercase()
}

fn crypto_failed(what: &str) -> Error {
    Error::Corrupt(format!("backup: {what} failed"))
}

impl BackupKey {
    /// The keys of the backup whose secret is `secret`.
    pub fn from_secret(secret: &[u8; SECRET_LEN]) -> Result<BackupKey> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"thali backup v1").extract(secret);
        let names: hmac::Key = prk
            .expand(&[b"names"], hmac::HMAC_SHA256)
            .map_err(|_| crypto_failed("deriving the name key"))?
            .into();
        let data: UnboundKey = prk
            .expand(&[b"data"], &aead::CHACHA20_POLY1305)
            .map_err(|_| crypto_failed("deriving the data key"))?
            .into();
        let tag = hmac::sign(&names, b"database");
        let cloud_db = format!("thali-backup-{}", &base32(tag.as_ref())[..24]);
        Ok(BackupKey {
            names,
            data: LessSafeKey::new(data),
            cloud_db,
        })
    }

    /// A fresh random secret.
    pub fn generate_secret() -> Result<[u8; SECRET_LEN]> {
        let mut secret = [0u8; SECRET_LEN];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| crypto_failed("drawing a random secret"))?;
        Ok(secret)
    }

    /// The name of the backup's database on the server.
    pub fn cloud_db(&self) -> &str {
        &self.cloud_db
    }

    /// The cloud id of document `id` of local database `db`.
    fn cloud_id(&self, db: &str, id: &str) -> String {
        let mut message = Vec::with_capacity(db.len() + id.len() + 5);
        message.extend_from_slice(b"doc\0");
        message.extend_from_slice(db.as_bytes());
        message.push(0);
        message.extend_from_slice(id.as_bytes());
        let tag = hmac::sign(&self.names, &message);
        base32(&tag.as_ref()[..20])
    }

    fn aad(&self, cloud_id: &str) -> Vec<u8> {
        format!("{}/{cloud_id}", self.cloud_db).into_bytes()
    }

    /// `plain` sealed for cloud document `cloud_id`: format byte, nonce, ciphertext and tag.
    fn seal(&self, cloud_id: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| crypto_failed("drawing a nonce"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + TAG_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let mut body = out.split_off(1 + NONCE_LEN);
        self.data
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(cloud_id)),
                &mut body,
            )
            .map_err(|_| crypto_failed("sealing"))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plaintext of a sealed cloud document, or [`Error::Corrupt`] naming it if it does
    /// not authenticate (tampered with, damaged, or sealed under another secret).
    fn open(&self, cloud_id: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let tampered = || {
            Error::Corrupt(format!(
                "backup document {cloud_id} does not authenticate: it was tampered with or \
                 damaged, and is not imported"
            ))
        };
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != FORMAT {
            return Err(tampered());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..=NONCE_LEN]);
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain_len = self
            .data
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(cloud_id)),
                &mut body,
            )
            .map_err(|_| tampered())?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

/// What a backup run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupStats {
    /// Documents sent (each with all its leaf revisions).
    pub docs: u64,
    /// Sealed bytes sent.
    pub bytes: u64,
    /// The local sequence backed up to.
    pub seq: u64,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// The databases restored (created where missing).
    pub databases: Vec<String>,
    /// Documents restored.
    pub docs: u64,
    /// Cloud documents that did not authenticate (or did not belong where they were): never
    /// imported.
    pub tampered: Vec<String>,
}

/// A cloud id and the sealed bundle stored under it.
type Sealed = (String, Vec<u8>);

/// Backs databases up to one server under one key.
#[derive(Debug, Clone)]
pub struct Backup {
    key: Arc<BackupKey>,
    remote: Arc<Remote>,
    tmp: PathBuf,
}

/// The epoch the manifest names, and the databases it lists.
#[derive(Debug, Clone)]
struct Manifest {
    epoch: String,
    databases: BTreeSet<String>,
}

fn bad_bundle(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("backup bundle: {what}"))
}

fn io(e: std::io::Error) -> Error {
    Error::Corrupt(format!("backup bundle: {e}"))
}

/// A document's leaf revisions as one plaintext bundle: a 4-byte header length, the header
/// (JSON: database, id, each revision's JSON and its attachments' descriptions) and the
/// attachments' stored bytes in order, all deflated.
fn encode_bundle(db: &str, id: &str, revs: Vec<Fetched>) -> Result<Vec<u8>> {
    let mut contents: Vec<Vec<u8>> = Vec::new();
    let mut header_revs = Vec::with_capacity(revs.len());
    for rev in revs {
        let mut atts = Vec::with_capacity(rev.atts.len());
        for mut content in rev.atts {
            let mut bytes = Vec::with_capacity(content.data.stored_len as usize);
            content.data.for_each_chunk(|_, chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            })?;
            atts.push(json!({
                "name": content.name,
                "revpos": content.revpos,
                "content_type": content.data.content_type,
                "length": content.data.length,
                "gzip": content.data.encoding == Encoding::Gzip,
                "bytes": bytes.len(),
            }));
            contents.push(bytes);
        }
        header_revs.push(json!({"doc": rev.json, "atts": atts}));
    }
    let header = serde_json::to_vec(&json!({"db": db, "id": id, "revs": header_revs}))
        .map_err(bad_bundle)?;
    let header_len = u32::try_from(header.len()).map_err(|_| bad_bundle("header too large"))?;
    let mut out = DeflateEncoder::new(Vec::new(), Compression::fast());
    out.write_all(&header_len.to_be_bytes()).map_err(io)?;
    out.write_all(&header).map_err(io)?;
    for bytes in contents {
        out.write_all(&bytes).map_err(io)?;
    }
    out.finish().map_err(io)
}

/// A bundle's database, document id and revisions.
fn decode_bundle(deflated: &[u8], tmp: &Path) -> Result<(String, String, Vec<Fetched>)> {
    let mut plain = Vec::new();
    DeflateDecoder::new(deflated)
        .take(MAX_BUNDLE_BYTES)
        .read_to_end(&mut plain)
        .map_err(io)?;
    let len_bytes: [u8; 4] = plain
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad_bundle("too short"))?;
    let header_len = u32::from_be_bytes(len_bytes) as usize;
    let header = plain
        .get(4..4 + header_len)
        .ok_or_else(|| bad_bundle("header cut short"))?;
    let header: Value = serde_json::from_slice(header).map_err(bad_bundle)?;
    let text = |v: &Value, what: &str| {
        v.get(what)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad_bundle(format!("no {what}")))
    };
    let (db, id) = (text(&header, "db")?, text(&header, "id")?);
    let mut at = 4 + header_len;
    let mut revs = Vec::new();
    for rev in header
        .get("revs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_bundle("no revisions"))?
    {
        let Some(Value::Object(doc)) = rev.get("doc") else {
            return Err(bad_bundle("a revision without its document"));
        };
        if doc.get("_id").and_then(Value::as_str) != Some(id.as_str()) {
            return Err(bad_bundle("a revision of another document"));
        }
        let mut contents = Vec::new();
        for att in rev
            .get("atts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = text(att, "name")?;
            let content_type = text(att, "content_type")?;
            let length = att.get("length").and_then(Value::as_u64).unwrap_or(0);
            let len = att
                .get("bytes")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad_bundle("an attachment without its size"))?;
            let bytes = plain
                .get(at..at.saturating_add(len))
                .ok_or_else(|| bad_bundle("attachment content cut short"))?;
            at += len;
            let mut writer = if att.get("gzip") == Some(&Value::Bool(true)) {
                AttachmentWriter::pre_encoded_gzip(&content_type, length, tmp)
            } else {
                AttachmentWriter::new(&content_type, false, tmp)
            };
            writer
                .write_all(bytes)
                .map_err(|e| Error::io("restoring an attachment", tmp, e))?;
            contents.push(Content {
                name,
                revpos: att.get("revpos").and_then(Value::as_u64),
                data: writer.finish()?,
            });
        }
        revs.push(Fetched::build(doc.clone(), contents, tmp)?);
    }
    Ok((db, id, revs))
}

fn checkpoint_id(key: &BackupKey) -> String {
    format!("_local/{}", key.cloud_db)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::couch(500, "internal_server_error", format!("worker failed: {e}")))?
}

fn json_body(value: &Value) -> Option<Vec<u8>> {
    serde_json::to_vec(value).ok()
}

impl Backup {
    /// A backup under `key` to the server whose database URL `remote` names — the URL of
    /// [`BackupKey::cloud_db`] on that server. `tmp` holds spooled attachment content.
    pub fn new(key: Arc<BackupKey>, remote: Arc<Remote>, tmp: impl Into<PathBuf>) -> Backup {
        Backup {
            key,
            remote,
            tmp: tmp.into(),
        }
    }

    /// Reads the manifest: `None` when the server has no backup under this key.
    async fn manifest(&self) -> Result<Option<Manifest>> {
        let path = format!("/{MANIFEST}/{SEALED}");
        let (status, body) = self
            .remote
            .request(Method::GET, &path, None, Duration::ZERO)
            .await?;
        match status.as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(peer_error(status, &body)),
        }
        let plain = self.key.open(MANIFEST, &body)?;
        let value: Value = serde_json::from_slice(&plain).map_err(bad_bundle)?;
        let epoch = value
            .get("epoch")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_bundle("manifest without an epoch"))?
            .to_owned();
        let databases = value
            .get("databases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect();
        Ok(Some(Manifest { epoch, databases }))
    }

    /// Writes (replaces) the manifest.
    async fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        let plain = serde_json::to_vec(&json!({
            "format": FORMAT,
            "epoch": manifest.epoch,
            "databases": manifest.databases,
        }))
        .map_err(bad_bundle)?;
        let sealed = self.key.seal(MANIFEST, &plain)?;
        let revs = self.cloud_revs(&[MANIFEST.to_owned()]).await?;
        self.put_sealed(MANIFEST, revs.get(MANIFEST).map(String::as_str), sealed)
            .await
    }

    /// Creates the cloud database and the manifest as needed, lists `databases` in it, and
    /// returns the epoch.
    async fn prepare(&self, databases: &[String]) -> Result<String> {
        // Created only when missing: a user with rights on the database alone (no server
        // admin) may not PUT even an existing one on CouchDB.
        let (status, body) = self
            .remote
            .request(Method::GET, "", None, Duration::ZERO)
            .await?;
        match status.as_u16() {
            200 => {}
            404 => {
                let (status, body) = self
                    .remote
                    .request(Method::PUT, "", None, Duration::ZERO)
                    .await?;
                if !matches!(status.as_u16(), 201 | 202 | 412) {
                    return Err(peer_error(status, &body));
                }
            }
            _ => return Err(peer_error(status, &body)),
        }
        let mut manifest = match self.manifest().await? {
            Some(m) => m,
            None => {
                let mut epoch = [0u8; 16];
                SystemRandom::new()
                    .fill(&mut epoch)
                    .map_err(|_| crypto_failed("drawing an epoch"))?;
                Manifest {
                    epoch: base32(&epoch),
                    databases: BTreeSet::new(),
                }
            }
        };
        let before = manifest.databases.len();
        manifest.databases.extend(databases.iter().cloned());
        if manifest.databases.len() != before || before == 0 {
            self.put_manifest(&manifest).await?;
        }
        Ok(manifest.epoch)
    }

    /// The current cloud revisions of `ids` (absent ones are left out).
    async fn cloud_revs(&self, ids: &[String]) -> Result<BTreeMap<String, String>> {
        let reply = self
            .remote
            .json(
                Method::POST,
                "/_all_docs",
                Some(&json!({"keys": ids})),
                &[200],
            )
            .await?;
        let mut revs = BTreeMap::new();
        for row in reply
            .get("rows")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(rev)) = (
                row.get("id").and_then(Value::as_str),
                row.pointer("/value/rev").and_then(Value::as_str),
            ) {
                revs.insert(id.to_owned(), rev.to_owned());
            }
        }
        Ok(revs)
    }

    /// Stores one sealed bundle alone, as the raw attachment of its cloud document.
    async fn put_sealed(&self, cloud_id: &str, rev: Option<&str>, sealed: Vec<u8>) -> Result<()> {
        let mut path = format!("/{cloud_id}/{SEALED}");
        if let Some(rev) = rev {
            path.push_str("?rev=");
            path.push_str(rev);
        }
        let (status, body) = self
            .remote
            .request_typed(Method::PUT, &path, "application/octet-stream", sealed)
            .await?;
        match status.as_u16() {
            200..=202 => Ok(()),
            _ => Err(peer_error(status, &body)),
        }
    }

    /// Uploads sealed bundles: the small ones in one `_bulk_docs`, the large ones alone. A
    /// conflict (the cloud document changed meanwhile) is retried with its new revision.
    ///
    /// `fresh`: the documents are most likely not on the server yet (the first run of an
    /// epoch), so the first attempt skips asking for their revisions; one that is there after
    /// all conflicts and is retried with its revision.
    async fn upload(&self, batch: Vec<Sealed>, fresh: bool) -> Result<()> {
        let mut pending = batch;
        for attempt in 0..4 {
            if pending.is_empty() {
                return Ok(());
            }
            let revs = if fresh && attempt == 0 {
                BTreeMap::new()
            } else {
                let ids: Vec<String> = pending.iter().map(|(id, _)| id.clone()).collect();
                self.cloud_revs(&ids).await?
            };
            let (small, large): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|(_, sealed)| sealed.len() <= INLINE_BYTES);
            let mut retry = Vec::new();
            for (id, sealed) in large {
                match self
                    .put_sealed(&id, revs.get(&id).map(String::as_str), sealed.clone())
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.status() == 409 => retry.push((id, sealed)),
                    Err(e) => return Err(e),
                }
            }
            if !small.is_empty() {
                let docs: Vec<Value> = small
                    .iter()
                    .map(|(id, sealed)| {
                        let mut doc = Map::new();
                        doc.insert("_id".into(), json!(id));
                        if let Some(rev) = revs.get(id) {
                            doc.insert("_rev".into(), json!(rev));
                        }
                        doc.insert(
                            "_attachments".into(),
                            json!({SEALED: {
                                "content_type": "application/octet-stream",
                                "data": data_encoding::BASE64.encode(sealed),
                            }}),
                        );
                        Value::Object(doc)
                    })
                    .collect();
                let reply = self
                    .remote
                    .json(
                        Method::POST,
                        "/_bulk_docs",
                        Some(&json!({"docs": docs})),
                        &[201, 202],
                    )
                    .await?;
                // Per-document failures: a conflict retries; a refusal by the server's rules
                // (401, 403, 413) ends the run with that status; anything else is the
                // server's trouble (transient).
                let mut failed: BTreeMap<String, (String, String)> = BTreeMap::new();
                for row in reply.as_array().into_iter().flatten() {
                    if let (Some(id), Some(error)) = (
                        row.get("id").and_then(Value::as_str),
                        row.get("error").and_then(Value::as_str),
                    ) {
                        let reason = row
                            .get("reason")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        failed.insert(id.to_owned(), (error.to_owned(), reason.to_owned()));
                    }
                }
                for (id, sealed) in small {
                    match failed.remove(&id) {
                        None => {}
                        Some((error, _)) if error == "conflict" => retry.push((id, sealed)),
                        Some((error, reason)) => {
                            let status = match error.as_str() {
                                "unauthorized" => 401,
                                "forbidden" => 403,
                                "too_large" | "document_too_large" => 413,
                                _ => 502,
                            };
                            return Err(Error::couch(
                                status,
                                error,
                                format!("the server did not store a backup document: {reason}"),
                            ));
                        }
                    }
                }
            }
            pending = retry;
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::Transport(format!(
                "backup: {} cloud documents kept changing under the upload",
                pending.len()
            )))
        }
    }

    /// Backs `db` up: every document changed since the last checkpoint, then checkpoints.
    /// Runs until the database's changes are caught up; calls `progress` after each batch.
    pub async fn run(
        &self,
        db: &Database,
        mut progress: impl FnMut(&BackupStats, u64),
    ) -> Result<BackupStats> {
        let epoch = self.prepare(&[db.name().to_owned()]).await?;
        let ckpt = checkpoint_id(&self.key);
        let since = {
            let d = db.clone();
            let id = ckpt.clone();
            match blocking(move || d.get_local(&id)).await {
                Ok(doc) if doc.get("epoch").and_then(Value::as_str) == Some(epoch.as_str()) => {
                    doc.get("seq").and_then(Value::as_u64).unwrap_or(0)
                }
                Ok(_) => 0,
                Err(e) if e.status() == 404 => 0,
                Err(e) => return Err(e),
            }
        };
        let mut stats = BackupStats {
            seq: since,
            ..BackupStats::default()
        };
        let fresh = since == 0;
        // The next page is read and sealed while the current one uploads.
        let seal = |from: u64| {
            let (d, key, tmp) = (db.clone(), self.key.clone(), self.tmp.clone());
            blocking(move || seal_changes(&d, &key, &tmp, from))
        };
        let mut next = tokio::spawn(seal(since));
        loop {
            let (batch, upto, pending) = next.await.map_err(|e| {
                Error::couch(500, "internal_server_error", format!("worker failed: {e}"))
            })??;
            if batch.is_empty() && upto == stats.seq {
                progress(&stats, pending);
                return Ok(stats);
            }
            next = tokio::spawn(seal(upto));
            let (docs, bytes) = (
                batch.len() as u64,
                batch.iter().map(|(_, s)| s.len() as u64).sum::<u64>(),
            );
            self.upload(batch, fresh).await?;
            let (d, id, epoch) = (db.clone(), ckpt.clone(), epoch.clone());
            blocking(move || {
                let old = d.get_local(&id).ok();
                let rev = old
                    .as_ref()
                    .and_then(|o| o.get("_rev"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let mut body = Map::new();
                body.insert("epoch".into(), json!(epoch));
                body.insert("seq".into(), json!(upto));
                d.put_local(&id, body, rev.as_deref()).map(|_| ())
            })
            .await?;
            stats.docs += docs;
            stats.bytes += bytes;
            stats.seq = upto;
            progress(&stats, pending);
        }
    }

    /// Restores every database of the backup into `store` (creating the missing ones).
    /// Documents merge with what is there as replicated revisions do. Fails with 404
    /// `not_found` when the server holds no backup under this key (a wrong secret); sealed
    /// documents that do not authenticate are listed in the report and not imported.
    pub async fn restore(
        &self,
        store: &Store,
        mut progress: impl FnMut(&RestoreReport),
    ) -> Result<RestoreReport> {
        let no_backup = || {
            Error::not_found(format!(
                "no backup under this recovery secret at {} (a wrong secret, or another server)",
                self.remote.display_url()
            ))
        };
        let (status, body) = self
            .remote
            .request(Method::GET, "", None, Duration::ZERO)
            .await?;
        match status.as_u16() {
            200 => {}
            404 => return Err(no_backup()),
            _ => return Err(peer_error(status, &body)),
        }
        let manifest = self.manifest().await?.ok_or_else(no_backup)?;
        let mut report = RestoreReport::default();
        let mut dbs = BTreeMap::new();
        for name in &manifest.databases {
            let db = if store.exists(name) {
                store.db(name)?
            } else {
                store.create_db(name)?
            };
            dbs.insert(name.clone(), db);
            report.databases.push(name.clone());
        }
        let mut start: Option<String> = None;
        loop {
            let mut path = format!("/_all_docs?include_docs=true&limit={}", RESTORE_PAGE + 1);
            if let Some(key) = &start {
                path.push_str("&startkey=");
                path.push_str(
                    &percent_encoding::utf8_percent_encode(
                        &json!(key).to_string(),
                        percent_encoding::NON_ALPHANUMERIC,
                    )
                    .to_string(),
                );
            }
            let page = self.remote.json(Method::GET, &path, None, &[200]).await?;
            let rows: Vec<(String, u64)> = page
                .get("rows")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|row| {
                    let id = row.get("id").and_then(Value::as_str)?;
                    let len = row
                        .pointer(&format!("/doc/_attachments/{SEALED}/length"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    Some((id.to_owned(), len))
                })
                .collect();
            let more = rows.len() > RESTORE_PAGE;
            let (this, next) = if more {
                let mut rows = rows;
                let next = rows.pop().map(|(id, _)| id);
                (rows, next)
            } else {
                (rows, None)
            };
            // Read in groups of at most FETCH_BYTES of sealed content (one large document
            // alone), so an answer stays bounded whatever the attachments weigh.
            let mut sealed = Vec::new();
            let mut group: Vec<String> = Vec::new();
            let mut group_bytes = 0u64;
            for (id, len) in this {
                if id == MANIFEST || id.starts_with('_') {
                    continue;
                }
                if !group.is_empty() && group_bytes + len > FETCH_BYTES {
                    sealed.extend(self.fetch_sealed(&std::mem::take(&mut group)).await?);
                    group_bytes = 0;
                }
                group_bytes += len;
                group.push(id);
            }
            sealed.extend(self.fetch_sealed(&group).await?);
            let (key, tmp) = (self.key.clone(), self.tmp.clone());
            let dbs_for = dbs.clone();
            let (written, tampered) = blocking(move || {
                let mut by_db: BTreeMap<String, Vec<Fetched>> = BTreeMap::new();
                let mut tampered = Vec::new();
                let mut written = 0u64;
                for (cloud_id, bytes) in sealed {
                    let opened = key
                        .open(&cloud_id, &bytes)
                        .and_then(|plain| decode_bundle(&plain, &tmp));
                    match opened {
                        Ok((db, id, revs))
                            if dbs_for.contains_key(&db) && key.cloud_id(&db, &id) == cloud_id =>
                        {
                            written += 1;
                            by_db.entry(db).or_default().extend(revs);
                        }
                        Ok(_) => tampered.push(cloud_id),
                        Err(_) => tampered.push(cloud_id),
                    }
                }
                for (name, revs) in by_db {
                    if let Some(db) = dbs_for.get(&name) {
                        write_local(db, revs, &tmp)?;
                    }
                }
                Ok((written, tampered))
            })
            .await?;
            report.docs += written;
            report.tampered.extend(tampered);
            progress(&report);
            match next {
                Some(id) => start = Some(id),
                None => return Ok(report),
            }
        }
    }

    /// The sealed bytes of `ids`: `_bulk_get` with attachments, or one raw read each where
    /// the server has no `_bulk_get`.
    async fn fetch_sealed(&self, ids: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let docs: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
        let (status, body) = self
            .remote
            .request(
                Method::POST,
                "/_bulk_get?attachments=true",
                json_body(&json!({"docs": docs})),
                Duration::ZERO,
            )
            .await?;
        if status.as_u16() == 200 {
            let reply: Value = serde_json::from_slice(&body)
                .map_err(|e| Error::PeerMisbehaved(format!("_bulk_get answer: {e}")))?;
            for result in reply
                .get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(id) = result.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let data = result
                    .pointer("/docs/0/ok/_attachments")
                    .and_then(|a| a.get(SEALED))
                    .and_then(|c| c.get("data"))
                    .and_then(Value::as_str)
                    .and_then(crate::doc::decode_base64);
                match data {
                    Some(bytes) => out.push((id.to_owned(), bytes)),
                    // Not a sealed bundle (someone else's document): reported as tampered.
                    None => out.push((id.to_owned(), Vec::new())),
                }
            }
            return Ok(out);
        }
        if !matches!(status.as_u16(), 400 | 404 | 405 | 415 | 501) {
            return Err(peer_error(status, &body));
        }
        for id in ids {
            let path = format!("/{id}/{SEALED}");
            let (status, body) = self
                .remote
                .request(Method::GET, &path, None, Duration::ZERO)
                .await?;
            match status.as_u16() {
                200 => out.push((id.clone(), body.to_vec())),
                404 => out.push((id.clone(), Vec::new())),
                _ => return Err(peer_error(status, &body)),
            }
        }
        Ok(out)
    }
}

/// Writes restored revisions into `db` (`new_edits=false`); a revision the database refuses
/// fails the restore.
fn write_local(db: &Database, revs: Vec<Fetched>, tmp: &Path) -> Result<()> {
    let mut keys = Vec::with_capacity(revs.len());
    let mut updates = Vec::with_capacity(revs.len());
    for rev in revs {
        keys.push((rev.id.clone(), rev.rev.clone()));
        updates.push(rev.into_update(tmp));
    }
    for (result, (id, rev)) in db.bulk_docs(updates, false)?.into_iter().zip(keys) {
        if let Err(e) = result.result {
            return Err(Error::couch(
                e.status(),
                e.error().to_owned(),
                format!("restoring {id:?} revision {rev}: {}", e.reason()),
            ));
        }
    }
    Ok(())
}

/// Reads changes of `db` after `since` and seals the changed documents, up to a page or
/// [`BATCH_BYTES`]: the sealed bundles, the sequence they cover, and how many changes remain.
fn seal_changes(
    db: &Database,
    key: &BackupKey,
    tmp: &Path,
    since: u64,
) -> Result<(Vec<Sealed>, u64, u64)> {
    let changes = db.changes(
        &ChangesQuery {
            since,
            limit: Some(PAGE),
            ..ChangesQuery::default()
        },
        None,
    )?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut upto = since;
    let total = changes.results.len() as u64;
    let mut taken = 0u64;
    let opts = GetOptions {
        revs: true,
        attachments: AttachmentMode::Follows,
        ..GetOptions::default()
    };
    for change in changes.results {
        let mut revs = Vec::new();
        match db.open_revs(&change.id, &OpenRevs::All, &opts) {
            Ok(found) => {
                for rev in found {
                    if let OpenRev::Ok(doc) = rev {
                        revs.push(from_local(db, doc, tmp)?);
                    }
                }
            }
            Err(e) if e.status() == 404 => {}
            Err(e) => return Err(e),
        }
        if !revs.is_empty() {
            let cloud_id = key.cloud_id(db.name(), &change.id);
            let plain = encode_bundle(db.name(), &change.id, revs)?;
            let sealed = key.seal(&cloud_id, &plain)?;
            bytes += sealed.len();
            out.push((cloud_id, sealed));
        }
        upto = change.seq;
        taken += 1;
        if bytes >= BATCH_BYTES {
            break;
        }
    }
    if taken == total {
        upto = upto.max(changes.last_seq);
    }
    Ok((out, upto, changes.pending + (total - taken)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_detects_tampering_and_moves() {
        let key = BackupKey::from_secret(&[7; SECRET_LEN]).unwrap_or_else(|e| panic!("{e}"));
        let other = BackupKey::from_secret(&[8; SECRET_LEN]).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(key.cloud_db(), other.cloud_db());
        assert!(key.cloud_db().starts_with("thali-backup-"));
        let id = key.cloud_id("notes", "a");
        assert_eq!(id, key.cloud_id("notes", "a"));
        assert_ne!(id, key.cloud_id("notes", "b"));
        assert_ne!(id, key.cloud_id("note", "sa"));
        let sealed = key
            .seal(&id, b"secret words")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.open(&id, &sealed).ok().as_deref(),
            Some(&b"secret words"[..])
        );
        // Another nonce each time.
        assert_ne!(sealed, key.seal(&id, b"secret words").unwrap_or_default());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(key.open(&id, &flipped).is_err());
        assert!(key.open(&key.cloud_id("notes", "b"), &sealed).is_err());
        assert!(other.open(&id, &sealed).is_err());
        assert!(key.open(&id, &sealed[..10]).is_err());
        assert!(key.open(&id, &[]).is_err());
    }

    #[test]
    fn damaged_bundles_are_errors_not_panics() {
        let dir = std::env::temp_dir();
        for bad in [&b""[..], b"\x00\x00", b"garbage that is not deflate"] {
            assert!(decode_bundle(bad, &dir).is_err());
        }
        let mut enc = DeflateEncoder::new(Vec::new(), Compression::fast());
        let _ = enc.write_all(&[0, 0, 0, 50, b'{']);
        let cut = enc.finish().unwrap_or_default();
        assert!(decode_bundle(&cut, &dir).is_err());
    }
}
