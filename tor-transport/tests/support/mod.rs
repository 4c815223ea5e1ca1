//! The private Tor network for the tests: `scripts/tor-testnet run` starts it and names its
//! description in `THALI_TOR_TESTNET`; these helpers wait until it is usable and start arti
//! clients on it.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adhoc_wireless::{Clock, Inbound, Incoming, Link, TokioClock};
use public_key_identity::tls::{client_config, server_config, server_name};
use public_key_identity::{ClientAuth, Identity, KeyId, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tor_transport::{PrivateNetwork, TESTNET_ENV, Tor, TorConfig};

/// How long the network may take to become usable (the note measured 12–77 s).
const READY_WITHIN: Duration = Duration::from_secs(300);

/// The private network, once usable; `None` (after a loud SKIPPED line) when no network was
/// started — which fails under CI, where `scripts/test` always starts one.
pub async fn testnet(test: &str) -> Option<PrivateNetwork> {
    log();
    let clock = TokioClock::default();
    let Some(net) = PrivateNetwork::from_env_when_ready(&clock, READY_WITHIN)
        .await
        .unwrap()
    else {
        let line = format!(
            "SKIPPED ({test}): no private Tor network ({TESTNET_ENV} is not set; run the tests \
             through `scripts/test`, or `scripts/tor-testnet run cargo nextest run ...`)"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "{line}, and CI must run it"
        );
        eprintln!("!!!!!!!! {line}");
        println!("!!!!!!!! {line}");
        return None;
    };
    Some(net)
}

/// A client on `net` with its state in `dir`.
pub async fn tor(net: &PrivateNetwork, dir: &Path) -> Tor {
    let mut config = TorConfig::private(dir, net.clone());
    // Short attempts, retried by the tests: a circuit that stalls is given up and rebuilt.
    config.connect_timeout = Duration::from_secs(30);
    Tor::start(config).await.unwrap()
}

/// Milliseconds on one tokio clock for the whole test process.
pub fn now_ms() -> u64 {
    static CLOCK: std::sync::OnceLock<TokioClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(TokioClock::default).now_millis()
}

/// arti's and ours logs on stderr, filtered by `TOR_TEST_LOG` (`tracing` targets syntax, for
/// example `warn,tor_hsservice=debug`); nothing when unset.
pub fn log() {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let Some(filter) = std::env::var("TOR_TEST_LOG")
        .ok()
        .and_then(|f| f.parse::<tracing_subscriber::filter::Targets>().ok())
    else {
        return;
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .try_init();
}

/// Serves every stream of `inbox` in mutual TLS as `identity`: echoes what it reads, after
/// one line naming the client's key id (or `anonymous`). Messages go to `messages`.
pub fn tls_echo(
    mut inbox: Incoming,
    identity: &Identity,
    messages: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(identity, ClientAuth::Optional).unwrap(),
    ));
    tokio::spawn(async move {
        while let Some(inbound) = inbox.next().await {
            let stream = match inbound {
                Inbound::Stream { stream, .. } => stream,
                Inbound::Message { bytes, .. } => {
                    let _ = messages.send(bytes);
                    continue;
                }
                _ => continue,
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let who = match Peer::of(tls.get_ref().1) {
                    Peer::Key(k) => k.to_string(),
                    Peer::Anonymous => "anonymous".to_owned(),
                };
                // arti's streams send what is flushed (they pack cells).
                if tls.write_all(format!("{who}\n").as_bytes()).await.is_err()
                    || tls.flush().await.is_err()
                {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err()
                            {
                                break;
                            }
                        }
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    })
}

/// Wraps `stream` in TLS pinned to `pin`, as `me`.
pub async fn pinned_tls(
    stream: adhoc_wireless::BoxedStream,
    pin: KeyId,
    me: &Identity,
    host: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<adhoc_wireless::BoxedStream>> {
    let config = Arc::new(client_config(pin, Some(me)).unwrap());
    tokio_rustls::TlsConnector::from(config)
        .connect(server_name(host), stream)
        .await
}

/// Reads the first line (the key id the server saw).
pub async fn first_line<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// `link`'s inbound items, for a test that wants to see messages.
pub fn incoming(link: &Tor) -> Incoming {
    Link::incoming(link).unwrap()
}
