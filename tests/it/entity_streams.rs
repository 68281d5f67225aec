//! Entity streams: `GET /v1/streams/{table}/{entity}` and `allsource
//! stream` read one entity's events in version order.

use crate::support::TestServer;
use serde_json::{Value, json};
use std::process::Command;

fn versions(rows: &Value) -> Vec<u64> {
    rows.as_array()
        .unwrap_or_else(|| panic!("not rows: {rows}"))
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect()
}

fn ingest_stream(s: &TestServer, entity: &str, from: usize, to: usize) {
    let body: Vec<Value> = (from..to)
        .flat_map(|i| {
            [
                json!({"event_id": format!("{entity}-{i}"), "event_type": "step", "entity_id": entity, "payload": {"i": i}}),
                json!({"event_type": "noise", "entity_id": format!("{entity}-other")}),
            ]
        })
        .collect();
    s.ingest(&Value::Array(body));
}

#[test]
fn an_entity_stream_reads_in_version_order_both_ways() {
    let mut s = TestServer::start(&["--flush-age", "1h"]);
    ingest_stream(&s, "order 7/x", 0, 6);
    // Half of the stream in storage, half in the buffer.
    s.stop();
    s.restart();
    ingest_stream(&s, "order 7/x", 6, 10);
    let path = "/v1/streams/events/order%207%2Fx";
    let all = s.get(path);
    assert_eq!(all.status, 200, "{}", all.text());
    let rows = all.json();
    assert_eq!(versions(&rows), (1..=10).collect::<Vec<_>>());
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["entity_id"] == "order 7/x")
    );
    assert_eq!(rows[3]["i"], 3.0, "payload columns come along");
    let page = s.get(&format!("{path}?from_version=5&limit=3")).json();
    assert_eq!(versions(&page), vec![5, 6, 7]);
    let back = s.get(&format!("{path}?direction=backward&limit=4")).json();
    assert_eq!(versions(&back), vec![10, 9, 8, 7]);
    let back_from = s
        .get(&format!("{path}?direction=backward&from_version=2"))
        .json();
    assert_eq!(versions(&back_from), vec![2, 1]);
    let past_end = s.get(&format!("{path}?from_version=11")).json();
    assert_eq!(past_end, json!([]));
    assert_eq!(s.get("/v1/streams/events/nobody").json(), json!([]));
    let csv = s.get(&format!("{path}?limit=1&format=csv")).text();
    assert!(
        csv.lines().count() == 2 && csv.contains("order 7/x"),
        "{csv}"
    );
}

#[test]
fn bad_stream_reads_get_clear_refusals() {
    let s = TestServer::start(&[]);
    ingest_stream(&s, "a", 0, 2);
    let missing = s.get("/v1/streams/nosuch/a");
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert!(missing.error().contains("nosuch"), "{}", missing.error());
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=x", "limit"),
        ("direction=sideways", "direction"),
        ("from_version=-1", "from_version"),
        ("colour=blue", "colour"),
    ] {
        let r = s.get(&format!("/v1/streams/events/a?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.error().contains(needle), "{query}: {}", r.error());
    }
    let bad_table = s.get("/v1/streams/Bad-Name/a");
    assert_eq!(bad_table.status, 400, "{}", bad_table.text());
}

#[test]
fn the_stream_command_prints_an_entitys_events() {
    let s = TestServer::start(&[]);
    ingest_stream(&s, "cust 1", 0, 5);
    let out = Command::new(crate::support::server_bin())
        .args([
            "stream",
            "cust 1",
            "--url",
            &s.base,
            "--from-version",
            "2",
            "--limit",
            "3",
        ])
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
    assert_eq!(versions(&Value::Array(lines)), vec![2, 3, 4]);
    let refused = Command::new(crate::support::server_bin())
        .args(["stream", "x", "--url", &s.base, "--table", "nosuch"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("404") && err.contains("nosuch"), "{err}");
}
