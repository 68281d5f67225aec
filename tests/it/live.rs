//! Live streams (`GET /v1/stream`): a table's stored events, then each new
//! one as it is acknowledged, in position order, with no gap and no
//! repeat, filtered; heartbeats; refusals before anything is sent.

use crate::support::TestServer;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

/// The frames of an open stream, one parsed line at a time.
pub(crate) struct Frames(std::io::Lines<BufReader<reqwest::blocking::Response>>);

pub(crate) fn open(s: &TestServer, query: &str) -> Frames {
    let r = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(format!("{}/v1/stream?{query}", s.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    Frames(BufReader::new(r).lines())
}

impl Frames {
    pub(crate) fn next(&mut self) -> Value {
        let line = self.0.next().expect("the stream ended").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The positions of the next `n` events (heartbeats skipped); fails
    /// if they do not come within a minute.
    fn positions(&mut self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while out.len() < n {
            let frame = self.next();
            if let Some(event) = frame.get("event") {
                out.push(event["position"].as_u64().unwrap());
            } else {
                assert!(frame.get("heartbeat").is_some(), "{frame}");
                assert!(
                    Instant::now() < deadline,
                    "{} of {n} events came: {out:?}",
                    out.len()
                );
            }
        }
        out
    }
}

pub(crate) fn events(from: usize, n: usize) -> Value {
    let events: Vec<Value> = (from..from + n)
        .map(|i| {
            json!({"event_id": format!("e{i}"), "event_type": if i.is_multiple_of(2) { "a" } else { "b" },
                   "entity_id": format!("u{}", i % 5)})
        })
        .collect();
    Value::Array(events)
}

/// Writers ingesting requests of ten [`events`] (from `e1000` on) on
/// threads of their own, keeping the positions acknowledged for events of
/// type `a`.
pub(crate) struct Writers(Vec<std::thread::JoinHandle<Vec<u64>>>);

impl Writers {
    /// `writers` threads of `requests` requests each.
    pub(crate) fn start(base: &str, writers: usize, requests: usize) -> Writers {
        Writers(
            (0..writers)
                .map(|w| {
                    let base = base.to_string();
                    std::thread::spawn(move || {
                        let http = reqwest::blocking::Client::new();
                        let mut acked = Vec::new();
                        for r in 0..requests {
                            let first = 1000 + (w * requests + r) * 10;
                            let reply: Value = http
                                .post(format!("{base}/v1/events"))
                                .header("content-type", "application/json")
                                .body(events(first, 10).to_string())
                                .send()
                                .unwrap()
                                .json()
                                .unwrap();
                            acked.extend(acked_a(&reply, first));
                        }
                        acked
                    })
                })
                .collect(),
        )
    }

    /// Waits for every writer; the acknowledged positions of type `a`.
    pub(crate) fn join(self) -> Vec<u64> {
        self.0.into_iter().flat_map(|t| t.join().unwrap()).collect()
    }
}

/// The positions of the acknowledged events of type `a`.
pub(crate) fn acked_a(reply: &Value, first: usize) -> Vec<u64> {
    reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(i, _)| (first + i).is_multiple_of(2))
        .map(|(_, e)| e["position"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_stream_catches_up_then_follows_ingest_with_no_gap_and_no_repeat() {
    // Small flushes: the stream reads from files and the buffer alike.
    let s = TestServer::start(&["--flush-rows", "40", "--flush-age", "50ms"]);
    let mut want: Vec<u64> = Vec::new();
    for r in 0..10 {
        want.extend(acked_a(&s.ingest(&events(r * 10, 10)), r * 10));
    }
    // Writers start, and the stream opens while they write: its catch-up
    // and its switch to live events both happen under ingest.
    let (writers, requests) = (3, 20);
    let writing = Writers::start(&s.base, writers, requests);
    let filter = "filter=event_type%20%3D%20'a'";
    let mut frames = open(
        &s,
        &format!("table=events&start=earliest&{filter}&heartbeat_ms=200"),
    );
    // Five events of type `a` in each request of ten.
    let got = frames.positions(want.len() + writers * requests * 5);
    want.extend(writing.join());
    want.sort();
    assert_eq!(got, want, "every acknowledged match, in order, once");
    // Nothing more: the next frame is a heartbeat at the last position
    // (or past it: unmatched events are passed over).
    let beat = frames.next();
    let at = beat["heartbeat"]["position"]
        .as_u64()
        .unwrap_or_else(|| panic!("{beat}"));
    assert!(at >= *want.last().unwrap(), "{beat}");
}

#[test]
fn a_stream_starts_now_after_a_position_or_at_a_time() {
    let s = TestServer::start(&[]);
    let first = s.ingest(&events(0, 4));
    let last = first["last_position"].as_u64().unwrap();
    let mut now = open(&s, "table=events&heartbeat_ms=100");
    let mut after = open(
        &s,
        &format!("table=events&start=after:{}&heartbeat_ms=100", last - 1),
    );
    let second = s.ingest(&events(4, 2));
    let new: Vec<u64> = (last + 1..=second["last_position"].as_u64().unwrap()).collect();
    assert_eq!(now.positions(2), new, "start=now: only what came after");
    let mut want = vec![last];
    want.extend(&new);
    assert_eq!(after.positions(3), want, "start=after:N: from N + 1");
    // A time: the events ingested at or after it.
    let at = s.sql("SELECT min(ingested_at) AS t FROM events WHERE event_id = 'e4'")[0]["t"]
        .as_str()
        .unwrap()
        .to_string();
    let mut since = open(&s, &format!("table=events&start={at}&heartbeat_ms=100"));
    assert_eq!(since.positions(2), new);
    let beat = since.next();
    assert_eq!(beat["heartbeat"]["position"], json!(new[1]), "{beat}");
}

#[test]
fn bad_streams_are_refused_before_anything_is_sent() {
    let s = TestServer::start(&["--max-subscriptions", "1"]);
    s.ingest(&events(0, 2));
    for (query, status, needle) in [
        ("table=nope", 404, "does not exist"),
        (
            "table=events&filter=no_such_column%20%3E%201",
            400,
            "no_such_column",
        ),
        (
            "table=events&filter=true%20ORDER%20BY%201",
            400,
            "one expression",
        ),
        ("table=events&start=yesterday", 400, "earliest, now"),
        ("table=events&heartbeat_ms=1", 400, "heartbeat_ms"),
        ("table=events&what=1", 400, "what"),
    ] {
        let r = s.get(&format!("/v1/stream?{query}"));
        assert_eq!(r.status, status, "{query}: {}", r.text());
        assert!(r.error().contains(needle), "{query}: {}", r.error());
    }
    // One subscription at a time for this tenant.
    let mut first = open(&s, "table=events&start=earliest&heartbeat_ms=100");
    assert_eq!(first.positions(2), vec![1, 2]);
    let r = s.get("/v1/stream?table=events");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.error().contains("--max-subscriptions"), "{}", r.error());
    // Closing it frees the place (once the server notices, at its next
    // heartbeat).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::blocking::Client::new()
            .get(s.url("/v1/stream?table=events&heartbeat_ms=100"))
            .send()
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
