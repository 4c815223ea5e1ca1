//! Identities on disk.
//!
//! A keystore is a directory (created mode 0700) holding, per identity `NAME`:
//!
//! * `NAME.key.pem` — the PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`), mode **0600**;
//! * `NAME.cert.pem` — its self-signed certificate (`-----BEGIN CERTIFICATE-----`), mode 0644.
//!
//! Every file is written atomically: the bytes go to a fresh temporary file in the same directory
//! (created with its final permissions, so a key is never readable by others, not even briefly),
//! which is flushed to disk, renamed over the final name, and the directory is flushed too. After
//! a crash a file is either the old one, the new one, or absent — never half-written.
//!
//! On Unix, loading a private key that group or others can access fails with
//! [`Error::InsecureKeyFile`], as OpenSSH does: fix the mode rather than trust a key others may
//! have read.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::identity::{Identity, pem_decode_cert};
use crate::key::{KeyAlgorithm, KeyPair};

/// A directory of named identities.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    /// Opens the keystore in `dir`, creating the directory (mode 0700) if needed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Keystore> {
        let dir = dir.into();
        if !dir.exists() {
            create_private_dir(&dir)?;
        }
        Ok(Keystore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of identity `name`'s private key file.
    pub fn key_path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.key.pem")))
    }

    /// The path of identity `name`'s certificate file.
    pub fn cert_path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.cert.pem")))
    }

    /// Whether identity `name` has a key on disk.
    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.key_path(name)?.exists())
    }

    /// Writes identity `name` (key 0600, certificate 0644), replacing any earlier one atomically.
    pub fn save(&self, name: &str, identity: &Identity) -> Result<()> {
        let key_path = self.key_path(name)?;
        let cert_path = self.cert_path(name)?;
        write_atomic(&key_path, identity.key().to_pkcs8_pem().as_bytes(), 0o600)?;
        write_atomic(&cert_path, identity.cert_pem().as_bytes(), 0o644)?;
        Ok(())
    }

    /// Loads identity `name`.
    ///
    /// Fails if the key file is missing, unreadable, accessible by others (Unix), or not a PKCS#8
    /// Ed25519/P-256 key, or if the certificate does not belong to the key. A missing
    /// certificate is issued afresh from the key and saved (the identity is the key).
    pub fn load(&self, name: &str) -> Result<Identity> {
        let key_path = self.key_path(name)?;
        check_private_mode(&key_path)?;
        let key_pem =
            fs::read_to_string(&key_path).map_err(|e| Error::io("reading", &key_path, e))?;
        let key = KeyPair::from_pkcs8_pem(&key_pem).map_err(|e| Error::BadPemFile {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let cert_path = self.cert_path(name)?;
        match fs::read(&cert_path) {
            Ok(bytes) => {
                let cert = pem_decode_cert(&bytes).map_err(|reason| Error::BadPemFile {
                    path: cert_path.clone(),
                    reason,
                })?;
                Identity::from_parts(key, cert).map_err(|e| Error::BadPemFile {
                    path: cert_path,
                    reason: e.to_string(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity::from_key(key)?;
                write_atomic(&cert_path, identity.cert_pem().as_bytes(), 0o644)?;
                Ok(identity)
            }
            Err(e) => Err(Error::io("reading", &cert_path, e)),
        }
    }

    /// Loads identity `name`, or generates and saves one with `algorithm` if there is none.
    ///
    /// Returns the identity and whether it was created now.
    pub fn load_or_create(&self, name: &str, algorithm: KeyAlgorithm) -> Result<(Identity, bool)> {
        if self.contains(name)? {
            return Ok((self.load(name)?, false));
        }
        let identity = Identity::generate(algorithm)?;
        self.save(name, &identity)?;
        Ok((identity, true))
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.chars().take(80).collect()))
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating directory", dir, e))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))
}

#[cfg(unix)]
fn check_private_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureKeyFile {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path) -> Result<()> {
    Ok(())
}

/// Writes `bytes` to `path` atomically with permission bits `mode` (Unix); see the module docs.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = crate::crypto::random_32()
        .map_err(|_| Error::Key("the system random source failed".into()))?;
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}",
        data_encoding::HEXLOWER.encode(&nonce[..8])
    ));
    let result = (|| {
        let mut file = open_new(&tmp, mode).map_err(|e| Error::io("creating", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        file.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn create_then_load_gives_same_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Keystore::open(tmp.path().join("keys")).unwrap();
        let (first, created) = store
            .load_or_create("device", KeyAlgorithm::Ed25519)
            .unwrap();
        assert!(created);
        let (again, created) = store
            .load_or_create("device", KeyAlgorithm::EcdsaP256)
            .unwrap();
        assert!(!created);
        assert_eq!(again.key_id(), first.key_id());
        assert_eq!(again.cert_der(), first.cert_der());
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&store.key_path("device").unwrap()), 0o600);
            assert_eq!(mode_of(&store.cert_path("device").unwrap()), 0o644);
            assert_eq!(mode_of(store.dir()), 0o700);
        }
        let leftovers: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_key_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let store = Keystore::open(tmp.path()).unwrap();
        store.load_or_create("d", KeyAlgorithm::Ed25519).unwrap();
        let key_path = store.key_path("d").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&key_path, fs::Permissions::from_mode(mode)).unwrap();
            let err = store.load("d").unwrap_err();
            assert!(
                matches!(err, Error::InsecureKeyFile { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"));
        }
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(store.load("d").is_ok(), "owner-only read is fine");
    }

    #[test]
    fn missing_cert_is_reissued_and_mismatched_cert_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Keystore::open(tmp.path()).unwrap();
        let (a, _) = store.load_or_create("a", KeyAlgorithm::Ed25519).unwrap();
        let (b, _) = store.load_or_create("b", KeyAlgorithm::Ed25519).unwrap();
        fs::remove_file(store.cert_path("a").unwrap()).unwrap();
        assert_eq!(store.load("a").unwrap().key_id(), a.key_id());
        assert!(store.cert_path("a").unwrap().exists());

        fs::copy(store.cert_path("b").unwrap(), store.cert_path("a").unwrap()).unwrap();
        let err = store.load("a").unwrap_err();
        assert!(matches!(err, Error::BadPemFile { .. }), "{err}");
        assert!(err.to_string().contains(&b.key_id().to_string()));
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Keystore::open(tmp.path()).unwrap();
        write_atomic(&store.key_path("x").unwrap(), b"not a key", 0o600).unwrap();
        let err = store.load("x").unwrap_err();
        assert!(matches!(err, Error::BadPemFile { .. }), "{err}");
        assert!(matches!(
            store.load("absent").unwrap_err(),
            Error::Io { .. }
        ));
    }

    #[test]
    fn names_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Keystore::open(tmp.path()).unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "sp ace", &"x".repeat(65)] {
            assert!(matches!(store.key_path(bad), Err(Error::InvalidName(_))));
        }
        assert!(store.key_path("app-1.v2_x").is_ok());
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        write_atomic(&path, b"first version, longer", 0o600).unwrap();
        write_atomic(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
    }
}
