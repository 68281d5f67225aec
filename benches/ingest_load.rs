//! Ingest load tool: a separate process posting pre-built NDJSON batches to
//! a real server over several connections; reports acknowledged events/s,
//! request latency percentiles and the server's peak RSS.
//!
//! cargo bench --bench ingest_load -- [--events 10000000] [--batch 10000]
//!     [--connections 4] [--url http://host:port (default: start a server)]
//!
//! Two phases: full speed, then paced at half the measured rate (the p99
//! latency target is quoted at half rate).

mod common;

use common::*;
use std::sync::Arc;

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let batch: usize = arg("--batch", 10_000);
    let connections: usize = arg("--connections", 4);
    let url_arg: String = arg("--url", String::new());
    let tmp = tempfile::tempdir().unwrap();
    let server = url_arg
        .is_empty()
        .then(|| BenchServer::start(tmp.path(), &[]));
    let base = server.as_ref().map(|s| s.base.clone()).unwrap_or(url_arg);
    let url = format!("{base}/v1/events?table=load");

    // Pre-build distinct bodies outside the timed part.
    let distinct = 64.min(events / batch).max(1);
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..distinct)
            .map(|i| ndjson_batch((i * batch) as u64, batch, 200_000, 30))
            .collect(),
    );
    let requests = events / batch;
    println!(
        "ingest_load: {} events in batches of {batch} over {connections} connections ({} MB per batch)",
        requests * batch,
        bodies[0].len() / 1_000_000
    );

    let cpu_before = server.as_ref().map(|s| s.cpu_seconds());
    let full = run_load(&url, bodies.clone(), batch, requests, connections, None);
    let rss = server.as_ref().map(|s| s.peak_rss()).unwrap_or(0);
    if let (Some(before), Some(s)) = (cpu_before, server.as_ref()) {
        // Everything the server did while the requests ran: parsing, the
        // WAL, and the flushes and compactions running beside them.
        let cpu = s.cpu_seconds() - before;
        println!(
            "server CPU : {cpu:.1} s over {:.1} s, {:.2} CPU-seconds per million events acknowledged",
            full.elapsed.as_secs_f64(),
            cpu / (full.events as f64 / 1e6)
        );
    }
    println!(
        "full speed : {:>10.0} events/s acknowledged  p50 {:>7.1} ms  p99 {:>7.1} ms  503-retries {}  server peak RSS {} MiB",
        full.rate(),
        full.percentile(0.5).as_secs_f64() * 1e3,
        full.percentile(0.99).as_secs_f64() * 1e3,
        full.retries,
        rss >> 20
    );

    let half_rate = full.rate() / 2.0;
    let half_requests = (requests / 2).max(1);
    let half = run_load(
        &url,
        bodies,
        batch,
        half_requests,
        connections,
        Some(half_rate),
    );
    println!(
        "half rate  : {:>10.0} events/s offered, {:>10.0} acknowledged  p50 {:>7.1} ms  p99 {:>7.1} ms",
        half_rate,
        half.rate(),
        half.percentile(0.5).as_secs_f64() * 1e3,
        half.percentile(0.99).as_secs_f64() * 1e3,
    );
    if let Some(s) = server {
        println!("server peak RSS over the run: {} MiB", s.peak_rss() >> 20);
        s.stop();
    }
}
