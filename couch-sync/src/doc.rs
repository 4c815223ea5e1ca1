//! Documents as clients send them: splitting CouchDB's special `_` members from the body and
//! validating them with CouchDB's errors.

use std::path::Path;

use serde_json::{Map, Value};

use crate::attachment::PreparedAttachment;
use crate::error::{Error, Result};
use crate::rev::RevId;

/// Longest document id accepted, in bytes.
pub const MAX_ID_LEN: usize = 8 * 1024;
/// Most attachments one document revision may carry.
pub const MAX_ATTACHMENTS: usize = 10_000;

/// A document id's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// An ordinary document.
    Normal,
    /// `_design/…`.
    Design,
    /// `_local/…`: not replicated, no revision history.
    Local,
}

/// Checks a document id as CouchDB does (`couch_doc:validate_docid`), with its
/// `illegal_docid` errors.
pub fn check_id(id: &str) -> Result<IdKind> {
    if id.is_empty() {
        return Err(Error::illegal_docid("Document id must not be empty"));
    }
    if id == "_design/" {
        return Err(Error::illegal_docid("Illegal document id `_design/`"));
    }
    if id == "_local/" {
        return Err(Error::illegal_docid("Illegal document id `_local/`"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::illegal_docid("Document id is too long"));
    }
    if let Some(rest) = id.strip_prefix('_') {
        if rest.starts_with("design/") {
            return Ok(IdKind::Design);
        }
        if rest.starts_with("local/") {
            return Ok(IdKind::Local);
        }
        return Err(Error::illegal_docid(
            "Only reserved document ids may start with underscore.",
        ));
    }
    Ok(IdKind::Normal)
}

/// One attachment as a client sent it in `_attachments`.
#[derive(Debug)]
pub struct AttachmentInput {
    /// The attachment's name.
    pub name: String,
    /// What the client sent for it.
    pub kind: AttachmentKind,
}

/// The forms an attachment takes in a document.
#[derive(Debug)]
pub enum AttachmentKind {
    /// `"stub": true`: keep the attachment of that name from an earlier revision.
    Stub {
        /// The digest the client believes it has, if given.
        digest: Option<String>,
    },
    /// Content given inline (`data`, base64) or in a multipart part (`follows`), prepared.
    Data {
        /// The content.
        content: PreparedAttachment,
        /// The generation that introduced this content, if the sender said (`revpos`).
        revpos: Option<u64>,
    },
    /// `"follows": true`: the content comes in a later multipart part.
    Follows {
        /// Content type.
        content_type: String,
        /// Decoded length the sender declared.
        length: Option<u64>,
        /// `"encoding"` of the part (`gzip`), if any.
        encoding: Option<String>,
        /// `revpos` if given.
        revpos: Option<u64>,
        /// Digest the sender declared.
        digest: Option<String>,
    },
}

/// `_revisions`: a revision's generation and the hashes of its path, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisions {
    /// Generation of the first id.
    pub start: u64,
    /// Hashes, newest first.
    pub ids: Vec<String>,
}

impl Revisions {
    /// The path as revision ids, newest first.
    pub fn path(&self) -> Result<Vec<RevId>> {
        let mut out = Vec::with_capacity(self.ids.len());
        for (i, hash) in self.ids.iter().enumerate() {
            let pos = self
                .start
                .checked_sub(i as u64)
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    Error::bad_request("_revisions has more ids than its start allows")
                })?;
            out.push(
                RevId::new(pos, hash)
                    .map_err(|_| Error::doc_validation("RevId isn't a valid hexadecimal"))?,
            );
        }
        Ok(out)
    }

    /// The revision this names (`start-ids[0]`), if it names one.
    pub fn newest(&self) -> Result<Option<RevId>> {
        match self.ids.first() {
            None => Ok(None),
            Some(hash) => RevId::new(self.start, hash)
                .map(Some)
                .map_err(|_| Error::doc_validation("RevId isn't a valid hexadecimal")),
        }
    }
}

/// A document write as parsed from a request.
#[derive(Debug, Default)]
pub struct DocUpdate {
    /// `_id`, if given in the body.
    pub id: Option<String>,
    /// `_rev`, if given.
    pub rev: Option<RevId>,
    /// `_deleted: true`.
    pub deleted: bool,
    /// The body without special members.
    pub body: Map<String, Value>,
    /// `_attachments`, when present (`None` when the member is absent).
    pub attachments: Option<Vec<AttachmentInput>>,
    /// `_revisions`, if given.
    pub revisions: Option<Revisions>,
}

/// How to treat `data` members while parsing.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions<'a> {
    /// Compress compressible attachment types.
    pub compress: bool,
    /// Where large attachment content may spill.
    pub tmp_dir: &'a Path,
}

impl DocUpdate {
    /// CouchDB's `max_document_size`: the body without attachments, as JSON, must fit.
    pub fn check_size(&self, max_bytes: usize) -> Result<()> {
        let size = serde_json::to_vec(&self.body)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > max_bytes {
            return Err(Error::document_too_large(self.id.as_deref().unwrap_or("")));
        }
        Ok(())
    }

    /// Splits a JSON object into a document update, with CouchDB's validation (its
    /// `couch_doc:transfer_fields`): members are taken in order, the body keeps the client's
    /// member order, `_revisions` wins over `_rev` (then `rev` is `_revisions`' newest entry),
    /// the `_replication_*` members of replicator documents and `_access` stay in the body, and
    /// any other unknown `_` member is refused.
    pub fn from_json(object: Map<String, Value>, opts: ParseOptions<'_>) -> Result<DocUpdate> {
        DocUpdate::parse(object, opts, false)
    }

    /// As [`from_json`](Self::from_json), for a replicator writing what it fetched: the `revpos`
    /// of inline attachment data is kept (CouchDB's replicator carries it in multipart
    /// requests), so later `atts_since` answers stay right.
    pub fn from_json_replicated(
        object: Map<String, Value>,
        opts: ParseOptions<'_>,
    ) -> Result<DocUpdate> {
        DocUpdate::parse(object, opts, true)
    }

    fn parse(
        object: Map<String, Value>,
        opts: ParseOptions<'_>,
        keep_revpos: bool,
    ) -> Result<DocUpdate> {
        let mut update = DocUpdate::default();
        let mut body = Map::with_capacity(object.len());
        for (key, value) in object {
            if !key.starts_with('_') {
                body.insert(key, value);
                continue;
            }
            match key.as_str() {
                "_id" => match value {
                    Value::String(id) => {
                        check_id(&id)?;
                        update.id = Some(id);
                    }
                    _ => return Err(Error::illegal_docid("Document id must be a string")),
                },
                "_rev" => {
                    // Once `_revisions` has named the revision, `_rev` is not even looked at.
                    if update.revisions.is_none() {
                        match value {
                            Value::String(rev) => update.rev = Some(rev.parse()?),
                            other => return Err(Error::bad_rev(other.to_string())),
                        }
                    }
                }
                "_deleted" => match value {
                    Value::Bool(b) => update.deleted = b,
                    _ => return Err(bad_member(&key)),
                },
                "_attachments" => match value {
                    Value::Object(map) => {
                        update.attachments = Some(parse_attachments(map, opts, keep_revpos)?);
                    }
                    _ => return Err(bad_member(&key)),
                },
                "_revisions" => match value {
                    Value::Object(map) => {
                        let revisions = parse_revisions(map)?;
                        update.rev = revisions.newest()?;
                        update.revisions = Some(revisions);
                    }
                    _ => return Err(bad_member(&key)),
                },
                "_revs_info" | "_conflicts" | "_deleted_conflicts" | "_local_seq" => {}
                "_access"
                | "_replication_id"
                | "_replication_state"
                | "_replication_state_time"
                | "_replication_state_reason"
                | "_replication_stats" => {
                    body.insert(key, value);
                }
                _ => return Err(bad_member(&key)),
            }
        }
        update.body = body;
        Ok(update)
    }
}

fn bad_member(key: &str) -> Error {
    let shown: String = key.chars().take(100).collect();
    Error::doc_validation(format!("Bad special document member: {shown}"))
}

/// `_revisions` as CouchDB checks it: an integer `start`, an array of string `ids`, and every
/// 32-character id hex.
fn parse_revisions(mut map: Map<String, Value>) -> Result<Revisions> {
    let start = match map.get("start") {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n
            .as_u64()
            .ok_or_else(|| Error::doc_validation("_revisions.start isn't an integer."))?,
        _ => return Err(Error::doc_validation("_revisions.start isn't an integer.")),
    };
    let ids = match map.remove("ids") {
        Some(Value::Array(ids)) => ids
            .into_iter()
            .map(|v| match v {
                Value::String(s) => {
                    if s.chars().count() == 32 && !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                        Err(Error::doc_validation("RevId isn't a valid hexadecimal"))
                    } else {
                        Ok(s)
                    }
                }
                _ => Err(Error::doc_validation("RevId isn't a string")),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(Error::doc_validation("_revisions.ids isn't a array.")),
    };
    Ok(Revisions { start, ids })
}

/// `_attachments` as CouchDB's `couch_att:from_json` reads it. Members that are not objects are
/// skipped, as CouchDB skips them; a `digest` beside inline `data` is not checked (CouchDB
/// recomputes it), and the `revpos` of inline data is kept only when `keep_revpos` (CouchDB
/// ignores it: new edits get the new generation, replicated ones 0).
fn parse_attachments(
    map: Map<String, Value>,
    opts: ParseOptions<'_>,
    keep_revpos: bool,
) -> Result<Vec<AttachmentInput>> {
    if map.len() > MAX_ATTACHMENTS {
        return Err(Error::too_large("_attachments"));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, spec) in map {
        let Value::Object(spec) = spec else {
            continue;
        };
        check_attachment_name(&name)?;
        let content_type = spec
            .get("content_type")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream")
            .to_owned();
        let revpos = spec.get("revpos").and_then(Value::as_u64);
        let digest = spec
            .get("digest")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let kind = if spec.get("stub") == Some(&Value::Bool(true)) {
            AttachmentKind::Stub { digest }
        } else if spec.get("follows") == Some(&Value::Bool(true)) {
            AttachmentKind::Follows {
                content_type,
                length: spec.get("length").and_then(Value::as_u64),
                encoding: spec
                    .get("encoding")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                revpos,
                digest,
            }
        } else if let Some(data) = spec.get("data") {
            let Value::String(b64) = data else {
                return Err(Error::bad_request(
                    "Attachment data must be a base64 string",
                ));
            };
            let bytes = decode_base64(b64)
                .ok_or_else(|| Error::bad_request("Invalid attachment data (not base64)"))?;
            let content =
                PreparedAttachment::from_bytes(&content_type, &bytes, opts.compress, opts.tmp_dir)?;
            AttachmentKind::Data {
                content,
                revpos: if keep_revpos { revpos } else { None },
            }
        } else {
            return Err(Error::bad_request(format!(
                "Attachment {name:?} needs one of stub, data or follows"
            )));
        };
        out.push(AttachmentInput { name, kind });
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct BulkDocsBody<'a> {
    #[serde(borrow, default)]
    docs: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    new_edits: Option<&'a serde_json::value::RawValue>,
}

/// Parses a `_bulk_docs` body `{"docs": [...], "new_edits": bool}` as CouchDB does: every
/// document is validated before anything is written, and the first invalid one fails the whole
/// request with its error (an illegal `_id`, a bad `_rev` or `_revisions`, an unknown `_`
/// member, a bad attachment name, a document larger than `max_doc_bytes`, or — with
/// `new_edits: false` — a document without a revision). Returns the documents and `new_edits`.
pub fn parse_bulk_docs(
    bytes: &[u8],
    max_doc_bytes: usize,
    opts: ParseOptions<'_>,
) -> Result<(Vec<DocUpdate>, bool)> {
    let body: BulkDocsBody<'_> = serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            Error::bad_request("JSON nested too deeply")
        } else if std::str::from_utf8(bytes).is_err() {
            Error::bad_request("invalid UTF-8 JSON")
        } else if e.is_data() {
            Error::bad_request("Request body must be a JSON object")
        } else {
            Error::bad_request(format!("invalid JSON: {e}"))
        }
    })?;
    let raw_docs = body
        .docs
        .ok_or_else(|| Error::bad_request("POST body must include `docs` parameter."))?;
    let raw_docs: Vec<&serde_json::value::RawValue> = serde_json::from_str(raw_docs.get())
        .map_err(|_| Error::bad_request("`docs` parameter must be an array."))?;
    let new_edits = body
        .new_edits
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
        .transpose()
        .map_err(|e| Error::bad_request(format!("invalid JSON: {e}")))?;
    let mut docs = Vec::with_capacity(raw_docs.len());
    for raw in raw_docs {
        let object = match crate::json::parse_value(raw.get().as_bytes())? {
            Value::Object(map) => map,
            _ => return Err(Error::bad_request("Document must be a JSON object")),
        };
        let update = DocUpdate::from_json(object, opts)?;
        if raw.get().len() > max_doc_bytes {
            update.check_size(max_doc_bytes)?;
        }
        if new_edits == Some(Value::Bool(false)) && update.rev.is_none() {
            return Err(Error::bad_request(
                "When `new_edits: false`, the document needs `_rev` or `_revisions` specified",
            ));
        }
        docs.push(update);
    }
    let new_edits = match new_edits {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(Error::bad_request(
                "`new_edits` parameter must be a boolean.",
            ));
        }
    };
    Ok((docs, new_edits))
}

/// MD5 of bytes (the replicator's replication ids).
#[cfg(feature = "client")]
pub(crate) fn md5_of(bytes: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(bytes).into()
}

/// Decodes standard base64, with or without padding, ignoring ASCII whitespace.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let trimmed = compact.trim_end_matches('=');
    data_encoding::BASE64_NOPAD.decode(trimmed.as_bytes()).ok()
}

/// Checks an attachment name as CouchDB does (`validate_attachment_name`).
pub fn check_attachment_name(name: &str) -> Result<()> {
    if name.starts_with('_') {
        let shown: String = name.chars().take(200).collect();
        return Err(Error::bad_request(format!(
            "Attachment name '{shown}' starts with prohibited character '_'"
        )));
    }
    if name.is_empty() {
        return Err(Error::bad_request("Attachment name must not be empty"));
    }
    if name.len() > MAX_ID_LEN {
        return Err(Error::bad_request("Attachment name is too long"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<DocUpdate> {
        let dir = std::env::temp_dir();
        let Value::Object(map) = v else { panic!() };
        DocUpdate::from_json(
            map,
            ParseOptions {
                compress: true,
                tmp_dir: &dir,
            },
        )
    }

    #[test]
    fn ids() {
        assert_eq!(check_id("a").unwrap(), IdKind::Normal);
        assert_eq!(check_id("_design/x").unwrap(), IdKind::Design);
        assert_eq!(check_id("_local/x").unwrap(), IdKind::Local);
        for bad in ["", "_foo", "_design/", "_local/", "_Design/x"] {
            assert_eq!(check_id(bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn splits_special_members() {
        let u = parse(json!({"_id": "x", "_rev": "1-ab", "_deleted": true, "a": 1,
            "_revisions": {"start": 2, "ids": ["cd", "ab"]}, "_conflicts": []}))
        .unwrap();
        assert_eq!(u.id.as_deref(), Some("x"));
        // `_revisions` names the revision, whatever `_rev` says (CouchDB's transfer_fields).
        assert_eq!(u.rev.unwrap().to_string(), "2-cd");
        assert!(u.deleted);
        assert_eq!(u.body, json!({"a": 1}).as_object().unwrap().clone());
        assert_eq!(u.revisions.unwrap().path().unwrap().len(), 2);
    }

    #[test]
    fn rejects_bad_members() {
        let err = parse(json!({"_foo": 1})).unwrap_err();
        assert_eq!((err.status(), err.error()), (400, "doc_validation"));
        assert_eq!(parse(json!({"_rev": "nope"})).unwrap_err().status(), 400);
        assert_eq!(parse(json!({"_id": 5})).unwrap_err().status(), 400);
        assert_eq!(
            parse(json!({"_attachments": {"a": {"data": "!!!"}}}))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse(json!({"_attachments": {"_a": {"stub": true}}}))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse(json!({"_revisions": {"start": 1, "ids": ["a", "b"]}}))
                .unwrap()
                .revisions
                .unwrap()
                .path()
                .unwrap_err()
                .status(),
            400
        );
        for (bad, reason) in [
            (
                json!({"_revisions": {"start": 2, "ids": ["0123456789abcdef0123456789abcdeZ"]}}),
                "RevId isn't a valid hexadecimal",
            ),
            (
                json!({"_revisions": {"start": 2, "ids": [5]}}),
                "RevId isn't a string",
            ),
            (
                json!({"_revisions": {"start": "2", "ids": ["a"]}}),
                "_revisions.start isn't an integer.",
            ),
            (
                json!({"_revisions": {"start": 2, "ids": "a"}}),
                "_revisions.ids isn't a array.",
            ),
            (
                json!({"_deleted": "true"}),
                "Bad special document member: _deleted",
            ),
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(
                (err.error(), err.reason().as_ref()),
                ("doc_validation", reason)
            );
        }
        let err = parse(json!({"_id": "_bad"})).unwrap_err();
        assert_eq!(err.error(), "illegal_docid");
        let err = parse(json!({"_rev": 1})).unwrap_err();
        assert_eq!(err.reason(), "Invalid rev format");
    }

    #[test]
    fn lenient_where_couchdb_is() {
        // Opaque rev ids; `_rev` after `_revisions` is not even parsed.
        let u = parse(json!({"_revisions": {"start": 2, "ids": ["some", "x"]}, "_rev": "junk"}))
            .unwrap();
        assert_eq!(u.rev.unwrap().to_string(), "2-some");
        // Replicator documents' own fields and `_access` stay in the body, in order.
        let u = parse(json!({"z": 1, "_replication_state": "triggered", "a": 2, "_access": []}))
            .unwrap();
        let keys: Vec<&str> = u.body.keys().map(String::as_str).collect();
        assert_eq!(keys, ["z", "_replication_state", "a", "_access"]);
        // A non-object attachment entry is skipped, as CouchDB skips it.
        let u = parse(json!({"_attachments": {"a": 1}})).unwrap();
        assert!(u.attachments.unwrap().is_empty());
        // A digest beside inline data is not checked.
        let u = parse(json!({"_attachments": {"a": {"data": "aGVsbG8=",
            "digest": "md5-AAAAAAAAAAAAAAAAAAAAAA==", "revpos": 7}}}))
        .unwrap();
        match &u.attachments.unwrap()[0].kind {
            AttachmentKind::Data { content, revpos } => {
                assert_eq!(content.digest(), "md5-XUFAKrxLKna5cZ2REBfFkg==");
                assert_eq!(*revpos, None, "CouchDB ignores an inline revpos");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inline_attachment_is_decoded() {
        let u = parse(
            json!({"_attachments": {"a.txt": {"content_type": "image/png", "data": "aGVsbG8="}}}),
        )
        .unwrap();
        let atts = u.attachments.unwrap();
        match &atts[0].kind {
            AttachmentKind::Data { content, .. } => {
                assert_eq!(content.length, 5);
                assert_eq!(content.digest(), "md5-XUFAKrxLKna5cZ2REBfFkg==");
            }
            other => panic!("{other:?}"),
        }
    }
}
