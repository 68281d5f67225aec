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
