//! The CouchDB replication protocol as a client (feature `client`).
//!
//! A [`Replication`] copies every revision the target lacks from a source [`Endpoint`] to a
//! target one, exactly as CouchDB's and PouchDB's replicators do, so either side may be this
//! crate (in-process, [`Endpoint::Local`], or over HTTP) or any CouchDB-compatible server
//! ([`Endpoint::Remote`]): Apache CouchDB, pouchdb-server, a PouchDB client's server.
//!
//! Per batch: `_changes` (`style=all_docs`) from the source, `_revs_diff` on the target,
//! the missing revisions fetched with `revs=true&latest=true`, written with `new_edits=false`,
//! and a checkpoint document `_local/<replication id>` on both sides (history of sessions, so a
//! later run resumes from the last common checkpoint). All waiting goes through a [`Clock`];
//! all connections through a [`Connector`].
//!
//! ## Attachments: the stored bytes travel, never more than a bounded amount at once
//!
//! CouchDB stores compressible attachments gzip-encoded, and their `digest` is the MD5 of that
//! gzip stream. Inline base64 `data` (`_bulk_get?attachments=true`) carries the *decoded*
//! content next to that digest, so a target can only recompress it — with its own encoder, so
//! the digest may change, and later stubs naming the old digest may no longer match — and the
//! whole attachment sits in memory, base64 and all. So, as CouchDB's own replicator does
//! (`couch_replicator_worker`), revisions are read with `_bulk_get?attachments=false`, and those
//! whose attachments the target lacks are fetched one by one as `multipart/mixed` `open_revs`
//! answers (`atts_since` = the target's possible ancestors): each attachment arrives as stored,
//! gzip ones as their gzip bytes with `encoding`/`encoded_length`, and is streamed into a spool
//! (memory up to a threshold, then a temporary file) that keeps those bytes and so the digest.
//! A local target stores the spooled bytes as they are; a remote one receives them the same
//! way CouchDB's replicator sends them, `PUT ?new_edits=false` as `multipart/related`, streamed,
//! gzip parts encoded where the target keeps encoded parts (its welcome says `"couchdb"`;
//! pouchdb-server would store the gzip bytes as the content, so it gets decoded content).
//! Plain (not encoded) content up to 1 MiB per revision goes inline in `_bulk_docs` instead:
//! that is exact too, and keeps writes batched. Inline `data` from a peer that sends it anyway
//! is accepted, and stored gzip-encoded when its digest says the source stored it so. A fetch
//! stops taking revisions once it holds 16 MiB of content; every size a peer sends is bounded.
//!
//! ## Failures: nothing is checkpointed past silently
//!
//! A revision the target refuses by its rules — `forbidden`/`unauthorized` (a validation
//! function, an authorization hook), or too large, an unsupported media type or an invalid
//! attachment name, which CouchDB's replicator skips too — is counted in
//! [`Progress::doc_write_failures`] (and shown in [`Progress::last_error`]) and skipped. A
//! `missing_stub` refusal refetches the revision with all its attachments once. Any other
//! failure is not skipped: a transient one (connection, timeout, 5xx, 408, 429) retries the
//! batch with exponential backoff and jitter from the last checkpoint; a permanent one stops the
//! replication with an error naming the document and the reason. Neither moves the checkpoint
//! past the document, and both show in [`Event::Retrying`]/[`Event::Failed`] and in
//! [`Progress::last_error`].
//!
//! ```no_run
//! # async fn run() -> couch_sync::Result<()> {
//! use std::sync::Arc;
//! use couch_sync::replicate::{Endpoint, Remote, Replication, ReplicationOptions, TcpConnector, TokioClock};
//! let store = couch_sync::Store::open("data", couch_sync::StoreConfig::default())?;
//! let local = Endpoint::Local(store.db("notes")?);
//! let remote = Endpoint::Remote(Arc::new(Remote::new(
//!     "http://127.0.0.1:5984/notes",
//!     Arc::new(TcpConnector),
//!     Arc::new(TokioClock),
//! )?));
//! let result = Replication::new(remote, local, ReplicationOptions::default()).run().await?;
//! println!("{} documents written", result.progress.docs_written);
//! # Ok(()) }
//! ```

#[cfg(feature = "backup")]
pub mod backup;
mod connector;
mod endpoint;
mod fetched;
mod multipart;
mod remote;
mod replication;

pub use crate::clock::{Clock, SimulatedClock, Sleep, TokioClock};
pub use connector::{BoxStream, Connecting, Connector, Stream, TcpConnector, tcp_dial};
pub use endpoint::Endpoint;
pub use remote::Remote;
pub use replication::{
    Cancel, Event, Progress, Replication, ReplicationOptions, ReplicationResult, RetryPolicy, State,
};

/// Both ways at once: `a` → `b` and `b` → `a` with the same options (two replications, each with
/// its own checkpoints), as the hub keeps a person's devices in sync. Returns both outcomes.
pub async fn sync_both_ways(
    a: Endpoint,
    b: Endpoint,
    options: ReplicationOptions,
) -> (
    crate::Result<ReplicationResult>,
    crate::Result<ReplicationResult>,
) {
    let forth = Replication::new(a.clone(), b.clone(), options.clone());
    let back = Replication::new(b, a, options);
    tokio::join!(forth.run(), back.run())
}
