//! The crash test: concurrent ingest clients, `kill -9` at random moments,
//! restart; every acknowledged event is there exactly once.

use crate::support::TestServer;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kill/restart cycles; `ALLSOURCE_CRASH_ITERATIONS` raises it for the soak
/// run (benches/crash_soak.sh).
fn iterations() -> usize {
    std::env::var("ALLSOURCE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}
const CLIENTS: usize = 4;

#[test]
fn kill9_under_concurrent_ingest_loses_and_duplicates_nothing() {
    // Small flush thresholds so kills land before, during and after flushes,
    // and small WAL segments so truncation is exercised too.
    let mut s = TestServer::start(&[
        "--flush-rows",
        "300",
        "--flush-age",
        "30ms",
        "--wal-segment-bytes",
        "20000",
    ]);
    let acked: Arc<Mutex<HashSet<String>>> = Default::default();
    let sent: Arc<Mutex<HashSet<String>>> = Default::default();
    let mut rng = rand::rng();
    for iteration in 0..iterations() {
        let base = s.base.clone();
        let run_for = Duration::from_millis(rng.random_range(50..400));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (acked, sent) = (acked.clone(), sent.clone());
                let url = format!("{base}/v1/events");
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    let start = Instant::now();
                    let mut req = 0;
                    loop {
                        let ids: Vec<String> = (0..25)
                            .map(|i| format!("it{iteration}-c{client}-r{req}-{i}"))
                            .collect();
                        let body: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"event_id": id, "event_type": "crash", "entity_id": format!("c{client}"), "payload": {"req": req}}))
                            .collect();
                        req += 1;
                        sent.lock().unwrap().extend(ids.iter().cloned());
                        match http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(Value::Array(body).to_string())
                            .send()
                        {
                            Ok(r) if r.status().is_success() => {
                                acked.lock().unwrap().extend(ids);
                            }
                            Ok(r) if r.status().as_u16() == 503 => {
                                std::thread::sleep(Duration::from_millis(10))
                            }
                            Ok(r) => panic!("unexpected status {}", r.status()),
                            // the server died under us
                            Err(_) => return,
                        }
                        if start.elapsed() > run_for * 4 {
                            return;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(run_for);
        s.kill9();
        for h in handles {
            h.join().unwrap();
        }
        s.restart();
    }
    let stored = s.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events");
    let n = stored[0]["n"].as_u64().unwrap();
    assert_eq!(
        n,
        stored[0]["d"].as_u64().unwrap(),
        "an event is stored twice"
    );
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 500,
        "too little was acknowledged: {}",
        acked.len()
    );
    let rows = s.sql("SELECT event_id FROM events");
    let ids: HashSet<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged events lost: {missing:?} (of {})",
        acked.len()
    );
    // Events of requests the kill cut off may be stored unacknowledged;
    // nothing else may appear.
    let sent = sent.lock().unwrap();
    let invented: Vec<_> = ids
        .iter()
        .filter(|id| !sent.contains(**id))
        .take(5)
        .collect();
    assert!(invented.is_empty(), "events never sent: {invented:?}");
    eprintln!(
        "crash: {} kill -9 cycles, {} events acknowledged, {} stored, 0 lost, 0 twice, 0 invented",
        iterations(),
        acked.len(),
        n
    );
}
