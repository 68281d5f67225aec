//! Query bench: ingests N generated events (default 10M) through a real
//! server, flushes them to Delta, then times the same SQL over HTTP in
//! AllSource and in DuckDB (over the same Parquet files, in the same run)
//! and prints the ratio per query.
//!
//! cargo bench --bench query_compare -- [--events 10000000] [--repeats 5]
//!
//! Needs a Python with duckdb: `ALLSOURCE_BENCH_PYTHON` (scripts/bench.sh
//! sets up a virtualenv), else `python3`.

mod common;

use common::*;
use std::time::Duration;

const QUERIES: &[(&str, &str)] = COMPARE_QUERIES;

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let repeats: usize = arg("--repeats", 5);
    let (tmp, server) = load_and_flush(events);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let ours: Vec<(&&str, Duration)> = QUERIES
        .iter()
        .map(|(name, sql)| {
            (
                name,
                median_time(repeats, || {
                    query(&http, &server.base, sql);
                }),
            )
        })
        .collect();

    let table_dir = tmp.path().join("tables/default/events");
    let queries = serde_json::to_string(QUERIES).unwrap();
    let repeats_arg = repeats.to_string();
    let theirs = python_json(
        "duckdb_queries.py",
        &[
            table_dir.as_os_str(),
            queries.as_ref(),
            repeats_arg.as_ref(),
        ],
    );

    println!(
        "\n{:<24} {:>14} {:>14} {:>10}",
        "query (median)", "AllSource ms", "DuckDB ms", "ratio"
    );
    for (name, t) in ours {
        let d = theirs[*name].as_f64().unwrap();
        println!(
            "{:<24} {:>14.1} {:>14.1} {:>9.2}x",
            name,
            t.as_secs_f64() * 1e3,
            d * 1e3,
            t.as_secs_f64() / d
        );
    }
    println!(
        "(AllSource timed over HTTP with JSON results; DuckDB in-process; ratio = AllSource / DuckDB)"
    );
}
