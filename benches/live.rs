//! Live-stream bench: how soon an acknowledged event reaches a live
//! WebSocket subscriber, how fast one subscriber reads, and whether
//! subscribers that stop reading slow ingest down.
//!
//! 1. The maximum ingest rate: batches of 100 events over 4 connections.
//! 2. Latency at half that rate: writers ingest batches of 100 at a steady
//!    pace; a WebSocket subscriber (`start=now`) notes when each position
//!    arrives. Latency is arrival minus the writer's acknowledgement, per
//!    request (p50, p99). DuckDB, the peer, has no live subscriptions: its
//!    users poll. `duckdb_poll.py` inserts the same batches at the same
//!    pace into a DuckDB table and polls it every 10 ms for new rows in
//!    another connection; the ratio is AllSource / DuckDB.
//! 3. Subscriber throughput: one WebSocket subscriber reads a stored
//!    backlog (`start=earliest`), JSON pages and Arrow messages; DuckDB
//!    reads the same number of rows by pages of 1,000 (`WHERE position >
//!    ? ORDER BY position LIMIT 1000`) in the same run.
//! 4. Ingest beside two subscribers that stop reading, against ingest
//!    beside none: the ratio should stay within 10%.
//!
//! cargo bench --bench live -- [--seconds 20] [--backlog 1000000]

mod common;

use common::*;
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const BATCH: usize = 100;

fn main() {
    let seconds: f64 = arg("--seconds", 20.0);
    let backlog: usize = arg("--backlog", 1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let server = BenchServer::start(tmp.path(), &[]);
    let url = format!("{}/v1/events", server.base);
    let bodies = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * BATCH) as u64, BATCH, 10_000, 1))
            .collect::<Vec<_>>(),
    );

    // 1. The maximum rate.
    let load = run_load(&url, bodies.clone(), BATCH, 3000, 4, None);
    let max_rate = load.rate();
    println!("maximum ingest rate: {max_rate:.0} events/s (batches of {BATCH}, 4 connections)");

    // 2. Latency at half of it (and, for the shape of the curve, at a
    // quarter).
    let ws_base = server.base.replacen("http://", "ws://", 1);
    for fraction in [0.5, 0.25] {
        let rate = max_rate * fraction;
        let arrivals = subscribe_and_note(&format!("{ws_base}/v1/stream?table=events&start=now"));
        std::thread::sleep(Duration::from_millis(500));
        let requests = (rate * seconds / BATCH as f64) as usize;
        let acks = paced_ingest(&url, &bodies, BATCH, requests, rate);
        std::thread::sleep(Duration::from_secs(1));
        let arrived = arrivals.lock().unwrap().clone();
        let mut latencies = latencies(&acks, &arrived);
        let (p50, p99) = percentiles(&mut latencies);
        println!(
            "delivery latency at {rate:.0} events/s ({fraction} of the maximum, {} requests): p50 {:.2} ms, p99 {:.2} ms",
            acks.len(),
            p50 * 1e3,
            p99 * 1e3
        );
        let poll = python_json(
            "duckdb_poll.py",
            &[
                "latency".as_ref(),
                format!("{rate}").as_ref(),
                BATCH.to_string().as_ref(),
                format!("{seconds}").as_ref(),
            ],
        );
        let (dp50, dp99) = (poll["p50"].as_f64().unwrap(), poll["p99"].as_f64().unwrap());
        println!(
            "  duckdb (insert, poll every 10 ms): p50 {:.2} ms, p99 {:.2} ms; ratio AllSource/DuckDB p50 {:.2}, p99 {:.2}",
            dp50 * 1e3,
            dp99 * 1e3,
            p50 / dp50,
            p99 / dp99
        );
    }

    // 3. Throughput of one subscriber over a stored backlog.
    let table_load = format!("{}/v1/events?table=backlog", server.base);
    run_load(&table_load, bodies.clone(), BATCH, backlog / BATCH, 4, None);
    for format in ["json", "arrow"] {
        let t = Instant::now();
        let n = read_backlog(
            &format!("{ws_base}/v1/stream?table=backlog&start=earliest&format={format}"),
            backlog,
        );
        let rate = n as f64 / t.elapsed().as_secs_f64();
        println!("one subscriber, {format}: {n} events at {rate:.0} events/s");
    }
    let read = python_json(
        "duckdb_poll.py",
        &["backlog".as_ref(), backlog.to_string().as_ref()],
    );
    println!(
        "duckdb, pages of 1,000 by position: {:.0} rows/s",
        read["rate"].as_f64().unwrap()
    );

    // 4. Ingest beside subscribers that stop reading, between two runs
    // beside none (the table grows as the bench goes).
    let ingest = || {
        median_time(3, || {
            run_load(&url, bodies.clone(), BATCH, 1000, 4, None);
        })
    };
    let before = ingest();
    let stalled: Vec<_> = (0..2)
        .map(|_| stall(&format!("{ws_base}/v1/stream?table=events&start=earliest")))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let beside = ingest();
    drop(stalled);
    std::thread::sleep(Duration::from_secs(1));
    let after = ingest();
    let alone = (before + after) / 2;
    println!(
        "ingest of 100,000 events: {:.3} s alone (mean of {:.3} before and {:.3} after), {:.3} s beside two stalled subscribers (ratio {:.2}); peak RSS {} MiB",
        alone.as_secs_f64(),
        before.as_secs_f64(),
        after.as_secs_f64(),
        beside.as_secs_f64(),
        beside.as_secs_f64() / alone.as_secs_f64(),
        server.peak_rss() >> 20
    );
    server.stop();
}

/// A subscriber on its own thread, noting the highest position of each
/// message and when it came.
fn subscribe_and_note(url: &str) -> Arc<Mutex<Vec<(u64, Instant)>>> {
    let noted = Arc::new(Mutex::new(Vec::new()));
    let (url, sink) = (url.to_string(), noted.clone());
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            while let Some(Ok(message)) = ws.next().await {
                let at = Instant::now();
                // A page ends with `],"position":N}`, N the last position
                // it covers: read that without parsing the page, so that
                // the client's own work stays out of the latency.
                if let Message::Text(text) = message
                    && text.starts_with("{\"events\"")
                    && let Some(key) = text.rfind("\"position\":")
                {
                    let digits: String = text[key + 11..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    sink.lock().unwrap().push((digits.parse().unwrap(), at));
                }
            }
        });
    });
    noted
}

/// For each acknowledged request, how long after its acknowledgement its
/// last event reached the subscriber (0 if it came first).
fn latencies(acks: &[(u64, Instant)], arrived: &[(u64, Instant)]) -> Vec<f64> {
    acks.iter()
        .filter_map(|(last, acked)| {
            let i = arrived.partition_point(|(p, _)| p < last);
            arrived
                .get(i)
                .map(|(_, at)| at.saturating_duration_since(*acked).as_secs_f64())
        })
        .collect()
}

fn percentiles(v: &mut [f64]) -> (f64, f64) {
    assert!(!v.is_empty(), "nothing arrived");
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// A runtime on the calling thread, for one WebSocket client.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Reads `n` events of a stream; returns how many came.
fn read_backlog(url: &str, n: usize) -> usize {
    let rt = runtime();
    rt.block_on(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut got = 0;
        while got < n {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                    got += frame["events"].as_array().map_or(0, Vec::len);
                }
                Some(Ok(Message::Binary(bytes))) => {
                    let reader = arrow::ipc::reader::StreamReader::try_new(
                        std::io::Cursor::new(bytes),
                        None,
                    )
                    .unwrap();
                    got += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        got
    })
}

/// A subscriber that reads nothing, until dropped.
fn stall(url: &str) -> std::sync::mpsc::Sender<()> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = runtime();
        let _ws = rt.block_on(tokio_tungstenite::connect_async(url)).unwrap();
        let _ = stopped.recv();
    });
    stop
}
