//! The analytics functions through `/v1/sql` on real event tables: part of
//! the data flushed to Delta, part still in the buffer, and the table
//! functions' inner queries planned in the caller's session.

use crate::support::TestServer;
use serde_json::{Value, json};

/// Three users' journeys over three days, ingested in two requests with a
/// flush between them.
fn journeys(s: &mut TestServer) {
    let day = |d: u32, h: u32| format!("2026-03-0{d}T{h:02}:00:00Z");
    let first = json!([
        {"event_type": "visit", "entity_id": "a", "timestamp": day(1, 9), "payload": {"amount": 1.0}},
        {"event_type": "signup", "entity_id": "a", "timestamp": day(1, 10), "payload": {"amount": 2.0}},
        {"event_type": "buy", "entity_id": "a", "timestamp": day(1, 11), "payload": {"amount": 30.0}},
        {"event_type": "visit", "entity_id": "b", "timestamp": day(1, 12), "payload": {"amount": 1.0}},
        {"event_type": "signup", "entity_id": "b", "timestamp": day(2, 12), "payload": {"amount": 2.0}},
    ]);
    s.ingest(&first);
    // SIGTERM flushes what is buffered to Delta
    s.stop();
    s.restart();
    let second = json!([
        {"event_type": "buy", "entity_id": "b", "timestamp": day(3, 8), "payload": {"amount": 500.0}},
        {"event_type": "visit", "entity_id": "c", "timestamp": day(3, 9), "payload": {"amount": 1.0}},
        {"event_type": "buy", "entity_id": "a", "timestamp": day(3, 10), "payload": {"amount": 20.0}},
    ]);
    s.ingest(&second);
}

#[test]
fn funnels_retention_and_cohorts_over_http() {
    let mut s = TestServer::start(&[]);
    journeys(&mut s);
    let rows = s.sql(
        "SELECT entity_id, window_funnel(INTERVAL '1 day', timestamp, event_type = 'visit', \
           event_type = 'signup', event_type = 'buy') AS level \
         FROM events GROUP BY entity_id ORDER BY entity_id",
    );
    assert_eq!(
        rows,
        vec![
            json!({"entity_id": "a", "level": 3}),
            // signup exactly 1 day after the visit is inside the window
            json!({"entity_id": "b", "level": 2}),
            json!({"entity_id": "c", "level": 1}),
        ]
    );
    let steps = s.scalar(
        "SELECT funnel_steps(INTERVAL '3 days', timestamp, event_type = 'visit', \
           event_type = 'signup', event_type = 'buy')['step_3'] - \
         funnel_steps(INTERVAL '3 days', timestamp, event_type = 'visit', \
           event_type = 'signup', event_type = 'buy')['step_1'] AS took \
         FROM events WHERE entity_id = 'b'",
    );
    assert_eq!(steps, json!("PT158400S"), "b took 44 hours");
    let retained = s.sql(
        "SELECT entity_id, retention(event_date = DATE '2026-03-01', event_date = DATE '2026-03-03') AS r \
         FROM events GROUP BY entity_id ORDER BY entity_id",
    );
    assert_eq!(retained[0]["r"], json!([1, 1]));
    assert_eq!(retained[1]["r"], json!([1, 1]));
    assert_eq!(retained[2]["r"], json!([0, 0]));
    let matrix = s.sql(
        "SELECT cohort, period, cohort_size, retained FROM cohorts(\
           'SELECT entity_id, timestamp, event_type = ''signup'' AS j, event_type = ''buy'' AS r FROM events', \
           'day', 3) ORDER BY cohort, period",
    );
    assert_eq!(
        matrix,
        vec![
            json!({"cohort": "2026-03-01", "period": 0, "cohort_size": 1, "retained": 1}),
            json!({"cohort": "2026-03-01", "period": 1, "cohort_size": 1, "retained": 0}),
            json!({"cohort": "2026-03-01", "period": 2, "cohort_size": 1, "retained": 1}),
            json!({"cohort": "2026-03-02", "period": 0, "cohort_size": 1, "retained": 0}),
            json!({"cohort": "2026-03-02", "period": 1, "cohort_size": 1, "retained": 1}),
        ]
    );
}

#[test]
fn anomalies_series_and_trends_over_http() {
    let mut s = TestServer::start(&[]);
    journeys(&mut s);
    // the 500 purchase stands out from the others; the inner query sees
    // both the flushed and the buffered rows
    let flagged = s.sql(
        "SELECT entity_id, amount FROM detect_anomalies(\
           'SELECT entity_id, amount FROM events WHERE event_type = ''buy''', 'amount', 'mad', 3) \
         WHERE is_anomaly",
    );
    assert_eq!(flagged, vec![json!({"entity_id": "b", "amount": 500.0})]);
    let window = s.sql(
        "SELECT entity_id FROM (SELECT entity_id, is_anomaly(amount, 'mad') OVER \
           (PARTITION BY event_type) AS a FROM events) WHERE a",
    );
    assert_eq!(window, vec![json!({"entity_id": "b"})]);

    let series = s.sql(
        "SELECT day, n FROM gapfill(\
           'SELECT date_bin(INTERVAL ''12 hours'', timestamp) AS day, count(*) AS n FROM events GROUP BY 1', \
           'day', INTERVAL '12 hours', '2026-03-01T00:00:00Z', '2026-03-04T00:00:00Z', 'zero')",
    );
    let counts: Vec<i64> = series.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(counts, vec![3, 1, 0, 1, 3, 0]);

    let daily = s.sql(
        "SELECT fitted, is_forecast, slope FROM trend(\
           'SELECT event_date, count(*) AS n FROM events GROUP BY 1', 'event_date', 'n', 1)",
    );
    // 4, 1, 3 events a day: slope −0.5 per day, intercept 19/6, so the
    // next day's forecast is 19/6 − 0.5·3 = 5/3
    assert_eq!(daily.len(), 4);
    assert_eq!(daily[3]["is_forecast"], json!(true));
    let next = daily[3]["fitted"].as_f64().unwrap();
    assert!((next - 5.0 / 3.0).abs() < 1e-9, "{next}");
    assert_eq!(daily[0]["slope"], json!(-0.5));
}

#[test]
fn table_function_inner_queries_are_read_only_and_named_in_errors() {
    let s = TestServer::start(&[]);
    s.ingest(&crate::support::events("a", 3));
    for (sql, expect) in [
        (
            "SELECT * FROM detect_anomalies('INSERT INTO events (event_type) VALUES (''x'')', 'n')",
            "the inner query must be a query",
        ),
        (
            "SELECT * FROM trend('CREATE TABLE t AS SELECT 1 AS a, 2 AS b', 'a', 'b')",
            "the inner query must be a query",
        ),
        (
            "SELECT * FROM gapfill('SELECT timestamp FROM evnts', 'timestamp', INTERVAL '1 hour', now() - INTERVAL '1 day', now())",
            "evnts",
        ),
        (
            "SELECT * FROM detect_anomalies('SELECT n FROM events', 'n', 'fancy')",
            "unknown method \"fancy\"",
        ),
    ] {
        let r = s.post("/v1/sql", "text/plain", sql);
        assert_eq!(r.status, 400, "{sql}: {}", r.text());
        assert!(r.error().contains(expect), "{sql}: {}", r.error());
    }
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(3));
    let tables: Vec<Value> =
        s.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'");
    assert_eq!(tables, vec![json!({"table_name": "events"})]);
}

/// Grouping by the day of `timestamp` reads `event_date` (the plan says
/// so) and gives what truncating every timestamp gives, over flushed and
/// buffered events, with a filter, and after midnight UTC on the edges.
#[test]
fn daily_groups_read_the_date_partition_and_agree_with_truncation() {
    let mut s = TestServer::start(&[]);
    let at = |day: u32, h: u32, m: u32| format!("2026-03-{day:02}T{h:02}:{m:02}:00Z");
    let batch = |first: u32| -> Value {
        Value::Array(
            (0..60u32)
                .map(|i| {
                    let (h, m) = [(0, 0), (23, 59), (12, 30)][(i % 3) as usize];
                    let kind = ["a", "b"][(i / 4 % 2) as usize];
                    json!({"event_type": kind, "entity_id": format!("u{i}"),
                           "timestamp": at(first + i % 4, h, m), "payload": {"n": i}})
                })
                .collect(),
        )
    };
    s.ingest(&batch(1));
    s.stop();
    s.restart();
    // Flushed rows and buffered ones.
    s.ingest(&batch(3));
    let fast = "SELECT event_type, date_trunc('day', timestamp) AS day, count(*) AS n, sum(n) AS total \
                FROM events WHERE n > 3 GROUP BY 1, 2 ORDER BY 1, 2";
    let slow = "SELECT event_type, date_bin(INTERVAL '1 day', timestamp) AS day, count(*) AS n, sum(n) AS total \
                FROM events WHERE n > 3 GROUP BY 1, 2 ORDER BY 1, 2";
    let rows = s.sql(fast);
    assert_eq!(rows.len(), 12, "{rows:?}");
    assert_eq!(rows, s.sql(slow));
    let logical = |sql: &str| -> String {
        s.sql(&format!("EXPLAIN {sql}"))
            .iter()
            .find(|r| r["plan_type"] == "logical_plan")
            .map(|r| r["plan"].as_str().unwrap().to_string())
            .unwrap()
    };
    let plan = logical(fast);
    assert!(plan.contains("CAST(events.event_date"), "{plan}");
    // Without a group by the day, nothing changes.
    let plan = logical("SELECT date_trunc('day', timestamp) AS d FROM events");
    assert!(!plan.contains("event_date"), "{plan}");
}
