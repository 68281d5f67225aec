//! Background work that outlives a bad run: a panic in one run of the
//! flusher or of table maintenance is caught, logged and counted (metric
//! `allsource_background_panics_total{task}`), and the next run goes on,
//! as a panicked tokio task is reported by its `JoinHandle` rather than
//! taking the process down.

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
pub fn record_panic(task: &str, payload: &(dyn Any + Send)) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_run_is_caught_counted_and_the_next_one_runs() {
        let counter = || {
            crate::metrics::get()
                .background_panics
                .with_label_values(&["test"])
                .get()
        };
        let before = counter();
        let first = caught("test", async {
            let cutoff: Option<u32> = "300000years".parse().ok();
            cutoff.expect("DateTime - TimeDelta overflowed")
        })
        .await;
        assert_eq!(first, Err("DateTime - TimeDelta overflowed".to_string()));
        assert_eq!(counter(), before + 1);
        assert_eq!(caught("test", async { 7 }).await, Ok(7));
        assert_eq!(counter(), before + 1);
    }
}
