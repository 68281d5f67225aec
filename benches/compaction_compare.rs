//! Compaction bench: N events (default 10M) ingested in small flushes (by
//! default ≥ 1,000 files), then a scan, a funnel, one entity's events and
//! the latest 10 events timed over HTTP before and after `POST
//! /v1/admin/compact`, and the compacted table next to DuckDB over the
//! same Parquet files in the same run. Prints the speed-ups, the p99 of the
//! two point queries (target < 10 ms), and the ratios to DuckDB.
//!
//! The two point queries are timed `--point-repeats` times after
//! compaction (200 by default) so that their p99 is not just the slowest
//! of a handful of runs.
//!
//! cargo bench --bench compaction_compare -- [--events 10000000] [--flush-rows 300000] [--rate 150000] [--repeats 20] [--point-repeats 200]

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn timings(
    http: &reqwest::blocking::Client,
    base: &str,
    sql: &str,
    repeats: usize,
) -> Vec<Duration> {
    query(http, base, sql);
    let mut t: Vec<Duration> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            query(http, base, sql);
            start.elapsed()
        })
        .collect();
    t.sort();
    t
}

fn at(t: &[Duration], p: f64) -> f64 {
    t[((t.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3
}

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let flush_rows: usize = arg("--flush-rows", 300_000);
    let repeats: usize = arg("--repeats", 20);
    let point_repeats: usize = arg("--point-repeats", 200);
    // paced so that flushes keep up and stay small
    let rate: f64 = arg("--rate", 150_000.0);
    let batch = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let flags = [
        "--flush-rows".to_string(),
        flush_rows.to_string(),
        "--flush-bytes".into(),
        (1u64 << 40).to_string(),
        "--maintenance-interval".into(),
        "0s".into(),
        "--vacuum-retention".into(),
        "0s".into(),
    ];
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = BenchServer::start(tmp.path(), &flag_refs);
    let bodies = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * batch) as u64, batch, 200_000, 30))
            .collect::<Vec<_>>(),
    );
    let load = run_load(
        &format!("{}/v1/events", server.base),
        bodies,
        batch,
        events / batch,
        4,
        Some(rate),
    );
    println!(
        "loaded {} events at {:.0} events/s",
        load.events,
        load.rate()
    );
    server.stop();
    let server = BenchServer::start(tmp.path(), &flag_refs);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let files = query(
        &http,
        &server.base,
        "SELECT files, bytes FROM system.tables",
    );
    println!("before compaction: {files}");

    let steps = ["page_view", "click", "add_to_cart", "checkout", "purchase"]
        .iter()
        .map(|s| format!("event_type = '{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let queries: Vec<(&str, String)> = vec![
        (
            "scan: count by type",
            "SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY 1".into(),
        ),
        (
            "5-step funnel",
            format!(
                "SELECT level, count(*) AS n FROM (SELECT entity_id, window_funnel(INTERVAL '1 day', timestamp, {steps}) AS level FROM events GROUP BY entity_id) GROUP BY 1 ORDER BY 1"
            ),
        ),
        (
            "one entity's events",
            "SELECT event_type, timestamp FROM events WHERE entity_id = 'u4242' ORDER BY timestamp"
                .into(),
        ),
        (
            "latest 10",
            "SELECT entity_id, event_type, timestamp FROM events ORDER BY timestamp DESC LIMIT 10"
                .into(),
        ),
    ];
    let before: Vec<Vec<Duration>> = queries
        .iter()
        .map(|(_, sql)| timings(&http, &server.base, sql, repeats))
        .collect();

    let t = Instant::now();
    let r = http
        .post(format!("{}/v1/admin/compact", server.base))
        .send()
        .unwrap();
    let report: Value = r.json().unwrap();
    println!(
        "compaction took {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        report["reports"][0]
    );
    // the first two are the scan and the funnel, the rest point queries
    let after: Vec<Vec<Duration>> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, sql))| {
            let n = if i < 2 { repeats } else { point_repeats };
            timings(&http, &server.base, sql, n)
        })
        .collect();

    let python = std::env::var("ALLSOURCE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let duck_queries: Vec<Value> = queries
        .iter()
        .map(|(name, sql)| {
            // DuckDB has no window_funnel: its funnel is left out
            Value::Array(vec![
                Value::String(name.to_string()),
                Value::String(sql.clone()),
            ])
        })
        .filter(|q| !q[1].as_str().unwrap().contains("window_funnel"))
        .collect();
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/duckdb_queries.py"
        ))
        .arg(tmp.path().join("tables/default/events"))
        .arg(Value::Array(duck_queries).to_string())
        .arg(repeats.to_string())
        .output()
        .expect("run python with duckdb");
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: Value = serde_json::from_slice(&out.stdout).unwrap();

    println!(
        "\n{:<22} {:>11} {:>11} {:>9} {:>10} {:>11} {:>9}",
        "query", "before p50", "after p50", "speed-up", "after p99", "DuckDB p50", "vs DuckDB"
    );
    for (i, (name, _)) in queries.iter().enumerate() {
        let (b, a) = (at(&before[i], 0.5), at(&after[i], 0.5));
        let d = duck[*name].as_f64().map(|s| s * 1e3);
        println!(
            "{:<22} {:>9.1}ms {:>9.1}ms {:>8.1}x {:>8.1}ms {:>11} {:>9}",
            name,
            b,
            a,
            b / a,
            at(&after[i], 0.99),
            d.map_or("-".into(), |d| format!("{d:.1}ms")),
            d.map_or("-".into(), |d| format!("{:.2}x", a / d)),
        );
    }
    println!(
        "(over HTTP with JSON results; DuckDB in-process over the compacted files; targets: point queries p99 < 10 ms)"
    );
}
