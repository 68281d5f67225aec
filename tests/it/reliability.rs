//! Reliability of the write path under faults, through the real binary:
//! a retry is answered "duplicate" only once its original is durable, a
//! failed WAL write is rolled back without losing or poisoning anything, a
//! torn large record recovers in linear time, replayed batches are counted
//! once in the buffer, and a query's spill stays in its own capped
//! directory.
//!
//! Faults are injected with the `fail` crate's points in the WAL writer
//! (the test build has the `failpoints` feature), set by `FAILPOINTS`.

use crate::support::TestServer;
use serde_json::{Value, json};
use std::time::Duration;

/// A metric's value from `/metrics` (one without labels).
fn metric(s: &TestServer, name: &str) -> f64 {
    let text = s.get("/metrics").text();
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Waits until the server's start-up audit record is written: the WAL's
/// first write, which the fault counts in `FAILPOINTS` skip (`1*off->`).
fn past_startup_write(s: &TestServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // The audit table exists from its first write on.
    let written = || {
        let r = s.post(
            "/v1/sql",
            "text/plain",
            "SELECT count(*) AS n FROM system.audit",
        );
        r.status == 200 && r.json()[0]["n"] != json!(0)
    };
    while !written() {
        assert!(
            std::time::Instant::now() < deadline,
            "no start-up audit record"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count_id(s: &TestServer, id: &str) -> u64 {
    s.scalar(&format!(
        "SELECT count(*) FROM events WHERE event_id = '{id}'"
    ))
    .as_u64()
    .unwrap()
}

fn one(id: &str) -> String {
    json!([{"event_id": id, "event_type": "retry", "entity_id": "e1"}]).to_string()
}

/// Sends `first`, then, while its WAL write is held up by a delay
/// injected before it, sends the retry. Returns both replies.
fn race(
    s: &TestServer,
    first: String,
    retry: String,
) -> (crate::support::Reply, crate::support::Reply) {
    std::thread::scope(|scope| {
        let a = scope.spawn(|| s.post("/v1/events", "application/json", first));
        // Well inside the injected delay: the original's ids are claimed
        // and its record is waiting for the WAL.
        std::thread::sleep(Duration::from_millis(300));
        let b = s.post("/v1/events", "application/json", retry);
        (a.join().unwrap(), b)
    })
}

#[test]
fn a_retry_of_a_request_that_then_fails_is_stored() {
    // The first WAL write waits 1.5 s and then fails as a full disk does.
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_in_with_env(
        dir.path(),
        &[],
        &[(
            "FAILPOINTS",
            "wal-before-write=1*off->1*delay(1500);wal-write=1*off->1*return(enospc)",
        )],
    );
    past_startup_write(&s);
    let (a, b) = race(&s, one("x1"), one("x1"));
    assert_eq!(a.status, 507, "{}", a.text());
    assert!(a.error().contains("No space left"), "{}", a.text());
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(
        b.json()["accepted"],
        1,
        "the retry must store the event: {}",
        b.text()
    );
    assert_eq!(count_id(&s, "x1"), 1);
    // The failed write was rolled back: the WAL goes on.
    assert_eq!(s.get("/health").status, 200);
    assert_eq!(metric(&s, "allsource_wal_write_failures_total"), 1.0);
}

#[test]
fn a_duplicate_answer_means_the_original_survives_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in_with_env(
        dir.path(),
        &[],
        &[("FAILPOINTS", "wal-before-write=1*off->1*delay(1500)")],
    );
    past_startup_write(&s);
    let url = s.url("/v1/events");
    let a = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(one("x2"))
            .send()
    });
    std::thread::sleep(Duration::from_millis(300));
    let b = s.post("/v1/events", "application/json", one("x2"));
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.json()["duplicates"], 1, "{}", b.text());
    s.kill9();
    let _ = a.join();
    s.restart();
    assert_eq!(
        count_id(&s, "x2"),
        1,
        "the retry was answered duplicate, then lost"
    );
}

#[test]
fn a_failed_wal_write_is_refused_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in_with_env(
        dir.path(),
        &[],
        &[("FAILPOINTS", "wal-write=1*off->1*return(enospc)")],
    );
    past_startup_write(&s);
    let r = s.post("/v1/events", "application/json", one("lost"));
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        r.error().contains("nothing of this request was stored"),
        "{}",
        r.text()
    );
    // The same request again is stored: its id was released.
    for id in ["lost", "kept"] {
        let r = s.post("/v1/events", "application/json", one(id));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["accepted"], 1);
    }
    assert_eq!(s.get("/health").status, 200);
    s.kill9();
    s.restart();
    assert_eq!(count_id(&s, "lost"), 1);
    assert_eq!(count_id(&s, "kept"), 1);
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(2));
}

#[test]
fn a_torn_large_record_is_cut_quickly_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in(dir.path(), &["--flush-age", "1h"]);
    s.ingest(&json!([{"event_type": "small", "entity_id": "a"}]));
    // One large record: 100,000 events. Its string columns' offset
    // buffers are runs of little-endian integers up to the record's size,
    // each of which reads as a plausible record length: checksumming every
    // such candidate made recovery quadratic.
    let body: String = (0..100_000)
        .map(|i| {
            json!({"event_type": "big", "entity_id": format!("entity-{i:06}"),
                   "payload": {"s": format!("{i:060}")}})
            .to_string()
                + "\n"
        })
        .collect();
    let r = s.post("/v1/events", "application/x-ndjson", body);
    assert_eq!(r.status, 200, "{}", r.text());
    s.kill9();
    // Tear the big record as a crash in its write would.
    let wal = dir.path().join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    let seg = segs.pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len > 8_000_000, "the big record is in the newest segment");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 1_000_000)
        .unwrap();
    // restart() waits at most 30 s for readiness.
    s.restart();
    assert_eq!(
        s.sql("SELECT event_type FROM events"),
        vec![json!({"event_type": "small"})]
    );
}

#[test]
fn replayed_batches_are_counted_once_in_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in(
        dir.path(),
        &["--flush-age", "1h", "--flush-rows", "10000000"],
    );
    let events: Vec<Value> = (0..2_000)
        .map(|i| {
            let payload: serde_json::Map<String, Value> =
                (0..60).map(|k| (format!("k{k}"), json!(i * k))).collect();
            json!({"event_type": "wide", "entity_id": format!("e{i}"), "payload": payload})
        })
        .collect();
    s.ingest(&Value::Array(events));
    let before = metric(&s, "allsource_buffer_bytes");
    assert!(before > 0.0);
    s.kill9();
    s.restart();
    let after = metric(&s, "allsource_buffer_bytes");
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(2000));
    assert!(
        after <= before * 2.0 && after > 0.0,
        "buffered bytes {before} before the restart, {after} after replay"
    );
}

#[test]
fn a_query_spills_to_its_own_capped_directory() {
    const ROWS: u64 = 300_000;
    let spill = tempfile::tempdir().unwrap();
    let spill_dir = spill.path().to_str().unwrap();
    let pad = "p".repeat(100);
    let rows: Vec<String> = (0..ROWS)
        .map(|i| {
            json!({"event_type": "s", "entity_id": format!("entity-{:08}", (i * 7919) % ROWS),
                   "payload": {"v": i, "pad": pad}})
            .to_string()
                + "\n"
        })
        .collect();
    // A full sort of ~45 MB in one partition (one event type), under a
    // 48 MB budget: the sorts of the two partitions share about 21 MB of
    // it each, so the sort must spill, while the window above it, which
    // cannot spill, has the rest. (With a 32 MB budget the window's
    // buffers sometimes found it taken.) Only one row comes back.
    let sort = "SELECT max(rn) AS n FROM \
                (SELECT row_number() OVER (PARTITION BY event_type ORDER BY entity_id DESC, pad, v) AS rn \
                 FROM events)";
    for (cap, ok) in [("1", false), ("1073741824", true)] {
        let s = TestServer::start(&[
            "--query-memory-limit",
            "48000000",
            "--spill-dir",
            spill_dir,
            "--max-spill-bytes",
            cap,
        ]);
        // Many small requests: the buffer holds them as small batches,
        // which the sort can take one at a time.
        for chunk in rows.chunks(5_000) {
            let r = s.post("/v1/events", "application/x-ndjson", chunk.concat());
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let r = s.post("/v1/sql", "text/plain", sort);
        if ok {
            assert_eq!(
                r.status,
                200,
                "the sort spills within the cap: {}",
                r.text()
            );
            assert_eq!(r.json(), json!([{"n": ROWS}]));
        } else {
            assert!(
                (400..500).contains(&r.status) && r.text().contains("spill"),
                "a spill over the cap ({cap} bytes) is refused: {} {}",
                r.status,
                r.text()
            );
        }
        // Ingest is untouched by the reader's spill.
        assert_eq!(
            s.post("/v1/events", "application/json", one("after"))
                .status,
            200
        );
    }
}

fn ingest_ids(s: &TestServer, prefix: &str, n: usize) {
    for i in 0..n {
        let r = s.post(
            "/v1/events",
            "application/json",
            one(&format!("{prefix}{i}")),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

fn exactly(s: &TestServer, n: u64) {
    let rows = s.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events");
    assert_eq!(rows[0]["n"], json!(n), "{rows:?}");
    assert_eq!(rows[0]["d"], json!(n), "{rows:?}");
}

#[test]
fn failed_flushes_are_retried_without_loss_or_duplicates() {
    for point in ["flush-write", "flush-after-commit", "flush-fsync"] {
        let dir = tempfile::tempdir().unwrap();
        let failpoints = format!("{point}=3*return");
        let mut s = TestServer::start_in_with_env(
            dir.path(),
            &["--flush-age", "50ms"],
            &[("FAILPOINTS", failpoints.as_str())],
        );
        ingest_ids(&s, "f", 10);
        // Three flushes fail at the point; a later one gets through.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while metric(&s, "allsource_buffer_rows") > 0.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{point}: never flushed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(s.log().contains("flush failed"), "{point} was not hit");
        exactly(&s, 10);
        s.kill9();
        s.restart();
        exactly(&s, 10);
    }
}

#[test]
fn a_failed_wal_fsync_stops_writes_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in_with_env(
        dir.path(),
        &["--flush-age", "1h"],
        &[("FAILPOINTS", "wal-fsync=2*off->1*return")],
    );
    past_startup_write(&s);
    ingest_ids(&s, "a", 1);
    // The second write's fsync fails: after it nothing proves what the
    // disk holds, so the log takes no more writes.
    let r = s.post("/v1/events", "application/json", one("b"));
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(s.get("/health").status, 503);
    let r = s.post("/v1/events", "application/json", one("c"));
    assert!(r.status >= 500, "{}", r.text());
    s.kill9();
    s.restart();
    assert_eq!(count_id(&s, "a0"), 1);
    assert_eq!(count_id(&s, "c"), 0);
    ingest_ids(&s, "d", 1);
}

#[test]
fn a_wal_fsync_that_finds_the_disk_full_is_rolled_back_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in_with_env(
        dir.path(),
        &["--flush-age", "1h"],
        &[("FAILPOINTS", "wal-fsync=2*off->1*return(enospc)")],
    );
    past_startup_write(&s);
    ingest_ids(&s, "a", 1);
    // The second write's fsync runs out of space: the write is cut back
    // and refused, and the log takes the next one.
    let r = s.post("/v1/events", "application/json", one("b"));
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.error().contains("No space left"), "{}", r.text());
    assert_eq!(s.get("/health").status, 200);
    for id in ["c", "b"] {
        let r = s.post("/v1/events", "application/json", one(id));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    }
    s.kill9();
    s.restart();
    for id in ["a0", "b", "c"] {
        assert_eq!(count_id(&s, id), 1, "{id}");
    }
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(3));
}

#[test]
fn a_failed_wal_rotation_keeps_appending_to_the_current_segment() {
    // Small segments, so nearly every request starts a new one; three
    // rotations in a row fail (the first, at start-up, is let through).
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in_with_env(
        dir.path(),
        &["--wal-segment-bytes", "4096", "--flush-age", "1h"],
        &[("FAILPOINTS", "wal-rotate=1*off->3*return(enospc)")],
    );
    let pad = "r".repeat(3000);
    for i in 0..8 {
        let body = json!([{"event_id": format!("rot{i}"), "event_type": "t", "entity_id": "e",
                           "payload": {"pad": pad}}]);
        let r = s.post("/v1/events", "application/json", body.to_string());
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(s.get("/health").status, 200);
    assert!(
        s.log().contains("cannot start a new WAL segment"),
        "the failed rotations are logged"
    );
    s.kill9();
    s.restart();
    for i in 0..8 {
        assert_eq!(count_id(&s, &format!("rot{i}")), 1, "rot{i}");
    }
    let segments = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
    assert!(
        segments >= 2,
        "rotation resumed after the failures: {segments} segments"
    );
}
