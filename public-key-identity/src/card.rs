//! Identity cards: a self-description signed by its own key, safe to pass by email, chat or QR.
//!
//! # Format (version 1)
//!
//! A card is one JSON object with exactly these members (no others):
//!
//! | member | type | meaning |
//! |---|---|---|
//! | `algorithm` | string | `"ed25519"` or `"ecdsa-p256"`: the key type |
//! | `aliases` | array of strings | other key ids that speak for this identity (e.g. the P-256 key a browser-facing listener presents); may be empty |
//! | `endpoints` | array of strings | where to reach the holder, as `httpkey://` URLs (at most 16) |
//! | `key_id` | string | the [`KeyId`] of `public_key` |
//! | `name` | string | display name: 1–128 characters, no control characters |
//! | `public_key` | string | the SubjectPublicKeyInfo DER, unpadded base64url |
//! | `serial` | integer | 0 ≤ serial < 2⁵³; a holder bumps it when the card changes, so a newer card replaces an older one |
//! | `sig` | string | the signature, unpadded base64url |
//! | `v` | integer | `1` |
//!
//! The signature is made by the card's own key over the bytes
//! `"thali-identity-card-v1" ‖ 0x00 ‖ J`, where `J` is the card without `sig` serialised as
//! RFC 8785 (JSON Canonicalization Scheme): members in the order above (which is sorted), no
//! whitespace, strings with the minimal JSON escapes. Ed25519 signs as RFC 8032; ECDSA P-256 signs
//! SHA-256 and writes the signature DER-encoded. A verifier checks the structure, that `key_id`
//! is the hash of `public_key`, that the key type matches `algorithm`, and the signature, so a
//! card altered anywhere in transit is refused. Parsing refuses input over [`MAX_CARD_LEN`] bytes.

use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::httpkey::HttpKeyUrl;
use crate::identity::Identity;
use crate::key::{KeyAlgorithm, KeyId};

/// The largest card [`IdentityCard::from_json`] accepts, in bytes.
pub const MAX_CARD_LEN: usize = 16 * 1024;
const MAX_ENDPOINTS: usize = 16;
const MAX_ALIASES: usize = 8;
const MAX_NAME_CHARS: usize = 128;
const MAX_SERIAL: u64 = (1 << 53) - 1;
const SIGNING_TAG: &[u8] = b"thali-identity-card-v1\0";

/// Why a card was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// The card is larger than [`MAX_CARD_LEN`].
    #[error("the card is {0} bytes; at most 16384 are accepted")]
    TooLarge(usize),
    /// The JSON is malformed or has missing, extra or mistyped members.
    #[error("malformed card JSON: {0}")]
    Json(String),
    /// A member has a value the format does not allow.
    #[error("bad `{field}`: {reason}")]
    BadField {
        /// The member.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `key_id` is not the hash of `public_key`.
    #[error("`key_id` does not match `public_key`")]
    KeyIdMismatch,
    /// The signature does not verify: the card was altered or not made by its key.
    #[error("the signature does not verify: the card was altered or forged")]
    BadSignature,
}

fn bad(field: &'static str, reason: impl Into<String>) -> CardError {
    CardError::BadField {
        field,
        reason: reason.into(),
    }
}

/// The signed part, in canonical member order.
#[derive(Serialize)]
struct Unsigned<'a> {
    algorithm: &'a str,
    aliases: &'a [KeyId],
    endpoints: &'a [HttpKeyUrl],
    key_id: KeyId,
    name: &'a str,
    public_key: &'a str,
    serial: u64,
    v: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    algorithm: String,
    aliases: Vec<String>,
    endpoints: Vec<String>,
    key_id: String,
    name: String,
    public_key: String,
    serial: u64,
    sig: String,
    v: u32,
}

/// A verified identity card (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityCard {
    algorithm: KeyAlgorithm,
    aliases: Vec<KeyId>,
    endpoints: Vec<HttpKeyUrl>,
    key_id: KeyId,
    name: String,
    public_key: Vec<u8>,
    serial: u64,
    signature: Vec<u8>,
}

impl IdentityCard {
    /// Makes and signs a card for `identity`.
    pub fn sign(
        identity: &Identity,
        name: &str,
        endpoints: Vec<HttpKeyUrl>,
        aliases: Vec<KeyId>,
        serial: u64,
    ) -> crate::Result<IdentityCard> {
        check_fields(name, &endpoints, &aliases, serial)?;
        let mut card = IdentityCard {
            algorithm: identity.key().algorithm(),
            aliases,
            endpoints,
            key_id: identity.key_id(),
            name: name.to_owned(),
            public_key: identity.key().spki_der().to_vec(),
            serial,
            signature: Vec::new(),
        };
        card.signature = identity.key().sign(&card.signed_bytes())?;
        Ok(card)
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let public_key = data_encoding::BASE64URL_NOPAD.encode(&self.public_key);
        let unsigned = Unsigned {
            algorithm: self.algorithm.as_str(),
            aliases: &self.aliases,
            endpoints: &self.endpoints,
            key_id: self.key_id,
            name: &self.name,
            public_key: &public_key,
            serial: self.serial,
            v: 1,
        };
        let mut bytes = SIGNING_TAG.to_vec();
        // Serialising plain strings, integers and arrays into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut bytes, &unsigned);
        bytes
    }

    /// The card as compact JSON (what goes into a QR code).
    pub fn to_json(&self) -> String {
        let wire = Wire {
            algorithm: self.algorithm.as_str().to_owned(),
            aliases: self.aliases.iter().map(ToString::to_string).collect(),
            endpoints: self.endpoints.iter().map(ToString::to_string).collect(),
            key_id: self.key_id.to_string(),
            name: self.name.clone(),
            public_key: data_encoding::BASE64URL_NOPAD.encode(&self.public_key),
            serial: self.serial,
            sig: data_encoding::BASE64URL_NOPAD.encode(&self.signature),
            v: 1,
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Parses and verifies a card. Only a card whose every byte of content is as its key signed
    /// it comes back `Ok`.
    pub fn from_json(text: &str) -> Result<IdentityCard, CardError> {
        if text.len() > MAX_CARD_LEN {
            return Err(CardError::TooLarge(text.len()));
        }
        let wire: Wire = serde_json::from_str(text).map_err(|e| CardError::Json(e.to_string()))?;
        if wire.v != 1 {
            return Err(bad(
                "v",
                format!("unsupported version {} (expected 1)", wire.v),
            ));
        }
        let algorithm: KeyAlgorithm = wire
            .algorithm
            .parse()
            .map_err(|_| bad("algorithm", "expected \"ed25519\" or \"ecdsa-p256\""))?;
        let public_key = data_encoding::BASE64URL_NOPAD
            .decode(wire.public_key.as_bytes())
            .map_err(|e| bad("public_key", format!("not unpadded base64url: {e}")))?;
        match crypto::spki_algorithm(&public_key) {
            Some((alg, _)) if alg == algorithm => {}
            Some(_) => return Err(bad("algorithm", "does not match the type of `public_key`")),
            None => {
                return Err(bad(
                    "public_key",
                    "not an Ed25519 or P-256 SubjectPublicKeyInfo",
                ));
            }
        }
        let key_id: KeyId = wire
            .key_id
            .parse()
            .map_err(|e: crate::Error| bad("key_id", e.to_string()))?;
        if KeyId::from_spki_der(&public_key) != key_id {
            return Err(CardError::KeyIdMismatch);
        }
        let endpoints = wire
            .endpoints
            .iter()
            .map(|e| e.parse::<HttpKeyUrl>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("endpoints", e.to_string()))?;
        let aliases = wire
            .aliases
            .iter()
            .map(|a| a.parse::<KeyId>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("aliases", e.to_string()))?;
        check_fields(&wire.name, &endpoints, &aliases, wire.serial).map_err(|e| match e {
            crate::Error::Card(card) => card,
            other => bad("card", other.to_string()),
        })?;
        let signature = data_encoding::BASE64URL_NOPAD
            .decode(wire.sig.as_bytes())
            .map_err(|e| bad("sig", format!("not unpadded base64url: {e}")))?;
        let card = IdentityCard {
            algorithm,
            aliases,
            endpoints,
            key_id,
            name: wire.name,
            public_key,
            serial: wire.serial,
            signature,
        };
        if !crypto::verify(&card.public_key, &card.signed_bytes(), &card.signature) {
            return Err(CardError::BadSignature);
        }
        Ok(card)
    }

    /// The holder's key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The key type.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The holder's public key (SPKI DER).
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where to reach the holder.
    pub fn endpoints(&self) -> &[HttpKeyUrl] {
        &self.endpoints
    }

    /// Other keys that speak for the holder.
    pub fn aliases(&self) -> &[KeyId] {
        &self.aliases
    }

    /// The serial number (higher replaces lower).
    pub fn serial(&self) -> u64 {
        self.serial
    }
}

fn check_fields(
    name: &str,
    endpoints: &[HttpKeyUrl],
    aliases: &[KeyId],
    serial: u64,
) -> crate::Result<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(bad("name", "must be 1 to 128 characters").into());
    }
    if name.chars().any(char::is_control) {
        return Err(bad("name", "must not contain control characters").into());
    }
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(bad("endpoints", "at most 16").into());
    }
    if aliases.len() > MAX_ALIASES {
        return Err(bad("aliases", "at most 8").into());
    }
    if serial > MAX_SERIAL {
        return Err(bad("serial", "must be below 2^53").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::httpkey::Host;

    fn card(alg: KeyAlgorithm) -> (Identity, IdentityCard) {
        let id = Identity::generate(alg).unwrap();
        let url = HttpKeyUrl::new(Host::Ipv4([127, 0, 0, 1].into()), 5985, id.key_id());
        let alias = Identity::generate(KeyAlgorithm::EcdsaP256)
            .unwrap()
            .key_id();
        let card =
            IdentityCard::sign(&id, "Ada's phone ☎ \"quoted\"", vec![url], vec![alias], 7).unwrap();
        (id, card)
    }

    #[test]
    fn round_trip_both_algorithms() {
        for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256] {
            let (id, card) = card(alg);
            let json = card.to_json();
            let back = IdentityCard::from_json(&json).unwrap();
            assert_eq!(back, card);
            assert_eq!(back.key_id(), id.key_id());
            assert_eq!(back.name(), "Ada's phone ☎ \"quoted\"");
            assert_eq!(back.serial(), 7);
            assert_eq!(back.endpoints().len(), 1);
        }
    }

    #[test]
    fn canonical_form_is_sorted_compact_json() {
        let (_, card) = card(KeyAlgorithm::Ed25519);
        let signed = card.signed_bytes();
        let json = std::str::from_utf8(&signed[SIGNING_TAG.len()..]).unwrap();
        assert!(json.starts_with("{\"algorithm\":\"ed25519\",\"aliases\":[\""));
        assert!(json.ends_with(",\"serial\":7,\"v\":1}"));
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
                .unwrap()
                .keys()
                .cloned()
                .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn any_alteration_is_detected() {
        let (_, card) = card(KeyAlgorithm::Ed25519);
        let json = card.to_json();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let edits: Vec<(&str, serde_json::Value)> = vec![
            ("name", "Mallory".into()),
            ("serial", 8.into()),
            ("endpoints", serde_json::json!([])),
            ("aliases", serde_json::json!([])),
        ];
        for (field, new) in edits {
            let old = value[field].clone();
            value[field] = new;
            assert_eq!(
                IdentityCard::from_json(&value.to_string()),
                Err(CardError::BadSignature),
                "{field}"
            );
            value[field] = old;
        }
        // Someone else's key with the original signature: the key id no longer matches, and with
        // a matching key id the signature does not verify.
        let (other_id, _) = self::card(KeyAlgorithm::Ed25519);
        value["public_key"] = data_encoding::BASE64URL_NOPAD
            .encode(other_id.key().spki_der())
            .into();
        assert_eq!(
            IdentityCard::from_json(&value.to_string()),
            Err(CardError::KeyIdMismatch)
        );
        value["key_id"] = other_id.key_id().to_string().into();
        assert_eq!(
            IdentityCard::from_json(&value.to_string()),
            Err(CardError::BadSignature)
        );
    }

    #[test]
    fn structural_errors_are_precise() {
        let (_, card) = card(KeyAlgorithm::Ed25519);
        let value: serde_json::Value = serde_json::from_str(&card.to_json()).unwrap();
        let mut extra = value.clone();
        extra["evil"] = true.into();
        assert!(matches!(
            IdentityCard::from_json(&extra.to_string()),
            Err(CardError::Json(_))
        ));
        let mut v2 = value.clone();
        v2["v"] = 2.into();
        assert!(matches!(
            IdentityCard::from_json(&v2.to_string()),
            Err(CardError::BadField { field: "v", .. })
        ));
        let mut alg = value.clone();
        alg["algorithm"] = "ecdsa-p256".into();
        assert!(matches!(
            IdentityCard::from_json(&alg.to_string()),
            Err(CardError::BadField {
                field: "algorithm",
                ..
            })
        ));
        let mut ep = value.clone();
        ep["endpoints"] = serde_json::json!(["http://x"]);
        assert!(matches!(
            IdentityCard::from_json(&ep.to_string()),
            Err(CardError::BadField {
                field: "endpoints",
                ..
            })
        ));
        let mut name = value.clone();
        name["name"] = "a\nb".into();
        assert!(matches!(
            IdentityCard::from_json(&name.to_string()),
            Err(CardError::BadField { field: "name", .. })
        ));
        assert!(matches!(
            IdentityCard::from_json("[]"),
            Err(CardError::Json(_))
        ));
        assert!(matches!(
            IdentityCard::from_json(&"x".repeat(MAX_CARD_LEN + 1)),
            Err(CardError::TooLarge(_))
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(IdentityCard::from_json(&deep).is_err());
    }

    #[test]
    fn signing_refuses_bad_fields() {
        let id = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
        assert!(IdentityCard::sign(&id, "", vec![], vec![], 0).is_err());
        assert!(IdentityCard::sign(&id, "x", vec![], vec![], 1 << 53).is_err());
        assert!(IdentityCard::sign(&id, &"n".repeat(129), vec![], vec![], 0).is_err());
    }
}
