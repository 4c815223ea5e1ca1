//! The crate's error type, with a [`kind`](Error::kind) that says what the caller should do.

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value that cannot work (a private network description that does not
    /// parse, a data directory that is not a directory, a key of the wrong algorithm).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A key that cannot be an onion service identity (not Ed25519) or a peer key that does not
    /// decode.
    #[error("key: {0}")]
    Key(String),
    /// An address Tor does not dial here (not a v3 `.onion` host, or another transport's).
    #[error("wrong address: {0}")]
    WrongAddress(String),
    /// The onion address and the key id of an httpkey URL name different keys.
    #[error("the onion address {onion} is not the key {key_id}'s")]
    KeyMismatch {
        /// The onion host of the URL.
        onion: String,
        /// The key id of the URL.
        key_id: String,
    },
    /// Tor has not bootstrapped (yet, or it cannot: see the status's `blocked`).
    #[error("not bootstrapped: {0}")]
    NotBootstrapped(String),
    /// The onion service or the relay path could not be reached now (descriptor not found,
    /// introduction or rendezvous failed, the service refused the stream, a timeout).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A message larger than the link carries.
    #[error("too large: {what} is {size} bytes, at most {limit} allowed")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer's service answered with something the framing does not allow.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The transport was shut down.
    #[error("closed")]
    Closed,
    /// A local I/O failure (the data directory, its permissions).
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// arti refused or failed, in a way none of the above describes.
    #[error("tor: {0}")]
    Tor(String),
}

/// What the caller should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Try again later (bootstrapping, a service not yet published, a circuit that failed).
    Transient,
    /// Fix the input or the configuration.
    InvalidInput,
    /// The peer is not who the URL names, or broke the protocol.
    PeerMisbehaved,
    /// Something local: files, permissions.
    LocalIo,
    /// The transport is gone.
    Closed,
}

impl Error {
    /// What the caller should do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotBootstrapped(_) | Error::Unreachable(_) | Error::Tor(_) => {
                ErrorKind::Transient
            }
            Error::InvalidConfig(_)
            | Error::Key(_)
            | Error::WrongAddress(_)
            | Error::TooLarge { .. } => ErrorKind::InvalidInput,
            Error::KeyMismatch { .. } | Error::Malformed { .. } => ErrorKind::PeerMisbehaved,
            Error::Io { .. } => ErrorKind::LocalIo,
            Error::Closed => ErrorKind::Closed,
        }
    }

    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            action: action.into(),
            source,
        }
    }
}

impl From<Error> for adhoc_wireless::Error {
    fn from(e: Error) -> adhoc_wireless::Error {
        match e {
            Error::Unreachable(m) | Error::NotBootstrapped(m) => {
                adhoc_wireless::Error::Unreachable(m)
            }
            Error::WrongAddress(m) => adhoc_wireless::Error::WrongAddress(m),
            Error::TooLarge { what, size, limit } => {
                adhoc_wireless::Error::TooLarge { what, size, limit }
            }
            Error::Malformed { what, reason } => adhoc_wireless::Error::Malformed { what, reason },
            Error::Closed => adhoc_wireless::Error::Closed,
            Error::Io { action, source } => adhoc_wireless::Error::Io { action, source },
            other => adhoc_wireless::Error::Unreachable(other.to_string()),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
