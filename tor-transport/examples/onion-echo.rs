//! An echo service on an onion address that is its identity key, and a client for it.
//!
//! ```text
//! # host: prints httpkey://<onion>:443/<key id>/ and echoes every line it gets, in mutual TLS
//! cargo run -p tor-transport --features arti --example onion-echo -- host [--data DIR]
//!
//! # dial: connects to the URL in TLS pinned to its key id, sends each stdin line, prints the echo
//! cargo run -p tor-transport --features arti --example onion-echo -- dial URL [--data DIR]
//!
//! # either, on the private test network instead of the public Tor network:
//! scripts/tor-testnet run cargo run -p tor-transport --features arti --example onion-echo -- host
//! ```
//!
//! `--data DIR` keeps Tor's state and the identity (`DIR/identity`, key 0600) between runs, so
//! the host keeps its address; without it both are thrown away at exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use adhoc_wireless::{Inbound, Link};
use public_key_identity::tls::{client_config, server_config, server_name};
use public_key_identity::{ClientAuth, HttpKeyUrl, Identity, KeyAlgorithm, Keystore, Peer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tor_transport::{PrivateNetwork, ServiceOptions, Tor, TorConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn usage() -> ExitCode {
    eprintln!("usage: onion-echo host [--data DIR] | onion-echo dial URL [--data DIR]");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args
        .iter()
        .position(|a| a == "--data")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let result = match args.first().map(String::as_str) {
        Some("host") => host(data).await,
        Some("dial") => match args.get(1) {
            Some(url) => dial(url, data).await,
            None => return usage(),
        },
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Tor's configuration: the private network of `scripts/tor-testnet` when it runs, else the
/// public one; state in `data` or a temporary directory.
fn config(data: &Option<PathBuf>, temp: &tempfile::TempDir) -> Result<TorConfig, Error> {
    let dir = data
        .as_ref()
        .map_or_else(|| temp.path().join("tor"), |d| d.join("tor"));
    Ok(match PrivateNetwork::from_env()? {
        Some((net, _)) => {
            eprintln!("# on the private test network");
            TorConfig::private(dir, net)
        }
        None => TorConfig::new(dir),
    })
}

fn identity(data: &Option<PathBuf>) -> Result<Identity, Error> {
    match data {
        Some(dir) => {
            let store = Keystore::open(dir.join("identity"))?;
            Ok(store.load_or_create("device", KeyAlgorithm::Ed25519)?.0)
        }
        None => Ok(Identity::generate(KeyAlgorithm::Ed25519)?),
    }
}

async fn host(data: Option<PathBuf>) -> Result<(), Error> {
    let temp = tempfile::tempdir()?;
    let me = identity(&data)?;
    let tor = Tor::start(config(&data, &temp)?).await?;
    eprintln!("# bootstrapping…");
    tor.bootstrapped().await?;
    let service = tor.host(me.key(), ServiceOptions::new(443)).await?;
    println!("{}", service.url());
    eprintln!("# the descriptor is being published; dial it from another machine");
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&me, ClientAuth::Optional)?));
    let mut incoming = tor.incoming().ok_or("incoming taken")?;
    while let Some(inbound) = incoming.next().await {
        let Inbound::Stream { stream, .. } = inbound else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let who = match Peer::of(tls.get_ref().1) {
                Peer::Key(k) => k.to_string(),
                Peer::Anonymous => "anonymous".to_owned(),
            };
            eprintln!("# {who} connected");
            let (r, mut w) = tokio::io::split(tls);
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // arti's streams send what is flushed.
                if w.write_all(format!("{line}\n").as_bytes()).await.is_err()
                    || w.flush().await.is_err()
                {
                    break;
                }
            }
            eprintln!("# {who} left");
        });
    }
    Ok(())
}

async fn dial(url: &str, data: Option<PathBuf>) -> Result<(), Error> {
    let url: HttpKeyUrl = url.parse()?;
    let temp = tempfile::tempdir()?;
    let me = identity(&data)?;
    let tor = Tor::start(config(&data, &temp)?).await?;
    let stream = tor.dial(&url).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(url.key_id(), Some(&me))?))
        .connect(server_name(&url.host().to_string()), stream)
        .await?;
    eprintln!("# connected to {} in TLS pinned to its key id", url.host());
    let (r, mut w) = tokio::io::split(tls);
    let mut echoes = BufReader::new(r).lines();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        w.write_all(format!("{line}\n").as_bytes()).await?;
        w.flush().await?;
        match echoes.next_line().await? {
            Some(echo) => println!("{echo}"),
            None => break,
        }
    }
    Ok(())
}
