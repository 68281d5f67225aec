//! [`Worker`]: one background loop on a low-priority thread of its own,
//! owned by whoever started it.
//!
//! The loop waits for its tick (on the injected [`Clock`]) or for a wake-up,
//! runs its [`Job`] once, and waits again, until it is stopped. Each run is
//! caught ([`caught`]): a panic is logged and counted, and the loop goes on
//! at the next tick. Stopping (or dropping the `Worker`) cancels the loop
//! after the run in progress and joins the thread. Should the loop itself
//! (not a run) or its thread panic, the panic is logged and counted, not
//! lost.

use super::clock::Clock;
use super::{caught, panic_message};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a background loop does each time it wakes.
pub trait Job: Send + 'static {
    /// One run. A panic in it is caught by the worker; the next run comes
    /// at the next tick.
    fn run(&mut self) -> impl Future<Output = ()> + Send;
}

/// A running background loop. Dropping it stops the loop and waits for
/// its thread; [`Worker::stop`] does the same without blocking a runtime
/// thread.
#[derive(Debug)]
pub struct Worker {
    name: String,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How a [`Worker`] is started: see [`Worker::builder`].
#[derive(Debug)]
pub struct WorkerBuilder {
    name: String,
    every: Duration,
    clock: Arc<dyn Clock>,
    wake: Option<Arc<Notify>>,
    threads: usize,
}

impl Worker {
    /// A loop named `name` (its thread's name, and the `task` label of its
    /// panics) that runs every `every` on `clock`.
    pub fn builder(name: &str, every: Duration, clock: Arc<dyn Clock>) -> WorkerBuilder {
        WorkerBuilder {
            name: name.to_string(),
            every,
            clock,
            wake: None,
            threads: 0,
        }
    }

    /// Asks the loop to stop once its current run is done, without
    /// waiting for it (see [`Worker::stop`]).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Stops the loop once its current run is done and waits for the
    /// thread, on a blocking thread of the caller's runtime.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        let (name, thread) = (self.name.clone(), self.thread.take());
        if let Some(thread) = thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(joined) => report_exit(&name, joined),
                Err(e) => {
                    tracing::error!(worker = %name, error = %e, "could not wait for a background worker")
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(thread) = self.thread.take() {
            report_exit(&self.name, thread.join());
        }
    }
}

/// Logs (and counts) the panic a worker's loop or thread died of.
fn report_exit(name: &str, ended: std::thread::Result<()>) {
    if let Err(payload) = ended {
        crate::metrics::get()
            .background_panics
            .with_label_values(&[name])
            .inc();
        tracing::error!(worker = %name, panic = %panic_message(payload.as_ref()), "a background worker died; it no longer runs");
    }
}

impl WorkerBuilder {
    /// Also runs when `notify` is notified, without waiting for the tick.
    pub fn woken_by(mut self, notify: Arc<Notify>) -> Self {
        self.wake = Some(notify);
        self
    }

    /// Gives the worker's runtime `n` threads of its own (also at low
    /// priority) for the tasks a run spawns; by default a run has only the
    /// worker's thread.
    pub fn runtime_threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Starts the loop on its thread; the first run comes after one tick
    /// (or a wake-up).
    pub fn spawn(self, job: impl Job) -> std::io::Result<Worker> {
        let runtime = match self.threads {
            0 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            n => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .on_thread_start(lower_priority)
                .enable_all()
                .thread_name(&self.name)
                .build()?,
        };
        let cancel = CancellationToken::new();
        let name = self.name.clone();
        let looping = drive(
            self.name.clone(),
            job,
            self.every,
            self.clock,
            self.wake,
            cancel.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || {
                lower_priority();
                // The loop is a task, so that the runtime's other threads
                // can run it too. Runs are caught; a panic that escapes the
                // loop itself ends it, and is reported now rather than when
                // the owner joins.
                if let Err(e) = runtime.block_on(runtime.spawn(looping))
                    && e.is_panic()
                {
                    report_exit(&self.name, Err(e.into_panic()));
                }
            })?;
        Ok(Worker {
            name,
            cancel,
            thread: Some(thread),
        })
    }
}

/// The loop: wait for the tick, a wake-up or the cancellation, then run.
/// After a run that panicked, wake-ups are ignored until the next tick, so
/// that a run which keeps panicking does not spin.
async fn drive(
    name: String,
    mut job: impl Job,
    every: Duration,
    clock: Arc<dyn Clock>,
    wake: Option<Arc<Notify>>,
    cancel: CancellationToken,
) {
    let mut after_panic = false;
    loop {
        let woken = async {
            match &wake {
                Some(notify) if !after_panic => notify.notified().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = clock.sleep(every) => {}
            _ = woken => {}
        }
        after_panic = caught(&name, job.run()).await.is_err();
    }
}

/// Makes the calling thread yield the CPU to the others when both want
/// it: background work must not delay the threads that answer requests.
/// Query threads take the same priority (see `query::QueryRuntime`).
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread's own id.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10)
        };
        if rc != 0 {
            tracing::debug!("could not lower a background thread's priority");
        }
    }
}
