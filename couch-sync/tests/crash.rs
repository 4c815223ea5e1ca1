//! Crash test: a child process writes documents and reports each one the store acknowledged; it is
//! killed with SIGKILL at random moments. After each kill the database must open cleanly and hold
//! every acknowledged write.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use couch_sync::{DocUpdate, GetOptions, Store, StoreConfig};
use serde_json::json;

const CHILD_ENV: &str = "COUCH_SYNC_CRASH_CHILD";

/// The writer. Runs only when the parent test starts this binary with `CHILD_ENV` set.
#[test]
fn crash_writer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, prefix) = spec.split_once('|').unwrap();
    let store = Store::open(dir, StoreConfig::default()).unwrap();
    let db = store
        .db("crash")
        .or_else(|_| store.create_db("crash"))
        .unwrap();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 0u64.. {
        if i % 3 == 2 {
            // A batch: all of it is acknowledged at once, or none.
            let docs = (0..10)
                .map(|k| {
                    Ok(DocUpdate {
                        id: Some(format!("{prefix}-{i}-{k}")),
                        body: json!({"i": i, "k": k, "pad": "x".repeat(200)})
                            .as_object()
                            .unwrap()
                            .clone(),
                        ..DocUpdate::default()
                    })
                })
                .collect();
            db.bulk_docs(docs, true).unwrap();
            for k in 0..10 {
                writeln!(out, "ACK {prefix}-{i}-{k}").unwrap();
            }
        } else {
            let update = DocUpdate {
                body: json!({"i": i, "pad": "y".repeat(300)})
                    .as_object()
                    .unwrap()
                    .clone(),
                ..DocUpdate::default()
            };
            db.put(Some(&format!("{prefix}-{i}")), update, true)
                .unwrap();
            writeln!(out, "ACK {prefix}-{i}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Deterministic pseudo-random kill times (xorshift, fixed seed).
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut total_acked = 0;
    for trial in 0..24 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}|t{trial}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    // libtest may print its own text before ours on the first line.
                    Ok(l) => {
                        if let Some(at) = l.find("ACK ") {
                            acked.push(l[at + 4..].to_owned());
                        }
                    }
                    Err(_) => break,
                }
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(80 + next() % 400));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        total_acked += acked.len();

        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let db = store
            .db("crash")
            .unwrap_or_else(|e| panic!("trial {trial}: database does not open: {e}"));
        for id in &acked {
            let doc = db
                .get(id, &GetOptions::default())
                .unwrap_or_else(|e| panic!("trial {trial}: acknowledged {id} lost: {e}"));
            assert_eq!(&doc.id, id);
        }
        let info = db.info().unwrap();
        assert!(
            info.doc_count as usize >= total_acked,
            "trial {trial}: counters consistent"
        );
        drop(db);
        drop(store);
    }
    assert!(
        total_acked > 24,
        "the writer made progress before being killed ({total_acked} acks)"
    );
}
