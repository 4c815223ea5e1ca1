//! Hosting: an onion service launched from an identity key, its streams handed to the
//! application, its messages read, its state followed.

use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use adhoc_wireless::{Address, Inbound, Transport};
use futures::StreamExt as _;
use public_key_identity::{HttpKeyUrl, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_hsservice::config::OnionServiceConfigBuilder;
use tor_hsservice::config::restricted_discovery::HsClientNickname;
use tor_hsservice::{HsNickname, RendRequest, RunningOnionService, StreamRequest};
use tor_proto::stream::IncomingStreamRequest;

use super::{Inner, Tor, keys, lock, tor_error, within};
use crate::error::{Error, Result};
use crate::frame;
use crate::status::{ServiceState, ServiceStatus};

/// A client allowed to discover a service in restricted discovery mode: its Ed25519 identity
/// public key (the one in its certificate and identity card).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedClient {
    ed25519: [u8; 32],
}

impl AuthorizedClient {
    /// From an Ed25519 public key.
    pub fn from_ed25519(public_key: [u8; 32]) -> Result<AuthorizedClient> {
        keys::client_desc_public(&public_key)?;
        Ok(AuthorizedClient {
            ed25519: public_key,
        })
    }

    /// From a DER SubjectPublicKeyInfo (a peer's certificate, an identity card).
    pub fn from_spki_der(spki_der: &[u8]) -> Result<AuthorizedClient> {
        let key = public_key_identity::ed25519_public_key_from_spki(spki_der)
            .ok_or_else(|| Error::Key("not an Ed25519 public key".into()))?;
        Self::from_ed25519(key)
    }
}

/// How to host a service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceOptions {
    /// The virtual port of the application's streams (the httpkey URL's port).
    pub port: u16,
    /// Accept standalone messages on [`frame::MESSAGE_PORT`].
    pub messages: bool,
    /// Restricted discovery: only these clients can fetch the descriptor (and so reach the
    /// service at all); `None` for anyone who knows the address. Tor's limit is about 160.
    pub authorized_clients: Option<Vec<AuthorizedClient>>,
    /// Introduction points (1 ..= 20; arti's default is 3).
    pub intro_points: u8,
}

impl ServiceOptions {
    /// Streams on `port`, messages on, open discovery, 3 introduction points.
    pub fn new(port: u16) -> ServiceOptions {
        ServiceOptions {
            port,
            messages: true,
            authorized_clients: None,
            intro_points: 3,
        }
    }
}

/// What stops a service: arti's handle (dropping the last one stops it) and our tasks. Shared
/// by the [`OnionService`] and its [`Tor`], so either can stop it.
#[derive(Default)]
pub(super) struct Running {
    running: std::sync::Mutex<Option<Arc<RunningOnionService>>>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Running {
    /// Stops it (idempotent).
    pub(super) fn stop(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        lock(&self.running).take();
    }
}

/// A running onion service. Dropping it (or [`shutdown`](Self::shutdown), or
/// [`Tor::shutdown`]) stops it.
pub struct OnionService {
    url: HttpKeyUrl,
    onion: String,
    tor: Weak<Inner>,
    running: Arc<Running>,
}

impl std::fmt::Debug for OnionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionService")
            .field("url", &self.url.to_string())
            .finish_non_exhaustive()
    }
}

impl OnionService {
    /// `httpkey://<onion>:PORT/<key id>/`.
    pub fn url(&self) -> &HttpKeyUrl {
        &self.url
    }

    /// `<56 characters>.onion`.
    pub fn onion(&self) -> &str {
        &self.onion
    }

    /// Its current status.
    pub fn status(&self) -> Option<ServiceStatus> {
        let tor = self.tor.upgrade()?;
        lock(&tor.status).services.get(&self.onion).cloned()
    }

    /// Stops the service (its descriptor expires on the directories; streams already open stay
    /// open until their ends close).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.running.stop();
        if let Some(tor) = self.tor.upgrade() {
            tor.service_status(&self.onion, |s| {
                s.state = ServiceState::Shutdown;
                s.problem = None;
            });
        }
    }
}

impl Drop for OnionService {
    fn drop(&mut self) {
        self.stop();
    }
}

fn state_of(s: tor_hsservice::status::State) -> ServiceState {
    use tor_hsservice::status::State as S;
    match s {
        S::Shutdown => ServiceState::Shutdown,
        S::Bootstrapping => ServiceState::Bootstrapping,
        S::Running => ServiceState::Running,
        S::DegradedReachable => ServiceState::Degraded,
        S::DegradedUnreachable | S::Recovering => ServiceState::Recovering,
        S::Broken => ServiceState::Broken,
        _ => ServiceState::Recovering,
    }
}

/// Counters of one service.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
}

pub(super) fn launch(
    tor: &Tor,
    identity: &KeyPair,
    options: ServiceOptions,
) -> Result<OnionService> {
    let inner = tor.inner();
    if options.port == 0 || (options.messages && options.port == frame::MESSAGE_PORT) {
        return Err(Error::InvalidConfig(format!(
            "service port {} (not 0, not the message port {})",
            options.port,
            frame::MESSAGE_PORT
        )));
    }
    let url = crate::onion::httpkey_url(identity, options.port)?;
    let onion = url.host().to_string();
    let hs_keypair = keys::hs_id_keypair(identity)?;

    // The nickname names the service's state in arti's state directory: one per identity.
    let key_id = identity.key_id().to_string();
    let nickname = HsNickname::from_str(&format!("thali-{}", key_id.get(..16).unwrap_or("key")))
        .map_err(|e| Error::InvalidConfig(format!("service nickname: {e}")))?;
    let mut b = OnionServiceConfigBuilder::default();
    b.nickname(nickname.clone());
    b.num_intro_points(options.intro_points);
    if let Some(clients) = &options.authorized_clients {
        if clients.is_empty() {
            return Err(Error::InvalidConfig(
                "restricted discovery with no authorised client: nobody could reach the service"
                    .into(),
            ));
        }
        b.restricted_discovery().enabled(true);
        for (i, c) in clients.iter().enumerate() {
            let nick = HsClientNickname::from_str(&format!("client{i}"))
                .map_err(|e| Error::InvalidConfig(format!("client nickname: {e}")))?;
            let key = keys::client_desc_public(&c.ed25519)?;
            b.restricted_discovery()
                .static_keys()
                .access()
                .push((nick, key));
        }
    }
    let svc_config = b
        .build()
        .map_err(|e| Error::InvalidConfig(format!("onion service configuration: {e}")))?;

    // arti keeps the identity in its keystore after the first launch and refuses to overwrite
    // it: hand the key over the first time, launch from the stored copy after (the address is
    // checked below, so a stored key of another identity is refused).
    type Requests = std::pin::Pin<Box<dyn futures::Stream<Item = RendRequest> + Send>>;
    let launched: Option<(Arc<RunningOnionService>, Requests)> = match inner
        .client()
        .launch_onion_service_with_hsid(svc_config.clone(), hs_keypair)
    {
        Ok(l) => l.map(|(r, q)| (r, Box::pin(q) as Requests)),
        Err(first) => match inner.client().launch_onion_service(svc_config) {
            Ok(l) => l.map(|(r, q)| (r, Box::pin(q) as Requests)),
            Err(_) => return Err(tor_error("launching the onion service", &first)),
        },
    };
    let Some((running, rend_requests)) = launched else {
        return Err(Error::InvalidConfig("the onion service is disabled".into()));
    };
    // arti's name for it must be ours.
    let arti_name = running
        .onion_address()
        .map(|hsid| safelog::DisplayRedacted::display_unredacted(&hsid).to_string());
    if arti_name.as_deref() != Some(onion.as_str()) {
        return Err(Error::Key(format!(
            "arti's keystore holds {} for this service, the identity names {onion}",
            arti_name.as_deref().unwrap_or("no key")
        )));
    }

    inner.add_service(ServiceStatus {
        onion: onion.clone(),
        port: options.port,
        state: state_of(running.status().state()),
        authorized_clients: options.authorized_clients.as_ref().map(Vec::len),
        problem: None,
        streams_accepted: 0,
        streams_refused: 0,
    });

    let counters = Arc::new(Counters::default());
    let weak = Arc::downgrade(inner);
    let mut statuses = running.status_events();
    let watch_onion = onion.clone();
    let watch = tokio::spawn(async move {
        while let Some(s) = statuses.next().await {
            let Some(inner) = weak.upgrade() else { return };
            let state = state_of(s.state());
            let problem = s.current_problem().map(|p| format!("{p:?}"));
            inner.service_status(&watch_onion, |st| {
                st.state = state;
                st.problem = problem;
            });
        }
    });

    let weak = Arc::downgrade(inner);
    let serve_onion = onion.clone();
    let pending = Arc::new(Semaphore::new(inner.config().max_pending_messages.max(1)));
    let serve = tokio::spawn(async move {
        let mut requests = tor_hsservice::handle_rend_requests(rend_requests);
        while let Some(request) = requests.next().await {
            let Some(inner) = weak.upgrade() else { return };
            handle(&inner, &serve_onion, &options, &counters, &pending, request).await;
            let accepted = counters.accepted.load(Ordering::Relaxed);
            let refused = counters.refused.load(Ordering::Relaxed);
            inner.service_status(&serve_onion, |s| {
                s.streams_accepted = accepted;
                s.streams_refused = refused;
            });
        }
    });

    let handle = Arc::new(Running::default());
    *lock(&handle.running) = Some(running);
    lock(&handle.tasks).extend([watch, serve]);
    inner.add_running(Arc::downgrade(&handle));
    Ok(OnionService {
        url,
        onion,
        tor: Arc::downgrade(inner),
        running: handle,
    })
}

async fn refuse(request: StreamRequest, counters: &Counters) {
    counters.refused.fetch_add(1, Ordering::Relaxed);
    // DONE, as every onion service answers a port it does not serve (no fingerprint).
    let _ = request.reject(End::new_with_reason(EndReason::DONE)).await;
}

async fn handle(
    inner: &Arc<Inner>,
    onion: &str,
    options: &ServiceOptions,
    counters: &Arc<Counters>,
    pending: &Arc<Semaphore>,
    request: StreamRequest,
) {
    let port = match request.request() {
        IncomingStreamRequest::Begin(begin) => Some(begin.port()),
        _ => None,
    };
    let from = Address::Onion(onion.to_owned(), port.unwrap_or(0));
    match port {
        Some(p) if p == options.port => {
            // Room in the queue first, so an accepted stream is never dropped.
            let Ok(permit) = inner.inbound().clone().try_reserve_owned() else {
                refuse(request, counters).await;
                return;
            };
            match request.accept(Connected::new_empty()).await {
                Ok(stream) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    permit.send(Inbound::Stream {
                        transport: Transport::Tor,
                        from,
                        stream: Box::new(stream),
                    });
                }
                Err(e) => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("accepting a stream on {onion}: {e}");
                }
            }
        }
        Some(frame::MESSAGE_PORT) if options.messages => {
            let Ok(slot) = Arc::clone(pending).try_acquire_owned() else {
                refuse(request, counters).await;
                return;
            };
            let inner = Arc::clone(inner);
            let counters = Arc::clone(counters);
            tokio::spawn(async move {
                let _slot = slot;
                read_message(&inner, from, &counters, request).await;
            });
        }
        _ => refuse(request, counters).await,
    }
}

/// Reads one framed message, queues it, answers.
async fn read_message(inner: &Inner, from: Address, counters: &Counters, request: StreamRequest) {
    let Ok(mut stream) = request.accept(Connected::new_empty()).await else {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let read = async {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.ok()?;
        let len = frame::message_len(header).ok()?;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        Some(body)
    };
    let timeout = inner.config().message_timeout;
    let Some(Some(bytes)) = within(inner.clock(), timeout, read).await else {
        // Malformed, short or too slow: closed unanswered.
        counters.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let answer = match inner.inbound().try_reserve() {
        Ok(permit) => {
            permit.send(Inbound::Message {
                transport: Transport::Tor,
                from,
                bytes,
            });
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            frame::ACCEPTED
        }
        Err(_) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            frame::REFUSED
        }
    };
    let _ = within(inner.clock(), timeout, async {
        stream.write_all(&[answer]).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await;
}
