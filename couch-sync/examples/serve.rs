//! A standalone CouchDB-compatible server over plain HTTP, for library users and tests.
//!
//! ```text
//! cargo run --release -p couch-sync --example serve -- --listen 127.0.0.1:5984 --data ./couch-data
//! ```
//!
//! Prints one line when it is ready to take requests, and stops cleanly (in-flight requests
//! finish, every acknowledged write is already on disk) on SIGINT or SIGTERM. There is no
//! authentication: bind it to loopback, or embed the router behind your own [`Authorize`] hook.
//!
//! [`Authorize`]: couch_sync::server::Authorize

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use couch_sync::server::{AllowAll, ServerConfig, router};
use couch_sync::{Store, StoreConfig};

#[derive(Parser)]
#[command(about = "Serve a couch-sync store over plain HTTP")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5984")]
    listen: SocketAddr,
    /// Data directory (created if missing).
    #[arg(long, default_value = "couch-data")]
    data: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = Store::open(&args.data, StoreConfig::default())?;
    let app = router(store, ServerConfig::default(), Arc::new(AllowAll));
    // Small writes (multipart parts, chunked feeds) go out at once: no Nagle delay.
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!(
        "couch-sync listening on http://{addr} (data in {})",
        args.data.display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
