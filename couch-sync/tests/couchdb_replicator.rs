//! Plays Apache CouchDB 3.4.3's replicator against couch-sync over real HTTP, with the request
//! sequence recorded on the wire (`shared/notes/couchdb-replicator-wire.md`):
//!
//! - pulling from couch-sync, reading the multipart `open_revs` answer exactly as CouchDB's
//!   `couch_httpd_multipart` does and writing each revision into a second couch-sync server as
//!   CouchDB's replicator writes it (`_bulk_docs` / multipart `PUT ?new_edits=false`);
//! - pushing to couch-sync (`_revs_diff`, `_bulk_docs`, a multipart `PUT` with a gzip-encoded
//!   attachment, `_ensure_full_commit`, checkpoints).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use common::{Reply, TestServer, start};
use futures_util::StreamExt;
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

/// Four replication-id versions (v4 … v1), as CouchDB probes for a checkpoint.
const REP_IDS: [&str; 4] = [
    "3c8b6e1f0d2a4b5c6d7e8f9a0b1c2d3e",
    "5a1f2e3d4c5b6a79808f7e6d5c4b3a29",
    "7e6d5c4b3a29181f0e2d3c4b5a697887",
    "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
];
const DOCS: usize = 1000;

fn md5_b64(bytes: &[u8]) -> String {
    format!("md5-{}", data_encoding::BASE64.encode(&Md5::digest(bytes)))
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A fixed 32-hex-digit revision hash.
fn hash(tag: &str) -> String {
    data_encoding::HEXLOWER.encode(&Md5::digest(tag.as_bytes()))
}

fn text_of(i: usize) -> String {
    format!("hello attachment {i}: ") + &"the quick brown fox jumps over the lazy dog. ".repeat(7)
}

/// Binary content with every byte value, and a CRLF-dash sequence that looks like a delimiter.
fn bin_of(i: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).map(|b| b.wrapping_add(i as u8)).collect();
    bytes.extend_from_slice(b"\r\n--not-a-boundary\r\n");
    bytes
}

fn body_text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Multipart, read the way CouchDB reads it.

struct Part {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn boundary_of(content_type: &str) -> String {
    content_type
        .parse::<mime::Mime>()
        .unwrap_or_else(|e| panic!("bad content type {content_type:?}: {e}"))
        .get_param(mime::BOUNDARY)
        .unwrap_or_else(|| panic!("no boundary in {content_type:?}"))
        .as_str()
        .to_owned()
}

/// Splits a multipart body (RFC 2046) into its parts. Panics on any framing error.
fn split_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let open = format!("--{boundary}").into_bytes();
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    assert!(
        body.starts_with(&open),
        "multipart body does not open with its boundary: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    let mut pos = open.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return parts;
        }
        let line_end = find(body, b"\r\n", pos).expect("boundary line without CRLF");
        assert!(
            body[pos..line_end]
                .iter()
                .all(|b| *b == b' ' || *b == b'\t'),
            "garbage after a boundary"
        );
        pos = line_end + 2;
        let (headers, start) = if body[pos..].starts_with(b"\r\n") {
            (Vec::new(), pos + 2)
        } else {
            let end = find(body, b"\r\n\r\n", pos).expect("part headers without an end");
            let text = std::str::from_utf8(&body[pos..end]).expect("part headers not UTF-8");
            let headers = text
                .split("\r\n")
                .map(|line| {
                    let (k, v) = line
                        .split_once(':')
                        .unwrap_or_else(|| panic!("bad header line {line:?}"));
                    (k.trim().to_owned(), v.trim().to_owned())
                })
                .collect();
            (headers, end + 4)
        };
        let end = find(body, &delimiter, start).expect("part without a closing delimiter");
        parts.push(Part {
            headers,
            body: body[start..end].to_vec(),
        });
        pos = end + delimiter.len();
    }
}

/// One revision of an `open_revs` answer, as CouchDB's replicator receives it.
struct Revision {
    doc: Map<String, Value>,
    /// Attachments whose bytes came as parts, in `_attachments` order, with the bytes as received.
    follows: Vec<(String, Vec<u8>)>,
    /// Attachments left as `"stub": true`.
    stubs: Vec<String>,
    /// The attachment parts' headers (CouchDB ignores them; kept to check the framing).
    part_headers: Vec<Vec<(String, String)>>,
    /// Whether the revision came as `multipart/related` (else a bare `application/json` part).
    related: bool,
}

/// `couch_att` `att_len`: `encoded_length` if `encoding` is set, else `length`.
fn att_len(entry: &Value) -> usize {
    let field = if entry.get("encoding").is_some() {
        "encoded_length"
    } else {
        "length"
    };
    entry[field]
        .as_u64()
        .unwrap_or_else(|| panic!("attachment without {field}: {entry}")) as usize
}

/// Reads a `multipart/mixed` `open_revs` answer as `couch_replicator_api_wrap:receive_docs` and
/// `couch_httpd_multipart` do: each revision part is `application/json` or `multipart/related`;
/// in a related part the first part must be `Content-Type: application/json`, the headers of the
/// attachment parts are ignored, and their bodies are consumed strictly in `_attachments` order,
/// `att_len` bytes per attachment that `follows`. The MD5 of the bytes received must equal the
/// `digest` (the target checks it, `couch_db:with_stream`).
fn read_open_revs(reply: &Reply) -> Vec<Revision> {
    assert_eq!(reply.status, 200, "{}", body_text(reply));
    let content_type = reply.header("content-type").expect("no content type");
    assert!(
        content_type.starts_with("multipart/mixed"),
        "not multipart/mixed: {content_type}"
    );
    let mut revisions = Vec::new();
    for part in split_parts(&reply.body, &boundary_of(content_type)) {
        let ct: mime::Mime = part
            .header("content-type")
            .expect("revision part without a content type")
            .parse()
            .unwrap();
        match (ct.type_().as_str(), ct.subtype().as_str()) {
            ("application", "json") => {
                assert!(
                    ct.get_param("error").is_none(),
                    "an error part: {}",
                    String::from_utf8_lossy(&part.body)
                );
                let doc: Map<String, Value> = serde_json::from_slice(&part.body).unwrap();
                let mut stubs = Vec::new();
                for (name, entry) in doc
                    .get("_attachments")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    assert_ne!(
                        entry.get("follows"),
                        Some(&json!(true)),
                        "{name} follows, but the revision is a bare JSON part"
                    );
                    if entry.get("stub") == Some(&json!(true)) {
                        stubs.push(name.clone());
                    }
                }
                revisions.push(Revision {
                    doc,
                    follows: Vec::new(),
                    stubs,
                    part_headers: Vec::new(),
                    related: false,
                });
            }
            ("multipart", "related") => {
                let inner = split_parts(&part.body, &boundary_of(ct.as_ref()));
                let (first, rest) = inner.split_first().expect("empty multipart/related");
                let first_ct: mime::Mime = first
                    .header("content-type")
                    .expect("first part without a content type")
                    .parse()
                    .unwrap();
                assert_eq!(
                    first_ct.essence_str(),
                    "application/json",
                    "first part must be application/json (couch_httpd_multipart:mp_parse_doc)"
                );
                let doc: Map<String, Value> = serde_json::from_slice(&first.body).unwrap();
                let mut expected = Vec::new();
                let mut stubs = Vec::new();
                for (name, entry) in doc
                    .get("_attachments")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    if entry.get("follows") == Some(&json!(true)) {
                        expected.push((name.clone(), att_len(entry), entry["digest"].clone()));
                    } else {
                        assert_eq!(entry.get("stub"), Some(&json!(true)), "{name}: {entry}");
                        stubs.push(name.clone());
                    }
                }
                // The attachment bytes, one stream; part boundaries only as a second check.
                let stream: Vec<u8> = rest.iter().flat_map(|p| p.body.iter().copied()).collect();
                let total: usize = expected.iter().map(|(_, len, _)| len).sum();
                assert_eq!(
                    stream.len(),
                    total,
                    "attachment bytes: {} received, {total} announced (attachment shorter/longer than expected)",
                    stream.len()
                );
                assert_eq!(
                    rest.len(),
                    expected.len(),
                    "one part per following attachment"
                );
                let mut offset = 0;
                let mut follows = Vec::new();
                for ((name, len, digest), part) in expected.into_iter().zip(rest) {
                    let bytes = stream[offset..offset + len].to_vec();
                    offset += len;
                    assert_eq!(part.body, bytes, "{name}: part not aligned with att_len");
                    assert_eq!(
                        json!(md5_b64(&bytes)),
                        digest,
                        "{name}: MD5 of the received bytes is not the digest"
                    );
                    follows.push((name, bytes));
                }
                revisions.push(Revision {
                    doc,
                    follows,
                    stubs,
                    part_headers: rest.iter().map(|p| p.headers.clone()).collect(),
                    related: true,
                });
            }
            other => panic!("unexpected revision part type {other:?}"),
        }
    }
    revisions
}

/// The body CouchDB's replicator sends for a document with attachments
/// (`couch_doc:doc_to_multi_part_stream` with the received, still-encoded bytes).
fn related_body(rev: &Revision, boundary: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(&serde_json::to_vec(&rev.doc).unwrap());
    body.extend_from_slice(format!("\r\n--{boundary}").as_bytes());
    for (name, bytes) in &rev.follows {
        let entry = &rev.doc["_attachments"][name];
        body.extend_from_slice(
            format!(
                "\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Type: {}\r\nContent-Length: {}",
                entry["content_type"].as_str().unwrap(),
                bytes.len()
            )
            .as_bytes(),
        );
        if let Some(encoding) = entry.get("encoding").and_then(Value::as_str) {
            body.extend_from_slice(format!("\r\nContent-Encoding: {encoding}").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}").as_bytes());
    }
    body.extend_from_slice(b"--");
    body
}

async fn open_revs_multipart(s: &TestServer, path: &str) -> Vec<Revision> {
    read_open_revs(
        &s.send("GET", path, &[("accept", "multipart/mixed")], "")
            .await,
    )
}

// ---------------------------------------------------------------------------------------------
// Steps every replication starts with.

/// `GET /db/` twice, then `GET /db/_local/<id>` for the four id versions: 404 `missing`.
async fn start_replication(s: &TestServer, db: &str) {
    for _ in 0..2 {
        let r = s.get(&format!("/{db}/")).await;
        assert_eq!(r.status, 200, "{}", body_text(&r));
        let info = r.json();
        for field in [
            "update_seq",
            "instance_start_time",
            "doc_count",
            "doc_del_count",
            "sizes",
        ] {
            assert!(info.get(field).is_some(), "db info without {field}: {info}");
        }
    }
    for id in REP_IDS {
        let r = s.get(&format!("/{db}/_local/{id}")).await;
        assert_eq!(r.status, 404, "{}", body_text(&r));
        assert_eq!(r.json(), json!({"error": "not_found", "reason": "missing"}));
    }
}

async fn ensure_full_commit(s: &TestServer, db: &str) {
    let r = s
        .send(
            "POST",
            &format!("/{db}/_ensure_full_commit"),
            &[("content-type", "application/json")],
            "",
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let answer = r.json();
    assert_eq!(answer["ok"], true);
    assert!(answer["instance_start_time"].is_string(), "{answer}");
}

fn checkpoint(last_seq: &Value, docs: usize, rev: Option<&str>) -> Value {
    let mut doc = json!({
        "session_id": "b9e4d1c0a3f2",
        "source_last_seq": last_seq,
        "replication_id_version": 4,
        "history": [{
            "session_id": "b9e4d1c0a3f2",
            "start_time": "Sat, 21 Nov 2026 10:00:00 GMT",
            "end_time": "Sat, 21 Nov 2026 10:00:02 GMT",
            "start_last_seq": 0,
            "end_last_seq": last_seq,
            "recorded_seq": last_seq,
            "missing_checked": docs,
            "missing_found": docs,
            "docs_read": docs,
            "docs_written": docs,
            "doc_write_failures": 0
        }]
    });
    if let Some(rev) = rev {
        doc["_rev"] = json!(rev);
    }
    doc
}

/// `PUT /db/_local/<id>` with `X-Couch-Full-Commit: false`; returns the new `_rev`.
async fn put_checkpoint(s: &TestServer, db: &str, body: &Value) -> String {
    let r = s
        .send(
            "PUT",
            &format!("/{db}/_local/{}", REP_IDS[0]),
            &[
                ("content-type", "application/json"),
                ("x-couch-full-commit", "false"),
            ],
            body.to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let answer = r.json();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["id"], format!("_local/{}", REP_IDS[0]));
    answer["rev"].as_str().unwrap().to_owned()
}

/// `POST /db/_bulk_docs` as the replicator writes: `new_edits: false`, `X-Couch-Full-Commit:
/// false`; CouchDB answers `201 []`.
async fn bulk_docs_new_edits_false(s: &TestServer, db: &str, docs: Vec<Value>) {
    let r = s
        .send(
            "POST",
            &format!("/{db}/_bulk_docs"),
            &[
                ("content-type", "application/json"),
                ("x-couch-full-commit", "false"),
            ],
            json!({"new_edits": false, "docs": docs}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    assert_eq!(r.json(), json!([]));
}

/// `PUT /db/doc?new_edits=false` with a `multipart/related` body, as `api_wrap:update_doc`.
async fn put_related(s: &TestServer, db: &str, rev: &Revision) {
    let id = rev.doc["_id"].as_str().unwrap();
    let boundary = hash(&format!("boundary {id}"));
    let r = s
        .send(
            "PUT",
            &format!("/{db}/{id}?new_edits=false"),
            &[(
                "content-type",
                &format!("multipart/related; boundary=\"{boundary}\""),
            )],
            related_body(rev, &boundary),
        )
        .await;
    assert_eq!(r.status, 201, "PUT {id}: {}", body_text(&r));
    assert_eq!(
        r.json(),
        json!({"ok": true, "id": id, "rev": rev.doc["_rev"]})
    );
}

// ---------------------------------------------------------------------------------------------
// Pull.

/// The source: `DOCS` documents, one in ten with a binary and a `text/plain` attachment, one
/// with two conflicting leaves (one of them with an attachment), one deleted.
async fn fill_source(s: &TestServer) {
    assert_eq!(s.put_json("/src", &json!({})).await.status, 201);
    let plain = DOCS - 2;
    let docs: Vec<Value> = (0..plain)
        .map(|i| {
            let mut doc =
                json!({"_id": format!("p{i:06}"), "i": i, "name": format!("document {i}")});
            if i % 10 == 0 {
                doc["_attachments"] = json!({
                    "b.bin": {"content_type": "application/octet-stream", "data": b64(&bin_of(i))},
                    "t.txt": {"content_type": "text/plain", "data": b64(text_of(i).as_bytes())}
                });
            }
            doc
        })
        .collect();
    for batch in docs.chunks(500) {
        let r = s
            .post_json("/src/_bulk_docs", &json!({"docs": batch}))
            .await;
        assert_eq!(r.status, 201, "{}", body_text(&r));
        for row in r.json().as_array().unwrap() {
            assert_eq!(row["ok"], true, "{row}");
        }
    }
    let (root, a, b) = (hash("root"), hash("leaf a"), hash("leaf b"));
    let r = s
        .post_json(
            "/src/_bulk_docs",
            &json!({"new_edits": false, "docs": [
                {"_id": "conflicted", "_rev": format!("2-{a}"), "side": "a",
                 "_revisions": {"start": 2, "ids": [a, root]},
                 "_attachments": {"c.txt": {"content_type": "text/plain", "data": b64(text_of(4242).as_bytes())}}},
                {"_id": "conflicted", "_rev": format!("2-{b}"), "side": "b",
                 "_revisions": {"start": 2, "ids": [b, root]}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let rev = s.put_json("/src/gone", &json!({"x": 1})).await.json()["rev"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.delete(&format!("/src/gone?rev={rev}")).await.status, 200);
}

struct Change {
    id: String,
    revs: Vec<String>,
    deleted: bool,
}

/// Fetches one document's revisions with `open_revs` (multipart), checks what arrived and
/// writes each revision to the target. Returns (revisions written, gzip parts received).
async fn fetch_and_write(
    source: &TestServer,
    target: &TestServer,
    id: &str,
    revs: &[String],
) -> (usize, usize) {
    let path = format!(
        "/src/{id}?revs=true&open_revs={}&latest=true",
        serde_json::to_string(revs).unwrap()
    );
    let revisions = open_revs_multipart(source, &path).await;
    assert_eq!(revisions.len(), revs.len(), "{id}");
    let (mut written, mut gzip_parts) = (0, 0);
    for rev in revisions {
        assert!(
            rev.stubs.is_empty(),
            "{id}: stubs {:?} for a document the target lacks: CouchDB's target answers 412 missing_stub",
            rev.stubs
        );
        assert!(
            rev.related,
            "{id}: attachments follow in a multipart/related part"
        );
        assert!(rev.doc["_revisions"].is_object());
        for ((name, bytes), headers) in rev.follows.iter().zip(&rev.part_headers) {
            let entry = &rev.doc["_attachments"][name];
            let header = |h: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(h))
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(
                header("content-length"),
                Some(bytes.len().to_string().as_str())
            );
            if entry["content_type"] == "text/plain" {
                // Stored gzip, sent as stored: CouchDB's SendEncodedAtts.
                assert_eq!(entry["encoding"], "gzip", "{id}/{name}: {entry}");
                assert_eq!(entry["encoded_length"], bytes.len());
                assert_eq!(header("content-encoding"), Some("gzip"));
                let decoded = gunzip(bytes);
                assert_eq!(entry["length"], decoded.len());
                let expected = if id == "conflicted" {
                    text_of(4242)
                } else {
                    text_of(id[1..].parse().unwrap())
                };
                assert_eq!(decoded, expected.as_bytes());
                gzip_parts += 1;
            } else {
                assert!(entry.get("encoding").is_none(), "{entry}");
                assert_eq!(header("content-encoding"), None);
                assert_eq!(entry["length"], bytes.len());
                assert_eq!(*bytes, bin_of(id[1..].parse().unwrap()));
            }
        }
        put_related(target, "dst", &rev).await;
        written += 1;
    }
    (written, gzip_parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn couchdb_replicator_pulls_from_couch_sync() {
    let source = start().await;
    let target = start().await;
    fill_source(&source).await;
    assert_eq!(target.put_json("/dst", &json!({})).await.status, 201);

    // 1–3: db info and checkpoint probes, on the source (and the target).
    start_replication(&source, "src").await;
    start_replication(&target, "dst").await;

    // 4: the changes feed.
    let r = source
        .get("/src/_changes?feed=normal&style=all_docs&since=0&timeout=10000")
        .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let feed = r.json();
    let last_seq = feed["last_seq"].clone();
    let changes: Vec<Change> = feed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            assert!(row.get("seq").is_some(), "{row}");
            Change {
                id: row["id"].as_str().unwrap().to_owned(),
                revs: row["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["rev"].as_str().unwrap().to_owned())
                    .collect(),
                deleted: row.get("deleted") == Some(&json!(true)),
            }
        })
        .collect();
    assert_eq!(changes.len(), DOCS);
    let conflicted = changes.iter().find(|c| c.id == "conflicted").unwrap();
    assert_eq!(conflicted.revs.len(), 2, "every leaf listed");
    assert!(changes.iter().find(|c| c.id == "gone").unwrap().deleted);
    assert_eq!(changes.iter().filter(|c| c.deleted).count(), 1);

    // The replicator asks the target what it lacks (everything).
    let query: Map<String, Value> = changes
        .iter()
        .map(|c| (c.id.clone(), json!(c.revs)))
        .collect();
    let r = target
        .post_json("/dst/_revs_diff", &Value::Object(query))
        .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let diff = r.json();
    let missing: Vec<(String, String)> = changes
        .iter()
        .flat_map(|c| {
            let got: BTreeSet<&str> = diff[&c.id]["missing"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(got, c.revs.iter().map(String::as_str).collect(), "{}", c.id);
            c.revs.iter().map(|rev| (c.id.clone(), rev.clone()))
        })
        .collect();

    // 5: `_bulk_get` in batches; documents with attachments are dropped from its answer and
    // fetched one at a time (couch_replicator_worker:350-363, 312-313).
    let mut with_atts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut written = 0;
    for batch in missing.chunks(500) {
        let docs: Vec<Value> = batch
            .iter()
            .map(|(id, rev)| json!({"id": id, "rev": rev, "atts_since": []}))
            .collect();
        let r = source
            .post_json(
                "/src/_bulk_get?latest=true&revs=true&attachments=false",
                &json!({"revs": true, "latest": true, "docs": docs, "attachments": false}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", body_text(&r));
        let mut plain = Vec::new();
        for result in r.json()["results"].as_array().unwrap() {
            for item in result["docs"].as_array().unwrap() {
                let doc = item
                    .get("ok")
                    .unwrap_or_else(|| panic!("_bulk_get error: {item}"));
                assert!(doc["_revisions"].is_object(), "{doc}");
                let has_atts = doc
                    .get("_attachments")
                    .and_then(Value::as_object)
                    .is_some_and(|a| !a.is_empty());
                if has_atts {
                    with_atts
                        .entry(doc["_id"].as_str().unwrap().to_owned())
                        .or_default()
                        .push(doc["_rev"].as_str().unwrap().to_owned());
                } else {
                    plain.push(doc.clone());
                }
            }
        }
        written += plain.len();
        bulk_docs_new_edits_false(&target, "dst", plain).await;
    }
    assert_eq!(with_atts.len(), (DOCS - 2).div_ceil(10) + 1);

    // 6: each document with attachments through `open_revs`, `Accept: multipart/mixed`, no
    // `attachments=` (couch_replicator_api_wrap:268-295); written at once with a multipart PUT.
    // Four at a time, as CouchDB's four workers.
    let fetched: Vec<(usize, usize)> = futures_util::stream::iter(&with_atts)
        .map(|(id, revs)| fetch_and_write(&source, &target, id, revs))
        .buffer_unordered(4)
        .collect()
        .await;
    written += fetched.iter().map(|(w, _)| w).sum::<usize>();
    let gzip_parts: usize = fetched.iter().map(|(_, g)| g).sum();
    assert_eq!(gzip_parts, with_atts.len());
    assert_eq!(written, missing.len());

    // 7–8: commit and checkpoint.
    ensure_full_commit(&source, "src").await;
    ensure_full_commit(&target, "dst").await;
    let body = checkpoint(&last_seq, written, None);
    assert_eq!(put_checkpoint(&source, "src", &body).await, "0-1");
    assert_eq!(put_checkpoint(&target, "dst", &body).await, "0-1");

    assert_same_databases(&source, &target, &changes).await;
}

async fn open_revs_all(s: &TestServer, db: &str, id: &str) -> Vec<Value> {
    let r = s
        .send(
            "GET",
            &format!("/{db}/{id}?open_revs=all&revs=true&att_encoding_info=true"),
            &[("accept", "application/json")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{db}/{id}: {}", body_text(&r));
    let mut leaves: Vec<Value> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item.get("ok").unwrap_or_else(|| panic!("{item}")).clone())
        .collect();
    leaves.sort_by(|a, b| a["_rev"].as_str().cmp(&b["_rev"].as_str()));
    leaves
}

async fn get_attachment(s: &TestServer, path: &str, gzip: bool) -> (Vec<u8>, Option<String>) {
    let headers: &[(&str, &str)] = if gzip {
        &[("accept-encoding", "gzip")]
    } else {
        &[]
    };
    let r = s.send("GET", path, headers, "").await;
    assert_eq!(r.status, 200, "{path}: {}", body_text(&r));
    (
        r.body.to_vec(),
        r.header("content-encoding").map(str::to_owned),
    )
}

/// Every leaf (`_changes?style=all_docs`) as the given server holds it: id → (revs, deleted).
async fn leaves(s: &TestServer, db: &str) -> BTreeMap<String, (BTreeSet<String>, bool)> {
    let feed = s
        .get(&format!("/{db}/_changes?style=all_docs"))
        .await
        .json();
    feed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let revs = row["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["rev"].as_str().unwrap().to_owned())
                .collect();
            (
                row["id"].as_str().unwrap().to_owned(),
                (revs, row.get("deleted") == Some(&json!(true))),
            )
        })
        .collect()
}

/// Every leaf's JSON with `_revisions` and attachment stubs (with encoding info), in one
/// `_bulk_get`.
async fn leaf_docs(s: &TestServer, db: &str, leaves: &[(String, String)]) -> Vec<Value> {
    let docs: Vec<Value> = leaves
        .iter()
        .map(|(id, rev)| json!({"id": id, "rev": rev}))
        .collect();
    let r = s
        .post_json(
            &format!("/{db}/_bulk_get?revs=true&att_encoding_info=true"),
            &json!({"docs": docs}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|result| result["docs"].as_array().unwrap().clone())
        .map(|item| item.get("ok").unwrap_or_else(|| panic!("{item}")).clone())
        .collect()
}

/// Same winning revisions, leaves (conflicts), `_revisions`, attachment metadata and content
/// (decoded and as stored), and the tombstone.
async fn assert_same_databases(source: &TestServer, target: &TestServer, changes: &[Change]) {
    let (a, b) = (
        source.get("/src").await.json(),
        target.get("/dst").await.json(),
    );
    assert_eq!(
        (&a["doc_count"], &a["doc_del_count"]),
        (&b["doc_count"], &b["doc_del_count"])
    );
    assert_eq!(a["doc_count"], DOCS - 1);
    assert_eq!(a["doc_del_count"], 1);
    // Winning revisions.
    let (a, b) = (
        source.get("/src/_all_docs").await.json(),
        target.get("/dst/_all_docs").await.json(),
    );
    assert_eq!(a["rows"], b["rows"]);
    assert_eq!(a["rows"].as_array().unwrap().len(), DOCS - 1);
    // Every leaf, conflicts and tombstones included.
    let source_leaves = leaves(source, "src").await;
    assert_eq!(source_leaves, leaves(target, "dst").await);
    assert_eq!(source_leaves.len(), changes.len());
    for change in changes {
        let revs: BTreeSet<String> = change.revs.iter().cloned().collect();
        assert_eq!(source_leaves[&change.id], (revs, change.deleted));
    }
    // Each leaf's body, `_revisions` and attachment stubs.
    let all: Vec<(String, String)> = source_leaves
        .iter()
        .flat_map(|(id, (revs, _))| revs.iter().map(|rev| (id.clone(), rev.clone())))
        .collect();
    let docs = leaf_docs(source, "src", &all).await;
    assert_eq!(docs, leaf_docs(target, "dst", &all).await);
    assert_eq!(docs.len(), DOCS + 1);
    // `open_revs=all` agrees, for every document with attachments, the conflict and the
    // tombstone.
    let mut ids: BTreeSet<&str> = ["conflicted", "gone"].into();
    // Each attachment's content, decoded and as stored.
    let mut attachments = Vec::new();
    for doc in &docs {
        let (id, rev) = (doc["_id"].as_str().unwrap(), doc["_rev"].as_str().unwrap());
        for (name, entry) in doc
            .get("_attachments")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            ids.insert(id);
            attachments.push((format!("{id}/{name}?rev={rev}"), entry.clone()));
        }
    }
    assert_eq!(attachments.len(), 2 * (DOCS - 2).div_ceil(10) + 1);
    futures_util::stream::iter(&ids)
        .for_each_concurrent(8, |id| async move {
            let (a, b) = (
                open_revs_all(source, "src", id).await,
                open_revs_all(target, "dst", id).await,
            );
            assert_eq!(a, b, "{id}");
        })
        .await;
    futures_util::stream::iter(&attachments)
        .for_each_concurrent(8, |(path, entry)| async move {
            for gzip in [false, true] {
                let x = get_attachment(source, &format!("/src/{path}"), gzip).await;
                let y = get_attachment(target, &format!("/dst/{path}"), gzip).await;
                assert_eq!(x, y, "{path} (accept gzip: {gzip})");
                if gzip {
                    assert_eq!(md5_b64(&x.0), entry["digest"].as_str().unwrap());
                } else {
                    assert_eq!(entry["length"], x.0.len());
                }
            }
        })
        .await;
    let conflicted = open_revs_all(target, "dst", "conflicted").await;
    assert_eq!(conflicted.len(), 2);
    assert_eq!(conflicted[0]["_revisions"]["ids"][1], hash("root"));
    let winner = target.get("/dst/conflicted?conflicts=true").await.json();
    assert_eq!(
        winner,
        source.get("/src/conflicted?conflicts=true").await.json()
    );
    assert_eq!(winner["_conflicts"].as_array().unwrap().len(), 1);
    let gone = open_revs_all(target, "dst", "gone").await;
    assert_eq!(gone[0]["_deleted"], true);
    let r = target.get("/dst/gone").await;
    r.assert_error(404, "not_found");
    assert_eq!(r.json()["reason"], "deleted");
}

// ---------------------------------------------------------------------------------------------
// Push.

#[tokio::test]
async fn couchdb_replicator_pushes_to_couch_sync() {
    let s = start().await;
    assert_eq!(s.put_json("/dst", &json!({})).await.status, 201);
    let (k1, k2, s1, f1, w1) = (
        hash("known 1"),
        hash("known 2"),
        hash("same 1"),
        hash("fresh 1"),
        hash("withatt 1"),
    );
    // What the target already holds.
    bulk_docs_new_edits_false(
        &s,
        "dst",
        vec![
            json!({"_id": "known", "_rev": format!("1-{k1}"), "v": 1}),
            json!({"_id": "same", "_rev": format!("1-{s1}"), "v": 1}),
        ],
    )
    .await;

    // 1: db info and checkpoint probes.
    start_replication(&s, "dst").await;

    // 2: `_revs_diff`.
    let r = s
        .post_json(
            "/dst/_revs_diff",
            &json!({
                "known": [format!("2-{k2}")],
                "same": [format!("1-{s1}")],
                "fresh": [format!("1-{f1}")],
                "withatt": [format!("1-{w1}")]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(
        r.json(),
        json!({
            "fresh": {"missing": [format!("1-{f1}")]},
            "known": {"missing": [format!("2-{k2}")], "possible_ancestors": [format!("1-{k1}")]},
            "withatt": {"missing": [format!("1-{w1}")]}
        })
    );

    // 3: `_bulk_docs` (`X-Couch-Full-Commit: false`, `new_edits: false`) → `201 []`.
    bulk_docs_new_edits_false(
        &s,
        "dst",
        vec![
            json!({"_id": "known", "_rev": format!("2-{k2}"), "v": 2,
                   "_revisions": {"start": 2, "ids": [k2, k1]}}),
            json!({"_id": "fresh", "_rev": format!("1-{f1}"), "v": 1,
                   "_revisions": {"start": 1, "ids": [f1]}}),
        ],
    )
    .await;

    // 4: a document with attachments: multipart PUT, the text one gzip-encoded by the sender,
    // its digest the MD5 of those gzip bytes (a gzip stream couch-sync would not produce).
    let plain = text_of(7).repeat(3);
    let mut encoder = flate2::GzBuilder::new()
        .mtime(1)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(plain.as_bytes()).unwrap();
    let gz = encoder.finish().unwrap();
    let bin = bin_of(7);
    let doc = json!({
        "_id": "withatt", "_rev": format!("1-{w1}"), "kind": "pushed",
        "_revisions": {"start": 1, "ids": [w1]},
        "_attachments": {
            "b.bin": {"content_type": "application/octet-stream", "revpos": 1,
                      "digest": md5_b64(&bin), "length": bin.len(), "follows": true},
            "t.txt": {"content_type": "text/plain", "revpos": 1, "digest": md5_b64(&gz),
                      "length": plain.len(), "follows": true, "encoding": "gzip",
                      "encoded_length": gz.len()}
        }
    });
    let revision = Revision {
        doc: doc.as_object().unwrap().clone(),
        follows: vec![("b.bin".into(), bin.clone()), ("t.txt".into(), gz.clone())],
        stubs: Vec::new(),
        part_headers: Vec::new(),
        related: true,
    };
    put_related(&s, "dst", &revision).await;

    // 5: commit, then the checkpoint twice.
    ensure_full_commit(&s, "dst").await;
    let first = checkpoint(&json!("5-g1AAAA"), 3, None);
    assert_eq!(put_checkpoint(&s, "dst", &first).await, "0-1");
    let second = checkpoint(&json!("5-g1AAAB"), 3, Some("0-1"));
    assert_eq!(put_checkpoint(&s, "dst", &second).await, "0-2");
    let stored = s.get(&format!("/dst/_local/{}", REP_IDS[0])).await.json();
    assert_eq!(stored["_rev"], "0-2");
    assert_eq!(stored["source_last_seq"], "5-g1AAAB");
    assert_eq!(stored["history"], second["history"]);

    // The target kept the sender's digest and bytes.
    let got = s
        .get("/dst/withatt?att_encoding_info=true&revs=true")
        .await
        .json();
    assert_eq!(got["_rev"], format!("1-{w1}"));
    assert_eq!(got["kind"], "pushed");
    let t = &got["_attachments"]["t.txt"];
    assert_eq!(t["digest"], md5_b64(&gz));
    assert_eq!(t["length"], plain.len());
    assert_eq!(t["encoding"], "gzip");
    assert_eq!(t["encoded_length"], gz.len());
    assert_eq!(got["_attachments"]["b.bin"]["digest"], md5_b64(&bin));
    let (bytes, encoding) = get_attachment(&s, "/dst/withatt/t.txt", true).await;
    assert_eq!((bytes, encoding.as_deref()), (gz.clone(), Some("gzip")));
    let (bytes, encoding) = get_attachment(&s, "/dst/withatt/t.txt", false).await;
    assert_eq!((bytes, encoding), (plain.into_bytes(), None));
    assert_eq!(get_attachment(&s, "/dst/withatt/b.bin", false).await.0, bin);

    // Everything arrived, with its history.
    let known = s.get("/dst/known?revs=true").await.json();
    assert_eq!(known["_rev"], format!("2-{k2}"));
    assert_eq!(known["_revisions"], json!({"start": 2, "ids": [k2, k1]}));
    let r = s
        .post_json(
            "/dst/_revs_diff",
            &json!({
                "known": [format!("2-{k2}")], "same": [format!("1-{s1}")],
                "fresh": [format!("1-{f1}")], "withatt": [format!("1-{w1}")]
            }),
        )
        .await;
    assert_eq!(r.json(), json!({}));
}

// ---------------------------------------------------------------------------------------------
// `atts_since` and the always-follows rule.

#[tokio::test]
async fn open_revs_multipart_atts_since_keeps_old_attachments_as_stubs() {
    let s = start().await;
    assert_eq!(s.put_json("/db", &json!({})).await.status, 201);
    let (old_text, new_text) = (text_of(1), text_of(2));
    let (old_bin, new_bin) = (bin_of(1), bin_of(2));
    let r = s
        .put_json(
            "/db/d",
            &json!({"v": 1, "_attachments": {
                "old.bin": {"content_type": "application/octet-stream", "data": b64(&old_bin)},
                "old.txt": {"content_type": "text/plain", "data": b64(old_text.as_bytes())}
            }}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let rev1 = r.json()["rev"].as_str().unwrap().to_owned();
    let r = s
        .put_json(
            "/db/d",
            &json!({"_rev": rev1, "v": 2, "_attachments": {
                "old.bin": {"stub": true},
                "old.txt": {"stub": true},
                "new.bin": {"content_type": "application/octet-stream", "data": b64(&new_bin)},
                "new.txt": {"content_type": "text/plain", "data": b64(new_text.as_bytes())}
            }}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let rev2 = r.json()["rev"].as_str().unwrap().to_owned();

    let revisions = open_revs_multipart(
        &s,
        &format!("/db/d?open_revs=[\"{rev2}\"]&atts_since=[\"{rev1}\"]&revs=true"),
    )
    .await;
    assert_eq!(revisions.len(), 1);
    let rev = &revisions[0];
    assert!(rev.related);
    assert_eq!(rev.doc["_rev"], rev2.as_str());
    let atts = rev.doc["_attachments"].as_object().unwrap();
    let keys = |name: &str| -> Vec<&str> {
        atts[name]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    };
    // couch_att:to_json field order.
    assert_eq!(
        keys("old.txt"),
        [
            "content_type",
            "revpos",
            "digest",
            "length",
            "stub",
            "encoding",
            "encoded_length"
        ]
    );
    assert_eq!(
        keys("old.bin"),
        ["content_type", "revpos", "digest", "length", "stub"]
    );
    assert_eq!(
        keys("new.txt"),
        [
            "content_type",
            "revpos",
            "digest",
            "length",
            "follows",
            "encoding",
            "encoded_length"
        ]
    );
    assert_eq!(
        keys("new.bin"),
        ["content_type", "revpos", "digest", "length", "follows"]
    );
    assert_eq!(atts["old.txt"]["length"], old_text.len());
    assert_eq!(atts["old.txt"]["revpos"], 1);
    assert_eq!(atts["old.bin"]["length"], old_bin.len());
    assert_eq!(atts["new.txt"]["revpos"], 2);
    let mut stubs = rev.stubs.clone();
    stubs.sort();
    assert_eq!(stubs, ["old.bin", "old.txt"]);
    let follows: BTreeMap<&str, &Vec<u8>> = rev
        .follows
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes))
        .collect();
    assert_eq!(
        follows.keys().copied().collect::<Vec<_>>(),
        ["new.bin", "new.txt"]
    );
    assert_eq!(*follows["new.bin"], new_bin);
    assert_eq!(gunzip(follows["new.txt"]), new_text.as_bytes());

    // `attachments=false` changes nothing: every attachment follows.
    let all = open_revs_multipart(
        &s,
        &format!("/db/d?open_revs=[\"{rev2}\"]&attachments=false"),
    )
    .await;
    assert_eq!(all[0].follows.len(), 4);
    assert!(all[0].stubs.is_empty());
    // Nothing newer than `atts_since`: a bare JSON part, all stubs, with encoding info.
    let none = open_revs_multipart(
        &s,
        &format!("/db/d?open_revs=[\"{rev2}\"]&atts_since=[\"{rev2}\"]"),
    )
    .await;
    assert!(!none[0].related);
    assert_eq!(none[0].stubs.len(), 4);
    assert_eq!(none[0].doc["_attachments"]["new.txt"]["encoding"], "gzip");
    // A document without attachments: a bare JSON part.
    s.put_json("/db/plain", &json!({"a": 1})).await;
    let plain = open_revs_multipart(&s, "/db/plain?open_revs=all").await;
    assert!(!plain[0].related);
    assert_eq!(plain[0].doc["a"], 1);
    // A revision the database lacks: an error part, `{"missing": rev}`.
    let lacking = format!("9-{}", hash("never written"));
    let r = s
        .send(
            "GET",
            &format!("/db/plain?open_revs=[\"{lacking}\"]"),
            &[("accept", "multipart/mixed")],
            "",
        )
        .await;
    let parts = split_parts(&r.body, &boundary_of(r.header("content-type").unwrap()));
    assert_eq!(parts.len(), 1);
    assert_eq!(
        parts[0].header("content-type"),
        Some("application/json; error=\"true\"")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&parts[0].body).unwrap(),
        json!({"missing": lacking})
    );
}
