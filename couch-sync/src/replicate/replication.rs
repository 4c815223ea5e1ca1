//! One replication: the CouchDB replication protocol from a source to a target endpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use super::endpoint::{ChangesBatch, Endpoint, Filter, Wanted, WriteFailure};
use super::fetched::Fetched;
use crate::clock::{Clock, TokioClock};
use crate::error::{Error, ErrorKind, Result};

/// How to retry after transient failures: exponential backoff with jitter. A remote peer that
/// answered 429 or 503 with `Retry-After: SECONDS` is left alone at least that long (at most
/// 60 s), even past [`max`](Self::max).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Give up after this many consecutive failures (`None`: never, the default for continuous
    /// replications).
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(60),
            max_attempts: Some(10),
        }
    }
}

/// The longest wait a peer's `Retry-After` imposes before a retry (a larger one is cut to this:
/// a peer does not get to park a replication for hours).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What to replicate, and how.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// Keep following the source after catching up.
    pub continuous: bool,
    /// Only these documents.
    pub doc_ids: Option<Vec<String>>,
    /// Only documents whose winning revision matches this Mango selector.
    pub selector: Option<Value>,
    /// Only revisions this design-document filter passes: `ddoc/name` (a filter function), or
    /// `_view` with the view named by `query_params.view` (CouchDB's `filter`). A remote
    /// source runs it; a local one runs it here (feature `js`).
    pub filter: Option<String>,
    /// Parameters the filter function sees in `req.query` (CouchDB's `query_params`).
    pub query_params: Option<Map<String, Value>>,
    /// Create the target database if it does not exist.
    pub create_target: bool,
    /// Changes per batch (and per checkpoint). Default 500, as CouchDB's `worker_batch_size`.
    pub batch_size: u64,
    /// Retry behaviour for transient failures.
    pub retry: RetryPolicy,
    /// In continuous mode, how long one wait for new changes lasts (longpoll timeout).
    pub idle_wait: Duration,
    /// Seed for backoff jitter (`None`: from the system random source).
    pub jitter_seed: Option<u64>,
}

impl Default for ReplicationOptions {
    fn default() -> ReplicationOptions {
        ReplicationOptions {
            continuous: false,
            doc_ids: None,
            selector: None,
            filter: None,
            query_params: None,
            create_target: false,
            batch_size: 500,
            retry: RetryPolicy::default(),
            idle_wait: Duration::from_secs(30),
            jitter_seed: None,
        }
    }
}

/// Where a replication is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not started.
    Pending,
    /// Copying changes.
    Running,
    /// Continuous and caught up, waiting for changes.
    Idle,
    /// Waiting to retry after a transient failure.
    Retrying,
    /// Finished (one-shot) or cancelled.
    Completed,
    /// Stopped on an error that retrying will not fix.
    Failed,
}

/// Counters and position of a replication, for progress bars and status pages.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// The replication id (the `_local/` checkpoint document name).
    pub replication_id: String,
    /// State.
    pub state: State,
    /// Revisions checked with `_revs_diff`.
    pub missing_checked: u64,
    /// Revisions the target lacked.
    pub missing_found: u64,
    /// Documents read from the source.
    pub docs_read: u64,
    /// Documents written to the target.
    pub docs_written: u64,
    /// Revisions the target refused by its rules (`forbidden`, `unauthorized`, too large, …),
    /// counted and skipped as CouchDB's replicator does. Any other failure to write stops or
    /// retries the replication instead (see the [module docs](super)).
    pub doc_write_failures: u64,
    /// Changes the source reported as not yet read (if it says).
    pub pending: Option<u64>,
    /// The last source sequence recorded in a checkpoint.
    pub checkpointed_source_seq: Value,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Consecutive failed attempts.
    pub retries: u32,
    /// When the last checkpoint was written (milliseconds since the epoch, on the replication's
    /// clock).
    pub last_checkpoint_at: Option<u64>,
}

/// What happens during a replication, for whoever listens.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A session started at this source sequence.
    Started {
        /// The sequence it resumes from (`0` from scratch).
        since: Value,
    },
    /// A batch was written and checkpointed.
    Checkpoint(Progress),
    /// Continuous replication caught up and waits for changes.
    Idle(Progress),
    /// A transient failure; the replication retries after `delay`.
    Retrying {
        /// What failed.
        error: String,
        /// Consecutive failures so far.
        attempt: u32,
        /// Wait before the next attempt.
        delay: Duration,
    },
    /// Done (one-shot) or cancelled.
    Completed(Progress),
    /// Stopped for good.
    Failed(String),
}

/// The outcome of a one-shot replication (CouchDB's `POST /_replicate` answer shape).
#[derive(Debug, Clone)]
pub struct ReplicationResult {
    /// This session's id.
    pub session_id: String,
    /// The source sequence reached.
    pub source_last_seq: Value,
    /// The replication id.
    pub replication_id: String,
    /// The history entry this session recorded.
    pub history: Value,
    /// Final counters.
    pub progress: Progress,
    /// True when there was nothing to do (CouchDB's `no_changes`).
    pub no_changes: bool,
}

/// A handle that stops a running replication (after its current batch).
#[derive(Debug, Clone)]
pub struct Cancel(Arc<watch::Sender<bool>>);

impl Cancel {
    /// Asks the replication to stop.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

/// One replication from `source` to `target`.
pub struct Replication {
    source: Endpoint,
    target: Endpoint,
    options: ReplicationOptions,
    clock: Arc<dyn Clock>,
    tmp_dir: PathBuf,
    events: Option<mpsc::UnboundedSender<Event>>,
    progress: Arc<Mutex<Progress>>,
    cancel: Arc<watch::Sender<bool>>,
    id: String,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// One session's identity, starting point, counters and the checkpoint documents as last
/// written on each side.
struct Session {
    id: String,
    /// The checkpoint documents' name: the replication id, for a filter function also its
    /// source code (as CouchDB's replication id includes it: an edited filter starts over).
    checkpoint_id: String,
    start_time: u64,
    start_seq: Value,
    source_doc: Option<Value>,
    target_doc: Option<Value>,
    missing_checked: u64,
    missing_found: u64,
    docs_read: u64,
    docs_written: u64,
    doc_write_failures: u64,
}

/// Checkpoint documents keep at most this many history entries.
const MAX_HISTORY: usize = 50;

fn random_hex() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

impl Replication {
    /// A replication with the real clock; `tmp_dir` is where large attachments may spill while
    /// being written to a local target.
    pub fn new(source: Endpoint, target: Endpoint, options: ReplicationOptions) -> Replication {
        let id = replication_id(&source, &target, &options);
        let (cancel, _) = watch::channel(false);
        Replication {
            progress: Arc::new(Mutex::new(Progress {
                replication_id: id.clone(),
                state: State::Pending,
                missing_checked: 0,
                missing_found: 0,
                docs_read: 0,
                docs_written: 0,
                doc_write_failures: 0,
                pending: None,
                checkpointed_source_seq: json!(0),
                last_error: None,
                retries: 0,
                last_checkpoint_at: None,
            })),
            source,
            target,
            options,
            clock: Arc::new(TokioClock),
            tmp_dir: std::env::temp_dir(),
            events: None,
            cancel: Arc::new(cancel),
            id,
        }
    }

    /// Uses `clock` for every wait (backoff, continuous mode).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Replication {
        self.clock = clock;
        self
    }

    /// Sends progress [`Event`]s to `events`.
    pub fn with_events(mut self, events: mpsc::UnboundedSender<Event>) -> Replication {
        self.events = Some(events);
        self
    }

    /// Where attachment content may spill on a local target.
    pub fn with_tmp_dir(mut self, dir: PathBuf) -> Replication {
        self.tmp_dir = dir;
        self
    }

    /// The replication id: stable for the same source, target and filter, so a later run
    /// resumes from the checkpoints of an earlier one.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A snapshot of the counters.
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// A handle to stop the replication.
    pub fn canceller(&self) -> Cancel {
        Cancel(self.cancel.clone())
    }

    fn emit(&self, event: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) -> Progress {
        let mut guard = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
        guard.clone()
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Runs the replication: one-shot until the source is exhausted, or continuous until
    /// cancelled. Transient failures retry with backoff (from the last checkpoint, so nothing is
    /// sent twice), waiting at least what a busy peer's `Retry-After` asked for (see
    /// [`RetryPolicy`]); permanent ones end it with the error.
    pub async fn run(&self) -> Result<ReplicationResult> {
        let mut rng = self.options.jitter_seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            let _ = getrandom::fill(&mut b);
            u64::from_le_bytes(b) | 1
        });
        let mut attempt: u32 = 0;
        loop {
            self.update(|p| p.state = State::Running);
            match self.session(&mut attempt).await {
                Ok(result) => {
                    let progress = self.update(|p| p.state = State::Completed);
                    self.emit(Event::Completed(progress));
                    return Ok(result);
                }
                Err(e) if e.kind() == ErrorKind::Transient && !self.cancelled() => {
                    attempt += 1;
                    if self
                        .options
                        .retry
                        .max_attempts
                        .is_some_and(|max| attempt >= max)
                    {
                        return Err(self.fail(e));
                    }
                    let base = self
                        .options
                        .retry
                        .initial
                        .saturating_mul(1u32 << attempt.min(20).saturating_sub(1));
                    let capped = base.min(self.options.retry.max);
                    // Jitter: 50% to 150% of the delay (xorshift).
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let factor = 0.5 + (rng % 1000) as f64 / 1000.0;
                    // A busy peer's Retry-After is a floor under the backoff.
                    let delay = capped
                        .mul_f64(factor)
                        .max(self.retry_after().unwrap_or_default());
                    self.update(|p| {
                        p.state = State::Retrying;
                        p.retries = attempt;
                        p.last_error = Some(e.to_string());
                    });
                    self.emit(Event::Retrying {
                        error: e.to_string(),
                        attempt,
                        delay,
                    });
                    let mut cancel = self.cancel.subscribe();
                    tokio::select! {
                        () = self.clock.sleep(delay) => {}
                        _ = cancel.wait_for(|c| *c) => {}
                    }
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// The wait a remote source or target asked for in its last 429/503 answer
    /// (`Retry-After`), at most [`MAX_RETRY_AFTER`]; each endpoint forgets it once asked.
    fn retry_after(&self) -> Option<Duration> {
        [&self.source, &self.target]
            .into_iter()
            .filter_map(|e| match e {
                Endpoint::Remote(r) => r.take_retry_after(),
                Endpoint::Local(_) => None,
            })
            .max()
            .map(|d| d.min(MAX_RETRY_AFTER))
    }

    fn fail(&self, e: Error) -> Error {
        self.update(|p| {
            p.state = State::Failed;
            p.last_error = Some(e.to_string());
        });
        self.emit(Event::Failed(e.to_string()));
        e
    }

    /// One session: verify the peers, find the checkpoint, copy batches.
    async fn session(&self, attempt: &mut u32) -> Result<ReplicationResult> {
        let permanent = |what: &str, e: Error| match e.kind() {
            ErrorKind::Transient => e,
            _ => Error::couch(
                e.status(),
                e.error().to_owned(),
                format!("{what}: {}", e.reason()),
            ),
        };
        self.source
            .info()
            .await
            .map_err(|e| permanent("source database", e))?;
        if let Err(e) = self.target.info().await {
            if e.status() == 404 && self.options.create_target {
                self.target
                    .create()
                    .await
                    .map_err(|e| permanent("creating the target", e))?;
            } else {
                return Err(permanent("target database", e));
            }
        }
        let checkpoint_id = self
            .checkpoint_id()
            .await
            .map_err(|e| permanent("filter", e))?;
        let (mut since, source_doc, target_doc) = self.find_checkpoint(&checkpoint_id).await?;
        let mut session = Session {
            id: random_hex(),
            checkpoint_id,
            start_time: self.clock.now_millis(),
            start_seq: since.clone(),
            source_doc,
            target_doc,
            missing_checked: 0,
            missing_found: 0,
            docs_read: 0,
            docs_written: 0,
            doc_write_failures: 0,
        };
        self.emit(Event::Started {
            since: since.clone(),
        });
        let mut filter = Filter {
            doc_ids: self.options.doc_ids.clone(),
            selector: self.options.selector.clone(),
            ddoc_filter: self.options.filter.clone(),
            query_params: self.options.query_params.clone().unwrap_or_default(),
            local: None,
        };
        self.source
            .prepare_filter(&mut filter)
            .await
            .map_err(|e| permanent("filter", e))?;
        let mut caught_up = false;
        let mut history_entry = Value::Null;
        loop {
            if self.cancelled() {
                break;
            }
            let wait = (self.options.continuous && caught_up).then_some(self.options.idle_wait);
            let batch: ChangesBatch = if let Some(w) = wait {
                let mut cancel = self.cancel.subscribe();
                tokio::select! {
                    r = self.source.changes(&since, self.options.batch_size, &filter, Some(w)) => r?,
                    () = self.clock.sleep(w + Duration::from_secs(5)) => continue,
                    _ = cancel.wait_for(|c| *c) => break,
                }
            } else {
                self.source
                    .changes(&since, self.options.batch_size, &filter, None)
                    .await?
            };
            if batch.rows.is_empty() {
                let moved = batch.last_seq != since && !batch.last_seq.is_null();
                if moved {
                    since = batch.last_seq.clone();
                }
                if !self.options.continuous {
                    if moved || history_entry.is_null() && session.start_seq != since {
                        history_entry = self.checkpoint(&mut session, &since).await?;
                    }
                    break;
                }
                if !caught_up {
                    let progress = self.update(|p| {
                        p.state = State::Idle;
                        p.pending = Some(0);
                    });
                    self.emit(Event::Idle(progress));
                }
                caught_up = true;
                continue;
            }
            caught_up = false;
            self.update(|p| p.state = State::Running);
            // Which revisions does the target lack?
            let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for row in &batch.rows {
                query
                    .entry(row.id.clone())
                    .or_default()
                    .extend(row.revs.iter().cloned());
            }
            let checked: u64 = query.values().map(|v| v.len() as u64).sum();
            let missing = self.target.revs_diff(&query).await?;
            let mut wanted = Vec::new();
            for (id, m) in &missing {
                for rev in &m.missing {
                    wanted.push(Wanted {
                        id: id.clone(),
                        rev: rev.clone(),
                        since: m.possible_ancestors.clone(),
                    });
                }
            }
            let found = wanted.len() as u64;
            // Any revision not written stops (or retries) here, before the checkpoint.
            self.copy(&wanted, &mut session).await?;
            session.missing_checked += checked;
            session.missing_found += found;
            since = batch.last_seq.clone();
            history_entry = self.checkpoint(&mut session, &since).await?;
            // A successful batch resets the backoff.
            *attempt = 0;
            let now = self.clock.now_millis();
            let progress = self.update(|p| {
                p.missing_checked += checked;
                p.missing_found += found;
                p.pending = batch.pending;
                p.checkpointed_source_seq = since.clone();
                p.retries = 0;
                p.last_checkpoint_at = Some(now);
            });
            self.emit(Event::Checkpoint(progress));
        }
        let progress = self.progress();
        Ok(ReplicationResult {
            session_id: session.id,
            source_last_seq: since,
            replication_id: self.id.clone(),
            no_changes: history_entry.is_null(),
            history: history_entry,
            progress,
        })
    }

    /// Copies `wanted` from the source to the target in groups, each group fetched while the
    /// previous one is written (memory stays bounded whatever the attachments weigh). Fails,
    /// after counting what was written, on the first revision the target did not take for a
    /// reason other than its rules.
    async fn copy(&self, wanted: &[Wanted], session: &mut Session) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let (first, taken) = self.source.fetch(wanted, &self.tmp_dir).await?;
        let mut position = taken.max(1);
        let mut fetched = Some(first);
        while let Some(docs) = fetched.take() {
            let rest = wanted.get(position..).unwrap_or_default();
            let fetch_next = async {
                if rest.is_empty() {
                    Ok(None)
                } else {
                    self.source.fetch(rest, &self.tmp_dir).await.map(Some)
                }
            };
            let (written, next) = tokio::join!(self.write_group(docs), fetch_next);
            let outcome = written?;
            session.docs_read += outcome.read;
            session.docs_written += outcome.written;
            session.doc_write_failures += outcome.skipped.len() as u64;
            self.update(|p| {
                p.docs_read += outcome.read;
                p.docs_written += outcome.written;
                p.doc_write_failures += outcome.skipped.len() as u64;
                if let Some(f) = outcome.skipped.first() {
                    p.last_error = Some(format!("{} {}: {}", f.id, f.rev, f.error));
                }
            });
            if let Some(e) = outcome.stop {
                return Err(e);
            }
            if let Some((docs, taken)) = next? {
                position += taken.max(1);
                fetched = Some(docs);
            }
        }
        Ok(())
    }

    /// Writes one group; a `missing_stub` refusal (the target lacks an attachment the source
    /// thought it had) is retried once with every attachment, as CouchDB's replicator does.
    async fn write_group(&self, docs: Vec<Fetched>) -> Result<GroupOutcome> {
        let read = docs.len() as u64;
        let failures = if docs.is_empty() {
            Vec::new()
        } else {
            self.target.write(docs, &self.tmp_dir).await?
        };
        let (stubs, mut failures): (Vec<_>, Vec<_>) = failures
            .into_iter()
            .partition(|f| f.error.error() == "missing_stub");
        if !stubs.is_empty() {
            let again: Vec<Wanted> = stubs
                .iter()
                .map(|f| Wanted {
                    id: f.id.clone(),
                    rev: f.rev.clone(),
                    since: Vec::new(),
                })
                .collect();
            let mut position = 0;
            while position < again.len() {
                let rest = again.get(position..).unwrap_or_default();
                let (docs, taken) = self.source.fetch(rest, &self.tmp_dir).await?;
                position += taken.max(1);
                if !docs.is_empty() {
                    failures.extend(self.target.write(docs, &self.tmp_dir).await?);
                }
            }
        }
        let written = read.saturating_sub(failures.len() as u64);
        let mut skipped = Vec::new();
        let (mut stop, mut retry) = (None, None);
        for failure in failures {
            match verdict(&failure.error) {
                Verdict::Skip => skipped.push(failure),
                Verdict::Retry => {
                    retry.get_or_insert(failure);
                }
                Verdict::Stop => {
                    stop.get_or_insert(failure);
                }
            }
        }
        Ok(GroupOutcome {
            read,
            written,
            skipped,
            stop: stop.or(retry).map(not_written),
        })
    }

    /// The checkpoint documents' name: the replication id, and for a filter function
    /// (`ddoc/name`) the MD5 of that id with the function's source as the source holds it now,
    /// as CouchDB's replication id includes the filter's code.
    async fn checkpoint_id(&self) -> Result<String> {
        let Some(filter) = self
            .options
            .filter
            .as_deref()
            .filter(|f| !f.starts_with('_'))
        else {
            return Ok(self.id.clone());
        };
        let code = self.source.filter_code(filter).await?;
        let mut text = self.id.clone().into_bytes();
        text.push(b'\n');
        text.extend_from_slice(code.trim().as_bytes());
        Ok(data_encoding::HEXLOWER.encode(&crate::doc::md5_of(&text)))
    }

    /// The sequence to resume from: the last checkpoint both sides agree on (CouchDB's rule:
    /// the same session id, or a session id common to both histories). When only the target
    /// has a checkpoint (a source that refuses writes, such as a read-only peer), the target's
    /// is used.
    async fn find_checkpoint(
        &self,
        checkpoint_id: &str,
    ) -> Result<(Value, Option<Value>, Option<Value>)> {
        let source = self.source.get_local(checkpoint_id).await?;
        let target = self.target.get_local(checkpoint_id).await?;
        let since = match (&source, &target) {
            (Some(s), Some(t)) => common_seq(s, t).unwrap_or(json!(0)),
            (None, Some(t)) => t.get("source_last_seq").cloned().unwrap_or(json!(0)),
            _ => json!(0),
        };
        Ok((since, source, target))
    }

    /// Records `seq` in the checkpoint documents of both sides (the target must take it; the
    /// source may refuse, as a read-only peer does) and returns this session's history entry.
    async fn checkpoint(&self, session: &mut Session, seq: &Value) -> Result<Value> {
        let session_id = session.id.as_str();
        let entry = json!({
            "session_id": session_id,
            "start_time": session.start_time.to_string(),
            "end_time": self.clock.now_millis().to_string(),
            "start_last_seq": session.start_seq,
            "end_last_seq": seq,
            "recorded_seq": seq,
            "missing_checked": session.missing_checked,
            "missing_found": session.missing_found,
            "docs_read": session.docs_read,
            "docs_written": session.docs_written,
            "doc_write_failures": session.doc_write_failures,
        });
        let build = |previous: &Option<Value>| -> Map<String, Value> {
            let mut history: Vec<Value> = previous
                .as_ref()
                .and_then(|p| p.get("history"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            history.retain(|h| h.get("session_id").and_then(Value::as_str) != Some(session_id));
            history.insert(0, entry.clone());
            history.truncate(MAX_HISTORY);
            let mut doc = Map::new();
            if let Some(rev) = previous.as_ref().and_then(|p| p.get("_rev")) {
                doc.insert("_rev".into(), rev.clone());
            }
            doc.insert("session_id".into(), json!(session_id));
            doc.insert("source_last_seq".into(), seq.clone());
            doc.insert("replication_id_version".into(), json!(4));
            doc.insert("history".into(), Value::Array(history));
            doc
        };
        // Both sides at once; the answer's revision is all the next write needs (no re-read).
        let mut target = build(&session.target_doc);
        let mut source = build(&session.source_doc);
        let (target_rev, source_rev) = tokio::join!(
            self.target
                .put_local(&session.checkpoint_id, target.clone()),
            self.source
                .put_local(&session.checkpoint_id, source.clone())
        );
        target.insert("_rev".into(), target_rev?);
        session.target_doc = Some(Value::Object(target));
        match source_rev {
            Ok(rev) => {
                source.insert("_rev".into(), rev);
                session.source_doc = Some(Value::Object(source));
            }
            Err(e) if e.kind() == ErrorKind::Transient => return Err(e),
            // The source may refuse (a read-only peer): the target's checkpoint suffices.
            Err(_) => {}
        }
        Ok(entry)
    }
}

/// What writing one group came to.
struct GroupOutcome {
    read: u64,
    written: u64,
    /// Refused by the target's rules: counted, skipped.
    skipped: Vec<WriteFailure>,
    /// The failure that ends the batch without a checkpoint (a permanent one before a
    /// transient one).
    stop: Option<Error>,
}

enum Verdict {
    Skip,
    Retry,
    Stop,
}

/// What a per-revision write failure means for the replication. Skipped, as CouchDB's
/// replicator skips them (`couch_replicator_worker:handle_doc_write_error`): refusals by the
/// target's rules — `unauthorized` (401), `forbidden` (403) — a revision too large for it
/// (413), an unsupported media type (415) and an invalid attachment name. Everything else
/// retries (transient) or stops the replication.
fn verdict(e: &Error) -> Verdict {
    let refused = matches!(e.error(), "forbidden" | "unauthorized")
        || matches!(e.status(), 401 | 403 | 413 | 415)
        || (e.status() == 400 && e.reason().starts_with("Attachment name"));
    if refused {
        Verdict::Skip
    } else if e.kind() == ErrorKind::Transient {
        Verdict::Retry
    } else {
        Verdict::Stop
    }
}

/// A failure as the error that ends the batch, naming the revision (of the same kind, so it
/// is retried or not as the original would be).
fn not_written(failure: WriteFailure) -> Error {
    let what = format!(
        "document {:?} (revision {}) was not written to the target",
        failure.id, failure.rev
    );
    match failure.error {
        Error::Couch {
            status,
            error,
            reason,
        } => Error::Couch {
            status,
            error,
            reason: format!("{what}: {reason}").into(),
        },
        Error::Transport(m) => Error::Transport(format!("{what}: {m}")),
        Error::PeerMisbehaved(m) => Error::PeerMisbehaved(format!("{what}: {m}")),
        Error::Corrupt(m) => Error::Corrupt(format!("{what}: {m}")),
        other => other,
    }
}

/// The sequence recorded by the newest session both checkpoint documents know.
fn common_seq(source: &Value, target: &Value) -> Option<Value> {
    if source.get("session_id").is_some() && source.get("session_id") == target.get("session_id") {
        return source.get("source_last_seq").cloned();
    }
    let target_sessions: Vec<&Value> = target
        .get("history")
        .and_then(Value::as_array)
        .map(|h| h.iter().filter_map(|e| e.get("session_id")).collect())
        .unwrap_or_default();
    source
        .get("history")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| {
            e.get("session_id")
                .is_some_and(|s| target_sessions.contains(&s))
        })
        .and_then(|e| e.get("recorded_seq").cloned())
}

/// A stable id from the endpoints and filter (MD5 of canonical JSON, hex).
fn replication_id(source: &Endpoint, target: &Endpoint, options: &ReplicationOptions) -> String {
    let spec = json!({
        "v": 1,
        "source": source.identity(),
        "target": target.identity(),
        "doc_ids": options.doc_ids,
        "selector": options.selector,
    });
    // A filtered replication is another replication (CouchDB's id includes the filter and its
    // query parameters); unfiltered ids stay what they were.
    let mut spec = spec;
    if let Some(filter) = &options.filter {
        spec["filter"] = Value::String(filter.clone());
        spec["query_params"] = Value::Object(options.query_params.clone().unwrap_or_default());
    }
    let mut canonical = Vec::new();
    crate::json::canonical(&spec, &mut canonical);
    data_encoding::HEXLOWER.encode(&crate::doc::md5_of(&canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_checkpoint_rules() {
        let s = json!({"session_id": "b", "source_last_seq": 9, "history": [{"session_id": "b", "recorded_seq": 9}, {"session_id": "a", "recorded_seq": 4}]});
        let t_same = json!({"session_id": "b", "source_last_seq": 9, "history": []});
        let t_older = json!({"session_id": "a", "source_last_seq": 4, "history": [{"session_id": "a", "recorded_seq": 4}]});
        let t_unrelated =
            json!({"session_id": "z", "history": [{"session_id": "z", "recorded_seq": 7}]});
        assert_eq!(common_seq(&s, &t_same), Some(json!(9)));
        assert_eq!(common_seq(&s, &t_older), Some(json!(4)));
        assert_eq!(common_seq(&s, &t_unrelated), None);
    }
}
