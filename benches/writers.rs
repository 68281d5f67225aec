//! Several writers bench: HTTP NDJSON ingest (10K-event bodies, 4
//! connections in all) into one table on a shared local storage root,
//! first by one writer (`--node-id 1`), then by two writers (`--node-id 1`
//! and `2`, two connections each) at once, alternating for three rounds,
//! each round on a fresh root. Prints each run's acknowledged events/s,
//! the median of each and the ratio two/one, then checks that each
//! writer reads every event of the round once the flushes are in.
//!
//! There is no peer here: no engine a user would pick instead takes
//! ingest from several writers into one open table format. And one
//! machine cannot show a speed-up: the two writers share its two cores,
//! and each does the work one would, besides refreshing its view of the
//! other's commits.
//!
//! cargo bench --bench writers -- [--events 4000000] [--rounds 3]

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let events: usize = arg("--events", 4_000_000);
    let rounds: usize = arg("--rounds", 3);
    let batch = 10_000;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * batch) as u64, batch, 200_000, 30))
            .collect(),
    );
    let requests = events / batch;
    println!(
        "writers: {} events per run in bodies of {batch}, 4 connections in all, {rounds} rounds",
        requests * batch
    );
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let rate = run(1, requests, batch, &bodies);
        println!("round {round}: one writer  {rate:>10.0} events/s");
        one.push(rate);
        let rate = run(2, requests, batch, &bodies);
        println!("round {round}: two writers {rate:>10.0} events/s");
        two.push(rate);
    }
    let (one, two) = (median(&mut one), median(&mut two));
    println!("median     : one writer {one:.0}, two writers {two:.0} events/s");
    println!("ratio two/one: {:.2}", two / one);
}

/// One run: `writers` servers on a fresh shared root take `requests`
/// bodies between them; returns the acknowledged events/s over the
/// whole run, after checking that every writer reads them all.
fn run(writers: usize, requests: usize, batch: usize, bodies: &Arc<Vec<Vec<u8>>>) -> f64 {
    let root = tempfile::tempdir().unwrap();
    let root_url = root.path().join("tables").display().to_string();
    let dirs: Vec<_> = (0..writers).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers: Vec<BenchServer> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let node = (i + 1).to_string();
            BenchServer::start(
                dir.path(),
                &["--storage-url", &root_url, "--node-id", &node],
            )
        })
        .collect();
    let started = Instant::now();
    let loads: Vec<_> = servers
        .iter()
        .map(|s| {
            let url = format!("{}/v1/events?table=load", s.base);
            let bodies = bodies.clone();
            let share = requests / writers;
            std::thread::spawn(move || run_load(&url, bodies, batch, share, 4 / writers, None))
        })
        .collect();
    let acked: usize = loads.into_iter().map(|l| l.join().unwrap().events).sum();
    let rate = acked as f64 / started.elapsed().as_secs_f64();
    // Every writer reads every acknowledged event once the others' flushes
    // are in (flush age 10 s, refresh 1 s).
    let http = reqwest::blocking::Client::new();
    for s in &servers {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = query(&http, &s.base, "SELECT count(*) AS n FROM load");
            let n: serde_json::Value = serde_json::from_str(&text).unwrap();
            if n[0]["n"].as_u64() == Some(acked as u64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a writer reads {text}, not {acked} events"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for s in servers {
        s.stop();
    }
    rate
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
