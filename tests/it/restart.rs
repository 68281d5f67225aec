//! Restarts keep every event: after a clean stop and after kill -9.

use crate::support::{TestServer, events};
use serde_json::json;

#[test]
fn clean_stop_flushes_and_restart_keeps_everything() {
    let mut s = TestServer::start(&["--flush-age", "1h"]);
    s.ingest(&events("a", 100));
    s.stop();
    // Everything is in Delta: the WAL holds no records any more.
    let wal_bytes: u64 = std::fs::read_dir(s.data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(wal_bytes <= 16 * 2, "WAL not emptied: {wal_bytes} bytes");
    s.restart();
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(100));
    assert_eq!(s.scalar("SELECT sum(n) FROM events"), json!(4950.0));
}

#[test]
fn kill9_before_any_flush_loses_nothing() {
    let mut s = TestServer::start(&["--flush-age", "1h"]);
    s.ingest(&events("a", 100));
    s.kill9();
    s.restart();
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(100));
    // and again: replayed events that were flushed are not replayed twice
    s.stop();
    s.restart();
    s.kill9();
    s.restart();
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(100));
}

#[test]
fn not_ready_while_the_wal_replays() {
    let mut s = TestServer::start(&["--flush-age", "1h", "--flush-rows", "10000000"]);
    let batch: String = (0..50_000)
        .map(|i| {
            json!({"event_type": "a", "entity_id": format!("u{i}"), "payload": {"n": i}})
                .to_string()
                + "\n"
        })
        .collect();
    for _ in 0..6 {
        let r = s.post("/v1/events", "application/x-ndjson", batch.clone());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    s.kill9();
    s.restart_unready();
    // The port answers at once; replaying 300K events takes a while.
    let first = s.get("/ready");
    assert_eq!(first.status, 503, "{}", first.text());
    assert!(
        first
            .error()
            .contains("the server is starting: recovering its tables"),
        "{}",
        first.text()
    );
    assert_eq!(first.headers["retry-after"], "1");
    let r = s.post("/v1/sql", "text/plain", "SELECT 1");
    assert!(r.status == 503 || r.status == 200, "{}", r.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.get("/ready").status != 200 {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        let h = s.get("/health");
        assert_eq!(h.status, 200, "health during replay: {}", h.text());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(300_000));
}
