//! The crash test: concurrent ingest clients, `kill -9` at random moments,
//! restart; every acknowledged event is there exactly once, with the
//! position and version it was acknowledged with.

use crate::support::TestServer;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
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
    // Event id → the (position, version) its acknowledgement gave.
    let acked: Arc<Mutex<HashMap<String, (u64, u64)>>> = Default::default();
    // Per client, the positions acknowledged, in the order of the acks.
    let order: Arc<Mutex<Vec<Vec<u64>>>> = Arc::new(Mutex::new(vec![Vec::new(); CLIENTS]));
    let sent: Arc<Mutex<HashSet<String>>> = Default::default();
    let mut rng = rand::rng();
    for iteration in 0..iterations() {
        let base = s.base.clone();
        let run_for = Duration::from_millis(rng.random_range(50..400));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (acked, sent, order) = (acked.clone(), sent.clone(), order.clone());
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
                                let reply: Value = r.json().unwrap();
                                let stamps: Vec<(u64, u64)> = reply["events"]
                                    .as_array()
                                    .unwrap()
                                    .iter()
                                    .map(|e| {
                                        (e["position"].as_u64().unwrap(), e["version"].as_u64().unwrap())
                                    })
                                    .collect();
                                assert_eq!(stamps.len(), ids.len(), "{reply}");
                                order.lock().unwrap()[client].extend(stamps.iter().map(|s| s.0));
                                acked.lock().unwrap().extend(ids.into_iter().zip(stamps));
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
    let rows = s.sql("SELECT event_id, position, version FROM events");
    let stored_stamps: HashMap<&str, (u64, u64)> = rows
        .iter()
        .map(|r| {
            let stamp = (
                r["position"].as_u64().unwrap(),
                r["version"].as_u64().unwrap(),
            );
            (r["event_id"].as_str().unwrap(), stamp)
        })
        .collect();
    let ids: HashSet<&str> = stored_stamps.keys().copied().collect();
    let missing: Vec<_> = acked
        .keys()
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
    // Each acknowledged event has the position and version it was
    // acknowledged with; positions are never reused, and each client's
    // acknowledgements came in increasing positions, across restarts.
    let moved: Vec<_> = acked
        .iter()
        .filter(|(id, stamp)| stored_stamps[id.as_str()] != **stamp)
        .take(5)
        .collect();
    assert!(moved.is_empty(), "stamps changed after the ack: {moved:?}");
    let positions: HashSet<u64> = stored_stamps.values().map(|s| s.0).collect();
    assert_eq!(positions.len(), rows.len(), "a position was given twice");
    for (client, seen) in order.lock().unwrap().iter().enumerate() {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "client {client}'s positions did not increase"
        );
    }
    // Every entity's versions run 1..=n without a gap.
    let streams = s.sql(
        "SELECT entity_id, count(*) AS n, count(DISTINCT version) AS d, min(version) AS lo, \
         max(version) AS hi FROM events GROUP BY entity_id",
    );
    for st in &streams {
        assert_eq!(st["n"], st["d"], "a version repeats: {st}");
        assert_eq!(st["lo"], 1, "{st}");
        assert_eq!(st["hi"], st["n"], "versions have a gap: {st}");
    }
    eprintln!(
        "crash: {} kill -9 cycles, {} events acknowledged, {} stored, 0 lost, 0 twice, 0 invented, every position and version as acknowledged",
        iterations(),
        acked.len(),
        n
    );
}
