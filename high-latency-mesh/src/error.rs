//! The crate's error type, with a [`kind`](Error::kind) that says what the caller should do.

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes from a peer or a file that are not what the format allows.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Something larger than its bound.
    #[error("too large: {what} is {size} bytes, at most {limit} allowed")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A key that cannot be used here (wrong algorithm, not a valid point).
    #[error("key: {0}")]
    Key(String),
    /// A sealed message that does not open with this key (not ours, or altered).
    #[error("cannot open: {0}")]
    Open(&'static str),
    /// A configuration value that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The message store failed.
    #[error("store: {0}")]
    Store(#[from] couch_sync::Error),
    /// An argument that cannot work (an expiry not after the creation time, a payload too
    /// large to seal).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A cryptographic primitive or the random source failed where it should not.
    #[error("crypto: {0}")]
    Crypto(String),
    /// Not enough room in the node's quota, even after evicting what may be evicted.
    #[error("quota: {needed} bytes needed, {available} can be made free")]
    QuotaExceeded {
        /// Bytes needed.
        needed: u64,
        /// Bytes that are free or could be freed.
        available: u64,
    },
    /// A peer broke the session protocol (a message out of order, or not in the format).
    #[error("session protocol: {0}")]
    Protocol(String),
    /// The link, the stream or TLS failed (the peer left, a handshake failed).
    #[error("transport: {0}")]
    Transport(String),
    /// A step of a session took longer than its bound.
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

/// What the caller should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Fix the input or the configuration.
    InvalidInput,
    /// The peer (or whoever wrote the bytes) broke the format or the crypto: drop what it sent.
    PeerMisbehaved,
    /// Something local: the store, files.
    LocalIo,
    /// May work later: the peer left, a step timed out, the quota is full for now.
    Transient,
}

impl Error {
    /// What the caller should do.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Malformed { .. } | Error::TooLarge { .. } | Error::Open(_) => {
                ErrorKind::PeerMisbehaved
            }
            Error::Key(_) | Error::InvalidConfig(_) => ErrorKind::InvalidInput,
            Error::Store(_) => ErrorKind::LocalIo,
            Error::InvalidArgument(_) => ErrorKind::InvalidInput,
            Error::Crypto(_) => ErrorKind::LocalIo,
            Error::QuotaExceeded { .. } | Error::Transport(_) | Error::Timeout(_) => {
                ErrorKind::Transient
            }
            Error::Protocol(_) => ErrorKind::PeerMisbehaved,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
