//! Partitioned pipelines through HTTP: the operators after a partition
//! run per worker with the state of their own keys, each key keeps its
//! order, the output comes back in source position order, and a worker's
//! state survives `kill -9`.

use crate::pipelines::{caught_up, create, info, rows, same_rows};
use crate::support::*;
use serde_json::{Value, json};

/// `n` events of 7 entities a minute apart from `start` minutes.
fn timed(seed: u64, start: u64, n: u64) -> Value {
    let mut next = seeded(seed);
    Value::Array(
        (0..n)
            .map(|i| {
                let at =
                    chrono::DateTime::from_timestamp(1_767_225_600 + (start + i) as i64 * 60, 0)
                        .unwrap();
                json!({
                    "event_type": (["order", "signup", "view"])[next(3) as usize],
                    "entity_id": format!("u{}", next(7)),
                    "timestamp": at.to_rfc3339(),
                    "payload": {"amount": next(400) as f64 / 4.0},
                })
            })
            .collect(),
    )
}

#[test]
fn partitioned_workers_keep_each_keys_order_and_state_across_kill9() {
    let mut s = TestServer::start(&[]);
    s.ingest(&timed(70, 0, 100));
    let windows = json!({
        "name": "parallel",
        "source": {"table": "events"},
        "operators": [
            {"op": "filter", "where": "event_type <> 'view'"},
            {"op": "partition", "key": "entity_id", "workers": 4},
            {"op": "map", "fields": {"k": "upper(entity_id)"}},
            {"op": "window", "kind": "count", "size": "3", "key": {"entity_id": "entity_id", "k": "k"},
             "aggregates": {"n": "count(*)", "total": "sum(amount)"}},
        ],
        "sink": {"table": "par"},
    });
    let mapped = json!({
        "name": "spread",
        "source": {"table": "events"},
        "operators": [
            {"op": "partition", "key": "entity_id || event_type", "workers": 3},
            {"op": "map", "fields": {"k": "upper(entity_id)"}},
        ],
        "sink": {"table": "spread"},
    });
    for body in [&windows, &mapped] {
        let r = create(&s, body.clone());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    for round_no in 1..=3u64 {
        s.ingest(&timed(round_no + 70, round_no * 100, 100));
        s.kill9();
        s.restart();
    }
    caught_up(&s, "parallel");
    caught_up(&s, "spread");

    // Every third event of an entity closes its window, as in batch.
    let want = rows(
        &s,
        "SELECT entity_id, upper(entity_id) AS k, count(*) AS n, sum(amount) AS total \
         FROM (SELECT *, (CAST(row_number() OVER (PARTITION BY entity_id ORDER BY position) AS BIGINT) - 1) / 3 AS g \
               FROM events WHERE event_type <> 'view') \
         GROUP BY entity_id, g HAVING count(*) = 3 ORDER BY entity_id, g",
    );
    assert!(want.len() > 30, "{}", want.len());
    let got = rows(
        &s,
        "SELECT entity_id, k, CAST(n AS BIGINT) AS n, total FROM par ORDER BY entity_id, position",
    );
    assert_eq!(got, want);
    let i = info(&s, "parallel");
    let stats = &i["operator_stats"];
    assert_eq!(stats[1]["op"], "partition", "{i}");
    assert_eq!(stats[1]["events_in"], stats[1]["events_out"], "{i}");
    assert_eq!(
        stats[3]["events_in"],
        s.scalar("SELECT count(*) FROM events WHERE event_type <> 'view'"),
        "{i}"
    );

    // Stateless workers: the merged output is in source position order.
    same_rows(
        &s,
        "SELECT entity_id, timestamp, k FROM spread ORDER BY position",
        "SELECT entity_id, timestamp, upper(entity_id) AS k FROM events ORDER BY position",
    );
}

#[test]
fn partitions_that_cannot_run_are_refused() {
    let s = TestServer::start(&[]);
    s.ingest(&timed(80, 0, 10));
    for (operators, problem) in [
        (
            json!([{"op": "partition", "key": "entity_id"}, {"op": "partition", "key": "event_type"}]),
            "operators[1] (partition): a pipeline is partitioned once",
        ),
        (
            json!([{"op": "partition", "key": "entity_id", "workers": 0}]),
            "workers: 0; give 1 to 16",
        ),
        (
            json!([{"op": "partition", "key": "entity_id", "workers": 17}]),
            "workers: 17",
        ),
        (
            json!([{"op": "partition", "key": "no_such_field"}]),
            "operators[0] (partition): key:",
        ),
    ] {
        let r = create(
            &s,
            json!({"name": "p", "source": {"table": "events"}, "sink": {"table": "o"},
                   "operators": operators}),
        );
        assert_eq!(r.status, 400, "{operators}: {}", r.text());
        assert!(r.error().contains(problem), "{operators}: {}", r.error());
    }
}
