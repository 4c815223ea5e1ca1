//! What the replication-over-a-link tests share: a couch-sync router served in mutual TLS on
//! every inbound stream of a link, the documents they replicate, and how to read them back.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adhoc_wireless::sim::Rng;
use adhoc_wireless::{Inbound, Incoming};
use axum::http::request::Parts;
use couch_sync::server::{Authorize, Decision, Operation};
use couch_sync::{AllDocsQuery, Database, DocUpdate, Encoding};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use public_key_identity::tls::server_config;
use public_key_identity::{ClientAuth, Identity, KeyId, Peer};
use serde_json::json;

pub const DOCS: usize = 300;
pub const ATTACHMENT_BYTES: usize = 96 * 1024;

/// Admits only requests whose TLS client proved this key.
pub struct OnlyKey(pub KeyId);

impl Authorize for OnlyKey {
    fn authorize(&self, request: &Parts, _: &Operation<'_>) -> Decision {
        match request.extensions.get::<Peer>() {
            Some(Peer::Key(k)) if *k == self.0 => Decision::Allow,
            _ => Decision::Forbidden("not the paired key".to_owned()),
        }
    }
}

/// Serves `app` in mutual TLS on every stream of `inbox`; counts failed handshakes.
pub fn serve(
    mut inbox: Incoming,
    identity: &Identity,
    app: axum::Router,
    failed: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(identity, ClientAuth::Required).unwrap(),
    ));
    tokio::spawn(async move {
        while let Some(inbound) = inbox.next().await {
            let Inbound::Stream { stream, .. } = inbound else {
                continue;
            };
            let (acceptor, app, failed) = (acceptor.clone(), app.clone(), failed.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(tls) => tls,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                };
                let peer = Peer::of(tls.get_ref().1);
                let service = tower::service_fn(
                    move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer);
                        tower::ServiceExt::oneshot(app.clone(), req)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                    .await;
            });
        }
    })
}

/// A few hundred documents and one with an attachment; returns the attachment's bytes.
pub fn seed(db: &Database) -> Vec<u8> {
    let docs = (0..DOCS)
        .map(|i| {
            let body = json!({"n": i, "text": format!("document number {i}"), "even": i % 2 == 0});
            Ok(DocUpdate {
                id: Some(format!("doc-{i:04}")),
                body: body.as_object().unwrap().clone(),
                ..DocUpdate::default()
            })
        })
        .collect();
    let written = db.bulk_docs(docs, true).unwrap();
    assert!(written.iter().all(|r| r.result.is_ok()));
    let mut rng = Rng::new(42);
    let content: Vec<u8> = (0..ATTACHMENT_BYTES)
        .map(|_| rng.next_u64() as u8)
        .collect();
    let prepared = couch_sync::PreparedAttachment::from_bytes(
        "application/octet-stream",
        &content,
        false,
        &std::env::temp_dir(),
    )
    .unwrap();
    db.put_attachment("with-attachment", None, "blob.bin", prepared)
        .unwrap();
    content
}

pub fn doc_count(db: &Database) -> usize {
    db.all_docs(&AllDocsQuery::default(), None)
        .unwrap()
        .rows
        .len()
}

pub fn attachment_bytes(db: &Database) -> Vec<u8> {
    let (_, att) = db.attachment("with-attachment", "blob.bin", None).unwrap();
    assert_eq!(att.encoding, Encoding::Identity);
    let mut out = Vec::new();
    for i in 0..att.chunks() {
        out.extend(db.attachment_chunk(&att, i).unwrap());
    }
    out
}
