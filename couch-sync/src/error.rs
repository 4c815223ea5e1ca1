//! The crate's error type. Every error a client can cause maps to CouchDB's status code, `error`
//! and `reason` ([`Error::status`], [`Error::error`], [`Error::reason`]), exactly as CouchDB
//! answers, so the HTTP layer only serialises it.

use std::borrow::Cow;

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error CouchDB reports to clients with this status, `error` and `reason`.
    #[error("{error} ({status}): {reason}")]
    Couch {
        /// HTTP status code.
        status: u16,
        /// CouchDB's `error` string (`not_found`, `conflict`, ...).
        error: Cow<'static, str>,
        /// CouchDB's `reason` string.
        reason: Cow<'static, str>,
    },
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(#[source] Box<redb::Error>),
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Stored data is not in the format this version writes.
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// A peer could not be reached, or the connection failed or timed out (worth retrying).
    #[error("peer unreachable: {0}")]
    Transport(String),
    /// A peer answered something that is not what the protocol says (not worth retrying).
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(String),
}

/// What the caller should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request was wrong (4xx other than 401/403): fix the request.
    BadRequest,
    /// The caller may not do this (401/403).
    Unauthorized,
    /// Something is missing (404).
    NotFound,
    /// A conflict with the current state (409, 412): re-read and retry.
    Conflict,
    /// Local storage failed or is corrupt: an operator must look.
    LocalIo,
    /// A peer is unreachable or overloaded (connection failures, timeouts, 5xx, 408, 429): retry
    /// later.
    Transient,
    /// A peer broke the protocol: do not retry blindly.
    PeerMisbehaved,
}

macro_rules! couch {
    ($status:expr, $error:expr, $reason:expr) => {
        Error::Couch {
            status: $status,
            error: Cow::Borrowed($error),
            reason: $reason.into(),
        }
    };
}

impl Error {
    /// Any CouchDB-style error.
    pub fn couch(
        status: u16,
        error: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Error {
        Error::Couch {
            status,
            error: error.into(),
            reason: reason.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(reason: impl Into<Cow<'static, str>>) -> Error {
        couch!(400, "bad_request", reason)
    }

    /// 400 `bad_request` for a malformed revision, as CouchDB words it (`rev` is for logs only:
    /// CouchDB does not echo it).
    pub fn bad_rev(rev: impl AsRef<str>) -> Error {
        let _ = rev;
        Error::bad_request("Invalid rev format")
    }

    /// 400 `illegal_docid`.
    pub fn illegal_docid(reason: impl Into<Cow<'static, str>>) -> Error {
        couch!(400, "illegal_docid", reason)
    }

    /// 409 `not_found`/`missing_rev`: a revision named for an update that the document never had.
    pub fn missing_rev() -> Error {
        couch!(409, "not_found", "missing_rev")
    }

    /// 400 `query_parse_error`.
    pub fn query_parse(reason: impl Into<Cow<'static, str>>) -> Error {
        couch!(400, "query_parse_error", reason)
    }

    /// 400 `doc_validation`.
    pub fn doc_validation(reason: impl Into<Cow<'static, str>>) -> Error {
        couch!(400, "doc_validation", reason)
    }

    /// 404 `not_found` with reason `missing` (or another).
    pub fn not_found(reason: impl Into<Cow<'static, str>>) -> Error {
        couch!(404, "not_found", reason)
    }

    /// 404 for a database that does not exist.
    pub fn no_db() -> Error {
        Error::not_found("Database does not exist.")
    }

    /// 409 `conflict`.
    pub fn conflict() -> Error {
        couch!(409, "conflict", "Document update conflict.")
    }

    /// 412 `file_exists`.
    pub fn db_exists() -> Error {
        couch!(
            412,
            "file_exists",
            "The database could not be created, the file already exists."
        )
    }

    /// 400 `illegal_database_name`.
    pub fn illegal_db_name(name: &str) -> Error {
        let shown: String = name.chars().take(100).collect();
        couch!(
            400,
            "illegal_database_name",
            format!(
                "Name: '{shown}'. Only lowercase characters (a-z), digits (0-9), and any of the \
                 characters _, $, (, ), +, -, and / are allowed. Must begin with a letter."
            )
        )
    }

    /// 413 `too_large`.
    pub fn too_large(what: &str) -> Error {
        couch!(413, "too_large", format!("{what} is too large"))
    }

    /// 413 `document_too_large` (reason: the document id), as CouchDB 3 answers a document
    /// body over `max_document_size`.
    pub fn document_too_large(id: &str) -> Error {
        let shown: String = id.chars().take(200).collect();
        couch!(413, "document_too_large", shown)
    }

    /// 412 `missing_stub`.
    pub fn missing_stub(reason: impl Into<Cow<'static, str>>) -> Error {
        couch!(412, "missing_stub", reason)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(reason: impl Into<Cow<'static, str>>) -> Error {
        couch!(401, "unauthorized", reason)
    }

    /// 403 `forbidden`.
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Error {
        couch!(403, "forbidden", reason)
    }

    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The HTTP status CouchDB would answer.
    pub fn status(&self) -> u16 {
        match self {
            Error::Couch { status, .. } => *status,
            Error::Transport(_) | Error::PeerMisbehaved(_) => 502,
            _ => 500,
        }
    }

    /// CouchDB's `error` member.
    pub fn error(&self) -> &str {
        match self {
            Error::Couch { error, .. } => error,
            Error::Transport(_) => "peer_unreachable",
            Error::PeerMisbehaved(_) => "bad_peer",
            _ => "internal_server_error",
        }
    }

    /// CouchDB's `reason` member.
    pub fn reason(&self) -> Cow<'_, str> {
        match self {
            Error::Couch { reason, .. } => Cow::Borrowed(reason),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Transport(_) => return ErrorKind::Transient,
            Error::PeerMisbehaved(_) => return ErrorKind::PeerMisbehaved,
            Error::Couch {
                status: 408 | 429 | 500..=599,
                ..
            } => return ErrorKind::Transient,
            _ => {}
        }
        match self.status() {
            401 | 403 => ErrorKind::Unauthorized,
            404 => ErrorKind::NotFound,
            409 | 412 => ErrorKind::Conflict,
            400..=499 => ErrorKind::BadRequest,
            _ => ErrorKind::LocalIo,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Storage(Box::new(e.into()))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
