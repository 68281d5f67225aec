//! The ingest memory budget, through HTTP: bodies that are small on the
//! wire but huge once decompressed or laid out as a batch are refused
//! before they take the memory, and the server's peak memory stays within
//! the budget.

use crate::support::{Reply, TestServer, events};
use serde_json::json;
use std::io::Write;

/// The budget the server runs with here, and what one request may take.
const BUDGET: u64 = 256 << 20;
const PER_REQUEST: u64 = 128 << 20;

/// What the server's peak memory may grow by, beyond the budget: decoder
/// states, connection buffers, thread stacks and allocator slack (measured
/// growth beyond the budget was well under half of it).
const OVERHEAD: u64 = 128 << 20;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// NDJSON of 99,000 events whose payloads hold 993 distinct keys between
/// them (one each): 6 MB of text, 250 KB gzipped, but as a batch 99,000
/// rows × 993 columns.
fn sparse_body() -> Vec<u8> {
    let mut text = String::new();
    for i in 0..99_000 {
        text.push_str(
            &json!({"event_type": "a", "entity_id": "u", "payload": {format!("k{}", i % 993): 1}})
                .to_string(),
        );
        text.push('\n');
    }
    gzip(text.as_bytes())
}

/// A 413 or a 503 (with Retry-After), each saying what was wrong.
fn refused(r: &Reply, case: &str) {
    match r.status {
        413 => assert!(
            r.error().contains("--max-ingest-request-bytes")
                || r.error().contains("after decompression"),
            "{case}: {}",
            r.error()
        ),
        503 => {
            assert_eq!(r.headers.get("retry-after").unwrap(), "1", "{case}");
            assert!(
                r.error().contains("--ingest-memory-budget"),
                "{case}: {}",
                r.error()
            );
        }
        other => panic!("{case}: status {other}: {}", r.text()),
    }
}

#[test]
fn bombs_and_sparse_bodies_are_refused_within_the_budget() {
    let s = TestServer::start(&[
        "--ingest-memory-budget",
        &BUDGET.to_string(),
        "--max-ingest-request-bytes",
        &PER_REQUEST.to_string(),
    ]);
    s.ingest(&events("warm", 1000));
    let baseline = s.peak_rss();

    // 24 gzip bombs at once: 66 KB each, 65 MiB of spaces decompressed
    // (over --max-body-bytes).
    let bomb = gzip(&vec![b' '; 65 << 20]);
    assert!(bomb.len() < 100 << 10, "{} bytes", bomb.len());
    let gzip_json = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..24)
            .map(|_| scope.spawn(|| s.post_with("/v1/events", &gzip_json, bomb.clone())))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for r in &replies {
        refused(r, "gzip bomb");
    }

    // Sparse keys: refused before the batch is built, naming its shape.
    let sparse = sparse_body();
    let gzip_ndjson = [
        ("content-type", "application/x-ndjson"),
        ("content-encoding", "gzip"),
    ];
    let r = s.post_with("/v1/events", &gzip_ndjson, sparse.clone());
    assert_eq!(r.status, 413, "{}", r.text());
    let error = r.error();
    assert!(
        error.contains("99000 events × 993 payload columns")
            && error.contains(&PER_REQUEST.to_string()),
        "{error}"
    );
    // Three at once.
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| s.post_with("/v1/events", &gzip_ndjson, sparse.clone())))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for r in &replies {
        refused(r, "sparse keys");
    }

    let peak = s.peak_rss();
    assert!(
        peak.saturating_sub(baseline) < BUDGET + OVERHEAD,
        "peak memory grew by {} MiB (from {} MiB); the budget is {} MiB",
        (peak - baseline) >> 20,
        baseline >> 20,
        BUDGET >> 20
    );

    // Nothing of the refused requests was stored, and ingest goes on.
    let r = s.ingest(&events("after", 500));
    assert_eq!(r["accepted"], json!(500));
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(1500));
}

#[test]
fn one_request_that_needs_more_than_its_share_gets_413() {
    // An uncompressed body: what its events take once parsed counts too.
    let s = TestServer::start(&["--max-ingest-request-bytes", "4000000"]);
    let r = s.post(
        "/v1/events",
        "application/json",
        events("a", 20_000).to_string(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.error()
            .contains("parsing the request's events needs more than 4000000 bytes"),
        "{}",
        r.error()
    );
    let r = s.ingest(&events("a", 2_000));
    assert_eq!(r["accepted"], json!(2_000));
}
