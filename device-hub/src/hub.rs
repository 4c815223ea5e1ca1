//! The hub's state: identity, store, the live ACL policy, sessions, and the system databases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use acls_and_groups::{
    AclScope, GroupName, Member, Policy, Principal, REVOCATION_PREFIX, Revocation, Right,
};
use anyhow::{Context, Result, anyhow};
use couch_sync::{AllDocsQuery, AllDocsRow, Database, DocUpdate, GetOptions, Store, StoreConfig};
use public_key_identity::httpkey::Host;
use public_key_identity::{HttpKeyUrl, Identity, IdentityCard, KeyAlgorithm, KeyId, Keystore};
use serde_json::{Map, Value, json};

use crate::config::{Config, Layout};

/// The system database holding the ACL policy (replicated between the person's devices).
pub const POLICY_DB: &str = "hub-policy";
/// The system database holding identity cards (own, devices', friends'); friends may read it.
pub const DIRECTORY_DB: &str = "hub-directory";

/// The hub's own databases (its policy and directory): never replicated with a cloud peer (a
/// cloud operator could read who the person trusts, and a pulled policy would let it grant).
pub fn is_internal_db(db: &str) -> bool {
    db == POLICY_DB || db == DIRECTORY_DB
}

/// Milliseconds since the epoch (the hub is the one crate that reads the wall clock).
#[allow(clippy::disallowed_methods)]
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random token (32 hex digits).
pub fn random_token() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

/// Everything a running hub shares between requests and tasks.
pub struct Hub {
    /// Settings.
    pub config: Config,
    /// The data directory.
    pub layout: Layout,
    /// The device's identity (Ed25519): what peers and apps pin.
    pub device: Arc<Identity>,
    /// The P-256 identity browsers see (named in the card's aliases).
    pub browser: Arc<Identity>,
    /// The databases.
    pub store: Store,
    policy: RwLock<Arc<Policy>>,
    /// Bumped whenever the live policy is replaced (the listener cuts revoked keys on it).
    policy_changes: tokio::sync::watch::Sender<u64>,
    /// Browser sessions of the owner: session id → expiry (ms).
    pub sessions: Mutex<HashMap<String, u64>>,
    /// One-time UI login tokens: token → expiry (ms).
    pub ui_tokens: Mutex<HashMap<String, u64>>,
    /// Pairings in progress.
    pub pairing: crate::pairing::Pairings,
    /// Replication state per peer and database.
    pub replication: crate::replication::Manager,
}

impl Hub {
    /// Opens (first run: creates) the hub in `layout`.
    pub fn open(layout: Layout, config: Config) -> Result<Arc<Hub>> {
        let keystore = Keystore::open(layout.keys())?;
        let (device, created) = keystore.load_or_create("device", KeyAlgorithm::Ed25519)?;
        let (browser, _) = keystore.load_or_create("browser", KeyAlgorithm::EcdsaP256)?;
        if created {
            tracing::info!(key_id = %device.key_id(), "created the device identity");
        }
        let store = Store::open(layout.store(), StoreConfig::default())
            .with_context(|| format!("opening the store in {}", layout.store().display()))?;
        for db in [POLICY_DB, DIRECTORY_DB] {
            if !store.exists(db) {
                store.create_db(db)?;
            }
        }
        let owner = device.key_id();
        let hub = Arc::new(Hub {
            config,
            layout: layout.clone(),
            device: Arc::new(device),
            browser: Arc::new(browser),
            store,
            policy: RwLock::new(Arc::new(Policy::new(owner))),
            policy_changes: tokio::sync::watch::Sender::new(0),
            sessions: Mutex::new(HashMap::new()),
            ui_tokens: Mutex::new(HashMap::new()),
            pairing: crate::pairing::Pairings::default(),
            replication: crate::replication::Manager::default(),
        });
        hub.bootstrap_policy()?;
        hub.reload_policy()?;
        hub.publish_card()?;
        Ok(hub)
    }

    /// The device's key id.
    pub fn key_id(&self) -> KeyId {
        self.device.key_id()
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// A receiver that sees a new value whenever the live policy was replaced.
    pub fn policy_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.policy_changes.subscribe()
    }

    /// Whether `key` was revoked (and is not this device's own key, which is never refused
    /// here): the hub then serves it nothing and replicates nothing with it.
    pub fn is_revoked(&self, key: &KeyId) -> bool {
        self.policy().is_revoked(&Principal::Key(*key))
    }

    /// Revokes `key` (a lost device's, say) in the replicated policy, as revoked by this
    /// device now. Returns whether that changed anything (a key revoked before keeps its first
    /// record) and the revocation in force. Refuses this device's own key.
    pub fn revoke_key(&self, key: KeyId) -> Result<(bool, Revocation)> {
        let revocation = Revocation::new(key, self.key_id(), now_millis());
        let mut changed = false;
        self.update_policy(|policy| {
            changed = policy.revoke_key(revocation.clone())?;
            Ok(())
        })?;
        let current = self.policy().revocation(&key).cloned();
        if changed {
            tracing::warn!(%key, "key revoked: refused from now on, on every device of this person once they sync");
        }
        Ok((changed, current.unwrap_or(revocation)))
    }

    /// Makes `policy` the live policy, keeping every revocation of the one it replaces (a
    /// save from a copy taken before a revocation replicated in must not drop it).
    fn set_live(&self, mut policy: Policy) {
        let mut current = self.policy.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = policy.merge_revocations(current.revocations()) {
            tracing::error!(error = %e, "revocations not merged; keeping the previous policy");
            return;
        }
        *current = Arc::new(policy);
        drop(current);
        self.policy_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Where peers reach this hub.
    pub fn endpoints(&self) -> Vec<HttpKeyUrl> {
        endpoints_for(&self.config, self.key_id())
    }

    /// The signed identity card (with the browser key as alias).
    pub fn card(&self) -> Result<IdentityCard> {
        card_for(&self.device, &self.browser, &self.config)
    }

    fn db(&self, name: &str) -> Result<Database> {
        Ok(self.store.db(name)?)
    }

    /// First run: my devices (`me`, so far this one) administer everything; friends may read
    /// the directory.
    fn bootstrap_policy(&self) -> Result<()> {
        let db = self.db(POLICY_DB)?;
        if db.info()?.doc_count > 0 {
            return Ok(());
        }
        let mut policy = Policy::new(self.key_id());
        let me: GroupName = "me".parse()?;
        policy.add_member(&me, Member::Key(self.key_id()))?;
        policy.set_group(acls_and_groups::Group::new("friends".parse()?))?;
        policy.grant(&AclScope::AllDatabases, Right::Admin, Member::group("me")?)?;
        policy.grant(
            &AclScope::database(DIRECTORY_DB)?,
            Right::Read,
            Member::group("friends")?,
        )?;
        self.save_policy(&policy)
    }

    /// Rebuilds the in-memory policy from the policy database. An invalid document (say, from a
    /// newer version on another device) keeps the previous policy, and is logged; the
    /// revocations among the documents apply even then.
    ///
    /// Revocations only accumulate: those of the previous policy and those this device
    /// remembers ([`crate::revocation`]) are merged in, and any missing from the database are
    /// put back.
    pub fn reload_policy(&self) -> Result<()> {
        let docs = self.policy_docs()?;
        let previous = self.policy();
        let (mut policy, invalid) = match Policy::from_documents(self.key_id(), docs.values()) {
            Ok(policy) => (policy, None),
            Err(e) => {
                tracing::error!(error = %e, "the policy database holds an invalid document; keeping the previous policy (with the revocations of the database)");
                let mut policy = (*previous).clone();
                policy.merge_revocations(&crate::revocation::revocations_in(docs.values()))?;
                (policy, Some(e))
            }
        };
        policy.merge_revocations(previous.revocations())?;
        let db = self.db(POLICY_DB)?;
        policy.merge_revocations(&crate::revocation::remembered(&db))?;
        if let Err(e) = crate::revocation::reassert(&db, &policy, &docs) {
            tracing::warn!(error = %format!("{e:#}"), "could not put a revocation back into the policy database");
        }
        if let Err(e) = crate::revocation::remember(&db, &policy) {
            tracing::warn!(error = %format!("{e:#}"), "could not record the revocations");
        }
        self.set_live(policy);
        match invalid {
            Some(e) => Err(anyhow!("invalid policy document: {e}")),
            None => Ok(()),
        }
    }

    fn policy_docs(&self) -> Result<HashMap<String, Value>> {
        let db = self.db(POLICY_DB)?;
        let all = db.all_docs(
            &AllDocsQuery {
                include_docs: true,
                ..AllDocsQuery::default()
            },
            None,
        )?;
        Ok(all
            .rows
            .into_iter()
            .filter_map(|row| match row {
                AllDocsRow::Doc {
                    id, doc: Some(doc), ..
                } => Some((id, doc)),
                _ => None,
            })
            .collect())
    }

    /// Writes `policy` into the policy database (only the documents that changed) and makes it
    /// the live policy. Revocation documents are only ever added: one already stored is left as
    /// it is, and none is deleted.
    pub fn save_policy(&self, policy: &Policy) -> Result<()> {
        let db = self.db(POLICY_DB)?;
        let existing = self.policy_docs()?;
        let wanted: HashMap<String, Value> = policy
            .to_documents()
            .into_iter()
            .map(|d| (d.id(), d.to_value()))
            .collect();
        for (id, value) in &wanted {
            let current = existing.get(id);
            let same = current.is_some_and(|c| strip_meta(c) == strip_meta(value));
            let revocation_stored = id.starts_with(REVOCATION_PREFIX) && current.is_some();
            if same || revocation_stored {
                continue;
            }
            let mut body = match value {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            body.remove("_id");
            let rev = current
                .and_then(|c| c.get("_rev"))
                .and_then(Value::as_str)
                .map(|r| r.parse())
                .transpose()?;
            db.put(
                Some(id),
                DocUpdate {
                    rev,
                    body,
                    ..DocUpdate::default()
                },
                true,
            )?;
        }
        for (id, doc) in &existing {
            if !wanted.contains_key(id) && !id.starts_with(REVOCATION_PREFIX) {
                let rev = doc
                    .get("_rev")
                    .and_then(Value::as_str)
                    .map(|r| r.parse())
                    .transpose()?;
                db.put(
                    Some(id),
                    DocUpdate {
                        rev,
                        deleted: true,
                        ..DocUpdate::default()
                    },
                    true,
                )?;
            }
        }
        if let Err(e) = crate::revocation::remember(&db, policy) {
            tracing::warn!(error = %format!("{e:#}"), "could not record the revocations");
        }
        self.set_live(policy.clone());
        Ok(())
    }

    /// Changes the policy with `f` and saves it.
    pub fn update_policy(&self, f: impl FnOnce(&mut Policy) -> Result<()>) -> Result<()> {
        let mut policy = (*self.policy()).clone();
        f(&mut policy)?;
        self.save_policy(&policy)
    }

    /// Stores a card in the directory (`card:<key id>`), replacing an older one.
    pub fn store_card(&self, card: &IdentityCard) -> Result<()> {
        let db = self.db(DIRECTORY_DB)?;
        let id = format!("card:{}", card.key_id());
        let current = db.get(&id, &GetOptions::default()).ok();
        if let Some(cur) = &current {
            if cur.json.get("serial").and_then(Value::as_u64) >= Some(card.serial())
                && cur.json.get("card").and_then(Value::as_str) == Some(card.to_json().as_str())
            {
                return Ok(());
            }
        }
        let body = json!({
            "type": "identity-card",
            "key_id": card.key_id().to_string(),
            "name": card.name(),
            "endpoints": card.endpoints().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "serial": card.serial(),
            "card": card.to_json(),
        });
        db.put(
            Some(&id),
            DocUpdate {
                rev: current.map(|c| c.rev),
                body: body.as_object().cloned().unwrap_or_default(),
                ..DocUpdate::default()
            },
            true,
        )?;
        Ok(())
    }

    /// The card of `key` from the directory, verified.
    pub fn card_of(&self, key: &KeyId) -> Option<IdentityCard> {
        let db = self.db(DIRECTORY_DB).ok()?;
        let doc = db
            .get(&format!("card:{key}"), &GetOptions::default())
            .ok()?;
        let card = IdentityCard::from_json(doc.json.get("card")?.as_str()?).ok()?;
        (card.key_id() == *key).then_some(card)
    }

    fn publish_card(&self) -> Result<()> {
        self.store_card(&self.card()?)
    }

    /// Whether a browser session cookie value is a live owner session.
    pub fn session_valid(&self, session: &str) -> bool {
        let now = now_millis();
        self.sessions
            .lock()
            .map(|mut s| {
                s.retain(|_, exp| *exp > now);
                s.contains_key(session)
            })
            .unwrap_or(false)
    }
}

/// The httpkey URLs of a hub with `config` and key `key`: `advertise`, else the listen address
/// (an unspecified listen address is advertised as 127.0.0.1).
pub fn endpoints_for(config: &Config, key: KeyId) -> Vec<HttpKeyUrl> {
    let mut hosts: Vec<String> = config.advertise.clone();
    if hosts.is_empty() {
        let ip = match config.listen.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        hosts.push(format!("{ip}:{}", config.listen.port()));
    }
    hosts
        .iter()
        .filter_map(|hp| {
            let (host, port) = hp.rsplit_once(':')?;
            let host = Host::parse(host).ok()?;
            Some(HttpKeyUrl::new(host, port.parse().ok()?, key))
        })
        .collect()
}

/// The signed identity card of a hub: its name, endpoints, and the browser key as alias.
pub fn card_for(device: &Identity, browser: &Identity, config: &Config) -> Result<IdentityCard> {
    Ok(IdentityCard::sign(
        device,
        &config.name,
        endpoints_for(config, device.key_id()),
        vec![browser.key_id()],
        now_millis() / 1000,
    )?)
}

fn strip_meta(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}
