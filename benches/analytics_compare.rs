//! Analytics bench: a 5-step funnel and a 3-condition retention over N
//! generated events (default 10M, 200K entities) loaded through a real
//! server, timed in AllSource (over HTTP) and in ClickHouse (chDB, over the
//! same Parquet files) in the same run; prints the ratios and checks that
//! both engines return the same answer.
//!
//! cargo bench --bench analytics_compare -- [--events 10000000] [--repeats 3]
//!
//! Needs a Python with chdb: `ALLSOURCE_BENCH_PYTHON` (scripts/bench.sh).

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const DAY_US: i64 = 86_400_000_000;
const JAN1_US: i64 = 1_767_225_600_000_000;

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let repeats: usize = arg("--repeats", 3);
    let (tmp, server) = load_and_flush(events);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();

    let steps = ["page_view", "click", "add_to_cart", "checkout", "purchase"];
    let conds = |col: &str| -> String {
        steps
            .iter()
            .map(|s| format!("{col} = '{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let day = |d: i64, col: &str| {
        format!(
            "({col} >= {} AND {col} < {})",
            JAN1_US + d * DAY_US,
            JAN1_US + (d + 1) * DAY_US
        )
    };
    let ours_ts = "arrow_cast(timestamp, 'Int64')";
    let ch_ts = "toUnixTimestamp64Micro(timestamp)";
    let queries = [
        (
            "5-step funnel, 1 day",
            format!(
                "SELECT level, count(*) AS n FROM (SELECT entity_id, window_funnel({DAY_US}, {ours_ts}, {}) AS level FROM events GROUP BY entity_id) GROUP BY level ORDER BY level",
                conds("event_type")
            ),
            format!(
                "SELECT level, count() AS n FROM (SELECT entity_id, windowFunnel({DAY_US})(toUInt64({ch_ts}), {}) AS level FROM {{table}} GROUP BY entity_id) GROUP BY level ORDER BY level",
                conds("event_type")
            ),
        ),
        (
            "retention day 0/1/7",
            format!(
                "SELECT sum(r[1]) AS d0, sum(r[2]) AS d1, sum(r[3]) AS d7 FROM (SELECT entity_id, retention({}, {}, {}) AS r FROM events GROUP BY entity_id)",
                day(0, ours_ts),
                day(1, ours_ts),
                day(7, ours_ts)
            ),
            format!(
                "SELECT sum(r[1]) AS d0, sum(r[2]) AS d1, sum(r[3]) AS d7 FROM (SELECT entity_id, retention({}, {}, {}) AS r FROM {{table}} GROUP BY entity_id)",
                day(0, ch_ts),
                day(1, ch_ts),
                day(7, ch_ts)
            ),
        ),
    ];

    let mut ours = Vec::new();
    for (name, sql, _) in &queries {
        let mut answer = String::new();
        let t = median_time(repeats, || answer = query(&http, &server.base, sql));
        ours.push((name, t, answer));
    }

    let python = std::env::var("ALLSOURCE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let table_dir = tmp.path().join("tables/default/events");
    let ch: serde_json::Map<String, Value> = queries
        .iter()
        .map(|(name, _, ch)| (name.to_string(), Value::String(ch.clone())))
        .collect();
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/chdb_queries.py"
        ))
        .arg(&table_dir)
        .arg(Value::Object(ch).to_string())
        .arg(repeats.to_string())
        .output()
        .expect("run python with chdb");
    assert!(
        out.status.success(),
        "chdb side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();

    println!(
        "\n{:<24} {:>14} {:>14} {:>10}  same answer",
        "query (median)", "AllSource ms", "chDB ms", "ratio"
    );
    for (name, t, answer) in ours {
        let c = &theirs[*name];
        let secs = c["seconds"].as_f64().unwrap();
        let ours_rows: Value = serde_json::from_str(&answer).unwrap();
        let same = normalize(&ours_rows) == normalize(&c["rows"]);
        println!(
            "{:<24} {:>14.1} {:>14.1} {:>9.2}x  {}",
            name,
            t.as_secs_f64() * 1e3,
            secs * 1e3,
            t.as_secs_f64() / secs,
            if same { "yes" } else { "NO" }
        );
        if !same {
            println!("  AllSource: {ours_rows}\n  chDB:      {}", c["rows"]);
        }
    }
    println!(
        "(AllSource timed over HTTP with JSON results; chDB in-process; ratio = AllSource / chDB)"
    );
}

/// Rows as lists of numbers, so both engines' JSON compare equal.
fn normalize(rows: &Value) -> Vec<Vec<i64>> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_object()
                .unwrap()
                .values()
                .map(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .or_else(|| v.as_f64().map(|f| f as i64))
                        .unwrap_or(-1)
                })
                .collect()
        })
        .collect()
}
