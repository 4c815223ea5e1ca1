//! The replication manager: keeps every database that is not local-only replicated both ways,
//! continuously, with each of the person's other devices (group `me`), and pulls what friends
//! granted (group `friends`) into `from-<friend>-<db>` — never pushing to friends. Runs a
//! reconcile pass every few seconds: starts what should run, stops what should not (a revoked
//! peer, a database no longer listed), restarts what failed after a pause. Each replication
//! retries transient failures itself (backoff with jitter) and resumes from its checkpoints.
//!
//! Cloud peers (`[[cloud]]` in `hub.toml`, read again every pass: see [`crate::cloud`]) are
//! replicated the same way, with the databases and direction each names; one with
//! `every_secs` runs once that often instead of continuously.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acls_and_groups::Member;
use couch_sync::replicate::{
    Endpoint, Remote, Replication, ReplicationOptions, RetryPolicy, State, TokioClock,
};
use public_key_identity::{HttpKeyUrl, KeyId};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::client::HubClient;
use crate::hub::{Hub, now_millis};
use crate::tls::PinnedTls;

/// How often the manager reconciles.
const PASS: Duration = Duration::from_secs(3);
/// How long a stopped replication waits before it is started again.
const RESTART_AFTER_MS: u64 = 15_000;
/// How often a friend's list of databases is fetched.
const FRIEND_LIST_EVERY_MS: u64 = 30_000;

/// Which way data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From this hub to the peer.
    Push,
    /// From the peer to this hub.
    Pull,
}

/// Who a replication runs with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PeerRef {
    /// One of the person's devices, or a friend.
    Hub(KeyId),
    /// A cloud peer, by name.
    Cloud(String),
}

impl std::fmt::Display for PeerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerRef::Hub(key) => write!(f, "{key}"),
            PeerRef::Cloud(name) => write!(f, "cloud:{name}"),
        }
    }
}

/// How to reach a job's peer.
#[derive(Debug, Clone)]
enum Target {
    Hub(HttpKeyUrl),
    Cloud(crate::cloud::CloudPeer),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Job {
    peer: PeerRef,
    local: String,
    remote: String,
    direction: Direction,
}

struct Running {
    replication: Arc<Replication>,
    task: tokio::task::JoinHandle<()>,
    outcome: Arc<Mutex<Option<(u64, String)>>>,
}

/// One row of the replication table (status page, `device-hub status`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Peer key id.
    pub peer: String,
    /// Peer name (from its card).
    pub name: String,
    /// Local database.
    pub db: String,
    /// Database on the peer.
    pub remote_db: String,
    /// Push or pull.
    pub direction: Direction,
    /// Running, idle, retrying, stopped...
    pub state: String,
    /// Documents written so far.
    pub docs_written: u64,
    /// Changes not yet read.
    pub pending: Option<u64>,
    /// The last error.
    pub last_error: Option<String>,
    /// When the last batch was checkpointed (ms since the epoch).
    pub last_sync: Option<u64>,
    /// When it last stopped (ms), and why.
    pub stopped: Option<(u64, String)>,
}

/// The manager's state.
#[derive(Default)]
pub struct Manager {
    running: Mutex<BTreeMap<Job, Running>>,
    friend_dbs: Mutex<HashMap<KeyId, (u64, Vec<String>)>>,
    /// Encrypted backups (`[[cloud]]` entries with `encrypted = true`).
    backups: crate::backup::Backups,
}

impl Manager {
    /// The replication table.
    pub fn rows(&self, hub: &Hub) -> Vec<Row> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .iter()
            .map(|(job, r)| {
                let p = r.replication.progress();
                let stopped = r.outcome.lock().ok().and_then(|o| o.clone());
                Row {
                    peer: job.peer.to_string(),
                    name: match &job.peer {
                        PeerRef::Hub(key) => hub
                            .card_of(key)
                            .map(|c| c.name().to_owned())
                            .unwrap_or_default(),
                        PeerRef::Cloud(name) => name.clone(),
                    },
                    db: job.local.clone(),
                    remote_db: job.remote.clone(),
                    direction: job.direction,
                    state: if stopped.is_some() {
                        "stopped".into()
                    } else {
                        state_name(p.state).into()
                    },
                    docs_written: p.docs_written,
                    pending: p.pending,
                    last_error: p.last_error,
                    last_sync: p.last_checkpoint_at,
                    stopped,
                }
            })
            .chain(self.backups.rows())
            .collect()
    }

    fn stop_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for (_, r) in std::mem::take(&mut *running) {
            r.replication.canceller().cancel();
            r.task.abort();
        }
        drop(running);
        self.backups.stop_all();
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Pending => "pending",
        State::Running => "running",
        State::Idle => "idle",
        State::Retrying => "retrying",
        State::Completed => "completed",
        State::Failed => "failed",
    }
}

/// A remote endpoint for `db` on the hub at `url`, over mutual TLS pinned to its key.
pub fn remote(hub: &Hub, url: &HttpKeyUrl, db: &str) -> anyhow::Result<Endpoint> {
    let target = url.to_https();
    let base = target.url.trim_end_matches('/');
    let encoded = couch_db_path(db);
    let remote = Remote::new(
        &format!("{base}/{encoded}"),
        Arc::new(PinnedTls::new(target.pin, &hub.device)?),
        Arc::new(TokioClock),
    )?;
    Ok(Endpoint::Remote(Arc::new(remote)))
}

/// A database name as a URL path segment (`/` is `%2F`, as CouchDB wants).
pub fn couch_db_path(db: &str) -> String {
    db.replace('/', "%2F")
        .replace('$', "%24")
        .replace('(', "%28")
        .replace(')', "%29")
        .replace('+', "%2B")
}

/// The local name of a friend's database.
pub fn friend_db_name(friend: &KeyId, db: &str) -> String {
    let key = friend.to_string();
    format!("from-{}-{db}", &key[..8])
}

/// The keys of `group` this hub replicates with: not itself, and not a revoked key (its jobs
/// stop at the next pass).
fn members(hub: &Hub, group: &str) -> Vec<KeyId> {
    let policy = hub.policy();
    policy
        .group(group)
        .map(|g| {
            g.members
                .iter()
                .filter_map(|m| match m {
                    Member::Key(k)
                        if *k != hub.key_id()
                            && !policy.is_revoked(&acls_and_groups::Principal::Key(*k)) =>
                    {
                        Some(*k)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn friend_databases(hub: &Hub, friend: KeyId, url: &HttpKeyUrl) -> Vec<String> {
    let now = now_millis();
    if let Some((at, dbs)) = hub
        .replication
        .friend_dbs
        .lock()
        .ok()
        .and_then(|m| m.get(&friend).cloned())
    {
        if now.saturating_sub(at) < FRIEND_LIST_EVERY_MS {
            return dbs;
        }
    }
    let dbs = match HubClient::new(url, &hub.device) {
        Ok(client) => match client.call("GET", "/_all_dbs", None).await {
            Ok((200, Value::Array(names))) => names
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    if let Ok(mut m) = hub.replication.friend_dbs.lock() {
        m.insert(friend, (now, dbs.clone()));
    }
    dbs
}

async fn desired(hub: &Arc<Hub>) -> BTreeMap<Job, Target> {
    let mut jobs = BTreeMap::new();
    let local_dbs = hub.store.all_dbs().unwrap_or_default();
    for peer in members(hub, "me") {
        let Some(url) = hub
            .card_of(&peer)
            .and_then(|c| c.endpoints().first().cloned())
        else {
            continue;
        };
        for db in &local_dbs {
            if hub.config.local_only.contains(db) || db.starts_with("from-") {
                continue;
            }
            for direction in [Direction::Push, Direction::Pull] {
                jobs.insert(
                    Job {
                        peer: PeerRef::Hub(peer),
                        local: db.clone(),
                        remote: db.clone(),
                        direction,
                    },
                    Target::Hub(url.clone()),
                );
            }
        }
    }
    for friend in members(hub, "friends") {
        if members(hub, "me").contains(&friend) {
            continue;
        }
        let Some(url) = hub
            .card_of(&friend)
            .and_then(|c| c.endpoints().first().cloned())
        else {
            continue;
        };
        for db in friend_databases(hub, friend, &url).await {
            let local = friend_db_name(&friend, &db);
            jobs.insert(
                Job {
                    peer: PeerRef::Hub(friend),
                    local,
                    remote: db,
                    direction: Direction::Pull,
                },
                Target::Hub(url.clone()),
            );
        }
    }
    let clouds = match hub.layout.cloud_peers() {
        Ok(clouds) => clouds,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "hub.toml: cloud peers not read");
            Vec::new()
        }
    };
    hub.replication.backups.reconcile(hub, &clouds);
    for cloud in clouds.into_iter().filter(|c| !c.encrypted) {
        let dbs: Vec<String> = if cloud.databases.is_empty() {
            local_dbs
                .iter()
                .filter(|db| !hub.config.local_only.contains(db) && !db.starts_with("from-"))
                .cloned()
                .collect()
        } else {
            cloud.databases.clone()
        };
        let directions: &[Direction] = match cloud.direction {
            crate::cloud::CloudDirection::Push => &[Direction::Push],
            crate::cloud::CloudDirection::Pull => &[Direction::Pull],
            crate::cloud::CloudDirection::Both => &[Direction::Push, Direction::Pull],
        };
        for db in dbs {
            if crate::hub::is_internal_db(&db) {
                continue;
            }
            for direction in directions {
                jobs.insert(
                    Job {
                        peer: PeerRef::Cloud(cloud.name.clone()),
                        local: db.clone(),
                        remote: db.clone(),
                        direction: *direction,
                    },
                    Target::Cloud(cloud.clone()),
                );
            }
        }
    }
    jobs
}

async fn reconcile(hub: &Arc<Hub>) {
    let wanted = desired(hub).await;
    let now = now_millis();
    let mut running = hub
        .replication
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    // Stop what is no longer wanted.
    let gone: Vec<Job> = running
        .keys()
        .filter(|j| !wanted.contains_key(j))
        .cloned()
        .collect();
    for job in gone {
        if let Some(r) = running.remove(&job) {
            r.replication.canceller().cancel();
            r.task.abort();
            tracing::info!(peer = %job.peer, db = job.local, direction = ?job.direction, "replication stopped: no longer wanted");
        }
    }
    for (job, target) in wanted {
        if let Some(r) = running.get(&job) {
            // A scheduled cloud peer runs again after its period, everything else after a
            // pause once it stopped.
            let after = match &target {
                Target::Cloud(c) if c.every_secs > 0 => c.every_secs.saturating_mul(1000),
                _ => RESTART_AFTER_MS,
            };
            let restart = r
                .outcome
                .lock()
                .ok()
                .and_then(|o| o.clone())
                .is_some_and(|(at, _)| now.saturating_sub(at) > after);
            if !restart {
                continue;
            }
            running.remove(&job);
        }
        match start(hub, &job, &target) {
            Ok(r) => {
                running.insert(job, r);
            }
            Err(e) => {
                tracing::warn!(peer = %job.peer, db = job.local, error = %e, "cannot start replication")
            }
        }
    }
}

fn start(hub: &Arc<Hub>, job: &Job, target: &Target) -> anyhow::Result<Running> {
    if job.direction == Direction::Pull && !hub.store.exists(&job.local) {
        hub.store.create_db(&job.local)?;
    }
    let local = Endpoint::Local(hub.store.db(&job.local)?);
    let (peer, continuous) = match target {
        Target::Hub(url) => (remote(hub, url, &job.remote)?, true),
        Target::Cloud(cloud) => (
            crate::cloud::remote(&hub.layout, cloud, &job.remote)?,
            cloud.every_secs == 0,
        ),
    };
    let (source, target) = match job.direction {
        Direction::Push => (local, peer),
        Direction::Pull => (peer, local),
    };
    let options = ReplicationOptions {
        continuous,
        create_target: job.direction == Direction::Push,
        retry: RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_attempts: None,
        },
        ..ReplicationOptions::default()
    };
    let replication = Arc::new(
        Replication::new(source, target, options).with_tmp_dir(hub.store.tmp_dir().to_path_buf()),
    );
    let outcome = Arc::new(Mutex::new(None));
    let (rep, out, desc) = (
        replication.clone(),
        outcome.clone(),
        format!("{} {} {:?}", job.peer, job.local, job.direction),
    );
    let task = tokio::spawn(async move {
        let result = rep.run().await;
        let text = match &result {
            Ok(_) => "finished".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::info!(job = desc, result = text, "replication ended");
        if let Ok(mut o) = out.lock() {
            *o = Some((now_millis(), text));
        }
    });
    Ok(Running {
        replication,
        task,
        outcome,
    })
}

/// Runs the manager until `stop` turns true.
pub async fn run(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    loop {
        reconcile(&hub).await;
        tokio::select! {
            () = tokio::time::sleep(PASS) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    hub.replication.stop_all();
}
