//! Where background work reads the time and waits: the system's clock in
//! the server, a [`ManualClock`] in tests, which moves only when told and
//! so lets a test step a loop through its schedule without sleeping.

use chrono::{DateTime, Utc};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A wait on a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The time as background work sees it.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// The calendar time: what dates data (retention cutoffs, vacuum's
    /// tombstone ages, the time a run started).
    fn now(&self) -> DateTime<Utc>;
    /// Time since the clock was made, never going back: what measures
    /// intervals (when a table's maintenance is next due).
    fn elapsed(&self) -> Duration;
    /// Resolves once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The system's clock: chrono for the calendar, tokio's timers for waits.
#[derive(Debug)]
pub struct SystemClock {
    started: std::time::Instant,
}

impl Default for SystemClock {
    /// A clock whose [`Clock::elapsed`] counts from now.
    fn default() -> Self {
        SystemClock {
            started: std::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: it stands still until [`ManualClock::advance`]
/// moves it, which wakes the sleeps that have come due.
#[derive(Debug)]
pub struct ManualClock {
    start: DateTime<Utc>,
    state: parking_lot::Mutex<ManualState>,
    /// Signalled when a sleep starts, for [`ManualClock::wait_for_sleepers`].
    sleeping: parking_lot::Condvar,
}

#[derive(Debug, Default)]
struct ManualState {
    elapsed: Duration,
    /// Pending sleeps: when each is due, and how to wake it. A sleep that
    /// was dropped (its loop woke for another reason) has a closed sender.
    sleepers: Vec<(Duration, tokio::sync::oneshot::Sender<()>)>,
}

impl ManualState {
    fn live_sleepers(&mut self) -> usize {
        self.sleepers.retain(|(_, tx)| !tx.is_closed());
        self.sleepers.len()
    }
}

impl ManualClock {
    /// A clock that reads `start` until it is advanced.
    pub fn new(start: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start,
            state: Default::default(),
            sleeping: Default::default(),
        })
    }

    /// Moves the clock forward by `by` and wakes every sleep now due.
    pub fn advance(&self, by: Duration) {
        let mut state = self.state.lock();
        state.elapsed += by;
        let now = state.elapsed;
        let (due, pending) = std::mem::take(&mut state.sleepers)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        state.sleepers = pending;
        for (_, tx) in due {
            let _ = tx.send(());
        }
    }

    /// Sleeps started and neither woken nor dropped.
    pub fn sleepers(&self) -> usize {
        self.state.lock().live_sleepers()
    }

    /// Blocks until at least `n` sleeps are pending (a loop has finished
    /// its run and waits for its next tick); false if that did not happen
    /// within `timeout` of real time.
    pub fn wait_for_sleepers(&self, n: usize, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.state.lock();
        loop {
            if state.live_sleepers() >= n {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            // A dropped sleep does not signal: look again now and then.
            let step = now + Duration::from_millis(10);
            self.sleeping.wait_until(&mut state, step.min(deadline));
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        chrono::Duration::from_std(self.elapsed())
            .ok()
            .and_then(|d| self.start.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn elapsed(&self) -> Duration {
        self.state.lock().elapsed
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        if duration.is_zero() {
            return Box::pin(std::future::ready(()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut state = self.state.lock();
        let due = state.elapsed + duration;
        state.sleepers.push((due, tx));
        self.sleeping.notify_all();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
