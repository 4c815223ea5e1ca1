//! The crate's error type, with a [`kind`](Error::kind) that says what the caller should do.

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer is not reachable on this transport now (out of range, gone, refused).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A message or advert is larger than the transport allows.
    #[error("too large: {what} is {size} bytes, at most {limit} allowed")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Bytes from a peer that are not what the format says.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An address of another transport, or of a kind this transport does not dial.
    #[error("wrong address: {0}")]
    WrongAddress(String),
    /// The transport (or the whole neighbourhood) was shut down.
    #[error("closed")]
    Closed,
    /// A local I/O failure (sockets, interfaces).
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Cryptography failed (a key that does not decode, a random source that failed).
    #[error("crypto: {0}")]
    Crypto(String),
    /// A configuration value out of its range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A beacon could not be built or checked.
    #[cfg(feature = "beacons")]
    #[error(transparent)]
    Beacon(#[from] crate::beacon::BeaconError),
}

/// What the caller should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Try again later, or on another transport.
    Transient,
    /// The request was wrong (size, address): fix it.
    InvalidInput,
    /// A peer sent something malformed: drop it, do not retry.
    PeerMisbehaved,
    /// A local resource failed: an operator must look.
    LocalIo,
    /// Shut down.
    Closed,
}

impl Error {
    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unreachable(_) => ErrorKind::Transient,
            Error::TooLarge { .. } | Error::WrongAddress(_) | Error::InvalidConfig(_) => {
                ErrorKind::InvalidInput
            }
            Error::Malformed { .. } => ErrorKind::PeerMisbehaved,
            Error::Io { .. } | Error::Crypto(_) => ErrorKind::LocalIo,
            Error::Closed => ErrorKind::Closed,
            #[cfg(feature = "beacons")]
            Error::Beacon(e) => e.kind(),
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Error {
        Error::Malformed {
            what,
            reason: reason.into(),
        }
    }

    /// A local I/O error, saying what was being done.
    pub fn io(action: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            action: action.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
