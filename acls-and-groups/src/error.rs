//! The crate's one error type, what a caller should do about each kind, and policy warnings.

use std::fmt;

use crate::name::GroupName;

/// Everything that can go wrong in this crate.
///
/// Match on [`Error::kind`] to decide what to do; the variants carry the detail for messages and
/// logs and may grow (`#[non_exhaustive]`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A group, database or view name breaks its naming rule.
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidName {
        /// Which kind of name ("group name", "database name", "view name").
        what: &'static str,
        /// What was given (truncated to 80 characters).
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A member is not `key:<key id>`, `group:<name>` or `anonymous`.
    #[error("invalid member {input:?}: {reason}")]
    InvalidMember {
        /// What was given (truncated to 80 characters).
        input: String,
        /// Why it was refused.
        reason: String,
    },

    /// A policy document (or a document's reader list) is malformed: which document, which
    /// field, and why.
    #[error("{document}{}: {reason}", at_field(.field))]
    InvalidDocument {
        /// Which document: its id when known (`acl:photos`), and its position in a whole policy
        /// (`documents[3]`).
        document: String,
        /// The offending field as a path (`read[2]`, `views."by-date"[0]`), or `None` when the
        /// document as a whole is wrong.
        field: Option<String>,
        /// What is wrong.
        reason: String,
    },

    /// Input that should be JSON is not.
    #[error("{document}: not valid JSON: {source}")]
    Json {
        /// What was being read.
        document: String,
        /// The parser's complaint (with line and column).
        #[source]
        source: serde_json::Error,
    },

    /// Input is larger than this crate accepts.
    #[error("{what} is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes (see [`limits`](crate::limits)).
        limit: usize,
    },

    /// A change would take the policy over one of its count limits.
    #[error("too many {what}: the limit is {limit}")]
    LimitExceeded {
        /// What there would be too many of.
        what: &'static str,
        /// The limit (see [`limits`](crate::limits)).
        limit: usize,
    },

    /// [`Policy::validate`](crate::Policy::validate) found a problem.
    #[error("inconsistent policy: {0}")]
    Inconsistent(Warning),

    /// [`Policy::revoke_key`](crate::Policy::revoke_key) was asked to revoke the owner's own
    /// key: a device is revoked from another of the person's devices.
    #[error(
        "key {key} is this device's own key: a device cannot revoke itself (revoke it from another of your devices)"
    )]
    RevokingOwner {
        /// The owner's key id.
        key: public_key_identity::KeyId,
    },
}

fn at_field(field: &Option<String>) -> String {
    match field {
        Some(field) => format!(", field {field}"),
        None => String::new(),
    }
}

/// What the caller should do about an [`Error`], in the manner of arti's `ErrorKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A name, member or document is malformed; fix the input (or skip the document).
    InvalidInput,
    /// Input or policy is over a size or count limit; refuse it.
    TooLarge,
    /// The policy loads and answers, but validation found cycles or dangling group references;
    /// show it to the person who edits the policy.
    Inconsistent,
}

impl Error {
    /// Groups this error by what the caller should do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidName { .. }
            | Error::InvalidMember { .. }
            | Error::InvalidDocument { .. }
            | Error::Json { .. }
            | Error::RevokingOwner { .. } => ErrorKind::InvalidInput,
            Error::TooLarge { .. } | Error::LimitExceeded { .. } => ErrorKind::TooLarge,
            Error::Inconsistent(_) => ErrorKind::Inconsistent,
        }
    }

    pub(crate) fn invalid_name(what: &'static str, input: &str, reason: &'static str) -> Error {
        Error::InvalidName {
            what,
            input: truncate(input),
            reason,
        }
    }

    pub(crate) fn invalid_member(input: &str, reason: impl Into<String>) -> Error {
        Error::InvalidMember {
            input: truncate(input),
            reason: reason.into(),
        }
    }
}

/// The first 80 characters of `input`, for error messages.
pub(crate) fn truncate(input: &str) -> String {
    input.chars().take(80).collect()
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Something about a policy that does not stop it from answering, but that the person who edits
/// it should fix. [`Policy::warnings`](crate::Policy::warnings) lists them;
/// [`Policy::validate`](crate::Policy::validate) turns the first into an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Warning {
    /// These groups contain each other (a cycle; one group alone contains itself). Decisions
    /// still terminate: each of them then has the members of all of them.
    GroupCycle {
        /// The groups of the cycle, in name order.
        groups: Vec<GroupName>,
    },
    /// A group is referenced but not defined, so it has no members and grants nothing (it may
    /// simply not have replicated yet).
    UndefinedGroup {
        /// The missing group.
        group: GroupName,
        /// The document that refers to it (`group:friends`, `acl:photos`).
        referenced_by: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::GroupCycle { groups } => {
                f.write_str("groups contain each other in a cycle: ")?;
                for (i, group) in groups.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{group}")?;
                }
                Ok(())
            }
            Warning::UndefinedGroup {
                group,
                referenced_by,
            } => write!(
                f,
                "{referenced_by} refers to group:{group}, which is not defined (it has no members)"
            ),
        }
    }
}
