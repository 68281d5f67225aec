//! Projections of other shapes than `projections.rs`'s, kept equal to
//! their queries over seeded rounds of events and a `kill -9`:
//! `first_value`/`last_value` by timestamp, `min`, expression keys,
//! arithmetic over aggregates, `FILTER`, and a global projection with a
//! distinct count.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const SHAPES: [(&str, &str); 3] = [
    (
        "by_type",
        "SELECT event_type, first_value(plan ORDER BY timestamp) AS first_plan, \
         last_value(plan ORDER BY timestamp) AS last_plan, min(amount) AS low \
         FROM events GROUP BY event_type",
    ),
    (
        "by_who",
        "SELECT lower(entity_id) AS who, sum(amount) / count(*) AS mean, \
         max(amount) - min(amount) AS spread, count(*) FILTER (WHERE amount > 50) AS big \
         FROM events GROUP BY lower(entity_id)",
    ),
    (
        "orders",
        "SELECT count(DISTINCT entity_id) AS users, sum(amount) * 2 AS double_total \
         FROM events WHERE event_type = 'order'",
    ),
];

/// `n` events from `seed`, at distinct increasing times from `first_ms`
/// (so that first and last values by timestamp have no ties), amounts in
/// quarters (so that sums are exact in any order).
fn round(seed: u64, first_ms: u64, n: u64) -> Value {
    let mut next = seeded(seed);
    let types = ["order", "view", "signup"];
    let plans = ["free", "pro", "team"];
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"event_type": types[next(3) as usize],
                       "entity_id": format!("{}{}", ["U", "u"][next(2) as usize], next(7)),
                       "timestamp": first_ms + i * 1000,
                       "payload": {"amount": next(400) as f64 / 4.0,
                                   "plan": plans[next(3) as usize]}})
            })
            .collect(),
    )
}

/// Rows sorted by their text, so that two sets compare whatever their order.
fn sorted(rows: Vec<Value>) -> Vec<Value> {
    let mut rows = rows;
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// Every projection's state, once caught up, equals its query in batch.
fn check(s: &TestServer) {
    let highest = s.scalar("SELECT max(position) FROM events");
    for (name, query) in SHAPES {
        wait_until("the projection catches up", Duration::from_secs(30), || {
            let info = s.get(&format!("/v1/projections/{name}")).json();
            assert_eq!(info["status"], "running", "{info}");
            info["position"] == highest
        });
        let state = s.get(&format!("/v1/projections/{name}/state"));
        assert_eq!(state.status, 200, "{}", state.text());
        let state = sorted(state.json().as_array().unwrap().clone());
        assert_eq!(state, sorted(s.sql(query)), "{name}");
    }
}

#[test]
fn projections_of_every_shape_equal_their_queries_across_rounds_and_kill9() {
    let mut s = TestServer::start(&["--projection-snapshot-interval", "100ms"]);
    let start = 1_780_000_000_000u64;
    s.ingest(&round(1, start, 40));
    for (name, query) in SHAPES {
        let r = s.post(
            "/v1/projections",
            "application/json",
            json!({"name": name, "query": query}).to_string(),
        );
        assert_eq!(r.status, 201, "{name}: {}", r.text());
    }
    check(&s);
    for cycle in 0..4u64 {
        let at = start + (cycle + 1) * 1_000_000;
        s.ingest(&round(10 + cycle, at, 50));
        check(&s);
        if cycle % 2 == 1 {
            s.ingest(&round(20 + cycle, at + 500_000, 30));
            s.kill9();
            s.restart();
            check(&s);
        }
    }
}
