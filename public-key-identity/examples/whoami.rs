//! Creates (first run) or loads (later runs) an identity in a directory, then prints its key id,
//! an httpkey URL for it, and its signed identity card as a QR code for the terminal.
//!
//! ```text
//! cargo run -p public-key-identity --example whoami -- [--dir DIR] [--name NAME] [--host HOST] [--port PORT] [--p256]
//! ```
//!
//! The private key is written `DIR/device.key.pem` with mode 0600; run it twice and the key id
//! stays the same. Scan the code with any QR reader: it holds the card's JSON.

use clap::Parser;
use public_key_identity::httpkey::Host;
use public_key_identity::{HttpKeyUrl, IdentityCard, KeyAlgorithm, Keystore};

#[derive(Parser)]
#[command(about = "Create or load an identity and show who it is")]
struct Args {
    /// Keystore directory (created 0700 if missing).
    #[arg(long, default_value = "whoami-identity")]
    dir: std::path::PathBuf,
    /// Display name for the identity card.
    #[arg(long, default_value = "whoami example")]
    name: String,
    /// Host for the httpkey URL (IP address, DNS name or .onion).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port for the httpkey URL.
    #[arg(long, default_value_t = 5985)]
    port: u16,
    /// Create an ECDSA P-256 key instead of Ed25519 (only affects a new identity).
    #[arg(long)]
    p256: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let algorithm = if args.p256 {
        KeyAlgorithm::EcdsaP256
    } else {
        KeyAlgorithm::Ed25519
    };
    let store = Keystore::open(&args.dir)?;
    let (identity, created) = store.load_or_create("device", algorithm)?;
    let host = Host::parse(&args.host)?;
    let url = HttpKeyUrl::new(host, args.port, identity.key_id());
    let card = IdentityCard::sign(&identity, &args.name, vec![url.clone()], vec![], 0)?;

    println!(
        "{} identity in {}",
        if created { "created" } else { "loaded" },
        store.dir().display()
    );
    println!("algorithm: {}", identity.key().algorithm());
    println!("key id:    {}", identity.key_id());
    println!("httpkey:   {url}");
    println!("card:      {}", card.to_json());
    println!();
    print!("{}", card.to_qr_terminal()?);
    Ok(())
}
