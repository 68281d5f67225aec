//! Peer bench: the queries users compare, on AllSource over HTTP (Arrow
//! results) and, in the same run, on the engines a user would pick
//! instead: chDB on its own MergeTree table sorted by (event_type,
//! entity_id, timestamp), and DuckDB on one Parquet file, both loaded with
//! the same events. Prints each median, its ratio to chDB and to the faster
//! peer, and checks that every engine gave the same answer.
//!
//! cargo bench --bench peer_compare -- [--events 10000000] [--entities 250000]
//!     [--days 30] [--repeats 5] [--point-runs 300] [--ingest-rate 100000]
//!
//! Then the two point queries (one entity's events, the latest 10) are
//! timed `--point-runs` times each over HTTP, idle and while
//! `--ingest-rate` events/s are ingested over 4 connections (10,000-event
//! NDJSON bodies), and their p50 and p99 printed: the chDB medians in the
//! table above are the peer's figures for the same queries.
//!
//! The events are ingested over HTTP, flushed (a restart) and compacted
//! (`POST /v1/admin/compact`) before anything is timed; the peers load the
//! table's live Parquet files (`benches/peer_queries.py`). The server's
//! peak RSS is printed at the end.

mod common;

use common::*;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const DAY_US: i64 = 86_400_000_000;
const JAN1_US: i64 = 1_767_225_600_000_000;
const FUNNEL: [&str; 5] = ["page_view", "click", "add_to_cart", "checkout", "purchase"];

/// One query in each dialect: AllSource, ClickHouse, and DuckDB (none
/// where DuckDB has no such function).
struct Compared {
    name: &'static str,
    ours: String,
    clickhouse: String,
    duckdb: Option<String>,
}

fn compared(name: &'static str, ours: &str, clickhouse: &str, duckdb: Option<&str>) -> Compared {
    Compared {
        name,
        ours: ours.to_string(),
        clickhouse: clickhouse.to_string(),
        duckdb: duckdb.map(str::to_string),
    }
}

fn funnel_conditions() -> String {
    FUNNEL
        .iter()
        .map(|s| format!("event_type = '{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A day of January 2026 as a condition on microseconds since the epoch.
fn day(d: i64, col: &str) -> String {
    format!(
        "({col} >= {} AND {col} < {})",
        JAN1_US + d * DAY_US,
        JAN1_US + (d + 1) * DAY_US
    )
}

fn queries() -> Vec<Compared> {
    let conds = funnel_conditions();
    let ours_ts = "arrow_cast(timestamp, 'Int64')";
    let ch_ts = "toUnixTimestamp64Micro(timestamp)";
    let week_us = 7 * DAY_US;
    vec![
        compared(
            "count by type and day",
            "SELECT event_type, date_trunc('day', timestamp) AS day, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT event_type, toStartOfDay(timestamp) AS day, count() AS n FROM events GROUP BY event_type, day ORDER BY event_type, day",
            Some(
                "SELECT event_type, date_trunc('day', timestamp) AS day, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 1, 2",
            ),
        ),
        compared(
            "distinct entities",
            "SELECT count(DISTINCT entity_id) AS n FROM events",
            "SELECT count(DISTINCT entity_id) AS n FROM events",
            Some("SELECT count(DISTINCT entity_id) AS n FROM events"),
        ),
        compared(
            "p95 of amount by type",
            "SELECT event_type, percentile_cont(0.95) WITHIN GROUP (ORDER BY amount) AS p95 FROM events GROUP BY 1 ORDER BY 1",
            "SELECT event_type, quantileExactInclusive(0.95)(amount) AS p95 FROM events GROUP BY event_type ORDER BY event_type",
            Some(
                "SELECT event_type, quantile_cont(amount, 0.95) AS p95 FROM events GROUP BY 1 ORDER BY 1",
            ),
        ),
        compared(
            "top 10 entities",
            "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id ORDER BY n DESC, entity_id LIMIT 10",
            "SELECT entity_id, count() AS n FROM events GROUP BY entity_id ORDER BY n DESC, entity_id LIMIT 10",
            Some(
                "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id ORDER BY n DESC, entity_id LIMIT 10",
            ),
        ),
        compared(
            "latest 10 events",
            "SELECT event_id, event_type, entity_id, timestamp FROM events ORDER BY timestamp DESC, event_id LIMIT 10",
            "SELECT event_id, event_type, entity_id, timestamp FROM events ORDER BY timestamp DESC, event_id LIMIT 10",
            Some(
                "SELECT event_id, event_type, entity_id, timestamp FROM events ORDER BY timestamp DESC, event_id LIMIT 10",
            ),
        ),
        compared(
            "one entity's events",
            "SELECT event_id, event_type, timestamp, amount FROM events WHERE entity_id = 'u4242' ORDER BY timestamp, event_id",
            "SELECT event_id, event_type, timestamp, amount FROM events WHERE entity_id = 'u4242' ORDER BY timestamp, event_id",
            Some(
                "SELECT event_id, event_type, timestamp, amount FROM events WHERE entity_id = 'u4242' ORDER BY timestamp, event_id",
            ),
        ),
        compared(
            "5-step funnel, 1 day",
            &format!(
                "SELECT level, count(*) AS n FROM (SELECT entity_id, window_funnel({DAY_US}, {ours_ts}, {conds}) AS level FROM events GROUP BY entity_id) GROUP BY level ORDER BY level"
            ),
            &format!(
                "SELECT level, count() AS n FROM (SELECT entity_id, windowFunnel({DAY_US})(toUInt64({ch_ts}), {conds}) AS level FROM events GROUP BY entity_id) GROUP BY level ORDER BY level"
            ),
            None,
        ),
        compared(
            "retention day 0/1/7",
            &format!(
                "SELECT sum(r[1]) AS d0, sum(r[2]) AS d1, sum(r[3]) AS d7 FROM (SELECT entity_id, retention({}, {}, {}) AS r FROM events GROUP BY entity_id)",
                day(0, ours_ts),
                day(1, ours_ts),
                day(7, ours_ts)
            ),
            &format!(
                "SELECT sum(r[1]) AS d0, sum(r[2]) AS d1, sum(r[3]) AS d7 FROM (SELECT entity_id, retention({}, {}, {}) AS r FROM events GROUP BY entity_id)",
                day(0, ch_ts),
                day(1, ch_ts),
                day(7, ch_ts)
            ),
            None,
        ),
        compared(
            "filtered count and avg",
            "SELECT count(*) AS n, avg(amount) AS mean FROM events WHERE event_type = 'purchase' AND amount > 500",
            "SELECT count() AS n, avg(amount) AS mean FROM events WHERE event_type = 'purchase' AND amount > 500",
            Some(
                "SELECT count(*) AS n, avg(amount) AS mean FROM events WHERE event_type = 'purchase' AND amount > 500",
            ),
        ),
        compared(
            "clicks by page, 1 week",
            "SELECT page, count(*) AS n, sum(amount) AS total FROM events WHERE event_type = 'click' AND timestamp >= '2026-01-10T00:00:00Z' AND timestamp < '2026-01-17T00:00:00Z' GROUP BY page ORDER BY page",
            "SELECT page, count() AS n, sum(amount) AS total FROM events WHERE event_type = 'click' AND timestamp >= '2026-01-10 00:00:00' AND timestamp < '2026-01-17 00:00:00' GROUP BY page ORDER BY page",
            Some(
                "SELECT page, count(*) AS n, sum(amount) AS total FROM events WHERE event_type = 'click' AND timestamp >= TIMESTAMPTZ '2026-01-10 00:00:00+00' AND timestamp < TIMESTAMPTZ '2026-01-17 00:00:00+00' GROUP BY page ORDER BY page",
            ),
        ),
        compared(
            "7-day funnel by first page",
            &format!(
                "SELECT first_page, level, count(*) AS n FROM (SELECT entity_id, first_value(page ORDER BY timestamp) AS first_page, window_funnel({week_us}, {ours_ts}, {conds}) AS level FROM events GROUP BY entity_id) GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            &format!(
                "SELECT first_page, level, count() AS n FROM (SELECT entity_id, argMin(page, timestamp) AS first_page, windowFunnel({week_us})(toUInt64({ch_ts}), {conds}) AS level FROM events GROUP BY entity_id) GROUP BY first_page, level ORDER BY first_page, level"
            ),
            None,
        ),
        compared(
            "weekly cohorts",
            "SELECT cohort, period, cohort_size, retained FROM cohorts('SELECT entity_id, timestamp, event_type = ''signup'', event_type = ''purchase'' FROM events', 'week', 4) ORDER BY cohort, period",
            "WITH f AS (SELECT entity_id, min(timestamp) AS first_ts FROM events WHERE event_type = 'signup' GROUP BY entity_id), \
             sizes AS (SELECT toMonday(first_ts) AS cohort, count() AS cohort_size FROM f GROUP BY cohort), \
             ret AS (SELECT toMonday(f.first_ts) AS cohort, intDiv(dateDiff('day', toMonday(f.first_ts), toMonday(e.timestamp)), 7) AS period, uniqExact(e.entity_id) AS retained \
                     FROM events AS e INNER JOIN f ON e.entity_id = f.entity_id WHERE e.event_type = 'purchase' AND e.timestamp >= f.first_ts GROUP BY cohort, period), \
             grid AS (SELECT cohort, cohort_size, p.number AS period FROM sizes CROSS JOIN numbers(4) AS p) \
             SELECT grid.cohort AS cohort, grid.period AS period, grid.cohort_size AS cohort_size, ifNull(ret.retained, 0) AS retained \
             FROM grid LEFT JOIN ret ON grid.cohort = ret.cohort AND grid.period = ret.period \
             WHERE addDays(grid.cohort, 7 * grid.period) <= toDate((SELECT max(timestamp) FROM events)) ORDER BY cohort, period",
            Some(
                "WITH f AS (SELECT entity_id, min(timestamp) AS first_ts FROM events WHERE event_type = 'signup' GROUP BY entity_id), \
                 sizes AS (SELECT CAST(date_trunc('week', first_ts) AS DATE) AS cohort, count(*) AS cohort_size FROM f GROUP BY 1), \
                 ret AS (SELECT CAST(date_trunc('week', f.first_ts) AS DATE) AS cohort, \
                                (CAST(date_trunc('week', e.timestamp) AS DATE) - CAST(date_trunc('week', f.first_ts) AS DATE)) // 7 AS period, \
                                count(DISTINCT e.entity_id) AS retained \
                         FROM events AS e JOIN f ON e.entity_id = f.entity_id WHERE e.event_type = 'purchase' AND e.timestamp >= f.first_ts GROUP BY 1, 2), \
                 grid AS (SELECT cohort, cohort_size, p AS period FROM sizes CROSS JOIN range(4) AS t(p)) \
                 SELECT grid.cohort AS cohort, grid.period AS period, grid.cohort_size AS cohort_size, coalesce(ret.retained, 0) AS retained \
                 FROM grid LEFT JOIN ret ON grid.cohort = ret.cohort AND grid.period = ret.period \
                 WHERE grid.cohort + CAST(7 * grid.period AS INTEGER) <= CAST((SELECT max(timestamp) FROM events) AS DATE) ORDER BY 1, 2",
            ),
        ),
        compared(
            "hourly purchases, gap-filled",
            "SELECT hour, n FROM gapfill('SELECT date_bin(INTERVAL ''1 hour'', timestamp) AS hour, count(*) AS n FROM events WHERE event_type = ''purchase'' AND amount > 999.5 GROUP BY 1', 'hour', INTERVAL '1 hour', '2026-01-01T00:00:00Z', '2026-01-31T00:00:00Z', 'zero') ORDER BY hour",
            "SELECT toStartOfHour(timestamp) AS hour, count() AS n FROM events WHERE event_type = 'purchase' AND amount > 999.5 GROUP BY hour \
             ORDER BY hour WITH FILL FROM toDateTime('2026-01-01 00:00:00', 'UTC') TO toDateTime('2026-01-31 00:00:00', 'UTC') STEP toIntervalHour(1)",
            Some(
                "SELECT g.hour AS hour, coalesce(c.n, 0) AS n \
                 FROM generate_series(TIMESTAMPTZ '2026-01-01 00:00:00+00', TIMESTAMPTZ '2026-01-30 23:00:00+00', INTERVAL 1 HOUR) AS g(hour) \
                 LEFT JOIN (SELECT date_trunc('hour', timestamp) AS hour, count(*) AS n FROM events WHERE event_type = 'purchase' AND amount > 999.5 GROUP BY 1) AS c \
                 ON g.hour = c.hour ORDER BY 1",
            ),
        ),
    ]
}

/// A value as the engines can agree on it: numbers (also those printed
/// as text) as `f64`, times as `YYYY-MM-DDTHH:MM:SS` (fractions and zones
/// dropped), anything else as text.
#[derive(Debug, PartialEq)]
enum Canon {
    Null,
    Number(f64),
    Text(String),
}

fn canon(v: &Value) -> Canon {
    match v {
        Value::Null => Canon::Null,
        Value::Bool(b) => Canon::Number(f64::from(u8::from(*b))),
        Value::Number(n) => Canon::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => {
            if let Ok(n) = s.parse::<f64>() {
                return Canon::Number(n);
            }
            let b = s.as_bytes();
            let is_time = b.len() >= 19
                && b[4] == b'-'
                && b[7] == b'-'
                && (b[10] == b'T' || b[10] == b' ')
                && b[13] == b':';
            if is_time {
                Canon::Text(format!("{}T{}", &s[..10], &s[11..19]))
            } else {
                Canon::Text(s.clone())
            }
        }
        other => Canon::Text(other.to_string()),
    }
}

fn close(a: &Canon, b: &Canon) -> bool {
    match (a, b) {
        (Canon::Number(x), Canon::Number(y)) => {
            x == y || (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

/// Where `theirs` differs from `ours` (rows as JSON objects), if it does.
fn difference(ours: &[Value], theirs: &[Value]) -> Option<String> {
    if ours.len() != theirs.len() {
        return Some(format!("{} rows against {}", ours.len(), theirs.len()));
    }
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return Some(format!("row {i} is not an object"));
        };
        for (column, value) in a {
            let Some(other) = b.get(column) else {
                return Some(format!("row {i} has no column {column}"));
            };
            if !close(&canon(value), &canon(other)) {
                return Some(format!("row {i}, {column}: {value} against {other}"));
            }
        }
    }
    None
}

/// Posts `sql` for an Arrow IPC stream and reads it whole.
fn arrow_query(http: &reqwest::blocking::Client, base: &str, sql: &str) {
    let r = http
        .post(format!("{base}/v1/sql?format=arrow"))
        .body(sql.to_string())
        .send()
        .unwrap();
    let status = r.status();
    let body = r.bytes().unwrap();
    assert!(status.is_success(), "{sql}: {status} {body:?}");
}

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let entities: u64 = arg("--entities", 250_000);
    let days: u64 = arg("--days", 30);
    let repeats: usize = arg("--repeats", 5);
    let (tmp, server) = load_and_flush_over(events, entities, days);
    compact_all(&server.base);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();

    let queries = queries();
    let peer_list: Vec<Value> = queries
        .iter()
        .map(|q| serde_json::json!([q.name, q.clickhouse, q.duckdb]))
        .collect();
    let table_dir = tmp.path().join("tables/default/events");
    let work_dir = tmp.path().join("peers");
    let peers = python_json(
        "peer_queries.py",
        &[
            table_dir.as_os_str(),
            work_dir.as_os_str(),
            serde_json::to_string(&peer_list).unwrap().as_ref(),
            repeats.to_string().as_ref(),
        ],
    );
    println!(
        "peers loaded {} rows: chDB MergeTree in {:.1} s, DuckDB's Parquet file in {:.1} s",
        peers["load"]["rows"],
        peers["load"]["chdb"].as_f64().unwrap(),
        peers["load"]["duckdb"].as_f64().unwrap()
    );
    let ours: Value = serde_json::from_str(&query(
        &http,
        &server.base,
        "SELECT count(*) AS n FROM events",
    ))
    .unwrap();
    assert_eq!(
        peers["load"]["rows"], ours[0]["n"],
        "the peers hold another number of rows"
    );

    println!(
        "\n{:<30} {:>10} {:>10} {:>10} {:>9} {:>9}  answers",
        "query (median, ms)", "AllSource", "chDB MT", "DuckDB", "/chDB", "/best"
    );
    let mut differences = Vec::new();
    let mut worst: f64 = 0.0;
    for q in &queries {
        let ours_rows: Vec<Value> =
            serde_json::from_str(&query(&http, &server.base, &q.ours)).unwrap();
        let ours = median_time(repeats, || arrow_query(&http, &server.base, &q.ours));
        let peer = &peers["queries"][q.name];
        let ch = peer["chdb"]["seconds"].as_f64().unwrap();
        let duck = peer["duckdb"]["seconds"].as_f64();
        let best = duck.map_or(ch, |d| d.min(ch));
        let mut verdict = Vec::new();
        for engine in ["chdb", "duckdb"] {
            let Some(rows) = peer[engine]["rows"].as_array() else {
                continue;
            };
            if let Some(d) = difference(&ours_rows, rows) {
                verdict.push(format!("{engine}: {d}"));
                differences.push(format!("{} ({engine}): {d}", q.name));
            }
        }
        let ratio = ours.as_secs_f64() / ch;
        worst = worst.max(ratio);
        println!(
            "{:<30} {:>10.1} {:>10.1} {:>10} {:>8.2}x {:>8.2}x  {}",
            q.name,
            ours.as_secs_f64() * 1e3,
            ch * 1e3,
            duck.map_or("-".to_string(), |d| format!("{:.1}", d * 1e3)),
            ratio,
            ours.as_secs_f64() / best,
            if verdict.is_empty() {
                "same".to_string()
            } else {
                verdict.join("; ")
            }
        );
    }
    println!(
        "(AllSource over HTTP with Arrow results; chDB and DuckDB in-process, results as Arrow; ratio = AllSource / peer; worst ratio to chDB {worst:.2}x)"
    );
    point_queries(
        &http,
        &server.base,
        entities,
        days,
        arg("--point-runs", 300),
        arg("--ingest-rate", 100_000.0),
    );
    println!(
        "server peak RSS {:.0} MiB",
        server.peak_rss() as f64 / 1048576.0
    );
    server.stop();
    assert!(
        differences.is_empty(),
        "answers differ:\n{}",
        differences.join("\n")
    );
}

/// p50 and p99 of one entity's events (a random entity each time) and of
/// the latest 10, `runs` times each, idle and under `rate` events/s of
/// ingest.
fn point_queries(
    http: &reqwest::blocking::Client,
    base: &str,
    entities: u64,
    days: u64,
    runs: usize,
    rate: f64,
) {
    let time = |label: &str| {
        let mut rng = Rng::new(42);
        let mut one = Vec::with_capacity(runs);
        let mut latest = Vec::with_capacity(runs);
        for _ in 0..runs {
            let entity = rng.below(entities);
            let t = Instant::now();
            arrow_query(
                http,
                base,
                &format!(
                    "SELECT event_id, event_type, timestamp, amount FROM events \
                     WHERE entity_id = 'u{entity}' ORDER BY timestamp, event_id"
                ),
            );
            one.push(t.elapsed());
            let t = Instant::now();
            arrow_query(
                http,
                base,
                "SELECT event_id, event_type, entity_id, timestamp FROM events \
                 ORDER BY timestamp DESC, event_id LIMIT 10",
            );
            latest.push(t.elapsed());
        }
        for (name, times) in [
            ("one entity's events", &mut one),
            ("latest 10 events", &mut latest),
        ] {
            times.sort();
            let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
            println!(
                "{name:<22} {label:<26} p50 {:>6.2} ms  p99 {:>6.2} ms",
                pct(0.5).as_secs_f64() * 1e3,
                pct(0.99).as_secs_f64() * 1e3
            );
        }
    };
    println!("\npoint queries over HTTP (Arrow), {runs} runs each (targets: p99 < 5 ms)");
    time("idle");
    let batch = 10_000;
    let bodies = Arc::new(
        (0..16)
            .map(|i| ndjson_batch(1 << 40 | (i * batch) as u64, batch, entities, days))
            .collect::<Vec<_>>(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let (url, done) = (format!("{base}/v1/events"), done.clone());
        std::thread::spawn(move || {
            let mut events = 0;
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                events +=
                    run_load_for(&url, bodies.clone(), batch, 4, rate, Duration::from_secs(2))
                        .events;
            }
            events as f64 / started.elapsed().as_secs_f64()
        })
    };
    // Ingest reaches its pace and flushes start before the timing.
    std::thread::sleep(Duration::from_secs(5));
    time(&format!("under {:.0}K events/s", rate / 1e3));
    done.store(true, Ordering::Relaxed);
    let achieved = load.join().unwrap();
    println!("(ingest achieved {achieved:.0} events/s while the queries ran)");
}
