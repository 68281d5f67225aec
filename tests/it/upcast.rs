//! Schema versions and migrations through HTTP: each migration kind
//! applied when events are read (stored and buffered alike) while the
//! stored events stay as written (`?raw=true`), writers declaring older
//! versions, the read paths that see the latest shape, rollback, and a
//! migration refused because it fails on a stored event.

use crate::support::*;
use serde_json::{Value, json};

fn register(s: &TestServer, table: &str, event_type: &str, body: Value) -> Value {
    let r = s.post(
        &format!("/v1/schemas/{table}/{event_type}"),
        "application/json",
        body.to_string(),
    );
    assert_eq!(r.status, 201, "{body}: {}", r.text());
    r.json()
}

fn post(s: &TestServer, table: &str, events: Value) -> Reply {
    s.post(
        &format!("/v1/events?table={table}"),
        "application/json",
        events.to_string(),
    )
}

fn rows(s: &TestServer, sql: &str, raw: bool) -> Vec<Value> {
    let path = if raw { "/v1/sql?raw=true" } else { "/v1/sql" };
    let r = s.post(path, "text/plain", sql.to_string());
    assert_eq!(r.status, 200, "{sql}: {}", r.text());
    r.json().as_array().unwrap().clone()
}

/// v1 of `purchase`: `amt` in cents, a `note`, a `legacy` flag.
fn v1() -> Value {
    json!({"fields": {"amt": {"type": "number"}, "note": {"type": "string"},
                      "legacy": {"type": "boolean"}, "cents": {"type": "number"}}})
}

/// v2: `amt` is now `amount`, `currency` defaults to EUR, `legacy` is
/// gone, `cents` is stored in whole units.
fn v2() -> Value {
    json!({"fields": {"amount": {"type": "number"}, "currency": {"type": "string"},
                      "cents": {"type": "number"}, "note": {"type": "string"}},
           "additional_fields": "reject",
           "migration": [{"rename": {"from": "amt", "to": "amount"}},
                         {"add": {"field": "currency", "default": "EUR"}},
                         {"remove": "legacy"},
                         {"transform": {"field": "cents", "sql": "cents / 100"}}]})
}

fn purchase(id: &str, payload: Value) -> Value {
    json!({"event_id": id, "event_type": "purchase", "entity_id": "u1", "payload": payload})
}

#[test]
fn each_migration_kind_applies_on_read_and_raw_reads_as_written() {
    let mut s = TestServer::start(&[]);
    register(&s, "shop", "purchase", v1());
    let old = |id: &str, amt: f64| {
        purchase(
            id,
            json!({"amt": amt, "legacy": true, "cents": amt * 100.0, "note": "n"}),
        )
    };
    let r = post(
        &s,
        "shop",
        json!([old("a", 3.0), old("b", 9.0),
        {"event_id": "r", "event_type": "refund", "entity_id": "u1", "payload": {"amt": 4, "legacy": true}}]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Flushed to Delta by the restart; the next ones stay buffered.
    s.stop();
    s.restart();
    assert_eq!(post(&s, "shop", json!([old("c", 12.0)])).status, 200);
    let v = register(&s, "shop", "purchase", v2());
    assert_eq!(v["version"], 2);
    // The table shows how each changed column reads.
    let upcast = s.get("/v1/schemas/shop").json()["upcast"].clone();
    let changed: Vec<&str> = upcast
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["column"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        ["amt", "cents", "legacy", "amount", "currency"],
        "{upcast}"
    );
    let amount = upcast
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["column"] == "amount")
        .unwrap();
    let sql = amount["sql"].as_str().unwrap();
    assert!(
        sql.starts_with("CASE WHEN") && sql.contains("'purchase'") && sql.contains("amt"),
        "{sql}"
    );
    let r = post(
        &s,
        "shop",
        json!([purchase(
            "d",
            json!({"amount": 7, "currency": "USD", "cents": 5})
        )]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A writer still on v1 says so, and is checked against v1.
    let r = post(&s, "shop", json!([purchase("e", json!({"amt": 6}))]));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("additional_fields"), "{}", r.error());
    let mut declared = purchase("e", json!({"amt": 6, "legacy": false}));
    declared["schema_version"] = json!(1);
    assert_eq!(post(&s, "shop", json!([declared])).status, 200);
    let mut unknown = purchase("f", json!({"amt": 6}));
    unknown["schema_version"] = json!(7);
    let r = post(&s, "shop", json!([unknown]));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["details"]["violations"][0]["rule"],
        "schema_version"
    );
    assert!(
        r.error().contains("purchase has no version 7 (live: 1, 2)"),
        "{}",
        r.error()
    );

    let sql = "SELECT event_id, amount, amt, currency, legacy, cents, schema_version FROM shop ORDER BY position";
    let row = |id: &str,
               amount: Value,
               amt: Value,
               currency: Value,
               legacy: Value,
               cents: Value,
               version: i64| {
        json!({"event_id": id, "amount": amount, "amt": amt, "currency": currency, "legacy": legacy,
               "cents": cents, "schema_version": version})
    };
    let n = Value::Null;
    let upcast = vec![
        row(
            "a",
            json!(3.0),
            n.clone(),
            json!("EUR"),
            n.clone(),
            json!(3.0),
            1,
        ),
        row(
            "b",
            json!(9.0),
            n.clone(),
            json!("EUR"),
            n.clone(),
            json!(9.0),
            1,
        ),
        // Another type with the same fields is left alone.
        row(
            "r",
            n.clone(),
            json!(4.0),
            n.clone(),
            json!(true),
            n.clone(),
            0,
        ),
        row(
            "c",
            json!(12.0),
            n.clone(),
            json!("EUR"),
            n.clone(),
            json!(12.0),
            1,
        ),
        row(
            "d",
            json!(7.0),
            n.clone(),
            json!("USD"),
            n.clone(),
            json!(5.0),
            2,
        ),
        row(
            "e",
            json!(6.0),
            n.clone(),
            json!("EUR"),
            n.clone(),
            n.clone(),
            1,
        ),
    ];
    let strip = |mut rows: Vec<Value>| {
        // `refund` has no schema: no version.
        for r in &mut rows {
            if r["schema_version"].is_null() {
                r["schema_version"] = json!(0);
            }
        }
        rows
    };
    assert_eq!(strip(rows(&s, sql, false)), upcast);
    let written = vec![
        row(
            "a",
            n.clone(),
            json!(3.0),
            n.clone(),
            json!(true),
            json!(300.0),
            1,
        ),
        row(
            "b",
            n.clone(),
            json!(9.0),
            n.clone(),
            json!(true),
            json!(900.0),
            1,
        ),
        row(
            "r",
            n.clone(),
            json!(4.0),
            n.clone(),
            json!(true),
            n.clone(),
            0,
        ),
        row(
            "c",
            n.clone(),
            json!(12.0),
            n.clone(),
            json!(true),
            json!(1200.0),
            1,
        ),
        row(
            "d",
            json!(7.0),
            n.clone(),
            json!("USD"),
            n.clone(),
            json!(5.0),
            2,
        ),
        row(
            "e",
            n.clone(),
            json!(6.0),
            n.clone(),
            json!(false),
            n.clone(),
            1,
        ),
    ];
    assert_eq!(strip(rows(&s, sql, true)), written);
    // Filters on a migrated column see the latest shape, before and after
    // a flush.
    let filtered =
        "SELECT event_id FROM shop WHERE amount > 5 AND currency = 'EUR' ORDER BY event_id";
    let ids = |rows: Vec<Value>| {
        rows.iter()
            .map(|r| r["event_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(rows(&s, filtered, false)), ["b", "c", "e"]);
    s.stop();
    s.restart();
    assert_eq!(ids(rows(&s, filtered, false)), ["b", "c", "e"]);
    assert_eq!(strip(rows(&s, sql, false)), upcast);

    // A chain: v3 doubles the amount, for every event below v3.
    let v3 = json!({"fields": {"amount": {"type": "number"}, "currency": {"type": "string"},
                               "cents": {"type": "number"}, "note": {"type": "string"}},
                    "migration": [{"transform": {"field": "amount", "sql": "amount * 2"}}]});
    register(&s, "shop", "purchase", v3);
    assert_eq!(
        post(&s, "shop", json!([purchase("g", json!({"amount": 1}))])).status,
        200
    );
    let amounts: Vec<(String, Value)> = rows(
        &s,
        "SELECT event_id, amount FROM shop WHERE event_type = 'purchase' ORDER BY position",
        false,
    )
    .into_iter()
    .map(|r| {
        (
            r["event_id"].as_str().unwrap().to_string(),
            r["amount"].clone(),
        )
    })
    .collect();
    let want: Vec<(String, Value)> = [
        ("a", 6.0),
        ("b", 18.0),
        ("c", 24.0),
        ("d", 14.0),
        ("e", 12.0),
        ("g", 1.0),
    ]
    .into_iter()
    .map(|(id, a)| (id.to_string(), json!(a)))
    .collect();
    assert_eq!(amounts, want);
}

#[test]
fn the_latest_shape_holds_on_every_read_path() {
    let s = TestServer::start(&[]);
    register(&s, "shop", "purchase", v1());
    let events: Vec<Value> = (0..6)
        .map(|i| purchase(&format!("p{i}"), json!({"amt": i as f64, "cents": 100.0})))
        .collect();
    assert_eq!(post(&s, "shop", Value::from(events)).status, 200);
    register(&s, "shop", "purchase", v2());
    // SQL: a CTE, a join and a subquery.
    let joined = rows(
        &s,
        "WITH big AS (SELECT event_id, amount FROM shop WHERE amount >= 3) \
         SELECT b.event_id, s.currency FROM big b JOIN shop s ON s.event_id = b.event_id \
         WHERE s.amount IN (SELECT amount FROM shop WHERE amount < 5) ORDER BY b.event_id",
        false,
    );
    assert_eq!(
        joined,
        vec![
            json!({"event_id": "p3", "currency": "EUR"}),
            json!({"event_id": "p4", "currency": "EUR"})
        ]
    );
    // The DSL.
    let r = s.post(
        "/v1/query",
        "application/json",
        json!({"from": "shop", "select": ["event_id", "amount"], "where": [">=", "amount", 4],
               "order-by": ["event_id"]})
        .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"event_id": "p4", "amount": 4.0}, {"event_id": "p5", "amount": 5.0}])
    );
    // An entity's stream, and raw.
    let stream = s.get("/v1/streams/shop/u1?limit=2").json();
    assert_eq!(
        (stream[0]["amount"].clone(), stream[0]["amt"].clone()),
        (json!(0.0), Value::Null)
    );
    assert_eq!(stream[1]["cents"], 1.0);
    let raw = s.get("/v1/streams/shop/u1?limit=1&raw=true").json();
    assert_eq!(
        (raw[0]["amount"].clone(), raw[0]["amt"].clone()),
        (Value::Null, json!(0.0))
    );
    // Flight SQL, and with `x-allsource-raw: true` as written; the raw
    // flag travels in the sealed ticket, and prepared statements too.
    let flight = |raw: bool| {
        crate::flight::runtime().block_on(async {
            let mut client = crate::flight::connect(&s).await;
            if raw {
                client.set_header("x-allsource-raw", "true");
            }
            let batches = crate::flight::query(
                &mut client,
                "SELECT sum(amount) AS a, sum(amt) AS b FROM shop",
            )
            .await
            .unwrap();
            let mut prepared = client
                .prepare("SELECT count(currency) AS c FROM shop".into(), None)
                .await
                .unwrap();
            let info = prepared.execute().await.unwrap();
            let counted = crate::flight::fetch(&mut client, info).await.unwrap();
            let batch = &batches[0];
            let value = |i: usize| {
                use arrow::array::{Array, AsArray};
                let c = batch
                    .column(i)
                    .as_primitive::<arrow::datatypes::Float64Type>();
                (!c.is_null(0)).then(|| c.value(0))
            };
            (value(0), value(1), crate::flight::int(&counted, "c"))
        })
    };
    assert_eq!(flight(false), (Some(15.0), None, 6));
    assert_eq!(flight(true), (None, Some(15.0), 0));
    // A live stream, from the buffer and as events arrive; raw as written.
    let first_event = |frames: &mut crate::live::Frames| loop {
        let frame = frames.next();
        if let Some(event) = frame.get("event") {
            return event.clone();
        }
    };
    let mut live = crate::live::open(&s, "table=shop&start=earliest");
    let event = first_event(&mut live);
    assert_eq!(
        (
            event["amount"].clone(),
            event["amt"].clone(),
            event["currency"].clone()
        ),
        (json!(0.0), Value::Null, json!("EUR"))
    );
    let mut raw_live = crate::live::open(&s, "table=shop&start=after:5&raw=true");
    let event = first_event(&mut raw_live);
    assert_eq!(
        (event["amount"].clone(), event["amt"].clone()),
        (Value::Null, json!(5.0))
    );
    // A table function's inner query.
    let gapfilled = rows(
        &s,
        "SELECT sum(total) AS total FROM gapfill('SELECT date_bin(INTERVAL ''1 hour'', timestamp) AS time, \
         sum(amount) AS total FROM shop GROUP BY 1', 'time', INTERVAL '1 hour', now() - INTERVAL '1 day', now() + INTERVAL '1 hour')",
        false,
    );
    assert_eq!(gapfilled[0]["total"], 15.0, "{gapfilled:?}");
    // A projection folds the latest shape, and keeps doing so as events
    // arrive.
    let r = s.post(
        "/v1/projections",
        "application/json",
        json!({"name": "spend", "query": "SELECT currency, sum(amount) AS total FROM shop GROUP BY currency"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mut late = purchase("p6", json!({"amt": 10}));
    late["schema_version"] = json!(1);
    assert_eq!(post(&s, "shop", json!([late])).status, 200);
    wait_until(
        "the projection folds the late event",
        std::time::Duration::from_secs(20),
        || {
            let state = s.get("/v1/projections/spend/state?key=EUR");
            state.status == 200
                && state
                    .json()
                    .as_array()
                    .is_some_and(|r| r.first().is_some_and(|r| r["total"] == 25.0))
        },
    );
    // Consumer groups: a filter on a migrated column, and raw.
    for (name, raw) in [("shaped", false), ("as_written", true)] {
        let r = s.post(
            "/v1/subscriptions",
            "application/json",
            json!({"name": name, "table": "shop", "filter": "amount >= 0", "start": "earliest", "raw": raw})
                .to_string(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["raw"], raw);
    }
    let consumed = |name: &str| {
        let lines =
            crate::groups::Consumer::start(&crate::groups::consume_url(&s, name), 3).finish();
        crate::groups::delivered(&lines).len()
    };
    assert_eq!(consumed("shaped"), 7);
    assert_eq!(consumed("as_written"), 0);
    // A pipeline filtering on a migrated column.
    let r = s.post(
        "/v1/pipelines",
        "application/json",
        json!({"name": "eur", "source": {"table": "shop", "start": "earliest"},
               "operators": [{"op": "filter", "where": "currency = 'EUR' AND amount >= 5"}],
               "sink": {"table": "eur"}})
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until(
        "the pipeline writes the matching events",
        std::time::Duration::from_secs(20),
        || {
            s.post("/v1/sql", "text/plain", "SELECT count(*) AS n FROM eur")
                .json()[0]["n"]
                == 2
        },
    );
}

#[test]
fn rollback_is_removing_the_migration() {
    let s = TestServer::start(&[]);
    register(&s, "shop", "purchase", v1());
    assert_eq!(
        post(&s, "shop", json!([purchase("a", json!({"amt": 3}))])).status,
        200
    );
    register(&s, "shop", "purchase", v2());
    let v3 = json!({"fields": {"amount": {"type": "number"}, "currency": {"type": "string"}},
                    "migration": [{"transform": {"field": "amount", "sql": "amount * 10"}}]});
    register(&s, "shop", "purchase", v3);
    let amount =
        || rows(&s, "SELECT amount FROM shop WHERE event_id = 'a'", false)[0]["amount"].clone();
    assert_eq!(amount(), 30.0);
    // Newest first.
    let r = s.delete("/v1/schemas/shop/purchase/versions/2");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.error().contains("v3"), "{}", r.error());
    // No event was written at v3: it goes at once.
    let r = s.delete("/v1/schemas/shop/purchase/versions/3");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["removed_ms"].is_i64());
    assert_eq!(amount(), 3.0);
    // v2 has events: refused without force, naming how many.
    assert_eq!(
        post(&s, "shop", json!([purchase("b", json!({"amount": 1}))])).status,
        200
    );
    let r = s.delete("/v1/schemas/shop/purchase/versions/2");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.error().contains("1 stored events"), "{}", r.error());
    let r = s.delete("/v1/schemas/shop/purchase/versions/2?force=true");
    assert_eq!(r.status, 200, "{}", r.text());
    // Everything reads as written again; v1 checks new events.
    let all = rows(
        &s,
        "SELECT event_id, amt, amount FROM shop ORDER BY position",
        false,
    );
    assert_eq!(
        all,
        vec![
            json!({"event_id": "a", "amt": 3.0, "amount": null}),
            json!({"event_id": "b", "amt": null, "amount": 1.0})
        ]
    );
    let r = post(&s, "shop", json!([purchase("c", json!({"amt": "x"}))]));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("amt.type"), "{}", r.error());
    // Numbers are never given again.
    let next = register(
        &s,
        "shop",
        "purchase",
        json!({"fields": {"amt": {"type": "number"}}}),
    );
    assert_eq!(next["version"], 4);
    let versions = s.get("/v1/schemas/shop/purchase").json();
    let live: Vec<bool> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["removed_ms"].is_null())
        .collect();
    assert_eq!(live, [true, false, false, true]);
}

#[test]
fn a_migration_failing_on_a_stored_event_is_refused() {
    let s = TestServer::start(&[]);
    register(
        &s,
        "shop",
        "purchase",
        json!({"fields": {"note": {"type": "string"}}}),
    );
    let events: Vec<Value> = ["1.5", "2", "ten", "4"]
        .iter()
        .enumerate()
        .map(|(i, note)| purchase(&format!("n{i}"), json!({"note": note})))
        .collect();
    let r = post(&s, "shop", Value::from(events));
    assert_eq!(r.status, 200);
    let position = r.json()["events"][2]["position"].clone();
    let bad = json!({"fields": {"note": {"type": "string"}, "price": {"type": "number"}},
                     "migration": [{"transform": {"field": "price", "sql": "CAST(note AS DOUBLE)"}}]});
    let r = s.post(
        "/v1/schemas/shop/purchase",
        "application/json",
        bad.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let message = r.error();
    assert!(
        message.contains("migration of purchase to v2 fails on stored event \"n2\""),
        "{message}"
    );
    assert!(
        message.contains(&format!("(position {position})")),
        "{message}"
    );
    assert_eq!(r.json()["details"]["event_id"], "n2");
    // Nothing changed.
    let versions = s.get("/v1/schemas/shop/purchase").json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    assert_eq!(rows(&s, "SELECT count(*) AS n FROM shop", false)[0]["n"], 4);
    // A safe version of it is taken.
    let safe = json!({"fields": {"note": {"type": "string"}, "price": {"type": "number"}},
                      "migration": [{"transform": {"field": "price", "sql": "TRY_CAST(note AS DOUBLE)"}}]});
    register(&s, "shop", "purchase", safe);
    let prices: Vec<Value> = rows(&s, "SELECT price FROM shop ORDER BY position", false)
        .into_iter()
        .map(|r| r["price"].clone())
        .collect();
    assert_eq!(prices, [json!(1.5), json!(2.0), Value::Null, json!(4.0)]);
    // A type error is refused with its place.
    let wrong = json!({"fields": {"price": {"type": "number"}},
                       "migration": [{"transform": {"field": "price", "sql": "no_such_function(note)"}}]});
    let r = s.post(
        "/v1/schemas/shop/purchase",
        "application/json",
        wrong.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("purchase.v3.migration[0].transform"),
        "{}",
        r.error()
    );
}

#[test]
fn an_old_version_event_whose_migration_would_fail_is_refused_at_ingest() {
    let s = TestServer::start(&[]);
    register(
        &s,
        "clean",
        "purchase",
        json!({"fields": {"note": {"type": "string"}}}),
    );
    let notes = json!([
        purchase("a", json!({"note": "1"})),
        purchase("b", json!({"note": "2"}))
    ]);
    assert_eq!(post(&s, "clean", notes).status, 200);
    // Every stored note is a number: the sample passes.
    register(
        &s,
        "clean",
        "purchase",
        json!({"fields": {"note": {"type": "string"}, "price": {"type": "number"}},
               "migration": [{"transform": {"field": "price", "sql": "CAST(note AS DOUBLE)"}}]}),
    );
    // A writer still on v1 sends a note the migration cannot read.
    let mut old = purchase("c", json!({"note": "ten"}));
    old["schema_version"] = json!(1);
    let mut fine = purchase("d", json!({"note": "3"}));
    fine["schema_version"] = json!(1);
    let r = post(&s, "clean", json!([fine.clone(), old]));
    assert_eq!(r.status, 400, "{}", r.text());
    let v = &r.json()["details"]["violations"];
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        (
            v[0]["index"].clone(),
            v[0]["rule"].clone(),
            v[0]["path"].clone()
        ),
        (json!(1), json!("migration"), json!("$[1]"))
    );
    assert!(v[0]["message"].as_str().unwrap().contains("ten"), "{v}");
    // Reads keep working, and the good one is taken alone.
    assert_eq!(post(&s, "clean", json!([fine])).status, 200);
    let prices: Vec<Value> = rows(&s, "SELECT price FROM clean ORDER BY position", false)
        .into_iter()
        .map(|r| r["price"].clone())
        .collect();
    assert_eq!(prices, [json!(1.0), json!(2.0), json!(3.0)]);
    // At v2 there is nothing to migrate: the same note is stored.
    assert_eq!(
        post(&s, "clean", json!([purchase("e", json!({"note": "ten"}))])).status,
        200
    );
}

/// A projection's state was folded from events read through the
/// migrations of its time: registering or rolling back a migration of its
/// table folds it again, so it agrees with a query of the latest shape.
#[test]
fn projections_are_folded_again_when_migrations_change() {
    let s = TestServer::start(&[]);
    register(&s, "shop", "purchase", v1());
    let events: Vec<Value> = (0..5)
        .map(|i| purchase(&format!("p{i}"), json!({"amt": i, "cents": 100 * i})))
        .collect();
    assert_eq!(post(&s, "shop", Value::Array(events)).status, 200);
    let r = s.post(
        "/v1/projections",
        "application/json",
        json!({"name": "spend", "query": "SELECT entity_id, sum(cents) AS cents, count(*) AS n FROM shop GROUP BY entity_id"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let state = |want: f64| {
        wait_until(
            &format!("the projection's cents are {want}"),
            std::time::Duration::from_secs(30),
            || {
                let r = s.get("/v1/projections/spend/state?key=u1");
                r.status == 200 && r.json()[0]["cents"].as_f64() == Some(want)
            },
        );
    };
    state(1000.0);
    // v2 reads cents in whole units: the projection folds again.
    register(&s, "shop", "purchase", v2());
    state(10.0);
    let sum = rows(&s, "SELECT sum(cents) AS c FROM shop", false);
    assert_eq!(sum[0]["c"], 10.0);
    // Rolled back (forced: nothing was written at v2 yet, so not needed).
    let r = s.delete("/v1/schemas/shop/purchase/versions/2");
    assert_eq!(r.status, 200, "{}", r.text());
    state(1000.0);
}
