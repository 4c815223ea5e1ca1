//! The HTTPS listener: TLS (mutual, client certificate optional), the caller's key id attached to
//! every request, HTTP/1.1 and HTTP/2, and a graceful stop: no new connections, in-flight requests
//! finish (every acknowledged write is already durable), then the process exits. A connection
//! whose key is revoked while it is open (a continuous `_changes` feed, a kept-alive
//! replication connection) is cut at once; new ones are refused in the handshake
//! ([`crate::tls`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use public_key_identity::{KeyId, Peer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tls::Refused;

/// How the listener learns that a key it is serving was revoked: `changed` sees a new value
/// whenever the answer of `refused` may have changed.
pub struct Revoked {
    /// Changes with the policy.
    pub changed: watch::Receiver<u64>,
    /// Whether a key is refused.
    pub refused: Refused,
}

/// Resolves with `key` once `refused` says so (checked now, then at every change); never for a
/// connection without a key.
async fn until_refused(
    key: Option<KeyId>,
    mut changed: watch::Receiver<u64>,
    refused: Refused,
) -> KeyId {
    let Some(key) = key else {
        return std::future::pending().await;
    };
    loop {
        if refused(&key) {
            return key;
        }
        if changed.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long in-flight requests get to finish after a stop was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` resolves, cutting connections of keys as `revoked`
/// refuses them.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    stop: impl std::future::Future<Output = ()>,
    revoked: Revoked,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => {
                let (tcp, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, app, mut closing) = (acceptor.clone(), app.clone(), closing_rx.clone());
                let (changed, refused) = (revoked.changed.clone(), revoked.refused.clone());
                connections.spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let peer = Peer::of(tls.get_ref().1);
                    let service = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer);
                        let app = app.clone();
                        async move { tower::ServiceExt::oneshot(app, req).await }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(%remote, error = %e, "connection ended with an error");
                            }
                        }
                        () = async { let _ = closing.wait_for(|c| *c).await; } => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                        // Dropping the connection closes it, requests in flight included.
                        key = until_refused(peer.key_id(), changed, refused) => {
                            tracing::info!(%remote, %key, "closed the connection of a revoked key");
                        }
                    }
                });
            }
        }
        // Reap finished connection tasks.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    closing_tx.send_replace(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some connections did not finish in time; closing them");
        connections.abort_all();
    }
    Ok(())
}
