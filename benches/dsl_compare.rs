//! DSL bench: how long a 20-clause document takes to compile to a logical
//! plan (in-process; target < 100 µs), and the end-to-end latency of the
//! same queries through `POST /v1/query` and `POST /v1/sql` on N generated
//! events (default 2M) in the same run (target: equal within noise).
//!
//! cargo bench --bench dsl_compare -- [--events 2000000] [--repeats 20] [--compiles 2000]

mod common;

use common::*;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The 20-clause document (7 select items, 8 conditions, 2 group keys,
/// having, 2 sort keys, limit) and its SQL twin.
fn big() -> (Value, &'static str) {
    (
        json!({
            "select": ["event_type", "day", ["count"], ["as", ["sum", "amount"], "revenue"],
                       ["avg", "amount"], ["count-distinct", "entity_id"], ["percentile", "amount", 0.9]],
            "from": "events",
            "where": ["and",
                      ["in", "event_type", ["purchase", "checkout", "add_to_cart"]],
                      [">", "amount", 1], ["<", "amount", 900],
                      ["since", "2026-01-02T00:00:00Z"], ["until", "2026-01-29T00:00:00Z"],
                      ["not", ["like", "page", "/p/1%"]], ["not-null", "entity_id"],
                      ["between", "seq", 0, 1e12]],
            "group-by": ["event_type", ["as", ["fn", "date_trunc", "day", "timestamp"], "day"]],
            "having": [">", ["count"], 10],
            "order-by": [["desc", "revenue"], "day"],
            "limit": 50
        }),
        "SELECT event_type, date_trunc('day', timestamp) AS day, count(*) AS count, sum(amount) AS revenue, \
           avg(amount) AS avg_amount, count(DISTINCT entity_id) AS count_distinct_entity_id, \
           percentile_cont(amount, 0.9) AS percentile_amount_0_9 \
         FROM events \
         WHERE event_type IN ('purchase', 'checkout', 'add_to_cart') AND amount > 1 AND amount < 900 \
           AND timestamp >= '2026-01-02T00:00:00Z' AND timestamp < '2026-01-29T00:00:00Z' \
           AND NOT page LIKE '/p/1%' AND entity_id IS NOT NULL AND seq BETWEEN 0 AND 1e12 \
         GROUP BY event_type, date_trunc('day', timestamp) HAVING count(*) > 10 \
         ORDER BY revenue DESC, day LIMIT 50",
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn compile_times(compiles: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let string = DataType::Utf8View;
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", string.clone(), false),
        Field::new("event_type", string.clone(), false),
        Field::new("entity_id", string.clone(), true),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Float64, true),
        Field::new("page", string, true),
        Field::new("seq", DataType::Float64, true),
    ]));
    let mut ctx = SessionContext::new();
    udfs::register_all(&mut ctx).unwrap();
    let table = MemTable::try_new(schema, vec![vec![]]).unwrap();
    ctx.register_table("events", Arc::new(table)).unwrap();
    let (doc, _) = big();
    let mut times: Vec<Duration> = (0..compiles + 100)
        .map(|_| {
            let t = Instant::now();
            let plan = runtime.block_on(allsource::dsl::compile(&ctx, &doc));
            let e = t.elapsed();
            assert!(plan.is_ok(), "{:?}", plan.err());
            e
        })
        .skip(100)
        .collect();
    times.sort();
    println!(
        "compile a 20-clause document: median {:.1} µs, p99 {:.1} µs over {compiles} runs (target < 100 µs)",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6
    );
}

fn main() {
    let events: usize = arg("--events", 2_000_000);
    let repeats: usize = arg("--repeats", 20);
    let compiles: usize = arg("--compiles", 2000);
    compile_times(compiles);

    let (_tmp, server) = load_and_flush(events);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let post = |path: &str, body: String| -> String {
        let r = http
            .post(format!("{}{path}", server.base))
            .body(body)
            .send()
            .unwrap();
        let ok = r.status().is_success();
        let text = r.text().unwrap();
        assert!(ok, "{path}: {text}");
        text
    };
    let (doc, sql) = big();
    let queries: Vec<(&str, Value, String)> = vec![
        ("20-clause aggregate", doc, sql.to_string()),
        (
            "one entity's latest 10",
            json!({"select": ["event_type", "timestamp", "amount"], "from": "events",
                   "where": ["=", "entity_id", "u4242"], "order-by": [["desc", "timestamp"]], "limit": 10}),
            "SELECT event_type, timestamp, amount FROM events WHERE entity_id = 'u4242' \
             ORDER BY timestamp DESC LIMIT 10"
                .to_string(),
        ),
        (
            "count by type",
            json!({"select": ["event_type", ["count"]], "from": "events", "group-by": ["event_type"],
                   "order-by": ["event_type"]}),
            "SELECT event_type, count(*) AS count FROM events GROUP BY event_type ORDER BY event_type".to_string(),
        ),
    ];
    println!(
        "\n{:<26} {:>10} {:>10} {:>8}  same answer",
        "query (median)", "DSL ms", "SQL ms", "ratio"
    );
    for (name, doc, sql) in queries {
        // interleave the two so that drift in machine load hits both
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut a, mut b) = (String::new(), String::new());
        for _ in 0..repeats + 1 {
            let t = Instant::now();
            a = post("/v1/query", doc.to_string());
            ours.push(t.elapsed());
            let t = Instant::now();
            b = post("/v1/sql", sql.clone());
            theirs.push(t.elapsed());
        }
        ours.remove(0);
        theirs.remove(0);
        ours.sort();
        theirs.sort();
        let (o, t) = (percentile(&ours, 0.5), percentile(&theirs, 0.5));
        println!(
            "{:<26} {:>10.2} {:>10.2} {:>7.2}x  {}",
            name,
            o.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3,
            o.as_secs_f64() / t.as_secs_f64(),
            if same_rows(&a, &b) { "yes" } else { "NO" }
        );
    }
    println!("(both over HTTP with JSON results; ratio = DSL / SQL)");
}

/// Whether two JSON results hold the same rows, floats within 1e-9
/// (parallel sums add in a different order from run to run).
fn same_rows(a: &str, b: &str) -> bool {
    fn close(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
            }
            _ => a == b,
        }
    }
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => close(&x, &y),
        _ => false,
    }
}
