//! The async edge (feature `net`): one session between two [`Node`]s over any adhoc-wireless
//! [`Link`] — the simulated radio, TCP on the LAN, Tor, Bluetooth streams.
//!
//! An [`Exchange`] owns a node, the identity it proves in TLS and the couch-sync [`Store`] its
//! database lives in. [`Exchange::serve`] answers every stream a link brings in;
//! [`Exchange::session`] meets a peer at an address whose key id the caller knows (from its
//! advert). Every wait is bounded by [`ExchangeConfig::step_timeout_ms`] on the [`Clock`]
//! given, so sessions run on simulated time in tests.
//!
//! # Streams
//!
//! The initiator opens every stream of a session on the link, and its first byte says what it
//! is for; TLS follows (both ends prove their keys: `public_key_identity::tls`, the server with
//! a required client certificate, the client pinned to the peer's key id):
//!
//! | first byte | then | TLS server | what |
//! |---|---|---|---|
//! | `C` (0x43) | TLS | the responder | the control stream: the framed JSON messages below |
//! | `D` (0x44) | TLS | the responder | HTTP/1.1: the initiator pulls from the responder's couch-sync server |
//! | `R` (0x52) | the 16-byte session token, then TLS | the initiator | HTTP/1.1 the other way: the responder pulls from the initiator's server |
//!
//! Reverse (`R`) streams let the responder pull over links where it cannot dial back (a TCP
//! client's port, a Tor client): the responder asks for one on the control stream when its
//! replicator needs a connection (`need_stream`, at most
//! [`ExchangeConfig::max_reverse_streams`] per session), and the token it chose in its hello
//! ties the stream to the session.
//!
//! # The control stream
//!
//! Each message is an adhoc-wireless frame ([`adhoc_wireless::frame`]: `0x02`, a `u32` length,
//! at most 64 KiB) holding one JSON object with a `type`:
//!
//! 1. initiator → `{"type":"hello","hello":{…},"db":"<its database>"}`; responder →
//!    the same with `"token":"<32 hex>"`.
//! 2. initiator → `{"type":"offers","offers":{…}}`; responder → its own.
//! 3. responder → `{"type":"accept","accept":{…}}`; initiator → its own.
//! 4. The initiator pulls the ids the responder offered and it accepted (`D` streams), then
//!    → `{"type":"received","received":{…}}`.
//! 5. The responder pulls the other way (`R` streams, each asked for with
//!    `{"type":"need_stream"}`), then → `{"type":"received",…}`. The session ends.
//!
//! The [`Hello`], [`OfferList`], [`Accept`] and [`Received`] bodies are the node's
//! ([`node`](crate::node) documents them and their bounds).
//!
//! # What a peer may do on our server
//!
//! Only a key that is in a session with us, and only while it is: `GET /`, reads of our mesh
//! database in which the only visible documents are the ones it accepted in that session, and
//! `PUT` of a replication checkpoint (`_local/<32 hex>`: never the node's own `_local` state),
//! deleted when the session ends. Everything else is refused.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use adhoc_wireless::{Address, BoxedStream, Inbound, Incoming, Link, frame};
use axum::http::Method;
use axum::http::request::Parts;
use couch_sync::clock::Clock;
use couch_sync::replicate::{
    BoxStream, Connecting, Connector, Endpoint, Remote, Replication, ReplicationOptions,
    RetryPolicy,
};
use couch_sync::server::{Authorize, Decision, Operation, ServerConfig, router};
use couch_sync::{DocFilter, Store};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use public_key_identity::tls::{client_config, server_config, server_name};
use public_key_identity::{ClientAuth, Identity, KeyId, Peer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::node::{Accept, Hello, Node, OfferList, Received};

/// First byte of a control stream.
const KIND_CONTROL: u8 = b'C';
/// First byte of a stream on which the initiator pulls.
const KIND_DATA: u8 = b'D';
/// First byte of a reverse stream (then the session token).
const KIND_REVERSE: u8 = b'R';
/// The host name in the URLs of the peer's database (the connector ignores it).
const PEER_HOST: &str = "mesh-peer";

/// Settings of an [`Exchange`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExchangeConfig {
    /// The longest wait for any one step: a stream to open, a handshake, a control message,
    /// a replication request without progress. Default 30 s.
    pub step_timeout_ms: u64,
    /// The longest a whole pull may take. Default 10 minutes.
    pub pull_timeout_ms: u64,
    /// Reverse streams a responder may ask for in one session. Default 4.
    pub max_reverse_streams: u32,
    /// Inbound streams handled at once (more are dropped). Default 32.
    pub max_inbound: usize,
}

impl Default for ExchangeConfig {
    fn default() -> ExchangeConfig {
        ExchangeConfig {
            step_timeout_ms: 30_000,
            pull_timeout_ms: 600_000,
            max_reverse_streams: 4,
            max_inbound: 32,
        }
    }
}

/// What one session did, from this node's side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionReport {
    /// The peer.
    pub peer: Option<KeyId>,
    /// Messages this node offered.
    pub offered: usize,
    /// Of those, the ones the peer received (and verified).
    pub sent: usize,
    /// Messages the peer offered that this node accepted.
    pub accepted: usize,
    /// Of those, the ones that arrived and verified.
    pub received: usize,
    /// Why this node's pull failed, if it did (what arrived before still counts).
    pub pull_error: Option<String>,
}

/// A message on the control stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Hello {
        hello: Hello,
        db: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Offers {
        offers: OfferList,
    },
    Accept {
        accept: Accept,
    },
    Received {
        received: Received,
    },
    NeedStream,
}

/// A node on the network: see the [module docs](self).
#[derive(Clone)]
pub struct Exchange {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("key_id", &self.inner.identity.key_id())
            .field("db", &self.inner.db_name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    node: Mutex<Node>,
    db_name: String,
    identity: Identity,
    clock: Arc<dyn Clock>,
    config: ExchangeConfig,
    app: axum::Router,
    grants: Arc<Grants>,
    reverse: Mutex<HashMap<[u8; 16], mpsc::Sender<BoxedStream>>>,
    acceptor: tokio_rustls::TlsAcceptor,
    inbound: Arc<tokio::sync::Semaphore>,
    sessions: AtomicU64,
}

/// Who may read what on our server: per session, the peer and the documents it accepted,
/// and the checkpoints it wrote.
#[derive(Default)]
struct Grants {
    db: String,
    by_session: Mutex<HashMap<u64, Grant>>,
}

struct Grant {
    peer: KeyId,
    docs: HashSet<String>,
    checkpoints: HashSet<String>,
}

impl Grants {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Grant>> {
        self.by_session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, session: u64, peer: KeyId) {
        self.lock().insert(
            session,
            Grant {
                peer,
                docs: HashSet::new(),
                checkpoints: HashSet::new(),
            },
        );
    }

    fn allow_docs(&self, session: u64, docs: impl IntoIterator<Item = String>) {
        if let Some(grant) = self.lock().get_mut(&session) {
            grant.docs.extend(docs);
        }
    }

    /// Ends a session's grant; returns the checkpoints its peer wrote.
    fn close(&self, session: u64) -> HashSet<String> {
        self.lock()
            .remove(&session)
            .map(|g| g.checkpoints)
            .unwrap_or_default()
    }
}

/// The documents a peer may see.
struct Only(HashSet<String>);

impl DocFilter for Only {
    fn allows(&self, id: &str, _: &Map<String, Value>) -> bool {
        self.0.contains(id)
    }
}

/// `_local/<32 lowercase hex>` under `/<db>/`: a replication checkpoint id.
fn checkpoint_id(path: &str, db: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?.strip_prefix(db)?;
    let hex = rest.strip_prefix("/_local/")?;
    (hex.len() == 32
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| format!("_local/{hex}"))
}

/// Whether a read may touch `_local` documents: only replication checkpoints, and no
/// percent-encoded paths (which could spell `_local/` in a way the check does not see).
fn read_allowed(path: &str, db: &str) -> bool {
    if path.contains('%') {
        return false;
    }
    !path.contains("_local") || checkpoint_id(path, db).is_some()
}

impl Authorize for Grants {
    fn authorize(&self, request: &Parts, operation: &Operation<'_>) -> Decision {
        let Some(Peer::Key(peer)) = request.extensions.get::<Peer>().copied() else {
            return Decision::Unauthorized("a mesh peer proves its key".into());
        };
        let mut grants = self.lock();
        let mine: Vec<&mut Grant> = grants.values_mut().filter(|g| g.peer == peer).collect();
        if mine.is_empty() {
            return Decision::Forbidden("no session with this key".into());
        }
        match operation {
            Operation::Server => Decision::Allow,
            Operation::ReadDb { db } if *db == self.db && read_allowed(request.uri.path(), db) => {
                let docs = mine.iter().flat_map(|g| g.docs.iter().cloned()).collect();
                Decision::AllowFiltered(Arc::new(Only(docs)))
            }
            Operation::WriteLocal { db } if *db == self.db && request.method == Method::PUT => {
                match (
                    checkpoint_id(request.uri.path(), db),
                    mine.into_iter().next(),
                ) {
                    (Some(id), Some(grant)) => {
                        grant.checkpoints.insert(id);
                        Decision::Allow
                    }
                    _ => Decision::Forbidden("only replication checkpoints".into()),
                }
            }
            _ => Decision::Forbidden("a mesh peer only reads the mesh database".into()),
        }
    }
}

fn transport(what: impl std::fmt::Display) -> Error {
    Error::Transport(what.to_string())
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Transport(format!("{what}: {e}"))
}

/// `fut`, or [`Error::Timeout`] once `ms` have passed on `clock`.
async fn within<T>(
    clock: &dyn Clock,
    ms: u64,
    what: &'static str,
    fut: impl Future<Output = T>,
) -> Result<T> {
    tokio::select! {
        value = fut => Ok(value),
        () = clock.sleep(Duration::from_millis(ms)) => Err(Error::Timeout(what)),
    }
}

async fn write_control<W: AsyncWrite + Unpin>(w: &mut W, message: &Control) -> Result<()> {
    let bytes = serde_json::to_vec(message).map_err(|e| Error::Protocol(e.to_string()))?;
    let framed = frame::message_frame(&bytes).map_err(|e| Error::Protocol(e.to_string()))?;
    w.write_all(&framed).await.map_err(io("control write"))?;
    w.flush().await.map_err(io("control flush"))
}

async fn read_control<R: AsyncRead + Unpin>(r: &mut R) -> Result<Control> {
    let mut header = [0u8; 5];
    r.read_exact(&mut header)
        .await
        .map_err(io("control read"))?;
    let len = frame::message_len(header).map_err(|e| Error::Protocol(e.to_string()))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(io("control read"))?;
    serde_json::from_slice(&body).map_err(|e| Error::Protocol(format!("control message: {e}")))
}

fn unexpected(what: &str, got: &Control) -> Error {
    let name = match got {
        Control::Hello { .. } => "hello",
        Control::Offers { .. } => "offers",
        Control::Accept { .. } => "accept",
        Control::Received { .. } => "received",
        Control::NeedStream => "need_stream",
    };
    Error::Protocol(format!("expected {what}, got {name}"))
}

type Tls<S> = tokio_rustls::client::TlsStream<S>;
type ServerTls<S> = tokio_rustls::server::TlsStream<S>;

/// The two halves of a control stream.
struct ControlStream<S> {
    read: ReadHalf<S>,
    write: Arc<tokio::sync::Mutex<WriteHalf<S>>>,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> ControlStream<S> {
    fn new(stream: S) -> ControlStream<S> {
        let (read, write) = tokio::io::split(stream);
        ControlStream {
            read,
            write: Arc::new(tokio::sync::Mutex::new(write)),
        }
    }
}

/// Dials the peer on the link for the initiator's pulls (`D` streams).
struct DialConnector {
    link: Arc<dyn Link>,
    peer: Address,
    tls: Arc<rustls::ClientConfig>,
}

impl Connector for DialConnector {
    fn connect(&self, _scheme: &str, _host: &str, _port: u16) -> Connecting {
        let (link, peer, tls) = (self.link.clone(), self.peer.clone(), self.tls.clone());
        Box::pin(async move {
            let refused = |e: adhoc_wireless::Error| {
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e)
            };
            let mut stream = link.connect(&peer).await.map_err(refused)?;
            stream.write_all(&[KIND_DATA]).await?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(server_name(PEER_HOST), stream)
                .await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}

/// Asks the initiator for reverse streams on the control stream (the responder's pulls).
struct ReverseConnector<W> {
    control: Arc<tokio::sync::Mutex<W>>,
    streams: Arc<tokio::sync::Mutex<mpsc::Receiver<BoxedStream>>>,
    tls: Arc<rustls::ClientConfig>,
    clock: Arc<dyn Clock>,
    timeout_ms: u64,
    left: Arc<AtomicU32>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> Connector for ReverseConnector<W> {
    fn connect(&self, _scheme: &str, _host: &str, _port: u16) -> Connecting {
        let (control, streams, tls, clock, timeout_ms, left) = (
            self.control.clone(),
            self.streams.clone(),
            self.tls.clone(),
            self.clock.clone(),
            self.timeout_ms,
            self.left.clone(),
        );
        Box::pin(async move {
            let failed = |e: Error| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e);
            let allowed = left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !allowed {
                return Err(failed(Error::Protocol("no more reverse streams".into())));
            }
            {
                let mut w = control.lock().await;
                write_control(&mut *w, &Control::NeedStream)
                    .await
                    .map_err(failed)?;
            }
            let mut rx = streams.lock().await;
            let stream = within(&*clock, timeout_ms, "reverse stream", rx.recv())
                .await
                .map_err(failed)?
                .ok_or_else(|| failed(transport("session over")))?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(server_name(PEER_HOST), stream)
                .await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}

impl Exchange {
    /// An exchange for `node`, whose database is in `store`, proving `identity` (the node's
    /// key: a peer pins it) in TLS, with waits on `clock`.
    pub fn new(
        node: Node,
        store: Store,
        identity: Identity,
        clock: Arc<dyn Clock>,
        config: ExchangeConfig,
    ) -> Result<Exchange> {
        if identity.key_id() != node.key_id() {
            return Err(Error::InvalidConfig(
                "the TLS identity must be the node's key".into(),
            ));
        }
        let db_name = node.database().name().to_owned();
        if !store.exists(&db_name) {
            return Err(Error::InvalidConfig(format!(
                "the node's database {db_name} is not in the store"
            )));
        }
        let grants = Arc::new(Grants {
            db: db_name.clone(),
            by_session: Mutex::new(HashMap::new()),
        });
        let app = router(store, ServerConfig::default(), grants.clone());
        let tls = server_config(&identity, ClientAuth::Required)
            .map_err(|e| Error::Key(e.to_string()))?;
        Ok(Exchange {
            inner: Arc::new(Inner {
                node: Mutex::new(node),
                db_name,
                identity,
                clock,
                inbound: Arc::new(tokio::sync::Semaphore::new(config.max_inbound.max(1))),
                config,
                app,
                grants,
                reverse: Mutex::new(HashMap::new()),
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
                sessions: AtomicU64::new(0),
            }),
        })
    }

    /// Runs `f` on the node (between sessions' steps: do not block in it).
    pub fn with_node<T>(&self, f: impl FnOnce(&mut Node) -> T) -> T {
        f(&mut self.node())
    }

    fn node(&self) -> MutexGuard<'_, Node> {
        self.inner.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_millis()
    }

    fn step<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = T>,
    ) -> impl Future<Output = Result<T>> {
        let clock = self.inner.clock.clone();
        let ms = self.inner.config.step_timeout_ms;
        async move { within(&*clock, ms, what, fut).await }
    }

    /// Answers every stream `incoming` brings (sessions, pulls, reverse streams), each in its
    /// own task (at most [`ExchangeConfig::max_inbound`] at once), until the link closes.
    /// Spawn it on the runtime.
    pub async fn serve(&self, mut incoming: Incoming) {
        while let Some(inbound) = incoming.next().await {
            let Inbound::Stream { stream, .. } = inbound else {
                continue;
            };
            let Ok(permit) = self.inner.inbound.clone().try_acquire_owned() else {
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.inbound(stream).await;
                drop(permit);
            });
        }
    }

    async fn inbound(&self, mut stream: BoxedStream) -> Result<()> {
        let mut kind = [0u8; 1];
        self.step("stream kind", stream.read_exact(&mut kind))
            .await?
            .map_err(io("stream kind"))?;
        match kind[0] {
            KIND_CONTROL => {
                let tls = self.accept_tls(stream).await?;
                let peer = Peer::of(tls.get_ref().1)
                    .key_id()
                    .ok_or_else(|| transport("anonymous peer"))?;
                self.respond(ControlStream::new(tls), peer)
                    .await
                    .map(|_| ())
            }
            KIND_DATA => {
                let tls = self.accept_tls(stream).await?;
                self.serve_http(tls).await;
                Ok(())
            }
            KIND_REVERSE => {
                let mut token = [0u8; 16];
                self.step("session token", stream.read_exact(&mut token))
                    .await?
                    .map_err(io("session token"))?;
                let tx = self
                    .inner
                    .reverse
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&token)
                    .cloned();
                match tx {
                    Some(tx) => self
                        .step("hand over reverse stream", tx.send(stream))
                        .await?
                        .map_err(|_| transport("session over")),
                    None => Err(Error::Protocol("unknown session token".into())),
                }
            }
            other => Err(Error::Protocol(format!("unknown stream kind {other:#04x}"))),
        }
    }

    async fn accept_tls(&self, stream: BoxedStream) -> Result<ServerTls<BoxedStream>> {
        self.step("TLS handshake", self.inner.acceptor.accept(stream))
            .await?
            .map_err(io("TLS handshake"))
    }

    /// Serves couch-sync's HTTP API on a TLS stream to the authenticated peer, until it closes.
    async fn serve_http(&self, tls: ServerTls<BoxedStream>) {
        let peer = Peer::of(tls.get_ref().1);
        let app = self.inner.app.clone();
        let service =
            tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer);
                tower::ServiceExt::oneshot(app.clone(), req)
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
        // A connection lives at most as long as a pull may.
        let ms = self
            .inner
            .config
            .pull_timeout_ms
            .saturating_add(self.inner.config.step_timeout_ms);
        let _ = within(&*self.inner.clock, ms, "HTTP connection", connection).await;
    }

    fn client_tls(&self, peer: KeyId) -> Result<Arc<rustls::ClientConfig>> {
        client_config(peer, Some(&self.inner.identity))
            .map(Arc::new)
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// Meets the peer `peer_key` at `address` on `link`: one session both ways (see the
    /// [module docs](self)). Expired messages are dropped first.
    pub async fn session(
        &self,
        link: Arc<dyn Link>,
        address: &Address,
        peer_key: KeyId,
    ) -> Result<SessionReport> {
        let tls = self.client_tls(peer_key)?;
        let mut stream = self
            .step("open control stream", link.connect(address))
            .await?
            .map_err(transport)?;
        stream
            .write_all(&[KIND_CONTROL])
            .await
            .map_err(io("control stream"))?;
        let ctl = self
            .step(
                "TLS handshake",
                tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(server_name(PEER_HOST), stream),
            )
            .await?
            .map_err(io("TLS handshake"))?;
        let session = self.inner.sessions.fetch_add(1, Ordering::SeqCst);
        self.inner.grants.open(session, peer_key);
        let result = self
            .initiate(
                ControlStream::new(ctl),
                link,
                address,
                peer_key,
                tls,
                session,
            )
            .await;
        self.end_grant(session);
        result
    }

    async fn initiate(
        &self,
        mut ctl: ControlStream<Tls<BoxedStream>>,
        link: Arc<dyn Link>,
        address: &Address,
        peer_key: KeyId,
        tls: Arc<rustls::ClientConfig>,
        session: u64,
    ) -> Result<SessionReport> {
        let mut report = SessionReport {
            peer: Some(peer_key),
            ..SessionReport::default()
        };
        let hello = self.start()?;
        self.send(
            &ctl.write,
            Control::Hello {
                hello,
                db: self.inner.db_name.clone(),
                token: None,
            },
        )
        .await?;
        let (peer_hello, peer_db, token) = match self.recv(&mut ctl).await? {
            Control::Hello { hello, db, token } => (hello, db, token),
            other => return Err(unexpected("hello", &other)),
        };
        couch_sync::check_db_name(&peer_db)
            .map_err(|e| Error::Protocol(format!("peer database name: {e}")))?;
        let token = token
            .and_then(|t| data_encoding::HEXLOWER.decode(t.as_bytes()).ok())
            .and_then(|t| <[u8; 16]>::try_from(t).ok())
            .ok_or_else(|| Error::Protocol("no session token in the hello".into()))?;
        let now = self.now();
        let offers = self.node().offers_for(&peer_hello, now)?;
        report.offered = offers.items.len();
        self.send(
            &ctl.write,
            Control::Offers {
                offers: offers.clone(),
            },
        )
        .await?;
        let peer_offers = match self.recv(&mut ctl).await? {
            Control::Offers { offers } => offers,
            other => return Err(unexpected("offers", &other)),
        };
        let peer_accept = match self.recv(&mut ctl).await? {
            Control::Accept { accept } => accept,
            other => return Err(unexpected("accept", &other)),
        };
        self.grant(session, &offers, &peer_accept);
        let accept = self.node().accept(&peer_offers, self.now())?;
        report.accepted = accept.ids.len();
        let sent = self
            .send(
                &ctl.write,
                Control::Accept {
                    accept: accept.clone(),
                },
            )
            .await;
        if let Err(e) = sent {
            // Release what we reserved.
            let _ = self.node().on_pulled(&peer_offers, &accept, self.now());
            return Err(e);
        }

        // Phase A: we pull from the responder.
        let connector = DialConnector {
            link: link.clone(),
            peer: address.clone(),
            tls: tls.clone(),
        };
        let received = self
            .pull(
                Arc::new(connector),
                &peer_db,
                &peer_offers,
                &accept,
                &mut report,
            )
            .await?;
        self.send(&ctl.write, Control::Received { received })
            .await?;

        // Phase B: the responder pulls from us over reverse streams.
        let mut opened = 0u32;
        let peer_received = loop {
            match self.recv_long(&mut ctl).await? {
                Control::NeedStream => {
                    opened += 1;
                    if opened > self.inner.config.max_reverse_streams {
                        return Err(Error::Protocol("too many reverse streams".into()));
                    }
                    self.open_reverse(link.clone(), address, token, peer_key)
                        .await?;
                }
                Control::Received { received } => break received,
                other => return Err(unexpected("received", &other)),
            }
        };
        report.sent = self
            .node()
            .on_received(&offers, &peer_received, self.now())?;
        Ok(report)
    }

    /// Opens a reverse stream and serves our database on it, in a task.
    async fn open_reverse(
        &self,
        link: Arc<dyn Link>,
        address: &Address,
        token: [u8; 16],
        peer_key: KeyId,
    ) -> Result<()> {
        let mut stream = self
            .step("open reverse stream", link.connect(address))
            .await?
            .map_err(transport)?;
        let mut preamble = vec![KIND_REVERSE];
        preamble.extend_from_slice(&token);
        stream
            .write_all(&preamble)
            .await
            .map_err(io("reverse stream"))?;
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(tls) = this.accept_tls(stream).await else {
                return;
            };
            if Peer::of(tls.get_ref().1).key_id() == Some(peer_key) {
                this.serve_http(tls).await;
            }
        });
        Ok(())
    }

    /// The responder's side of a session on an accepted control stream.
    async fn respond(
        &self,
        mut ctl: ControlStream<ServerTls<BoxedStream>>,
        peer_key: KeyId,
    ) -> Result<SessionReport> {
        let session = self.inner.sessions.fetch_add(1, Ordering::SeqCst);
        self.inner.grants.open(session, peer_key);
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(|e| Error::Crypto(format!("random source: {e}")))?;
        let (tx, rx) = mpsc::channel(1);
        self.inner
            .reverse
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, tx);
        let result = self
            .respond_inner(&mut ctl, peer_key, token, rx, session)
            .await;
        self.inner
            .reverse
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token);
        self.end_grant(session);
        result
    }

    async fn respond_inner(
        &self,
        ctl: &mut ControlStream<ServerTls<BoxedStream>>,
        peer_key: KeyId,
        token: [u8; 16],
        rx: mpsc::Receiver<BoxedStream>,
        session: u64,
    ) -> Result<SessionReport> {
        let mut report = SessionReport {
            peer: Some(peer_key),
            ..SessionReport::default()
        };
        let (peer_hello, peer_db) = match self.recv(ctl).await? {
            Control::Hello { hello, db, .. } => (hello, db),
            other => return Err(unexpected("hello", &other)),
        };
        couch_sync::check_db_name(&peer_db)
            .map_err(|e| Error::Protocol(format!("peer database name: {e}")))?;
        let hello = self.start()?;
        self.send(
            &ctl.write,
            Control::Hello {
                hello,
                db: self.inner.db_name.clone(),
                token: Some(data_encoding::HEXLOWER.encode(&token)),
            },
        )
        .await?;
        let peer_offers = match self.recv(ctl).await? {
            Control::Offers { offers } => offers,
            other => return Err(unexpected("offers", &other)),
        };
        let offers = self.node().offers_for(&peer_hello, self.now())?;
        report.offered = offers.items.len();
        self.send(
            &ctl.write,
            Control::Offers {
                offers: offers.clone(),
            },
        )
        .await?;
        let accept = self.node().accept(&peer_offers, self.now())?;
        report.accepted = accept.ids.len();
        let sent_accept = self
            .send(
                &ctl.write,
                Control::Accept {
                    accept: accept.clone(),
                },
            )
            .await;
        let pulled = async {
            sent_accept?;
            let peer_accept = match self.recv(ctl).await? {
                Control::Accept { accept } => accept,
                other => return Err(unexpected("accept", &other)),
            };
            self.grant(session, &offers, &peer_accept);

            // Phase A: the initiator pulls from us.
            let peer_received = match self.recv_long(ctl).await? {
                Control::Received { received } => received,
                other => return Err(unexpected("received", &other)),
            };
            report.sent = self
                .node()
                .on_received(&offers, &peer_received, self.now())?;
            Ok(())
        }
        .await;
        if let Err(e) = pulled {
            // Release what we reserved.
            let _ = self.node().on_pulled(&peer_offers, &accept, self.now());
            return Err(e);
        }

        // Phase B: we pull from the initiator over reverse streams.
        let connector = ReverseConnector {
            control: ctl.write.clone(),
            streams: Arc::new(tokio::sync::Mutex::new(rx)),
            tls: self.client_tls(peer_key)?,
            clock: self.inner.clock.clone(),
            timeout_ms: self.inner.config.step_timeout_ms,
            left: Arc::new(AtomicU32::new(self.inner.config.max_reverse_streams)),
        };
        let received = self
            .pull(
                Arc::new(connector),
                &peer_db,
                &peer_offers,
                &accept,
                &mut report,
            )
            .await?;
        self.send(&ctl.write, Control::Received { received })
            .await?;
        Ok(report)
    }

    /// Drops expired messages and says hello.
    fn start(&self) -> Result<Hello> {
        let now = self.now();
        let mut node = self.node();
        node.expire(now)?;
        Ok(node.hello(now))
    }

    /// Lets the session's peer read the documents it accepted among ours.
    fn grant(&self, session: u64, offers: &OfferList, accept: &Accept) {
        let offered: HashSet<&str> = offers.items.iter().map(|i| i.id.as_str()).collect();
        let docs = accept
            .ids
            .iter()
            .filter(|id| offered.contains(id.as_str()))
            .map(|id| format!("m-{id}"));
        self.inner.grants.allow_docs(session, docs);
    }

    /// Ends a session's grant and deletes the checkpoints its peer wrote.
    fn end_grant(&self, session: u64) {
        let checkpoints = self.inner.grants.close(session);
        let node = self.node();
        for id in checkpoints {
            let _ = node.database().delete_local(&id);
        }
    }

    /// Pulls the accepted documents from the peer's database (if any), then lets the node
    /// check what arrived. A failed pull is reported, not an error: what arrived counts.
    async fn pull(
        &self,
        connector: Arc<dyn Connector>,
        peer_db: &str,
        peer_offers: &OfferList,
        accept: &Accept,
        report: &mut SessionReport,
    ) -> Result<Received> {
        if !accept.ids.is_empty() {
            let sizes: u64 = peer_offers
                .items
                .iter()
                .filter(|i| accept.ids.contains(&i.id))
                .map(|i| i.size)
                .sum();
            let db = self.node().database().clone();
            let outcome = self
                .replicate(connector, peer_db, accept, sizes, db.clone())
                .await;
            if let Err(e) = outcome {
                report.pull_error = Some(e.to_string());
            }
        }
        let received = self.node().on_pulled(peer_offers, accept, self.now())?;
        report.received = received.ids.len();
        Ok(received)
    }

    async fn replicate(
        &self,
        connector: Arc<dyn Connector>,
        peer_db: &str,
        accept: &Accept,
        sizes: u64,
        db: couch_sync::Database,
    ) -> Result<()> {
        let clock = self.inner.clock.clone();
        let step = Duration::from_millis(self.inner.config.step_timeout_ms);
        // Base64 and JSON around each message, and the protocol's own answers.
        let bound = sizes.saturating_mul(2).saturating_add(1 << 20);
        let remote = Remote::new(
            &format!("https://{PEER_HOST}/{peer_db}"),
            connector,
            clock.clone(),
        )?
        .with_timeout(step)
        .with_max_response_bytes(usize::try_from(bound).unwrap_or(usize::MAX));
        let options = ReplicationOptions {
            doc_ids: Some(accept.ids.iter().map(|id| format!("m-{id}")).collect()),
            batch_size: 64,
            retry: RetryPolicy {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(2),
                max_attempts: Some(2),
            },
            jitter_seed: Some(self.now()),
            ..ReplicationOptions::default()
        };
        let replication = Replication::new(
            Endpoint::Remote(Arc::new(remote)),
            Endpoint::Local(db.clone()),
            options,
        )
        .with_clock(clock.clone());
        let outcome = within(
            &*clock,
            self.inner.config.pull_timeout_ms,
            "pull",
            replication.run(),
        )
        .await;
        // The checkpoint is of no use: the next session asks for other ids.
        let _ = db.delete_local(&format!("_local/{}", replication.id()));
        outcome??;
        Ok(())
    }

    async fn send<W: AsyncWrite + Unpin + Send>(
        &self,
        write: &tokio::sync::Mutex<W>,
        message: Control,
    ) -> Result<()> {
        let mut w = write.lock().await;
        self.step("control write", write_control(&mut *w, &message))
            .await?
    }

    async fn recv<S: AsyncRead>(&self, ctl: &mut ControlStream<S>) -> Result<Control> {
        self.step("control message", read_control(&mut ctl.read))
            .await?
    }

    /// A control message that may come after a whole pull.
    async fn recv_long<S: AsyncRead>(&self, ctl: &mut ControlStream<S>) -> Result<Control> {
        let ms = self
            .inner
            .config
            .pull_timeout_ms
            .saturating_add(self.inner.config.step_timeout_ms);
        within(
            &*self.inner.clock,
            ms,
            "the peer's pull",
            read_control(&mut ctl.read),
        )
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, path: &str, peer: Option<Peer>) -> Parts {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        request.into_parts().0
    }

    #[test]
    fn a_peer_reads_only_what_it_accepted_and_writes_only_checkpoints() {
        let grants = Grants {
            db: "mesh".into(),
            by_session: Mutex::new(HashMap::new()),
        };
        let peer = KeyId::from_digest([1; 32]);
        let other = KeyId::from_digest([2; 32]);
        let read = Operation::ReadDb { db: "mesh" };
        let as_peer = |method, path| parts(method, path, Some(Peer::Key(peer)));

        // No session yet, or no key: nothing.
        assert!(matches!(
            grants.authorize(&as_peer("GET", "/mesh/m-aa"), &read),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            grants.authorize(&parts("GET", "/mesh/m-aa", Some(Peer::Anonymous)), &read),
            Decision::Unauthorized(_)
        ));

        grants.open(7, peer);
        grants.allow_docs(7, ["m-aa".to_owned()]);
        let Decision::AllowFiltered(filter) =
            grants.authorize(&as_peer("GET", "/mesh/_all_docs"), &read)
        else {
            panic!("a read in session is filtered");
        };
        assert!(filter.allows("m-aa", &Map::new()));
        assert!(!filter.allows("m-bb", &Map::new()));
        assert!(matches!(
            grants.authorize(&parts("GET", "/mesh/m-aa", Some(Peer::Key(other))), &read),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            grants.authorize(&as_peer("GET", "/"), &Operation::Server),
            Decision::Allow
        ));

        // The node's own _local state stays private, however it is spelled.
        let checkpoint = format!("/mesh/_local/{}", "0123456789abcdef".repeat(2));
        for path in [
            "/mesh/_local/mesh-delivered",
            "/mesh/_local/mesh-m-aa",
            "/mesh/_local%2Fmesh-delivered",
            "/mesh/%5Flocal/mesh-delivered",
            "/mesh/_local_docs",
        ] {
            assert!(
                matches!(
                    grants.authorize(&as_peer("GET", path), &read),
                    Decision::Forbidden(_)
                ),
                "{path}"
            );
        }
        assert!(matches!(
            grants.authorize(&as_peer("GET", &checkpoint), &read),
            Decision::AllowFiltered(_)
        ));

        // Writes: checkpoints only, remembered for deletion.
        let write_local = Operation::WriteLocal { db: "mesh" };
        assert!(matches!(
            grants.authorize(&as_peer("PUT", &checkpoint), &write_local),
            Decision::Allow
        ));
        for (method, path) in [
            ("PUT", "/mesh/_local/mesh-delivered"),
            ("DELETE", checkpoint.as_str()),
        ] {
            assert!(matches!(
                grants.authorize(&as_peer(method, path), &write_local),
                Decision::Forbidden(_)
            ));
        }
        for op in [
            Operation::WriteDb { db: "mesh" },
            Operation::ReadDb { db: "other" },
            Operation::DeleteDb { db: "mesh" },
            Operation::ListDbs,
        ] {
            assert!(matches!(
                grants.authorize(&as_peer("POST", "/mesh/_bulk_docs"), &op),
                Decision::Forbidden(_)
            ));
        }
        let written = grants.close(7);
        assert_eq!(
            written.into_iter().collect::<Vec<_>>(),
            vec![checkpoint.trim_start_matches("/mesh/").to_owned()]
        );
        assert!(matches!(
            grants.authorize(&as_peer("GET", "/mesh/m-aa"), &read),
            Decision::Forbidden(_)
        ));
    }
}
