//! End-to-end encrypted backup, with hubs as processes and a real pouchdb-server (npm) behind a
//! TLS terminator as the untrusted cloud. Hub A backs up a database of documents with
//! attachments, a conflict and a deletion (`device-hub backup add`, cookie login, pinned key);
//! the server's files then hold none of the plaintext (while a control document sent in the
//! clear to the same server is found by the same search); a changed document is the only one
//! sent again; `device-hub restore` with the recovery words brings every leaf revision, path
//! and attachment back into a fresh hub exactly; wrong or mistyped words fail clearly; a
//! bundle tampered with on the server is reported and not imported.
//!
//! It also prints figures: the backup's time against a plain replication of the same database
//! to the same server, and the restore's time. `BACKUP_DOCS` sets the number of documents
//! (default 1,000; `scripts/bench-backup` runs 10,000).
//!
//! Without node or the npm packages it prints a SKIPPED line and passes — unless `CI` is set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod support;

use std::path::Path;
use std::time::Instant;

use couch_sync::{AttachmentMode, ChangesQuery, Database, GetOptions, OpenRev, OpenRevs, Store};
use serde_json::{Value, json};
use support::cloud::{ADMIN, PASSWORD, Terminator, pouch_server};
use support::{Hub, eventually};

const MARKER: &str = "zebra-crossing-plaintext";
const CONTROL: &str = "control-marker-in-the-clear";

fn docs_wanted() -> usize {
    std::env::var("BACKUP_DOCS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// Writes `n` documents, each with a text attachment, in batches; then a conflict and a
/// deletion. Every id, name, revision and text carries `tag`.
async fn seed(hub: &Hub, db: &str, n: usize, tag: &str) {
    let owner = hub.owner();
    assert_eq!(
        hub.request(Some(&owner), "PUT", &format!("/{db}"), None)
            .await
            .0,
        201
    );
    for start in (0..n).step_by(250) {
        let docs: Vec<Value> = (start..n.min(start + 250))
            .map(|i| {
                let text = format!("{tag} attachment {i} ").repeat(8);
                json!({
                    "_id": format!("{tag}-{i:05}"),
                    "title": format!("{tag} title {i}"),
                    "n": i,
                    "_attachments": {format!("{tag}.txt"): {
                        "content_type": "text/plain",
                        "data": data_encoding::BASE64.encode(text.as_bytes()),
                    }},
                })
            })
            .collect();
        let (status, body) = hub
            .request(
                Some(&owner),
                "POST",
                &format!("/{db}/_bulk_docs"),
                Some(&json!({"docs": docs})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = hub
        .request(
            Some(&owner),
            "POST",
            &format!("/{db}/_bulk_docs"),
            Some(&json!({"new_edits": false, "docs": [
                {"_id": format!("{tag}-conflicted"), "_rev": format!("1-{tag}a"), "side": "one"},
                {"_id": format!("{tag}-conflicted"), "_rev": format!("1-{tag}b"), "side": "two"},
                {"_id": format!("{tag}-gone"), "_rev": format!("1-{tag}c"), "x": 1},
                {"_id": format!("{tag}-gone"), "_rev": format!("2-{tag}d"), "_deleted": true,
                 "_revisions": {"start": 2, "ids": [format!("{tag}d"), format!("{tag}c")]}},
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// The status row of `peer` for `db`.
async fn row(hub: &Hub, peer: &str, db: &str) -> Option<Value> {
    let (status, s) = hub
        .request(Some(&hub.owner()), "GET", "/_hub/api/status", None)
        .await;
    assert_eq!(status, 200, "{s}");
    s["replication"]
        .as_array()?
        .iter()
        .find(|r| r["peer"] == peer && r["db"] == db && r["direction"] == "push")
        .cloned()
}

/// Waits until `peer`'s push of `db` has written at least `docs` and is caught up; returns
/// the row.
async fn caught_up(hub: &Hub, peer: &str, db: &str, docs: u64) -> Value {
    eventually(
        600,
        &format!("{peer} has sent {docs} documents of {db}"),
        || async {
            row(hub, peer, db).await.filter(|r| {
                r["docs_written"].as_u64() >= Some(docs)
                    && r["pending"] == json!(0)
                    && r["last_error"].is_null()
            })
        },
    )
    .await
}

/// Every leaf of every document (deleted ones too), with `_revisions` and attachments inline
/// with their digests and encodings.
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
    ids.into_iter()
        .map(|id| {
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
            json!({"id": id, "leaves": leaves})
        })
        .collect()
}

fn state_of(hub: &Hub, db: &str) -> Vec<Value> {
    let store = Store::open(hub.dir.path().join("store"), Default::default()).unwrap();
    full_state(&store.db(db).unwrap())
}

/// Whether any file under `dir` contains `needle`.
fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            files_contain(&path, needle)
        } else {
            std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        }
    })
}

/// The 24 words `backup add` printed.
fn printed_words(out: &str) -> String {
    let words: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("1. ")
                || l.contains(" 7. ")
                || l.contains("13. ")
                || l.contains("19. ")
        })
        .flat_map(|l| l.split_whitespace())
        .filter(|w| !w.ends_with('.'))
        .collect();
    assert_eq!(words.len(), 24, "24 recovery words in: {out}");
    words.join(" ")
}

/// Runs `device-hub ARGS… --user ADMIN --password-file … --pin PIN` on `hub`: a command that
/// reaches the pouchdb-server through the terminator (key `pin`) as its admin.
fn as_admin(hub: &Hub, pin: &str, args: &[&str]) -> std::process::Output {
    let password_file = hub.dir.path().join("password.txt");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let mut all = args.to_vec();
    all.extend([
        "--user",
        ADMIN,
        "--password-file",
        password_file.to_str().unwrap(),
        "--pin",
        pin,
    ]);
    hub.cli(&all)
}

/// The standard output of a command that must succeed.
fn succeeded(args: &str, out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "device-hub {args} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `device-hub restore` into `hub`'s (stopped) data directory.
fn restore(hub: &Hub, url: &str, pin: &str, words: &str) -> std::process::Output {
    let words_file = hub.dir.path().join("words.txt");
    std::fs::write(&words_file, words).unwrap();
    let out = as_admin(
        hub,
        pin,
        &["restore", url, "--words-file", words_file.to_str().unwrap()],
    );
    std::fs::remove_file(&words_file).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_backup_restores_exactly_into_a_fresh_hub() {
    let Some(server) = pouch_server("backup::a_sealed_backup_restores_exactly_into_a_fresh_hub")
    else {
        return;
    };
    let n = docs_wanted();
    let terminator = Terminator::start(server.port).await;
    let url = terminator.url();
    let pin = terminator.pin.clone();
    let mut a = Hub::start("a");
    seed(&a, "journal", n, MARKER).await;
    seed(&a, "plain", n, CONTROL).await;
    let owner = a.owner();

    // The encrypted backup.
    let started = Instant::now();
    let out = succeeded(
        "backup add",
        as_admin(
            &a,
            &pin,
            &["backup", "add", "vault", &url, "journal", "--cookie"],
        ),
    );
    let words = printed_words(&out);
    let key_file = a.dir.path().join("cloud/vault.backup-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the backup key is private");
    }
    let toml = std::fs::read_to_string(a.dir.path().join("hub.toml")).unwrap();
    assert!(toml.contains("encrypted = true"), "{toml}");
    let total = n as u64 + 2;
    let sealed_row = caught_up(&a, "backup:vault", "journal", total).await;
    let backup_secs = started.elapsed().as_secs_f64();
    assert_eq!(sealed_row["docs_written"], json!(total), "{sealed_row}");
    let cloud_db = sealed_row["remote_db"].as_str().unwrap().to_owned();
    assert!(cloud_db.starts_with("thali-backup-"), "{sealed_row}");

    // The same kind of database, replicated in the clear to the same server: the reference.
    let started = Instant::now();
    succeeded(
        "cloud add",
        as_admin(
            &a,
            &pin,
            &[
                "cloud", "add", "clear", &url, "--db", "plain", "--push", "--cookie",
            ],
        ),
    );
    caught_up(&a, "cloud:clear", "plain", total).await;
    let plain_secs = started.elapsed().as_secs_f64();
    println!(
        "FIGURES backup of {total} docs with attachments: sealed backup {backup_secs:.2} s \
         ({:.0} docs/s), plain replication {plain_secs:.2} s ({:.0} docs/s): backup runs at \
         {:.0}% of plain replication",
        total as f64 / backup_secs,
        total as f64 / plain_secs,
        100.0 * plain_secs / backup_secs
    );

    // The server's files: the control is there in the clear, nothing of the backup is.
    let (_, dbs) = server.request("GET", "/_all_dbs", None).await;
    assert!(dbs.as_array().unwrap().contains(&json!(cloud_db)), "{dbs}");
    assert!(
        !dbs.to_string().contains("journal"),
        "the database's name leaks: {dbs}"
    );
    for control in [CONTROL.to_owned(), format!("{CONTROL}-00042")] {
        assert!(
            files_contain(server.data_dir(), control.as_bytes()),
            "the search finds {control:?}, sent in the clear"
        );
    }
    for needle in [
        MARKER.to_owned(),
        format!("{MARKER}-00042"),
        format!("{MARKER}.txt"),
        format!("1-{MARKER}a"),
        "journal".to_owned(),
    ] {
        assert!(
            !files_contain(server.data_dir(), needle.as_bytes()),
            "{needle:?} is readable in the server's files"
        );
    }
    // Nor over its API.
    let (_, page) = server
        .request(
            "GET",
            &format!("/{cloud_db}/_all_docs?include_docs=true&limit=5"),
            None,
        )
        .await;
    assert!(!page.to_string().contains(MARKER), "{page}");

    // Incremental: one changed document is the one sent.
    let (_, doc) = a
        .request(
            Some(&owner),
            "GET",
            &format!("/journal/{MARKER}-00007"),
            None,
        )
        .await;
    let mut changed = doc.clone();
    changed["title"] = json!("changed");
    let (status, _) = a
        .request(
            Some(&owner),
            "PUT",
            &format!("/journal/{MARKER}-00007"),
            Some(&changed),
        )
        .await;
    assert_eq!(status, 201);
    let after = caught_up(&a, "backup:vault", "journal", total + 1).await;
    assert_eq!(after["docs_written"], json!(total + 1), "{after}");
    a.stop();
    let original = state_of(&a, "journal");
    assert_eq!(original.len(), total as usize);

    // Restore into a fresh hub from the words and the URL alone.
    let mut b = Hub::start("b");
    b.stop();
    let started = Instant::now();
    let out = restore(&b, &url, &pin, &words);
    let restore_secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("FIGURES restore of {total} docs with attachments: {restore_secs:.2} s");
    assert_eq!(state_of(&b, "journal"), original, "restored exactly");
    b.start_again();
    let (status, info) = b.request(Some(&b.owner()), "GET", "/journal", None).await;
    assert_eq!((status, info["doc_count"].clone()), (200, json!(n + 1)));

    // Wrong and mistyped words.
    let c = {
        let mut c = Hub::start("c");
        c.stop();
        c
    };
    let other = {
        let mut scratch = Hub::start("scratch");
        let text = scratch.cli_ok(&["backup", "add", "elsewhere", &url, "journal", "--pin", &pin]);
        scratch.stop();
        printed_words(&text)
    };
    let out = restore(&c, &url, &pin, &other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no backup under this recovery secret"),
        "{err}"
    );
    let mut typo: Vec<&str> = words.split(' ').collect();
    typo[3] = "zzzz";
    let out = restore(&c, &url, &pin, &typo.join(" "));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("recovery words"), "{err}");

    // A bundle changed on the server: reported, not imported; the rest restore.
    let (_, page) = server
        .request("GET", &format!("/{cloud_db}/_all_docs?limit=3"), None)
        .await;
    let victim = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .find(|id| id != "manifest")
        .unwrap();
    let (_, stored) = server
        .request(
            "GET",
            &format!("/{cloud_db}/{victim}?attachments=true"),
            None,
        )
        .await;
    let data = stored["_attachments"]["c"]["data"].as_str().unwrap();
    let mut bytes = data_encoding::BASE64.decode(data.as_bytes()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let (status, body) = server
        .request(
            "PUT",
            &format!("/{cloud_db}/{victim}"),
            Some(&json!({"_rev": stored["_rev"], "_attachments": {"c": {
                "content_type": "application/octet-stream",
                "data": data_encoding::BASE64.encode(&bytes),
            }}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let out = restore(&c, &url, &pin, &words);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a tampered backup does not pass");
    assert!(err.contains("did not authenticate"), "{err}");
    assert!(err.contains(&victim), "{err}");
    assert_eq!(state_of(&c, "journal").len(), total as usize - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_backup_resumes_from_its_checkpoint() {
    let Some(server) = pouch_server("backup::a_cut_backup_resumes_from_its_checkpoint") else {
        return;
    };
    let terminator = Terminator::start(server.port).await;
    let (url, pin) = (terminator.url(), terminator.pin.clone());
    let a = Hub::start("a");
    // 1,000 documents and the conflict and deletion: five pages of 250 changes.
    seed(&a, "journal", 1000, MARKER).await;
    let total = 1002u64;
    // The connection drops as the third page's upload starts (two pages are checkpointed).
    terminator.cut_at("/_bulk_docs", 3);
    succeeded(
        "backup add",
        as_admin(&a, &pin, &["backup", "add", "vault", &url, "journal"]),
    );
    let cut_row = eventually(120, "the backup failed at the cut", || async {
        row(&a, "backup:vault", "journal")
            .await
            .filter(|r| terminator.is_cut() && !r["last_error"].is_null())
    })
    .await;
    assert_eq!(cut_row["docs_written"], json!(500), "{cut_row}");
    let cloud_db = cut_row["remote_db"].as_str().unwrap().to_owned();
    let (_, info) = server.request("GET", &format!("/{cloud_db}"), None).await;
    assert_eq!(
        info["doc_count"],
        json!(501),
        "two pages and the manifest: {info}"
    );
    let before = terminator.requests().len();
    terminator.restore();
    let done = caught_up(&a, "backup:vault", "journal", total).await;
    assert_eq!(done["docs_written"], json!(total), "{done}");
    let (_, info) = server.request("GET", &format!("/{cloud_db}"), None).await;
    assert_eq!(info["doc_count"], json!(total + 1), "{info}");
    // After the cut only the three remaining pages went up: the run resumed at its checkpoint
    // (starting over would have sent five pages again).
    let uploads_after = terminator.requests()[before..]
        .iter()
        .filter(|line| line.contains("/_bulk_docs"))
        .count();
    assert_eq!(uploads_after, 3, "{:?}", &terminator.requests()[before..]);
}
