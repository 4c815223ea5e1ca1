#![doc = include_str!("../README.md")]
// A binary: `pub` marks what a module offers the rest of the program.
#![allow(unreachable_pub)]
// The hub is the one crate that reads the wall clock and sleeps directly (ARCHITECTURE.md).
#![allow(clippy::disallowed_methods)]

mod api;
mod authz;
mod backup;
mod client;
mod cloud;
mod config;
mod hub;
mod listener;
mod pairing;
mod replication;
mod revocation;
mod tls;
mod ui;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use public_key_identity::{KeyAlgorithm, Keystore};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::client::HubClient;
use crate::config::{Layout, default_data_dir};
use crate::hub::Hub;

#[derive(Parser)]
#[command(
    name = "device-hub",
    version,
    about = "The Thali device hub: your CouchDB over mutual TLS, in sync with your devices"
)]
struct Cli {
    /// Data directory (keys, databases, hub.toml). Default: ~/.local/share/thali-hub.
    #[arg(long, global = true, env = "THALI_HUB_DATA")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (creates the identity on first run).
    Serve {
        /// Address to listen on (HTTPS). Default from hub.toml, else 127.0.0.1:5985.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print this hub's key id, address and identity card (as a QR code).
    Whoami,
    /// Apps on this device.
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Grant a principal or group a right on a database (`*` for all), or read on one view.
    Grant {
        /// Database name, `*`, or `DB/DDOC/VIEW` for the view `_design/DDOC/_view/VIEW` (or the
        /// Mango index `VIEW` of `_design/DDOC`): its rows may then be read without reading
        /// the database (right `read` only).
        db: String,
        /// `key:ID`, a key id, `group:NAME`, a group name, or `anonymous`.
        member: String,
        /// `read`, `write` or `admin`.
        right: String,
    },
    /// Take a right back (`revoke DB MEMBER RIGHT`), or revoke a lost device's key for good
    /// (`revoke KEYID`).
    ///
    /// With one argument, the key (of a lost or stolen device, a friend or an app) is revoked
    /// in the replicated policy: every one of your devices refuses it after its next sync —
    /// in the TLS handshake, for every request — stops replicating with it, and lists it on
    /// the status page. It cannot be undone (the device needs a new key), and a device cannot
    /// revoke its own key: do it from another of your devices.
    #[command(override_usage = "device-hub revoke DB MEMBER RIGHT\n       device-hub revoke KEYID")]
    Revoke {
        /// Database name, `*`, or `DB/DDOC/VIEW`; or, alone, the key id to revoke (`KEYID` or
        /// `key:KEYID`).
        #[arg(value_name = "DB|KEYID")]
        db: String,
        /// As for `grant`.
        #[arg(requires = "right")]
        member: Option<String>,
        /// `read`, `write` or `admin`.
        right: Option<String>,
    },
    /// Pair with another of your devices (`httpkey://…`), or confirm a pairing by its code.
    Pair {
        /// The other hub's httpkey URL.
        url: Option<String>,
        /// Confirm the pairing (incoming or outgoing) that shows this 6-digit code.
        #[arg(long)]
        confirm: Option<String>,
        /// Start the exchange and print the code, but confirm later (`--confirm CODE`).
        #[arg(long)]
        no_wait: bool,
    },
    /// Friends.
    Friend {
        #[command(subcommand)]
        command: FriendCommand,
    },
    /// Sync now with a paired hub (both ways with your devices; pull from friends).
    Replicate {
        /// The peer's key id or httpkey URL.
        peer: String,
        /// Only this database.
        db: Option<String>,
    },
    /// Print a one-time link that logs a browser into the status page.
    Ui {
        /// Also open it in the default browser.
        #[arg(long)]
        open: bool,
    },
    /// Peers, replication and databases.
    Status,
    /// Cloud peers: stock CouchDB servers to replicate chosen databases with.
    Cloud {
        #[command(subcommand)]
        command: CloudCommand,
    },
    /// End-to-end encrypted backups to a server that cannot read them.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Restore every database of an encrypted backup into this hub's store (with the hub
    /// stopped): the recovery words and the server's URL are all it takes.
    Restore {
        /// The server's root URL, `https://HOST[:PORT]/`.
        url: String,
        /// A file holding the 24 recovery words; without it they are read from standard input.
        #[arg(long)]
        words_file: Option<PathBuf>,
        #[command(flatten)]
        login: CloudLogin,
    },
}

/// How to reach a cloud server: credentials and the server key's pin.
#[derive(clap::Args)]
struct CloudLogin {
    /// The user name (HTTP basic authentication, or the `_session` login with --cookie).
    #[arg(long)]
    user: Option<String>,
    /// A file holding the password (its first line).
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// Log in through `_session` and send the cookie (CouchDB's cookie authentication).
    #[arg(long, requires = "user")]
    cookie: bool,
    /// Accept only the server key with this pin (base64 SHA-256 of its SubjectPublicKeyInfo)
    /// instead of the web PKI.
    #[arg(long)]
    pin: Option<String>,
}

impl CloudLogin {
    fn auth(&self) -> cloud::CloudAuth {
        match (&self.user, self.cookie) {
            (None, _) => cloud::CloudAuth::None,
            (Some(_), false) => cloud::CloudAuth::Basic,
            (Some(_), true) => cloud::CloudAuth::Cookie,
        }
    }

    /// The password from `--password-file`, required with `--user`.
    fn password(&self) -> Result<Option<String>> {
        if self.user.is_none() {
            return Ok(None);
        }
        let Some(file) = &self.password_file else {
            bail!("--user needs --password-file (the password is not taken on the command line)");
        };
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let password = text.lines().next().unwrap_or_default();
        if password.is_empty() {
            bail!("{} holds no password", file.display());
        }
        Ok(Some(password.to_owned()))
    }
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Back databases up, sealed, to a server (a stock CouchDB); prints the recovery words
    /// once. A running hub starts within seconds; `device-hub cloud list|remove` manage it.
    Add {
        /// A short name (letters, digits, '-', '_').
        name: String,
        /// The server's root URL, `https://HOST[:PORT]/`.
        url: String,
        /// The databases to back up.
        #[arg(required = true)]
        databases: Vec<String>,
        /// Run once every SECS seconds instead of on every change.
        #[arg(long, value_name = "SECS")]
        every: Option<u64>,
        #[command(flatten)]
        login: CloudLogin,
    },
}

#[derive(Subcommand)]
enum CloudCommand {
    /// Add (or replace) a cloud peer; a running hub starts replicating with it within seconds.
    Add {
        /// A short name (letters, digits, '-', '_').
        name: String,
        /// The server's root URL, `https://HOST[:PORT]/`.
        url: String,
        /// A database to replicate (repeatable); none: every database the hub replicates.
        #[arg(long = "db")]
        databases: Vec<String>,
        /// Only push to the cloud.
        #[arg(long, conflicts_with = "pull")]
        push: bool,
        /// Only pull from the cloud.
        #[arg(long)]
        pull: bool,
        /// Run once every SECS seconds instead of continuously.
        #[arg(long, value_name = "SECS")]
        every: Option<u64>,
        /// Credentials (the password is kept in DATA/cloud/NAME.secret, 0600) and pin.
        #[command(flatten)]
        login: CloudLogin,
    },
    /// List the cloud peers.
    List,
    /// Remove a cloud peer or backup (and its stored password and backup key: the server's copy
    /// of a backup then opens only with its recovery words).
    Remove {
        /// Its name.
        name: String,
    },
}

#[derive(Subcommand)]
enum AppCommand {
    /// Make a key and certificate for an app (or register the app's own certificate) and grant
    /// it access.
    Add {
        /// The app's name (its files go to DATA/apps/NAME).
        name: String,
        /// `DB:RIGHT` (RIGHT: read, write or admin); repeatable.
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Register this PEM certificate instead of making a key.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FriendCommand {
    /// Exchange identities with a friend's hub; confirm with `device-hub pair --confirm CODE`.
    Add {
        /// The friend's httpkey URL.
        url: String,
        /// Print the code and confirm later.
        #[arg(long)]
        no_wait: bool,
    },
}

fn main() -> std::process::ExitCode {
    // RUST_LOG: a default level and per-target levels (`warn`, `info,couch_sync=debug`).
    // `Targets` rather than `EnvFilter`: no span or field filters, and no regex engine in
    // the binary (smaller code, less resident memory).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing_subscriber::filter::LevelFilter::INFO)
        });
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let layout = Layout::create(&cli.data.unwrap_or_else(default_data_dir))?;
    match cli.command {
        Command::Serve { listen } => serve(layout, listen).await,
        Command::Whoami => whoami(&layout),
        Command::App {
            command: AppCommand::Add { name, grants, cert },
        } => app_add(&layout, &name, &grants, cert).await,
        Command::Grant { db, member, right } => {
            let client = local_client(&layout)?;
            let r = client
                .ok(
                    "POST",
                    "/_hub/api/grant",
                    Some(&acl_request(&db, &member, &right)),
                )
                .await?;
            println!(
                "{right} on {db} granted to {member}{}",
                if r["changed"] == Value::Bool(false) {
                    " (already)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Revoke {
            db: key,
            member: None,
            right: None,
        } => revoke_key(&layout, &key).await,
        Command::Revoke {
            db,
            member: Some(member),
            right: Some(right),
        } => {
            let client = local_client(&layout)?;
            let r = client
                .ok(
                    "POST",
                    "/_hub/api/revoke",
                    Some(&acl_request(&db, &member, &right)),
                )
                .await?;
            println!(
                "{right} on {db} revoked from {member}{}",
                if r["changed"] == Value::Bool(false) {
                    " (it had not been granted)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Revoke { .. } => {
            bail!("give DB MEMBER RIGHT to take a right back, or a KEYID alone to revoke a key")
        }
        Command::Pair {
            url,
            confirm,
            no_wait,
        } => match (url, confirm) {
            (_, Some(code)) => confirm_pairing(&layout, &code).await,
            (Some(url), None) => pair(&layout, &url, "me", no_wait).await,
            (None, None) => bail!("give the other hub's httpkey URL, or --confirm CODE"),
        },
        Command::Friend {
            command: FriendCommand::Add { url, no_wait },
        } => pair(&layout, &url, "friend", no_wait).await,
        Command::Replicate { peer, db } => replicate(&layout, &peer, db).await,
        Command::Ui { open } => {
            let client = local_client(&layout)?;
            let r = client.ok("POST", "/_hub/api/ui-token", None).await?;
            let url = r["url"].as_str().unwrap_or_default();
            println!("{url}");
            eprintln!(
                "(valid once, for {} minutes)",
                r["expires_in_seconds"].as_u64().unwrap_or(600) / 60
            );
            if open {
                let _ = std::process::Command::new("xdg-open").arg(url).spawn();
            }
            Ok(())
        }
        Command::Status => {
            let client = local_client(&layout)?;
            let s = client.ok("GET", "/_hub/api/status", None).await?;
            print_status(&s);
            Ok(())
        }
        Command::Cloud { command } => cloud_command(&layout, command),
        Command::Backup {
            command:
                BackupCommand::Add {
                    name,
                    url,
                    databases,
                    every,
                    login,
                },
        } => backup_add(&layout, name, url, databases, every, &login),
        Command::Restore {
            url,
            words_file,
            login,
        } => restore(&layout, url, words_file, &login).await,
    }
}

fn backup_add(
    layout: &Layout,
    name: String,
    url: String,
    databases: Vec<String>,
    every: Option<u64>,
    login: &CloudLogin,
) -> Result<()> {
    if let Some(db) = databases.iter().find(|db| hub::is_internal_db(db)) {
        bail!("{db} is the hub's own database: it is never sent to a cloud");
    }
    let mut config = layout.load_config(None)?;
    let peer = cloud::CloudPeer {
        name: name.clone(),
        url: url.clone(),
        databases: databases.clone(),
        direction: cloud::CloudDirection::Push,
        every_secs: every.unwrap_or(0),
        auth: login.auth(),
        user: login.user.clone(),
        pin_sha256: login.pin.clone(),
        encrypted: true,
    };
    peer.validate()?;
    if let Some(password) = login.password()? {
        cloud::store_secret(layout, &name, &password)?;
    }
    let kept = backup::key_path(layout, &name).exists();
    let words = if kept {
        None
    } else {
        let secret = couch_sync::replicate::backup::BackupKey::generate_secret()?;
        backup::store_key(layout, &name, &secret)?;
        Some(backup::words(&secret)?)
    };
    config.cloud.retain(|c| c.name != name);
    config.cloud.push(peer);
    layout.save_config(&config)?;
    println!(
        "backup {name} added: {} to {url}, sealed",
        databases.join(", ")
    );
    match words {
        None => println!(
            "It keeps the key it already had (its recovery words were shown when it was first added)."
        ),
        Some(words) => {
            println!(
                "\nRECOVERY WORDS: write these 24 words down and keep them away from this device.\n\
                 They are shown only now. With them and the server's URL, `device-hub restore`\n\
                 brings these databases back on a new device; without them nobody can read the\n\
                 backup, the server's operator included.\n"
            );
            for (i, chunk) in words.split(' ').collect::<Vec<_>>().chunks(6).enumerate() {
                let line: Vec<String> = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, w)| format!("{:>2}. {w:<9}", i * 6 + j + 1))
                    .collect();
                println!("  {}", line.join(" "));
            }
            println!(
                "\n{}",
                public_key_identity::qr::to_terminal(words.as_bytes())?
            );
        }
    }
    Ok(())
}

async fn restore(
    layout: &Layout,
    url: String,
    words_file: Option<PathBuf>,
    login: &CloudLogin,
) -> Result<()> {
    use couch_sync::replicate::backup::{Backup, BackupKey};
    let text = match &words_file {
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        }
        None => {
            eprintln!("The 24 recovery words (then Enter, and Ctrl-D):");
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            text
        }
    };
    let secret = backup::secret_from_words(&text)?;
    let peer = cloud::CloudPeer {
        name: "restore".into(),
        url: url.clone(),
        databases: Vec::new(),
        direction: cloud::CloudDirection::Pull,
        every_secs: 0,
        auth: login.auth(),
        user: login.user.clone(),
        pin_sha256: login.pin.clone(),
        encrypted: false,
    };
    peer.validate()?;
    let key = BackupKey::from_secret(&secret)?;
    let remote = cloud::remote_client_with(&peer, key.cloud_db(), login.password()?.as_deref())?;
    let store = couch_sync::Store::open(layout.store(), couch_sync::StoreConfig::default())
        .with_context(|| {
            format!(
                "opening the store in {} (is the hub running? stop it first)",
                layout.store().display()
            )
        })?;
    let started = std::time::Instant::now();
    let backup = Backup::new(Arc::new(key), Arc::new(remote), store.tmp_dir());
    let mut shown = 0;
    let report = backup
        .restore(&store, |r| {
            if r.docs >= shown + 1000 {
                shown = r.docs;
                eprintln!("  {} documents restored", r.docs);
            }
        })
        .await?;
    println!(
        "restored {} documents into {} ({}) in {:.1} s",
        report.docs,
        report.databases.join(", "),
        report.databases.len(),
        started.elapsed().as_secs_f64()
    );
    if !report.tampered.is_empty() {
        let shown: Vec<&str> = report
            .tampered
            .iter()
            .take(10)
            .map(String::as_str)
            .collect();
        bail!(
            "{} backup documents did not authenticate — tampered with or damaged on the \
             server — and were not imported: {}{}",
            report.tampered.len(),
            shown.join(", "),
            if report.tampered.len() > 10 {
                ", …"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn cloud_command(layout: &Layout, command: CloudCommand) -> Result<()> {
    use cloud::{CloudDirection, CloudPeer};
    let mut config = layout.load_config(None)?;
    match command {
        CloudCommand::Add {
            name,
            url,
            databases,
            push,
            pull,
            every,
            login,
        } => {
            if let Some(db) = databases.iter().find(|db| hub::is_internal_db(db)) {
                anyhow::bail!("{db} is the hub's own database: it is never replicated to a cloud");
            }
            let peer = CloudPeer {
                name: name.clone(),
                url,
                databases,
                direction: match (push, pull) {
                    (true, _) => CloudDirection::Push,
                    (_, true) => CloudDirection::Pull,
                    _ => CloudDirection::Both,
                },
                every_secs: every.unwrap_or(0),
                auth: login.auth(),
                user: login.user.clone(),
                pin_sha256: login.pin.clone(),
                encrypted: false,
            };
            peer.validate()?;
            if let Some(password) = login.password()? {
                cloud::store_secret(layout, &name, &password)?;
            }
            config.cloud.retain(|c| c.name != name);
            config.cloud.push(peer);
            layout.save_config(&config)?;
            println!("cloud peer {name} added");
        }
        CloudCommand::List => {
            for c in &config.cloud {
                let dbs = if c.databases.is_empty() {
                    "every database".to_owned()
                } else {
                    c.databases.join(", ")
                };
                let when = if c.every_secs == 0 {
                    "continuously".to_owned()
                } else {
                    format!("every {} s", c.every_secs)
                };
                println!(
                    "{}\t{}\t{}{:?} {dbs} {when}, auth {:?}{}",
                    c.name,
                    c.url,
                    if c.encrypted {
                        "encrypted backup, "
                    } else {
                        ""
                    },
                    c.direction,
                    c.auth,
                    if c.pin_sha256.is_some() {
                        ", pinned key"
                    } else {
                        ""
                    }
                );
            }
        }
        CloudCommand::Remove { name } => {
            let before = config.cloud.len();
            config.cloud.retain(|c| c.name != name);
            if config.cloud.len() == before {
                anyhow::bail!("no cloud peer named {name}");
            }
            layout.save_config(&config)?;
            for secret in [
                cloud::secret_path(layout, &name),
                backup::key_path(layout, &name),
            ] {
                if secret.exists() {
                    std::fs::remove_file(&secret)
                        .with_context(|| format!("removing {}", secret.display()))?;
                }
            }
            println!("cloud peer {name} removed");
        }
    }
    Ok(())
}

/// The device identity, loaded (or created) from the data directory.
fn device(layout: &Layout) -> Result<public_key_identity::Identity> {
    let keystore = Keystore::open(layout.keys())?;
    Ok(keystore.load_or_create("device", KeyAlgorithm::Ed25519)?.0)
}

/// A client to this device's running hub, as its owner.
fn local_client(layout: &Layout) -> Result<HubClient> {
    let config = layout.load_config(None)?;
    let me = device(layout)?;
    let ip = match config.listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        ip => ip.to_string(),
    };
    HubClient::local(&ip, config.listen.port(), &me).context("is `device-hub serve` running?")
}

async fn serve(layout: Layout, listen: Option<SocketAddr>) -> Result<()> {
    let config = layout.load_config(listen)?;
    let hub = Hub::open(layout, config)?;
    let listener = tokio::net::TcpListener::bind(hub.config.listen)
        .await
        .with_context(|| format!("listening on {}", hub.config.listen))?;
    // Revoked keys: refused in the handshake, and their open connections cut.
    let refused: tls::Refused = {
        let hub = hub.clone();
        Arc::new(move |key: &public_key_identity::KeyId| hub.is_revoked(key))
    };
    let tls = tls::server_config(&hub.device, &hub.browser, refused.clone())?;
    // One stop signal for everything: on SIGINT/SIGTERM the replication manager cancels its
    // replications and open `_changes` feeds end, so the listener's drain has only short
    // requests left to finish.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let couch = couch_sync::server::router(
        hub.store.clone(),
        couch_sync::server::ServerConfig {
            shutdown: Some(stop_rx.clone()),
            ..couch_sync::server::ServerConfig::default()
        },
        Arc::new(authz::HubAuth::new(hub.clone())),
    );
    let app = api::router(hub.clone()).fallback_service(couch);
    // Policy changes (local or replicated from my other devices) take effect at once.
    let watcher = {
        let hub = hub.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let Ok(db) = hub.store.db(hub::POLICY_DB) else {
                return;
            };
            let mut changes = db.subscribe();
            loop {
                tokio::select! {
                    r = changes.changed() => if r.is_err() { break },
                    _ = stop.wait_for(|s| *s) => break,
                }
                let _ = hub.reload_policy();
            }
        })
    };
    let manager = tokio::spawn(replication::run(hub.clone(), stop_rx.clone()));
    let url = hub
        .endpoints()
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    println!(
        "device-hub ready: {url} (https://{}, key id {})",
        hub.config.listen,
        hub.key_id()
    );
    let _ = std::io::stdout().flush();
    let stopping = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        stop_tx.send_replace(true);
    });
    let revoked = listener::Revoked {
        changed: hub.policy_changes(),
        refused,
    };
    listener::serve(listener, tls, app, stopping, revoked).await?;
    let _ = manager.await;
    let _ = watcher.await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("stopping: finishing requests in flight");
}

fn whoami(layout: &Layout) -> Result<()> {
    let config = layout.load_config(None)?;
    let keystore = Keystore::open(layout.keys())?;
    let (device, _) = keystore.load_or_create("device", KeyAlgorithm::Ed25519)?;
    let (browser, _) = keystore.load_or_create("browser", KeyAlgorithm::EcdsaP256)?;
    let card = hub::card_for(&device, &browser, &config)?;
    println!("name:    {}", card.name());
    println!("key id:  {}", device.key_id());
    for url in card.endpoints() {
        println!("address: {url}");
    }
    println!();
    print!("{}", card.to_qr_terminal()?);
    Ok(())
}

async fn app_add(
    layout: &Layout,
    name: &str,
    grants: &[String],
    cert: Option<PathBuf>,
) -> Result<()> {
    let config = layout.load_config(None)?;
    let me = device(layout)?;
    let dir = layout.app(name);
    let key_id = match cert {
        Some(path) => {
            let pem =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let der = <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::from_pem_slice(&pem).map_err(|e| anyhow::anyhow!("{}: no certificate: {e}", path.display()))?;
            public_key_identity::cert_key_id(&der)?
        }
        None => {
            let store = Keystore::open(&dir)?;
            let (app, _) = store.load_or_create("app", KeyAlgorithm::Ed25519)?;
            public_key_identity::keystore::write_atomic(
                &store.cert_path("app")?,
                app.cert_pem().as_bytes(),
                0o600,
            )?;
            app.key_id()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let hub_url = public_key_identity::HttpKeyUrl::new(
        public_key_identity::Host::parse(&match config.listen.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            ip => ip.to_string(),
        })?,
        config.listen.port(),
        me.key_id(),
    );
    public_key_identity::keystore::write_atomic(
        &dir.join("hub.cert.pem"),
        me.cert_pem().as_bytes(),
        0o600,
    )?;
    public_key_identity::keystore::write_atomic(
        &dir.join("hub.url"),
        format!("{hub_url}\n").as_bytes(),
        0o600,
    )?;
    let client = local_client(layout)?;
    // The databases it is granted exist from now on (created by the owner).
    for grant in grants {
        if let Some((db, _)) = grant.rsplit_once(':') {
            if db != "*" {
                let (status, reply) = client
                    .call("PUT", &format!("/{}", replication::couch_db_path(db)), None)
                    .await?;
                if status != 201 && status != 412 {
                    bail!("creating {db}: {status} {reply}");
                }
            }
        }
    }
    for grant in grants {
        let (db, right) = grant
            .rsplit_once(':')
            .with_context(|| format!("--grant {grant}: expected DB:RIGHT"))?;
        client
            .ok(
                "POST",
                "/_hub/api/grant",
                Some(&json!({"db": db, "member": format!("key:{key_id}"), "right": right})),
            )
            .await?;
    }
    println!("app {name}: key id {key_id}");
    println!("files:   {}", dir.display());
    println!("hub:     {hub_url}");
    for grant in grants {
        println!("granted: {grant}");
    }
    Ok(())
}

async fn pair(layout: &Layout, url: &str, kind: &str, no_wait: bool) -> Result<()> {
    let client = local_client(layout)?;
    let r = client
        .ok(
            "POST",
            "/_hub/api/pair/start",
            Some(&json!({"url": url, "kind": kind})),
        )
        .await?;
    let code = r["code"].as_str().unwrap_or_default().to_owned();
    println!("pairing code: {code}");
    println!(
        "peer: {} ({})",
        r["name"].as_str().unwrap_or("?"),
        r["peer"].as_str().unwrap_or("?")
    );
    if no_wait {
        println!("confirm on both devices with: device-hub pair --confirm {code}");
        return Ok(());
    }
    eprint!("Does the other device show {code}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !answer.trim().eq_ignore_ascii_case("y") {
        bail!("not confirmed: nothing was trusted");
    }
    confirm_pairing(layout, &code).await
}

async fn confirm_pairing(layout: &Layout, code: &str) -> Result<()> {
    let client = local_client(layout)?;
    let r = client
        .ok(
            "POST",
            "/_hub/api/pair/confirm",
            Some(&json!({"code": code})),
        )
        .await?;
    println!(
        "confirmed: {} ({}) is now {}",
        r["name"].as_str().unwrap_or("?"),
        r["peer"].as_str().unwrap_or("?"),
        if r["kind"] == "friend" {
            "a friend"
        } else {
            "one of your devices"
        }
    );
    Ok(())
}

/// `device-hub revoke KEYID`: the key id is checked here (so that a database name given alone
/// says what the two forms are), then the hub revokes it.
async fn revoke_key(layout: &Layout, key: &str) -> Result<()> {
    let bare = key.strip_prefix("key:").unwrap_or(key);
    if let Err(e) = bare.parse::<public_key_identity::KeyId>() {
        bail!(
            "{key:?} is not a key id ({e}); `revoke KEYID` revokes a device's key, \
             `revoke DB MEMBER RIGHT` takes a right back"
        );
    }
    let client = local_client(layout)?;
    let r = client
        .ok(
            "POST",
            "/_hub/api/revoke-key",
            Some(&json!({ "key": bare })),
        )
        .await?;
    if r["changed"] == Value::Bool(false) {
        println!("{bare} was already revoked");
    } else {
        println!("{bare} revoked: refused by every one of your devices once they sync");
    }
    Ok(())
}

async fn replicate(layout: &Layout, peer: &str, db: Option<String>) -> Result<()> {
    let client = local_client(layout)?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut ok = true;
    let mut errors = Vec::new();
    let status = client
        .lines(
            "POST",
            "/_hub/api/replicate",
            Some(&json!({"peer": peer, "db": db})),
            |line| {
                if line.get("done").is_some() {
                    ok = line["ok"].as_bool().unwrap_or(false);
                    return;
                }
                if let Some(e) = line.get("error").and_then(Value::as_str) {
                    errors.push(format!(
                        "{} {}: {e}",
                        line["db"].as_str().unwrap_or("?"),
                        line["direction"].as_str().unwrap_or("?")
                    ));
                }
                bar.set_message(format!(
                    "{} {}: {} written, {} pending",
                    line["db"].as_str().unwrap_or("?"),
                    line["direction"].as_str().unwrap_or("?"),
                    line["docs_written"].as_u64().unwrap_or(0),
                    line["pending"].as_u64().unwrap_or(0),
                ));
                bar.tick();
            },
        )
        .await?;
    bar.finish_and_clear();
    if status != 200 {
        bail!("the hub refused: HTTP {status}");
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if !ok {
        bail!("replication failed");
    }
    println!("in sync with {peer}");
    Ok(())
}

fn print_status(s: &Value) {
    let id = &s["identity"];
    println!(
        "{} — {}",
        id["name"].as_str().unwrap_or(""),
        id["key_id"].as_str().unwrap_or("")
    );
    for p in s["peers"].as_array().into_iter().flatten() {
        println!(
            "peer   {:<8} {:<20} {}",
            p["kind"].as_str().unwrap_or(""),
            p["name"].as_str().unwrap_or(""),
            p["key_id"].as_str().unwrap_or("")
        );
    }
    for r in s["replication"].as_array().into_iter().flatten() {
        println!(
            "sync   {:<20} {:<5} {:<9} written {:<6} pending {:<6} last sync {:<14} {}",
            r["db"].as_str().unwrap_or(""),
            r["direction"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["docs_written"],
            r["pending"],
            r["last_sync"]
                .as_u64()
                .map(|ms| format!("{}s ago", hub::now_millis().saturating_sub(ms) / 1000))
                .unwrap_or_else(|| "never".into()),
            r["last_error"].as_str().unwrap_or("")
        );
    }
    for r in s["revoked"].as_array().into_iter().flatten() {
        println!(
            "revoked {:<20} {} by {} {}s ago",
            r["name"].as_str().unwrap_or(""),
            r["key_id"].as_str().unwrap_or(""),
            r["by_name"]
                .as_str()
                .or_else(|| r["by"].as_str())
                .unwrap_or(""),
            hub::now_millis().saturating_sub(r["at"].as_u64().unwrap_or(0)) / 1000
        );
    }
    if let Some(r) = s["identity"]["revoked"].as_object() {
        println!(
            "THIS DEVICE WAS REVOKED by {}: your other devices refuse it",
            r.get("by_name")
                .and_then(Value::as_str)
                .or_else(|| r.get("by").and_then(Value::as_str))
                .unwrap_or("")
        );
    }
    for d in s["databases"].as_array().into_iter().flatten() {
        println!(
            "db     {:<20} {:>8} docs {:>12} bytes",
            d["name"].as_str().unwrap_or(""),
            d["doc_count"],
            d["active_size"]
        );
    }
    for p in s["pairings"].as_array().into_iter().flatten() {
        println!(
            "pairing {} {} code {}",
            p["name"].as_str().unwrap_or(""),
            p["kind"].as_str().unwrap_or(""),
            p["code"].as_str().unwrap_or("(in progress)")
        );
    }
}

/// The API request of `grant`/`revoke`: `DB/DDOC/VIEW` names a view (its last two segments;
/// database names may themselves contain `/`), anything else a database or `*`.
fn acl_request(target: &str, member: &str, right: &str) -> Value {
    let parts: Vec<&str> = target.rsplitn(3, '/').collect();
    match parts.as_slice() {
        [view, ddoc, db] => json!({
            "db": db, "view": format!("{ddoc}/{view}"), "member": member, "right": right
        }),
        _ => json!({"db": target, "member": member, "right": right}),
    }
}
