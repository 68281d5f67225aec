//! Pipeline windows through HTTP: tumbling and sliding windows over
//! out-of-order events equal the same aggregation in batch SQL with the
//! watermark's rule, late events are counted, the state survives
//! `kill -9`, and windows that cannot run are refused with the reason.

use crate::pipelines::{caught_up, create, info, rows};
use crate::support::*;
use serde_json::{Value, json};

/// `n` orders and signups a minute apart from `start` (minutes after
/// 2026-01-01T00:00Z), each moved by up to 40 minutes back or 10
/// forward: out of order, and some late.
fn timed(seed: u64, start: u64, n: u64) -> Value {
    let mut next = seeded(seed);
    let plans = ["free", "pro", "team"];
    Value::Array(
        (0..n)
            .map(|i| {
                let minute = (start + i) as i64 - 40 + next(51) as i64;
                let at = chrono::DateTime::from_timestamp(1_767_225_600 + minute.max(0) * 60, 0)
                    .unwrap();
                let kind = ["order", "signup", "view"][next(3) as usize];
                json!({
                    "event_type": kind,
                    "entity_id": format!("u{}", next(7)),
                    "timestamp": at.to_rfc3339(),
                    "payload": {"amount": next(400) as f64 / 4.0, "plan": plans[next(3) as usize]},
                })
            })
            .collect(),
    )
}

#[test]
fn windows_close_on_the_watermark_count_late_events_and_survive_kill9() {
    let mut s = TestServer::start(&[]);
    let tumbling = json!({
        "name": "hourly",
        "source": {"table": "events"},
        "operators": [
            {"op": "filter", "where": "event_type IN ('order', 'signup')"},
            {"op": "window", "size": "1h", "lateness": "10m", "key": {"plan": "plan"},
             "event_type": "hourly_plan",
             "aggregates": {"n": "count(*)", "revenue": "sum(amount)", "users": "count(DISTINCT entity_id)",
                            "big": "count(*) FILTER (WHERE amount > 50)", "highest": "max(amount)"}},
        ],
        "sink": {"table": "hourly"},
    });
    let sliding = json!({
        "name": "sliding",
        "source": {"table": "events"},
        "operators": [
            {"op": "filter", "where": "event_type IN ('order', 'signup')"},
            {"op": "window", "kind": "sliding", "size": "2h", "slide": "1h", "lateness": "10m",
             "aggregates": {"n": "count(*)"}},
        ],
        "sink": {"table": "sliding"},
    });
    s.ingest(&timed(1, 0, 100));
    for body in [&tumbling, &sliding] {
        let r = create(&s, body.clone());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // Rounds of events, each followed by kill -9 (the windows' state is
    // restored from the last stored progress) or a clean restart.
    for round_no in 1..=6u64 {
        s.ingest(&timed(round_no + 1, round_no * 100, 100));
        match round_no % 3 {
            0 => s.stop(),
            _ => s.kill9(),
        }
        s.restart();
    }
    caught_up(&s, "hourly");
    caught_up(&s, "sliding");

    let filtered = "SELECT * FROM events WHERE event_type IN ('order', 'signup')";
    let seen = |size: &str| {
        format!(
            "SELECT *, max(timestamp) OVER (ORDER BY position ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen, \
             date_bin(INTERVAL '1 hour', timestamp) AS w0, INTERVAL '{size}' AS size FROM ({filtered})"
        )
    };
    let closed_before =
        format!("(SELECT max(timestamp) FROM ({filtered})) - INTERVAL '10 minutes'");
    let expected = format!(
        "SELECT CAST(date_part('epoch', w0) AS BIGINT) AS start, plan, count(*) AS n, sum(amount) AS revenue, \
         count(DISTINCT entity_id) AS users, count(*) FILTER (WHERE amount > 50) AS big, max(amount) AS highest \
         FROM ({}) WHERE seen IS NULL OR w0 + size > seen - INTERVAL '10 minutes' \
         GROUP BY w0, plan HAVING w0 + INTERVAL '1 hour' <= {closed_before} ORDER BY start, plan",
        seen("1 hour")
    );
    let got = "SELECT CAST(date_part('epoch', to_timestamp(window_start)) AS BIGINT) AS start, plan, \
         CAST(n AS BIGINT) AS n, revenue, CAST(users AS BIGINT) AS users, CAST(big AS BIGINT) AS big, highest \
         FROM hourly ORDER BY start, plan";
    let want = rows(&s, &expected);
    assert!(want.len() > 10, "{}", want.len());
    assert_eq!(rows(&s, got), want);
    assert_eq!(
        s.scalar(
            "SELECT count(*) FROM hourly WHERE event_type = 'hourly_plan' AND entity_id = plan"
        ),
        json!(want.len())
    );
    let late = s.scalar(&format!(
        "SELECT count(*) FROM ({}) WHERE seen IS NOT NULL AND w0 + size <= seen - INTERVAL '10 minutes'",
        seen("1 hour")
    ));
    assert!(late.as_u64().unwrap() > 0, "the data has late events");
    let i = info(&s, "hourly");
    assert_eq!(i["operator_stats"][1]["dropped"], late, "{i}");

    // Sliding: an event is in the two windows that cover it; late for a
    // window that closed before it came.
    let expected = format!(
        "SELECT CAST(date_part('epoch', ws) AS BIGINT) AS start, count(*) AS n FROM \
         (SELECT *, unnest(make_array(w0, w0 - INTERVAL '1 hour')) AS ws FROM ({})) \
         WHERE seen IS NULL OR ws + size > seen - INTERVAL '10 minutes' \
         GROUP BY ws HAVING ws + INTERVAL '2 hours' <= {closed_before} ORDER BY start",
        seen("2 hours")
    );
    let got = "SELECT CAST(date_part('epoch', to_timestamp(window_start)) AS BIGINT) AS start, \
         CAST(n AS BIGINT) AS n FROM sliding ORDER BY start";
    let want = rows(&s, &expected);
    assert!(want.len() > 10, "{}", want.len());
    assert_eq!(rows(&s, got), want);
    assert_eq!(
        s.scalar("SELECT count(DISTINCT event_id) FROM sliding"),
        json!(want.len())
    );
}

#[test]
fn windows_that_cannot_run_are_refused() {
    let s = TestServer::start(&[]);
    s.ingest(&timed(9, 0, 10));
    let refused = |window: Value, needle: &str| {
        let body = json!({"name": "w", "source": {"table": "events"},
                          "operators": [window], "sink": {"table": "o"}});
        let r = create(&s, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = r.error();
        assert!(
            e.contains(needle),
            "{body}: {e:?} should mention {needle:?}"
        );
        assert!(e.contains("operators[0] (window)"), "{e}");
    };
    let n = json!({"n": "count(*)"});
    refused(
        json!({"op": "window", "size": "soon", "aggregates": n}),
        "size",
    );
    refused(
        json!({"op": "window", "size": "1h", "slide": "5m", "aggregates": n}),
        "only sliding windows",
    );
    refused(
        json!({"op": "window", "kind": "sliding", "size": "1h", "aggregates": n}),
        "needs one",
    );
    refused(
        json!({"op": "window", "kind": "sliding", "size": "1h", "slide": "2h", "aggregates": n}),
        "at most the size",
    );
    refused(
        json!({"op": "window", "size": "1h", "aggregates": {}}),
        "at least one",
    );
    refused(
        json!({"op": "window", "size": "1h", "aggregates": {"n": "amount + 1"}}),
        "one aggregate call",
    );
    refused(
        json!({"op": "window", "size": "1h", "aggregates": {"n": "count(*) + sum(amount)"}}),
        "one aggregate call",
    );
    refused(
        json!({"op": "window", "size": "1h", "aggregates": {"n": "sum(nope)"}}),
        "aggregates.n",
    );
    refused(
        json!({"op": "window", "size": "1h", "aggregates": {"position": "count(*)"}}),
        "sets itself",
    );
    refused(
        json!({"op": "window", "size": "1h", "key": {"k": "nope"}, "aggregates": n}),
        "key",
    );
    let body = json!({"name": "w", "source": {"table": "events"}, "sink": {"table": "o"},
                      "operators": [{"op": "window", "size": "1h", "aggregates": n, "extra": 1}]});
    let r = create(&s, body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("unknown field `extra`"), "{}", r.error());
}

#[test]
fn deduplicate_and_throttle_keep_the_first_events_of_each_bucket_across_kill9() {
    let mut s = TestServer::start(&[]);
    let dedup = json!({
        "name": "firsts",
        "source": {"table": "events"},
        "operators": [{"op": "deduplicate", "key": "entity_id", "within": "1h", "lateness": "30m"}],
        "sink": {"table": "firsts"},
    });
    let throttle = json!({
        "name": "calm",
        "source": {"table": "events"},
        "operators": [
            {"op": "filter", "where": "event_type <> 'view'"},
            {"op": "throttle", "key": "plan", "rate": 3, "per": "10m", "lateness": "30m"},
        ],
        "sink": {"table": "calm"},
    });
    s.ingest(&timed(21, 0, 100));
    for body in [&dedup, &throttle] {
        let r = create(&s, body.clone());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    for round_no in 1..=5u64 {
        s.ingest(&timed(round_no + 21, round_no * 100, 100));
        s.kill9();
        s.restart();
    }
    caught_up(&s, "firsts");
    caught_up(&s, "calm");
    // The batch answer: row_number() per key and bucket over the events
    // that were not late by the watermark's rule.
    let kept = |source: &str, key: &str, bucket: &str, most: u32| {
        format!(
            "SELECT event_type, entity_id, timestamp, amount, plan FROM ( \
               SELECT *, row_number() OVER (PARTITION BY {key}, b ORDER BY position) AS rn FROM ( \
                 SELECT *, date_bin(INTERVAL '{bucket}', timestamp) AS b, \
                   max(timestamp) OVER (ORDER BY position ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen \
                 FROM ({source})) \
               WHERE seen IS NULL OR b + INTERVAL '{bucket}' > seen - INTERVAL '30 minutes') \
             WHERE rn <= {most} ORDER BY position"
        )
    };
    let want = rows(&s, &kept("SELECT * FROM events", "entity_id", "1 hour", 1));
    let got = rows(
        &s,
        "SELECT event_type, entity_id, timestamp, amount, plan FROM firsts ORDER BY position",
    );
    assert!(want.len() > 20 && want.len() < 600, "{}", want.len());
    assert_eq!(got, want);
    let all = s.scalar("SELECT count(*) FROM events").as_u64().unwrap();
    let i = info(&s, "firsts");
    assert_eq!(
        i["operator_stats"][0]["dropped"],
        json!(all - want.len() as u64),
        "{i}"
    );

    let want = rows(
        &s,
        &kept(
            "SELECT * FROM events WHERE event_type <> 'view'",
            "plan",
            "10 minutes",
            3,
        ),
    );
    let got = rows(
        &s,
        "SELECT event_type, entity_id, timestamp, amount, plan FROM calm ORDER BY position",
    );
    assert!(want.len() > 20, "{}", want.len());
    assert_eq!(got, want);
    let i = info(&s, "calm");
    let passed = i["operator_stats"][1]["events_in"].as_u64().unwrap();
    assert_eq!(
        i["operator_stats"][1]["dropped"],
        json!(passed - want.len() as u64),
        "{i}"
    );

    // Refusals name the operator and the reason.
    let r = create(
        &s,
        json!({"name": "bad", "source": {"table": "events"}, "sink": {"table": "o"},
               "operators": [{"op": "throttle", "rate": 0}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("operators[0] (throttle): rate"),
        "{}",
        r.error()
    );
    let r = create(
        &s,
        json!({"name": "bad", "source": {"table": "events"}, "sink": {"table": "o"},
               "operators": [{"op": "deduplicate", "key": "nope", "within": "1h"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("operators[0] (deduplicate): key"),
        "{}",
        r.error()
    );
}

/// The seed's example: new users' plans kept by a projection; orders
/// filtered, enriched with the buyer's plan, and counted per plan and
/// hour.
#[test]
fn filter_enrich_and_an_hourly_count_per_plan() {
    let mut s = TestServer::start(&[]);
    let plans = ["free", "pro", "team"];
    let signups: Vec<Value> = (0..6)
        .map(|u| {
            json!({"event_type": "user.created", "entity_id": format!("u{u}"),
                   "timestamp": "2025-12-31T00:00:00Z", "payload": {"plan": plans[u % 3]}})
        })
        .collect();
    s.ingest(&Value::Array(signups));
    let users = "SELECT entity_id, last_value(plan ORDER BY position) AS plan, count(*) AS signups \
                 FROM events WHERE event_type = 'user.created' GROUP BY entity_id";
    let r = s.post(
        "/v1/projections",
        "application/json",
        json!({"name": "user_plans", "query": users}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let highest = s.scalar("SELECT max(position) FROM events");
    wait_until(
        "the projection catches up",
        std::time::Duration::from_secs(30),
        || s.get("/v1/projections/user_plans").json()["position"] == highest,
    );
    let body = json!({
        "name": "orders_by_plan",
        "source": {"table": "events"},
        "operators": [
            {"op": "filter", "where": "event_type = 'order'"},
            {"op": "enrich", "projection": "user_plans", "on": {"entity_id": "entity_id"},
             "fields": {"user_plan": "plan"}},
            {"op": "window", "size": "1h", "lateness": "15m", "key": {"user_plan": "user_plan"},
             "aggregates": {"n": "count(*)", "revenue": "sum(amount)"}},
        ],
        "sink": {"table": "orders_by_plan"},
    });
    // The first orders come before the pipeline (its fields must exist);
    // u6 never signed up: its orders count under no plan.
    s.ingest(&timed(40, 0, 100));
    let r = create(&s, body);
    assert_eq!(r.status, 201, "{}", r.text());
    // After the kill the projection folds again from nothing (no
    // snapshot yet), slowly: the pipeline must not enrich the next orders
    // with plans it has not folded again yet.
    for round_no in 1..4u64 {
        s.ingest(&timed(round_no + 40, round_no * 100, 100));
        if round_no == 1 {
            s.kill9();
            s.restart_with_env(&[("FAILPOINTS", "projection-fold-delay=return(2500)")]);
        }
        if round_no == 2 {
            wait_until(
                "the pipeline says what it waits for",
                std::time::Duration::from_secs(30),
                || {
                    let i = info(&s, "orders_by_plan");
                    i["error"].as_str().is_some_and(|e| {
                        e.starts_with("waiting for projection \"user_plans\" to fold its table")
                    })
                },
            );
        }
    }
    caught_up(&s, "orders_by_plan");
    let source = format!(
        "SELECT o.*, p.plan AS user_plan FROM (SELECT * FROM events WHERE event_type = 'order') o \
         LEFT JOIN ({users}) p ON o.entity_id = p.entity_id"
    );
    let expected = format!(
        "SELECT CAST(date_part('epoch', w0) AS BIGINT) AS start, user_plan, count(*) AS n, sum(amount) AS revenue \
         FROM (SELECT *, date_bin(INTERVAL '1 hour', timestamp) AS w0, \
                 max(timestamp) OVER (ORDER BY position ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen \
               FROM ({source})) \
         WHERE seen IS NULL OR w0 + INTERVAL '1 hour' > seen - INTERVAL '15 minutes' \
         GROUP BY w0, user_plan \
         HAVING w0 + INTERVAL '1 hour' <= (SELECT max(timestamp) FROM ({source})) - INTERVAL '15 minutes' \
         ORDER BY start, user_plan"
    );
    let want = rows(&s, &expected);
    assert!(want.len() > 10, "{}", want.len());
    assert!(
        want.iter().any(|r| r["user_plan"].is_null()),
        "some orders have no plan"
    );
    let got = rows(
        &s,
        "SELECT CAST(date_part('epoch', to_timestamp(window_start)) AS BIGINT) AS start, user_plan, \
         CAST(n AS BIGINT) AS n, revenue FROM orders_by_plan ORDER BY start, user_plan",
    );
    assert_eq!(got, want);

    let r = create(
        &s,
        json!({"name": "bad", "source": {"table": "events"}, "sink": {"table": "o"},
               "operators": [{"op": "enrich", "projection": "nobody", "on": {"entity_id": "entity_id"},
                              "fields": {"x": "plan"}}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("operators[0] (enrich)"), "{}", r.error());
}

#[test]
fn count_windows_close_at_their_last_event_across_kill9() {
    let mut s = TestServer::start(&[]);
    s.ingest(&timed(60, 0, 100));
    let body = json!({
        "name": "threes",
        "source": {"table": "events"},
        "operators": [{"op": "window", "kind": "count", "size": "3", "key": {"entity_id": "entity_id"},
                       "aggregates": {"n": "count(*)", "total": "sum(amount)",
                                      "kinds": "count(DISTINCT event_type)"}}],
        "sink": {"table": "threes"},
    });
    let r = create(&s, body);
    assert_eq!(r.status, 201, "{}", r.text());
    for round_no in 1..=3u64 {
        s.ingest(&timed(round_no + 60, round_no * 100, 100));
        s.kill9();
        s.restart();
    }
    caught_up(&s, "threes");
    // Every third event of an entity closes its window; a last window
    // with fewer stays open.
    let want = rows(
        &s,
        "SELECT entity_id, count(*) AS n, sum(amount) AS total, count(DISTINCT event_type) AS kinds, \
         CAST(date_part('epoch', min(timestamp)) AS BIGINT) AS first, \
         CAST(date_part('epoch', max(timestamp)) AS BIGINT) AS last \
         FROM (SELECT *, (CAST(row_number() OVER (PARTITION BY entity_id ORDER BY position) AS BIGINT) - 1) / 3 AS g FROM events) \
         GROUP BY entity_id, g HAVING count(*) = 3 ORDER BY entity_id, g",
    );
    assert!(want.len() > 50, "{}", want.len());
    let got = rows(
        &s,
        "SELECT entity_id, CAST(n AS BIGINT) AS n, total, CAST(kinds AS BIGINT) AS kinds, \
         CAST(date_part('epoch', to_timestamp(window_start)) AS BIGINT) AS first, \
         CAST(date_part('epoch', to_timestamp(window_end)) AS BIGINT) AS last \
         FROM threes ORDER BY entity_id, position",
    );
    assert_eq!(got, want);
    let r = create(
        &s,
        json!({"name": "bad", "source": {"table": "events"}, "sink": {"table": "o"},
               "operators": [{"op": "window", "kind": "count", "size": "3", "lateness": "1m",
                              "aggregates": {"n": "count(*)"}}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("no slide or lateness"), "{}", r.error());
}

#[test]
fn batches_group_every_n_events_of_a_key_into_one() {
    let mut s = TestServer::start(&[]);
    s.ingest(&timed(70, 0, 200));
    let body = json!({
        "name": "fours",
        "source": {"table": "events"},
        "operators": [{"op": "batch", "size": 4, "key": {"entity_id": "entity_id"}}],
        "sink": {"table": "fours"},
    });
    let r = create(&s, body);
    assert_eq!(r.status, 201, "{}", r.text());
    s.ingest(&timed(71, 200, 200));
    s.kill9();
    s.restart();
    caught_up(&s, "fours");
    let want = rows(
        &s,
        "SELECT entity_id, count(*) AS n, first_value(amount ORDER BY position) AS first_amount, \
         last_value(event_type ORDER BY position) AS last_type \
         FROM (SELECT *, (CAST(row_number() OVER (PARTITION BY entity_id ORDER BY position) AS BIGINT) - 1) / 4 AS g \
               FROM events) GROUP BY entity_id, g HAVING count(*) = 4 ORDER BY entity_id, g",
    );
    assert!(want.len() > 50, "{}", want.len());
    let got = rows(
        &s,
        "SELECT entity_id, CAST(\"count\" AS BIGINT) AS n, json_get_float(events, 0, 'amount') AS first_amount, \
         json_get_str(events, 3, 'event_type') AS last_type FROM fours ORDER BY entity_id, position",
    );
    assert_eq!(got, want);
    assert_eq!(s.scalar("SELECT min(event_type) FROM fours"), "batch");
    let r = create(
        &s,
        json!({"name": "bad", "source": {"table": "events"}, "sink": {"table": "o"},
               "operators": [{"op": "batch", "size": 4, "every": "1m"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("operators[0] (batch): give either"),
        "{}",
        r.error()
    );
}
