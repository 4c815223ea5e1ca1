//! Our replicator against a fake Apache CouchDB 3.4.3: an axum router on 127.0.0.1 that answers
//! in exactly the shapes recorded from a real CouchDB (`../shared/notes/couchdb-differences.md`
//! Part C, `couchdb-replicator-wire.md`): opaque string sequences with `pending`, `_bulk_get`
//! with stubs (or, as asked, decoded inline `data` next to the digest of the stored gzip
//! stream), `multipart/mixed` `open_revs` answers with gzip parts and `Content-Encoding: gzip`,
//! `404 missing` for absent `_local` documents, `_revs_diff` with `possible_ancestors`. As a
//! target it checks what it receives as CouchDB does: a multipart part must hold exactly
//! `encoded_length` (gzip) or `length` bytes and their MD5 must be the `digest`; a digest next
//! to inline `data` is ignored.
//!
//! Run: `cargo nextest run -p couch-sync --all-features --test replicate_couchdb_shapes`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use couch_sync::replicate::{
    Endpoint, Event, Remote, Replication, ReplicationOptions, RetryPolicy, State as RepState,
    TcpConnector, TokioClock,
};
use couch_sync::{
    AttachmentMode, Database, DocUpdate, GetOptions, OpenRev, OpenRevs, Revisions, Store,
    StoreConfig,
};
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// The fake CouchDB.

fn md5_digest(bytes: &[u8]) -> String {
    format!("md5-{}", data_encoding::BASE64.encode(&Md5::digest(bytes)))
}

fn hash(seed: &str) -> String {
    data_encoding::HEXLOWER.encode(&Md5::digest(seed.as_bytes()))
}

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(8));
    enc.write_all(plain).unwrap();
    enc.finish().unwrap()
}

fn gunzip(encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(encoded)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A CouchDB 3 clustered sequence: `N-<opaque>`.
fn seq_string(n: u64) -> String {
    format!("{n}-g1AAAAFTeJzLYWBg4MhgTmHgz8tPSTV0MDQy1zMAQsMcoEQiQ1L9____{n:06x}")
}

fn seq_number(text: &str) -> u64 {
    text.trim_matches('"')
        .split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Debug)]
struct Att {
    content_type: String,
    revpos: u64,
    plain: Vec<u8>,
    /// The stored gzip stream, for a compressible type.
    gzip: Option<Vec<u8>>,
}

impl Att {
    fn new(content_type: &str, revpos: u64, plain: Vec<u8>) -> Att {
        let gzip = content_type.starts_with("text/").then(|| gzip(&plain));
        Att {
            content_type: content_type.into(),
            revpos,
            plain,
            gzip,
        }
    }

    fn stored(&self) -> &[u8] {
        self.gzip.as_deref().unwrap_or(&self.plain)
    }

    fn digest(&self) -> String {
        md5_digest(self.stored())
    }

    fn entry(&self, mode: &str, encoding_info: bool) -> Value {
        let mut e = json!({"content_type": self.content_type, "revpos": self.revpos,
                           "digest": self.digest()});
        match mode {
            "data" => {
                e["data"] = json!(data_encoding::BASE64.encode(&self.plain));
            }
            "follows" => {
                e["length"] = json!(self.plain.len());
                e["follows"] = json!(true);
            }
            _ => {
                e["length"] = json!(self.plain.len());
                e["stub"] = json!(true);
            }
        }
        if let Some(gz) = &self.gzip {
            if encoding_info || mode == "follows" {
                e["encoding"] = json!("gzip");
                e["encoded_length"] = json!(gz.len());
            }
        }
        e
    }
}

#[derive(Clone, Debug)]
struct Revision {
    /// Revision ids of the path, newest first.
    path: Vec<String>,
    deleted: bool,
    body: Map<String, Value>,
    atts: Vec<(String, Att)>,
}

#[derive(Clone, Debug, Default)]
struct FakeDoc {
    seq: u64,
    leaves: Vec<String>,
    revs: HashMap<String, Revision>,
}

/// How the fake refuses a document it is asked to write.
#[derive(Clone, Debug)]
enum Refusal {
    /// A per-document error in the `_bulk_docs` answer (or the `PUT` answer).
    Row(&'static str),
    /// The whole request fails with this status (CouchDB's answer to a crash).
    Status(u16),
}

#[derive(Default)]
struct Fake {
    docs: BTreeMap<String, FakeDoc>,
    seq: u64,
    local: HashMap<String, Value>,
    /// Answer `_bulk_get` with decoded inline `data` whatever `attachments=` says.
    inline_bulk_get: bool,
    /// The welcome at `/` is CouchDB's (otherwise pouchdb-server's).
    not_couchdb: bool,
    /// A document whose body carries a member no store accepts.
    malformed: Option<String>,
    /// Answer `open_revs` in JSON whatever the `Accept` header says.
    json_open_revs: bool,
    /// A document whose multipart attachment parts are one byte short.
    short_part: Option<String>,
    refuse: HashMap<String, Refusal>,
    /// Request lines seen.
    log: Vec<String>,
    /// Attachment parts received in multipart `PUT`s: (doc, name, gzip-encoded).
    parts: Vec<(String, String, bool)>,
    /// Attachments received inline in `_bulk_docs`: (doc, name, digest given).
    inline: Vec<(String, String, bool)>,
}

type Shared = Arc<Mutex<Fake>>;

impl Fake {
    fn add(&mut self, id: &str, rev: Revision) {
        self.seq += 1;
        let seq = self.seq;
        let doc = self.docs.entry(id.to_owned()).or_default();
        let leaf = rev.path[0].clone();
        doc.leaves.retain(|l| !rev.path[1..].contains(l));
        if !doc.leaves.contains(&leaf) {
            doc.leaves.push(leaf.clone());
        }
        doc.revs.insert(leaf, rev);
        doc.seq = seq;
    }

    fn last_seq(&self) -> String {
        seq_string(self.seq)
    }

    /// A revision as CouchDB renders it: `_revisions`, attachments as `mode` (`stub`, `data`,
    /// or `follows` for those newer than `since_pos`).
    fn render(
        &self,
        id: &str,
        rev: &str,
        mode: &str,
        since_pos: u64,
        encoding_info: bool,
    ) -> Value {
        let r = &self.docs[id].revs[rev];
        let mut doc = Map::new();
        doc.insert("_id".into(), json!(id));
        doc.insert("_rev".into(), json!(rev));
        if r.deleted {
            doc.insert("_deleted".into(), json!(true));
        }
        doc.extend(r.body.clone());
        if self.malformed.as_deref() == Some(id) {
            doc.insert("_bogus".into(), json!(true));
        }
        let start: u64 = rev.split('-').next().unwrap().parse().unwrap();
        let ids: Vec<&str> = r
            .path
            .iter()
            .map(|p| p.split_once('-').unwrap().1)
            .collect();
        doc.insert("_revisions".into(), json!({"start": start, "ids": ids}));
        if !r.atts.is_empty() {
            let mut atts = Map::new();
            for (name, att) in &r.atts {
                let m = if mode == "follows" && att.revpos <= since_pos {
                    "stub"
                } else {
                    mode
                };
                atts.insert(name.clone(), att.entry(m, encoding_info));
            }
            doc.insert("_attachments".into(), Value::Object(atts));
        }
        Value::Object(doc)
    }
}

fn json_reply(status: u16, v: &Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn query_map(req: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The answer's bytes in small pieces (chunked on the wire), as a streaming server sends them.
fn chunked(bytes: Vec<u8>) -> Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    Body::from_stream(futures_util::stream::iter(pieces))
}

async fn handle(State(fake): State<Shared>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let q = query_map(&req);
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    fake.lock().unwrap().log.push(format!(
        "{method} {}",
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    ));
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap();
    if path == "/" {
        let f = fake.lock().unwrap();
        return if f.not_couchdb {
            json_reply(
                200,
                &json!({"express-pouchdb": "Welcome!", "version": "4.2.0"}),
            )
        } else {
            json_reply(
                200,
                &json!({"couchdb": "Welcome", "version": "3.4.3", "vendor": {"name": "The Apache Software Foundation"}}),
            )
        };
    }
    let Some(rest) = path.strip_prefix("/db") else {
        return json_reply(
            404,
            &json!({"error": "not_found", "reason": "Database does not exist."}),
        );
    };
    let rest = rest.trim_start_matches('/').to_owned();
    match (method.as_str(), rest.as_str()) {
        ("GET", "") => {
            let f = fake.lock().unwrap();
            json_reply(
                200,
                &json!({"db_name": "db", "update_seq": f.last_seq(), "instance_start_time": "0",
                        "doc_count": f.docs.len(), "doc_del_count": 0,
                        "sizes": {"file": 1, "external": 1, "active": 1}}),
            )
        }
        ("GET", "_changes") => {
            let f = fake.lock().unwrap();
            let since = seq_number(q.get("since").map_or("0", String::as_str));
            let limit: usize = q
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(usize::MAX);
            let mut newer: Vec<(&String, &FakeDoc)> =
                f.docs.iter().filter(|(_, d)| d.seq > since).collect();
            newer.sort_by_key(|(_, d)| d.seq);
            let rows: Vec<Value> = newer
                .iter()
                .take(limit)
                .map(|(id, d)| {
                    let changes: Vec<Value> = d.leaves.iter().map(|l| json!({"rev": l})).collect();
                    json!({"seq": seq_string(d.seq), "id": id, "changes": changes})
                })
                .collect();
            let last = newer
                .get(..rows.len())
                .and_then(<[_]>::last)
                .map_or(since, |(_, d)| d.seq);
            let pending = newer.len().saturating_sub(rows.len());
            json_reply(
                200,
                &json!({"results": rows, "last_seq": seq_string(last), "pending": pending}),
            )
        }
        ("POST", "_revs_diff") => {
            let f = fake.lock().unwrap();
            let asked: Map<String, Value> = serde_json::from_slice(&body).unwrap();
            let mut out = Map::new();
            for (id, revs) in asked {
                let doc = f.docs.get(&id);
                let missing: Vec<String> = revs
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|r| r.as_str())
                    .filter(|r| doc.is_none_or(|d| !d.revs.contains_key(*r)))
                    .map(str::to_owned)
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                let mut entry = json!({"missing": missing});
                if let Some(d) = doc {
                    let top = missing.iter().map(|r| seq_number(r)).max().unwrap_or(0);
                    let ancestors: Vec<&String> =
                        d.leaves.iter().filter(|l| seq_number(l) < top).collect();
                    if !ancestors.is_empty() {
                        entry["possible_ancestors"] = json!(ancestors);
                    }
                }
                out.insert(id, entry);
            }
            json_reply(200, &Value::Object(out))
        }
        ("POST", "_bulk_get") => {
            let f = fake.lock().unwrap();
            let asked: Value = serde_json::from_slice(&body).unwrap();
            let inline = f.inline_bulk_get || q.get("attachments").is_some_and(|a| a == "true");
            let info = f.inline_bulk_get || q.get("att_encoding_info").is_some_and(|a| a == "true");
            let results: Vec<Value> = asked["docs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let id = d["id"].as_str().unwrap();
                    let rev = d["rev"].as_str().unwrap();
                    let found = f.docs.get(id).is_some_and(|doc| doc.revs.contains_key(rev));
                    let doc = if found {
                        json!({"ok": f.render(id, rev, if inline { "data" } else { "stub" }, 0, info)})
                    } else {
                        json!({"error": {"id": id, "rev": rev, "error": "not_found", "reason": "missing"}})
                    };
                    json!({"id": id, "docs": [doc]})
                })
                .collect();
            json_reply(200, &json!({"results": results}))
        }
        ("POST", "_bulk_docs") => {
            let request: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                request["new_edits"], false,
                "replicated writes keep their revisions"
            );
            let mut f = fake.lock().unwrap();
            let mut rows = Vec::new();
            for doc in request["docs"].as_array().unwrap() {
                let id = doc["_id"].as_str().unwrap().to_owned();
                let rev = doc["_rev"].as_str().unwrap().to_owned();
                match f.refuse.get(&id).cloned() {
                    Some(Refusal::Row(error)) => {
                        rows.push(json!({"id": id, "rev": rev, "error": error,
                                         "reason": format!("{error} by the fake's rules")}));
                        continue;
                    }
                    Some(Refusal::Status(status)) => {
                        return json_reply(
                            status,
                            &json!({"error": "unknown_error", "reason": "function_clause"}),
                        );
                    }
                    None => {}
                }
                match store_written(&mut f, doc.as_object().unwrap().clone(), Vec::new()) {
                    Ok(()) => {}
                    Err(reply) => return *reply,
                }
            }
            json_reply(201, &Value::Array(rows))
        }
        ("GET", local) if local.starts_with("_local/") => {
            let f = fake.lock().unwrap();
            match f.local.get(local) {
                Some(doc) => json_reply(200, doc),
                None => json_reply(404, &json!({"error": "not_found", "reason": "missing"})),
            }
        }
        ("PUT", local) if local.starts_with("_local/") => {
            let mut doc: Value = serde_json::from_slice(&body).unwrap();
            doc["_id"] = json!(local);
            doc["_rev"] = json!("0-1");
            fake.lock().unwrap().local.insert(local.to_owned(), doc);
            json_reply(201, &json!({"ok": true, "id": local, "rev": "0-1"}))
        }
        ("POST", "_ensure_full_commit") => {
            json_reply(201, &json!({"ok": true, "instance_start_time": "0"}))
        }
        ("GET", id) if q.contains_key("open_revs") => {
            let f = fake.lock().unwrap();
            let id = percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned();
            let revs: Vec<String> = serde_json::from_str(&q["open_revs"]).unwrap();
            let since: Vec<String> = q
                .get("atts_since")
                .map(|s| serde_json::from_str(s).unwrap())
                .unwrap_or_default();
            if !accept.contains("multipart/mixed") || f.json_open_revs {
                let list: Vec<Value> = revs
                    .iter()
                    .map(|r| match f.docs.get(&id).and_then(|d| d.revs.get(r)) {
                        Some(_) => json!({"ok": f.render(&id, r, "data", 0, false)}),
                        None => json!({"missing": r}),
                    })
                    .collect();
                return json_reply(200, &Value::Array(list));
            }
            let mut out = Vec::new();
            for r in &revs {
                let Some(rev) = f.docs.get(&id).and_then(|d| d.revs.get(r)) else {
                    out.extend_from_slice(
                        format!("--OUTERB\r\nContent-Type: application/json; error=\"true\"\r\n\r\n{{\"missing\":\"{r}\"}}\r\n").as_bytes(),
                    );
                    continue;
                };
                let since_pos = since
                    .iter()
                    .filter(|s| rev.path.contains(s))
                    .map(|s| seq_number(s))
                    .max()
                    .unwrap_or(0);
                let doc = f.render(&id, r, "follows", since_pos, true);
                let follows: Vec<&(String, Att)> = rev
                    .atts
                    .iter()
                    .filter(|(_, a)| a.revpos > since_pos)
                    .collect();
                if follows.is_empty() {
                    out.extend_from_slice(
                        format!("--OUTERB\r\nContent-Type: application/json\r\n\r\n{doc}\r\n")
                            .as_bytes(),
                    );
                    continue;
                }
                out.extend_from_slice(
                    format!("--OUTERB\r\nContent-Type: multipart/related; boundary=\"INNERB\"\r\n\r\n--INNERB\r\nContent-Type: application/json\r\n\r\n{doc}\r\n").as_bytes(),
                );
                for (name, att) in follows {
                    let encoding = if att.gzip.is_some() {
                        "Content-Encoding: gzip\r\n"
                    } else {
                        ""
                    };
                    out.extend_from_slice(
                        format!(
                            "--INNERB\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Type: {}\r\nContent-Length: {}\r\n{encoding}\r\n",
                            att.content_type,
                            att.stored().len()
                        )
                        .as_bytes(),
                    );
                    let stored = att.stored();
                    let cut = usize::from(f.short_part.as_deref() == Some(id.as_str()));
                    out.extend_from_slice(&stored[..stored.len() - cut]);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"--INNERB--\r\n");
            }
            out.extend_from_slice(b"--OUTERB--");
            Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "multipart/mixed; boundary=\"OUTERB\"")
                .body(chunked(out))
                .unwrap()
        }
        ("PUT", id) if q.get("new_edits").is_some_and(|v| v == "false") => {
            let id = percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned();
            receive_multipart(&fake, &id, &content_type, body).await
        }
        _ => json_reply(
            400,
            &json!({"error": "bad_request", "reason": format!("the fake does not serve {method} {path}")}),
        ),
    }
}

/// `PUT /db/doc?new_edits=false` as `multipart/related`, checked as CouchDB checks it.
async fn receive_multipart(
    fake: &Shared,
    id: &str,
    content_type: &str,
    body: bytes::Bytes,
) -> Response {
    let boundary = content_type
        .parse::<mime::Mime>()
        .unwrap()
        .get_param(mime::BOUNDARY)
        .unwrap()
        .to_string();
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(body)]);
    let mut multipart = multer::Multipart::new(stream, boundary);
    let first = multipart.next_field().await.unwrap().unwrap();
    assert_eq!(
        first.content_type().map(ToString::to_string).as_deref(),
        Some("application/json"),
        "the document comes first"
    );
    let doc: Map<String, Value> = serde_json::from_slice(&first.bytes().await.unwrap()).unwrap();
    assert_eq!(doc["_id"], id);
    let follows: Vec<(String, Value)> = doc["_attachments"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, a)| a["follows"] == true)
        .map(|(n, a)| (n.clone(), a.clone()))
        .collect();
    let mut received = Vec::new();
    for (name, spec) in &follows {
        // Part headers are ignored: parts are taken in `_attachments` order.
        let field = multipart
            .next_field()
            .await
            .unwrap()
            .expect("a part per attachment");
        let bytes = field.bytes().await.unwrap().to_vec();
        let gzip = spec["encoding"] == "gzip";
        let expected = if gzip {
            &spec["encoded_length"]
        } else {
            &spec["length"]
        };
        if expected.as_u64() != Some(bytes.len() as u64) {
            return json_reply(
                400,
                &json!({"error": "bad_request", "reason": "attachment shorter than expected"}),
            );
        }
        if let Some(digest) = spec.get("digest").and_then(Value::as_str) {
            if digest != md5_digest(&bytes) {
                // What CouchDB answers when the MD5 of what it received is not the digest.
                return json_reply(
                    500,
                    &json!({"error": "unknown_error", "reason": "function_clause"}),
                );
            }
        }
        received.push((name.clone(), bytes, gzip));
    }
    assert!(
        multipart.next_field().await.unwrap().is_none(),
        "no extra parts"
    );
    let mut f = fake.lock().unwrap();
    match f.refuse.get(id).cloned() {
        Some(Refusal::Row(error)) => {
            return json_reply(403, &json!({"error": error, "reason": "refused"}));
        }
        Some(Refusal::Status(status)) => {
            return json_reply(
                status,
                &json!({"error": "unknown_error", "reason": "function_clause"}),
            );
        }
        None => {}
    }
    for (name, _, gzip) in &received {
        f.parts.push((id.to_owned(), name.clone(), *gzip));
    }
    let rev = doc["_rev"].clone();
    match store_written(&mut f, doc, received) {
        Ok(()) => json_reply(201, &json!({"ok": true, "id": id, "rev": rev})),
        Err(reply) => *reply,
    }
}

/// Stores a replicated revision: inline data (digest ignored, as CouchDB ignores it), parts
/// (gzip ones kept as they came), stubs from the nearest ancestor with that name.
fn store_written(
    f: &mut Fake,
    doc: Map<String, Value>,
    mut parts: Vec<(String, Vec<u8>, bool)>,
) -> Result<(), Box<Response>> {
    let id = doc["_id"].as_str().unwrap().to_owned();
    let revisions = &doc["_revisions"];
    let start = revisions["start"].as_u64().unwrap();
    let path: Vec<String> = revisions["ids"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{}-{}", start - i as u64, h.as_str().unwrap()))
        .collect();
    assert_eq!(doc["_rev"].as_str().unwrap(), path[0]);
    let mut atts = Vec::new();
    for (name, spec) in doc
        .get("_attachments")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let content_type = spec["content_type"]
            .as_str()
            .unwrap_or("application/octet-stream");
        let revpos = spec["revpos"].as_u64().unwrap_or(start);
        if spec["stub"] == true {
            let found = f.docs.get(&id).and_then(|d| {
                path[1..].iter().find_map(|p| {
                    d.revs.get(p).and_then(|r| {
                        r.atts
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, a)| a.clone())
                    })
                })
            });
            match found {
                Some(att) => atts.push((name.clone(), att)),
                None => {
                    return Err(Box::new(json_reply(
                        412,
                        &json!({"error": "missing_stub", "reason": format!("Invalid attachment stub in {id} for {name}")}),
                    )));
                }
            }
        } else if let Some(data) = spec.get("data").and_then(Value::as_str) {
            f.inline
                .push((id.clone(), name.clone(), spec.get("digest").is_some()));
            let plain = data_encoding::BASE64.decode(data.as_bytes()).unwrap();
            atts.push((name.clone(), Att::new(content_type, revpos, plain)));
        } else {
            let at = parts.iter().position(|(n, _, _)| n == name).unwrap();
            let (_, bytes, gzip) = parts.swap_remove(at);
            let att = if gzip {
                let plain = gunzip(&bytes);
                assert_eq!(Some(plain.len() as u64), spec["length"].as_u64());
                Att {
                    content_type: content_type.into(),
                    revpos,
                    plain,
                    gzip: Some(bytes),
                }
            } else {
                Att::new(content_type, revpos, bytes)
            };
            atts.push((name.clone(), att));
        }
    }
    let body: Map<String, Value> = doc
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    f.add(
        &id,
        Revision {
            path,
            deleted: doc.get("_deleted") == Some(&json!(true)),
            body,
            atts,
        },
    );
    Ok(())
}

async fn start_fake(fake: Fake) -> (Shared, String, tokio::task::JoinHandle<()>) {
    let shared: Shared = Arc::new(Mutex::new(fake));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/db", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (shared, url, task)
}

fn remote(url: &str) -> Endpoint {
    Endpoint::Remote(Arc::new(
        Remote::new(url, Arc::new(TcpConnector), Arc::new(TokioClock)).unwrap(),
    ))
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    (dir, store)
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn text(i: u64) -> Vec<u8> {
    format!("hello attachment {i}{}", " ".repeat(200)).into_bytes()
}

/// The database of the issue: 301 documents, 1 in 10 with a binary and a `text/plain`
/// attachment, one with two conflicting leaves.
fn couchdb_database(fake: &mut Fake) {
    for i in 0..301u64 {
        let id = format!("d{i:03}");
        let rev1 = format!("1-{}", hash(&id));
        let atts = if i % 10 == 0 {
            vec![
                (
                    "b.bin".to_owned(),
                    Att::new("application/octet-stream", 1, noise(i, 2000)),
                ),
                ("t.txt".to_owned(), Att::new("text/plain", 1, text(i))),
            ]
        } else {
            Vec::new()
        };
        let mut body = Map::new();
        body.insert("i".into(), json!(i));
        fake.add(
            &id,
            Revision {
                path: vec![rev1.clone()],
                deleted: false,
                body: body.clone(),
                atts,
            },
        );
        if i == 7 {
            for side in ["left", "right"] {
                let mut b = body.clone();
                b.insert("side".into(), json!(side));
                fake.add(
                    &id,
                    Revision {
                        path: vec![format!("2-{}", hash(side)), rev1.clone()],
                        deleted: false,
                        body: b,
                        atts: Vec::new(),
                    },
                );
            }
        }
    }
}

/// Every leaf of every document of the fake is in `db` with the same body and attachment
/// bytes; returns, per attachment, (fake digest, local digest).
fn assert_has_everything(fake: &Fake, db: &Database) -> Vec<(String, String)> {
    let mut digests = Vec::new();
    for (id, doc) in &fake.docs {
        let opts = GetOptions {
            attachments: AttachmentMode::Inline,
            ..GetOptions::default()
        };
        let local = db.open_revs(id, &OpenRevs::All, &opts).unwrap();
        let mut leaves: Vec<String> = local
            .iter()
            .filter_map(|r| match r {
                OpenRev::Ok(d) => Some(d.rev.to_string()),
                OpenRev::Missing(_) => None,
            })
            .collect();
        leaves.sort();
        let mut expected = doc.leaves.clone();
        expected.sort();
        assert_eq!(leaves, expected, "leaves of {id}");
        for r in local {
            let OpenRev::Ok(d) = r else { continue };
            let rev = &doc.revs[&d.rev.to_string()];
            for (k, v) in &rev.body {
                assert_eq!(d.json.get(k), Some(v), "{id} {k}");
            }
            for (name, att) in &rev.atts {
                let entry = &d.json["_attachments"][name];
                let data = data_encoding::BASE64
                    .decode(entry["data"].as_str().unwrap().as_bytes())
                    .unwrap();
                assert_eq!(data, att.plain, "content of {id}/{name}");
                assert_eq!(entry["content_type"], att.content_type.as_str());
                digests.push((att.digest(), entry["digest"].as_str().unwrap().to_owned()));
            }
        }
    }
    digests
}

// ---------------------------------------------------------------------------------------------
// Pull.

/// The case: 301 documents from CouchDB, every document and leaf arrives, attachment
/// bytes intact and digests preserved (the stored bytes travel encoded), the checkpoint is the
/// source's last string sequence; a second round after edits sends only what is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_every_document_leaf_and_attachment_from_couchdb() {
    let mut fake = Fake::default();
    couchdb_database(&mut fake);
    let (shared, url, server) = start_fake(fake).await;
    let (_d, s) = store();
    let db = s.create_db("replica").unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let rep = Replication::new(
        remote(&url),
        Endpoint::Local(db.clone()),
        ReplicationOptions {
            batch_size: 100,
            ..ReplicationOptions::default()
        },
    )
    .with_events(tx);
    let result = rep.run().await.unwrap();
    assert_eq!(result.progress.docs_written, 302, "{:?}", result.progress);
    assert_eq!(result.progress.doc_write_failures, 0);
    assert_eq!(rep.progress().state, RepState::Completed);
    let last = shared.lock().unwrap().last_seq();
    assert_eq!(result.source_last_seq, json!(last));
    let ckpt = db.get_local(&format!("_local/{}", rep.id())).unwrap();
    assert_eq!(
        ckpt["source_last_seq"],
        json!(last),
        "checkpoint = the source's last seq"
    );
    let source_ckpt = shared.lock().unwrap().local[&format!("_local/{}", rep.id())].clone();
    assert_eq!(source_ckpt["source_last_seq"], json!(last));
    let mut checkpoints = 0;
    while let Ok(e) = rx.try_recv() {
        if let Event::Checkpoint(p) = e {
            checkpoints += 1;
            assert!(p.checkpointed_source_seq.is_string());
        }
    }
    assert_eq!(checkpoints, 4, "301 changes in batches of 100");
    {
        let f = shared.lock().unwrap();
        let digests = assert_has_everything(&f, &db);
        assert_eq!(digests.len(), 62);
        for (theirs, ours) in &digests {
            assert_eq!(theirs, ours, "the digest travels with the stored bytes");
        }
        let bulk_gets = f.log.iter().filter(|l| l.contains("/_bulk_get")).count();
        assert!(
            f.log
                .iter()
                .filter(|l| l.contains("/_bulk_get"))
                .all(|l| l.contains("attachments=false"))
        );
        let open_revs = f.log.iter().filter(|l| l.contains("open_revs=")).count();
        // 302 revisions in groups of at most 100 per batch: d007's two leaves make the first
        // batch 101 revisions, so two requests.
        assert_eq!((bulk_gets, open_revs), (5, 31), "{:#?}", f.log);
    }

    // CouchDB-side edits: bodies of the attachment documents change (their attachments stay,
    // revpos 1), and one gets a new attachment. Only the new attachment travels.
    {
        let mut f = shared.lock().unwrap();
        f.log.clear();
        for i in (0..301u64).step_by(10) {
            let id = format!("d{i:03}");
            let prev = f.docs[&id].leaves[0].clone();
            let mut rev = f.docs[&id].revs[&prev].clone();
            rev.path
                .insert(0, format!("2-{}", hash(&format!("{id}-2"))));
            rev.body.insert("edited".into(), json!(true));
            if i == 50 {
                rev.atts
                    .push(("new.txt".into(), Att::new("text/plain", 2, text(5000))));
            }
            f.add(&id, rev);
        }
    }
    let second = Replication::new(
        remote(&url),
        Endpoint::Local(db.clone()),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(second.progress.docs_written, 31);
    let f = shared.lock().unwrap();
    let open_revs: Vec<&String> = f.log.iter().filter(|l| l.contains("open_revs=")).collect();
    assert_eq!(
        open_revs.len(),
        1,
        "only the document with new content: {open_revs:#?}"
    );
    assert!(open_revs[0].contains("atts_since="), "{}", open_revs[0]);
    let digests = assert_has_everything(&f, &db);
    assert!(digests.iter().all(|(a, b)| a == b));
    drop(f);
    server.abort();
}

/// `_bulk_get` answered with decoded inline `data` whose `digest` is that of CouchDB's stored
/// gzip stream (`md5(data) != digest`), with `encoding`/`encoded_length`: every document is
/// written, bytes intact (the store keeps text gzip-encoded, as CouchDB did).
#[tokio::test]
async fn pulls_couchdb_inline_bulk_get_answers() {
    let mut fake = Fake {
        inline_bulk_get: true,
        ..Fake::default()
    };
    couchdb_database(&mut fake);
    let (shared, url, server) = start_fake(fake).await;
    let (_d, s) = store();
    let db = s.create_db("replica").unwrap();
    let result = Replication::new(
        remote(&url),
        Endpoint::Local(db.clone()),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(
        (
            result.progress.docs_written,
            result.progress.doc_write_failures
        ),
        (302, 0)
    );
    let f = shared.lock().unwrap();
    assert_has_everything(&f, &db);
    assert_eq!(f.log.iter().filter(|l| l.contains("open_revs=")).count(), 0);
    let t = db.get("d010", &GetOptions::default()).unwrap().json["_attachments"]["t.txt"].clone();
    assert_eq!(t["length"], text(10).len(), "{t}");
    drop(f);
    server.abort();
}

/// A peer that answers `open_revs` in JSON (inline base64 `data`) whatever `Accept` says:
/// everything arrives all the same.
#[tokio::test]
async fn pulls_from_a_peer_that_answers_open_revs_in_json() {
    let mut fake = Fake {
        json_open_revs: true,
        ..Fake::default()
    };
    couchdb_database(&mut fake);
    let (shared, url, server) = start_fake(fake).await;
    let (_d, s) = store();
    let db = s.create_db("replica").unwrap();
    let result = Replication::new(
        remote(&url),
        Endpoint::Local(db.clone()),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(result.progress.docs_written, 302);
    let f = shared.lock().unwrap();
    assert_eq!(
        f.log.iter().filter(|l| l.contains("open_revs=")).count(),
        31
    );
    assert_has_everything(&f, &db);
    drop(f);
    server.abort();
}

/// A multipart answer whose attachment part is shorter than declared is a peer error: the
/// replication stops with an error naming the document (no panic, no partial write).
#[tokio::test]
async fn a_short_multipart_part_stops_the_pull_naming_the_document() {
    let mut fake = Fake {
        short_part: Some("d120".into()),
        ..Fake::default()
    };
    couchdb_database(&mut fake);
    let (_shared, url, server) = start_fake(fake).await;
    let (_d, s) = store();
    let db = s.create_db("replica").unwrap();
    let rep = Replication::new(
        remote(&url),
        Endpoint::Local(db.clone()),
        ReplicationOptions {
            batch_size: 100,
            ..ReplicationOptions::default()
        },
    );
    let err = rep.run().await.unwrap_err();
    assert_eq!(err.kind(), couch_sync::ErrorKind::PeerMisbehaved, "{err}");
    assert!(err.to_string().contains("d120"), "{err}");
    assert!(db.get("d120", &GetOptions::default()).is_err());
    let ckpt = db.get_local(&format!("_local/{}", rep.id())).unwrap();
    assert_eq!(seq_number(ckpt["source_last_seq"].as_str().unwrap()), 102);
    server.abort();
}

/// A document the local store cannot take (not a rule of the target: a malformed body) stops
/// the replication with an error naming it; nothing is checkpointed past it.
#[tokio::test]
async fn a_document_the_local_store_cannot_take_stops_the_pull() {
    let mut fake = Fake {
        malformed: Some("d150".into()),
        ..Fake::default()
    };
    couchdb_database(&mut fake);
    let (_shared, url, server) = start_fake(fake).await;
    let (_d, s) = store();
    let db = s.create_db("replica").unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let rep = Replication::new(
        remote(&url),
        Endpoint::Local(db.clone()),
        ReplicationOptions {
            batch_size: 100,
            ..ReplicationOptions::default()
        },
    )
    .with_events(tx);
    let err = rep.run().await.unwrap_err();
    assert!(err.to_string().contains("d150"), "{err}");
    assert_eq!(err.status(), 400, "{err}");
    let progress = rep.progress();
    assert_eq!(progress.state, RepState::Failed);
    assert!(progress.last_error.unwrap().contains("d150"));
    assert_eq!(
        progress.doc_write_failures, 0,
        "not a refusal by rules: not skipped"
    );
    // The first batch (d000–d099, up to sequence 102: d007 has three) was checkpointed; the
    // one holding d150 was not.
    let ckpt = db.get_local(&format!("_local/{}", rep.id())).unwrap();
    assert_eq!(seq_number(ckpt["source_last_seq"].as_str().unwrap()), 102);
    let mut failed = None;
    while let Ok(e) = rx.try_recv() {
        assert!(
            !matches!(e, Event::Retrying { .. }),
            "a bad document is not retried"
        );
        if let Event::Failed(m) = e {
            failed = Some(m);
        }
    }
    assert!(failed.unwrap().contains("d150"));
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// Push.

fn put(db: &Database, id: &str, body: Value, atts: &[(&str, &str, Vec<u8>)]) -> String {
    let mut json = body.as_object().unwrap().clone();
    json.insert("_id".into(), json!(id));
    if !atts.is_empty() {
        let mut a = Map::new();
        for (name, ct, data) in atts {
            a.insert(
                (*name).into(),
                json!({"content_type": ct, "data": data_encoding::BASE64.encode(data)}),
            );
        }
        json.insert("_attachments".into(), Value::Object(a));
    }
    let tmp = std::env::temp_dir();
    let update = DocUpdate::from_json(
        json,
        couch_sync::ParseOptions {
            compress: true,
            tmp_dir: &tmp,
        },
    )
    .unwrap();
    db.put(Some(id), update, true).unwrap().1.to_string()
}

/// A local database with plain documents, documents with a binary and a text attachment,
/// documents with a small binary only, one binary attachment too large to go inline, and a
/// conflicted document.
fn local_database(db: &Database) -> usize {
    for i in 0..40u64 {
        let id = format!("doc{i:02}");
        if i % 5 == 0 {
            put(
                db,
                &id,
                json!({"i": i}),
                &[
                    ("b.bin", "application/octet-stream", noise(i, 3000)),
                    ("t.txt", "text/plain", text(i)),
                ],
            );
        } else if i % 5 == 1 {
            put(
                db,
                &id,
                json!({"i": i}),
                &[("s.bin", "application/octet-stream", noise(i, 1000))],
            );
        } else if i == 33 {
            put(
                db,
                &id,
                json!({"i": i}),
                &[("big.bin", "application/octet-stream", noise(i, 1536 * 1024))],
            );
        } else {
            put(db, &id, json!({"i": i}), &[]);
        }
    }
    let base = put(db, "conflicted", json!({"v": 0}), &[]);
    for side in ["a", "b"] {
        db.put(
            Some("conflicted"),
            DocUpdate {
                rev: Some(format!("2-{}", hash(side)).parse().unwrap()),
                revisions: Some(Revisions {
                    start: 2,
                    ids: vec![hash(side), base.split_once('-').unwrap().1.to_owned()],
                }),
                body: json!({"v": side}).as_object().unwrap().clone(),
                ..DocUpdate::default()
            },
            false,
        )
        .unwrap();
    }
    42 // leaves
}

/// What the fake holds equals the local database (every leaf, body and attachment bytes).
fn assert_target_matches(fake: &Fake, db: &Database) {
    let all = db
        .all_docs(&couch_sync::AllDocsQuery::default(), None)
        .unwrap();
    let mut count = 0;
    for row in all.rows {
        let couch_sync::AllDocsRow::Doc { id, .. } = row else {
            continue;
        };
        let opts = GetOptions {
            attachments: AttachmentMode::Inline,
            ..GetOptions::default()
        };
        for r in db.open_revs(&id, &OpenRevs::All, &opts).unwrap() {
            let OpenRev::Ok(d) = r else { continue };
            count += 1;
            let theirs = &fake.docs[&id].revs[&d.rev.to_string()];
            assert_eq!(
                Value::Object(theirs.body.clone()),
                Value::Object(
                    d.json
                        .iter()
                        .filter(|(k, _)| !k.starts_with('_'))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                )
            );
            for (name, entry) in d
                .json
                .get("_attachments")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let (_, att) = theirs.atts.iter().find(|(n, _)| n == name).unwrap();
                let data = data_encoding::BASE64
                    .decode(entry["data"].as_str().unwrap().as_bytes())
                    .unwrap();
                assert_eq!(att.plain, data, "{id}/{name}");
            }
        }
    }
    assert!(count > 0);
}

/// Pushing to CouchDB: gzip-stored attachments go as CouchDB's replicator sends them (multipart
/// `PUT`, gzip parts with `encoding`/`encoded_length`, MD5 of the part = digest, which CouchDB
/// keeps), small plain ones inline in `_bulk_docs`, a large one as a streamed multipart part;
/// after edits that keep the attachments, only stubs travel (`possible_ancestors`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_couchdb_as_its_replicator_does() {
    let (_d, s) = store();
    let db = s.create_db("local").unwrap();
    let leaves = local_database(&db);
    let (shared, url, server) = start_fake(Fake::default()).await;
    let result = Replication::new(
        Endpoint::Local(db.clone()),
        remote(&url),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(
        (
            result.progress.docs_written as usize,
            result.progress.doc_write_failures
        ),
        (leaves, 0)
    );
    {
        let f = shared.lock().unwrap();
        assert_target_matches(&f, &db);
        let gzip_parts: Vec<&(String, String, bool)> = f.parts.iter().filter(|p| p.2).collect();
        assert_eq!(
            gzip_parts.len(),
            8,
            "every text attachment as its gzip bytes: {:?}",
            f.parts
        );
        assert!(gzip_parts.iter().all(|p| p.1 == "t.txt"));
        let plain_parts: Vec<&str> = f
            .parts
            .iter()
            .filter(|p| !p.2)
            .map(|p| p.1.as_str())
            .collect();
        assert_eq!(plain_parts.len(), 9, "{:?}", f.parts);
        assert!(
            plain_parts.contains(&"big.bin"),
            "the large binary streamed as a plain part"
        );
        let inline: Vec<&str> = f.inline.iter().map(|i| i.1.as_str()).collect();
        assert_eq!(
            inline,
            vec!["s.bin"; 8],
            "small binaries alone go inline, batched"
        );
        assert!(f.inline.iter().all(|i| i.2), "with their (exact) digest");
        // CouchDB keeps the digest of gzip parts: ours.
        for i in (0..40u64).step_by(5) {
            let id = format!("doc{i:02}");
            let ours = db.get(&id, &GetOptions::default()).unwrap().json["_attachments"]["t.txt"]["digest"].clone();
            let leaf = &f.docs[&id].leaves[0];
            let theirs = f.docs[&id].revs[leaf]
                .atts
                .iter()
                .find(|(n, _)| n == "t.txt")
                .unwrap()
                .1
                .digest();
            assert_eq!(ours, json!(theirs));
        }
        assert_eq!(
            f.local[&format!(
                "_local/{}",
                Replication::new(
                    Endpoint::Local(db.clone()),
                    remote(&url),
                    ReplicationOptions::default()
                )
                .id()
            )]["source_last_seq"],
            json!(db.seq_string(db.update_seq().unwrap()))
        );
    }
    // Edit the attachment documents' bodies: their attachments stay (revpos 1) and travel as
    // stubs the target resolves from the revision it has.
    for i in (0..40u64).step_by(5) {
        let id = format!("doc{i:02}");
        let doc = db.get(&id, &GetOptions::default()).unwrap();
        let mut json = doc.json.clone();
        json.insert("edited".into(), json!(true));
        let tmp = std::env::temp_dir();
        let update = DocUpdate::from_json(
            json,
            couch_sync::ParseOptions {
                compress: true,
                tmp_dir: &tmp,
            },
        )
        .unwrap();
        db.put(Some(&id), update, true).unwrap();
    }
    let (parts_before, inline_before) = {
        let f = shared.lock().unwrap();
        (f.parts.len(), f.inline.len())
    };
    let second = Replication::new(
        Endpoint::Local(db.clone()),
        remote(&url),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(second.progress.docs_written, 8);
    let f = shared.lock().unwrap();
    assert_eq!(
        (f.parts.len(), f.inline.len()),
        (parts_before, inline_before),
        "no attachment content sent again"
    );
    assert_target_matches(&f, &db);
    drop(f);
    server.abort();
}

/// A target whose welcome is not CouchDB's (pouchdb-server stores a part's bytes as they are,
/// whatever its `encoding`): gzip-stored content goes decoded, with no gzip digest.
#[tokio::test]
async fn pushes_decoded_content_to_a_server_that_is_not_couchdb() {
    let (_d, s) = store();
    let db = s.create_db("local").unwrap();
    local_database(&db);
    let (shared, url, server) = start_fake(Fake {
        not_couchdb: true,
        ..Fake::default()
    })
    .await;
    Replication::new(
        Endpoint::Local(db.clone()),
        remote(&url),
        ReplicationOptions::default(),
    )
    .run()
    .await
    .unwrap();
    let f = shared.lock().unwrap();
    assert_target_matches(&f, &db);
    assert!(f.parts.iter().all(|p| !p.2), "no gzip part: {:?}", f.parts);
    assert!(f.parts.iter().all(|p| p.1 == "big.bin"), "{:?}", f.parts);
    let texts: Vec<_> = f.inline.iter().filter(|i| i.1 == "t.txt").collect();
    assert_eq!(texts.len(), 8);
    assert!(
        texts.iter().all(|t| !t.2),
        "decoded content carries no gzip digest"
    );
    drop(f);
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// Failures.

fn plain_source() -> (tempfile::TempDir, Store, Database) {
    let (d, s) = store();
    let db = s.create_db("local").unwrap();
    for i in 0..40u64 {
        let id = format!("doc{i:02}");
        if i == 30 {
            put(
                &db,
                &id,
                json!({"i": i}),
                &[("t.txt", "text/plain", text(i))],
            );
        } else {
            put(&db, &id, json!({"i": i}), &[]);
        }
    }
    (d, s, db)
}

/// A refusal by the target's rules (`forbidden`, `unauthorized`) is counted and skipped, as
/// CouchDB's replicator counts it; the replication completes.
#[tokio::test]
async fn refusals_by_the_targets_rules_are_counted_and_skipped() {
    let (_d, _s, db) = plain_source();
    let mut fake = Fake::default();
    fake.refuse
        .insert("doc10".into(), Refusal::Row("forbidden"));
    fake.refuse
        .insert("doc11".into(), Refusal::Row("unauthorized"));
    let (shared, url, server) = start_fake(fake).await;
    let rep = Replication::new(
        Endpoint::Local(db.clone()),
        remote(&url),
        ReplicationOptions::default(),
    );
    let result = rep.run().await.unwrap();
    assert_eq!(
        (
            result.progress.docs_written,
            result.progress.doc_write_failures
        ),
        (38, 2)
    );
    assert!(result.progress.last_error.unwrap().contains("doc1"));
    let f = shared.lock().unwrap();
    assert!(!f.docs.contains_key("doc10") && !f.docs.contains_key("doc11"));
    assert_eq!(f.docs.len(), 38);
    assert_eq!(
        f.local[&format!("_local/{}", rep.id())]["source_last_seq"],
        json!(db.seq_string(40))
    );
    drop(f);
    server.abort();
}

/// Any other refusal is not skipped: a permanent one (400) stops the replication naming the
/// document, without a checkpoint past it; once the target takes it, the next run writes it.
#[tokio::test]
async fn other_refusals_stop_before_the_checkpoint() {
    let (_d, _s, db) = plain_source();
    let mut fake = Fake::default();
    fake.refuse
        .insert("doc20".into(), Refusal::Row("bad_request"));
    let (shared, url, server) = start_fake(fake).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = ReplicationOptions {
        batch_size: 10,
        ..ReplicationOptions::default()
    };
    let rep = Replication::new(Endpoint::Local(db.clone()), remote(&url), options.clone())
        .with_events(tx);
    let err = rep.run().await.unwrap_err();
    assert_eq!((err.status(), err.error()), (400, "bad_request"), "{err}");
    assert!(err.reason().contains("doc20"), "{err}");
    let p = rep.progress();
    assert_eq!((p.state, p.doc_write_failures), (RepState::Failed, 0));
    assert!(p.last_error.as_deref().unwrap().contains("doc20"));
    let mut failed = None;
    while let Ok(e) = rx.try_recv() {
        assert!(
            !matches!(e, Event::Retrying { .. }),
            "permanent: not retried"
        );
        if let Event::Failed(m) = e {
            failed = Some(m);
        }
    }
    assert!(failed.unwrap().contains("doc20"));
    {
        let mut f = shared.lock().unwrap();
        // Two batches of ten were checkpointed; the one holding doc20 (sequence 21) was not.
        let ckpt = &f.local[&format!("_local/{}", rep.id())];
        assert_eq!(seq_number(ckpt["source_last_seq"].as_str().unwrap()), 20);
        f.refuse.clear();
    }
    let again = Replication::new(Endpoint::Local(db.clone()), remote(&url), options)
        .run()
        .await
        .unwrap();
    assert_eq!(again.progress.doc_write_failures, 0);
    let f = shared.lock().unwrap();
    assert!(
        f.docs.contains_key("doc20"),
        "not skipped: written on the next run"
    );
    assert_eq!(f.docs.len(), 40);
    drop(f);
    server.abort();
}

/// A transient failure writing one document (a 500 for its multipart `PUT`) retries the batch
/// with backoff (on the simulated clock) and never checkpoints past it; the error names it.
#[tokio::test]
async fn transient_write_failures_retry_without_a_checkpoint_past_them() {
    let (_d, _s, db) = plain_source();
    let mut fake = Fake::default();
    fake.refuse.insert("doc30".into(), Refusal::Status(500));
    let (shared, url, server) = start_fake(fake).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let clock = couch_sync::clock::SimulatedClock::new(1_700_000_000_000);
    let rep = Replication::new(
        Endpoint::Local(db.clone()),
        remote(&url),
        ReplicationOptions {
            batch_size: 10,
            retry: RetryPolicy {
                max_attempts: Some(3),
                ..RetryPolicy::default()
            },
            jitter_seed: Some(1),
            ..ReplicationOptions::default()
        },
    )
    .with_clock(Arc::new(clock))
    .with_events(tx);
    let err = rep.run().await.unwrap_err();
    assert_eq!(err.kind(), couch_sync::ErrorKind::Transient, "{err}");
    assert!(err.reason().contains("doc30"), "{err}");
    let mut retries = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Retrying { error, .. } = e {
            retries.push(error);
        }
    }
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries.iter().all(|e| e.contains("doc30")));
    assert!(rep.progress().last_error.unwrap().contains("doc30"));
    let f = shared.lock().unwrap();
    let ckpt = &f.local[&format!("_local/{}", rep.id())];
    assert_eq!(seq_number(ckpt["source_last_seq"].as_str().unwrap()), 30);
    assert!(!f.docs.contains_key("doc30"));
    drop(f);
    server.abort();
}

/// `POST /_replicate` reports a document that stopped the replication (error, reason naming
/// it, counters), with the status of the failure.
#[tokio::test]
async fn replicate_endpoint_reports_the_document_that_stopped_it() {
    let server = couch_sync_server().await;
    let mut fake = Fake::default();
    fake.refuse
        .insert("doc05".into(), Refusal::Row("bad_request"));
    let (_shared, url, fake_task) = start_fake(fake).await;
    let (status, body) = server
        .post_replicate(&json!({"source": "src", "target": url}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request");
    assert!(body["reason"].as_str().unwrap().contains("doc05"), "{body}");
    assert_eq!(body["doc_write_failures"], 0);
    fake_task.abort();
}

struct OurServer {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OurServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OurServer {
    async fn post_replicate(&self, body: &Value) -> (u16, Value) {
        use http_body_util::BodyExt;
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post("/_replicate")
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

async fn couch_sync_server() -> OurServer {
    let (dir, store) = store();
    let src = store.create_db("src").unwrap();
    for i in 0..10u64 {
        put(&src, &format!("doc{i:02}"), json!({"i": i}), &[]);
    }
    let app = couch_sync::server::router(
        store,
        couch_sync::server::ServerConfig::default(),
        Arc::new(couch_sync::server::AllowAll),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    OurServer {
        addr,
        _dir: dir,
        task,
    }
}
