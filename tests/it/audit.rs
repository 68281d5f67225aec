//! The audit log under floods, through HTTP: refusal records are
//! throttled like authentication failures, and no record is written while
//! the ingest buffers are over `--max-buffer-bytes`.

use crate::support::{TestServer, events};
use std::time::{Duration, Instant};

/// Audit records of refusals per second (the burst is as large).
const AUDIT_RATE: f64 = 50.0;

const DDL: &str = "CREATE TABLE t (a INT)";

fn refused_ddl_records(s: &TestServer) -> f64 {
    s.scalar("SELECT count(*) FROM system.audit WHERE event_type = 'ddl_refused'")
        .as_f64()
        .unwrap()
}

#[test]
fn refused_ddl_records_are_throttled() {
    let s = TestServer::start(&[]);
    let sent = 400;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..sent / 4 {
                    let r = s.post("/v1/sql", "text/plain", DDL);
                    assert_eq!(r.status, 400, "{}", r.text());
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    // Every refusal is either written or counted as dropped; wait for the
    // background writes to land.
    let dropped = "allsource_audit_dropped_total{reason=\"rate\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = loop {
        let written = refused_ddl_records(&s);
        if written + s.metric(dropped) >= sent as f64 {
            break written;
        }
        assert!(Instant::now() < deadline, "audit writes never finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    let allowed = AUDIT_RATE + (AUDIT_RATE * elapsed).ceil() + 1.0;
    assert!(
        written <= allowed,
        "{written} of {sent} refusals written in {elapsed:.2} s; at most {allowed} may be"
    );
    assert!(s.metric(dropped) > 0.0);
}

#[test]
fn audit_records_are_dropped_while_the_buffers_are_full() {
    // Every flush empties the buffer, so it is over its 1-byte limit from
    // each ingest until the flusher has written it out.
    let s = TestServer::start(&["--max-buffer-bytes", "1", "--flush-age", "1h"]);
    let dropped = "allsource_audit_dropped_total{reason=\"buffer_full\"}";
    let big = events("a", 20_000).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.metric(dropped) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no audit record was ever dropped for a full buffer"
        );
        // 503 while the last batch is still being flushed: that is fine.
        let r = s.post("/v1/events", "application/json", big.clone());
        assert!(r.status == 200 || r.status == 503, "{}", r.text());
        // The refusal itself is answered at once, whatever the buffer.
        let r = s.post("/v1/sql", "text/plain", DDL);
        assert_eq!(r.status, 400, "{}", r.text());
    }
}
