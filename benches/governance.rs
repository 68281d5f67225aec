//! Governance bench: what validation rules cost at ingest, against
//! ClickHouse's CHECK constraints (chDB) in the same run
//! (`chdb_checks.py`).
//!
//! One server, two tables fed the same NDJSON batches (10,000 events of
//! six event types, each with `amount`, `page` and `seq`): `plain` has no
//! rules, `ruled` has 20 per event type — required and type of the three
//! fields, bounds, a pattern and a length, no undeclared fields, the
//! allowed event types, and seven SQL rules. Every event passes them, so
//! what is measured is checking, not refusing. Runs alternate between the
//! tables (three each), each run starting once the server's buffers are
//! flushed, and the medians are compared. chDB inserts the
//! same number of rows into a MergeTree table without and with 20 CHECK
//! constraints of the same kinds, alternating the same way.
//!
//! cargo bench --bench governance -- [--requests 200] [--rounds 3]

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;

const BATCH: usize = 10_000;

/// The 20 rules each event type of `ruled` gets (the allowed list counts
/// one of them).
fn schema() -> serde_json::Value {
    json!({
        "fields": {
            "amount": {"type": "number", "required": true, "min": 0, "max": 1000},
            "page": {"type": "string", "required": true, "pattern": "^/p/\\d+$", "max_length": 16},
            "seq": {"type": "integer", "required": true, "min": 0}
        },
        "additional_fields": "reject",
        "rules": [
            {"name": "amount_positive", "check": "amount >= 0 OR amount IS NULL"},
            {"name": "page_long_enough", "check": "length(page) > 2"},
            {"name": "seq_bounded", "check": "seq < 1e15"},
            {"name": "has_entity", "check": "entity_id <> ''"},
            {"name": "amount_doubles", "check": "amount * 2 >= amount"},
            {"name": "page_prefix", "check": "substr(page, 1, 3) = '/p/'"},
            {"name": "not_bogus", "check": "event_type <> 'bogus'"}
        ]
    })
}

/// Waits until the server's buffers are empty (everything flushed).
fn settle(http: &reqwest::blocking::Client, base: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let empty = metrics
            .lines()
            .any(|l| l.trim() == "allsource_buffer_bytes 0");
        if empty || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let requests: usize = arg("--requests", 200);
    let rounds: usize = arg("--rounds", 3);
    let tmp = tempfile::tempdir().unwrap();
    // No scheduled compaction: it would land in whichever run it meets.
    let server = BenchServer::start(tmp.path(), &["--maintenance-interval", "0"]);
    let http = reqwest::blocking::Client::new();
    for ty in EVENT_TYPES {
        let r = http
            .post(format!("{}/v1/schemas/ruled/{ty}", server.base))
            .json(&schema())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    }
    let r = http
        .put(format!("{}/v1/schemas/ruled", server.base))
        .json(&json!({"event_types": {"allowed": EVENT_TYPES}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let bodies = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * BATCH) as u64, BATCH, 200_000, 30))
            .collect::<Vec<_>>(),
    );
    println!(
        "governance: {} events per run in batches of {BATCH} over 4 connections, {rounds} runs per table",
        requests * BATCH
    );
    let (mut plain, mut ruled, mut ch_plain, mut ch_ruled) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        for (table, rates) in [("plain", &mut plain), ("ruled", &mut ruled)] {
            // Each run starts on empty buffers: the previous run's last
            // flush would otherwise be paid by this one (always the ruled
            // table's runs, which follow the plain table's).
            settle(&http, &server.base);
            let url = format!("{}/v1/events?table={table}", server.base);
            let load = run_load(&url, bodies.clone(), BATCH, requests, 4, None);
            println!(
                "run {round} {table:<5}: {:>9.0} events/s  p99 {:>6.1} ms",
                load.rate(),
                load.percentile(0.99).as_secs_f64() * 1e3
            );
            rates.push(load.rate());
        }
        for (n, rates) in [(0usize, &mut ch_plain), (20, &mut ch_ruled)] {
            let peer = python_json(
                "chdb_checks.py",
                &[
                    n.to_string().as_ref(),
                    requests.to_string().as_ref(),
                    BATCH.to_string().as_ref(),
                ],
            );
            let rate = peer["rate"].as_f64().unwrap();
            println!("run {round} chDB, {n:>2} CHECK constraints: {rate:>9.0} rows/s");
            rates.push(rate);
        }
    }
    let ours = median(ruled.clone()) / median(plain.clone());
    let theirs = median(ch_ruled.clone()) / median(ch_plain.clone());
    println!(
        "ingest with 20 rules per event type: {:.0} events/s vs {:.0} without, {ours:.2} of none (cost {:.0}%) | chDB with 20 CHECK constraints: {:.0} rows/s vs {:.0}, {theirs:.2} of none",
        median(ruled),
        median(plain),
        (1.0 - ours) * 100.0,
        median(ch_ruled),
        median(ch_plain),
    );
    let rejected = http
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("allsource_validation_rejected_total"))
        .count();
    assert_eq!(rejected, 0, "the bench's events must all pass");
    server.stop();
}
