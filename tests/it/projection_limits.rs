//! Projections past their limits, through HTTP: a state over its own cap
//! or over the tenant's stops its projection with the reason, which the
//! description, `system.projections` and `/metrics` carry, and new
//! projections are refused while the tenant is over; and a projection
//! read through the DSL and Flight SQL as through SQL.

use crate::support::*;
use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use serde_json::{Value, json};
use std::time::Duration;

fn define(s: &TestServer, name: &str, query: &str) -> Reply {
    s.post(
        "/v1/projections",
        "application/json",
        json!({"name": name, "query": query}).to_string(),
    )
}

/// `n` events, each of an entity of its own.
fn distinct_entities(first: usize, n: usize) -> Value {
    Value::Array(
        (first..first + n)
            .map(|i| json!({"event_type": "seen", "entity_id": format!("entity-{i}")}))
            .collect(),
    )
}

/// Waits until `name` has stopped; returns its description.
fn failed(s: &TestServer, name: &str) -> Value {
    let mut info = Value::Null;
    wait_until("the projection stops", Duration::from_secs(30), || {
        info = s.get(&format!("/v1/projections/{name}")).json();
        info["status"] == "failed"
    });
    info
}

#[test]
fn a_projection_past_its_state_limit_stops_with_the_reason() {
    let s = TestServer::start(&["--max-projection-state-bytes", "20000"]);
    let per_entity = "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id";
    s.ingest(&json!([{"event_type": "seen", "entity_id": "first"}]));
    assert_eq!(
        define(&s, "small", "SELECT count(*) AS n FROM events").status,
        201
    );
    assert_eq!(define(&s, "big", per_entity).status, 201);
    s.ingest(&distinct_entities(0, 3000));
    let info = failed(&s, "big");
    let error = info["error"].as_str().unwrap();
    assert!(error.contains("--max-projection-state-bytes"), "{info}");
    assert!(info["errors"].as_u64().unwrap() >= 1, "{info}");
    // Its state is not served once it stopped; the other keeps going.
    let r = s.get("/v1/projections/big/state");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.error().contains("--max-projection-state-bytes"),
        "{}",
        r.error()
    );
    s.ingest(&distinct_entities(3000, 10));
    wait_until("the small one folds on", Duration::from_secs(30), || {
        s.get("/v1/projections/small/state").json()[0]["n"] == 3011
    });
    let row = &s.sql("SELECT status, error, errors FROM system.projections WHERE name = 'big'")[0];
    assert_eq!(row["status"], "failed");
    assert_eq!(row["error"], error);
    assert!(row["errors"].as_u64().unwrap() >= 1, "{row}");
    let series = |name: &str, projection: &str| {
        s.metric(&format!(
            "{name}{{projection=\"{projection}\",tenant=\"default\"}}"
        ))
    };
    assert_eq!(series("allsource_projection_failed", "big"), 1.0);
    assert!(series("allsource_projection_errors", "big") >= 1.0);
    assert_eq!(series("allsource_projection_failed", "small"), 0.0);
}

#[test]
fn a_tenants_projections_together_are_capped() {
    let s = TestServer::start(&[
        "--max-projection-state-bytes",
        "10000000",
        "--max-tenant-projection-state-bytes",
        "30000",
    ]);
    let by_entity = "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id";
    let by_entity_and_type =
        "SELECT entity_id, event_type, count(*) AS n FROM events GROUP BY entity_id, event_type";
    s.ingest(&json!([{"event_type": "seen", "entity_id": "first"}]));
    assert_eq!(define(&s, "first", by_entity).status, 201);
    assert_eq!(define(&s, "second", by_entity_and_type).status, 201);
    s.ingest(&distinct_entities(0, 1500));
    // The fold that takes the total past the cap stops its projection.
    let mut stopped = Vec::new();
    wait_until("a projection stops", Duration::from_secs(30), || {
        stopped = ["first", "second"]
            .iter()
            .map(|n| s.get(&format!("/v1/projections/{n}")).json())
            .filter(|info| info["status"] == "failed")
            .collect();
        !stopped.is_empty()
    });
    for info in &stopped {
        let error = info["error"].as_str().unwrap();
        assert!(
            error.contains("--max-tenant-projection-state-bytes"),
            "{info}"
        );
    }
    // While the tenant holds that much, no new projection.
    let r = define(&s, "third", "SELECT count(*) AS n FROM events");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.error().contains("--max-tenant-projection-state-bytes"),
        "{}",
        r.error()
    );
    // Deleting them makes room again.
    for name in ["first", "second"] {
        assert_eq!(s.delete(&format!("/v1/projections/{name}")).status, 204);
    }
    assert_eq!(
        define(&s, "third", "SELECT count(*) AS n FROM events").status,
        201
    );
}

#[test]
fn a_projection_reads_alike_through_sql_the_dsl_flight_and_its_state_route() {
    let s = TestServer::start(&[]);
    s.ingest(&json!([
        {"event_type": "order", "entity_id": "a", "payload": {"amount": 5.5}},
        {"event_type": "order", "entity_id": "a", "payload": {"amount": 7.25}},
        {"event_type": "order", "entity_id": "b", "payload": {"amount": 1.5}},
    ]));
    let q =
        "SELECT entity_id, count(*) AS orders, sum(amount) AS total FROM events GROUP BY entity_id";
    assert_eq!(define(&s, "totals", q).status, 201);
    let expected = json!([
        {"entity_id": "a", "orders": 2, "total": 12.75},
        {"entity_id": "b", "orders": 1, "total": 1.5},
    ]);
    wait_until("the projection catches up", Duration::from_secs(30), || {
        Value::Array(s.sql("SELECT * FROM projections.totals ORDER BY entity_id")) == expected
    });
    let doc = json!({"from": "projections.totals", "order-by": ["entity_id"]});
    let r = s.post("/v1/query", "application/json", doc.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), expected);

    // The state route in another format.
    let r = s.get("/v1/projections/totals/state?format=ndjson");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let mut lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.sort_by_key(|v| v["entity_id"].to_string());
    assert_eq!(Value::Array(lines), expected);
    let r = s.get("/v1/projections/totals/state?format=yaml");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("format"), "{}", r.error());

    let rows = crate::flight::runtime().block_on(async {
        let mut client = crate::flight::connect(&s).await;
        crate::flight::query(
            &mut client,
            "SELECT entity_id, orders, total FROM projections.totals ORDER BY entity_id",
        )
        .await
        .unwrap()
    });
    let batch = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    let entities: Vec<&str> = batch
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    let orders: Vec<i64> = batch
        .column(1)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    let totals: Vec<f64> = batch
        .column(2)
        .as_primitive::<Float64Type>()
        .values()
        .to_vec();
    assert_eq!(entities, ["a", "b"]);
    assert_eq!(orders, [2, 1]);
    assert_eq!(totals, [12.75, 1.5]);
}
