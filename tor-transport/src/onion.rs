//! One key named twice: the onion address of an Ed25519 identity, and the checks that an
//! httpkey URL's onion host and key id belong to one key.
//!
//! A v3 onion address is the base32 of `key ‖ checksum ‖ 0x03` (rend-spec §6); the key id is
//! the SHA-256 of the key's SubjectPublicKeyInfo. Neither can be computed from the other, so a
//! URL could name two different keys: [`check_binding`] refuses that once the server's
//! certificate is known, and [`httpkey_url`] only ever makes consistent URLs.

use public_key_identity::{Host, HttpKeyUrl, KeyAlgorithm, KeyId, KeyPair};

use crate::error::{Error, Result};

/// The onion host (`<56 characters>.onion`) whose service key is `identity`'s Ed25519 key.
pub fn onion_host(identity: &KeyPair) -> Result<Host> {
    let key = ed25519_public(identity)?;
    Ok(Host::onion_from_ed25519(&key))
}

/// `httpkey://<onion>:PORT/<key id>/`: the one URL that names `identity` both ways.
pub fn httpkey_url(identity: &KeyPair, port: u16) -> Result<HttpKeyUrl> {
    Ok(HttpKeyUrl::new(
        onion_host(identity)?,
        port,
        identity.key_id(),
    ))
}

/// The Ed25519 public key an onion host names (`xxx.onion`, v3; checksum and version checked).
pub fn onion_key(host: &str) -> Result<[u8; 32]> {
    let parsed = Host::parse(host).map_err(|e| Error::WrongAddress(e.to_string()))?;
    let Host::Onion(name) = parsed else {
        return Err(Error::WrongAddress(format!("{host} is not a .onion host")));
    };
    let label = name.strip_suffix(".onion").unwrap_or(&name);
    let upper = label.to_ascii_uppercase();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(upper.as_bytes())
        .map_err(|e| Error::WrongAddress(format!("{host}: {e}")))?;
    let key: [u8; 32] = bytes
        .get(..32)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::WrongAddress(format!("{host}: too short")))?;
    // Host::parse checked the checksum and version; a round trip says the same.
    if Host::onion_from_ed25519(&key) != Host::Onion(name.clone()) {
        return Err(Error::WrongAddress(format!(
            "{host}: not a v3 onion address"
        )));
    }
    Ok(key)
}

/// Checks that a server whose certificate carries `spki_der` is the key both halves of `url`
/// name: its key id is `url`'s (the pinned TLS checks that too) and, when the host is an onion,
/// its Ed25519 key is the onion's.
pub fn check_binding(url: &HttpKeyUrl, spki_der: &[u8]) -> Result<()> {
    let key_id = KeyId::from_spki_der(spki_der);
    if key_id != url.key_id() {
        return Err(Error::KeyMismatch {
            onion: url.host().to_string(),
            key_id: url.key_id().to_string(),
        });
    }
    if let Host::Onion(name) = url.host() {
        let ed = public_key_identity::ed25519_public_key_from_spki(spki_der);
        if ed.map(|k| Host::onion_from_ed25519(&k)) != Some(Host::Onion(name.clone())) {
            return Err(Error::KeyMismatch {
                onion: name.clone(),
                key_id: key_id.to_string(),
            });
        }
    }
    Ok(())
}

pub(crate) fn ed25519_public(identity: &KeyPair) -> Result<[u8; 32]> {
    if identity.algorithm() != KeyAlgorithm::Ed25519 {
        return Err(Error::Key(format!(
            "an onion service identity must be an Ed25519 key, not {}",
            identity.algorithm()
        )));
    }
    identity
        .ed25519_public_key()
        .ok_or_else(|| Error::Key("the Ed25519 public key could not be read".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_two_names() {
        let key = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let url = httpkey_url(&key, 443).unwrap();
        let Host::Onion(name) = url.host() else {
            panic!("not an onion: {url}")
        };
        assert_eq!(name.len(), 56 + ".onion".len());
        assert_eq!(onion_key(name).unwrap(), key.ed25519_public_key().unwrap());
        // The URL round-trips through its text form.
        let again: HttpKeyUrl = url.to_string().parse().unwrap();
        assert_eq!(again, url);
        check_binding(&url, key.spki_der()).unwrap();

        // Another key's certificate: refused, whichever half it matches.
        let other = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        assert!(matches!(
            check_binding(&url, other.spki_der()),
            Err(Error::KeyMismatch { .. })
        ));
        let mixed = HttpKeyUrl::new(url.host().clone(), 443, other.key_id());
        assert!(matches!(
            check_binding(&mixed, other.spki_der()),
            Err(Error::KeyMismatch { .. })
        ));
        // A non-onion URL checks the key id only.
        let ip = HttpKeyUrl::new(Host::parse("127.0.0.1").unwrap(), 1, key.key_id());
        check_binding(&ip, key.spki_der()).unwrap();
    }

    #[test]
    fn p256_keys_have_no_onion() {
        let key = KeyPair::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(matches!(onion_host(&key), Err(Error::Key(_))));
    }

    #[test]
    fn onion_hosts_are_checked() {
        // The Tor Project's own address (rend-spec's example checksum rules).
        let tp = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
        assert_eq!(onion_key(tp).unwrap().len(), 32);
        for bad in [
            "127.0.0.1",
            "example.com",
            "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wia.onion",
            "abc.onion",
            "",
        ] {
            assert!(onion_key(bad).is_err(), "{bad}");
        }
    }
}
