//! Explicit contact traces: "at time t, nodes a and b came into (or went out of) contact".

use super::time::SimTime;
use crate::error::{Error, Result};

/// One change in a contact trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEntry {
    /// When.
    pub at: SimTime,
    /// One node.
    pub a: u32,
    /// The other node.
    pub b: u32,
    /// `true` when the contact begins, `false` when it ends.
    pub up: bool,
}

/// A list of contact changes, in time order (entries at one instant keep their given order).
///
/// Followed exactly: each change happens at its own microsecond, not at a tick. An `up` for a
/// pair already in contact, a `down` for one that is not, and entries naming a node that does
/// not exist or the same node twice are skipped (and counted in
/// [`SimStats::trace_skipped`](super::SimStats::trace_skipped)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactTrace {
    entries: Vec<TraceEntry>,
}

impl ContactTrace {
    /// A trace of these entries (sorted by time, stably).
    pub fn new(mut entries: Vec<TraceEntry>) -> ContactTrace {
        entries.sort_by_key(|e| e.at);
        ContactTrace { entries }
    }

    /// Parses the connection events of The ONE's external event files
    /// (`StandardEventsReader`): one per line, `<time in seconds> CONN <a> <b> up|down`. Blank
    /// lines and `#` comments are skipped; any other line is an error naming it.
    pub fn parse_one(text: &str) -> Result<ContactTrace> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| Error::Malformed {
                what: "contact trace",
                reason: format!("line {}: {why}: {line:?}", n + 1),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [time, kind, a, b, state] = fields[..] else {
                return Err(bad("expected `<time> CONN <a> <b> up|down`"));
            };
            if kind != "CONN" {
                return Err(bad("only CONN events are supported"));
            }
            let secs: f64 = time.parse().map_err(|_| bad("bad time"))?;
            if !secs.is_finite() || secs < 0.0 {
                return Err(bad("bad time"));
            }
            let a: u32 = a.parse().map_err(|_| bad("bad node"))?;
            let b: u32 = b.parse().map_err(|_| bad("bad node"))?;
            let up = match state {
                "up" => true,
                "down" => false,
                _ => return Err(bad("expected up or down")),
            };
            entries.push(TraceEntry {
                at: SimTime::from_secs_f64(secs),
                a,
                b,
                up,
            });
        }
        Ok(ContactTrace::new(entries))
    }

    /// The entries, in time order.
    pub fn entries(&self) -> &[TraceEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_one_connection_events() {
        let t = ContactTrace::parse_one(
            "# a comment\n\n12.5 CONN 1 2 up\n3 CONN 0 1 up\n20.000001 CONN 1 2 down\n",
        )
        .unwrap();
        let e = t.entries();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].at, e[0].a, e[0].b, e[0].up),
            (SimTime::from_secs(3), 0, 1, true)
        );
        assert_eq!(e[1].at, SimTime::from_millis(12_500));
        assert_eq!(e[2].at, SimTime::from_micros(20_000_001));
        assert!(!e[2].up);
        for bad in [
            "1 CONN 1 up",
            "x CONN 1 2 up",
            "1 MSG 1 2 up",
            "1 CONN 1 2 sideways",
        ] {
            assert!(ContactTrace::parse_one(bad).is_err(), "{bad}");
        }
    }
}
