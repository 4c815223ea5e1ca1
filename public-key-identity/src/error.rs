//! The crate's one error type, and what a caller should do about each kind.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// Match on [`Error::kind`] to decide what to do; the variants themselves carry the detail for
/// messages and logs and may grow (`#[non_exhaustive]`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key id string is not 52 lowercase RFC 4648 base32 characters encoding 32 bytes.
    #[error("invalid key id {input:?}: {reason}")]
    InvalidKeyId {
        /// What was given (truncated to 80 characters).
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// An `httpkey://` URL is malformed.
    #[error("invalid httpkey URL: {0}")]
    InvalidUrl(#[from] crate::httpkey::UrlError),

    /// Key material could not be generated, parsed or used.
    #[error("key error: {0}")]
    Key(String),

    /// A certificate could not be generated.
    #[error("cannot generate certificate: {0}")]
    CertGeneration(#[source] rcgen::Error),

    /// A peer's certificate could not be parsed or its self-signature does not verify.
    #[error("bad peer certificate: {0}")]
    BadCertificate(String),

    /// A key file is readable or writable by users other than its owner.
    #[error(
        "refusing to use private key {path}: its mode is {mode:04o}, but a private key must not be \
         accessible by group or others (run `chmod 600 {path}`)"
    )]
    InsecureKeyFile {
        /// The offending file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A PEM file does not hold what it should.
    #[error("{path}: {reason}")]
    BadPemFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An identity name in the keystore is not a plain file-name-safe word.
    #[error(
        "invalid identity name {0:?}: use 1-64 characters from a-z, A-Z, 0-9, '-', '_' and '.', not starting with '.'"
    )]
    InvalidName(String),

    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Building a rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// An identity-exchange message was malformed or arrived out of order.
    #[error("identity exchange: {0}")]
    Exchange(#[from] crate::exchange::ExchangeError),

    /// An identity card is malformed or its signature does not verify.
    #[error("identity card: {0}")]
    Card(#[from] crate::card::CardError),

    /// Rendering a QR code failed (the data is too long for any QR version).
    #[cfg(feature = "qr")]
    #[error("QR code: {0}")]
    Qr(#[from] qrcode::types::QrError),
}

/// What the caller should do about an [`Error`], in the manner of arti's `ErrorKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller (user or program) gave bad input; fix the input.
    InvalidInput,
    /// A remote peer sent something malformed, forged or out of protocol; distrust the peer.
    PeerMisbehaved,
    /// Local files or permissions are wrong; fix the local setup.
    LocalIo,
    /// A cryptographic library refused an operation; most likely a bug or unsupported platform.
    Internal,
}

impl Error {
    /// Groups this error by what the caller should do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKeyId { .. } | Error::InvalidUrl(_) | Error::InvalidName(_) => {
                ErrorKind::InvalidInput
            }
            Error::BadCertificate(_) | Error::Exchange(_) | Error::Card(_) => {
                ErrorKind::PeerMisbehaved
            }
            Error::InsecureKeyFile { .. } | Error::BadPemFile { .. } | Error::Io { .. } => {
                ErrorKind::LocalIo
            }
            Error::Key(_) | Error::CertGeneration(_) | Error::Tls(_) => ErrorKind::Internal,
            #[cfg(feature = "qr")]
            Error::Qr(_) => ErrorKind::InvalidInput,
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
