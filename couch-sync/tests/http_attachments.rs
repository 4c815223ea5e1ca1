//! Attachments: inline, standalone, stubs, gzip storage, deduplication, and the multipart forms
//! CouchDB's replicator uses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;

use common::start;
use md5::{Digest, Md5};
use serde_json::{Value, json};

fn md5_b64(bytes: &[u8]) -> String {
    format!("md5-{}", data_encoding::BASE64.encode(&Md5::digest(bytes)))
}

#[tokio::test]
async fn inline_standalone_and_stubs() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let png = [0x89u8, b'P', b'N', b'G', 0, 1, 2, 3, 255];
    let r = s
        .put_json(
            "/db/d",
            &json!({"title": "t", "_attachments": {"pic.png": {"content_type": "image/png", "data": data_encoding::BASE64.encode(&png)}}}),
        )
        .await;
    assert_eq!(r.status, 201);
    let rev1 = r.json()["rev"].as_str().unwrap().to_owned();
    let doc = s.get("/db/d").await.json();
    let stub = &doc["_attachments"]["pic.png"];
    assert_eq!(stub["stub"], true);
    assert_eq!(stub["length"], png.len());
    assert_eq!(stub["revpos"], 1);
    assert_eq!(stub["content_type"], "image/png");
    assert_eq!(stub["digest"], md5_b64(&png));
    let r = s.get("/db/d/pic.png").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], &png);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.header("content-length"), Some("9"));

    // Standalone PUT adds a text attachment in a new revision; the old one is kept as a stub.
    let text = "hello hello hello hello hello hello, attachments".repeat(20);
    let r = s
        .send(
            "PUT",
            &format!("/db/d/notes%2Fa.txt?rev={rev1}"),
            &[("content-type", "text/plain")],
            text.clone(),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let rev2 = r.json()["rev"].as_str().unwrap().to_owned();
    let doc = s.get("/db/d?att_encoding_info=true").await.json();
    let atts = doc["_attachments"].as_object().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(atts["pic.png"]["revpos"], 1);
    let note = &atts["notes/a.txt"];
    assert_eq!(note["revpos"], 2);
    assert_eq!(note["length"], text.len());
    assert_eq!(
        note["encoding"], "gzip",
        "text is stored compressed, as CouchDB does"
    );
    assert!(note["encoded_length"].as_u64().unwrap() < text.len() as u64);
    // Decoded for a plain GET; the stored gzip stream for a client that accepts gzip, whose MD5
    // is the digest.
    assert_eq!(s.get("/db/d/notes%2Fa.txt").await.body, text.as_bytes());
    let gz = s
        .send(
            "GET",
            "/db/d/notes%2Fa.txt",
            &[("accept-encoding", "gzip")],
            "",
        )
        .await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(md5_b64(&gz.body), note["digest"].as_str().unwrap());
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, text);

    // attachments=true inlines decoded content; atts_since skips what the caller has.
    let full = s.get("/db/d?attachments=true").await.json();
    assert_eq!(
        full["_attachments"]["pic.png"]["data"],
        data_encoding::BASE64.encode(&png)
    );
    let since = s
        .get(&format!("/db/d?attachments=true&atts_since=[\"{rev1}\"]"))
        .await
        .json();
    assert_eq!(since["_attachments"]["pic.png"]["stub"], true);
    assert!(since["_attachments"]["notes/a.txt"]["data"].is_string());

    // An update with stubs keeps the content; without _attachments it drops them.
    let mut doc = s.get("/db/d").await.json();
    doc["title"] = json!("t2");
    let rev3 = s.put_json("/db/d", &doc).await.json()["rev"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.get("/db/d/pic.png").await.body, &png[..]);
    let bad_stub = json!({"_rev": rev3, "_attachments": {"nope": {"stub": true}}});
    s.put_json("/db/d", &bad_stub)
        .await
        .assert_error(412, "missing_stub");
    // Old revisions' attachments stay reachable by rev.
    assert_eq!(
        s.get(&format!("/db/d/pic.png?rev={rev2}")).await.body,
        &png[..]
    );

    // DELETE an attachment.
    let r = s.delete(&format!("/db/d/pic.png?rev={rev3}")).await;
    assert_eq!(r.status, 200);
    s.get("/db/d/pic.png").await.assert_error(404, "not_found");
    s.delete("/db/d/pic.png")
        .await
        .assert_error(409, "conflict");
    s.get("/db/nodoc/x").await.assert_error(404, "not_found");
    // Attachment on a new document without rev creates it.
    let r = s
        .send(
            "PUT",
            "/db/fresh/f.bin",
            &[("content-type", "application/octet-stream")],
            vec![7u8; 10],
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r.json()["rev"].as_str().unwrap().starts_with("1-"));
    s.send("PUT", "/db/d/_bad", &[], "x")
        .await
        .assert_error(400, "bad_request");
    let _ = rev2;
}

#[tokio::test]
async fn large_attachment_streams_and_dedups() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = s
        .send(
            "PUT",
            "/db/a/blob",
            &[("content-type", "application/octet-stream")],
            data.clone(),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = s
        .send(
            "PUT",
            "/db/b/blob",
            &[("content-type", "application/octet-stream")],
            data.clone(),
        )
        .await;
    assert_eq!(r.status, 201);
    let size_two = s.get("/db").await.json()["sizes"]["active"]
        .as_u64()
        .unwrap();
    assert!(
        size_two < 4_500_000,
        "stored once for two documents: active {size_two}"
    );
    let got = s.get("/db/b/blob").await;
    assert_eq!(got.body.len(), data.len());
    assert!(got.body == data);
    assert_eq!(
        got.header("content-md5"),
        Some(md5_b64(&data).trim_start_matches("md5-"))
    );
}

#[tokio::test]
async fn open_revs_multipart_for_the_couchdb_replicator() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let text = "some text ".repeat(50);
    s.put_json(
        "/db/d",
        &json!({"a": 1, "_attachments": {"t.txt": {"content_type": "text/plain", "data": data_encoding::BASE64.encode(text.as_bytes())}}}),
    )
    .await;
    let rev = s.get("/db/d").await.json()["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .send(
            "GET",
            &format!(
                "/db/d?revs=true&open_revs=[\"{rev}\",\"5-abcd\"]&latest=true&attachments=true"
            ),
            &[("accept", "multipart/mixed")],
            "",
        )
        .await;
    let ct = r.header("content-type").unwrap().to_owned();
    assert!(ct.starts_with("multipart/mixed; boundary="), "{ct}");
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("Content-Type: multipart/related; boundary="));
    assert!(body.contains("\"follows\":true"));
    // As CouchDB: a gzip-stored attachment follows as its stored gzip bytes, announced as such.
    assert!(body.contains("\"encoding\":\"gzip\""));
    assert!(body.contains("Content-Encoding: gzip"));
    assert!(
        !body.contains(&text),
        "attachment content sent as stored, not decoded"
    );
    assert!(body.contains("{\"missing\":\"5-abcd\"}"));
    assert!(body.contains("Content-Disposition: attachment; filename=\"t.txt\""));
    // Parse it back with a real multipart parser.
    let boundary = ct
        .parse::<mime::Mime>()
        .unwrap()
        .get_param(mime::BOUNDARY)
        .unwrap()
        .as_str()
        .to_owned();
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(r.body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = mp.next_field().await.unwrap() {
        let ct = field.content_type().map(ToString::to_string);
        parts.push((ct, field.bytes().await.unwrap()));
    }
    assert_eq!(parts.len(), 2);
    // Inside the revision's multipart/related part: the JSON, then the stored gzip bytes.
    let (Some(related), bytes) = parts.swap_remove(0) else {
        panic!("revision part without a content type");
    };
    let inner = related
        .parse::<mime::Mime>()
        .unwrap()
        .get_param(mime::BOUNDARY)
        .unwrap()
        .as_str()
        .to_owned();
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let mut mp = multer::Multipart::new(stream, inner);
    let json_part = mp.next_field().await.unwrap().unwrap();
    let doc: Value = serde_json::from_slice(&json_part.bytes().await.unwrap()).unwrap();
    let att = mp
        .next_field()
        .await
        .unwrap()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(doc["_attachments"]["t.txt"]["encoded_length"], att.len());
    assert_eq!(doc["_attachments"]["t.txt"]["digest"], md5_b64(&att));
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&att[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, text);
    assert!(mp.next_field().await.unwrap().is_none());
}

#[tokio::test]
async fn multipart_related_put_with_gzip_part() {
    let s = start().await;
    s.put_json("/db", &json!({})).await;
    let plain = b"gzip me please, gzip me please, gzip me please".repeat(10);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &plain).unwrap();
    let gz = enc.finish().unwrap();
    let bin = vec![1u8, 2, 3, 4, 5];
    let doc = json!({
        "_id": "m", "_rev": "2-abc", "_revisions": {"start": 2, "ids": ["abc", "def"]}, "x": 1,
        "_attachments": {
            "t.txt": {"content_type": "text/plain", "follows": true, "length": plain.len(), "encoding": "gzip", "encoded_length": gz.len(), "digest": md5_b64(&gz), "revpos": 2},
            "b.bin": {"content_type": "application/octet-stream", "follows": true, "length": 5, "digest": md5_b64(&bin), "revpos": 1}
        }
    });
    let mut body = Vec::new();
    body.extend_from_slice(b"--XYZ\r\nContent-Type: application/json\r\n\r\n");
    body.extend_from_slice(doc.to_string().as_bytes());
    body.extend_from_slice(b"\r\n--XYZ\r\nContent-Disposition: attachment; filename=\"t.txt\"\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n\r\n");
    body.extend_from_slice(&gz);
    body.extend_from_slice(
        b"\r\n--XYZ\r\nContent-Disposition: attachment; filename=\"b.bin\"\r\n\r\n",
    );
    body.extend_from_slice(&bin);
    body.extend_from_slice(b"\r\n--XYZ--");
    let r = s
        .send(
            "PUT",
            "/db/m?new_edits=false",
            &[("content-type", "multipart/related; boundary=\"XYZ\"")],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let got = s.get("/db/m?att_encoding_info=true").await.json();
    assert_eq!(got["_rev"], "2-abc");
    assert_eq!(got["_attachments"]["t.txt"]["digest"], md5_b64(&gz));
    assert_eq!(got["_attachments"]["t.txt"]["length"], plain.len());
    assert_eq!(s.get("/db/m/t.txt").await.body, plain);
    assert_eq!(s.get("/db/m/b.bin").await.body, bin);

    // Truncated multipart bodies are a clear 400, never a hang or a half-written document.
    for cut in [20, body.len() / 2, body.len() - 8] {
        let r = s
            .send(
                "PUT",
                "/db/t?new_edits=false",
                &[("content-type", "multipart/related; boundary=\"XYZ\"")],
                body[..cut].to_vec(),
            )
            .await;
        assert_eq!(
            r.status,
            400,
            "cut at {cut}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    s.get("/db/t").await.assert_error(404, "not_found");
    // A digest that does not match the bytes is refused.
    let mut wrong_doc = doc.clone();
    wrong_doc["_id"] = json!("w");
    wrong_doc["_attachments"]["b.bin"]["digest"] = json!("md5-AAAAAAAAAAAAAAAAAAAAAA==");
    let doc_text = doc.to_string();
    let start = body
        .windows(doc_text.len())
        .position(|w| w == doc_text.as_bytes())
        .unwrap();
    let mut wrong = body[..start].to_vec();
    wrong.extend_from_slice(wrong_doc.to_string().as_bytes());
    wrong.extend_from_slice(&body[start + doc_text.len()..]);
    let r = s
        .send(
            "PUT",
            "/db/w?new_edits=false",
            &[("content-type", "multipart/related; boundary=\"XYZ\"")],
            wrong,
        )
        .await;
    r.assert_error(400, "content_md5_mismatch");
    s.get("/db/w").await.assert_error(404, "not_found");
    let _: Value = got;
}
