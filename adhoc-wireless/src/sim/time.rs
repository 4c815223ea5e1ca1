//! Simulated instants: whole microseconds since the world began.

use std::fmt;
use std::ops::Add;
use std::time::Duration;

/// An instant on a [`World`](super::World)'s timeline, in whole microseconds since it began.
///
/// Integers, not floats, so the event order never depends on rounding: two events at the same
/// microsecond run in the order they were scheduled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(u64);

impl SimTime {
    /// The world's beginning.
    pub const ZERO: SimTime = SimTime(0);
    /// The end of time (nothing is ever scheduled there).
    pub const MAX: SimTime = SimTime(u64::MAX);

    /// `micros` microseconds after the beginning.
    pub const fn from_micros(micros: u64) -> SimTime {
        SimTime(micros)
    }

    /// `millis` milliseconds after the beginning.
    pub const fn from_millis(millis: u64) -> SimTime {
        SimTime(millis.saturating_mul(1_000))
    }

    /// `secs` seconds after the beginning.
    pub const fn from_secs(secs: u64) -> SimTime {
        SimTime(secs.saturating_mul(1_000_000))
    }

    /// `secs` seconds after the beginning, rounded to the nearest microsecond (negative and NaN
    /// are the beginning; too large is [`SimTime::MAX`]).
    pub fn from_secs_f64(secs: f64) -> SimTime {
        SimTime(micros_of_secs(secs))
    }

    /// A duration after the beginning.
    pub fn from_duration(d: Duration) -> SimTime {
        SimTime(duration_micros(d))
    }

    /// Microseconds since the beginning.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the beginning.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000
    }

    /// Seconds since the beginning.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// The time since the beginning, as a [`Duration`].
    pub const fn as_duration(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub const fn since(self, earlier: SimTime) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// `d` later, saturating at [`SimTime::MAX`].
    pub fn saturating_add(self, d: Duration) -> SimTime {
        SimTime(self.0.saturating_add(duration_micros(d)))
    }

    pub(crate) const fn plus_micros(self, micros: u64) -> SimTime {
        SimTime(self.0.saturating_add(micros))
    }
}

impl Add<Duration> for SimTime {
    type Output = SimTime;

    fn add(self, d: Duration) -> SimTime {
        self.saturating_add(d)
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// A duration in whole microseconds (saturating).
pub(crate) fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Seconds (as a float) to whole microseconds, rounded to nearest (saturating, NaN is zero).
pub(crate) fn micros_of_secs(secs: f64) -> u64 {
    let micros = (secs * 1e6).round();
    if micros.is_nan() || micros <= 0.0 {
        0
    } else if micros >= u64::MAX as f64 {
        u64::MAX
    } else {
        micros as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(SimTime::from_secs(2).as_millis(), 2_000);
        assert_eq!(SimTime::from_secs_f64(0.1).as_micros(), 100_000);
        assert_eq!(SimTime::from_secs_f64(-1.0), SimTime::ZERO);
        assert_eq!(SimTime::from_secs_f64(f64::NAN), SimTime::ZERO);
        assert_eq!(SimTime::from_secs_f64(1e300), SimTime::MAX);
        assert_eq!(
            SimTime::from_millis(1_500) + Duration::from_millis(500),
            SimTime::from_secs(2)
        );
        assert_eq!(SimTime::from_micros(1_000_001).to_string(), "1.000001s");
        assert_eq!(
            SimTime::from_secs(3).since(SimTime::from_secs(1)),
            Duration::from_secs(2)
        );
    }
}
