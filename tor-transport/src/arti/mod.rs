//! Tor through arti (feature `arti`): a [`Tor`] client that dials onion services, hosts them
//! from an identity key, and is an adhoc-wireless [`Link`].

mod keys;
mod service;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use adhoc_wireless::{
    Address, BoxedStream, Clock, Inbound, Incoming, Link, MAX_MESSAGE_BYTES, TokioClock, Transport,
};
use arti_client::config::dir::FallbackDirBuilder;
use arti_client::config::{BoolOrAuto, TorClientConfigBuilder};
use arti_client::{BootstrapBehavior, StreamPrefs, TorClient, TorClientConfig};
use futures::StreamExt as _;
use public_key_identity::{Host, HttpKeyUrl, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tor_llcrypto::pk::ed25519::Ed25519Identity;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_rtcompat::PreferredRuntime;

use crate::config::{Network, TorConfig};
use crate::error::{Error, Result};
use crate::frame;
use crate::status::{Bootstrap, ServiceStatus, TorEvent, TorStatus};

pub use service::{AuthorizedClient, OnionService, ServiceOptions};

/// Events waiting for a slow subscriber before the oldest are dropped.
const EVENT_CAPACITY: usize = 256;

/// A Tor client: dials `.onion` httpkey URLs, hosts onion services whose address is an
/// identity key, and reports its state. Cloning gives another handle on the same client.
///
/// Everything runs on the tokio runtime that called [`Tor::start`].
#[derive(Clone)]
pub struct Tor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tor")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    client: Arc<TorClient<PreferredRuntime>>,
    config: TorConfig,
    clock: TokioClock,
    status: Mutex<State>,
    events: broadcast::Sender<TorEvent>,
    inbound: mpsc::Sender<Inbound>,
    incoming: Mutex<Option<Incoming>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The services it hosts (to stop them on shutdown).
    services: Mutex<Vec<std::sync::Weak<service::Running>>>,
}

#[derive(Default)]
struct State {
    bootstrap: Bootstrap,
    services: BTreeMap<String, ServiceStatus>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn tor_error(action: &str, e: &arti_client::Error) -> Error {
    use arti_client::{ErrorKind as K, HasKind as _};
    let text = format!("{action}: {e} ({})", e.kind());
    match e.kind() {
        K::BootstrapRequired | K::TorAccessFailed | K::TorDirectoryUnusable => {
            Error::NotBootstrapped(text)
        }
        K::OnionServiceNotFound
        | K::OnionServiceNotRunning
        | K::OnionServiceConnectionFailed
        | K::OnionServiceProtocolViolation
        | K::OnionServiceWrongClientAuth
        | K::OnionServiceMissingClientAuth
        | K::OnionServiceAddressInvalid
        | K::RemoteStreamClosed
        | K::RemoteStreamReset
        | K::RemoteStreamError
        | K::RemoteConnectionRefused
        | K::RemoteNetworkTimeout
        | K::TorNetworkTimeout
        | K::CircuitCollapse
        | K::CircuitRefused
        | K::ExitTimeout => Error::Unreachable(text),
        K::InvalidConfig | K::InvalidConfigTransition | K::FeatureDisabled => {
            Error::InvalidConfig(text)
        }
        K::FsPermissions | K::PersistentStateAccessFailed | K::CacheAccessFailed => Error::Io {
            action: text,
            source: std::io::Error::other("arti refused its state directory"),
        },
        _ => Error::Tor(text),
    }
}

/// Creates `dir` (and parents) 0700 if missing.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

fn client_config(config: &TorConfig) -> Result<TorClientConfig> {
    let state = config.data_dir.join("state");
    let cache = config.data_dir.join("cache");
    private_dir(&config.data_dir)?;
    private_dir(&state)?;
    private_dir(&cache)?;
    let mut b = TorClientConfigBuilder::from_directories(&state, &cache);
    // arti's native keystore (`state/keystore`, 0700, keys 0600) keeps the onion service
    // identity — a copy of the caller's identity key, handed over at the first launch — the
    // introduction point keys a restarted service reuses, and client discovery keys.
    if config.danger_accept_unsafe_permissions {
        b.storage().permissions().dangerously_trust_everyone();
    }
    b.address_filter().allow_onion_addrs(true);
    if let Network::Private(net) = &config.network {
        let bad = |what: &str, v: &str| Error::InvalidConfig(format!("{what} {v:?}"));
        let tn = b.tor_network();
        // The list accessors start from arti's built-in lists (the public network's
        // authorities and fallbacks): replace them, never add to them.
        {
            let auth = tn.authorities();
            auth.v3idents().clear();
            auth.uploads().clear();
            auth.downloads().clear();
            auth.votes().clear();
        }
        tn.fallback_caches().clear();
        for a in &net.authorities {
            let id = RsaIdentity::from_hex(&a.v3ident)
                .ok_or_else(|| bad("authority v3ident", &a.v3ident))?;
            let auth = tn.authorities();
            auth.v3idents().push(id);
            auth.uploads().push(vec![a.dir_addr]);
            auth.downloads().push(vec![a.dir_addr]);
            auth.votes().push(vec![a.dir_addr]);
        }
        for f in &net.fallbacks {
            let rsa = RsaIdentity::from_hex(&f.rsa_identity)
                .ok_or_else(|| bad("relay rsa identity", &f.rsa_identity))?;
            let ed = Ed25519Identity::from_base64(&f.ed25519_identity)
                .ok_or_else(|| bad("relay ed25519 identity", &f.ed25519_identity))?;
            let mut fb = FallbackDirBuilder::default();
            fb.rsa_identity(rsa).ed_identity(ed);
            fb.orports().push(f.or_addr);
            tn.fallback_caches().push(fb);
        }
        if let Some(minutes) = net.hsdir_interval_minutes {
            let minutes =
                i32::try_from(minutes).map_err(|_| bad("hsdir interval", &minutes.to_string()))?;
            b.override_net_params()
                .insert("hsdir_interval".to_owned(), minutes);
        }
        if let Some(prefix) = net.ipv4_family_prefix {
            b.path_rules().ipv4_subnet_family_prefix(prefix);
            b.path_rules().ipv6_subnet_family_prefix(129);
        }
        if net.allow_local_addrs {
            b.address_filter().allow_local_addrs(true);
        }
    }
    b.build()
        .map_err(|e| Error::InvalidConfig(format!("arti configuration: {e}")))
}

fn bootstrap_of(s: &arti_client::status::BootstrapStatus) -> Bootstrap {
    let percent = (s.as_frac().clamp(0.0, 1.0) * 100.0).round();
    Bootstrap {
        // In 0 ..= 100 by the clamp.
        percent: percent as u8,
        ready: s.ready_for_traffic(),
        blocked: s.blocked().map(|b| b.to_string()),
    }
}

impl Tor {
    /// Starts a client (it bootstraps in the background: see [`status`](Self::status),
    /// [`events`](Self::events) and [`bootstrapped`](Self::bootstrapped)). Must be called on a
    /// tokio runtime.
    pub async fn start(config: TorConfig) -> Result<Tor> {
        // arti's rustls needs a process-wide provider; ours is ring everywhere. Another
        // installed first is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client_config = client_config(&config)?;
        let client = TorClient::builder()
            .config(client_config)
            .bootstrap_behavior(BootstrapBehavior::OnDemand)
            .create_unbootstrapped()
            .map_err(|e| tor_error("creating the Tor client", &e))?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (inbound, incoming) = Incoming::channel(config.incoming_capacity);
        let inner = Arc::new(Inner {
            client,
            config,
            clock: TokioClock::default(),
            status: Mutex::new(State::default()),
            events,
            inbound,
            incoming: Mutex::new(Some(incoming)),
            tasks: Mutex::new(Vec::new()),
            services: Mutex::new(Vec::new()),
        });
        let tor = Tor { inner };
        tor.spawn_bootstrap();
        Ok(tor)
    }

    fn spawn_bootstrap(&self) {
        let weak = Arc::downgrade(&self.inner);
        let mut statuses = self.inner.client.bootstrap_events();
        let watch = tokio::spawn(async move {
            while let Some(s) = statuses.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let b = bootstrap_of(&s);
                let changed = {
                    let mut st = lock(&inner.status);
                    let changed = st.bootstrap != b;
                    st.bootstrap = b.clone();
                    changed
                };
                if changed {
                    let _ = inner.events.send(TorEvent::Bootstrap(b));
                }
            }
        });
        let client = Arc::clone(&self.inner.client);
        let weak = Arc::downgrade(&self.inner);
        let run = tokio::spawn(async move {
            if let Err(e) = client.bootstrap().await {
                tracing::warn!("tor bootstrap failed: {e}");
                if let Some(inner) = weak.upgrade() {
                    let b = {
                        let mut st = lock(&inner.status);
                        st.bootstrap.blocked = Some(e.to_string());
                        st.bootstrap.clone()
                    };
                    let _ = inner.events.send(TorEvent::Bootstrap(b));
                }
            }
        });
        lock(&self.inner.tasks).extend([watch, run]);
    }

    /// Waits until the client can carry traffic (bootstrapping again if an earlier attempt
    /// failed).
    pub async fn bootstrapped(&self) -> Result<()> {
        self.inner
            .client
            .bootstrap()
            .await
            .map_err(|e| tor_error("bootstrapping", &e))?;
        // The snapshot says so at once (the event watcher may not have run yet).
        let mut b = bootstrap_of(&self.inner.client.bootstrap_status());
        b.ready = true;
        b.blocked = None;
        let changed = {
            let mut st = lock(&self.inner.status);
            let changed = st.bootstrap != b;
            st.bootstrap = b.clone();
            changed
        };
        if changed {
            let _ = self.inner.events.send(TorEvent::Bootstrap(b));
        }
        Ok(())
    }

    /// Everything at once.
    pub fn status(&self) -> TorStatus {
        let st = lock(&self.inner.status);
        TorStatus {
            bootstrap: st.bootstrap.clone(),
            services: st.services.values().cloned().collect(),
        }
    }

    /// Changes from now on (a slow subscriber misses the oldest: read
    /// [`status`](Self::status) after a lag).
    pub fn events(&self) -> broadcast::Receiver<TorEvent> {
        self.inner.events.subscribe()
    }

    /// A byte stream to port `port` of the onion service `host` (`xxx.onion`, v3).
    pub async fn connect(&self, host: &str, port: u16) -> Result<BoxedStream> {
        crate::onion::onion_key(host)?;
        if port == 0 {
            return Err(Error::WrongAddress(format!("{host}:0: port 0")));
        }
        let mut prefs = StreamPrefs::new();
        prefs.connect_to_onion_services(BoolOrAuto::Explicit(true));
        let fut = self
            .inner
            .client
            .connect_with_prefs((host.to_owned(), port), &prefs);
        match within(&self.inner.clock, self.inner.config.connect_timeout, fut).await {
            Some(Ok(stream)) => Ok(Box::new(stream)),
            Some(Err(e)) => Err(tor_error(&format!("connecting to {host}:{port}"), &e)),
            None => Err(Error::Unreachable(format!(
                "connecting to {host}:{port}: no answer within {:?}",
                self.inner.config.connect_timeout
            ))),
        }
    }

    /// A byte stream to the onion service of an httpkey URL, for the caller to wrap in TLS
    /// pinned to the URL's key id (which fails closed on any other key, as on TCP). Only
    /// `.onion` hosts: Tor is not used to reach IP addresses.
    pub async fn dial(&self, url: &HttpKeyUrl) -> Result<BoxedStream> {
        match url.host() {
            Host::Onion(name) => self.connect(name, url.port()).await,
            other => Err(Error::WrongAddress(format!(
                "{other} is not an onion host (dial it over TCP)"
            ))),
        }
    }

    /// Hosts an onion service whose identity — and so whose address — is `identity`'s Ed25519
    /// key. Streams to `options.port` (and messages, see [`frame`](crate::frame)) arrive on
    /// [`Link::incoming`]. Bootstraps first if needed.
    pub async fn host(&self, identity: &KeyPair, options: ServiceOptions) -> Result<OnionService> {
        self.bootstrapped().await?;
        service::launch(self, identity, options)
    }

    /// Lets this client reach `service`'s onion service when it runs in restricted discovery
    /// mode and authorised `identity` (the key this client is known by: its discovery key is
    /// derived from it, see [`AuthorizedClient`]).
    pub fn authorize_with(&self, service: &str, identity: &KeyPair) -> Result<()> {
        let hsid: arti_client::HsId = service
            .parse()
            .map_err(|e| Error::WrongAddress(format!("{service}: {e}")))?;
        let secret = keys::client_desc_secret(identity)?;
        // Replace what an earlier call put there.
        let _ = self
            .inner
            .client
            .remove_service_discovery_key(arti_client::KeystoreSelector::Primary, hsid);
        self.inner
            .client
            .insert_service_discovery_key(arti_client::KeystoreSelector::Primary, hsid, secret)
            .map_err(|e| tor_error("storing the discovery key", &e))?;
        Ok(())
    }

    /// Stops every hosted service (their descriptors expire on the directories) and the
    /// client's background tasks. Streams already open stay open until their ends close.
    pub fn shutdown(&self) {
        for service in lock(&self.inner.services).drain(..) {
            if let Some(service) = service.upgrade() {
                service.stop();
            }
        }
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        let mut st = lock(&self.inner.status);
        for s in st.services.values_mut() {
            s.state = crate::status::ServiceState::Shutdown;
        }
    }

    /// [`shutdown`](Self::shutdown), then waits until arti has let go of the data directory
    /// (its state lock) — what restarting on the same directory within one process needs. It
    /// waits for every clone of this handle to be dropped too.
    pub async fn close(self) {
        self.shutdown();
        let stopped = self.inner.client.wait_for_stop();
        drop(self);
        stopped.await;
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    pub(crate) fn client(&self) -> &Arc<TorClient<PreferredRuntime>> {
        &self.client
    }

    pub(crate) fn config(&self) -> &TorConfig {
        &self.config
    }

    pub(crate) fn clock(&self) -> &TokioClock {
        &self.clock
    }

    pub(crate) fn inbound(&self) -> &mpsc::Sender<Inbound> {
        &self.inbound
    }

    /// Records a service's status and tells subscribers when it changed.
    pub(crate) fn service_status(&self, onion: &str, update: impl FnOnce(&mut ServiceStatus)) {
        let event = {
            let mut st = lock(&self.status);
            let Some(s) = st.services.get_mut(onion) else {
                return;
            };
            let before = s.clone();
            update(s);
            (*s != before).then(|| s.clone())
        };
        if let Some(s) = event {
            let _ = self.events.send(TorEvent::Service(s));
        }
    }

    fn add_running(&self, running: std::sync::Weak<service::Running>) {
        let mut services = lock(&self.services);
        services.retain(|s| s.strong_count() > 0);
        services.push(running);
    }

    pub(crate) fn add_service(&self, status: ServiceStatus) {
        lock(&self.status)
            .services
            .insert(status.onion.clone(), status.clone());
        let _ = self.events.send(TorEvent::Service(status));
    }
}

/// `fut`, or `None` once `timeout` has passed on `clock`.
pub(crate) async fn within<T>(
    clock: &dyn Clock,
    timeout: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        value = fut => Some(value),
        () = clock.sleep(timeout) => None,
    }
}

#[async_trait::async_trait]
impl Link for Tor {
    fn transport(&self) -> Transport {
        Transport::Tor
    }

    async fn send(&self, to: &Address, message: &[u8]) -> adhoc_wireless::Result<()> {
        let Address::Onion(host, _) = to else {
            return Err(Error::WrongAddress(format!("{to} is not an onion address")).into());
        };
        let bytes = frame::message_frame(message)?;
        let mut stream = self.connect(host, frame::MESSAGE_PORT).await?;
        let io = async {
            stream.write_all(&bytes).await?;
            stream.flush().await?;
            let mut answer = [0u8; 1];
            stream.read_exact(&mut answer).await?;
            Ok::<u8, std::io::Error>(answer[0])
        };
        let timeout = self.inner.config.message_timeout;
        match within(&self.inner.clock, timeout, io).await {
            Some(Ok(frame::ACCEPTED)) => Ok(()),
            Some(Ok(frame::REFUSED)) => Err(adhoc_wireless::Error::Unreachable(format!(
                "{host} refused the message: its inbound queue is full"
            ))),
            Some(Ok(other)) => Err(Error::Malformed {
                what: "message answer",
                reason: format!("{other:#04x}"),
            }
            .into()),
            Some(Err(e)) => Err(adhoc_wireless::Error::Unreachable(format!(
                "sending to {host}: {e}"
            ))),
            None => Err(adhoc_wireless::Error::Unreachable(format!(
                "sending to {host}: no answer within {timeout:?}"
            ))),
        }
    }

    async fn connect(&self, to: &Address) -> adhoc_wireless::Result<BoxedStream> {
        match to {
            Address::Onion(host, port) => Ok(Tor::connect(self, host, *port).await?),
            other => Err(Error::WrongAddress(format!("{other} is not an onion address")).into()),
        }
    }

    fn max_message_bytes(&self) -> usize {
        MAX_MESSAGE_BYTES
    }

    fn incoming(&self) -> Option<Incoming> {
        lock(&self.inner.incoming).take()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::config::{Authority, Fallback, PrivateNetwork};

    /// A private network nobody runs (bootstrapping fails quietly on 127.0.0.1:9).
    fn nowhere() -> PrivateNetwork {
        PrivateNetwork {
            authorities: vec![Authority {
                name: "a".into(),
                v3ident: "0123456789ABCDEF0123456789ABCDEF01234567".into(),
                dir_addr: "127.0.0.1:9".parse().unwrap(),
            }],
            fallbacks: vec![Fallback {
                rsa_identity: "89ABCDEF0123456789ABCDEF0123456789ABCDEF".into(),
                ed25519_identity: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
                or_addr: "127.0.0.1:9".parse().unwrap(),
            }],
            hsdir_interval_minutes: Some(8),
            ipv4_family_prefix: Some(33),
            allow_local_addrs: true,
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_private_network_replaces_the_public_one() {
        let tmp = tempfile::tempdir().unwrap();
        let config = client_config(&TorConfig::private(tmp.path(), nowhere())).unwrap();
        let net = config.dir_mgr_config().unwrap();
        let text = format!("{:?}", net.network);
        // Our one authority and one fallback, and none of the public network's.
        assert_eq!(net.network.authorities().v3idents().len(), 1, "{text}");
        assert_eq!(net.network.fallback_caches().len(), 1, "{text}");
        assert!(
            !text.contains("27102BC123E7AF1D4741AE047E160C91ADC76B21"),
            "bastet"
        );
    }

    #[tokio::test]
    async fn state_lives_in_private_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("tor");
        let tor = Tor::start(TorConfig::private(&data, nowhere()))
            .await
            .unwrap();
        for dir in [data.clone(), data.join("state"), data.join("cache")] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        assert!(!tor.status().bootstrap.ready);
        tor.shutdown();
    }

    #[tokio::test]
    async fn a_data_directory_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("tor");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Tor::start(TorConfig::private(&data, nowhere()))
            .await
            .expect_err("a world-writable data directory must be refused");
        eprintln!("{err}");
        assert_eq!(err.kind(), crate::ErrorKind::LocalIo, "{err}");
    }

    #[tokio::test]
    async fn a_private_network_description_that_cannot_work_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut net = nowhere();
        net.fallbacks[0].ed25519_identity = "not base64!".into();
        let err = Tor::start(TorConfig::private(tmp.path(), net))
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }
}
