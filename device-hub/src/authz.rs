//! Every request to the hub is decided here: couch-sync's authorization hook, answered by
//! acls-and-groups with the caller's TLS key (or an owner browser session).
//!
//! | operation | needs |
//! |---|---|
//! | server info, `_all_dbs` | nothing (`_all_dbs` then lists only readable databases) |
//! | read a database (docs, attachments, `_all_docs`, `_changes`, `_bulk_get`, `_revs_diff`) | read; documents with a `thali_readers` list only for those readers (admins see all) |
//! | read a view (`_design/D/_view/V`), or `_find` through the index `D/V` | read on the database, or the view's own read grant `D/V` (`device-hub grant DB/D/V MEMBER read`); documents with a `thali_readers` list only for those readers |
//! | write documents | write (and the database under its quota) |
//! | write `_design/` documents | create-view (write) |
//! | write `_local/` documents (replication checkpoints) | read or write |
//! | create or delete a database, `_compact`, `_revs_limit` | admin |
//! | `_replicate`, `_active_tasks` | the owner |
//!
//! A revoked key (`device-hub revoke KEYID`) gets 403 for everything, server info included
//! (the listener refuses it in the TLS handshake before it gets here). Anonymous callers are
//! answered 401, identified ones 403, both with the policy's explanation.
//! Design-document functions (`validate_doc_update`, filters) see the caller as CouchDB's
//! `userCtx`: `name` its key id, `roles` its groups (and `_admin` for admins and the owner).

use std::sync::Arc;

use acls_and_groups::{Action, Policy, Principal, READERS_FIELD, Resource, document_readers};
use axum::http::request::Parts;
use couch_sync::DocFilter;
use couch_sync::server::{Authorize, Decision, Operation};
use public_key_identity::Peer;
use serde_json::{Map, Value};

use crate::hub::Hub;

/// The cookie that carries an owner's browser session.
pub const SESSION_COOKIE: &str = "hub_session";

/// The hook.
pub struct HubAuth {
    hub: Arc<Hub>,
}

impl HubAuth {
    /// A hook deciding with `hub`'s live policy.
    pub fn new(hub: Arc<Hub>) -> HubAuth {
        HubAuth { hub }
    }
}

/// The value of cookie `name` in a request.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who is calling: the owner (own key, or a live browser session), a key, or anonymous.
pub fn principal(hub: &Hub, parts: &Parts) -> Principal {
    if cookie(parts, SESSION_COOKIE).is_some_and(|s| hub.session_valid(s)) {
        return Principal::Owner;
    }
    let peer = parts
        .extensions
        .get::<Peer>()
        .copied()
        .unwrap_or(Peer::Anonymous);
    Principal::from(peer)
}

/// Hides documents whose reader list excludes the caller.
struct Readers {
    policy: Arc<Policy>,
    principal: Principal,
    db: String,
}

impl DocFilter for Readers {
    fn allows(&self, id: &str, doc: &Map<String, Value>) -> bool {
        let Some(field) = doc.get(READERS_FIELD) else {
            return true;
        };
        let mut probe = Map::new();
        probe.insert("_id".into(), Value::String(id.to_owned()));
        probe.insert(READERS_FIELD.into(), field.clone());
        match document_readers(&Value::Object(probe)) {
            Ok(Some(readers)) => {
                self.policy
                    .may(
                        self.principal,
                        Action::Read,
                        Resource::Document {
                            db: &self.db,
                            readers: Some(&readers),
                        },
                    )
                    .allowed
            }
            Ok(None) => true,
            // A malformed list fails closed: admins and the owner only (and they are not filtered).
            Err(_) => false,
        }
    }
}

impl HubAuth {
    fn decide(&self, principal: Principal, action: Action, db: &str) -> Result<(), Decision> {
        let decision = self
            .hub
            .policy()
            .may(principal, action, Resource::Database(db));
        if decision.allowed {
            return Ok(());
        }
        let reason = decision.to_string();
        Err(match principal {
            Principal::Anonymous => Decision::Unauthorized(reason),
            _ => Decision::Forbidden(reason),
        })
    }

    fn under_quota(&self, db: &str) -> Result<(), Decision> {
        let Some(quota) = self.hub.config.quotas.get(db) else {
            return Ok(());
        };
        let used = self
            .hub
            .store
            .db_if_open(db)
            .or_else(|| self.hub.store.db(db).ok())
            .and_then(|d| d.info().ok())
            .map_or(0, |i| i.active_size);
        if used >= *quota {
            // 507, as CouchDB answers when its disk is full: replicators retry, never skip.
            return Err(Decision::InsufficientStorage(format!(
                "database {db} is over its quota: {used} bytes stored, {quota} allowed"
            )));
        }
        Ok(())
    }
}

impl Authorize for HubAuth {
    /// What `validate_doc_update` and filter functions see as `userCtx`: the caller's key id
    /// as `name` (`null` for anonymous callers), the groups it is in as `roles`, and `_admin`
    /// for the owner and the database's admins (CouchDB's administrator role).
    fn user_ctx(&self, parts: &Parts, db: &str) -> Value {
        let who = principal(&self.hub, parts);
        let policy = self.hub.policy();
        let mut roles: Vec<Value> = policy
            .groups_of(&who)
            .iter()
            .map(|g| Value::String(g.as_str().to_owned()))
            .collect();
        if policy.is_owner(&who)
            || policy
                .may(who, Action::Admin, Resource::Database(db))
                .allowed
        {
            roles.push(Value::String("_admin".into()));
        }
        let name = match who {
            Principal::Key(key) => Value::String(key.to_string()),
            Principal::Owner => Value::String(policy.owner().to_string()),
            _ => Value::Null,
        };
        serde_json::json!({"db": db, "name": name, "roles": roles})
    }

    fn authorize(&self, parts: &Parts, op: &Operation<'_>) -> Decision {
        let who = principal(&self.hub, parts);
        let policy = self.hub.policy();
        if policy.is_revoked(&who) {
            return Decision::Forbidden(format!("{who} was revoked: this hub serves it nothing"));
        }
        let owner = policy.is_owner(&who);
        let result = match *op {
            Operation::Server | Operation::ListDbs => Ok(()),
            Operation::CreateDb { db } | Operation::DeleteDb { db } | Operation::AdminDb { db } => {
                self.decide(who, Action::Admin, db)
            }
            Operation::ReadDb { db } => match self.decide(who, Action::Read, db) {
                Ok(())
                    if owner
                        || policy
                            .may(who, Action::Admin, Resource::Database(db))
                            .allowed =>
                {
                    Ok(())
                }
                Ok(()) => {
                    return Decision::AllowFiltered(Arc::new(Readers {
                        policy,
                        principal: who,
                        db: db.to_owned(),
                    }));
                }
                Err(d) => Err(d),
            },
            // A view (or a Mango index used by `_find`): its own read grant, or read on the
            // database; documents hidden by their reader list stay hidden in its rows.
            Operation::ReadView { db, ddoc, view } => {
                let name = format!("{ddoc}/{view}");
                let decision = policy.may(who, Action::Read, Resource::View { db, view: &name });
                if !decision.allowed {
                    let reason = decision.to_string();
                    return match who {
                        Principal::Anonymous => Decision::Unauthorized(reason),
                        _ => Decision::Forbidden(reason),
                    };
                }
                if owner
                    || policy
                        .may(who, Action::Admin, Resource::Database(db))
                        .allowed
                {
                    Ok(())
                } else {
                    return Decision::AllowFiltered(Arc::new(Readers {
                        policy,
                        principal: who,
                        db: db.to_owned(),
                    }));
                }
            }
            // The policy itself: changing ACLs needs admin.
            Operation::WriteDb { db } | Operation::WriteDesign { db }
                if db == crate::hub::POLICY_DB =>
            {
                self.decide(who, Action::Admin, db)
            }
            Operation::WriteDb { db } => self
                .decide(who, Action::Write, db)
                .and_then(|()| self.under_quota(db)),
            Operation::WriteDesign { db } => self
                .decide(who, Action::CreateView, db)
                .and_then(|()| self.under_quota(db)),
            // Readers write their replication checkpoints; quotas apply to those too.
            Operation::WriteLocal { db } => self
                .decide(who, Action::Read, db)
                .or_else(|_| self.decide(who, Action::Write, db))
                .and_then(|()| self.under_quota(db)),
            Operation::Replicate { .. } | Operation::ActiveTasks if owner => Ok(()),
            _ if owner => Ok(()),
            _ => Err(match who {
                Principal::Anonymous => {
                    Decision::Unauthorized("only the device's owner may do this".into())
                }
                _ => Decision::Forbidden("only the device's owner may do this".into()),
            }),
        };
        match result {
            Ok(()) => Decision::Allow,
            Err(d) => d,
        }
    }
}
