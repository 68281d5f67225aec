//! Pipeline bench: what running pipelines costs ingest, how fast one
//! works through history and how soon its output is stored, against
//! ClickHouse's materialized views writing into tables (chDB) in the same
//! run (`chdb_pipes.py`).
//!
//! Every pipeline has three operators: a filter, a map (two new fields)
//! and a second filter, into a table of its own; each ClickHouse view is
//! the same SELECT into a MergeTree table.
//!
//! 1. Ingest rate with 0, 1 and 5 pipelines (batches of 1,000 over 4
//!    connections), as a ratio to none; chDB inserts batches of 1,000
//!    into a MergeTree table with 0, 1 and 5 views, its ratio beside ours.
//! 2. Throughput: a pipeline defined over the whole table (`earliest`),
//!    events/s until it has run every event; chDB fills a table from the
//!    same number of rows with `INSERT … SELECT` of the view's query.
//! 3. End-to-end latency with one pipeline at half the maximum rate, or
//!    half its throughput when that is lower: a
//!    poller reads `GET /v1/pipelines/{name}` every millisecond; a
//!    request's latency is from its acknowledgement to the first poll
//!    whose position covers it (its output is then stored in the sink).
//!    chDB writes a view's rows inside the INSERT: no latency to compare.
//!
//! cargo bench --bench pipelines -- [--requests 300] [--seconds 10]

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 1000;

fn pipeline(name: &str, i: usize, start: &str) -> Value {
    json!({
        "name": name,
        "source": {"table": "events", "start": start},
        "operators": [
            {"op": "filter", "where": format!("event_type <> 'x{i}'")},
            {"op": "map", "fields": {"cents": "amount * 100", "kind": "upper(event_type)"}},
            {"op": "filter", "where": "amount >= 1"},
        ],
        "sink": {"table": format!("out_{name}")},
    })
}

fn main() {
    let requests: usize = arg("--requests", 300);
    let seconds: f64 = arg("--seconds", 10.0);
    let tmp = tempfile::tempdir().unwrap();
    let server = BenchServer::start(tmp.path(), &[]);
    let api = Readers::new(&server.base, "pipelines");
    let url = format!("{}/v1/events", server.base);
    let bodies = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * BATCH) as u64, BATCH, 10_000, 1))
            .collect::<Vec<_>>(),
    );

    // 1. Ingest with 0, 1 and 5 pipelines.
    let run = IngestCost {
        url: &url,
        bodies: bodies.clone(),
        batch: BATCH,
        requests,
        script: "chdb_pipes.py",
        peer: "views into tables",
    };
    let base_rate = ingest_cost(
        &api,
        &[0, 1, 5],
        |i| pipeline(&format!("p{i}"), i, "now"),
        &run,
    );

    // 2. Throughput over the whole table.
    let events = api.highest();
    let t = Instant::now();
    api.define(pipeline("history", 99, "earliest"), 201);
    loop {
        let info = api.get("/v1/pipelines/history");
        assert_eq!(info["status"], "running", "{info}");
        if info["position"].as_u64() == Some(events) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed().as_secs_f64();
    let throughput = events as f64 / took;
    let written = api.get("/v1/pipelines/history")["events_written"].clone();
    let peer = python_json(
        "chdb_pipes.py",
        &["backfill".as_ref(), events.to_string().as_ref()],
    );
    let peer_rate = peer["rate"].as_f64().unwrap();
    println!(
        "a 3-operator pipeline over {events} stored events ({written} written): {:.0} events/s ({took:.2} s) | chDB INSERT … SELECT of the view: {peer_rate:.0} rows/s; ratio {:.3}",
        events as f64 / took,
        events as f64 / took / peer_rate
    );
    api.delete("history");

    // 3. End-to-end latency with one pipeline at half the rate it keeps
    // up with: half the maximum ingest, or half its throughput over
    // history when that is lower (above it the lag only grows).
    let rate = (base_rate / 2.0).min(throughput / 2.0);
    let small = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * 100) as u64, 100, 10_000, 1))
            .collect::<Vec<_>>(),
    );
    let (positions, stop) = poll_positions(format!("{}/v1/pipelines/p0", server.base));
    let mut acks = paced_ingest(&url, &small, 100, (rate * seconds / 100.0) as usize, rate);
    acks.sort_by_key(|(p, _)| *p);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let polled = positions.lock().unwrap().clone();
    let lags = ack_lags(&acks, &polled);
    println!(
        "acknowledgement to stored output at {rate:.0} events/s (half of what ingest or the pipeline sustains, batches of 100, {} requests): p50 {:.2} ms, p99 {:.2} ms (chDB writes views inside the INSERT)",
        acks.len(),
        quantile(&lags, 0.5) * 1e3,
        quantile(&lags, 0.99) * 1e3
    );
    server.stop();
}
