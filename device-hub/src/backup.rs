//! End-to-end encrypted backup to a cloud the person does not trust (couch-sync's
//! [`couch_sync::replicate::backup`] does the sealing; this module owns the keys, the jobs and
//! the recovery words).
//!
//! `device-hub backup add NAME URL DB…` writes a `[[cloud]]` entry with `encrypted = true`
//! (direction push, the databases named) and a fresh 32-byte secret in
//! `DATA/cloud/NAME.backup-key` (0600), and prints the secret once as 24 recovery words
//! (BIP-39's English list, with its checksum) and as a QR code of those words. The running hub
//! then backs each database up whenever it changes (or every `every_secs`): only changed
//! documents travel, each run resumes from the last checkpoint, a failure retries with backoff
//! and shows on the status page as a row of the replication table (`peer = backup:NAME`).
//!
//! `device-hub restore URL` with the words (a file or standard input) restores every backed-up
//! database into this hub's store — a fresh device after every other one is lost.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use couch_sync::replicate::backup::{Backup, BackupKey, SECRET_LEN};

use crate::cloud::CloudPeer;
use crate::config::Layout;
use crate::hub::{Hub, now_millis};
use crate::replication::{Direction, Row};

/// Where a backup's secret is kept.
pub fn key_path(layout: &Layout, name: &str) -> PathBuf {
    layout.root.join("cloud").join(format!("{name}.backup-key"))
}

/// Stores a backup's secret (0600; the directory 0700), as hex.
pub fn store_key(layout: &Layout, name: &str, secret: &[u8; SECRET_LEN]) -> Result<()> {
    let path = key_path(layout, name);
    if let Some(dir) = path.parent() {
        crate::config::create_private_dir(dir)?;
    }
    let text = data_encoding::HEXLOWER.encode(secret);
    public_key_identity::keystore::write_atomic(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

fn load_key(layout: &Layout, name: &str) -> Result<[u8; SECRET_LEN]> {
    let path = key_path(layout, name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the key of backup {name} ({})", path.display()))?;
    let bytes = data_encoding::HEXLOWER
        .decode(text.trim().as_bytes())
        .ok()
        .and_then(|b| <[u8; SECRET_LEN]>::try_from(b).ok());
    bytes.with_context(|| format!("{} is not a backup key", path.display()))
}

/// The secret as 24 recovery words.
pub fn words(secret: &[u8; SECRET_LEN]) -> Result<String> {
    let mnemonic = bip39::Mnemonic::from_entropy(secret)
        .map_err(|e| anyhow::anyhow!("recovery words: {e}"))?;
    Ok(mnemonic.to_string())
}

/// The secret the recovery words (any spacing and case) stand for; a mistyped word or a
/// wrong checksum is a clear error.
pub fn secret_from_words(text: &str) -> Result<[u8; SECRET_LEN]> {
    let normal = text
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ");
    let count = normal.split(' ').filter(|w| !w.is_empty()).count();
    if count != 24 {
        bail!("a recovery secret is 24 words; {count} given");
    }
    let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normal)
        .map_err(|e| anyhow::anyhow!("the recovery words do not check out: {e}"))?;
    <[u8; SECRET_LEN]>::try_from(mnemonic.to_entropy())
        .map_err(|_| anyhow::anyhow!("the recovery words do not hold a 32-byte secret"))
}

/// The backup of `peer` with `secret`, to the server `peer` names.
/// `tmp` holds spooled attachment content (the store's temporary directory).
pub fn backup_for(
    layout: &Layout,
    peer: &CloudPeer,
    secret: &[u8; SECRET_LEN],
    tmp: &std::path::Path,
) -> Result<Backup> {
    let key = Arc::new(BackupKey::from_secret(secret)?);
    let remote = crate::cloud::remote_client(layout, peer, key.cloud_db())?;
    Ok(Backup::new(key, Arc::new(remote), tmp))
}

/// One running backup job (a cloud peer and one of its databases).
struct Job {
    peer: CloudPeer,
    task: tokio::task::JoinHandle<()>,
    row: Arc<Mutex<Row>>,
}

/// The backup jobs of a running hub.
#[derive(Default)]
pub struct Backups {
    jobs: Mutex<BTreeMap<(String, String), Job>>,
}

impl Backups {
    /// Their rows for the replication table.
    pub fn rows(&self) -> Vec<Row> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.values()
            .map(|j| j.row.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Starts the jobs `peers` (the encrypted ones) call for, stops those they no longer do
    /// (or whose entry changed).
    pub fn reconcile(&self, hub: &Arc<Hub>, peers: &[CloudPeer]) {
        let mut wanted: BTreeMap<(String, String), CloudPeer> = BTreeMap::new();
        for peer in peers.iter().filter(|p| p.encrypted) {
            for db in &peer.databases {
                if !crate::hub::is_internal_db(db) {
                    wanted.insert((peer.name.clone(), db.clone()), peer.clone());
                }
            }
        }
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.retain(|k, job| {
            let keep = wanted.get(k) == Some(&job.peer) && !job.task.is_finished();
            if !keep {
                job.task.abort();
            }
            keep
        });
        for (k, peer) in wanted {
            if jobs.contains_key(&k) {
                continue;
            }
            let row = Arc::new(Mutex::new(Row {
                peer: format!("backup:{}", peer.name),
                name: peer.name.clone(),
                db: k.1.clone(),
                remote_db: String::new(),
                direction: Direction::Push,
                state: "pending".into(),
                docs_written: 0,
                pending: None,
                last_error: None,
                last_sync: None,
                stopped: None,
            }));
            let task = tokio::spawn(run_job(hub.clone(), peer.clone(), k.1.clone(), row.clone()));
            jobs.insert(k, Job { peer, task, row });
        }
    }

    /// Stops every job.
    pub fn stop_all(&self) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for (_, job) in std::mem::take(&mut *jobs) {
            job.task.abort();
        }
    }
}

fn set(row: &Mutex<Row>, f: impl FnOnce(&mut Row)) {
    let mut r = row.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut r);
}

/// Refusals retrying will not cure soon (a wrong password, no right to write).
fn is_refusal(e: &couch_sync::Error) -> bool {
    matches!(e.status(), 401 | 403)
}

async fn run_job(hub: Arc<Hub>, peer: CloudPeer, db_name: String, row: Arc<Mutex<Row>>) {
    let prepared = load_key(&hub.layout, &peer.name).and_then(|secret| {
        let backup = backup_for(&hub.layout, &peer, &secret, hub.store.tmp_dir())?;
        Ok((
            backup,
            BackupKey::from_secret(&secret)?.cloud_db().to_owned(),
        ))
    });
    let (backup, cloud_db) = match prepared {
        Ok(b) => b,
        Err(e) => {
            let text = format!("{e:#}");
            set(&row, |r| {
                r.state = "stopped".into();
                r.last_error = Some(text.clone());
                r.stopped = Some((now_millis(), text));
            });
            return;
        }
    };
    set(&row, |r| r.remote_db = cloud_db);
    let mut delay = Duration::from_millis(500);
    loop {
        let db = match hub.store.db(&db_name) {
            Ok(db) => db,
            Err(e) => {
                set(&row, |r| {
                    r.state = "waiting".into();
                    r.last_error = Some(format!("{db_name}: {e}"));
                });
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let mut changed = db.subscribe();
        set(&row, |r| r.state = "running".into());
        let base = row
            .lock()
            .map(|r| r.docs_written)
            .unwrap_or_else(|p| p.into_inner().docs_written);
        let result = backup
            .run(&db, |stats, pending| {
                set(&row, |r| {
                    r.docs_written = base + stats.docs;
                    r.pending = Some(pending);
                    r.last_sync = Some(now_millis());
                });
            })
            .await;
        match result {
            Ok(_) => {
                delay = Duration::from_millis(500);
                set(&row, |r| {
                    r.state = "idle".into();
                    r.last_error = None;
                    r.stopped = None;
                });
                if peer.every_secs > 0 {
                    tokio::time::sleep(Duration::from_secs(peer.every_secs)).await;
                } else {
                    // The next change (a burst of writes goes in one run a moment later).
                    if changed.changed().await.is_err() {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(e) => {
                let text = e.to_string();
                tracing::warn!(
                    backup = peer.name,
                    db = db_name,
                    error = text,
                    "backup failed"
                );
                let refused = is_refusal(&e);
                set(&row, |r| {
                    r.last_error = Some(text.clone());
                    if refused {
                        r.state = "stopped".into();
                        r.stopped = Some((now_millis(), text));
                    } else {
                        r.state = "retrying".into();
                    }
                });
                let wait = if refused {
                    Duration::from_secs(60)
                } else {
                    delay
                };
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_typos_are_caught() {
        let secret = [0x5a; SECRET_LEN];
        let text = words(&secret).unwrap_or_default();
        assert_eq!(text.split(' ').count(), 24);
        assert_eq!(secret_from_words(&text).ok(), Some(secret));
        // Spacing and case do not matter.
        let shouty = format!("  {}\n", text.to_uppercase().replace(' ', "\n  "));
        assert_eq!(secret_from_words(&shouty).ok(), Some(secret));
        // A word swapped for another list word breaks the checksum (almost always; these do).
        let mut list: Vec<&str> = text.split(' ').collect();
        list.swap(0, 1);
        let swapped = list.join(" ");
        if list[0] != list[1] {
            assert!(secret_from_words(&swapped).is_err());
        }
        let err = secret_from_words("abandon ability")
            .unwrap_err()
            .to_string();
        assert!(err.contains("24 words"), "{err}");
        let typo = text.replacen(list[5], "notaword", 1);
        assert!(secret_from_words(&typo).is_err());
    }
}
