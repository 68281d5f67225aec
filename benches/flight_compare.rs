//! Flight SQL bench.
//!
//! 1. Bulk ingest: the Python ADBC driver's `adbc_ingest` of N events
//!    (default 10M) in record batches, timed until the server acknowledges
//!    the last row (after its WAL fsync). Target: ≥ 2,000,000 events/s.
//! 2. Fetch: the same ≥ 5M-row result (`SELECT * FROM t LIMIT n`) read
//!    over Flight SQL (arrow-flight's Rust client) and over HTTP
//!    `format=arrow` (decoded as an IPC stream), alternately, several
//!    times. Prints the medians and Flight/HTTP (target ≤ 1.2).
//!
//! cargo bench --bench flight_compare -- [--events 10000000] [--batch 65536] [--days 30] [--fetch 5000000] [--repeats 5] [--max-buffer-bytes N]
//!
//! `--days`: the events' timestamps span this many days (1 is what live
//! ingest looks like: every flush holds a single date).
//!
//! With the default `--max-buffer-bytes` (384 MiB) a 10M-event upload
//! fills the ingest buffers, and the rate is that of the flusher writing
//! Parquet; a larger buffer shows the ingest path's own rate.

mod common;

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use common::*;
use futures::TryStreamExt;
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut t: Vec<Duration>) -> f64 {
    t.sort();
    t[t.len() / 2].as_secs_f64()
}

async fn flight_fetch(endpoint: &str, sql: &str) -> usize {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let info = client.execute(sql.to_string(), None).await.unwrap();
    let mut rows = 0;
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    rows
}

fn http_fetch(http: &reqwest::blocking::Client, base: &str, sql: &str) -> usize {
    let response = http
        .post(format!("{base}/v1/sql?format=arrow"))
        .header("content-type", "text/plain")
        .body(sql.to_string())
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let reader = arrow::ipc::reader::StreamReader::try_new(response, None).unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let batch: usize = arg("--batch", 65_536);
    let days: usize = arg("--days", 30);
    let fetch: usize = arg("--fetch", 5_000_000);
    let repeats: usize = arg("--repeats", 5);
    let python = std::env::var("ALLSOURCE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let tmp = tempfile::tempdir().unwrap();
    let buffer: Option<String> = std::env::args()
        .skip_while(|a| a != "--max-buffer-bytes")
        .nth(1);
    let mut flags = vec!["--maintenance-interval", "0s"];
    if let Some(b) = &buffer {
        flags.extend(["--max-buffer-bytes", b.as_str()]);
    }
    let server = BenchServer::start(tmp.path(), &flags);
    println!(
        "server --max-buffer-bytes: {}",
        buffer.as_deref().unwrap_or("default (384 MiB)")
    );
    let uri = server.flight.replace("http://", "grpc://");

    // 1. ADBC bulk ingest.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/flight_ingest.py");
    let out = Command::new(&python)
        .args([
            script,
            &uri,
            "bench",
            &events.to_string(),
            &batch.to_string(),
            &days.to_string(),
        ])
        .output()
        .expect("run the ADBC ingest script");
    assert!(
        out.status.success(),
        "ADBC ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("the script prints JSON");
    let rows = report["rows"].as_u64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    assert_eq!(rows as usize, events, "every event acknowledged");
    let rate = rows as f64 / seconds;
    println!(
        "adbc_ingest: {rows} events over {days} days acknowledged in {seconds:.2} s = {rate:.0} events/s (target 2,000,000: {})",
        if rate >= 2_000_000.0 {
            "met"
        } else {
            "not met"
        }
    );
    println!(
        "server peak RSS during ingest: {} MiB",
        server.peak_rss() >> 20
    );

    // 2. Fetch the same rows both ways.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let sql = format!("SELECT * FROM bench LIMIT {fetch}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Warm both paths once (file metadata, page cache).
    assert_eq!(http_fetch(&http, &server.base, &sql), fetch);
    assert_eq!(runtime.block_on(flight_fetch(&server.flight, &sql)), fetch);
    let (mut flight_t, mut http_t) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let start = Instant::now();
        assert_eq!(runtime.block_on(flight_fetch(&server.flight, &sql)), fetch);
        flight_t.push(start.elapsed());
        let start = Instant::now();
        assert_eq!(http_fetch(&http, &server.base, &sql), fetch);
        http_t.push(start.elapsed());
    }
    let (f, h) = (median(flight_t), median(http_t));
    println!(
        "fetch {fetch} rows (median of {repeats}): Flight SQL {:.2} s ({:.0} rows/s), HTTP arrow {:.2} s ({:.0} rows/s)",
        f,
        fetch as f64 / f,
        h,
        fetch as f64 / h
    );
    println!(
        "Flight/HTTP time ratio: {:.2} (target ≤ 1.2: {})",
        f / h,
        if f / h <= 1.2 { "met" } else { "not met" }
    );
    server.stop();
}
