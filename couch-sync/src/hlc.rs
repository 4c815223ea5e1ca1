//! Hybrid logical clocks for last-writer-wins databases.
//!
//! Every write to a database whose [`ConflictPolicy`] is `LastWriterWins` is stamped, in its body,
//! with the member [`HLC_FIELD`] (a plain member, not a `_` one, so it replicates through any
//! CouchDB-compatible peer unchanged):
//!
//! ```text
//! "couch_sync_hlc": "0192f3a4b5c6-0003-9f8e7d6c5b4a"
//!                    ^ milliseconds  ^ counter ^ writer
//! ```
//!
//! twelve hex digits of physical time (ms since the Unix epoch), four of a logical counter and
//! twelve naming the writing database instance, so stamps order as strings. A new stamp is
//! greater than the local clock, than every stamp this database has seen (from any replica),
//! and than the stamp of the revision it edits — so an edit always beats what it was based on,
//! even when the editing device's clock is years behind. When replication leaves a document with
//! several live leaves, the leaf with the greatest stamp wins (CouchDB's rule breaks ties and
//! ranks unstamped leaves last) and every other live leaf gets a tombstone child whose revision
//! id depends only on the loser: replicas that resolve the same conflict independently create
//! the same tombstones, so their trees end identical and no new conflict appears.

use std::fmt;
use std::str::FromStr;

/// The body member holding a revision's stamp.
pub const HLC_FIELD: &str = "couch_sync_hlc";

/// How a database treats conflicting revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Keep every conflicting leaf; CouchDB's deterministic winner decides what readers see.
    #[default]
    CouchDb,
    /// The leaf with the greatest hybrid-logical-clock stamp wins; losers are deleted.
    LastWriterWins,
}

impl ConflictPolicy {
    /// The name used in configuration and the HTTP API: `couchdb` or `last-writer-wins`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::CouchDb => "couchdb",
            ConflictPolicy::LastWriterWins => "last-writer-wins",
        }
    }

    pub(crate) fn code(self) -> u64 {
        match self {
            ConflictPolicy::CouchDb => 0,
            ConflictPolicy::LastWriterWins => 1,
        }
    }

    pub(crate) fn from_code(code: u64) -> ConflictPolicy {
        if code == 1 {
            ConflictPolicy::LastWriterWins
        } else {
            ConflictPolicy::CouchDb
        }
    }
}

impl FromStr for ConflictPolicy {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<ConflictPolicy> {
        match s {
            "couchdb" => Ok(ConflictPolicy::CouchDb),
            "last-writer-wins" => Ok(ConflictPolicy::LastWriterWins),
            _ => Err(crate::Error::bad_request(
                "conflict policy must be \"couchdb\" or \"last-writer-wins\"",
            )),
        }
    }
}

/// A hybrid-logical-clock stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    /// Physical milliseconds.
    pub millis: u64,
    /// Logical counter within the same millisecond.
    pub counter: u16,
    /// The writer (48 bits of its database instance id).
    pub node: u64,
}

const MAX_MILLIS: u64 = (1 << 48) - 1;
const MAX_NODE: u64 = (1 << 48) - 1;

impl Hlc {
    /// The next stamp for a local write at physical time `now`, after `last` (this database's
    /// latest) and `parent` (the revision being edited).
    pub fn tick(now: u64, last: Hlc, parent: Option<Hlc>, node: u64) -> Hlc {
        let floor = parent.map_or(last, |p| p.max(last));
        let (millis, counter) = if now.min(MAX_MILLIS) > floor.millis {
            (now.min(MAX_MILLIS), 0)
        } else if floor.counter < u16::MAX {
            (floor.millis, floor.counter + 1)
        } else {
            (floor.millis.saturating_add(1).min(MAX_MILLIS), 0)
        };
        Hlc {
            millis,
            counter,
            node: node & MAX_NODE,
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:012x}-{:04x}-{:012x}",
            self.millis, self.counter, self.node
        )
    }
}

impl FromStr for Hlc {
    type Err = ();
    fn from_str(s: &str) -> Result<Hlc, ()> {
        let mut parts = s.split('-');
        let (Some(m), Some(c), Some(n), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(());
        };
        let hex = |t: &str, len: usize| -> Result<u64, ()> {
            if t.len() != len
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(());
            }
            u64::from_str_radix(t, 16).map_err(|_| ())
        };
        Ok(Hlc {
            millis: hex(m, 12)?,
            counter: u16::try_from(hex(c, 4)?).map_err(|_| ())?,
            node: hex(n, 12)?,
        })
    }
}

/// The stamp in a body, if it has a valid one.
pub(crate) fn stamp_of(body: &serde_json::Map<String, serde_json::Value>) -> Option<Hlc> {
    body.get(HLC_FIELD)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_order() {
        let a = Hlc {
            millis: 5,
            counter: 1,
            node: 9,
        };
        let b = Hlc {
            millis: 5,
            counter: 2,
            node: 1,
        };
        assert!(a < b);
        assert!(a.to_string() < b.to_string(), "string order is stamp order");
        assert_eq!(a.to_string().parse::<Hlc>(), Ok(a));
        for bad in [
            "",
            "1-2-3",
            "00000000000g-0000-000000000000",
            "000000000001-0000-00000000000A",
        ] {
            assert!(bad.parse::<Hlc>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_edit_beats_its_parent_even_with_a_clock_behind() {
        let parent = Hlc {
            millis: 10_000,
            counter: 7,
            node: 2,
        };
        let mine = Hlc::tick(50, Hlc::default(), Some(parent), 1);
        assert!(mine > parent);
        assert_eq!((mine.millis, mine.counter), (10_000, 8));
        let fresh = Hlc::tick(20_000, mine, None, 1);
        assert_eq!((fresh.millis, fresh.counter), (20_000, 0));
        let saturated = Hlc::tick(
            0,
            Hlc {
                millis: 3,
                counter: u16::MAX,
                node: 0,
            },
            None,
            1,
        );
        assert_eq!((saturated.millis, saturated.counter), (4, 0));
    }
}
