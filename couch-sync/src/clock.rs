//! The clock seam: everything in this crate that waits or reads the time goes through a
//! [`Clock`] — the replicator's backoff, timeouts and continuous mode, and the hybrid logical
//! clock of last-writer-wins databases — so tests run on simulated time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A boxed future, as the clock returns from [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Time, for the store and the replicator.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch. May be wrong on a device with a bad clock: checkpoint
    /// history only shows it, and the hybrid logical clock corrects for it.
    fn now_millis(&self) -> u64;
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The real clock: the system time and tokio's timer (which tests may pause and advance).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    #[allow(clippy::disallowed_methods)] // the one place below device-hub that reads the clock
    fn now_millis(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    #[allow(clippy::disallowed_methods)] // the one place below device-hub that sleeps
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A simulated clock for tests: sleeping advances virtual time and returns at once (after
/// yielding to other tasks), and every sleep is recorded.
#[derive(Debug, Clone, Default)]
pub struct SimulatedClock {
    inner: Arc<SimInner>,
}

#[derive(Debug, Default)]
struct SimInner {
    now: AtomicU64,
    sleeps: std::sync::Mutex<Vec<Duration>>,
}

impl SimulatedClock {
    /// Sets the current time.
    pub fn set_millis(&self, millis: u64) {
        self.inner.now.store(millis, Ordering::SeqCst);
    }

    /// A clock starting at `start_millis`.
    pub fn new(start_millis: u64) -> SimulatedClock {
        let clock = SimulatedClock::default();
        clock.inner.now.store(start_millis, Ordering::SeqCst);
        clock
    }

    /// Every duration slept so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.inner
            .sleeps
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Clock for SimulatedClock {
    fn now_millis(&self) -> u64 {
        self.inner.now.load(Ordering::SeqCst)
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        self.inner
            .now
            .fetch_add(duration.as_millis() as u64, Ordering::SeqCst);
        if let Ok(mut s) = self.inner.sleeps.lock() {
            s.push(duration);
        }
        Box::pin(tokio::task::yield_now())
    }
}
