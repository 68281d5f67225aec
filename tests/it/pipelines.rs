//! Pipelines through HTTP: each operator's sink table equals the same
//! work done in batch by SQL over the source, a multi-operator pipeline
//! writes each output exactly once across `kill -9`, pause, resume and
//! delete do what they say, refusals name the operator and the reason,
//! and a tenant's pipelines are its own.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

/// `n` seeded events: orders with amounts in quarters and line items (a
/// JSON array of objects), views, and signups with a plan.
fn round(seed: u64, n: usize) -> Value {
    let mut next = seeded(seed);
    let types = ["order", "view", "signup"];
    let plans = ["free", "pro", "team"];
    Value::Array(
        (0..n)
            .map(|_| {
                let kind = types[next(3) as usize];
                let items: Vec<Value> = (0..next(4))
                    .map(|i| json!({"sku": format!("s{}", next(5)), "qty": i + 1}))
                    .collect();
                json!({
                    "event_type": kind,
                    "entity_id": format!("u{}", next(20)),
                    "payload": {
                        "amount": next(400) as f64 / 4.0,
                        "plan": plans[next(3) as usize],
                        "items": items,
                        "tags": [next(3), next(3)],
                    },
                })
            })
            .collect(),
    )
}

pub(crate) fn create(s: &TestServer, body: Value) -> Reply {
    s.post("/v1/pipelines", "application/json", body.to_string())
}

pub(crate) fn info(s: &TestServer, name: &str) -> Value {
    let r = s.get(&format!("/v1/pipelines/{name}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits until the pipeline has run every event of `events`.
pub(crate) fn caught_up(s: &TestServer, name: &str) {
    let highest = s.scalar("SELECT max(position) FROM events");
    wait_until("the pipeline catches up", Duration::from_secs(60), || {
        let i = info(s, name);
        assert_eq!(i["status"], "running", "{i}");
        i["position"] == highest
    });
}

/// The rows of `sql`, which must order them.
pub(crate) fn rows(s: &TestServer, sql: &str) -> Vec<Value> {
    s.sql(sql)
}

/// Asserts that `got` and `want` (both ordered) give the same rows,
/// naming the first that differs rather than printing them all.
pub(crate) fn same_rows(s: &TestServer, got: &str, want: &str) {
    let (a, b) = (rows(s, got), rows(s, want));
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!(
            "row {i} differs: {} against {}\n  {got}\n  {want}",
            a[i], b[i]
        );
    }
    assert_eq!(a.len(), b.len(), "row counts differ\n  {got}\n  {want}");
}

#[test]
fn each_operator_equals_the_same_work_in_batch_sql() {
    let s = TestServer::start(&[]);
    s.ingest(&round(1, 300));
    let filter = json!({
        "name": "orders",
        "source": {"table": "events"},
        "operators": [{"op": "filter", "where": "event_type = 'order' AND amount >= 50"}],
        "sink": {"table": "big_orders"},
    });
    let map = json!({
        "name": "cents",
        "source": {"table": "events"},
        "operators": [{"op": "map",
            "fields": {"cents": "amount * 100", "plan": "upper(plan)", "event_type": "'priced'"},
            "drop": ["tags"]}],
        "sink": {"table": "priced"},
    });
    let flat = json!({
        "name": "lines",
        "source": {"table": "events", "start": "earliest"},
        "operators": [{"op": "flat_map", "array": "items", "as": "item"}],
        "sink": {"table": "lines"},
    });
    let scalars = json!({
        "name": "tags",
        "source": {"table": "events"},
        "operators": [{"op": "flat_map", "array": "tags", "as": "tag"}],
        "sink": {"table": "tags"},
    });
    for body in [&filter, &map, &flat, &scalars] {
        let r = create(&s, body.clone());
        assert_eq!(r.status, 201, "{}", r.text());
        let i = r.json();
        assert_eq!(i["status"], "running", "{i}");
        assert_eq!(i["operator_stats"][0]["op"], body["operators"][0]["op"]);
    }
    // Events after the pipelines start, in a second round.
    s.ingest(&round(2, 300));
    for name in ["orders", "cents", "lines", "tags"] {
        caught_up(&s, name);
    }

    assert_eq!(
        rows(
            &s,
            "SELECT event_type, entity_id, timestamp, amount, plan, items FROM big_orders ORDER BY position"
        ),
        rows(
            &s,
            "SELECT event_type, entity_id, timestamp, amount, plan, items FROM events \
                  WHERE event_type = 'order' AND amount >= 50 ORDER BY position"
        ),
    );
    // A map sets, changes and drops fields; the rest pass through.
    assert_eq!(
        rows(
            &s,
            "SELECT event_type, entity_id, timestamp, amount, plan, cents, items FROM priced ORDER BY position"
        ),
        rows(
            &s,
            "SELECT 'priced' AS event_type, entity_id, timestamp, amount, upper(plan) AS plan, \
                  amount * 100 AS cents, items FROM events ORDER BY position"
        ),
    );
    // A flat-map makes one event per element; an object element is
    // stored as JSON text, a number as a number.
    assert_eq!(
        rows(
            &s,
            "SELECT entity_id, json_get_str(item, 'sku') AS sku, json_get_int(item, 'qty') AS qty \
                  FROM lines ORDER BY position"
        ),
        rows(
            &s,
            "SELECT entity_id, json_get_str(item, 'sku') AS sku, json_get_int(item, 'qty') AS qty \
                  FROM (SELECT position, entity_id, unnest(json_get_array(items)) AS item FROM events) \
                  ORDER BY position"
        ),
    );
    assert_eq!(
        rows(&s, "SELECT entity_id, tag FROM tags ORDER BY position"),
        rows(
            &s,
            "SELECT entity_id, CAST(tag AS DOUBLE) AS tag FROM \
                  (SELECT position, entity_id, unnest(json_get_array(tags)) AS tag FROM events) ORDER BY position"
        ),
    );
    let i = info(&s, "orders");
    let expected: u64 = s
        .scalar("SELECT count(*) FROM big_orders")
        .as_u64()
        .unwrap();
    assert_eq!(i["events_written"], expected, "{i}");
    assert_eq!(i["operator_stats"][0]["events_in"], 600, "{i}");
    assert_eq!(i["operator_stats"][0]["events_out"], expected, "{i}");
    assert_eq!(i["events_read"], 600, "{i}");
    assert_eq!(i["lag_positions"], 0, "{i}");
    let listed = s.get("/v1/pipelines").json();
    assert_eq!(listed["pipelines"].as_array().unwrap().len(), 4, "{listed}");

    // The same in SQL and in /metrics.
    let row = &s.sql(
        "SELECT status, position, lag_positions, events_read, events_written, sink_table, operators \
         FROM system.pipelines WHERE name = 'orders'",
    )[0];
    assert_eq!(row["status"], "running", "{row}");
    assert_eq!(row["position"], i["position"], "{row}");
    assert_eq!(row["lag_positions"], 0, "{row}");
    assert_eq!(row["events_read"], 600, "{row}");
    assert_eq!(row["events_written"], expected, "{row}");
    assert_eq!(row["sink_table"], "big_orders", "{row}");
    let ops: Value = serde_json::from_str(row["operators"].as_str().unwrap()).unwrap();
    assert_eq!(ops[0]["events_out"], expected, "{ops}");
    assert_eq!(s.scalar("SELECT count(*) FROM system.pipelines"), 4);
    let metrics = s.client_get("/metrics");
    let series = |needles: &[&str]| -> f64 {
        metrics
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no series with {needles:?}"))
            .parse()
            .unwrap()
    };
    let written = expected as f64;
    assert_eq!(
        series(&[
            "allsource_pipeline_events{",
            "pipeline=\"orders\"",
            "kind=\"written\""
        ]),
        written
    );
    assert_eq!(
        series(&[
            "allsource_pipeline_operator_events{",
            "pipeline=\"orders\"",
            "operator=\"0:filter\"",
            "direction=\"in\""
        ]),
        600.0
    );
    assert_eq!(
        series(&["allsource_pipeline_lag_positions{", "pipeline=\"orders\""]),
        0.0
    );
    assert_eq!(
        series(&["allsource_pipeline_status{", "pipeline=\"orders\""]),
        0.0
    );
}

/// The seed's example: signups, enriched by a map, as events of another
/// table, each exactly once across ten `kill -9`s.
#[test]
fn a_multi_operator_pipeline_writes_each_output_once_across_kill9() {
    let mut s = TestServer::start(&[]);
    s.ingest(&round(10, 200));
    let body = json!({
        "name": "signups",
        "source": {"table": "events"},
        "operators": [
            {"op": "filter", "where": "event_type IN ('signup', 'order')"},
            {"op": "map", "fields": {"tier": "CASE WHEN plan = 'free' THEN 0 ELSE 1 END", "event_type": "concat(event_type, '.seen')"}},
            {"op": "flat_map", "array": "items", "as": "item"},
            {"op": "filter", "where": "json_get_int(item, 'qty') <= 2"},
        ],
        "sink": {"table": "seen"},
    });
    let r = create(&s, body);
    assert_eq!(r.status, 201, "{}", r.text());
    for round_no in 0..10u64 {
        s.ingest(&round(100 + round_no, 1_500));
        // Killed while the pipeline works through what was just
        // acknowledged, at a different point each time.
        let pause = [0, 1, 2, 4, 8, 0, 3, 16, 40, 0][round_no as usize];
        std::thread::sleep(Duration::from_millis(pause));
        s.kill9();
        s.restart();
    }
    caught_up(&s, "signups");
    let expected = "SELECT concat(event_type, '.seen') AS event_type, entity_id, timestamp, \
         CASE WHEN plan = 'free' THEN 0 ELSE 1 END AS tier, json_get_str(item, 'sku') AS sku \
         FROM (SELECT *, unnest(json_get_array(items)) AS item FROM events \
               WHERE event_type IN ('signup', 'order')) \
         WHERE json_get_int(item, 'qty') <= 2 ORDER BY position, sku";
    let got = "SELECT event_type, entity_id, timestamp, CAST(tier AS BIGINT) AS tier, \
         json_get_str(item, 'sku') AS sku FROM seen ORDER BY position, sku";
    let want = rows(&s, expected);
    assert!(want.len() > 1_000, "{}", want.len());
    let have = rows(&s, got);
    assert_eq!(have.len(), want.len(), "no output missing or repeated");
    // The same rows, and the source events' order kept (the rows of one
    // event may come in any order in the batch query).
    let sorted = |rows: &[Value]| {
        let mut all: Vec<String> = rows.iter().map(Value::to_string).collect();
        all.sort();
        all
    };
    assert!(
        sorted(&have) == sorted(&want),
        "the sink differs from the batch query"
    );
    let events = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r["event_type"], r["entity_id"], r["timestamp"], r["tier"]
                )
            })
            .collect()
    };
    assert!(
        events(&have) == events(&want),
        "the sink's order differs from the source's"
    );
    assert_eq!(
        s.scalar("SELECT count(DISTINCT event_id) FROM seen"),
        json!(want.len())
    );
    let i = info(&s, "signups");
    assert_eq!(i["events_written"], json!(want.len()), "{i}");
    // How many outputs a rerun after a kill met already stored.
    println!("duplicates answered across the kills: {}", i["duplicates"]);
}

#[test]
fn pause_resume_delete_and_restart() {
    let mut s = TestServer::start(&[]);
    s.ingest(&round(3, 50));
    let body = json!({
        "name": "views",
        "source": {"table": "events", "start": "now"},
        "operators": [{"op": "filter", "where": "event_type = 'view'"}],
        "sink": {"table": "views"},
    });
    let r = create(&s, body.clone());
    assert_eq!(r.status, 201, "{}", r.text());
    // `now`: only what comes after the pipeline was defined.
    let start = r.json()["position"].clone();
    assert_eq!(start, s.scalar("SELECT max(position) FROM events"));
    assert_eq!(create(&s, body).status, 409);
    s.ingest(&round(4, 50));
    caught_up(&s, "views");
    let views_after = |s: &TestServer| {
        s.scalar(&format!(
            "SELECT count(*) FROM events WHERE event_type = 'view' AND position > {start}"
        ))
    };
    assert_eq!(s.scalar("SELECT count(*) FROM views"), views_after(&s));

    let r = s.post("/v1/pipelines/views/pause", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "paused");
    let at = info(&s, "views")["position"].clone();
    s.ingest(&round(5, 50));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(info(&s, "views")["position"], at, "a paused pipeline stays");
    // Paused survives a restart.
    s.stop();
    s.restart();
    let i = info(&s, "views");
    assert_eq!(i["status"], "paused", "{i}");
    assert_eq!(i["position"], at);
    let r = s.post("/v1/pipelines/views/resume", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    caught_up(&s, "views");
    assert_eq!(s.scalar("SELECT count(*) FROM views"), views_after(&s));

    assert_eq!(s.delete("/v1/pipelines/views").status, 204);
    assert_eq!(s.get("/v1/pipelines/views").status, 404);
    assert_eq!(s.delete("/v1/pipelines/views").status, 404);
    s.stop();
    s.restart();
    assert_eq!(s.get("/v1/pipelines").json(), json!({"pipelines": []}));
    // What it wrote stays.
    assert_eq!(s.scalar("SELECT count(*) FROM views"), views_after(&s));
}

#[test]
fn pipelines_that_cannot_run_are_refused_with_the_operator_and_reason() {
    let s = TestServer::start(&[]);
    s.ingest(&round(6, 20));
    s.ingest(&json!([{"event_type": "x", "entity_id": "a", "payload": {"n": 1}}]));
    let with = |name: &str, ops: Value, sink: &str| json!({"name": name, "source": {"table": "events"}, "operators": ops, "sink": {"table": sink}});
    let refused = |body: Value, needle: &str| {
        let r = create(&s, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = r.error();
        assert!(
            e.contains(needle),
            "{body}: {e:?} should mention {needle:?}"
        );
    };
    refused(
        with("p", json!([{"op": "filter", "where": "nope > 1"}]), "o"),
        "operators[0] (filter)",
    );
    refused(
        with(
            "p",
            json!([{"op": "filter", "where": "amount > 1"}, {"op": "map", "fields": {"n": "count(*)"}}]),
            "o",
        ),
        "operators[1] (map): fields.n: aggregates are not per event",
    );
    refused(
        with(
            "p",
            json!([{"op": "filter", "where": "entity_id IN (SELECT entity_id FROM events)"}]),
            "o",
        ),
        "operators[0] (filter)",
    );
    refused(
        with(
            "p",
            json!([{"op": "map", "fields": {"position": "1"}}]),
            "o",
        ),
        "set by the sink",
    );
    refused(
        with(
            "p",
            json!([{"op": "map", "fields": {"event_type": "1"}}]),
            "o",
        ),
        "must be text",
    );
    refused(
        with("p", json!([{"op": "map", "drop": ["timestamp"]}]), "o"),
        "has no timestamp",
    );
    refused(
        with("p", json!([{"op": "map", "drop": ["ghost"]}]), "o"),
        "no field \"ghost\"",
    );
    refused(
        with("p", json!([{"op": "sort", "by": "entity_id"}]), "o"),
        "unknown variant `sort`",
    );
    refused(
        with("p", json!([{"op": "filter", "where": "true"}]), "events"),
        "may not write into the table it reads",
    );
    refused(with("Bad Name", json!([]), "o"), "pipeline");
    let mut late = with("p", json!([]), "o");
    late["source"]["start"] = json!("yesterday");
    refused(late, "start");
    // A cycle through another pipeline: events -> o -> events.
    let mut back = with("back", json!([]), "events");
    back["source"]["table"] = json!("o");
    s.ingest(&json!([{"event_type": "x", "entity_id": "a"}]));
    let r = s.post(
        "/v1/events?table=o",
        "application/json",
        json!([{"event_type": "x", "entity_id": "a"}]).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(create(&s, back).status, 201);
    refused(with("p", json!([]), "o"), "feed this pipeline's own source");
    // A source that does not exist.
    let mut missing = with("p", json!([]), "o2");
    missing["source"]["table"] = json!("nothing_here");
    let r = create(&s, missing);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(s.get("/v1/pipelines/nope").status, 404);
    // Only the one good pipeline exists.
    assert_eq!(
        s.get("/v1/pipelines").json()["pipelines"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_tenants_pipelines_are_its_own() {
    let s = hs_server();
    let (a, b) = (token("acme", "writer"), token("globex", "admin"));
    let r = s.post_as(
        "/v1/events",
        &a,
        "application/json",
        &round(7, 30).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json!({"name": "copy", "source": {"table": "events"}, "operators": [], "sink": {"table": "copy"}});
    let reader = token("acme", "reader");
    let r = s.post_as(
        "/v1/pipelines",
        &reader,
        "application/json",
        &body.to_string(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = s.post_as("/v1/pipelines", &a, "application/json", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get_as("/v1/pipelines/copy", &reader).status, 200);
    assert_eq!(
        s.get_as("/v1/pipelines", &b).json(),
        json!({"pipelines": []})
    );
    assert_eq!(s.get_as("/v1/pipelines/copy", &b).status, 404);
    let r = s.post_as("/v1/pipelines/copy/pause", &b, "application/json", "");
    assert_eq!(r.status, 404, "{}", r.text());
    // The copy lands in acme's table only.
    wait_until("the copy is written", Duration::from_secs(30), || {
        let r = s.post_as(
            "/v1/sql",
            &a,
            "text/plain",
            "SELECT count(*) AS n FROM copy",
        );
        r.status == 200 && r.json()[0]["n"] == 30
    });
    let r = s.post_as(
        "/v1/sql",
        &b,
        "text/plain",
        "SELECT count(*) AS n FROM copy",
    );
    assert_ne!(r.status, 200, "{}", r.text());
}
