//! How the replicator reaches a peer: the caller supplies a [`Connector`] that turns a URL's host
//! and port into a byte stream. Plain TCP is built in ([`TcpConnector`]); the hub plugs in mutual
//! TLS with a pinned key, and later Tor or Bluetooth streams. The replicator itself contains no
//! TLS code.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a peer.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed stream.
pub type BoxStream = Box<dyn Stream>;

/// The future a connector returns.
pub type Connecting = Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + Send>>;

/// Opens byte streams to peers.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `host:port` for a URL with `scheme` (`http`, `https`, or the caller's own).
    fn connect(&self, scheme: &str, host: &str, port: u16) -> Connecting;
}

/// A TCP connection to `host:port` (an IPv6 literal may keep its brackets), with Nagle off —
/// the first step of every connector that runs over TCP.
pub async fn tcp_dial(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Plain TCP for `http://` URLs; refuses every other scheme (TLS is the caller's connector's job).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, scheme: &str, host: &str, port: u16) -> Connecting {
        let scheme = scheme.to_owned();
        let host = host.to_owned();
        Box::pin(async move {
            if scheme != "http" {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!(
                        "TcpConnector speaks plain http only, not {scheme}: supply a TLS connector"
                    ),
                ));
            }
            Ok(Box::new(tcp_dial(&host, port).await?) as BoxStream)
        })
    }
}
