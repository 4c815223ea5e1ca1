//! A revision on its way from a source to a target: its JSON (with `_revisions`) and the
//! content of the attachments the target lacks, spooled as [`PreparedAttachment`]s (in memory
//! when small, in a temporary file otherwise) in the form the source stored them — gzip-encoded
//! content keeps its bytes and therefore its digest.
//!
//! In [`Fetched::json`] every `_attachments` entry is either a stub (`"stub": true`: the target
//! has it from an ancestor) or names content in [`Fetched::atts`] (`"follows": true`, with
//! `length`, `digest` and, for gzip content, `encoding`/`encoded_length` describing exactly the
//! spooled bytes).

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::attachment::{AttachmentWriter, Encoding, PreparedAttachment, is_compressible};
use crate::doc::{AttachmentKind, DocUpdate, ParseOptions, decode_base64};
use crate::error::{Error, Result};
use crate::read::AttachmentRef;
use crate::store::Database;

/// Attachment content carried with a revision.
pub(crate) struct Content {
    /// The attachment's name.
    pub(crate) name: String,
    /// The generation that introduced the content, as the source said.
    pub(crate) revpos: Option<u64>,
    /// The content, as the source stored it.
    pub(crate) data: PreparedAttachment,
}

/// One revision fetched from a source.
pub(crate) struct Fetched {
    /// Document id.
    pub(crate) id: String,
    /// Revision (for messages).
    pub(crate) rev: String,
    /// The document, `_revisions` included; see the module docs for `_attachments`.
    pub(crate) json: Map<String, Value>,
    /// Content of the attachments marked `follows`.
    pub(crate) atts: Vec<Content>,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::PeerMisbehaved(what.to_string())
}

fn io_err(tmp: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io("spooling a replicated attachment", tmp, e)
}

/// The `_attachments` entry describing `content` exactly as it travels.
fn content_entry(content: &Content) -> Value {
    let data = &content.data;
    let mut entry = Map::new();
    entry.insert("content_type".into(), json!(data.content_type));
    if let Some(revpos) = content.revpos {
        entry.insert("revpos".into(), json!(revpos));
    }
    entry.insert("digest".into(), json!(data.digest()));
    entry.insert("length".into(), json!(data.length));
    entry.insert("follows".into(), Value::Bool(true));
    if data.encoding == Encoding::Gzip {
        entry.insert("encoding".into(), json!("gzip"));
        entry.insert("encoded_length".into(), json!(data.stored_len));
    }
    Value::Object(entry)
}

/// Decoded content whose declared digest is not the MD5 of its bytes was stored gzip-encoded
/// by its source (CouchDB's digest of a compressible attachment is that of its gzip stream):
/// store it encoded too, as CouchDB would (the same encoder gives the same digest). Anything
/// else is kept exactly as it came.
pub(crate) fn settle(
    mut prepared: PreparedAttachment,
    declared_digest: Option<&str>,
    tmp: &Path,
) -> Result<PreparedAttachment> {
    let stored_encoded =
        declared_digest.is_some_and(|d| d.starts_with("md5-") && d != prepared.digest().as_str());
    if prepared.encoding != Encoding::Identity
        || !stored_encoded
        || !is_compressible(&prepared.content_type)
    {
        return Ok(prepared);
    }
    let mut writer = AttachmentWriter::new(&prepared.content_type, true, tmp);
    prepared.for_each_chunk(|_, bytes| writer.write_all(bytes).map_err(io_err(tmp)))?;
    writer.finish()
}

impl Fetched {
    /// A revision from its JSON and the content parts that came with it: inline `data` is
    /// decoded and spooled, `follows` entries are matched with `supplied` by name, stubs stay.
    pub(crate) fn build(
        mut doc: Map<String, Value>,
        supplied: Vec<Content>,
        tmp: &Path,
    ) -> Result<Fetched> {
        let id = doc
            .get("_id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a fetched revision has no _id"))?
            .to_owned();
        let rev = doc
            .get("_rev")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default();
        let mut supplied: Vec<Option<Content>> = supplied.into_iter().map(Some).collect();
        let mut atts = Vec::new();
        match doc.get_mut("_attachments") {
            None | Some(Value::Null) => {}
            Some(Value::Object(entries)) => {
                for (name, spec) in entries.iter_mut() {
                    if spec.get("stub") == Some(&Value::Bool(true)) {
                        continue;
                    }
                    let content = if spec.get("follows") == Some(&Value::Bool(true)) {
                        supplied
                            .iter_mut()
                            .find(|c| c.as_ref().is_some_and(|c| c.name == *name))
                            .and_then(Option::take)
                            .ok_or_else(|| {
                                bad(format!(
                                    "attachment {name:?} of {id:?} follows, but no part carried it"
                                ))
                            })?
                    } else if let Some(Value::String(b64)) = spec.get("data") {
                        let bytes = decode_base64(b64).ok_or_else(|| {
                            bad(format!("attachment {name:?} of {id:?}: data is not base64"))
                        })?;
                        let content_type = spec
                            .get("content_type")
                            .and_then(Value::as_str)
                            .unwrap_or("application/octet-stream");
                        let prepared =
                            PreparedAttachment::from_bytes(content_type, &bytes, false, tmp)?;
                        Content {
                            name: name.clone(),
                            revpos: spec.get("revpos").and_then(Value::as_u64),
                            data: settle(
                                prepared,
                                spec.get("digest").and_then(Value::as_str),
                                tmp,
                            )?,
                        }
                    } else {
                        return Err(bad(format!(
                            "attachment {name:?} of {id:?} is neither a stub nor has content"
                        )));
                    };
                    *spec = content_entry(&content);
                    atts.push(content);
                }
            }
            Some(_) => return Err(bad(format!("_attachments of {id:?} is not an object"))),
        }
        Ok(Fetched {
            id,
            rev,
            json: doc,
            atts,
        })
    }

    /// Stored bytes of the content carried.
    pub(crate) fn content_bytes(&self) -> u64 {
        self.atts.iter().map(|c| c.data.stored_len).sum()
    }

    /// Whether any carried content is gzip-encoded.
    pub(crate) fn has_gzip(&self) -> bool {
        self.atts.iter().any(|c| c.data.encoding == Encoding::Gzip)
    }

    /// The revision as a write for a local database (`new_edits=false`).
    pub(crate) fn into_update(self, tmp: &Path) -> Result<DocUpdate> {
        let mut update = DocUpdate::from_json(
            self.json,
            ParseOptions {
                compress: true,
                tmp_dir: tmp,
            },
        )?;
        let mut contents = self.atts;
        for input in update.attachments.iter_mut().flatten() {
            if !matches!(input.kind, AttachmentKind::Follows { .. }) {
                continue;
            }
            let at = contents
                .iter()
                .position(|c| c.name == input.name)
                .ok_or_else(|| bad(format!("no content for attachment {:?}", input.name)))?;
            let content = contents.swap_remove(at);
            input.kind = AttachmentKind::Data {
                content: content.data,
                revpos: content.revpos,
            };
        }
        Ok(update)
    }

    /// Gzip content turned into its decoded form (for a target that does not take encoded
    /// parts); the entries change accordingly.
    pub(crate) fn decode_gzip(&mut self, tmp: &Path) -> Result<()> {
        for mut content in std::mem::take(&mut self.atts) {
            if content.data.encoding == Encoding::Gzip {
                content.data = decode_to_identity(content.data, tmp)?;
                if let Some(Value::Object(entries)) = self.json.get_mut("_attachments") {
                    if let Some(entry) = entries.get_mut(&content.name) {
                        *entry = content_entry(&content);
                    }
                }
            }
            self.atts.push(content);
        }
        Ok(())
    }

    /// Bytes of the content once decoded (what inline `data` would carry).
    pub(crate) fn decoded_bytes(&self) -> u64 {
        self.atts.iter().map(|c| c.data.length).sum()
    }

    /// The revision with its content inline as base64 `data` (decoded), for `_bulk_docs`. Gzip
    /// content loses its digest (the target computes its own); plain content keeps it.
    pub(crate) fn into_inline(self) -> Result<Value> {
        let mut json = self.json;
        if let Some(Value::Object(entries)) = json.get_mut("_attachments") {
            for content in self.atts {
                let gzip = content.data.encoding == Encoding::Gzip;
                let digest = content.data.digest();
                let mut entry = Map::new();
                entry.insert("content_type".into(), json!(content.data.content_type));
                if let Some(revpos) = content.revpos {
                    entry.insert("revpos".into(), json!(revpos));
                }
                if !gzip {
                    entry.insert("digest".into(), json!(digest));
                }
                let bytes = read_decoded(content.data)?;
                entry.insert("data".into(), json!(data_encoding::BASE64.encode(&bytes)));
                entries.insert(content.name, Value::Object(entry));
            }
        }
        Ok(Value::Object(json))
    }
}

/// Whether a revision read without attachment content (`_bulk_get?attachments=false`) needs
/// it: some stub is newer than every `possible_ancestor` on its path (CouchDB's `atts_since`
/// rule), or an entry has no content at all.
pub(crate) fn needs_content(doc: &Map<String, Value>, possible_ancestors: &[String]) -> bool {
    let Some(Value::Object(atts)) = doc.get("_attachments") else {
        return false;
    };
    let covered = covered_generation(doc, possible_ancestors);
    atts.values().any(|a| {
        if a.get("stub") == Some(&Value::Bool(true)) {
            a.get("revpos")
                .and_then(Value::as_u64)
                .is_none_or(|p| p > covered)
        } else {
            a.get("data").is_none()
        }
    })
}

/// The highest generation among `revs` that lie on the revision's path (`_revisions`).
fn covered_generation(doc: &Map<String, Value>, revs: &[String]) -> u64 {
    let Some(revisions) = doc.get("_revisions") else {
        return 0;
    };
    let start = revisions.get("start").and_then(Value::as_u64).unwrap_or(0);
    let Some(ids) = revisions.get("ids").and_then(Value::as_array) else {
        return 0;
    };
    revs.iter()
        .filter_map(|rev| {
            let (pos, hash) = rev.split_once('-')?;
            let pos: u64 = pos.parse().ok()?;
            let index = usize::try_from(start.checked_sub(pos)?).ok()?;
            (ids.get(index)?.as_str()? == hash).then_some(pos)
        })
        .max()
        .unwrap_or(0)
}

/// A stored attachment's bytes, spooled as they are stored (gzip stays gzip).
pub(crate) fn spool_stored(
    db: &Database,
    att: &AttachmentRef,
    tmp: &Path,
) -> Result<PreparedAttachment> {
    let mut writer = match att.encoding {
        Encoding::Gzip => AttachmentWriter::pre_encoded_gzip(&att.content_type, att.length, tmp),
        Encoding::Identity => AttachmentWriter::new(&att.content_type, false, tmp),
    };
    for index in 0..att.chunks() {
        let chunk = db.attachment_chunk(att, index)?;
        writer.write_all(&chunk).map_err(io_err(tmp))?;
    }
    writer.finish()
}

/// A writer that refuses more than `left` bytes (decoding never outgrows what was declared).
struct Capped<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other(
                "decodes to more than its declared length",
            ));
        }
        self.left -= buf.len() as u64;
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decode_into<W: Write>(mut encoded: PreparedAttachment, out: W) -> Result<W> {
    let declared = encoded.length;
    let content_type = encoded.content_type.clone();
    let corrupt = |e: std::io::Error| {
        Error::Corrupt(format!(
            "gzip content of a {content_type} attachment does not decode: {e}"
        ))
    };
    let mut decoder = flate2::write::GzDecoder::new(Capped {
        inner: out,
        left: declared,
    });
    encoded.for_each_chunk(|_, bytes| decoder.write_all(bytes).map_err(corrupt))?;
    let capped = decoder.finish().map_err(corrupt)?;
    if capped.left != 0 {
        return Err(Error::Corrupt(format!(
            "gzip content of a {content_type} attachment decodes to {} bytes, {declared} declared",
            declared - capped.left
        )));
    }
    Ok(capped.inner)
}

/// Gzip content decoded into plain content (spooled).
pub(crate) fn decode_to_identity(
    encoded: PreparedAttachment,
    tmp: &Path,
) -> Result<PreparedAttachment> {
    let writer = AttachmentWriter::new(&encoded.content_type, false, tmp);
    decode_into(encoded, writer)?.finish()
}

/// The content decoded, in memory (callers bound its size first).
pub(crate) fn read_decoded(mut content: PreparedAttachment) -> Result<Vec<u8>> {
    if content.encoding == Encoding::Gzip {
        return decode_into(content, Vec::new());
    }
    let mut out = Vec::with_capacity(usize::try_from(content.stored_len).unwrap_or(0));
    content.for_each_chunk(|_, bytes| {
        out.extend_from_slice(bytes);
        Ok(())
    })?;
    Ok(out)
}

/// A `multipart/related` request body for `PUT /db/doc?new_edits=false`, as CouchDB's
/// replicator sends it: the JSON document, then one part per attachment that follows, in
/// `_attachments` order, each with exactly the declared bytes (gzip ones with
/// `Content-Encoding: gzip`).
pub(crate) struct MultipartBody {
    /// The request's `Content-Type`.
    pub(crate) content_type: String,
    /// Exact length in bytes.
    pub(crate) length: u64,
    pieces: Vec<Piece>,
}

enum Piece {
    Bytes(Vec<u8>),
    Content(PreparedAttachment),
}

/// Characters a header value may not carry.
fn header_safe(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

impl MultipartBody {
    pub(crate) fn new(doc: Fetched) -> Result<MultipartBody> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| Error::Corrupt(format!("random source: {e}")))?;
        let boundary = data_encoding::HEXLOWER.encode(&nonce);
        let json = serde_json::to_vec(&doc.json)
            .map_err(|e| Error::PeerMisbehaved(format!("unserialisable document: {e}")))?;
        let order: Vec<String> = match doc.json.get("_attachments") {
            Some(Value::Object(entries)) => entries
                .iter()
                .filter(|(_, e)| e.get("follows") == Some(&Value::Bool(true)))
                .map(|(name, _)| name.clone())
                .collect(),
            _ => Vec::new(),
        };
        let mut contents: Vec<Option<Content>> = doc.atts.into_iter().map(Some).collect();
        let mut pieces = Vec::with_capacity(2 + 2 * order.len());
        let mut head =
            format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n").into_bytes();
        head.extend_from_slice(&json);
        pieces.push(Piece::Bytes(head));
        for name in order {
            let content = contents
                .iter_mut()
                .find(|c| c.as_ref().is_some_and(|c| c.name == name))
                .and_then(Option::take)
                .ok_or_else(|| bad(format!("no content for attachment {name:?}")))?;
            let data = content.data;
            // The file name lets servers that match parts by name (pouchdb-server) do so; names
            // a quoted string cannot carry plainly are left to order, as CouchDB matches.
            let disposition = if name
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
            {
                "Content-Disposition: attachment\r\n".to_owned()
            } else {
                format!("Content-Disposition: attachment; filename=\"{name}\"\r\n")
            };
            let encoding = if data.encoding == Encoding::Gzip {
                "Content-Encoding: gzip\r\n"
            } else {
                ""
            };
            let part_head = format!(
                "\r\n--{boundary}\r\n{disposition}Content-Type: {}\r\nContent-Length: {}\r\n{encoding}\r\n",
                header_safe(&data.content_type),
                data.stored_len
            );
            pieces.push(Piece::Bytes(part_head.into_bytes()));
            pieces.push(Piece::Content(data));
        }
        pieces.push(Piece::Bytes(format!("\r\n--{boundary}--").into_bytes()));
        let length = pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len() as u64,
                Piece::Content(c) => c.stored_len,
            })
            .sum();
        Ok(MultipartBody {
            content_type: format!("multipart/related; boundary=\"{boundary}\""),
            length,
            pieces,
        })
    }

    /// Sends the body into `tx` (blocking: spooled content may be read from disk). Stops when
    /// the receiver goes away.
    pub(crate) fn produce(self, tx: &mpsc::Sender<std::io::Result<Bytes>>) {
        for piece in self.pieces {
            let sent = match piece {
                Piece::Bytes(bytes) => tx.blocking_send(Ok(Bytes::from(bytes))).is_ok(),
                Piece::Content(mut content) => content
                    .for_each_chunk(|_, bytes| {
                        tx.blocking_send(Ok(Bytes::copy_from_slice(bytes)))
                            .map_err(|_| Error::Transport("request body abandoned".into()))
                    })
                    .map_err(|e| {
                        let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    })
                    .is_ok(),
            };
            if !sent {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> std::path::PathBuf {
        std::env::temp_dir()
    }

    #[test]
    fn inline_data_with_a_gzip_digest_is_stored_encoded() {
        // CouchDB's `_bulk_get` shape: decoded data, digest of its stored gzip stream.
        let doc = json!({"_id": "t", "_rev": "1-c867be19d9bdb750f49d4bc94e291a09",
            "_revisions": {"start": 1, "ids": ["c867be19d9bdb750f49d4bc94e291a09"]},
            "_attachments": {"t.txt": {"content_type": "text/plain", "revpos": 1,
                "digest": "md5-CzDfAHx884e72GgEVUS6Ug==",
                "data": "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=",
                "encoding": "gzip", "encoded_length": 31},
              "b.bin": {"content_type": "application/octet-stream", "revpos": 1,
                "digest": "md5-XUFAKrxLKna5cZ2REBfFkg==", "data": "aGVsbG8="}}});
        let Value::Object(doc) = doc else { panic!() };
        let fetched = Fetched::build(doc, Vec::new(), &tmp()).unwrap();
        assert_eq!(fetched.atts.len(), 2);
        let text = fetched.atts.iter().find(|c| c.name == "t.txt").unwrap();
        assert_eq!(text.data.encoding, Encoding::Gzip);
        assert_eq!(text.data.length, 35);
        let bin = fetched.atts.iter().find(|c| c.name == "b.bin").unwrap();
        assert_eq!(bin.data.encoding, Encoding::Identity);
        assert_eq!(bin.data.digest(), "md5-XUFAKrxLKna5cZ2REBfFkg==");
        let entry = &fetched.json["_attachments"]["t.txt"];
        assert_eq!(entry["follows"], true);
        assert_eq!(entry["encoding"], "gzip");
        assert!(entry.get("data").is_none());
        let update = fetched.into_update(&tmp()).unwrap();
        assert!(
            update
                .attachments
                .unwrap()
                .iter()
                .all(|a| matches!(a.kind, AttachmentKind::Data { .. }))
        );
    }

    #[test]
    fn stubs_need_content_only_when_newer_than_the_ancestors() {
        let doc = json!({"_id": "d", "_rev": "3-c", "_revisions": {"start": 3, "ids": ["c", "b", "a"]},
            "_attachments": {"old": {"stub": true, "revpos": 1}, "new": {"stub": true, "revpos": 3}}});
        let Value::Object(doc) = doc else { panic!() };
        assert!(needs_content(&doc, &[]));
        assert!(needs_content(&doc, &["2-b".into()]));
        assert!(needs_content(&doc, &["2-x".into(), "1-a".into()]));
        let mut old_only = doc.clone();
        old_only["_attachments"]
            .as_object_mut()
            .unwrap()
            .remove("new");
        assert!(!needs_content(&old_only, &["2-b".into()]));
        assert!(
            needs_content(&old_only, &["2-zzz".into()]),
            "not on the path"
        );
        assert!(!needs_content(&Map::new(), &[]));
    }

    #[test]
    fn gzip_content_decodes_within_its_declared_length() {
        let plain = b"the same words again and again and again".repeat(20);
        let encoded = PreparedAttachment::from_bytes("text/plain", &plain, true, &tmp()).unwrap();
        assert_eq!(encoded.encoding, Encoding::Gzip);
        let decoded = decode_to_identity(encoded, &tmp()).unwrap();
        assert_eq!(decoded.length, plain.len() as u64);
        assert_eq!(read_decoded(decoded).unwrap(), plain);
        // A gzip stream that claims a shorter length is refused.
        let mut lying = PreparedAttachment::from_bytes("text/plain", &plain, true, &tmp()).unwrap();
        lying.length = 10;
        assert!(read_decoded(lying).is_err());
    }
}
