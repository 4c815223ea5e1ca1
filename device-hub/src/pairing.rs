//! Pairing two hubs (or befriending one) with public-key-identity's numeric comparison, over
//! HTTPS between the hubs.
//!
//! The initiating hub (A) is told by its owner to pair with `httpkey://…B…`. It connects to B with
//! mutual TLS pinned to B's key and runs the exchange:
//!
//! 1. `POST /_hub/pair/commit` `{"kind", "message": <Commit>, "card": <A's card>}` → B answers
//!    `{"message": <Nonce>, "card": <B's card>}`. B checks that the card's key is the key A proved
//!    in TLS.
//! 2. `POST /_hub/pair/reveal` `{"message": <Reveal>}` → B checks the commitment; both sides now
//!    hold the same 6-digit code (or different ones, under a man in the middle).
//!
//! Nothing is trusted yet. Each hub's owner compares the codes and confirms on their own hub
//! (`device-hub pair --confirm CODE` or the status page); a confirmed pairing stores the peer's
//! card in the directory and adds its key to `me` (kind `me`) or `friends` (kind `friend`).
//! Unconfirmed sessions expire after ten minutes; at most 32 are kept. A revoked key cannot pair
//! again, either way: revocation is for good (the device needs a new key).

use std::collections::HashMap;
use std::sync::Mutex;

use acls_and_groups::Member;
use anyhow::{Result, anyhow, bail};
use public_key_identity::exchange::{Initiator, Message, PairingCode, Responder};
use public_key_identity::{HttpKeyUrl, IdentityCard, KeyId};
use serde_json::{Value, json};

use crate::client::HubClient;
use crate::hub::{Hub, now_millis};

const SESSION_TTL_MS: u64 = 10 * 60 * 1000;
const MAX_SESSIONS: usize = 32;

/// Which group a confirmed pairing joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Another device of the same person: group `me`.
    Me,
    /// Someone else: group `friends`.
    Friend,
}

impl Kind {
    /// `"me"` or `"friend"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Me => "me",
            Kind::Friend => "friend",
        }
    }

    fn parse(s: &str) -> Result<Kind> {
        match s {
            "me" => Ok(Kind::Me),
            "friend" => Ok(Kind::Friend),
            _ => bail!("kind must be \"me\" or \"friend\""),
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::Me => "me",
            Kind::Friend => "friends",
        }
    }
}

enum Stage {
    /// Responder: waiting for the Reveal.
    AwaitReveal(Responder),
    /// Both sides have a code; waiting for this side's owner.
    Pending(PairingCode),
}

struct Session {
    card: IdentityCard,
    kind: Kind,
    stage: Stage,
    incoming: bool,
    expires: u64,
}

/// Pairings in progress, by the peer's key id.
#[derive(Default)]
pub struct Pairings {
    sessions: Mutex<HashMap<KeyId, Session>>,
}

/// A pairing waiting for confirmation, as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingPairing {
    /// The peer's key id.
    pub key_id: String,
    /// The name on the peer's card.
    pub name: String,
    /// `me` or `friend`.
    pub kind: &'static str,
    /// Whether the peer started it.
    pub incoming: bool,
    /// The code to compare (shown to the owner only).
    pub code: Option<String>,
}

impl Pairings {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<KeyId, Session>) -> T) -> T {
        let mut guard = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_millis();
        guard.retain(|_, s| s.expires > now);
        f(&mut guard)
    }

    /// The pairings waiting for this side's confirmation.
    pub fn pending(&self) -> Vec<PendingPairing> {
        self.with(|s| {
            s.iter()
                .map(|(k, v)| PendingPairing {
                    key_id: k.to_string(),
                    name: v.card.name().to_owned(),
                    kind: v.kind.as_str(),
                    incoming: v.incoming,
                    code: match &v.stage {
                        Stage::Pending(code) => Some(code.to_string()),
                        Stage::AwaitReveal(_) => None,
                    },
                })
                .collect()
        })
    }
}

fn card_from(value: &Value) -> Result<IdentityCard> {
    let text = value
        .get("card")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no card"))?;
    Ok(IdentityCard::from_json(text)?)
}

fn message_from(value: &Value) -> Result<Message> {
    let text = value
        .get("message")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no message"))?;
    Ok(text.parse()?)
}

/// The refusal of a revoked key.
fn refuse_revoked(hub: &Hub, peer: &KeyId) -> Result<()> {
    if hub.is_revoked(peer) {
        bail!("{peer} was revoked: it cannot pair again (a revoked device needs a new key)");
    }
    Ok(())
}

/// Peer side, step 1: a hub that proved `peer` in TLS starts an exchange.
pub fn on_commit(hub: &Hub, peer: KeyId, body: &Value) -> Result<Value> {
    refuse_revoked(hub, &peer)?;
    let card = card_from(body)?;
    if card.key_id() != peer {
        bail!(
            "the card is for {} but the connection proved {}",
            card.key_id(),
            peer
        );
    }
    let kind = Kind::parse(body.get("kind").and_then(Value::as_str).unwrap_or("me"))?;
    let mut responder = Responder::new(hub.key_id(), peer)?;
    let out = responder.handle(message_from(body)?)?;
    let nonce = out
        .send
        .ok_or_else(|| anyhow!("the exchange produced no nonce"))?;
    hub.pairing.with(|sessions| {
        if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(&peer) {
            bail!("too many pairings in progress; try again later");
        }
        sessions.insert(
            peer,
            Session {
                card,
                kind,
                stage: Stage::AwaitReveal(responder),
                incoming: true,
                expires: now_millis() + SESSION_TTL_MS,
            },
        );
        Ok(())
    })?;
    Ok(json!({"message": nonce.to_string(), "card": hub.card()?.to_json()}))
}

/// Peer side, step 2: the reveal; afterwards this hub's owner sees the code.
pub fn on_reveal(hub: &Hub, peer: KeyId, body: &Value) -> Result<Value> {
    let reveal = message_from(body)?;
    hub.pairing.with(|sessions| {
        let session = sessions
            .get_mut(&peer)
            .ok_or_else(|| anyhow!("no pairing in progress with {peer}"))?;
        let Stage::AwaitReveal(responder) = &mut session.stage else {
            bail!("this pairing is not waiting for a reveal");
        };
        match responder.handle(reveal) {
            Ok(out) => {
                let code = out.code.ok_or_else(|| anyhow!("no code"))?;
                session.stage = Stage::Pending(code);
                Ok(json!({"ok": true}))
            }
            Err(e) => {
                sessions.remove(&peer);
                Err(anyhow!("pairing abandoned: {e}"))
            }
        }
    })
}

/// Owner side: starts pairing with the hub at `url`; returns the peer's card and the code.
pub async fn start(hub: &Hub, url: &HttpKeyUrl, kind: Kind) -> Result<(IdentityCard, PairingCode)> {
    let peer = url.key_id();
    if peer == hub.key_id() {
        bail!("that is this hub's own key");
    }
    refuse_revoked(hub, &peer)?;
    let client = HubClient::new(url, &hub.device)?;
    let (mut initiator, commit) = Initiator::start(hub.key_id(), peer)?;
    let answer = client
        .ok(
            "POST",
            "/_hub/pair/commit",
            Some(&json!({"kind": kind.as_str(), "message": commit.to_string(), "card": hub.card()?.to_json()})),
        )
        .await?;
    let card = card_from(&answer)?;
    if card.key_id() != peer {
        bail!(
            "the peer's card is for {} but the connection proved {}",
            card.key_id(),
            peer
        );
    }
    let out = initiator.handle(message_from(&answer)?)?;
    let reveal = out.send.ok_or_else(|| anyhow!("no reveal"))?;
    let code = out.code.ok_or_else(|| anyhow!("no code"))?;
    client
        .ok(
            "POST",
            "/_hub/pair/reveal",
            Some(&json!({"message": reveal.to_string()})),
        )
        .await?;
    hub.pairing.with(|sessions| {
        sessions.insert(
            peer,
            Session {
                card: card.clone(),
                kind,
                stage: Stage::Pending(code),
                incoming: false,
                expires: now_millis() + SESSION_TTL_MS,
            },
        );
    });
    Ok((card, code))
}

/// Owner side: the owner compared the codes and confirms `code`. Adds the peer to its group and
/// its card to the directory. Returns the peer's card and the kind.
pub fn confirm(hub: &Hub, code: &str) -> Result<(IdentityCard, Kind)> {
    let code: PairingCode = code
        .parse()
        .map_err(|_| anyhow!("a pairing code is six digits"))?;
    let found = hub.pairing.with(|sessions| {
        let key = sessions
            .iter()
            .find(|(_, s)| matches!(s.stage, Stage::Pending(c) if c == code))
            .map(|(k, _)| *k)?;
        sessions.remove(&key)
    });
    let session = found.ok_or_else(|| anyhow!("no pairing in progress shows code {code}"))?;
    refuse_revoked(hub, &session.card.key_id())?;
    hub.store_card(&session.card)?;
    let member = Member::Key(session.card.key_id());
    hub.update_policy(|policy| {
        policy.add_member(&session.kind.group().parse()?, member)?;
        Ok(())
    })?;
    tracing::info!(peer = %session.card.key_id(), name = session.card.name(), kind = session.kind.as_str(), "pairing confirmed");
    Ok((session.card, session.kind))
}

/// Parses the `kind` of an API request.
pub fn kind_of(body: &Value) -> Result<Kind> {
    Kind::parse(body.get("kind").and_then(Value::as_str).unwrap_or("me"))
}
