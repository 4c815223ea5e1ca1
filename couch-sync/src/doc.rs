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

/// Checks a document id as CouchDB does.
pub fn check_id(id: &str) -> Result<IdKind> {
    if id.is_empty() {
        return Err(Error::bad_request("Document id must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::bad_request("Document id is too long"));
    }
    if let Some(rest) = id.strip_prefix('_') {
        if rest.starts_with("design/") && id.len() > "_design/".len() {
            return Ok(IdKind::Design);
        }
        if rest.starts_with("local/") && id.len() > "_local/".len() {
            return Ok(IdKind::Local);
        }
        return Err(Error::bad_request(
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
            out.push(RevId::new(pos, hash).map_err(|_| {
                Error::doc_validation(format!("Invalid revision id in _revisions: {pos}-{hash}"))
            })?);
        }
        Ok(out)
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

    /// Splits a JSON object into a document update, with CouchDB's validation.
    pub fn from_json(mut object: Map<String, Value>, opts: ParseOptions<'_>) -> Result<DocUpdate> {
        let mut update = DocUpdate::default();
        let special: Vec<String> = object
            .keys()
            .filter(|k| k.starts_with('_'))
            .cloned()
            .collect();
        for key in special {
            let Some(value) = object.remove(&key) else {
                continue;
            };
            match key.as_str() {
                "_id" => match value {
                    Value::String(id) => update.id = Some(id),
                    _ => return Err(Error::bad_request("Document id must be a string")),
                },
                "_rev" => match value {
                    Value::String(rev) => update.rev = Some(rev.parse()?),
                    Value::Null => {}
                    _ => return Err(Error::bad_rev(value.to_string())),
                },
                "_deleted" => update.deleted = value == Value::Bool(true),
                "_attachments" => update.attachments = Some(parse_attachments(value, opts)?),
                "_revisions" => update.revisions = Some(parse_revisions(value)?),
                "_revs_info" | "_conflicts" | "_deleted_conflicts" | "_local_seq" => {}
                other => {
                    let shown: String = other.chars().take(100).collect();
                    return Err(Error::doc_validation(format!(
                        "Bad special document member: {shown}"
                    )));
                }
            }
        }
        update.body = object;
        Ok(update)
    }
}

fn parse_revisions(value: Value) -> Result<Revisions> {
    let bad = || Error::bad_request("_revisions must be {\"start\": N, \"ids\": [...]}");
    let Value::Object(mut map) = value else {
        return Err(bad());
    };
    let start = map.get("start").and_then(Value::as_u64).ok_or_else(bad)?;
    let ids = match map.remove("ids") {
        Some(Value::Array(ids)) => ids
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(bad()),
    };
    if ids.is_empty() {
        return Err(bad());
    }
    Ok(Revisions { start, ids })
}

fn parse_attachments(value: Value, opts: ParseOptions<'_>) -> Result<Vec<AttachmentInput>> {
    let Value::Object(map) = value else {
        return Err(Error::bad_request("_attachments must be an object"));
    };
    if map.len() > MAX_ATTACHMENTS {
        return Err(Error::too_large("_attachments"));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, spec) in map {
        check_attachment_name(&name)?;
        let Value::Object(spec) = spec else {
            return Err(Error::bad_request(format!(
                "Attachment {name:?} must be an object"
            )));
        };
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
            if let Some(expected) = &digest {
                let raw_md5 = crate::attachment::digest_string(&md5_of(&bytes));
                if expected.starts_with("md5-")
                    && *expected != raw_md5
                    && *expected != content.digest()
                {
                    return Err(Error::couch(
                        400,
                        "content_md5_mismatch",
                        "Possible message corruption.",
                    ));
                }
            }
            AttachmentKind::Data { content, revpos }
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
    #[serde(borrow)]
    docs: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    new_edits: Option<bool>,
}

/// Parses a `_bulk_docs` body `{"docs": [...], "new_edits": bool}`: the body as a whole must be
/// valid; each document is then parsed on its own, so one bad document fails alone. Documents
/// larger than `max_doc_bytes` are refused (413).
pub fn parse_bulk_docs(
    bytes: &[u8],
    max_doc_bytes: usize,
    opts: ParseOptions<'_>,
) -> Result<(Vec<Result<DocUpdate>>, bool)> {
    // One pass splits the body into raw documents (validating syntax, UTF-8 and nesting).
    let body: BulkDocsBody<'_> = serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            Error::bad_request("JSON nested too deeply")
        } else if std::str::from_utf8(bytes).is_err() {
            Error::bad_request("invalid UTF-8 JSON")
        } else {
            Error::bad_request(format!("_bulk_docs body must be {{\"docs\": [...]}}: {e}"))
        }
    })?;
    let docs = body
        .docs
        .into_iter()
        .map(|raw| {
            let object = crate::json::parse_object(raw.get().as_bytes())?;
            let update = DocUpdate::from_json(object, opts)?;
            if raw.get().len() > max_doc_bytes {
                update.check_size(max_doc_bytes)?;
            }
            Ok(update)
        })
        .collect();
    Ok((docs, body.new_edits.unwrap_or(true)))
}

/// MD5 of bytes.
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

/// Checks an attachment name as CouchDB does.
pub fn check_attachment_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::bad_request("Attachment name must not be empty"));
    }
    if name.starts_with('_') {
        return Err(Error::bad_request("Attachment name can't start with '_'"));
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
        assert_eq!(u.rev.unwrap().to_string(), "1-ab");
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
        assert_eq!(
            parse(json!({"_revisions": {"start": 2, "ids": ["zz"]}}))
                .unwrap()
                .revisions
                .unwrap()
                .path()
                .unwrap_err()
                .error(),
            "doc_validation"
        );
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
