//! The worker driven by a [`ManualClock`]: runs come when the clock is
//! advanced and not before, a panicking run is counted and the next one
//! goes on, and dropping the worker stops it.

use super::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::Duration;

/// How long a test waits (in real time) for the worker's thread to act.
const PATIENCE: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_secs(10);

fn start_time() -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

fn panics_of(task: &str) -> u64 {
    crate::metrics::get()
        .background_panics
        .with_label_values(&[task])
        .get()
}

/// Reports each run's clock reading; panics in the runs numbered in
/// `panic_on` (counting from 1).
struct Probe {
    clock: Arc<ManualClock>,
    runs: Sender<Duration>,
    panic_on: Vec<usize>,
    done: usize,
}

impl Job for Probe {
    async fn run(&mut self) {
        self.done += 1;
        let _ = self.runs.send(self.clock.elapsed());
        if self.panic_on.contains(&self.done) {
            panic!("run {} failed", self.done);
        }
    }
}

fn probe(clock: &Arc<ManualClock>, panic_on: &[usize]) -> (Probe, Receiver<Duration>) {
    let (tx, rx) = channel();
    let probe = Probe {
        clock: clock.clone(),
        runs: tx,
        panic_on: panic_on.to_vec(),
        done: 0,
    };
    (probe, rx)
}

/// Waits until the worker sleeps on the clock again, i.e. its run is over.
fn parked(clock: &ManualClock) {
    assert!(
        clock.wait_for_sleepers(1, PATIENCE),
        "the worker never waited for its next tick"
    );
}

#[test]
fn runs_come_when_the_clock_is_advanced_and_not_before() {
    let clock = ManualClock::new(start_time());
    let (job, runs) = probe(&clock, &[]);
    let _worker = Worker::builder("test-ticks", EVERY, clock.clone())
        .spawn(job)
        .unwrap();
    parked(&clock);
    clock.advance(EVERY - Duration::from_millis(1));
    parked(&clock);
    assert_eq!(runs.try_recv(), Err(TryRecvError::Empty), "ran early");
    clock.advance(Duration::from_millis(1));
    assert_eq!(runs.recv_timeout(PATIENCE), Ok(EVERY));
    parked(&clock);
    assert_eq!(runs.try_recv(), Err(TryRecvError::Empty), "ran twice");
    clock.advance(EVERY);
    assert_eq!(runs.recv_timeout(PATIENCE), Ok(2 * EVERY));
    assert_eq!(clock.now(), start_time() + chrono::Duration::seconds(20));
}

#[test]
fn a_wake_up_runs_without_waiting_for_the_tick() {
    let clock = ManualClock::new(start_time());
    let (job, runs) = probe(&clock, &[]);
    let wake = Arc::new(tokio::sync::Notify::new());
    let _worker = Worker::builder("test-wake", EVERY, clock.clone())
        .woken_by(wake.clone())
        .runtime_threads(2)
        .spawn(job)
        .unwrap();
    parked(&clock);
    wake.notify_one();
    assert_eq!(runs.recv_timeout(PATIENCE), Ok(Duration::ZERO));
    parked(&clock);
    clock.advance(EVERY);
    assert_eq!(runs.recv_timeout(PATIENCE), Ok(EVERY));
}

#[test]
fn a_panicking_run_is_counted_and_the_next_run_goes_on() {
    let clock = ManualClock::new(start_time());
    let (job, runs) = probe(&clock, &[1]);
    let before = panics_of("test-panic");
    let worker = Worker::builder("test-panic", EVERY, clock.clone())
        .spawn(job)
        .unwrap();
    parked(&clock);
    clock.advance(EVERY);
    assert_eq!(runs.recv_timeout(PATIENCE), Ok(EVERY));
    parked(&clock);
    assert_eq!(panics_of("test-panic"), before + 1);
    clock.advance(EVERY);
    assert_eq!(runs.recv_timeout(PATIENCE), Ok(2 * EVERY));
    parked(&clock);
    drop(worker);
    assert_eq!(panics_of("test-panic"), before + 1, "the thread lived on");
}

#[test]
fn dropping_the_worker_stops_its_loop() {
    let clock = ManualClock::new(start_time());
    let (job, runs) = probe(&clock, &[]);
    let worker = Worker::builder("test-drop", EVERY, clock.clone())
        .spawn(job)
        .unwrap();
    parked(&clock);
    drop(worker);
    // The thread is joined: its sleep and its job (and so the sender) are
    // gone, and advancing the clock runs nothing.
    assert_eq!(clock.sleepers(), 0);
    clock.advance(10 * EVERY);
    assert_eq!(
        runs.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn stop_waits_for_the_thread_from_async_code() {
    let clock = ManualClock::new(start_time());
    let (job, runs) = probe(&clock, &[]);
    let worker = Worker::builder("test-stop", EVERY, clock.clone())
        .spawn(job)
        .unwrap();
    parked(&clock);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(worker.stop());
    assert_eq!(runs.try_recv(), Err(TryRecvError::Disconnected));
}

/// A clock whose waits panic: the loop itself fails, outside any run.
#[derive(Debug)]
struct BrokenClock;

impl Clock for BrokenClock {
    fn now(&self) -> DateTime<Utc> {
        start_time()
    }
    fn elapsed(&self) -> Duration {
        Duration::ZERO
    }
    fn sleep(&self, _: Duration) -> Sleep {
        panic!("the clock broke")
    }
}

#[test]
fn a_loop_that_died_is_reported() {
    let clock = ManualClock::new(start_time());
    let (job, runs) = probe(&clock, &[]);
    let before = panics_of("test-died");
    let worker = Worker::builder("test-died", EVERY, Arc::new(BrokenClock))
        .spawn(job)
        .unwrap();
    // The loop drops the job as it unwinds.
    assert_eq!(
        runs.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
    drop(worker);
    assert_eq!(panics_of("test-died"), before + 1, "counted once");
}

#[tokio::test]
async fn a_panicking_run_is_caught_counted_and_the_next_one_runs() {
    let before = panics_of("test");
    let first = caught("test", async {
        let cutoff: Option<u32> = "300000years".parse().ok();
        cutoff.expect("DateTime - TimeDelta overflowed")
    })
    .await;
    assert_eq!(first, Err("DateTime - TimeDelta overflowed".to_string()));
    assert_eq!(panics_of("test"), before + 1);
    assert_eq!(caught("test", async { 7 }).await, Ok(7));
    assert_eq!(panics_of("test"), before + 1);
}
