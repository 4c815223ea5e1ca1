//! The CouchDB replication protocol as a client (feature `client`).
//!
//! A [`Replication`] copies every revision the target lacks from a source [`Endpoint`] to a
//! target one, exactly as CouchDB's and PouchDB's replicators do, so either side may be this
//! crate (in-process, [`Endpoint::Local`], or over HTTP) or any CouchDB-compatible server
//! ([`Endpoint::Remote`]): Apache CouchDB, pouchdb-server, a PouchDB client's server.
//!
//! Per batch: `_changes` (`style=all_docs`) from the source, `_revs_diff` on the target,
//! `_bulk_get` (or `open_revs` where a peer lacks it) with `revs=true&latest=true` and only the
//! attachments the target does not have (`atts_since`), `_bulk_docs` with `new_edits=false`, and a
//! checkpoint document `_local/<replication id>` on both sides (history of sessions, so a later
//! run resumes from the last common checkpoint). Transient failures retry with exponential
//! backoff and jitter from the last checkpoint; permanent ones stop with the error. All waiting
//! goes through a [`Clock`]; all connections through a [`Connector`].
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

mod connector;
mod endpoint;
mod replication;

pub use crate::clock::{Clock, SimulatedClock, Sleep, TokioClock};
pub use connector::{BoxStream, Connecting, Connector, Stream, TcpConnector};
pub use endpoint::{Endpoint, Remote};
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
