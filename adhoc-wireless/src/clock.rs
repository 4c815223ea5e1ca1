//! The clock seam: plugins read time and wait only through a [`Clock`], so the simulated radio
//! and tests run on simulated time. Times are monotonic milliseconds from any origin.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, as [`Clock::sleep`] returns.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Time for discovery and links.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since an arbitrary origin; never goes back.
    fn now_millis(&self) -> u64;
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// tokio's clock (monotonic; tests may pause and advance it). Feature `tokio`.
#[cfg(feature = "tokio")]
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

#[cfg(feature = "tokio")]
impl Default for TokioClock {
    fn default() -> TokioClock {
        TokioClock::new()
    }
}

#[cfg(feature = "tokio")]
impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> TokioClock {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

#[cfg(feature = "tokio")]
impl Clock for TokioClock {
    fn now_millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    #[allow(clippy::disallowed_methods)] // the clock seam itself
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}
