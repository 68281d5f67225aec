//! Replay (`POST /v1/replay`, `GET /v1/replay` as a WebSocket, `allsource
//! replay`): a stored range delivered again in order, as fast as possible
//! or paced; in parallel with each entity in order; or into another table.

use crate::support::{self, TestServer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

fn events(from: usize, n: usize) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| {
                json!({"event_id": format!("e{i}"),
                       "event_type": if i.is_multiple_of(2) { "a" } else { "b" },
                       "entity_id": format!("u{}", i % 6), "payload": {"n": i}})
            })
            .collect(),
    )
}

/// Posts a replay; returns the NDJSON frames.
fn replay(s: &TestServer, body: Value) -> Vec<Value> {
    let r = s.post("/v1/replay", "application/json", body.to_string());
    assert_eq!(r.status, 200, "{body}: {}", r.text());
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn positions(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| f.get("event"))
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

fn done(frames: &[Value]) -> &Value {
    let last = frames.last().unwrap();
    last.get("done")
        .unwrap_or_else(|| panic!("the last frame: {last}"))
}

/// Four requests of ten events, 400 ms apart: the events span about
/// 1.2 s of ingest time.
fn spread(s: &TestServer) -> Vec<u64> {
    let mut all = Vec::new();
    for r in 0..4 {
        if r > 0 {
            std::thread::sleep(Duration::from_millis(400));
        }
        let reply = s.ingest(&events(r * 10, 10));
        all.extend(
            reply["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["position"].as_u64().unwrap()),
        );
    }
    all
}

#[test]
fn a_replay_delivers_its_range_in_order_as_fast_as_possible_or_paced() {
    let s = TestServer::start(&["--flush-rows", "15"]);
    let all = spread(&s);
    // A position range and a filter.
    let frames = replay(
        &s,
        json!({"table": "events", "from": "after:3", "to": "position:30",
               "filter": "event_type = 'a'"}),
    );
    let want: Vec<u64> = all
        .iter()
        .copied()
        .filter(|p| *p > 3 && *p <= 30 && (p - 1).is_multiple_of(2))
        .collect();
    assert_eq!(positions(&frames), want);
    assert_eq!(done(&frames)["events"], want.len());
    assert_eq!(done(&frames)["end"], 30);
    // A time range: from the third request's first event on.
    let third = s.sql("SELECT ingested_at FROM events WHERE event_id = 'e20'")[0]["ingested_at"]
        .as_str()
        .unwrap()
        .to_string();
    let frames = replay(
        &s,
        json!({"table": "events", "from": third, "where": [">=", "n", 0]}),
    );
    assert_eq!(positions(&frames), all[20..].to_vec());
    // Paced: at 10x the 1.2 s become some 120 ms, at 1x 1.2 s.
    for (speed, least) in [(10.0, 0.1), (1.0, 1.0)] {
        let started = Instant::now();
        let frames = replay(&s, json!({"table": "events", "speed": speed}));
        let took = started.elapsed().as_secs_f64();
        assert_eq!(positions(&frames), all, "speed {speed}");
        assert!(
            took >= least,
            "speed {speed} took {took:.3} s, less than {least} s"
        );
        println!("replay at {speed}x of 1.2 s of ingest took {took:.3} s");
    }
    // Over a WebSocket, at 10x.
    let url = format!(
        "{}/v1/replay?table=events&speed=10&where=%5B%22%3D%22%2C%22event_type%22%2C%22b%22%5D",
        s.base.replacen("http://", "ws://", 1)
    );
    let out = Command::new(support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/ws_client.py"
        ))
        .args(["collect", &url, "20"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let of_b: Vec<u64> = all.iter().copied().filter(|p| p % 2 == 0).collect();
    assert_eq!(got["positions"], json!(of_b), "{got}");
    // The CLI prints the events.
    let out = Command::new(support::server_bin())
        .args(["replay", "--url", &s.base, "--to", "position:5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cli: Vec<u64> = lines
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(cli, vec![1, 2, 3, 4, 5]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("done"));
}

#[test]
fn a_parallel_replay_keeps_each_entity_in_order() {
    let s = TestServer::start(&["--flush-rows", "50"]);
    for r in 0..6 {
        s.ingest(&events(r * 40, 40));
    }
    let frames = replay(
        &s,
        json!({"table": "events", "order": "parallel", "parallelism": 3}),
    );
    let got: Vec<(u64, String)> = frames
        .iter()
        .filter_map(|f| f.get("event"))
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["entity_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted: Vec<u64> = got.iter().map(|(p, _)| *p).collect();
    sorted.sort();
    assert_eq!(sorted, (1..=240).collect::<Vec<u64>>(), "each event once");
    let mut per_entity: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (p, e) in &got {
        per_entity.entry(e).or_default().push(*p);
    }
    assert_eq!(per_entity.len(), 6);
    for (e, ps) in per_entity {
        assert!(ps.windows(2).all(|w| w[0] < w[1]), "{e}: {ps:?}");
    }
}

#[test]
fn a_replay_into_another_table_copies_the_range_once() {
    let s = TestServer::start(&[]);
    s.ingest(&events(0, 30));
    let body = json!({"table": "events", "into": "copy", "filter": "event_type = 'b'"});
    let frames = replay(&s, body.clone());
    assert_eq!(done(&frames)["stored"], 15, "{:?}", frames.last());
    assert!(positions(&frames).is_empty(), "events are not sent back");
    let copied = s.sql("SELECT event_id, entity_id, n FROM copy ORDER BY position");
    let source =
        s.sql("SELECT event_id, entity_id, n FROM events WHERE event_type = 'b' ORDER BY position");
    assert_eq!(copied, source);
    // The event ids come along: replaying again stores nothing twice.
    let frames = replay(&s, body);
    assert_eq!(done(&frames)["stored"], 0);
    assert_eq!(done(&frames)["duplicates"], 15);
    assert_eq!(s.scalar("SELECT count(*) AS n FROM copy"), json!(15));
}

#[test]
fn bad_replays_are_refused_before_anything_is_sent() {
    let s = TestServer::start(&[]);
    s.ingest(&events(0, 3));
    for (body, status, needle) in [
        (json!({"table": "nope"}), 404, "does not exist"),
        (json!({"table": "events", "speed": -1}), 400, "speed"),
        (json!({"table": "events", "order": "random"}), 400, "order"),
        (
            json!({"table": "events", "order": "parallel", "parallelism": 99}),
            400,
            "parallelism",
        ),
        (
            json!({"table": "events", "parallelism": 2}),
            400,
            "order=parallel",
        ),
        (
            json!({"table": "events", "into": "events"}),
            400,
            "another table",
        ),
        (json!({"table": "events", "to": "soon"}), 400, "position:N"),
        (json!({"table": "events", "from": "soon"}), 400, "from:"),
        (
            json!({"table": "events", "filter": "nope = 1"}),
            400,
            "nope",
        ),
        (json!({"table": "events", "loop": true}), 400, "loop"),
    ] {
        let r = s.post("/v1/replay", "application/json", body.to_string());
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.error().contains(needle), "{body}: {}", r.error());
    }
}
