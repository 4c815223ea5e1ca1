//! Encrypted backup over our own HTTP API: a database with conflicts, a deletion and
//! attachments (gzip-stored and plain) is backed up, the server holds none of its plaintext,
//! the second run is incremental, a restore into a fresh store gives every leaf revision, path
//! and attachment back exactly, a tampered bundle is reported and not imported, and a wrong
//! secret is a clear 404.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::Arc;

use couch_sync::replicate::backup::{Backup, BackupKey};
use couch_sync::replicate::{Remote, TcpConnector, TokioClock};
use couch_sync::{
    AttachmentMode, ChangesQuery, Database, DocUpdate, GetOptions, OpenRev, OpenRevs, Revisions,
};
use serde_json::{Value, json};

use common::{body, put, store};

const SECRET_WORD: &str = "plaintext-marker-zebra";

fn seed(db: &Database) {
    for i in 0..30 {
        put(
            db,
            &format!("note-{i:02}"),
            json!({"i": i, "text": format!("{SECRET_WORD} {i}")}),
        );
    }
    let rev = put(db, "conflicted", json!({"v": "base"}));
    db.put(
        Some("conflicted"),
        DocUpdate {
            rev: Some(rev.parse().unwrap()),
            body: body(json!({"v": "mine"})),
            ..DocUpdate::default()
        },
        true,
    )
    .unwrap();
    db.put(
        Some("conflicted"),
        DocUpdate {
            rev: Some("2-ffffffffffffffffffffffffffffffff".parse().unwrap()),
            revisions: Some(Revisions {
                start: 2,
                ids: vec!["f".repeat(32), rev.split('-').nth(1).unwrap().to_owned()],
            }),
            body: body(json!({"v": "theirs"})),
            ..DocUpdate::default()
        },
        false,
    )
    .unwrap();
    let gone = put(db, "gone", json!({"secret": SECRET_WORD}));
    db.put(
        Some("gone"),
        DocUpdate {
            rev: Some(gone.parse().unwrap()),
            deleted: true,
            ..DocUpdate::default()
        },
        true,
    )
    .unwrap();
    let text = couch_sync::PreparedAttachment::from_bytes(
        "text/plain",
        format!("{SECRET_WORD} attached ").repeat(200).as_bytes(),
        true,
        &std::env::temp_dir(),
    )
    .unwrap();
    let rev = db.put_attachment("withatt", None, "a.txt", text).unwrap();
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let binary = couch_sync::PreparedAttachment::from_bytes(
        "image/png",
        &binary,
        true,
        &std::env::temp_dir(),
    )
    .unwrap();
    db.put_attachment("withatt", Some(rev), "b.png", binary)
        .unwrap();
    // Larger than a sealed bundle sent inline: it goes alone, as raw bytes.
    let mut x = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..1_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let big = couch_sync::PreparedAttachment::from_bytes(
        "application/octet-stream",
        &noise,
        true,
        &std::env::temp_dir(),
    )
    .unwrap();
    db.put_attachment("big", None, "noise.bin", big).unwrap();
}

/// Every leaf of every document (deleted ones too), with its `_revisions` and attachments
/// inline with their digests and encodings.
fn full_state(db: &Database) -> Vec<Value> {
    let changes = db.changes(&ChangesQuery::default(), None).unwrap();
    let mut ids: Vec<String> = changes.results.into_iter().map(|c| c.id).collect();
    ids.sort();
    let opts = GetOptions {
        revs: true,
        att_encoding_info: true,
        attachments: AttachmentMode::Inline,
        ..GetOptions::default()
    };
    let mut out = Vec::new();
    for id in ids {
        let mut leaves: Vec<Value> = db
            .open_revs(&id, &OpenRevs::All, &opts)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                OpenRev::Ok(doc) => Some(Value::Object(doc.json)),
                OpenRev::Missing(_) => None,
            })
            .collect();
        leaves.sort_by_key(|l| l["_rev"].as_str().unwrap_or_default().to_owned());
        out.push(json!({"id": id, "leaves": leaves}));
    }
    out
}

fn backup(server: &common::TestServer, secret: &[u8; 32], tmp: &std::path::Path) -> Backup {
    let key = Arc::new(BackupKey::from_secret(secret).unwrap());
    let remote = Remote::new(
        &format!("http://{}/{}", server.addr, key.cloud_db()),
        Arc::new(TcpConnector),
        Arc::new(TokioClock),
    )
    .unwrap();
    Backup::new(key, Arc::new(remote), tmp)
}

#[tokio::test]
async fn backup_is_sealed_incremental_and_restores_exactly() {
    let server = common::start().await;
    let (dir, store1) = store();
    let db = store1.create_db("journal").unwrap();
    seed(&db);
    let secret = BackupKey::generate_secret().unwrap();
    let b = backup(&server, &secret, dir.path());

    let first = b.run(&db, |_, _| {}).await.unwrap();
    assert_eq!(
        first.docs, 34,
        "30 notes, the conflicted, the deleted, the attached, the big one"
    );
    assert!(first.bytes > 1_500_000);
    let again = b.run(&db, |_, _| {}).await.unwrap();
    assert_eq!(again.docs, 0, "nothing changed: nothing sent");
    put(&db, "note-31", json!({"late": true}));
    let third = b.run(&db, |_, _| {}).await.unwrap();
    assert_eq!(third.docs, 1, "only the changed document");

    // The server holds nothing readable: no database name, id, body or attachment text.
    let key = BackupKey::from_secret(&secret).unwrap();
    let names = server.store.all_dbs().unwrap();
    assert_eq!(names, vec![key.cloud_db().to_owned()]);
    let cloud = server.store.db(key.cloud_db()).unwrap();
    let cloud_state = serde_json::to_string(&full_state(&cloud)).unwrap();
    for plain in [
        SECRET_WORD,
        "journal",
        "note-",
        "conflicted",
        "withatt",
        "a.txt",
        "image/png",
    ] {
        assert!(
            !cloud_state.contains(plain),
            "{plain:?} is readable on the server"
        );
    }
    let files = walk_bytes(server.dir.path());
    assert!(
        !files
            .windows(SECRET_WORD.len())
            .any(|w| w == SECRET_WORD.as_bytes()),
        "the server's files hold the plaintext"
    );
    // With compressible content it would show deflated too: the cloud copy is the sealed one.
    assert_eq!(
        cloud.info().unwrap().doc_count,
        36,
        "35 documents and the manifest"
    );

    // Restore into a fresh store: every leaf, path and attachment, exactly.
    let (dir2, store2) = store();
    let r = backup(&server, &secret, dir2.path());
    let report = r.restore(&store2, |_| {}).await.unwrap();
    assert_eq!(report.databases, vec!["journal".to_owned()]);
    assert_eq!(report.docs, 35);
    assert!(report.tampered.is_empty());
    let restored = store2.db("journal").unwrap();
    assert_eq!(full_state(&restored), full_state(&db));

    // A wrong secret finds no backup.
    let (dir3, store3) = store();
    let wrong = backup(&server, &[9; 32], dir3.path());
    let err = wrong.restore(&store3, |_| {}).await.unwrap_err();
    assert_eq!(err.status(), 404, "{err}");
    assert!(err.to_string().contains("recovery secret"), "{err}");
    assert!(store3.all_dbs().unwrap().is_empty());

    // A tampered bundle (one byte flipped) is reported and not imported; the rest restore.
    let victim = key_cloud_id_of_a_note(&cloud);
    let att = cloud
        .get(
            &victim,
            &GetOptions {
                attachments: AttachmentMode::Inline,
                ..GetOptions::default()
            },
        )
        .unwrap();
    let data = att.json["_attachments"]["c"]["data"].as_str().unwrap();
    let mut bytes = data_encoding::BASE64.decode(data.as_bytes()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    let reply = server
        .put_json(
            &format!("/{}/{victim}", key.cloud_db()),
            &json!({"_rev": att.json["_rev"], "_attachments": {"c": {
                "content_type": "application/octet-stream",
                "data": data_encoding::BASE64.encode(&bytes)}}}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    let (dir4, store4) = store();
    let t = backup(&server, &secret, dir4.path());
    let report = t.restore(&store4, |_| {}).await.unwrap();
    assert_eq!(report.tampered, vec![victim.clone()]);
    assert_eq!(report.docs, 34);
    assert_eq!(
        store4.db("journal").unwrap().info().unwrap().doc_count,
        db.info().unwrap().doc_count - 1
    );
}

/// The cloud id of some document other than the manifest.
fn key_cloud_id_of_a_note(cloud: &Database) -> String {
    let changes = cloud.changes(&ChangesQuery::default(), None).unwrap();
    changes
        .results
        .into_iter()
        .map(|c| c.id)
        .find(|id| id != "manifest")
        .unwrap()
}

fn walk_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

#[tokio::test]
async fn a_server_that_refuses_documents_ends_the_run_with_its_reason() {
    let server = common::start().await;
    let (dir, store1) = store();
    let db = store1.create_db("journal").unwrap();
    put(&db, "a", json!({"v": 1}));
    let secret = [3u8; 32];
    let b = backup(&server, &secret, dir.path());
    // The first run creates the cloud database; then its owner installs a rule that refuses
    // every further document.
    b.run(&db, |_, _| {}).await.unwrap();
    let cloud = BackupKey::from_secret(&secret).unwrap();
    let reply = server
        .put_json(
            &format!("/{}/_design/closed", cloud.cloud_db()),
            &json!({"validate_doc_update":
                "function(doc) { throw({forbidden: 'this server takes no more'}); }"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    put(&db, "b", json!({"v": 2}));
    let err = b.run(&db, |_, _| {}).await.unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    assert!(
        err.to_string().contains("this server takes no more"),
        "{err}"
    );
    // Nothing was checkpointed past the refused document: it is sent again next time.
    let d = server.store.db(cloud.cloud_db()).unwrap();
    let before = d.info().unwrap().doc_count;
    let reply = server
        .delete(&format!(
            "/{}/_design/closed?rev={}",
            cloud.cloud_db(),
            d.get("_design/closed", &GetOptions::default()).unwrap().rev
        ))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let again = b.run(&db, |_, _| {}).await.unwrap();
    assert_eq!(again.docs, 1);
    assert_eq!(d.info().unwrap().doc_count, before);
}
