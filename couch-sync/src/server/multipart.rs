//! Streaming attachment content out (plain and inside `multipart/mixed` `open_revs` answers) and
//! in (standalone uploads and `multipart/related` document writes), never holding a whole
//! attachment in memory.

use std::io::Write;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Ctx;
use crate::attachment::{AttachmentWriter, Encoding, PreparedAttachment};
use crate::doc::{AttachmentKind, DocUpdate, ParseOptions};
use crate::error::{Error, Result};
use crate::read::{AttachmentRef, OpenRev};
use crate::store::Database;

type Item = std::result::Result<Bytes, std::io::Error>;

fn channel_body(rx: mpsc::Receiver<Item>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Sends an attachment's content into `tx`, decoding gzip unless `raw`. Returns false if the
/// receiver went away or reading failed (an error item has then been sent).
fn send_content(db: &Database, att: &AttachmentRef, raw: bool, tx: &mpsc::Sender<Item>) -> bool {
    let mut decoder =
        (!raw && att.encoding == Encoding::Gzip).then(|| flate2::write::GzDecoder::new(Vec::new()));
    for index in 0..att.chunks() {
        let chunk = match db.attachment_chunk(att, index) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return false;
            }
        };
        let out = match &mut decoder {
            Some(dec) => {
                if let Err(e) = dec.write_all(&chunk) {
                    let _ = tx.blocking_send(Err(e));
                    return false;
                }
                std::mem::take(dec.get_mut())
            }
            None => chunk,
        };
        if !out.is_empty() && tx.blocking_send(Ok(Bytes::from(out))).is_err() {
            return false;
        }
    }
    if let Some(dec) = decoder {
        match dec.finish() {
            Ok(rest) if !rest.is_empty() => tx.blocking_send(Ok(Bytes::from(rest))).is_ok(),
            Ok(_) => true,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                false
            }
        }
    } else {
        true
    }
}

/// `GET /db/doc/att`: the content, streamed chunk by chunk.
pub(super) fn attachment_response(
    db: Database,
    att: AttachmentRef,
    accepts_gzip: bool,
) -> Response {
    let raw = accepts_gzip && att.encoding == Encoding::Gzip;
    let (tx, rx) = mpsc::channel::<Item>(4);
    let length = if raw { att.stored_len } else { att.length };
    let mut response = Response::new(channel_body(rx));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&att.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", att.digest)) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    if raw {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if att.encoding == Encoding::Identity {
        if let Some(md5) = att.digest.strip_prefix("md5-") {
            if let Ok(v) = HeaderValue::from_str(md5) {
                headers.insert("content-md5", v);
            }
        }
    }
    tokio::task::spawn_blocking(move || {
        send_content(&db, &att, raw, &tx);
    });
    response
}

fn boundary() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

/// `GET /db/doc?open_revs=...` with `Accept: multipart/mixed`: one part per revision, a
/// `multipart/related` part (JSON, then one part per attachment, with its stored bytes) where
/// content follows, else a bare `application/json` part.
pub(super) fn open_revs_response(db: Database, results: Vec<OpenRev>) -> Response {
    let outer = boundary();
    let (tx, rx) = mpsc::channel::<Item>(4);
    let content_type = format!("multipart/mixed; boundary=\"{outer}\"");
    let response = super::bytes_response(StatusCode::OK, &content_type, channel_body(rx));
    tokio::task::spawn_blocking(move || {
        let send = |bytes: Vec<u8>| tx.blocking_send(Ok(Bytes::from(bytes))).is_ok();
        for result in results {
            match result {
                OpenRev::Missing(rev) => {
                    let json = serde_json::json!({"missing": rev.to_string()}).to_string();
                    let part = format!(
                        "--{outer}\r\nContent-Type: application/json; error=\"true\"\r\n\r\n{json}\r\n"
                    );
                    if !send(part.into_bytes()) {
                        return;
                    }
                }
                OpenRev::Ok(doc) => {
                    let json = serde_json::to_string(&doc.json).unwrap_or_default();
                    if doc.follows.is_empty() {
                        let part = format!(
                            "--{outer}\r\nContent-Type: application/json\r\n\r\n{json}\r\n"
                        );
                        if !send(part.into_bytes()) {
                            return;
                        }
                        continue;
                    }
                    let inner = boundary();
                    let head = format!(
                        "--{outer}\r\nContent-Type: multipart/related; boundary=\"{inner}\"\r\n\r\n\
                         --{inner}\r\nContent-Type: application/json\r\n\r\n{json}\r\n"
                    );
                    if !send(head.into_bytes()) {
                        return;
                    }
                    // As CouchDB (`SendEncodedAtts = true`): the stored bytes, so a
                    // gzip-stored attachment travels as gzip with its digest intact.
                    for att in &doc.follows {
                        let name = att.name.replace('\\', "\\\\").replace('"', "\\\"");
                        let encoding = if att.encoding == Encoding::Gzip {
                            "\r\nContent-Encoding: gzip"
                        } else {
                            ""
                        };
                        let part_head = format!(
                            "--{inner}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
                             Content-Type: {}\r\nContent-Length: {}{encoding}\r\n\r\n",
                            att.content_type, att.stored_len
                        );
                        if !send(part_head.into_bytes())
                            || !send_content(&db, att, true, &tx)
                            || !send(b"\r\n".to_vec())
                        {
                            return;
                        }
                    }
                    if !send(format!("--{inner}--\r\n").into_bytes()) {
                        return;
                    }
                }
            }
        }
        let _ = send(format!("--{outer}--\r\n").into_bytes());
    });
    response
}

/// Streams a request body into attachment storage form (spooled to disk past a threshold).
pub(super) async fn spool_body(
    ctx: &Ctx,
    content_type: &str,
    body: Body,
) -> Result<PreparedAttachment> {
    let mut writer = AttachmentWriter::new(
        content_type,
        ctx.app.store.config().compress_attachments,
        ctx.app.store.tmp_dir(),
    );
    let limit = ctx.app.config.max_attachment_bytes;
    let mut total = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::bad_request(format!("reading the request body: {e}")))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(Error::too_large("Attachment"));
        }
        writer
            .write_all(&chunk)
            .map_err(|e| Error::io("spooling attachment", ctx.app.store.tmp_dir(), e))?;
    }
    writer.finish()
}

/// `PUT /db/doc` with `Content-Type: multipart/related`: the JSON document first, then one part
/// per attachment marked `"follows": true` (matched by `Content-Disposition` file name, else in
/// order). Parts of attachments marked `"encoding": "gzip"` are stored as sent.
pub(super) async fn parse_related(ctx: &Ctx, content_type: &str, body: Body) -> Result<DocUpdate> {
    let boundary = content_type
        .parse::<mime::Mime>()
        .ok()
        .and_then(|m| m.get_param(mime::BOUNDARY).map(|b| b.as_str().to_owned()))
        .ok_or_else(|| Error::bad_request("multipart/related without a boundary"))?;
    let stream = body.into_data_stream();
    let mut multipart = multer::Multipart::new(stream, boundary);
    let bad = |e: multer::Error| Error::bad_request(format!("malformed multipart body: {e}"));
    let mut first = multipart
        .next_field()
        .await
        .map_err(bad)?
        .ok_or_else(|| Error::bad_request("multipart body without a document part"))?;
    let mut json = Vec::new();
    while let Some(chunk) = first.chunk().await.map_err(bad)? {
        json.extend_from_slice(&chunk);
        if json.len() > ctx.app.config.max_body_bytes {
            return Err(Error::too_large("The document part"));
        }
    }
    drop(first);
    let object = crate::json::parse_object(&json)?;
    let oversized = json.len() > ctx.app.config.max_document_bytes;
    let mut update = DocUpdate::from_json(
        object,
        ParseOptions {
            compress: ctx.app.store.config().compress_attachments,
            tmp_dir: ctx.app.store.tmp_dir(),
        },
    )?;
    if oversized {
        update.check_size(ctx.app.config.max_document_bytes)?;
    }
    let limit = ctx.app.config.max_attachment_bytes;
    let compress = ctx.app.store.config().compress_attachments;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let file_name = field.file_name().map(str::to_owned);
        let atts = update.attachments.as_mut().ok_or_else(|| {
            Error::bad_request("multipart part for an attachment the document does not list")
        })?;
        let slot = atts
            .iter()
            .position(|a| {
                matches!(a.kind, AttachmentKind::Follows { .. })
                    && file_name.as_deref().is_none_or(|f| f == a.name)
            })
            .ok_or_else(|| {
                Error::bad_request("multipart part for an attachment that does not follow")
            })?;
        let Some(input) = atts.get_mut(slot) else {
            return Err(Error::bad_request("attachment slot vanished"));
        };
        let AttachmentKind::Follows {
            content_type,
            length,
            encoding,
            revpos,
            digest,
        } = &input.kind
        else {
            return Err(Error::bad_request("attachment does not follow"));
        };
        let gzip = encoding.as_deref() == Some("gzip");
        let mut writer = if gzip {
            AttachmentWriter::pre_encoded_gzip(
                content_type,
                length.unwrap_or(0),
                ctx.app.store.tmp_dir(),
            )
        } else {
            AttachmentWriter::new(content_type, compress, ctx.app.store.tmp_dir())
        };
        let mut total = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            total += chunk.len() as u64;
            if total > limit {
                return Err(Error::too_large("Attachment"));
            }
            writer
                .write_all(&chunk)
                .map_err(|e| Error::io("spooling attachment", ctx.app.store.tmp_dir(), e))?;
        }
        let content = writer.finish()?;
        if let (Some(expected), true) = (digest, gzip || content.encoding == Encoding::Identity) {
            if expected.starts_with("md5-") && *expected != content.digest() {
                return Err(Error::couch(
                    400,
                    "content_md5_mismatch",
                    "Possible message corruption.",
                ));
            }
        }
        if !gzip {
            if let Some(declared) = length {
                if *declared != content.length {
                    return Err(Error::bad_request(format!(
                        "attachment {:?} declared {declared} bytes but its part has {}",
                        input.name, content.length
                    )));
                }
            }
        }
        input.kind = AttachmentKind::Data {
            content,
            revpos: *revpos,
        };
    }
    if let Some(missing) = update
        .attachments
        .iter()
        .flatten()
        .find(|a| matches!(a.kind, AttachmentKind::Follows { .. }))
    {
        return Err(Error::bad_request(format!(
            "the multipart body ended before the data of attachment {:?}",
            missing.name
        )));
    }
    Ok(update)
}
