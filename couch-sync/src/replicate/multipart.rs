//! MIME multipart as CouchDB's replication protocol uses it, without IO: a [`Splitter`] that
//! cuts one multipart body into parts as bytes arrive, and an [`OpenRevsReader`] that turns a
//! `multipart/mixed` answer to `GET /db/doc?open_revs=…` (`Accept: multipart/mixed`) into
//! [`Fetched`] revisions, attachment content spooled (to disk past a threshold) as it streams in.
//!
//! The answer's shape, as Apache CouchDB sends it (`chttpd_db:send_docs_multipart`):
//!
//! ```text
//! --OUTER\r\n
//! Content-Type: multipart/related; boundary="INNER"\r\n\r\n      (or application/json: no content follows)
//! --INNER\r\nContent-Type: application/json\r\n\r\n{doc, "_attachments": {…"follows":true…}}\r\n
//! --INNER\r\n<headers, ignored>\r\n\r\n<exactly encoded_length (gzip) or length bytes>\r\n
//! --INNER--\r\n
//! --OUTER--
//! ```
//!
//! As CouchDB's own reader (`couch_httpd_multipart`, `couch_att`) does, attachment parts are
//! matched to the `"follows": true` entries in `_attachments` order and their headers are
//! ignored; each part must hold exactly the declared number of bytes. Every size a peer controls
//! is bounded: part headers, the JSON part, the number of parts and the whole answer.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::fetched::{Content, Fetched, settle};
use crate::attachment::AttachmentWriter;
use crate::doc::MAX_ATTACHMENTS;
use crate::error::{Error, Result};

/// Longest boundary accepted (RFC 2046 allows 70 characters).
const MAX_BOUNDARY: usize = 200;
/// Most bytes of headers one part may have.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest JSON document part accepted.
pub(crate) const MAX_DOC_JSON_BYTES: usize = 64 * 1024 * 1024;
/// Most revisions one `open_revs` answer may carry.
const MAX_REVISIONS: usize = 10_000;

fn bad(what: impl std::fmt::Display) -> Error {
    Error::PeerMisbehaved(format!("multipart answer: {what}"))
}

/// The position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut start = 0;
    while let Some(offset) = hay.get(start..)?.iter().position(|&b| b == first) {
        let at = start + offset;
        if hay.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

/// A `Content-Type` value's media type (lower case) and its `boundary` parameter, if any.
pub(crate) fn media_type(content_type: &str) -> (String, Option<String>) {
    let mut pieces = content_type.split(';');
    let mime = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let boundary = pieces.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some(value.to_owned())
    });
    (mime, boundary)
}

/// A part's headers (names in lower case).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Headers(Vec<(String, String)>);

impl Headers {
    /// The first value of header `name` (lower case).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(block: &[u8]) -> Headers {
        let text = String::from_utf8_lossy(block);
        Headers(
            text.split("\r\n")
                .filter_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                })
                .collect(),
        )
    }
}

/// What the splitter found next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// A part begins, with these headers.
    Headers(Headers),
    /// Some of the current part's body.
    Data(Vec<u8>),
    /// The current part ended.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitState {
    Preamble,
    Delimiter,
    Headers,
    Body,
    PartEnd,
    Done,
}

/// Cuts one multipart body into parts, incrementally: [`push`](Self::push) bytes as they
/// arrive, then take [`next`](Self::next) until it says it needs more.
#[derive(Debug)]
pub(crate) struct Splitter {
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    state: SplitState,
}

impl Splitter {
    pub(crate) fn new(boundary: &str) -> Result<Splitter> {
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
            return Err(bad("missing or overlong boundary"));
        }
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The first delimiter has no CRLF before it: pretend it had.
        Ok(Splitter {
            delimiter,
            buf: b"\r\n".to_vec(),
            state: SplitState::Preamble,
        })
    }

    /// Adds bytes of the body (ignored once the closing delimiter has been seen).
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.state != SplitState::Done {
            self.buf.extend_from_slice(data);
        }
    }

    /// Whether the closing delimiter has been seen.
    pub(crate) fn is_done(&self) -> bool {
        self.state == SplitState::Done
    }

    /// The next piece, or `None` when more bytes are needed (or the body is complete).
    pub(crate) fn next(&mut self) -> Result<Option<Part>> {
        let dlen = self.delimiter.len();
        loop {
            match self.state {
                SplitState::Preamble => match find(&self.buf, &self.delimiter) {
                    Some(at) => {
                        self.buf.drain(..at + dlen);
                        self.state = SplitState::Delimiter;
                    }
                    None => {
                        let keep = self.buf.len().min(dlen - 1);
                        self.buf.drain(..self.buf.len() - keep);
                        return Ok(None);
                    }
                },
                SplitState::Delimiter => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if self.buf.starts_with(b"--") {
                        self.state = SplitState::Done;
                        self.buf = Vec::new();
                        return Ok(None);
                    }
                    match find(&self.buf, b"\r\n") {
                        Some(at) => {
                            let padding = self.buf.get(..at).unwrap_or_default();
                            if !padding.iter().all(|b| *b == b' ' || *b == b'\t') {
                                return Err(bad("garbage after a boundary"));
                            }
                            self.buf.drain(..at + 2);
                            self.state = SplitState::Headers;
                        }
                        None if self.buf.len() > 1024 => {
                            return Err(bad("no line end after a boundary"));
                        }
                        None => return Ok(None),
                    }
                }
                SplitState::Headers => {
                    if self.buf.starts_with(b"\r\n") {
                        self.buf.drain(..2);
                        self.state = SplitState::Body;
                        return Ok(Some(Part::Headers(Headers::default())));
                    }
                    match find(&self.buf, b"\r\n\r\n") {
                        Some(at) if at <= MAX_HEADER_BYTES => {
                            let headers = Headers::parse(self.buf.get(..at).unwrap_or_default());
                            self.buf.drain(..at + 4);
                            self.state = SplitState::Body;
                            return Ok(Some(Part::Headers(headers)));
                        }
                        Some(_) => return Err(bad("part headers too large")),
                        None if self.buf.len() > MAX_HEADER_BYTES => {
                            return Err(bad("part headers too large"));
                        }
                        None => return Ok(None),
                    }
                }
                SplitState::Body => match find(&self.buf, &self.delimiter) {
                    Some(at) => {
                        let data: Vec<u8> = self.buf.drain(..at).collect();
                        self.buf.drain(..dlen);
                        self.state = SplitState::PartEnd;
                        if !data.is_empty() {
                            return Ok(Some(Part::Data(data)));
                        }
                    }
                    None => {
                        // The last dlen-1 bytes may be the start of a delimiter: keep them.
                        let safe = self.buf.len().saturating_sub(dlen - 1);
                        if safe == 0 {
                            return Ok(None);
                        }
                        let data: Vec<u8> = self.buf.drain(..safe).collect();
                        return Ok(Some(Part::Data(data)));
                    }
                },
                SplitState::PartEnd => {
                    self.state = SplitState::Delimiter;
                    return Ok(Some(Part::End));
                }
                SplitState::Done => return Ok(None),
            }
        }
    }
}

/// An attachment whose content a `multipart/related` part will carry.
#[derive(Debug)]
struct Expected {
    name: String,
    content_type: String,
    length: Option<u64>,
    encoded_length: Option<u64>,
    gzip: bool,
    digest: Option<String>,
    revpos: Option<u64>,
}

/// The `"follows": true` attachments of a document, in `_attachments` order.
fn expected_parts(doc: &Map<String, Value>) -> Result<VecDeque<Expected>> {
    let mut out = VecDeque::new();
    let Some(atts) = doc.get("_attachments") else {
        return Ok(out);
    };
    let Value::Object(atts) = atts else {
        return Err(bad("_attachments is not an object"));
    };
    if atts.len() > MAX_ATTACHMENTS {
        return Err(bad("too many attachments"));
    }
    for (name, spec) in atts {
        if spec.get("follows") != Some(&Value::Bool(true)) {
            continue;
        }
        out.push_back(Expected {
            name: name.clone(),
            content_type: spec
                .get("content_type")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream")
                .to_owned(),
            length: spec.get("length").and_then(Value::as_u64),
            encoded_length: spec.get("encoded_length").and_then(Value::as_u64),
            gzip: spec.get("encoding").and_then(Value::as_str) == Some("gzip"),
            digest: spec
                .get("digest")
                .and_then(Value::as_str)
                .map(str::to_owned),
            revpos: spec.get("revpos").and_then(Value::as_u64),
        });
    }
    Ok(out)
}

/// One attachment part being received.
struct Receiving {
    expected: Expected,
    /// The first bytes, until there are enough to tell gzip from plain content.
    sniff: Vec<u8>,
    writer: Option<(AttachmentWriter, bool)>,
    received: u64,
}

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

impl Receiving {
    fn open(&mut self, tmp: &Path) -> Result<()> {
        // Content marked gzip is stored as it comes, keeping its digest. A peer that marks it
        // gzip but sends it decoded (as couch-sync's own server once did) is recognised by the
        // missing gzip header and treated as plain content.
        let gzip = self.expected.gzip && self.sniff.starts_with(&GZIP_MAGIC);
        let writer = if gzip {
            let length = self.expected.length.ok_or_else(|| {
                bad(format!(
                    "gzip attachment {:?} without its decoded length",
                    self.expected.name
                ))
            })?;
            AttachmentWriter::pre_encoded_gzip(&self.expected.content_type, length, tmp)
        } else {
            AttachmentWriter::new(&self.expected.content_type, false, tmp)
        };
        let mut opened = (writer, gzip);
        let sniffed = std::mem::take(&mut self.sniff);
        write_to(&mut opened.0, &sniffed, tmp)?;
        self.writer = Some(opened);
        Ok(())
    }

    fn write(&mut self, data: &[u8], tmp: &Path) -> Result<()> {
        self.received += data.len() as u64;
        match &mut self.writer {
            Some((writer, _)) => write_to(writer, data, tmp),
            None => {
                self.sniff.extend_from_slice(data);
                if self.sniff.len() >= GZIP_MAGIC.len() {
                    self.open(tmp)?;
                }
                Ok(())
            }
        }
    }

    fn finish(mut self, tmp: &Path) -> Result<Content> {
        if self.writer.is_none() {
            self.open(tmp)?;
        }
        let Some((writer, gzip)) = self.writer else {
            return Err(bad("attachment writer missing"));
        };
        let expected = if gzip {
            self.expected.encoded_length
        } else {
            self.expected.length
        };
        if let Some(expected) = expected {
            if expected != self.received {
                return Err(bad(format!(
                    "attachment {:?} has {} bytes, {expected} declared",
                    self.expected.name, self.received
                )));
            }
        }
        let prepared = writer.finish()?;
        let prepared = if gzip {
            prepared
        } else {
            settle(prepared, self.expected.digest.as_deref(), tmp)?
        };
        Ok(Content {
            name: self.expected.name,
            revpos: self.expected.revpos,
            data: prepared,
        })
    }
}

fn write_to(writer: &mut AttachmentWriter, data: &[u8], tmp: &Path) -> Result<()> {
    writer
        .write_all(data)
        .map_err(|e| Error::io("spooling a replicated attachment", tmp, e))
}

/// A `multipart/related` revision: the JSON document, then its attachments.
struct Related {
    inner: Splitter,
    parts: usize,
    json: Vec<u8>,
    doc: Option<Map<String, Value>>,
    pending: VecDeque<Expected>,
    current: Option<Receiving>,
    done: Vec<Content>,
}

impl Related {
    fn push(&mut self, data: &[u8], tmp: &Path) -> Result<()> {
        self.inner.push(data);
        while let Some(part) = self.inner.next()? {
            match part {
                Part::Headers(_) => {
                    self.parts += 1;
                    if self.parts == 1 {
                        continue; // the document; CouchDB sends it as application/json
                    }
                    if self.doc.is_none() || self.current.is_some() {
                        return Err(bad("attachment part out of place"));
                    }
                    let expected = self
                        .pending
                        .pop_front()
                        .ok_or_else(|| bad("more parts than attachments that follow"))?;
                    self.current = Some(Receiving {
                        expected,
                        sniff: Vec::new(),
                        writer: None,
                        received: 0,
                    });
                }
                Part::Data(bytes) => match &mut self.current {
                    Some(att) => att.write(&bytes, tmp)?,
                    None if self.parts == 1 && self.doc.is_none() => {
                        if self.json.len() + bytes.len() > MAX_DOC_JSON_BYTES {
                            return Err(bad("document part too large"));
                        }
                        self.json.extend_from_slice(&bytes);
                    }
                    None => return Err(bad("data outside a part")),
                },
                Part::End => {
                    if let Some(att) = self.current.take() {
                        self.done.push(att.finish(tmp)?);
                    } else if self.parts == 1 && self.doc.is_none() {
                        let doc = crate::json::parse_object(&self.json)
                            .map_err(|e| bad(format!("document part: {}", e.reason())))?;
                        self.json = Vec::new();
                        self.pending = expected_parts(&doc)?;
                        self.doc = Some(doc);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self, tmp: &Path) -> Result<Fetched> {
        if !self.inner.is_done() || self.current.is_some() {
            return Err(bad("a revision part ended early"));
        }
        let doc = self
            .doc
            .ok_or_else(|| bad("a revision part without a document"))?;
        if let Some(missing) = self.pending.front() {
            return Err(bad(format!(
                "no part for attachment {:?} of {:?}",
                missing.name,
                doc.get("_id").and_then(Value::as_str).unwrap_or("")
            )));
        }
        Fetched::build(doc, self.done, tmp)
    }
}

enum Current {
    Json(Vec<u8>),
    Related(Box<Related>),
}

/// Reads a `multipart/mixed` `open_revs` answer into revisions. Feed it the body with
/// [`push`](Self::push), then call [`finish`](Self::finish).
pub(crate) struct OpenRevsReader {
    outer: Splitter,
    current: Option<Current>,
    out: Vec<Fetched>,
    tmp: PathBuf,
    total: u64,
    limit: u64,
}

impl OpenRevsReader {
    /// A reader for a body with this `Content-Type`; at most `limit` bytes are accepted.
    pub(crate) fn new(content_type: &str, limit: u64, tmp: &Path) -> Result<OpenRevsReader> {
        let (mime, boundary) = media_type(content_type);
        if mime != "multipart/mixed" {
            return Err(bad(format!("expected multipart/mixed, got {mime:?}")));
        }
        let boundary = boundary.ok_or_else(|| bad("multipart/mixed without a boundary"))?;
        Ok(OpenRevsReader {
            outer: Splitter::new(&boundary)?,
            current: None,
            out: Vec::new(),
            tmp: tmp.to_path_buf(),
            total: 0,
            limit,
        })
    }

    /// Takes the next bytes of the body.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<()> {
        self.total += data.len() as u64;
        if self.total > self.limit {
            return Err(bad(format!("larger than {} bytes", self.limit)));
        }
        self.outer.push(data);
        while let Some(part) = self.outer.next()? {
            match part {
                Part::Headers(headers) => {
                    if self.current.is_some() {
                        return Err(bad("nested part out of place"));
                    }
                    let (mime, boundary) =
                        media_type(headers.get("content-type").unwrap_or("application/json"));
                    self.current = Some(match mime.as_str() {
                        "application/json" => Current::Json(Vec::new()),
                        "multipart/related" => {
                            let boundary = boundary
                                .ok_or_else(|| bad("multipart/related without a boundary"))?;
                            Current::Related(Box::new(Related {
                                inner: Splitter::new(&boundary)?,
                                parts: 0,
                                json: Vec::new(),
                                doc: None,
                                pending: VecDeque::new(),
                                current: None,
                                done: Vec::new(),
                            }))
                        }
                        other => return Err(bad(format!("unexpected part type {other:?}"))),
                    });
                }
                Part::Data(bytes) => match &mut self.current {
                    Some(Current::Json(json)) => {
                        if json.len() + bytes.len() > MAX_DOC_JSON_BYTES {
                            return Err(bad("document part too large"));
                        }
                        json.extend_from_slice(&bytes);
                    }
                    Some(Current::Related(related)) => related.push(&bytes, &self.tmp)?,
                    None => return Err(bad("data outside a part")),
                },
                Part::End => {
                    if self.out.len() >= MAX_REVISIONS {
                        return Err(bad("too many revisions"));
                    }
                    match self.current.take() {
                        Some(Current::Json(json)) => {
                            let doc = crate::json::parse_object(&json)
                                .map_err(|e| bad(format!("revision part: {}", e.reason())))?;
                            // `{"missing": rev}` (or an error part): the source lacks it.
                            if doc.contains_key("_id") {
                                self.out.push(Fetched::build(doc, Vec::new(), &self.tmp)?);
                            }
                        }
                        Some(Current::Related(related)) => {
                            self.out.push(related.finish(&self.tmp)?);
                        }
                        None => return Err(bad("part end without a part")),
                    }
                }
            }
        }
        Ok(())
    }

    /// The revisions read; fails if the body ended early (as a transport failure: a body cut
    /// short is worth fetching again).
    pub(crate) fn finish(self) -> Result<Vec<Fetched>> {
        if !self.outer.is_done() || self.current.is_some() {
            return Err(Error::Transport(
                "multipart answer ended before its closing boundary".into(),
            ));
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(body: &[u8], boundary: &str, chunk: usize) -> Result<(Vec<Part>, bool)> {
        let mut s = Splitter::new(boundary)?;
        let mut out: Vec<Part> = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            s.push(piece);
            while let Some(p) = s.next()? {
                // Merge data pieces so results compare across chunkings.
                match (out.last_mut(), p) {
                    (Some(Part::Data(prev)), Part::Data(more)) => prev.extend_from_slice(&more),
                    (_, p) => out.push(p),
                }
            }
        }
        Ok((out, s.is_done()))
    }

    #[test]
    fn splits_whatever_the_chunking() {
        let body = b"preamble\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XYZ\r\n\r\n\r\n--XY\r\n--XYZ--\r\nepilogue";
        for chunk in 1..body.len() + 1 {
            let (parts, done) = split_all(body, "XYZ", chunk).unwrap();
            assert!(done, "chunk {chunk}");
            assert_eq!(
                parts,
                vec![
                    Part::Headers(Headers(vec![("content-type".into(), "text/plain".into())])),
                    Part::Data(b"hello".to_vec()),
                    Part::End,
                    Part::Headers(Headers::default()),
                    Part::Data(b"\r\n--XY".to_vec()),
                    Part::End,
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn malformed_bodies_fail_without_panics() {
        assert!(Splitter::new("").is_err());
        assert!(Splitter::new(&"b".repeat(500)).is_err());
        let huge_headers = [b"--b\r\n".as_slice(), &b"x".repeat(MAX_HEADER_BYTES + 10)].concat();
        assert!(split_all(&huge_headers, "b", 1000).is_err());
        assert!(split_all(b"--bJUNK\r\n\r\n", "b", 3).is_err());
        let (_, done) = split_all(b"--b\r\n\r\nunterminated", "b", 4).unwrap();
        assert!(!done);
        // Arbitrary bytes: errors or incomplete, never a panic.
        let mut state = 0x1234_5678_9abc_def1u64;
        for _ in 0..300 {
            let len = (state % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b"-\r\nb:x "[(state % 7) as usize]
                })
                .collect();
            let _ = split_all(&bytes, "b", (state % 9) as usize + 1);
            let mut reader = OpenRevsReader::new(
                "multipart/mixed; boundary=b",
                1 << 20,
                &std::env::temp_dir(),
            )
            .unwrap();
            let _ = reader.push(&bytes).and_then(|()| reader.finish());
        }
    }

    #[test]
    fn media_types_and_boundaries() {
        assert_eq!(
            media_type("Multipart/Mixed; boundary=\"abc\""),
            ("multipart/mixed".into(), Some("abc".into()))
        );
        assert_eq!(
            media_type("multipart/related;boundary=x1"),
            ("multipart/related".into(), Some("x1".into()))
        );
        assert_eq!(
            media_type("application/json"),
            ("application/json".into(), None)
        );
    }

    #[test]
    fn reads_an_open_revs_answer() {
        let doc = r#"{"_id":"d","_rev":"1-a","_revisions":{"start":1,"ids":["a"]},"_attachments":{"b.bin":{"content_type":"application/octet-stream","revpos":1,"digest":"md5-XUFAKrxLKna5cZ2REBfFkg==","length":5,"follows":true}}}"#;
        let body = format!(
            "--O\r\nContent-Type: multipart/related; boundary=\"I\"\r\n\r\n--I\r\nContent-Type: application/json\r\n\r\n{doc}\r\n--I\r\nContent-Disposition: attachment; filename=\"b.bin\"\r\n\r\nhello\r\n--I--\r\n--O\r\nContent-Type: application/json; error=\"true\"\r\n\r\n{{\"missing\":\"2-b\"}}\r\n--O--"
        );
        for chunk in [1, 2, 7, 64, 4096] {
            let mut reader = OpenRevsReader::new(
                "multipart/mixed; boundary=\"O\"",
                1 << 20,
                &std::env::temp_dir(),
            )
            .unwrap();
            for piece in body.as_bytes().chunks(chunk) {
                reader.push(piece).unwrap();
            }
            let revs = reader.finish().unwrap();
            assert_eq!(revs.len(), 1);
            assert_eq!(revs[0].id, "d");
            assert_eq!(revs[0].atts.len(), 1);
            assert_eq!(
                revs[0].atts[0].data.digest(),
                "md5-XUFAKrxLKna5cZ2REBfFkg=="
            );
        }
        // A part shorter than declared, and a missing part, are errors.
        let short = body.replace("\r\nhello\r\n", "\r\nhell\r\n");
        let mut reader = OpenRevsReader::new(
            "multipart/mixed; boundary=O",
            1 << 20,
            &std::env::temp_dir(),
        )
        .unwrap();
        assert!(reader.push(short.as_bytes()).is_err());
        let cut = body.replace(
            "--I\r\nContent-Disposition: attachment; filename=\"b.bin\"\r\n\r\nhello\r\n",
            "",
        );
        let mut reader = OpenRevsReader::new(
            "multipart/mixed; boundary=O",
            1 << 20,
            &std::env::temp_dir(),
        )
        .unwrap();
        assert!(reader.push(cut.as_bytes()).is_err());
        // Over the limit.
        let mut reader =
            OpenRevsReader::new("multipart/mixed; boundary=O", 10, &std::env::temp_dir()).unwrap();
        assert!(reader.push(body.as_bytes()).is_err());
    }
}
