//! Background work: loops that run on their own, own their threads, read
//! the time through an injected clock, and outlive a bad run.
//!
//! - [`Worker`] (`worker.rs`): one loop on a low-priority thread with its
//!   own tokio runtime. It runs a [`Job`] on each tick of a [`Clock`] (and
//!   when woken), and stops on drop: cancel, then join, logging the panic
//!   its thread died of, if any. The database's flusher and maintenance
//!   schedule are each a `Worker` (`db::Background`).
//! - [`LowPriorityRuntime`] (`runtime.rs`): a runtime whose threads run
//!   at the same low priority, for queries and for maintenance runs that a
//!   request starts.
//! - [`Clock`] (`clock.rs`): where background work reads "now" and waits.
//!   The server uses [`SystemClock`]; tests use [`ManualClock`] and advance
//!   it instead of sleeping.
//! - [`caught`]: a panic in one run of the flusher or of table maintenance
//!   is caught, logged and counted (metric
//!   `allsource_background_panics_total{task}`), and the next run goes on,
//!   as a panicked tokio task is reported by its `JoinHandle` rather than
//!   taking the process down.

mod clock;
mod runtime;
#[cfg(test)]
mod tests;
mod worker;

pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use runtime::LowPriorityRuntime;
pub use worker::{Job, Worker, WorkerBuilder, lower_priority};

use futures::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Runs `run`; a panic in it becomes `Err` with the panic's message,
/// logged and counted under `task`.
///
/// Unwind safety is asserted: the state a run shares (tables, buffers,
/// the WAL) is behind locks that do not poison and is left consistent at
/// every await point, which is where another run could observe it.
pub async fn caught<T>(task: &str, run: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .map_err(|payload| record_panic(task, payload.as_ref()))
}

/// Logs and counts a panic of background task `task`; returns its message.
fn record_panic(task: &str, payload: &(dyn Any + Send)) -> String {
    let message = panic_message(payload);
    crate::metrics::get()
        .background_panics
        .with_label_values(&[task])
        .inc();
    tracing::error!(task, panic = %message, "a background run panicked; the next run goes on");
    message
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
