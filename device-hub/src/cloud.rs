//! The cloud as an optional peer: a stock CouchDB (or anything that speaks its replication
//! protocol) the hub replicates chosen databases with, over HTTPS checked by the web's
//! certificate authorities or pinned to the server's key.
//!
//! A cloud peer is a `[[cloud]]` entry of `hub.toml` (written by `device-hub cloud add`):
//!
//! ```toml
//! [[cloud]]
//! name = "backup"
//! url = "https://couch.example.com:6984/"   # the server's root (a path prefix is kept)
//! databases = ["notes"]                      # empty: every database the hub replicates
//! direction = "both"                         # push, pull or both
//! every_secs = 0                             # 0: continuously; N: a one-off run every N s
//! auth = "cookie"                            # none, basic or cookie (CouchDB's _session)
//! user = "alice"
//! pin_sha256 = "…"                           # optional: the server key's pin (below)
//! ```
//!
//! The password is not in `hub.toml` but in `DATA/cloud/NAME.secret` (mode 0600). With
//! `pin_sha256` the server's certificate is accepted when the SHA-256 of its
//! SubjectPublicKeyInfo, in base64, is that value (what `openssl x509 -pubkey -noout | openssl
//! pkey -pubin -outform der | openssl dgst -sha256 -binary | base64` prints for its certificate;
//! a `sha256/` prefix is accepted) — whatever signed it, whatever its names. Without it, the
//! certificate must chain to a web PKI root (Mozilla's list, built in) and name the host.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use couch_sync::replicate::{Connecting, Connector, Endpoint, Remote, TokioClock};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::config::Layout;
use crate::replication::couch_db_path;

/// Which way a cloud peer's databases flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudDirection {
    /// From the hub to the cloud.
    Push,
    /// From the cloud to the hub.
    Pull,
    /// Both ways.
    #[default]
    Both,
}

/// How the hub authenticates to the cloud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudAuth {
    /// No credentials.
    #[default]
    None,
    /// HTTP basic authentication on every request.
    Basic,
    /// CouchDB's cookie authentication: one login through `_session`, then the cookie.
    Cookie,
}

/// One `[[cloud]]` entry of `hub.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudPeer {
    /// A short name (letters, digits, `-`, `_`): the secret file's name, and shown on the
    /// status page.
    pub name: String,
    /// The server's root URL, `https://host[:port]/[prefix/]`.
    pub url: String,
    /// Databases to replicate; empty: every database the hub replicates with its own devices.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Push, pull or both.
    #[serde(default)]
    pub direction: CloudDirection,
    /// 0: continuously; otherwise a one-off run this often (seconds).
    #[serde(default)]
    pub every_secs: u64,
    /// How to authenticate.
    #[serde(default)]
    pub auth: CloudAuth,
    /// The user name for `basic` and `cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The server key's pin (base64 SHA-256 of its SubjectPublicKeyInfo); none: the web PKI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_sha256: Option<String>,
    /// An end-to-end encrypted backup (`device-hub backup add`, see [`crate::backup`]): the
    /// databases go to the server only as sealed documents, under the key in
    /// `DATA/cloud/NAME.backup-key`; always push.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

impl CloudPeer {
    /// Checks what `hub.toml` or the command line gave.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!(
                "cloud name {:?}: use 1 to 64 letters, digits, '-' or '_'",
                self.name
            );
        }
        let url = url_root(&self.url)?;
        if url.scheme() != "https" {
            bail!(
                "cloud {}: {} is not https (the hub talks to the cloud over TLS only)",
                self.name,
                self.url
            );
        }
        if self.auth != CloudAuth::None && self.user.as_deref().unwrap_or("").is_empty() {
            bail!(
                "cloud {}: {:?} authentication needs a user",
                self.name,
                self.auth
            );
        }
        if let Some(pin) = &self.pin_sha256 {
            parse_pin(pin).with_context(|| format!("cloud {}: pin_sha256", self.name))?;
        }
        if self.encrypted {
            if self.direction != CloudDirection::Push {
                bail!("backup {}: an encrypted backup only pushes", self.name);
            }
            if self.databases.is_empty() {
                bail!("backup {}: name the databases to back up", self.name);
            }
        }
        Ok(())
    }
}

/// `url` as a server root: parsed, with a trailing slash, without credentials or query.
fn url_root(url: &str) -> Result<url::Url> {
    let mut parsed = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if parsed.host_str().is_none() {
        bail!("{url:?} names no host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!("{url:?}: give credentials with --user and --password-file, not in the URL");
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    if !parsed.path().ends_with('/') {
        let path = format!("{}/", parsed.path());
        parsed.set_path(&path);
    }
    Ok(parsed)
}

/// A pin's 32 bytes.
fn parse_pin(pin: &str) -> Result<[u8; 32]> {
    let text = pin.trim().trim_start_matches("sha256/");
    let bytes = data_encoding::BASE64
        .decode(text.as_bytes())
        .context("not base64")?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("{} bytes, not the 32 of a SHA-256", b.len()))
}

fn spki_digest(cert_der: &[u8]) -> Result<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow::anyhow!("the server's certificate does not parse: {e}"))?;
    Ok(sha2::Sha256::digest(cert.public_key().raw).into())
}

/// Where a cloud peer's password is kept.
pub fn secret_path(layout: &Layout, name: &str) -> PathBuf {
    layout.root.join("cloud").join(format!("{name}.secret"))
}

/// Stores a cloud peer's password (0600; the directory 0700).
pub fn store_secret(layout: &Layout, name: &str, secret: &str) -> Result<()> {
    let path = secret_path(layout, name);
    if let Some(dir) = path.parent() {
        crate::config::create_private_dir(dir)?;
    }
    public_key_identity::keystore::write_atomic(&path, secret.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

fn load_secret(layout: &Layout, name: &str) -> Result<String> {
    let path = secret_path(layout, name);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the password of cloud {name} ({}); run `device-hub cloud add` again",
            path.display()
        )
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// A remote endpoint for `db` on cloud peer `peer`.
pub fn remote(layout: &Layout, peer: &CloudPeer, db: &str) -> Result<Endpoint> {
    Ok(Endpoint::Remote(Arc::new(remote_client(layout, peer, db)?)))
}

/// A client of database `db` on cloud peer `peer`: its TLS and its credentials (the password
/// from `DATA/cloud/NAME.secret`).
pub fn remote_client(layout: &Layout, peer: &CloudPeer, db: &str) -> Result<Remote> {
    let password = match peer.auth {
        CloudAuth::None => None,
        CloudAuth::Basic | CloudAuth::Cookie => Some(load_secret(layout, &peer.name)?),
    };
    remote_client_with(peer, db, password.as_deref())
}

/// [`remote_client`] with the password given.
pub fn remote_client_with(peer: &CloudPeer, db: &str, password: Option<&str>) -> Result<Remote> {
    peer.validate()?;
    let root = url_root(&peer.url)?;
    let url = format!("{root}{}", couch_db_path(db));
    let connector = Arc::new(CloudTls::new(peer.pin_sha256.as_deref())?);
    let remote = Remote::new(&url, connector, Arc::new(TokioClock))?;
    let user = peer.user.clone().unwrap_or_default();
    let password = password.unwrap_or_default();
    Ok(match peer.auth {
        CloudAuth::None => remote,
        CloudAuth::Basic => remote.with_basic_auth(&user, password),
        CloudAuth::Cookie => remote.with_session(&user, password),
    })
}

/// TLS to a cloud server: the web PKI, or a pinned key.
pub struct CloudTls {
    config: Arc<rustls::ClientConfig>,
}

impl CloudTls {
    /// Web PKI roots when `pin` is `None`, else only the key with that pin.
    pub fn new(pin: Option<&str>) -> Result<CloudTls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut config = match pin {
            None => {
                let roots = rustls::RootCertStore::from_iter(
                    webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
                );
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Some(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedKey {
                    pin: parse_pin(pin)?,
                    provider,
                }))
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(CloudTls {
            config: Arc::new(config),
        })
    }
}

impl Connector for CloudTls {
    fn connect(&self, scheme: &str, host: &str, port: u16) -> Connecting {
        crate::tls::dial_tls(
            self.config.clone(),
            scheme,
            host,
            port,
            "the hub talks to the cloud over https only",
            |h| {
                ServerName::try_from(h.to_owned()).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{h}: {e}"))
                })
            },
        )
    }
}

/// Accepts the one server key whose pin it holds (signatures checked as usual).
#[derive(Debug)]
struct PinnedKey {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let digest =
            spki_digest(end_entity).map_err(|e| rustls::Error::General(format!("{e:#}")))?;
        if digest != self.pin {
            return Err(rustls::Error::General(format!(
                "the server's key {} is not the pinned one",
                data_encoding::BASE64.encode(&digest)
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> CloudPeer {
        CloudPeer {
            name: "backup".into(),
            url: "https://couch.example.com:6984".into(),
            databases: vec![],
            direction: CloudDirection::Both,
            every_secs: 0,
            auth: CloudAuth::Cookie,
            user: Some("alice".into()),
            pin_sha256: None,
            encrypted: false,
        }
    }

    #[test]
    fn entries_are_checked() {
        peer().validate().unwrap();
        let bad = |f: fn(&mut CloudPeer), says: &str| {
            let mut p = peer();
            f(&mut p);
            let err = format!("{:#}", p.validate().unwrap_err());
            assert!(err.contains(says), "{err}");
        };
        bad(|p| p.name = "a b".into(), "letters, digits");
        bad(|p| p.url = "http://couch.example.com/".into(), "not https");
        bad(
            |p| p.url = "https://u:p@couch.example.com/".into(),
            "--password-file",
        );
        bad(|p| p.user = None, "needs a user");
        bad(|p| p.pin_sha256 = Some("abc".into()), "pin_sha256");
        bad(
            |p| p.pin_sha256 = Some(data_encoding::BASE64.encode(&[1u8; 20])),
            "20 bytes",
        );
        let mut p = peer();
        p.pin_sha256 = Some(format!(
            "sha256/{}",
            data_encoding::BASE64.encode(&[7u8; 32])
        ));
        p.validate().unwrap();
    }

    #[test]
    fn a_root_url_ends_with_a_slash_and_keeps_its_prefix() {
        assert_eq!(
            url_root("https://h:6984").unwrap().as_str(),
            "https://h:6984/"
        );
        assert_eq!(
            url_root("https://h/couch?x=1").unwrap().as_str(),
            "https://h/couch/"
        );
    }

    #[test]
    fn a_toml_entry_round_trips_with_defaults() {
        let text = "name = \"c\"\nurl = \"https://h/\"\n";
        let p: CloudPeer = toml::from_str(text).unwrap();
        assert_eq!(p.direction, CloudDirection::Both);
        assert_eq!(p.auth, CloudAuth::None);
        assert_eq!(p.every_secs, 0);
        let again: CloudPeer = toml::from_str(&toml::to_string(&p).unwrap()).unwrap();
        assert_eq!(again, p);
        assert!(toml::from_str::<CloudPeer>("name = \"c\"\nurl = \"https://h/\"\nx = 1").is_err());
    }
}
