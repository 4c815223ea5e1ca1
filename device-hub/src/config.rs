//! The data directory and `hub.toml`.
//!
//! ```text
//! DATA/                 mode 0700
//!   hub.toml            settings (below); written with defaults on first run
//!   keys/               the device's keys: device.key.pem (Ed25519, 0600), browser.key.pem
//!                       (P-256 for web browsers, 0600), and their certificates
//!   apps/NAME/          keys made by `device-hub app add NAME` (0600) with the hub's cert and URL
//!   store/              the couch-sync databases
//! ```
//!
//! `hub.toml`:
//!
//! ```toml
//! name = "my laptop"                 # shown to peers on the identity card
//! listen = "127.0.0.1:5985"          # HTTPS, mutual TLS
//! advertise = ["127.0.0.1:5985"]     # host:port peers should dial (in the identity card)
//! local_only = ["scratch"]           # never replicated to my other devices
//!
//! [quotas]                           # optional per-database limits, in bytes
//! photos = 1073741824
//!
//! [[cloud]]                          # optional cloud peers (see the `cloud` module)
//! name = "backup"
//! url = "https://couch.example.com:6984/"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The hub's default HTTPS port (CouchDB's is 5984; the hub sits next to it).
pub const DEFAULT_PORT: u16 = 5985;

/// Settings from `hub.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Display name on the identity card.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where to listen.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `host:port` entries peers should use to reach this hub (the identity card's endpoints).
    /// Empty: the listen address.
    #[serde(default)]
    pub advertise: Vec<String>,
    /// Databases never replicated to the person's other devices.
    #[serde(default)]
    pub local_only: Vec<String>,
    /// Per-database size limits in bytes.
    #[serde(default)]
    pub quotas: BTreeMap<String, u64>,
    /// Cloud peers (stock CouchDB servers) to replicate with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cloud: Vec<crate::cloud::CloudPeer>,
}

fn default_name() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "device hub".to_owned())
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))
}

impl Default for Config {
    fn default() -> Config {
        Config {
            name: default_name(),
            listen: default_listen(),
            advertise: Vec::new(),
            local_only: Vec::new(),
            quotas: BTreeMap::new(),
            cloud: Vec::new(),
        }
    }
}

/// The default data directory: `$XDG_DATA_HOME/thali-hub`, else `~/.local/share/thali-hub`
/// (the XDG base directory rule), else `./thali-hub`.
pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("thali-hub")
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data directory.
    pub root: PathBuf,
}

impl Layout {
    /// The layout of `root`, creating the directory (0700) if needed.
    pub fn create(root: &Path) -> Result<Layout> {
        create_private_dir(root)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(root)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("making {} private (0700)", root.display()))?;
            }
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    /// `hub.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("hub.toml")
    }

    /// The device keystore.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// The couch-sync store.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Where `app add NAME` writes an app's files.
    pub fn app(&self, name: &str) -> PathBuf {
        self.root.join("apps").join(name)
    }

    /// Loads `hub.toml`, writing the defaults (with `listen` if given) on first run.
    pub fn load_config(&self, listen: Option<SocketAddr>) -> Result<Config> {
        let path = self.config_file();
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<Config>(&text)
                .with_context(|| format!("{} is not a valid hub configuration", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut config = Config::default();
                if let Some(addr) = listen {
                    config.listen = addr;
                }
                let text = toml::to_string_pretty(&config)?;
                public_key_identity::keystore::write_atomic(&path, text.as_bytes(), 0o600)?;
                config
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Some(addr) = listen {
            config.listen = addr;
        }
        for peer in &config.cloud {
            peer.validate()
                .with_context(|| format!("{}: a [[cloud]] entry", path.display()))?;
        }
        Ok(config)
    }

    /// The cloud peers `hub.toml` lists now (a running hub reads them again every pass).
    pub fn cloud_peers(&self) -> Result<Vec<crate::cloud::CloudPeer>> {
        Ok(self.load_config(None)?.cloud)
    }

    /// Rewrites `hub.toml` with `config` (0600, atomically; comments are not kept).
    pub fn save_config(&self, config: &Config) -> Result<()> {
        let text = toml::to_string_pretty(config)?;
        public_key_identity::keystore::write_atomic(&self.config_file(), text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", self.config_file().display()))
    }
}

/// Creates `dir` (and its parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_run_writes_defaults_and_later_runs_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(&dir.path().join("hub")).unwrap();
        let listen: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let first = layout.load_config(Some(listen)).unwrap();
        assert_eq!(first.listen, listen);
        let again = layout.load_config(None).unwrap();
        assert_eq!(again.listen, listen, "saved on first run");
        std::fs::write(layout.config_file(), "name = 5").unwrap();
        let err = layout.load_config(None).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a valid hub configuration"),
            "{err:#}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&layout.root)
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o700);
        }
    }
}
