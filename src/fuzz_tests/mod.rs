//! In-process fuzzing of what a client's input reaches first: the ingest
//! decoder, the DSL compiler and the SQL engine. The harnesses are unit
//! tests (no HTTP, so they run many cases a second) driven by proptest:
//!
//! - [`ingest`]: generated bodies (bytes, broken and odd JSON, NDJSON) through
//!   `parse_events` and `build_batch`, as an ingest request takes them;
//!   every refusal must be one the server answers with a 4xx, and every
//!   accepted value must land in its column or in `_overflow`.
//! - [`dsl`]: generated documents, well-formed over the fixture's tables
//!   and junk, compiled and run in a real tenant session.
//! - [`sql`]: generated `SELECT`s run in two sessions that differ only in
//!   `target_partitions` (1 and 4); both must agree, or both refuse with a
//!   4xx.
//!
//! [`fixture`] is the database the last two query: a real [`Database`]
//! whose tables hold Delta files and buffered batches. [`compare`] turns
//! results into comparable rows and errors into their HTTP status.
//!
//! Each harness runs `ALLSOURCE_FUZZ_CASES` cases (a small default keeps the
//! suite quick) and prints a line of outcome counts; `benches/fuzz.sh` runs
//! them in release mode with many cases. `PROPTEST_RNG_SEED` fixes the seed.
//!
//! [`Database`]: crate::db::Database

mod compare;
mod dsl;
mod fixture;
mod ingest;
mod sql;
mod sql_gen;

use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

/// The number of cases a harness runs: `ALLSOURCE_FUZZ_CASES`, or
/// `default`.
fn cases(default: u32) -> u32 {
    match std::env::var("ALLSOURCE_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("ALLSOURCE_FUZZ_CASES={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A proptest runner for `cases` cases that keeps no regression files (a
/// failure prints its shrunk input, which becomes a named test).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // A failing case is reported as found after at most five minutes
        // of shrinking: a long run's query plans are slow to retry.
        max_shrink_time: 300_000,
        ..Config::default()
    })
}

/// Counts the outcomes of a harness's cases, for its report line.
#[derive(Debug)]
struct Tally {
    name: &'static str,
    started: Instant,
    counts: RefCell<BTreeMap<String, u64>>,
}

impl Tally {
    fn new(name: &'static str) -> Self {
        Tally {
            name,
            started: Instant::now(),
            counts: RefCell::new(BTreeMap::new()),
        }
    }

    /// Counts one outcome.
    fn add(&self, outcome: impl Into<String>) {
        *self.counts.borrow_mut().entry(outcome.into()).or_default() += 1;
    }

    /// Prints `fuzz <name>: <n> inputs in <t> s: <outcome> <count>, ...`.
    fn report(&self, cases: u32) {
        let counts = self.counts.borrow();
        let inputs: u64 = counts.values().sum();
        let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "fuzz {}: {cases} cases, {inputs} inputs in {:.1} s: {}",
            self.name,
            self.started.elapsed().as_secs_f64(),
            parts.join(", ")
        );
    }
}

/// Runs `test` on `cases` values of `strategy`, panicking with the shrunk
/// input on the first failure.
fn run<S: proptest::strategy::Strategy>(
    cases: u32,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner(cases).run(strategy, test) {
        panic!("{e}");
    }
}
