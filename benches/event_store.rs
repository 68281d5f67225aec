//! Event-store bench: entity stream reads and the cost of optimistic
//! concurrency.
//!
//! 1. Loads N generated events (default 10M; 200,000 entities, so about
//!    N / 200,000 events per entity) through a real server, flushes and
//!    compacts them, then reads the streams of random entities with
//!    `GET /v1/streams/events/{entity}?limit=1000`, one at a time, and
//!    prints p50 and p99 latency (3,000 reads by default: with 500 the
//!    p99 was the fifth slowest read, and moved by a millisecond between
//!    runs). DuckDB runs the same read (`SELECT *
//!    ... WHERE entity_id = ? ORDER BY version LIMIT 1000`) over the same
//!    Parquet files in the same run; the ratio is AllSource / DuckDB.
//! 2. Ingests batches of new entities' first events into a fresh table
//!    twice, without and with `"expected_version": "no_stream"` on every
//!    event, and prints the rate of each and their ratio.
//!
//! cargo bench --bench event_store -- [--events 10000000] [--reads 3000]
//!     [--ingest 1000000]

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let reads: usize = arg("--reads", 3000);
    let ingest: usize = arg("--ingest", 1_000_000);
    let (tmp, server) = load_and_flush(events);
    compact_all(&server.base);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();

    let mut rng = Rng::new(7);
    let entities: Vec<String> = (0..reads)
        .map(|_| format!("u{}", rng.below(200_000)))
        .collect();
    let mut rows = 0usize;
    let mut times: Vec<Duration> = Vec::with_capacity(reads);
    for (i, entity) in entities.iter().enumerate() {
        let t = Instant::now();
        let r = http
            .get(format!(
                "{}/v1/streams/events/{entity}?limit=1000",
                server.base
            ))
            .send()
            .unwrap();
        assert!(r.status().is_success());
        let body: serde_json::Value = r.json().unwrap();
        // The first read of the run warms the caches; it is not counted.
        if i > 0 {
            times.push(t.elapsed());
        }
        rows += body.as_array().unwrap().len();
    }
    times.sort();
    let pct = |t: &[Duration], p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
    let (p50, p99) = (pct(&times, 0.5), pct(&times, 0.99));

    let table_dir = tmp.path().join("tables/default/events");
    let entities_json = serde_json::to_string(&entities).unwrap();
    let theirs = python_json(
        "duckdb_stream.py",
        &[table_dir.as_os_str(), entities_json.as_ref()],
    );
    let (d50, d99) = (
        theirs["p50"].as_f64().unwrap(),
        theirs["p99"].as_f64().unwrap(),
    );
    println!(
        "\nentity stream reads: {} entities, {:.1} events each on average, table of {events} events",
        reads,
        rows as f64 / reads as f64
    );
    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "latency", "AllSource ms", "DuckDB ms", "ratio"
    );
    for (name, ours, d) in [("p50", p50, d50), ("p99", p99, d99)] {
        println!(
            "{name:<10} {:>14.2} {:>14.2} {:>7.2}x",
            ours.as_secs_f64() * 1e3,
            d * 1e3,
            ours.as_secs_f64() / d
        );
    }
    println!("(AllSource over HTTP with JSON results; DuckDB in-process over the same files)");
    server.stop();

    // Optimistic concurrency: the same events with and without a check.
    let batch = 10_000;
    let requests = (ingest / batch).max(1);
    let mut rates = Vec::new();
    for (label, expected) in [("plain", None), ("expected_version", Some("no_stream"))] {
        let dir = tempfile::tempdir().unwrap();
        let server = BenchServer::start(dir.path(), &[]);
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..requests)
                .map(|r| new_entities(r, batch, expected))
                .collect(),
        );
        let url = format!("{}/v1/events?reply=counts", server.base);
        let load = run_load(&url, bodies, batch, requests, 4, None);
        println!(
            "ingest {label:<17}: {:>10.0} events/s  p99 {:>7.1} ms",
            load.rate(),
            load.percentile(0.99).as_secs_f64() * 1e3
        );
        rates.push(load.rate());
        server.stop();
    }
    println!(
        "expected_version on every event: {:.2}x the plain rate",
        rates[1] / rates[0]
    );
}

/// `n` events, each the first of a new entity of request `request`.
fn new_entities(request: usize, n: usize, expected: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 120);
    for i in 0..n {
        let check = expected.map_or(String::new(), |e| format!(",\"expected_version\":\"{e}\""));
        out.extend_from_slice(
            format!(
                "{{\"event_type\":\"opened\",\"entity_id\":\"acct-{request}-{i}\"{check},\"payload\":{{\"amount\":{i}}}}}\n"
            )
            .as_bytes(),
        );
    }
    out
}
