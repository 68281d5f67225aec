//! Live streams over WebSocket, read by a real client of another
//! implementation (Python `websockets`, `tests/python/ws_client.py`):
//! catch-up then live under concurrent ingest with no gap and no repeat,
//! the frame kinds, close codes for errors, credentials in the query
//! string, and a consumer that stops reading.

use crate::live::{Writers, acked_a, events};
use crate::support::{self, TestServer};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `ws_client.py ARGS` to its end and parses what it printed.
fn client(args: &[&str]) -> Value {
    let out = Command::new(support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/ws_client.py"
        ))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run python (set ALLSOURCE_TEST_PYTHON to a Python with websockets)");
    assert!(out.status.success(), "ws_client.py {args:?} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Starts `ws_client.py ARGS`; its output is read by [`finish`].
fn spawn_client(args: &[&str]) -> std::process::Child {
    Command::new(support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/ws_client.py"
        ))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn finish(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ws_client.py failed");
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn ws_url(s: &TestServer, query: &str) -> String {
    format!(
        "{}/v1/stream?{query}",
        s.base.replacen("http://", "ws://", 1)
    )
}

fn positions(v: &Value) -> Vec<u64> {
    v["positions"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

#[test]
fn a_websocket_catches_up_then_follows_ingest_with_no_gap_and_no_repeat() {
    let s = TestServer::start(&["--flush-rows", "40", "--flush-age", "50ms"]);
    let mut want: Vec<u64> = Vec::new();
    for r in 0..10 {
        want.extend(acked_a(&s.ingest(&events(r * 10, 10)), r * 10));
    }
    let (writers, requests) = (3, 20);
    let total = want.len() + writers * requests * 5;
    // One stream filters with SQL, the other with the DSL: the same events.
    let sql = spawn_client(&[
        "collect",
        &ws_url(
            &s,
            "table=events&start=earliest&filter=event_type%20%3D%20'a'&heartbeat_ms=200",
        ),
        &total.to_string(),
    ]);
    let dsl = spawn_client(&[
        "collect",
        &ws_url(
            &s,
            "table=events&start=earliest&where=%5B%22%3D%22%2C%22event_type%22%2C%22a%22%5D&heartbeat_ms=200",
        ),
        &total.to_string(),
    ]);
    want.extend(Writers::start(&s.base, writers, requests).join());
    want.sort();
    for (name, child) in [("filter", sql), ("where", dsl)] {
        let got = finish(child);
        assert_eq!(
            positions(&got),
            want,
            "{name}: every acknowledged match, in order, once: {got}"
        );
    }
}

#[test]
fn websocket_frames_are_pages_single_events_or_arrow_with_the_columns_asked() {
    let s = TestServer::start(&[]);
    let reply = s.ingest(&events(0, 6));
    let all: Vec<u64> = reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    let pages = client(&[
        "collect",
        &ws_url(
            &s,
            "table=events&start=earliest&columns=event_type,entity_id",
        ),
        "6",
    ]);
    assert_eq!(positions(&pages), all, "{pages}");
    assert_eq!(pages["pages"], 1, "one message for the page: {pages}");
    assert_eq!(
        pages["columns"],
        json!(["entity_id", "event_type", "position"]),
        "the columns asked for, and the position"
    );
    let single = client(&[
        "collect",
        &ws_url(&s, "table=events&start=earliest&batch=false"),
        "6",
    ]);
    assert_eq!(positions(&single), all);
    assert_eq!(single["pages"], 6, "one message per event: {single}");
    let arrow = client(&[
        "collect",
        &ws_url(
            &s,
            "table=events&start=earliest&format=arrow&columns=entity_id",
        ),
        "6",
    ]);
    assert_eq!(positions(&arrow), all, "{arrow}");
    assert_eq!(arrow["columns"], json!(["position", "entity_id"]));
    // Nothing new: heartbeats.
    let beats = client(&[
        "collect",
        &ws_url(&s, "table=events&heartbeat_ms=100"),
        "1",
        "0.6",
    ]);
    assert_eq!(beats["timed_out"], true);
    assert!(beats["heartbeats"].as_u64().unwrap() >= 3, "{beats}");
}

#[test]
fn websocket_errors_close_with_the_status_as_code_and_the_message_as_reason() {
    let s = support::hs_server();
    let reader = support::token("acme", "reader");
    s.post_as(
        "/v1/events",
        &support::token("acme", "writer"),
        "application/json",
        &events(0, 3).to_string(),
    );
    let url = |q: &str| ws_url(&s, q);
    for (query, code, needle) in [
        ("table=events".to_string(), 4401, "bearer token"),
        ("table=events&token=nonsense".into(), 4401, ""),
        (
            format!("table=events&token={reader}&tenant=other"),
            4403,
            "own tenant",
        ),
        (format!("table=nope&token={reader}"), 4404, "does not exist"),
        (
            format!("table=events&token={reader}&filter=no_such_column%20%3E%201"),
            4400,
            "no_such_column",
        ),
        (
            format!("table=events&token={reader}&where=%5B%22%3D%3D%22%5D"),
            4400,
            "where",
        ),
        (
            format!("table=events&token={reader}&format=xml"),
            4400,
            "format",
        ),
        (
            format!("table=events&token={reader}&start=yesterday"),
            4400,
            "earliest, now",
        ),
    ] {
        let closed = client(&["close", &url(&query), "10"]);
        assert_eq!(closed["code"], code, "{query}: {closed}");
        assert!(
            closed["reason"].as_str().unwrap().contains(needle),
            "{query}: {closed}"
        );
    }
    // The token in the query string is enough for a browser's socket.
    let ok = client(&[
        "collect",
        &url(&format!("table=events&start=earliest&token={reader}")),
        "3",
    ]);
    assert_eq!(positions(&ok).len(), 3, "{ok}");
}

#[test]
fn a_consumer_that_stops_reading_neither_slows_ingest_nor_holds_memory() {
    let s = TestServer::start(&["--flush-rows", "2000"]);
    // Events of about 2 KB: the stalled streams fall far more behind than
    // any socket buffer holds.
    let big = |n: usize| {
        Value::Array(
            (0..n)
                .map(|i| {
                    json!({"event_type": "big", "entity_id": format!("u{i}"),
                               "payload": {"text": "x".repeat(2000)}})
                })
                .collect(),
        )
    };
    let batch = big(500);
    let seed = s.ingest(&big(1))["last_position"].as_u64().unwrap();
    // Three phases of 20,000 events. (Ingest's speed beside stalled
    // streams is compared in benches/live.rs: timings do not belong in
    // tests.)
    let per_phase = 20_000;
    let ingest = || {
        for _ in 0..per_phase / 500 {
            s.ingest(&batch);
        }
    };
    // A subscriber reads throughout: first beside nothing else, then
    // beside two streams that stop reading.
    let reader = spawn_client(&[
        "collect",
        &ws_url(
            &s,
            &format!("table=events&start=after:{seed}&heartbeat_ms=200"),
        ),
        &(3 * per_phase).to_string(),
        "300",
    ]);
    ingest();
    // What ingest alone adds to the server's memory, then what it adds
    // beside the stalled streams.
    let rss_start = s.rss();
    ingest();
    let rss_before = s.rss();
    // One falls back to storage (the default), the other asked to be
    // dropped when it falls behind.
    let stalled = spawn_client(&["stall", &ws_url(&s, "table=events&start=earliest"), "30"]);
    let dropped = spawn_client(&[
        "stall",
        &ws_url(&s, "table=events&start=earliest&on_slow=drop&max_lag=5000"),
        "30",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    ingest();
    let got = finish(reader);
    let live = positions(&got);
    assert_eq!(
        live.len(),
        3 * per_phase,
        "the reader got every event: {}",
        got["timed_out"]
    );
    assert!(live.windows(2).all(|w| w[0] < w[1]));
    // Each stalled stream is some 120 MB behind; the server holds at most
    // a page for each.
    let alone = rss_before.saturating_sub(rss_start);
    let grown = s.rss().saturating_sub(rss_before);
    println!(
        "server memory grew by {} MiB beside stalled streams, {} MiB without",
        grown >> 20,
        alone >> 20
    );
    // Each stalled stream holds at most a large page (4,000 events, some
    // 8 MB, and its JSON) and the socket's buffers: far less than the
    // 120 MB each is behind.
    assert!(
        grown < alone + (128 << 20),
        "memory grew by {} MiB beside stalled streams, {} MiB without",
        grown >> 20,
        alone >> 20
    );
    let dropped = finish(dropped);
    assert_eq!(dropped["closed"]["code"], 4900, "{dropped}");
    assert!(
        dropped["closed"]["reason"]
            .as_str()
            .unwrap()
            .contains("too slow"),
        "{dropped}"
    );
    let stalled = finish(stalled);
    assert_eq!(stalled["closed"], Value::Null, "{stalled}");
}
