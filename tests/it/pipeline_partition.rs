//! Partitioned pipelines through HTTP: the operators after a partition
//! run per worker with the state of their own keys, each key keeps its
//! order, the output comes back in source position order, and a worker's
//! state survives `kill -9`. And enrich from a table, as of each event's
//! time.

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

#[test]
fn enrich_from_a_table_takes_the_latest_row_as_of_each_event() {
    let mut s = TestServer::start(&[]);
    let at = |minute: i64| {
        chrono::DateTime::from_timestamp(1_767_225_600 + minute * 60, 0)
            .unwrap()
            .to_rfc3339()
    };
    let plans = ["free", "pro", "team"];
    // Each user's plan changes at known times; u4 has none until late,
    // u5 never.
    let mut changes: Vec<(String, i64, &str)> = Vec::new();
    for u in 0..5i64 {
        let first = if u == 4 { 150 } else { 5 * u };
        for (k, minute) in [first, first + 60, first + 120].into_iter().enumerate() {
            changes.push((format!("u{u}"), minute, plans[(u as usize + k) % 3]));
        }
    }
    let body: Vec<Value> = changes
        .iter()
        .map(|(u, m, plan)| {
            json!({"event_type": "plan.changed", "entity_id": u, "timestamp": at(*m),
                   "payload": {"plan": plan}})
        })
        .collect();
    let r = s.post(
        "/v1/events?table=users",
        "application/json",
        Value::Array(body).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut next = seeded(90);
    let orders: Vec<(String, i64)> = (0..240)
        .map(|_| (format!("u{}", next(6)), next(300) as i64))
        .collect();
    let order_events = |part: &[(String, i64)]| {
        Value::Array(
            part.iter()
                .map(|(u, m)| {
                    json!({"event_type": "order", "entity_id": u, "timestamp": at(*m),
                           "payload": {"amount": 1}})
                })
                .collect(),
        )
    };
    s.ingest(&order_events(&orders[..80]));
    let r = create(
        &s,
        json!({
            "name": "plans",
            "source": {"table": "events"},
            "operators": [
                {"op": "enrich", "table": "users", "on": {"entity_id": "entity_id"},
                 "fields": {"user_plan": "plan"}},
            ],
            "sink": {"table": "orders_with_plan"},
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s.ingest(&order_events(&orders[80..160]));
    s.kill9();
    s.restart();
    s.ingest(&order_events(&orders[160..]));
    caught_up(&s, "plans");

    // The plan each order should carry: the user's latest change at or
    // before the order's time.
    let want: Vec<Value> = orders
        .iter()
        .map(|(u, m)| {
            let plan = changes
                .iter()
                .filter(|(cu, cm, _)| cu == u && cm <= m)
                .max_by_key(|(_, cm, _)| *cm)
                .map(|(_, _, p)| json!(p))
                .unwrap_or(Value::Null);
            json!({"entity_id": u, "user_plan": plan})
        })
        .collect();
    assert!(want.iter().any(|w| w["user_plan"].is_null()));
    let got = rows(
        &s,
        "SELECT entity_id, user_plan FROM orders_with_plan ORDER BY position",
    );
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "order {i} ({:?})", orders[i]);
    }

    for (operator, problem) in [
        (
            json!({"op": "enrich", "on": {"entity_id": "entity_id"}, "fields": {"p": "plan"}}),
            "give a projection or a table",
        ),
        (
            json!({"op": "enrich", "table": "nowhere", "on": {"entity_id": "entity_id"}, "fields": {"p": "plan"}}),
            "nowhere",
        ),
        (
            json!({"op": "enrich", "table": "users", "projection": "x", "on": {"entity_id": "entity_id"},
                "fields": {"p": "plan"}}),
            "one of them",
        ),
    ] {
        let r = create(
            &s,
            json!({"name": "bad", "source": {"table": "events"}, "sink": {"table": "o"},
                   "operators": [operator]}),
        );
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.error().contains(problem), "{}", r.error());
    }
}
