//! Distributed bench: the query bench's six queries plus a funnel and a
//! retention over N generated events (default 10M, flushed to Delta), run
//! by the server alone and on Ballista with one and then two executors
//! (`--ballista local`, the scheduler and executors inside the server,
//! each executor with a slot per core), alternating for three rounds;
//! then DuckDB over the same Parquet files. Prints medians, the ratios of
//! each Ballista run to the local one, and whether the answers agree.
//!
//! One machine cannot show a distributed speed-up: the executors share
//! its cores, and every query pays for Ballista's job submission, stage
//! planning, shuffle files and Flight fetches.
//!
//! cargo bench --bench distributed -- [--events 10000000] [--repeats 5]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const DAY_US: &str = "86400000000";

fn analytics() -> Vec<(&'static str, String)> {
    vec![
        (
            "5-step funnel, 1 day",
            format!(
                "SELECT level, count(*) AS n FROM (SELECT entity_id, window_funnel({DAY_US}, \
                 timestamp, event_type = 'page_view', event_type = 'signup', \
                 event_type = 'add_to_cart', event_type = 'checkout', event_type = 'purchase') \
                 AS level FROM events GROUP BY entity_id) GROUP BY level ORDER BY level"
            ),
        ),
        (
            "retention day 0/1/7",
            "SELECT sum(r[1]) AS d0, sum(r[2]) AS d1, sum(r[3]) AS d7 FROM (SELECT entity_id, \
             retention(event_date = DATE '2026-01-01', event_date = DATE '2026-01-02', \
             event_date = DATE '2026-01-08') AS r FROM events GROUP BY entity_id)"
                .to_string(),
        ),
    ]
}

/// Posts `sql` on `engine`; the body, after checking the status.
fn run(http: &reqwest::blocking::Client, base: &str, engine: &str, sql: &str) -> String {
    let r = http
        .post(format!("{base}/v1/sql?engine={engine}"))
        .body(sql.to_string())
        .send()
        .unwrap();
    let status = r.status();
    let text = r.text().unwrap();
    assert!(status.is_success(), "{engine}: {sql}: {status} {text}");
    text
}

/// The rows of a JSON answer with floats rounded and without event ids:
/// the load repeats its 64 bodies, so each event has about 15 copies that
/// differ only in the id the server gave them, and which of them a
/// `LIMIT` over tied rows keeps is arbitrary.
fn normalized(text: &str) -> serde_json::Value {
    fn round(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                serde_json::json!((n.as_f64().unwrap() * 1e6).round() / 1e6)
            }
            serde_json::Value::Array(a) => a.into_iter().map(round).collect(),
            serde_json::Value::Object(o) => o
                .into_iter()
                .filter(|(k, _)| k != "event_id")
                .map(|(k, v)| (k, round(v)))
                .collect(),
            other => other,
        }
    }
    round(serde_json::from_str(text).unwrap())
}

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let repeats: usize = arg("--repeats", 5);
    let (tmp, server) = load_and_flush(events);
    server.stop();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1800))
        .build()
        .unwrap();
    let mut queries: Vec<(&str, String)> = COMPARE_QUERIES
        .iter()
        .map(|(n, q)| (*n, q.to_string()))
        .collect();
    queries.extend(analytics());
    let setups: [(&str, &str, &[&str]); 3] = [
        ("local", "local", &[]),
        (
            "1 executor",
            "distributed",
            &["--ballista", "local", "--ballista-executors", "1"],
        ),
        (
            "2 executors",
            "distributed",
            &["--ballista", "local", "--ballista-executors", "2"],
        ),
    ];
    let mut times: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
    let mut answers: BTreeMap<(&str, &str), serde_json::Value> = BTreeMap::new();
    for _round in 0..3 {
        for (setup, engine, flags) in setups {
            let server = BenchServer::start(tmp.path(), flags);
            for (name, sql) in &queries {
                let mut text = String::new();
                let t = median_time(repeats, || {
                    text = run(&http, &server.base, engine, sql);
                });
                times.entry((name, setup)).or_default().push(t);
                answers.insert((name, setup), normalized(&text));
            }
            server.stop();
        }
    }
    let median = |v: &Vec<Duration>| {
        let mut v = v.clone();
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let table_dir = tmp.path().join("tables/default/events");
    let duck = python_json(
        "duckdb_queries.py",
        &[
            table_dir.as_os_str(),
            serde_json::to_string(COMPARE_QUERIES).unwrap().as_ref(),
            repeats.to_string().as_ref(),
        ],
    );
    println!(
        "\n{:<22} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>6}",
        "query (median ms)", "local", "1 exec", "2 exec", "1e/loc", "2e/loc", "duckdb", "same"
    );
    for (name, _) in &queries {
        let l = median(&times[&(*name, "local")]);
        let b1 = median(&times[&(*name, "1 executor")]);
        let b2 = median(&times[&(*name, "2 executors")]);
        let same = answers[&(*name, "local")] == answers[&(*name, "1 executor")]
            && answers[&(*name, "local")] == answers[&(*name, "2 executors")];
        let duck = duck[*name]
            .as_f64()
            .map_or("-".to_string(), |d| format!("{:.1}", d * 1e3));
        println!(
            "{:<22} {:>9.1} {:>9.1} {:>9.1} {:>7.2}x {:>7.2}x {:>9} {:>6}",
            name,
            l * 1e3,
            b1 * 1e3,
            b2 * 1e3,
            b1 / l,
            b2 / l,
            duck,
            if same { "yes" } else { "NO" }
        );
    }
    println!(
        "({events} events; AllSource over HTTP, JSON results, three alternating rounds; \
         Ballista's scheduler and executors inside the server on this machine's cores; \
         DuckDB in-process over the same Parquet files)"
    );
}
