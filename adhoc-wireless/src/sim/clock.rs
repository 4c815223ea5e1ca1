//! The [`Clock`] of a simulated world.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::engine::Shared;
use super::time::SimTime;
use crate::clock::{Clock, Sleep};

/// A world's simulated time as a [`Clock`]: `now_millis` is the world's time, and `sleep`
/// completes when the world's time reaches its deadline (whichever mode drives the world).
#[derive(Clone)]
pub struct SimClock {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimClock")
            .field("now", &self.now())
            .finish()
    }
}

impl SimClock {
    pub(crate) fn new(shared: Arc<Shared>) -> SimClock {
        SimClock { shared }
    }

    /// The world's time.
    pub fn now(&self) -> SimTime {
        self.shared.with(|e| e.now())
    }

    /// A future that completes `duration` after now, on the world's time.
    pub fn sleep_for(&self, duration: Duration) -> SimSleep {
        let (id, deadline) = self.shared.with(|e| e.timer_new(duration));
        SimSleep {
            shared: self.shared.clone(),
            id,
            deadline,
        }
    }
}

impl Clock for SimClock {
    fn now_millis(&self) -> u64 {
        self.now().as_millis()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(self.sleep_for(duration))
    }
}

/// A sleep on a world's time (see [`SimClock::sleep_for`]).
pub struct SimSleep {
    shared: Arc<Shared>,
    id: u64,
    deadline: SimTime,
}

impl std::fmt::Debug for SimSleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl SimSleep {
    /// When it completes.
    pub fn deadline(&self) -> SimTime {
        self.deadline
    }
}

impl Future for SimSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (id, deadline) = (self.id, self.deadline);
        self.shared.with(|e| e.timer_poll(id, deadline, cx))
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        let id = self.id;
        self.shared.with(|e| e.timer_drop(id));
    }
}
