//! What the transport reports: a snapshot for a status page, and events as things change.

use serde::Serialize;

/// Everything at once (a status page's view).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TorStatus {
    /// The client's way into the network.
    pub bootstrap: Bootstrap,
    /// The onion services this transport hosts.
    pub services: Vec<ServiceStatus>,
}

/// How far the client is into the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Bootstrap {
    /// 0 ..= 100.
    pub percent: u8,
    /// Usable for traffic: streams can be opened and services published.
    pub ready: bool,
    /// Why it is stuck, when it is (no network, clock skew, …).
    pub blocked: Option<String>,
}

/// One hosted onion service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// `<56 characters>.onion`.
    pub onion: String,
    /// The virtual port its streams are for.
    pub port: u16,
    /// Where it is in its life.
    pub state: ServiceState,
    /// Restricted discovery: only this many authorised clients can fetch the descriptor
    /// (`None`: anyone who knows the address).
    pub authorized_clients: Option<usize>,
    /// The current problem, when there is one.
    pub problem: Option<String>,
    /// Streams accepted and handed to the application.
    pub streams_accepted: u64,
    /// Streams refused: a port nobody listens on, a full queue, a malformed message.
    pub streams_refused: u64,
}

/// The life of an onion service (arti's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServiceState {
    /// Establishing introduction points and publishing the descriptor; maybe reachable.
    Bootstrapping,
    /// Published with its introduction points: reachable.
    Running,
    /// Reachable, with fewer introduction points than wanted.
    Degraded,
    /// Was running, lost introduction points or its descriptor is stale; maybe reachable.
    Recovering,
    /// Cannot work until something changes (see `problem`): not reachable.
    Broken,
    /// Not running.
    Shutdown,
}

impl ServiceState {
    /// Whether clients can reach the service in this state (arti's own reading of it; a short
    /// consensus interval makes it swing: test real reachability, not this).
    pub fn reachable(self) -> bool {
        matches!(self, ServiceState::Running | ServiceState::Degraded)
    }
}

/// A change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TorEvent {
    /// The bootstrap progressed, finished or got stuck.
    Bootstrap(Bootstrap),
    /// A hosted service changed state (descriptor published, introduction points lost, …).
    Service(ServiceStatus),
}
