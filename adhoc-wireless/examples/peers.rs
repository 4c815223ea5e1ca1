//! Lists the peers on the LAN live, as they come and go, while advertising a key id.
//!
//! ```text
//! cargo run -p adhoc-wireless --features mdns --example peers -- [OPTIONS]
//!
//!   --interface NAME|IP   an interface to use (repeat for more); default: every interface
//!                         with an address except loopback
//!   --key KEYID           the key id to advertise; default: a throwaway Ed25519 key's
//!   --data TEXT           application data in the advert (at most 64 bytes)
//!   --silence SECS        a quiet peer is lost after this long (default 10)
//!   --port N              the TCP port of the link (default: any free port)
//! ```
//!
//! Prints one line per event, until Ctrl-C (which says goodbye, so the others lose this peer at
//! once):
//!
//! ```text
//! found   lan 192.168.1.23:40313  mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjxxe2lomfzgc3a
//! updated lan 192.168.1.23:40313  mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjxxe2lomfzgc3a
//! lost                            mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjxxe2lomfzgc3a
//! ```
//!
//! Two of them on one machine find each other too (`--interface lo` on both, or the same
//! interface). mDNS needs UDP port 5353 and multicast on the chosen interfaces.

use std::net::IpAddr;
use std::process::ExitCode;

use adhoc_wireless::mdns::{LanInterface, MdnsConfig, MdnsPlugin, local_interfaces};
use adhoc_wireless::{Advert, Discovery, Event, Peer, Plugin};
use public_key_identity::{KeyAlgorithm, KeyId, KeyPair};

struct Options {
    interfaces: Vec<LanInterface>,
    key: Option<KeyId>,
    data: Vec<u8>,
    silence_secs: u64,
    port: u16,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: peers [--interface NAME|IP]... [--key KEYID] [--data TEXT] [--silence SECS] [--port N]"
    );
    ExitCode::from(2)
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        interfaces: Vec::new(),
        key: None,
        data: Vec::new(),
        silence_secs: 10,
        port: 0,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--interface" => {
                let v = value("--interface")?;
                options.interfaces.push(match v.parse::<IpAddr>() {
                    Ok(ip) => LanInterface::Addr(ip),
                    Err(_) => LanInterface::Name(v),
                });
            }
            "--key" => {
                let v = value("--key")?;
                options.key = Some(v.parse().map_err(|e| format!("--key: {e}"))?);
            }
            "--data" => options.data = value("--data")?.into_bytes(),
            "--silence" => {
                options.silence_secs = value("--silence")?
                    .parse()
                    .map_err(|e| format!("--silence: {e}"))?;
            }
            "--port" => {
                options.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

fn line(what: &str, peer: &Peer) -> String {
    let at = peer
        .cheapest()
        .map(|a| format!("{} {}", a.transport.name(), a.address))
        .unwrap_or_default();
    format!("{what:<7} {at:<23} {}", peer.id)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("peers: {e}");
            }
            return usage();
        }
    };
    if options.interfaces.is_empty() {
        let mut names: Vec<String> = match local_interfaces() {
            Ok(list) => list
                .into_iter()
                .filter(|(_, ip)| !ip.is_loopback())
                .map(|(name, _)| name)
                .collect(),
            Err(e) => {
                eprintln!("peers: {e}");
                return ExitCode::FAILURE;
            }
        };
        names.dedup();
        if names.is_empty() {
            eprintln!("peers: no interface with an address; try --interface lo");
            return ExitCode::FAILURE;
        }
        options.interfaces = names.into_iter().map(LanInterface::Name).collect();
    }
    let key = match options.key {
        Some(key) => key,
        None => match KeyPair::generate(KeyAlgorithm::Ed25519) {
            Ok(pair) => pair.key_id(),
            Err(e) => {
                eprintln!("peers: generating a key: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let advert = match Advert::key(key, options.data) {
        Ok(advert) => advert,
        Err(e) => {
            eprintln!("peers: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut config = MdnsConfig::new(options.interfaces.clone());
    config.port = options.port;
    config.table.lost_after_ms = options.silence_secs.saturating_mul(1000);
    let plugin = match MdnsPlugin::start(config).await {
        Ok(plugin) => plugin,
        Err(e) => {
            eprintln!("peers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut events = plugin.subscribe();
    if let Err(e) = plugin.advertise(advert) {
        eprintln!("peers: advertising: {e}");
        plugin.shutdown().await;
        return ExitCode::FAILURE;
    }
    let listening: Vec<String> = plugin.listening().iter().map(|a| a.to_string()).collect();
    println!("# key id   {key}");
    println!("# on       {:?}", options.interfaces);
    println!("# link     {}", listening.join(" "));
    println!("# Ctrl-C to stop");

    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Found(p))) => println!("{}", line("found", &p)),
                Some(Ok(Event::Updated(p))) => println!("{}", line("updated", &p)),
                Some(Ok(Event::Lost(id))) => println!("{:<7} {:<23} {id}", "lost", ""),
                Some(Ok(_)) => {}
                Some(Err(lagged)) => {
                    println!("# {lagged}; now:");
                    for p in plugin.peers() {
                        println!("{}", line("found", &p));
                    }
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("# goodbye");
    plugin.shutdown().await;
    ExitCode::SUCCESS
}
