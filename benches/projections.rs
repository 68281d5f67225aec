//! Projection bench: what keeping aggregates up to date costs and how
//! fresh they are, against ClickHouse's materialized views (chDB) in the
//! same run (`chdb_views.py`).
//!
//! 1. Ingest rate with 0, 1, 5 and 20 projections on the table (batches of
//!    1,000 over 4 connections), as a ratio to none; chDB inserts batches
//!    of 1,000 into a MergeTree table with 0, 1, 5 and 20 materialized
//!    views of the same aggregates, its ratio to none beside ours. (The
//!    table grows as the bench goes: each run ingests more on top.)
//! 2. Lag with one projection at half the maximum rate: a poller reads
//!    `GET /v1/projections/{name}` every millisecond; a request's lag is
//!    from its acknowledgement to the first poll whose position covers it
//!    (the poll's own period is in the figure). chDB updates its views
//!    inside the INSERT, so it has no lag to compare: its cost is in 1.
//! 3. Key lookups: `GET /v1/projections/{name}/state?key=…` for random
//!    keys, p50 and p99; chDB reads one entity's row from its view
//!    (in-process, no HTTP).
//! 4. Rebuild speed: `POST /v1/projections/{name}/rebuild` over the whole
//!    table, events/s until the rebuilt state serves; chDB builds the
//!    view's table from the same number of rows (INSERT … SELECT).
//! 5. Start-up with the projection: from its snapshot (a clean stop
//!    writes one), and with the snapshot deleted (folding the table).
//! 6. Start-up after `kill -9` with `--backlog` events acknowledged since
//!    the last snapshot: the replay a snapshot interval of ingest costs.
//!
//! cargo bench --bench projections -- [--requests 300] [--seconds 10]
//!     [--backlog 1000000]

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 1000;

fn projection_query(i: usize) -> String {
    format!(
        "SELECT entity_id, count(*) AS events, sum(amount) AS total, max(amount) AS top, \
         count(DISTINCT event_type) AS kinds FROM events WHERE event_type <> 'x{i}' GROUP BY entity_id"
    )
}

fn main() {
    let requests: usize = arg("--requests", 300);
    let seconds: f64 = arg("--seconds", 10.0);
    let tmp = tempfile::tempdir().unwrap();
    let server = BenchServer::start(tmp.path(), &[]);
    let api = Readers::new(&server.base, "projections");
    let url = format!("{}/v1/events", server.base);
    let bodies = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * BATCH) as u64, BATCH, 10_000, 1))
            .collect::<Vec<_>>(),
    );

    // 1. Ingest with 0, 1, 5 and 20 projections.
    let run = IngestCost {
        url: &url,
        bodies: bodies.clone(),
        batch: BATCH,
        requests,
        script: "chdb_views.py",
        peer: "views",
    };
    let base_rate = ingest_cost(
        &api,
        &[0, 1, 5, 20],
        |i| json!({"name": format!("p{i}"), "query": projection_query(i)}),
        &run,
    );

    // 2. Lag with one projection at half the maximum rate.
    let rate = base_rate / 2.0;
    let small = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * 100) as u64, 100, 10_000, 1))
            .collect::<Vec<_>>(),
    );
    let seen = poll_positions(format!("{}/v1/projections/p0", server.base));
    let mut acks = paced_ingest(&url, &small, 100, (rate * seconds / 100.0) as usize, rate);
    acks.sort_by_key(|(p, _)| *p);
    std::thread::sleep(Duration::from_millis(500));
    let (positions, stop) = seen;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let polled = positions.lock().unwrap().clone();
    let lags = ack_lags(&acks, &polled);
    let at = |p: f64| quantile(&lags, p) * 1e3;
    println!(
        "lag at {rate:.0} events/s (half the maximum, batches of 100, {} requests): p50 {:.2} ms, p99 {:.2} ms (chDB: views are updated inside the INSERT)",
        acks.len(),
        at(0.5),
        at(0.99)
    );

    // 3. Key lookups.
    let mut rng = Rng::new(11);
    let mut times: Vec<f64> = (0..2000)
        .map(|_| {
            let key = format!("u{}", rng.below(10_000));
            let t = Instant::now();
            let r = api
                .http
                .get(format!("{}/v1/projections/p0/state?key={key}", server.base))
                .send()
                .unwrap();
            assert!(r.status().is_success());
            r.bytes().unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize] * 1e3;
    let peer = python_json(
        "chdb_views.py",
        &[
            "ingest".as_ref(),
            "1".as_ref(),
            requests.to_string().as_ref(),
            BATCH.to_string().as_ref(),
        ],
    );
    let (c50, c99) = (
        peer["lookup_p50"].as_f64().unwrap() * 1e3,
        peer["lookup_p99"].as_f64().unwrap() * 1e3,
    );
    println!(
        "key lookup over HTTP: p50 {:.2} ms, p99 {:.2} ms | chDB, one view, in-process: p50 {c50:.2} ms, p99 {c99:.2} ms; ratio p99 {:.2}",
        at(0.5),
        at(0.99),
        at(0.99) / c99
    );

    // 4. Rebuild.
    let events = api.highest();
    let created = api.get("/v1/projections/p0")["created_ms"].clone();
    let t = Instant::now();
    assert_eq!(api.post("/v1/projections/p0/rebuild", json!({})).0, 202);
    loop {
        let info = api.get("/v1/projections/p0");
        if info["created_ms"] != created && info.get("next").is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed().as_secs_f64();
    let peer = python_json(
        "chdb_views.py",
        &["rebuild".as_ref(), events.to_string().as_ref()],
    );
    let peer_rate = peer["rate"].as_f64().unwrap();
    println!(
        "rebuild of {events} events: {:.0} events/s ({took:.2} s) | chDB builds the view's table at {peer_rate:.0} rows/s; ratio {:.3}",
        events as f64 / took,
        events as f64 / took / peer_rate
    );

    // 5. Start-up: from the snapshot a clean stop writes, then with the
    // snapshot deleted (folding the whole table).
    let dir = server.data_dir.clone();
    server.stop();
    for label in ["from its snapshot", "without a snapshot (folds the table)"] {
        if label.starts_with("without") {
            std::fs::remove_dir_all(dir.join("tables/default/_snapshots")).unwrap();
        }
        let t = Instant::now();
        let server = BenchServer::start(&dir, &["--projection-snapshot-interval", "0"]);
        let ready = t.elapsed();
        Readers::new(&server.base, "projections").caught_up();
        println!(
            "start-up with a projection over {events} events, {label}: ready in {:.2} s, caught up in {:.2} s",
            ready.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        server.stop();
    }

    // 6. Start-up after `kill -9`, `--backlog` events past the snapshot:
    // what one snapshot interval of ingest costs a restart.
    let backlog: usize = arg("--backlog", 1_000_000);
    let slow = ["--projection-snapshot-interval", "1h"];
    // Folded once more, then stopped cleanly: a snapshot at the highest
    // position.
    let server = BenchServer::start(&dir, &slow);
    Readers::new(&server.base, "projections").caught_up();
    server.stop();
    let mut server = BenchServer::start(&dir, &slow);
    Readers::new(&server.base, "projections").caught_up();
    let url = format!("{}/v1/events", server.base);
    let load = run_load(&url, bodies.clone(), BATCH, backlog / BATCH, 4, None);
    Readers::new(&server.base, "projections").caught_up();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let t = Instant::now();
    let server = BenchServer::start(&dir, &slow);
    let ready = t.elapsed().as_secs_f64();
    Readers::new(&server.base, "projections").caught_up();
    let caught_up = t.elapsed().as_secs_f64();
    println!(
        "start-up after kill -9 with {} events past the snapshot (ingested at {:.0} events/s): ready in {ready:.2} s, caught up in {caught_up:.2} s ({:.0} events/s folded after ready); a snapshot interval of I seconds at R events/s adds about I x R / that rate",
        load.events,
        load.rate(),
        load.events as f64 / (caught_up - ready).max(1e-3)
    );
    server.stop();
}
