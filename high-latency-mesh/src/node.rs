//! A mesh node over a couch-sync [`Database`]: the messages it carries for others, its outbox,
//! its inbox, delivery receipts, quotas — and the session protocol two nodes speak when they
//! meet. Sans-IO apart from the database: no sockets, no clock (every call takes `now_ms`); the
//! async edge that moves the bytes is the `exchange` module (feature `net`).
//!
//! # Storage
//!
//! Everything lives in the node's database, so [`Node::open`] rebuilds the node after a
//! restart:
//!
//! | document | body | what |
//! |---|---|---|
//! | `m-<64 hex id>` | `{"mesh":1,"msg":"<base64 of the sealed wire bytes>"}` | a carried message (replicated between nodes by id) |
//! | `_local/mesh-m-<64 hex id>` | `{"copies":N,"hops":N,"focus_hops":N,"received_ms":N,"own":bool}` | this node's share of it (never replicated) |
//! | `r-<64 hex id>` | `{"mesh":1,"receipt":"<128 hex>","expires_ms":N}` | a delivery receipt, kept until the message's expiry |
//! | `_local/mesh-delivered` | `{"ids":{"<64 hex id>":expires_ms}}` | messages delivered to the application, until their expiry |
//!
//! A message and its `_local` state are written (and deleted) in one transaction. A deleted
//! message leaves its tombstone, which is how the node remembers that it *had* a message (a
//! replication never brings back a revision under a tombstone, and [`Node::accept`] refuses
//! it). Base64 is standard with padding (RFC 4648 §4).
//!
//! # Quota and eviction
//!
//! [`Node::stored_bytes`] — the wire bytes of the messages held (outbox, relayed, inbox not
//! yet taken) plus the room reserved for accepted messages still in transit — never exceeds
//! [`NodeConfig::quota_bytes`] after any call. To make room, a node evicts, in this order:
//!
//! 1. expired messages (outbox and relayed),
//! 2. relayed messages, the oldest received first.
//!
//! It never evicts its own outbox or its inbox to make room for anything: a stranger that
//! floods a node with offers can displace what the node relays for others, never what it sent
//! itself. When the room cannot be made the message is refused ([`Node::accept`] leaves it out;
//! [`Node::send`] fails with [`Error::QuotaExceeded`]). Room for an accepted message is made
//! (evicting) when it is accepted, so the database never holds more than the quota while the
//! transfer runs; a reservation whose pull never reports back is released after
//! [`NodeConfig::reservation_ms`].
//!
//! # The session protocol
//!
//! When two nodes meet, each sends a [`Hello`] ([`Node::hello`]); each answers the other's with
//! an [`OfferList`] ([`Node::offers_for`], which first learns the peer's receipts and
//! encounters); each answers the other's offers with an [`Accept`] ([`Node::accept`]). The
//! receiver of an `Accept` lets the peer pull those documents by id from its database (a
//! couch-sync replication: the transport's business); once the pull is over the puller checks
//! what arrived ([`Node::on_pulled`]) and answers [`Received`], and the sender applies the
//! copy accounting ([`Node::on_received`]: `keep == 0` deletes its copy). Every message is
//! JSON, bounded by the `MAX_*` constants of [`protocol`] (an encoded message stays under the
//! 64 KiB of an adhoc-wireless frame).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use couch_sync::{Store, StoreConfig};
//! use high_latency_mesh::node::{Node, NodeConfig};
//! use public_key_identity::{KeyAlgorithm, KeyPair};
//!
//! let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
//! let open = |dir: &tempfile::TempDir| -> Result<Node, Box<dyn std::error::Error>> {
//!     let db = Store::open(dir.path(), StoreConfig::default())?.create_db("mesh")?;
//!     Ok(Node::open(db, KeyPair::generate(KeyAlgorithm::Ed25519)?, NodeConfig::default())?)
//! };
//! let (mut alice, mut bob) = (open(&dirs[0])?, open(&dirs[1])?);
//! let now = 1_767_225_600_000;
//! let id = alice.send(bob.spki_der(), b"hello bob", now, 3_600_000)?;
//!
//! // They meet: hellos, offers, accepts...
//! let offers = alice.offers_for(&bob.hello(now), now)?;
//! let _ = bob.offers_for(&alice.hello(now), now)?;
//! let accept = bob.accept(&offers, now)?;
//! // ...the transport copies the accepted documents from alice's database to bob's...
//! # for id in &accept.ids {
//! #     let doc = alice.database().get(&format!("m-{id}"), &Default::default())?;
//! #     let mut body = doc.json.clone();
//! #     body.remove("_id");
//! #     body.remove("_rev");
//! #     let update = couch_sync::DocUpdate { id: Some(format!("m-{id}")), body, ..Default::default() };
//! #     bob.database().put(None, update, true)?;
//! # }
//! let received = bob.on_pulled(&offers, &accept, now)?;
//! alice.on_received(&offers, &received, now)?;
//!
//! let delivered = bob.take_delivered()?;
//! assert_eq!(delivered[0].id, id);
//! assert_eq!(delivered[0].payload, b"hello bob");
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use adhoc_wireless::beacon::{BeaconKey, Recipient};
use couch_sync::{
    AllDocsQuery, AllDocsRow, ChangesQuery, Database, DocUpdate, GetOptions, OpenRev, OpenRevs,
};
use public_key_identity::{KeyId, KeyPair};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::routing::{Directed, Held, Mode, Offer, PeerView, Router, Tag};
use crate::seal::{self, DestTag, Header, MAX_MESSAGE_BYTES, MessageId, Receipt, SealedMessage};

pub mod protocol;

pub use protocol::{Accept, Hello, Met, OfferItem, OfferList, OfferReason, Received};

use protocol::{HELD_PREFIX_HEX, MAX_HELD, MAX_ITEMS, MAX_MET, MAX_RECEIPTS, MAX_TAGS};

/// The `_local` document of the delivered ids.
const DELIVERED_DOC: &str = "_local/mesh-delivered";
/// Prefix of a message's `_local` state document (then the 64 hex digits of its id).
const STATE_PREFIX: &str = "_local/mesh-m-";
/// Prefix of a receipt document.
const RECEIPT_PREFIX: &str = "r-";
/// Documents read per page when the node is rebuilt.
const PAGE: u64 = 128;

/// A node's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// How the node routes. Default [`Mode::Directed`] with [`Directed::default`].
    pub mode: Mode,
    /// The most wire bytes of messages the node holds (outbox, relayed, inbox, reservations).
    /// Default 64 MiB.
    pub quota_bytes: u64,
    /// The largest message the node sends or accepts. Default
    /// [`MAX_MESSAGE_BYTES`] (1 MiB).
    pub max_message_bytes: u64,
    /// Encounters told in a [`Hello`] (at most [`protocol::MAX_MET`]). Default 32.
    pub summary_limit: usize,
    /// Receipts told in a [`Hello`] (at most [`protocol::MAX_RECEIPTS`]). Default 64.
    pub receipt_limit: usize,
    /// Held-id prefixes told in a [`Hello`] (at most [`protocol::MAX_HELD`]). Default 512.
    pub held_limit: usize,
    /// Items in an [`OfferList`] (at most [`protocol::MAX_ITEMS`]). Default 64.
    pub offer_limit: usize,
    /// Receipts stored (the ones expiring last are kept). Default 4096.
    pub max_receipts: usize,
    /// Delivered ids remembered (the ones expiring last are kept). Default 4096.
    pub max_delivered: usize,
    /// Destinations the router remembers encounters with. Default 256.
    pub encounter_capacity: usize,
    /// How long room reserved by [`Node::accept`] waits for [`Node::on_pulled`] before it is
    /// released anyway (a session that died without calling it must not shrink the quota for
    /// good; a document that arrives later is swept). Default 15 minutes, longer than a pull
    /// may take.
    pub reservation_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            mode: Mode::Directed(Directed::default()),
            quota_bytes: 64 * 1024 * 1024,
            max_message_bytes: MAX_MESSAGE_BYTES,
            summary_limit: 32,
            receipt_limit: 64,
            held_limit: 512,
            offer_limit: 64,
            max_receipts: 4096,
            max_delivered: 4096,
            encounter_capacity: 256,
            reservation_ms: 15 * 60_000,
        }
    }
}

impl NodeConfig {
    /// Checks the settings against the protocol's bounds.
    pub fn check(&self) -> Result<()> {
        self.mode.check()?;
        let bounds = [
            ("summary_limit", self.summary_limit, MAX_MET),
            ("receipt_limit", self.receipt_limit, MAX_RECEIPTS),
            ("held_limit", self.held_limit, MAX_HELD),
            ("offer_limit", self.offer_limit, MAX_ITEMS),
        ];
        for (name, value, max) in bounds {
            if value > max {
                return Err(Error::InvalidConfig(format!(
                    "{name} is {value}, the protocol allows at most {max}"
                )));
            }
        }
        if self.max_message_bytes < len_u64(Header::LEN) {
            return Err(Error::InvalidConfig(format!(
                "max_message_bytes {} is smaller than a header",
                self.max_message_bytes
            )));
        }
        Ok(())
    }
}

/// A message delivered to this node's application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivered {
    /// The message id.
    pub id: MessageId,
    /// Who sealed it.
    pub sender: KeyId,
    /// The sender's public key (SubjectPublicKeyInfo DER).
    pub sender_spki: Vec<u8>,
    /// When the sender sealed it (ms, by the sender's clock).
    pub created_ms: u64,
    /// What the sender sent.
    pub payload: Vec<u8>,
}

impl Delivered {
    fn opened(id: MessageId, header: &Header, opened: seal::Opened) -> Delivered {
        Delivered {
            id,
            sender: opened.sender,
            sender_spki: opened.sender_spki,
            created_ms: header.created_ms,
            payload: opened.payload,
        }
    }
}

/// What a node knows of a message it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageInfo {
    /// Its routing header.
    pub header: Header,
    /// Its routing state here.
    pub held: Held,
    /// Whether this node sent it (its outbox).
    pub own: bool,
    /// Whether it is for this node and waits for [`Node::take_delivered`].
    pub inbox: bool,
    /// When this node stored it (ms).
    pub received_ms: u64,
}

/// A mesh node: see the [module docs](self).
pub struct Node {
    db: Database,
    key: KeyPair,
    beacon: BeaconKey,
    tag: DestTag,
    config: NodeConfig,
    router: Router,
    carried: BTreeMap<MessageId, MessageInfo>,
    inbox: BTreeMap<MessageId, Delivered>,
    /// Room reserved for accepted messages in transit: size, and until when.
    reserved: BTreeMap<MessageId, (u64, u64)>,
    delivered: BTreeMap<MessageId, u64>,
    receipts: BTreeMap<MessageId, (Receipt, u64)>,
    sweep_since: Option<u64>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("key_id", &self.key.key_id())
            .field("db", &self.db.name())
            .field("messages", &self.carried.len())
            .field("stored_bytes", &self.stored_bytes())
            .finish_non_exhaustive()
    }
}

/// Lossless `usize` to `u64` (saturating in theory).
fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The first [`HELD_PREFIX_HEX`] hex digits of an id.
fn prefix(id: &MessageId) -> String {
    let mut hex = id.to_hex();
    hex.truncate(HELD_PREFIX_HEX);
    hex
}

fn state_id(id: &MessageId) -> String {
    format!("{STATE_PREFIX}{}", id.to_hex())
}

fn receipt_doc_id(id: &MessageId) -> String {
    format!("{RECEIPT_PREFIX}{}", id.to_hex())
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn malformed(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Malformed {
        what,
        reason: reason.into(),
    }
}

/// Reads a message document (as `get` or `_all_docs` show it): exactly `mesh`, `msg` and the
/// `_id`/`_rev` members, the bytes within `max_len`.
fn parse_message_doc(json: &Map<String, Value>, max_len: u64) -> Result<SealedMessage> {
    let bad = |reason: &str| malformed("message document", reason);
    if json.get("mesh").and_then(Value::as_u64) != Some(1) {
        return Err(bad("not a version-1 mesh document"));
    }
    if let Some(other) = json
        .keys()
        .find(|k| !matches!(k.as_str(), "_id" | "_rev" | "mesh" | "msg"))
    {
        return Err(bad(&format!("unexpected member {other:?}")));
    }
    let text = json
        .get("msg")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no msg"))?;
    let limit = max_len.saturating_add(2) / 3 * 4;
    if len_u64(text.len()) > limit {
        return Err(Error::TooLarge {
            what: "message document",
            size: len_u64(text.len()),
            limit,
        });
    }
    let bytes = data_encoding::BASE64
        .decode(text.as_bytes())
        .map_err(|e| bad(&format!("msg is not base64: {e}")))?;
    SealedMessage::from_bytes(&bytes, max_len)
}

fn message_doc(message: &SealedMessage) -> DocUpdate {
    let body = json!({"mesh": 1, "msg": data_encoding::BASE64.encode(&message.to_bytes())});
    DocUpdate {
        id: Some(message.id().doc_id()),
        body: object(body),
        ..DocUpdate::default()
    }
}

fn state_doc(id: &MessageId, info: &MessageInfo) -> DocUpdate {
    let body = json!({
        "copies": info.held.copies,
        "hops": info.held.hops,
        "focus_hops": info.held.focus_hops,
        "received_ms": info.received_ms,
        "own": info.own,
    });
    DocUpdate {
        id: Some(state_id(id)),
        body: object(body),
        ..DocUpdate::default()
    }
}

fn local_delete(id: String) -> DocUpdate {
    DocUpdate {
        id: Some(id),
        deleted: true,
        ..DocUpdate::default()
    }
}

impl Node {
    /// Opens the node on `db` (created by the caller; one per node), as `key` (Ed25519: the
    /// key messages to this node are sealed to, and that signs what it sends), rebuilding its
    /// state from what the database holds. Documents that do not verify are deleted.
    pub fn open(db: Database, key: KeyPair, config: NodeConfig) -> Result<Node> {
        config.check()?;
        let beacon = BeaconKey::from_keypair(&key).map_err(|e| Error::Key(e.to_string()))?;
        let router = Router::new(config.mode.clone(), config.encounter_capacity)?;
        let mut node = Node {
            tag: DestTag::of(&key.key_id()),
            db,
            key,
            beacon,
            config,
            router,
            carried: BTreeMap::new(),
            inbox: BTreeMap::new(),
            reserved: BTreeMap::new(),
            delivered: BTreeMap::new(),
            receipts: BTreeMap::new(),
            sweep_since: None,
        };
        node.load()?;
        Ok(node)
    }

    fn load(&mut self) -> Result<()> {
        match self.db.get_local(DELIVERED_DOC) {
            Ok(doc) => {
                if let Some(ids) = doc.get("ids").and_then(Value::as_object) {
                    for (hex, expires) in ids {
                        if let (Ok(id), Some(at)) = (MessageId::from_hex(hex), expires.as_u64()) {
                            self.delivered.insert(id, at);
                        }
                    }
                }
            }
            Err(e) if e.status() == 404 => {}
            Err(e) => return Err(e.into()),
        }
        let mut bad = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self.db.all_docs(
                &AllDocsQuery {
                    start_key: start.clone(),
                    limit: Some(PAGE),
                    include_docs: true,
                    ..AllDocsQuery::default()
                },
                None,
            )?;
            let mut last = None;
            for row in page.rows {
                let AllDocsRow::Doc { id, doc, .. } = row else {
                    continue;
                };
                last = Some(id.clone());
                let Some(Value::Object(json)) = doc else {
                    continue;
                };
                if id.starts_with(MessageId::DOC_ID_PREFIX) {
                    if !self.load_message(&id, &json)? {
                        bad.push(id);
                    }
                } else if let Some(hex) = id.strip_prefix(RECEIPT_PREFIX) {
                    let receipt = json
                        .get("receipt")
                        .and_then(Value::as_str)
                        .and_then(|r| Receipt::from_hex(r).ok())
                        .filter(|r| r.id.to_hex() == hex);
                    let expires = json.get("expires_ms").and_then(Value::as_u64);
                    match (receipt, expires) {
                        (Some(r), Some(at)) => {
                            self.receipts.insert(r.id, (r, at));
                        }
                        _ => bad.push(id),
                    }
                }
            }
            match last {
                Some(id) => start = Some(format!("{id}\u{0}")),
                None => break,
            }
        }
        self.purge(&bad, Vec::new())
    }

    /// Loads one stored message; `false` when it is to be deleted.
    fn load_message(&mut self, doc_id: &str, json: &Map<String, Value>) -> Result<bool> {
        let Ok(message) = parse_message_doc(json, self.config.max_message_bytes) else {
            return Ok(false);
        };
        let id = message.id();
        if id.doc_id() != doc_id || self.delivered.contains_key(&id) {
            return Ok(false);
        }
        let state = match self.db.get_local(&state_id(&id)) {
            Ok(state) => state,
            Err(e) if e.status() == 404 => Map::new(),
            Err(e) => return Err(e.into()),
        };
        let num = |name: &str| state.get(name).and_then(Value::as_u64);
        let header = *message.header();
        let held = Held {
            dest: header.dest.0,
            size: message.size(),
            expires_ms: header.expires_ms,
            copies: num("copies")
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or(1),
            focus_hops: num("focus_hops")
                .and_then(|n| u8::try_from(n).ok())
                .unwrap_or(0),
            hops: num("hops").and_then(|n| u8::try_from(n).ok()).unwrap_or(0),
        };
        let own = state.get("own").and_then(Value::as_bool).unwrap_or(false);
        let inbox = header.dest == self.tag;
        if inbox {
            match seal::open(&self.beacon, &message, header.created_ms) {
                Ok(opened) => {
                    self.inbox
                        .insert(id, Delivered::opened(id, &header, opened));
                }
                Err(_) => return Ok(false),
            }
        }
        self.carried.insert(
            id,
            MessageInfo {
                header,
                held,
                own,
                inbox,
                received_ms: num("received_ms").unwrap_or(0),
            },
        );
        Ok(true)
    }

    /// The node's key id.
    pub fn key_id(&self) -> KeyId {
        self.key.key_id()
    }

    /// The node's public key (SubjectPublicKeyInfo DER): what senders seal to.
    pub fn spki_der(&self) -> &[u8] {
        self.key.spki_der()
    }

    /// The destination tag of messages to this node.
    pub fn tag(&self) -> DestTag {
        self.tag
    }

    /// The settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The database the node keeps its messages in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The router (mode and learned encounters).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Wire bytes of the messages held plus the room reserved for accepted ones in transit:
    /// never more than [`NodeConfig::quota_bytes`].
    pub fn stored_bytes(&self) -> u64 {
        let held: u64 = self.carried.values().map(|m| m.held.size).sum();
        held.saturating_add(self.reserved.values().map(|(size, _)| size).sum::<u64>())
    }

    /// The ids of the messages held (outbox, relayed and inbox).
    pub fn message_ids(&self) -> Vec<MessageId> {
        self.carried.keys().copied().collect()
    }

    /// What the node knows of a message it holds.
    pub fn message(&self, id: &MessageId) -> Option<MessageInfo> {
        self.carried.get(id).copied()
    }

    /// Whether the node holds a message.
    pub fn holds(&self, id: &MessageId) -> bool {
        self.carried.contains_key(id)
    }

    /// The stored sealed message, read back from the database.
    pub fn sealed(&self, id: &MessageId) -> Result<Option<SealedMessage>> {
        if !self.carried.contains_key(id) {
            return Ok(None);
        }
        let doc = self.db.get(&id.doc_id(), &GetOptions::default())?;
        parse_message_doc(&doc.json, self.config.max_message_bytes).map(Some)
    }

    /// The receipts the node holds.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.receipts.values().map(|(r, _)| *r).collect()
    }

    /// Whether the message was delivered to this node's application (and is remembered).
    pub fn was_delivered(&self, id: &MessageId) -> bool {
        self.delivered.contains_key(id)
    }

    /// Seals `payload` to the key `recipient_spki_der` (SubjectPublicKeyInfo DER, Ed25519),
    /// to be carried for `ttl_ms` from `now_ms`, and puts it in the outbox with the mode's
    /// copies. Room is made by evicting expired and relayed messages; when the outbox itself
    /// leaves no room, [`Error::QuotaExceeded`].
    pub fn send(
        &mut self,
        recipient_spki_der: &[u8],
        payload: &[u8],
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<MessageId> {
        let recipient =
            Recipient::from_spki_der(recipient_spki_der).map_err(|e| Error::Key(e.to_string()))?;
        if recipient.key_id() == self.key.key_id() {
            return Err(Error::InvalidArgument(
                "a node does not send messages to itself".into(),
            ));
        }
        let expires_ms = now_ms
            .checked_add(ttl_ms)
            .ok_or_else(|| Error::InvalidArgument("expiry past the end of time".into()))?;
        let message = seal::seal(&self.key, &recipient, payload, now_ms, expires_ms)?;
        let size = message.size();
        if size > self.config.max_message_bytes {
            return Err(Error::TooLarge {
                what: "sealed message",
                size,
                limit: self.config.max_message_bytes,
            });
        }
        self.make_room(size, now_ms, None)?;
        let id = message.id();
        let header = *message.header();
        let info = MessageInfo {
            header,
            held: self.router.created(header.dest.0, size, expires_ms),
            own: true,
            inbox: false,
            received_ms: now_ms,
        };
        let results = self.db.bulk_docs(
            vec![Ok(message_doc(&message)), Ok(state_doc(&id, &info))],
            true,
        )?;
        for r in results {
            r.result?;
        }
        self.carried.insert(id, info);
        Ok(id)
    }

    /// Makes `needed` bytes of room by evicting expired, then relayed messages (oldest
    /// received first), never outbox or inbox; nothing is evicted when that cannot be enough.
    /// `keep` is a message not to evict.
    fn make_room(&mut self, needed: u64, now_ms: u64, keep: Option<&MessageId>) -> Result<()> {
        let quota = self.config.quota_bytes;
        let free = quota.saturating_sub(self.stored_bytes());
        if needed <= free {
            return Ok(());
        }
        let mut candidates: Vec<(bool, u64, MessageId, u64)> = self
            .carried
            .iter()
            .filter(|(id, m)| !m.inbox && Some(*id) != keep)
            .filter(|(_, m)| m.header.is_expired(now_ms) || !m.own)
            .map(|(id, m)| {
                (
                    !m.header.is_expired(now_ms),
                    m.received_ms,
                    *id,
                    m.held.size,
                )
            })
            .collect();
        candidates.sort();
        let available = free.saturating_add(candidates.iter().map(|c| c.3).sum::<u64>());
        if available < needed {
            return Err(Error::QuotaExceeded { needed, available });
        }
        let mut freed = free;
        let mut evict = Vec::new();
        for (_, _, id, size) in candidates {
            if freed >= needed {
                break;
            }
            freed = freed.saturating_add(size);
            evict.push(id);
        }
        self.delete_messages(&evict)
    }

    /// Deletes messages (documents, states) and forgets them.
    fn delete_messages(&mut self, ids: &[MessageId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let doc_ids: Vec<String> = ids.iter().map(MessageId::doc_id).collect();
        let locals = ids.iter().map(|id| local_delete(state_id(id))).collect();
        self.purge(&doc_ids, locals)?;
        for id in ids {
            self.carried.remove(id);
            self.inbox.remove(id);
        }
        Ok(())
    }

    /// Deletes every live leaf of these documents, with `extra` updates, in one transaction.
    fn purge(&self, doc_ids: &[String], extra: Vec<DocUpdate>) -> Result<()> {
        let mut updates: Vec<couch_sync::Result<DocUpdate>> = extra.into_iter().map(Ok).collect();
        for id in doc_ids {
            let leaves = match self
                .db
                .open_revs(id, &OpenRevs::All, &GetOptions::default())
            {
                Ok(leaves) => leaves,
                Err(e) if e.status() == 404 => continue,
                Err(e) => return Err(e.into()),
            };
            for leaf in leaves {
                if let OpenRev::Ok(doc) = leaf {
                    if !doc.deleted {
                        updates.push(Ok(DocUpdate {
                            id: Some(id.clone()),
                            rev: Some(doc.rev),
                            deleted: true,
                            ..DocUpdate::default()
                        }));
                    }
                }
            }
        }
        if updates.is_empty() {
            return Ok(());
        }
        // Per-document failures (a leaf replaced meanwhile) leave that document to the next
        // sweep; storage failures fail the call.
        self.db.bulk_docs(updates, true)?;
        Ok(())
    }

    /// What this node says when it meets a peer (see the [module docs](self)).
    pub fn hello(&self, now_ms: u64) -> Hello {
        let view = self
            .router
            .view(vec![self.tag.0], self.config.summary_limit, now_ms);
        let met = view
            .met
            .into_iter()
            .map(|(tag, at_ms)| Met {
                tag: DestTag(tag).to_hex(),
                at_ms,
            })
            .collect();
        let mut receipts: Vec<&(Receipt, u64)> = self
            .receipts
            .values()
            .filter(|(_, at)| *at > now_ms)
            .collect();
        receipts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
        let receipts = receipts
            .into_iter()
            .take(self.config.receipt_limit)
            .map(|(r, _)| r.to_hex())
            .collect();
        let mut held = BTreeSet::new();
        let ids = self
            .carried
            .keys()
            .chain(self.reserved.keys())
            .chain(self.delivered.keys())
            .chain(self.receipts.keys());
        for id in ids {
            if held.len() >= self.config.held_limit {
                break;
            }
            held.insert(prefix(id));
        }
        Hello {
            tags: vec![self.tag.to_hex()],
            met,
            activity: view.activity,
            receipts,
            held: held.into_iter().collect(),
        }
    }

    /// The offers for a peer that said `peer` (its [`Hello`]): learns its receipts
    /// ([`learn_receipts`](Self::learn_receipts)) and encounters first, then asks the router,
    /// leaving out what the peer holds, has had or has a receipt for. Deliveries come first,
    /// then the outbox, then relayed messages, oldest received first.
    pub fn offers_for(&mut self, peer: &Hello, now_ms: u64) -> Result<OfferList> {
        self.learn_receipts(&peer.receipts, now_ms)?;
        let tags: Vec<Tag> = peer
            .tags
            .iter()
            .take(MAX_TAGS)
            .filter_map(|t| DestTag::from_hex(t).ok().map(|t| t.0))
            .collect();
        let met = peer
            .met
            .iter()
            .take(MAX_MET)
            .filter_map(|m| DestTag::from_hex(&m.tag).ok().map(|t| (t.0, m.at_ms)))
            .collect();
        let view = PeerView {
            tags,
            met,
            activity: peer.activity,
        };
        self.router.met(&view, now_ms);

        let mut has: BTreeSet<String> = peer
            .held
            .iter()
            .take(MAX_HELD)
            .filter(|h| h.len() == HELD_PREFIX_HEX)
            .cloned()
            .collect();
        has.extend(
            peer.receipts
                .iter()
                .take(MAX_RECEIPTS)
                .filter_map(|r| Receipt::from_hex(r).ok())
                .map(|r| prefix(&r.id)),
        );
        let mut queue: Vec<(&MessageId, &MessageInfo)> = self
            .carried
            .iter()
            .filter(|(_, m)| !m.inbox && !m.header.is_expired(now_ms))
            .collect();
        queue.sort_by_key(|(id, m)| (!m.own, m.received_ms, **id));
        let held: Vec<Held> = queue.iter().map(|(_, m)| m.held).collect();
        let offers =
            self.router
                .offers(&held, &view, |i| has.contains(&prefix(queue[i].0)), now_ms);
        let items = offers
            .into_iter()
            .filter_map(|o| {
                let (id, m) = queue.get(o.index)?;
                Some(OfferItem {
                    id: id.to_hex(),
                    size: m.held.size,
                    expires_ms: m.held.expires_ms,
                    give: o.give,
                    keep: o.keep,
                    hops: m.held.hops,
                    focus_hops: m.held.focus_hops,
                    reason: OfferReason::of(o.reason),
                })
            })
            .take(self.config.offer_limit)
            .collect();
        Ok(OfferList { items })
    }

    /// Whether this node holds, is fetching, has had or has delivered the message, or holds
    /// its receipt.
    fn knows(&self, id: &MessageId) -> bool {
        self.carried.contains_key(id)
            || self.reserved.contains_key(id)
            || self.delivered.contains_key(id)
            || self.receipts.contains_key(id)
    }

    /// The offered messages to take: not those the node holds, is fetching, has had (a
    /// tombstone), delivered or holds a receipt for, nor expired, too large or malformed ones,
    /// nor those that do not fit the quota after eviction (see the [module docs](self)). Room
    /// for the accepted ones is reserved (evicting now) until [`on_pulled`](Self::on_pulled).
    pub fn accept(&mut self, offers: &OfferList, now_ms: u64) -> Result<Accept> {
        self.release_stale(now_ms);
        let min_size = len_u64(Header::LEN) + 16;
        let mut candidates: Vec<(MessageId, u64)> = Vec::new();
        for item in offers.items.iter().take(MAX_ITEMS) {
            let Ok(id) = MessageId::from_hex(&item.id) else {
                continue;
            };
            if self.knows(&id)
                || candidates.iter().any(|(c, _)| *c == id)
                || item.size > self.config.max_message_bytes
                || item.size < min_size
                || item.expires_ms <= now_ms
                || item.give == 0
            {
                continue;
            }
            candidates.push((id, item.size));
        }
        if candidates.is_empty() {
            return Ok(Accept::default());
        }
        // Tombstones: messages this node had.
        let had: BTreeSet<String> = self
            .db
            .all_docs(
                &AllDocsQuery {
                    keys: Some(candidates.iter().map(|(id, _)| id.doc_id()).collect()),
                    ..AllDocsQuery::default()
                },
                None,
            )?
            .rows
            .into_iter()
            .filter_map(|row| match row {
                AllDocsRow::Doc { id, .. } => Some(id),
                AllDocsRow::NotFound(_) => None,
            })
            .collect();
        if self.sweep_since.is_none() {
            self.sweep_since = Some(self.db.update_seq()?);
        }
        let mut ids = Vec::new();
        for (id, size) in candidates {
            if had.contains(&id.doc_id()) {
                continue;
            }
            match self.make_room(size, now_ms, None) {
                Ok(()) => {}
                Err(Error::QuotaExceeded { .. }) => continue,
                Err(e) => return Err(e),
            }
            self.reserved.insert(
                id,
                (size, now_ms.saturating_add(self.config.reservation_ms)),
            );
            ids.push(id.to_hex());
        }
        if self.reserved.is_empty() {
            self.sweep_since = None;
        }
        Ok(Accept { ids })
    }

    /// After the pull of `accept`'s documents (whether it finished or not): checks each
    /// accepted document that arrived — its id is the hash of its bytes, its size and expiry as
    /// offered, not expired — and deletes those that do not verify. A message for this node is
    /// opened (deleted if it does not open), queued for [`take_delivered`](Self::take_delivered)
    /// and its receipt stored; another is kept with its share of the copies. Releases the
    /// reservations and, once no pull is outstanding, deletes any other document that appeared
    /// meanwhile. Returns the ids that arrived and verified.
    pub fn on_pulled(
        &mut self,
        offers: &OfferList,
        accept: &Accept,
        now_ms: u64,
    ) -> Result<Received> {
        let mut received = Vec::new();
        let mut bad = Vec::new();
        for hex in accept.ids.iter().take(MAX_ITEMS) {
            let Ok(id) = MessageId::from_hex(hex) else {
                continue;
            };
            let Some((size, _)) = self.reserved.remove(&id) else {
                continue;
            };
            let Some(item) = offers.items.iter().find(|i| i.id == *hex) else {
                bad.push(id.doc_id());
                continue;
            };
            let doc = match self.db.get(&id.doc_id(), &GetOptions::default()) {
                Ok(doc) => doc,
                Err(e) if e.status() == 404 => continue,
                Err(e) => return Err(e.into()),
            };
            let message = match parse_message_doc(&doc.json, self.config.max_message_bytes) {
                Ok(m) => m,
                Err(_) => {
                    bad.push(id.doc_id());
                    continue;
                }
            };
            let header = *message.header();
            if message.id() != id
                || message.size() != size
                || header.expires_ms != item.expires_ms
                || header.is_expired(now_ms)
                || self.receipts.contains_key(&id)
            {
                bad.push(id.doc_id());
                continue;
            }
            if header.dest == self.tag {
                if self.deliver(&message, now_ms)? {
                    received.push(hex.clone());
                } else {
                    bad.push(id.doc_id());
                }
                continue;
            }
            let sent = Held {
                dest: header.dest.0,
                size,
                expires_ms: header.expires_ms,
                copies: item.give,
                focus_hops: item.focus_hops,
                hops: item.hops,
            };
            let give = item.give.min(self.router.mode().initial_copies()).max(1);
            let offer = Offer {
                index: 0,
                reason: item.reason.reason(),
                give,
                keep: item.keep,
            };
            let info = MessageInfo {
                header,
                held: offer.received(&sent),
                own: false,
                inbox: false,
                received_ms: now_ms,
            };
            self.db.put(None, state_doc(&id, &info), true)?;
            self.carried.insert(id, info);
            received.push(hex.clone());
        }
        self.purge(&bad, Vec::new())?;
        if self.reserved.is_empty() {
            self.sweep()?;
        }
        Ok(Received { ids: received })
    }

    /// Opens a message for this node and queues it; `false` when it does not open.
    fn deliver(&mut self, message: &SealedMessage, now_ms: u64) -> Result<bool> {
        let id = message.id();
        let Ok(opened) = seal::open(&self.beacon, message, now_ms) else {
            return Ok(false);
        };
        let header = *message.header();
        let info = MessageInfo {
            header,
            held: Held {
                dest: header.dest.0,
                size: message.size(),
                expires_ms: header.expires_ms,
                copies: 1,
                focus_hops: 0,
                hops: 0,
            },
            own: false,
            inbox: true,
            received_ms: now_ms,
        };
        let receipt = opened.receipt;
        let receipt_doc = DocUpdate {
            id: Some(receipt_doc_id(&id)),
            body: object(json!({
                "mesh": 1,
                "receipt": receipt.to_hex(),
                "expires_ms": header.expires_ms,
            })),
            ..DocUpdate::default()
        };
        self.db
            .bulk_docs(vec![Ok(state_doc(&id, &info)), Ok(receipt_doc)], true)?;
        self.receipts.insert(id, (receipt, header.expires_ms));
        self.carried.insert(id, info);
        self.inbox
            .insert(id, Delivered::opened(id, &header, opened));
        self.trim_receipts()?;
        Ok(true)
    }

    /// Deletes documents that appeared since the first outstanding accept and that the node
    /// does not know (a peer that sent more than it was asked for).
    fn sweep(&mut self) -> Result<()> {
        let Some(since) = self.sweep_since.take() else {
            return Ok(());
        };
        let changes = self.db.changes(
            &ChangesQuery {
                since,
                all_docs: true,
                ..ChangesQuery::default()
            },
            None,
        )?;
        let mut unknown = Vec::new();
        for change in changes.results {
            if change.deleted {
                continue;
            }
            let known = if let Ok(id) = MessageId::from_doc_id(&change.id) {
                self.carried.contains_key(&id)
            } else if let Some(hex) = change.id.strip_prefix(RECEIPT_PREFIX) {
                MessageId::from_hex(hex).is_ok_and(|id| self.receipts.contains_key(&id))
            } else {
                false
            };
            if !known {
                unknown.push(change.id);
            }
        }
        self.purge(&unknown, Vec::new())
    }

    /// On the sender, once the peer said what it `received` of `offers` (made by
    /// [`offers_for`](Self::offers_for)): each message keeps the offer's `keep` copies (0
    /// deletes it here). Returns how many of the offered messages the peer received.
    pub fn on_received(
        &mut self,
        offers: &OfferList,
        received: &Received,
        now_ms: u64,
    ) -> Result<usize> {
        let _ = now_ms;
        let mut drop = Vec::new();
        let mut count = 0;
        for hex in received.ids.iter().take(MAX_ITEMS) {
            let Some(item) = offers.items.iter().find(|i| i.id == *hex) else {
                continue;
            };
            let Ok(id) = MessageId::from_hex(hex) else {
                continue;
            };
            count += 1;
            let Some(info) = self.carried.get_mut(&id) else {
                continue;
            };
            let keep = item.keep.min(info.held.copies);
            if keep == 0 {
                drop.push(id);
            } else if keep != info.held.copies {
                info.held.copies = keep;
                let update = state_doc(&id, info);
                self.db.put(None, update, true)?;
            }
        }
        self.delete_messages(&drop)?;
        Ok(count)
    }

    /// Learns delivery receipts (hex, as in a [`Hello`]): a receipt that clears a message
    /// this node carries deletes the message, and is kept (and told to peers) until the
    /// message's expiry. Receipts for messages the node does not hold are not kept (they
    /// cannot be checked). Returns how many messages were cleared.
    pub fn learn_receipts(&mut self, receipts: &[String], now_ms: u64) -> Result<usize> {
        let mut cleared = Vec::new();
        let mut docs = Vec::new();
        for text in receipts.iter().take(MAX_RECEIPTS) {
            let Ok(receipt) = Receipt::from_hex(text) else {
                continue;
            };
            let Some(info) = self.carried.get(&receipt.id) else {
                continue;
            };
            if info.inbox || !receipt.clears(&info.header) {
                continue;
            }
            let expires = info.header.expires_ms;
            cleared.push(receipt.id);
            if expires > now_ms && !self.receipts.contains_key(&receipt.id) {
                docs.push(Ok(DocUpdate {
                    id: Some(receipt_doc_id(&receipt.id)),
                    body: object(json!({
                        "mesh": 1,
                        "receipt": receipt.to_hex(),
                        "expires_ms": expires,
                    })),
                    ..DocUpdate::default()
                }));
                self.receipts.insert(receipt.id, (receipt, expires));
            }
        }
        if !docs.is_empty() {
            self.db.bulk_docs(docs, true)?;
        }
        self.delete_messages(&cleared)?;
        self.trim_receipts()?;
        Ok(cleared.len())
    }

    /// Keeps at most `max_receipts` receipts, those expiring last.
    fn trim_receipts(&mut self) -> Result<()> {
        let excess = self.receipts.len().saturating_sub(self.config.max_receipts);
        if excess == 0 {
            return Ok(());
        }
        let mut by_expiry: Vec<(u64, MessageId)> = self
            .receipts
            .iter()
            .map(|(id, (_, at))| (*at, *id))
            .collect();
        by_expiry.sort();
        let gone: Vec<MessageId> = by_expiry
            .into_iter()
            .take(excess)
            .map(|(_, id)| id)
            .collect();
        self.drop_receipts(&gone)
    }

    fn drop_receipts(&mut self, ids: &[MessageId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let doc_ids: Vec<String> = ids.iter().map(receipt_doc_id).collect();
        self.purge(&doc_ids, Vec::new())?;
        for id in ids {
            self.receipts.remove(id);
        }
        Ok(())
    }

    /// Deletes expired messages (outbox and relayed; the inbox waits for
    /// [`take_delivered`](Self::take_delivered)), receipts and delivered ids. Returns how many
    /// messages were deleted.
    pub fn expire(&mut self, now_ms: u64) -> Result<usize> {
        self.release_stale(now_ms);
        if self.reserved.is_empty() && self.sweep_since.is_some() {
            self.sweep()?;
        }
        let messages: Vec<MessageId> = self
            .carried
            .iter()
            .filter(|(_, m)| !m.inbox && m.header.is_expired(now_ms))
            .map(|(id, _)| *id)
            .collect();
        self.delete_messages(&messages)?;
        let receipts: Vec<MessageId> = self
            .receipts
            .iter()
            .filter(|(_, (_, at))| *at <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        self.drop_receipts(&receipts)?;
        let before = self.delivered.len();
        self.delivered.retain(|_, at| *at > now_ms);
        if self.delivered.len() != before {
            let update = self.delivered_doc();
            self.db.put(None, update, true)?;
        }
        Ok(messages.len())
    }

    /// Releases reservations whose pull never reported back.
    fn release_stale(&mut self, now_ms: u64) {
        self.reserved.retain(|_, (_, until)| *until > now_ms);
    }

    fn delivered_doc(&self) -> DocUpdate {
        let ids: Map<String, Value> = self
            .delivered
            .iter()
            .map(|(id, at)| (id.to_hex(), Value::from(*at)))
            .collect();
        DocUpdate {
            id: Some(DELIVERED_DOC.to_owned()),
            body: object(json!({ "ids": ids })),
            ..DocUpdate::default()
        }
    }

    /// The messages delivered to this node since the last call, each exactly once: they leave
    /// the database and their ids are remembered until they expire (or past
    /// [`NodeConfig::max_delivered`], the ones expiring first are forgotten).
    pub fn take_delivered(&mut self) -> Result<Vec<Delivered>> {
        if self.inbox.is_empty() {
            return Ok(Vec::new());
        }
        let taken: Vec<Delivered> = std::mem::take(&mut self.inbox).into_values().collect();
        for d in &taken {
            let expires = self.carried.get(&d.id).map_or(0, |m| m.header.expires_ms);
            self.delivered.insert(d.id, expires);
        }
        let excess = self
            .delivered
            .len()
            .saturating_sub(self.config.max_delivered);
        if excess > 0 {
            let mut by_expiry: Vec<(u64, MessageId)> =
                self.delivered.iter().map(|(id, at)| (*at, *id)).collect();
            by_expiry.sort();
            for (_, id) in by_expiry.into_iter().take(excess) {
                self.delivered.remove(&id);
            }
        }
        let ids: Vec<MessageId> = taken.iter().map(|d| d.id).collect();
        let doc_ids: Vec<String> = ids.iter().map(MessageId::doc_id).collect();
        let mut extra: Vec<DocUpdate> = ids.iter().map(|id| local_delete(state_id(id))).collect();
        extra.push(self.delivered_doc());
        self.purge(&doc_ids, extra)?;
        for id in &ids {
            self.carried.remove(id);
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests;
