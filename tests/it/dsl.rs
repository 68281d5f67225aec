//! The query DSL through `POST /v1/query` (and `allsource query`): every
//! operator, aggregation, time helper and analytics form compared with the
//! equivalent SQL on the same data; errors with their JSON paths; the
//! examples of docs/dsl.md; random documents (proptest).

use crate::support::TestServer;
use proptest::prelude::*;
use serde_json::{Value, json};

/// 40 orders and views over 12 days before "now", with a payload that has
/// numbers, strings, booleans, NULLs and a nested object.
fn shop(s: &TestServer) {
    let now = chrono::Utc::now();
    let mut events = Vec::new();
    for i in 0..40i64 {
        let ts = now - chrono::Duration::hours(i * 7 + 1);
        let country = ["de", "fr", "us", "jp"][(i % 4) as usize];
        let mut payload = json!({
            "amount": (i * 37 % 100) as f64 + 0.5,
            "country": country,
            "vip": i % 3 == 0,
            "device": {"os": if i % 2 == 0 { "ios" } else { "android" }},
        });
        if i % 5 == 0 {
            payload["amount"] = Value::Null;
        }
        events.push(json!({
            "event_id": format!("e{i:03}"),
            "event_type": if i % 2 == 1 { "view" } else { "order.placed" },
            "entity_id": format!("u{}", i % 9),
            "timestamp": ts.to_rfc3339(),
            "payload": payload,
        }));
    }
    s.ingest(&Value::Array(events));
}

fn dsl(s: &TestServer, doc: &Value) -> Vec<Value> {
    let r = s.post("/v1/query", "application/json", doc.to_string());
    assert_eq!(r.status, 200, "{doc}: {}", r.text());
    match r.json() {
        Value::Array(rows) => rows,
        other => panic!("expected rows, got {other}"),
    }
}

/// Checks that `doc` returns exactly what `sql` returns.
fn same(s: &TestServer, doc: Value, sql: &str) {
    let ours = dsl(s, &doc);
    let theirs = s.sql(sql);
    assert_eq!(ours, theirs, "\nDSL {doc}\nSQL {sql}");
}

#[test]
fn every_operator_matches_sql() {
    let s = TestServer::start(&[]);
    shop(&s);
    let sel = json!(["event_id"]);
    let cases: Vec<(Value, &str)> = vec![
        (json!(["=", "event_type", "view"]), "event_type = 'view'"),
        (json!(["!=", "country", "de"]), "country <> 'de'"),
        (json!(["<", "amount", 30]), "amount < 30"),
        (json!(["<=", "amount", 37.5]), "amount <= 37.5"),
        (json!([">", "amount", 50]), "amount > 50"),
        (json!([">=", "amount", 74.5]), "amount >= 74.5"),
        (
            json!(["in", "country", ["de", "jp"]]),
            "country IN ('de', 'jp')",
        ),
        (
            json!(["not-in", "country", ["de", "jp"]]),
            "country NOT IN ('de', 'jp')",
        ),
        (
            json!(["between", "amount", 10, 60]),
            "amount BETWEEN 10 AND 60",
        ),
        (
            json!(["like", "event_type", "order%"]),
            "event_type LIKE 'order%'",
        ),
        (
            json!(["ilike", "event_type", "ORDER%"]),
            "event_type ILIKE 'ORDER%'",
        ),
        (json!(["is-null", "amount"]), "amount IS NULL"),
        (json!(["not-null", "amount"]), "amount IS NOT NULL"),
        (
            json!(["contains", "event_type", "place"]),
            "strpos(event_type, 'place') > 0",
        ),
        (
            json!([
                "and",
                ["=", "vip", true],
                ["or", ["=", "country", "de"], ["=", "country", "us"]]
            ]),
            "vip = true AND (country = 'de' OR country = 'us')",
        ),
        (json!(["not", ["=", "vip", true]]), "NOT (vip = true)"),
        (json!([">", ["*", "amount", 2], 100]), "amount * 2 > 100"),
        (
            json!(["=", ["%", ["+", "amount", 0.5], 2], 0]),
            "(amount + 0.5) % 2 = 0",
        ),
        (
            json!(["<", ["-", "amount", 10], ["/", 100, 4]]),
            "amount - 10 < 100 / 4",
        ),
        (json!(["=", "payload.country", "fr"]), "country = 'fr'"),
        (json!(["=", ["payload", "country"], "fr"]), "country = 'fr'"),
        (
            json!(["=", "payload.device.os", "ios"]),
            "json_get_str(device, 'os') = 'ios'",
        ),
        (
            json!(["=", ["payload", "device", "os"], "ios"]),
            "json_get_str(device, 'os') = 'ios'",
        ),
        (
            json!(["=", "country", ["col", "country"]]),
            "country = country",
        ),
        (json!(["=", ["lit", "x"], "x"]), "true"),
        (
            json!(["=", ["fn", "upper", "country"], "DE"]),
            "upper(country) = 'DE'",
        ),
        (
            json!([
                "=",
                ["fn", "date_trunc", "day", "timestamp"],
                ["fn", "date_trunc", "day", "timestamp"]
            ]),
            "date_trunc('day', timestamp) = date_trunc('day', timestamp)",
        ),
    ];
    for (w, sql_where) in cases {
        same(
            &s,
            json!({"select": sel, "from": "events", "where": w, "order-by": ["event_id"]}),
            &format!("SELECT event_id FROM events WHERE {sql_where} ORDER BY event_id"),
        );
    }
    // select expressions, aliases, "*", order-by both ways, limit, offset
    same(
        &s,
        json!({"select": ["event_id", ["as", ["*", "amount", 2], "double"], "payload.device.os"],
               "from": "events", "order-by": [["desc", "event_id"]], "limit": 5, "offset": 3}),
        "SELECT event_id, amount * 2 AS double, json_get_str(device, 'os') AS \"payload.device.os\" \
         FROM events ORDER BY event_id DESC LIMIT 5 OFFSET 3",
    );
    let star = dsl(
        &s,
        &json!({"select": ["*"], "from": "events", "order-by": [["asc", "event_id"]], "limit": 1}),
    );
    assert_eq!(star[0]["event_id"], json!("e000"));
    assert!(star[0].get("country").is_some() && star[0].get("ingested_at").is_some());
    // order by a column that is not selected
    same(
        &s,
        json!({"select": ["event_id"], "from": "events", "order-by": [["desc", "amount"], "event_id"], "limit": 4}),
        "SELECT event_id FROM events ORDER BY amount DESC NULLS FIRST, event_id LIMIT 4",
    );
}

#[test]
fn every_aggregation_matches_sql() {
    let s = TestServer::start(&[]);
    shop(&s);
    same(
        &s,
        json!({"select": ["country",
                  ["count"], ["as", ["count", "amount"], "n_amount"], ["sum", "amount"], ["avg", "amount"],
                  ["min", "amount"], ["max", "amount"], ["stddev", "amount"], ["variance", "amount"],
                  ["percentile", "amount", 0.9], ["median", "amount"], ["count-distinct", "entity_id"],
                  ["first", "amount"], ["last", "entity_id"]],
               "from": "events", "group-by": ["country"], "order-by": ["country"]}),
        "SELECT country, count(*) AS count, count(amount) AS n_amount, sum(amount) AS sum_amount, \
           avg(amount) AS avg_amount, min(amount) AS min_amount, max(amount) AS max_amount, \
           stddev(amount) AS stddev_amount, var_samp(amount) AS variance_amount, \
           percentile_cont(amount, 0.9) AS percentile_amount_0_9, median(amount) AS median_amount, \
           count(DISTINCT entity_id) AS count_distinct_entity_id, \
           first_value(amount ORDER BY timestamp) AS first_amount, \
           last_value(entity_id ORDER BY timestamp) AS last_entity_id \
         FROM events GROUP BY country ORDER BY country",
    );
    // approximate forms agree with the exact ones on small data
    let approx = dsl(
        &s,
        &json!({"select": [["approx-count-distinct", "entity_id"], ["count-distinct", "entity_id"]], "from": "events"}),
    );
    assert_eq!(
        approx[0]["approx_count_distinct_entity_id"],
        approx[0]["count_distinct_entity_id"]
    );
    let p = dsl(
        &s,
        &json!({"select": [["approx-percentile", "amount", 0.5]], "from": "events"}),
    );
    assert!(p[0]["approx_percentile_amount_0_5"].as_f64().is_some());
    // having, group-by on an expression with an alias used in select
    same(
        &s,
        json!({"select": ["day", ["as", ["sum", "amount"], "revenue"]], "from": "events",
               "group-by": [["as", ["fn", "date_trunc", "day", "timestamp"], "day"]],
               "having": [">", ["count"], 2], "order-by": [["desc", "revenue"], "day"]}),
        "SELECT date_trunc('day', timestamp) AS day, sum(amount) AS revenue FROM events \
         GROUP BY date_trunc('day', timestamp) HAVING count(*) > 2 ORDER BY revenue DESC, day",
    );
    // an aggregation over an expression, no group-by
    same(
        &s,
        json!({"select": [["as", ["sum", ["*", "amount", 2]], "x"]], "from": "events", "where": ["=", "vip", true]}),
        "SELECT sum(amount * 2) AS x FROM events WHERE vip = true",
    );
}

#[test]
fn time_helpers_match_sql() {
    let s = TestServer::start(&[]);
    shop(&s);
    // events are 7 hours apart starting 1 hour ago: no event is within
    // minutes of these bounds, so the two clocks cannot disagree
    for (helper, sql) in [
        (json!(["days-ago", 3]), "now() - INTERVAL '3 days'"),
        (json!(["hours-ago", 50]), "now() - INTERVAL '50 hours'"),
        (
            json!(["minutes-ago", 600]),
            "now() - INTERVAL '600 minutes'",
        ),
    ] {
        same(
            &s,
            json!({"select": [["count"]], "from": "events", "where": [">", "timestamp", helper]}),
            &format!("SELECT count(*) AS count FROM events WHERE timestamp > {sql}"),
        );
    }
    same(
        &s,
        json!({"select": [["count"]], "from": "events", "where": ["<", "timestamp", ["now"]]}),
        "SELECT count(*) AS count FROM events WHERE timestamp < now()",
    );
    same(
        &s,
        json!({"select": [["count"]], "from": "events",
               "where": ["and", ["since", ["days-ago", 5]], ["until", ["days-ago", 2]]]}),
        "SELECT count(*) AS count FROM events WHERE timestamp >= now() - INTERVAL '5 days' \
         AND timestamp < now() - INTERVAL '2 days'",
    );
    // RFC 3339 literals
    let cut = (chrono::Utc::now() - chrono::Duration::hours(100)).to_rfc3339();
    same(
        &s,
        json!({"select": [["count"]], "from": "events", "where": [">", "timestamp", cut.clone()]}),
        &format!("SELECT count(*) AS count FROM events WHERE timestamp > '{cut}'"),
    );
    same(
        &s,
        json!({"select": [["count"]], "from": "events", "where": ["since", cut.clone()]}),
        &format!("SELECT count(*) AS count FROM events WHERE timestamp >= '{cut}'"),
    );
}

#[test]
fn analytics_forms_match_sql() {
    let s = TestServer::start(&[]);
    shop(&s);
    let start = "2026-01-01T00:00:00Z";
    let now = chrono::Utc::now();
    let begin = (now - chrono::Duration::days(14))
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    let end = (now + chrono::Duration::days(1))
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    let _ = start;
    same(
        &s,
        json!({"from": "events", "where": ["=", "event_type", "order.placed"],
               "time-series": {"interval": "1 day", "aggregations": [["count"], ["as", ["sum", "amount"], "revenue"]],
                               "start": begin, "end": end, "fill": "zero"}}),
        &format!(
            "SELECT time, count, revenue FROM gapfill('SELECT date_bin(INTERVAL ''1 day'', timestamp) AS time, \
               count(*) AS count, sum(amount) AS revenue FROM events \
               WHERE event_type = ''order.placed'' AND timestamp >= ''{begin}'' AND timestamp < ''{end}'' GROUP BY 1', \
             'time', INTERVAL '1 day', '{begin}', '{end}', 'zero')"
        ),
    );
    // time-series without a range, broken down by a column
    same(
        &s,
        json!({"from": "events", "time-series": {"interval": "2 days", "aggregations": [["count"]], "by": "country"}}),
        "SELECT date_bin(INTERVAL '2 days', timestamp) AS time, country, count(*) AS count FROM events \
         GROUP BY 1, 2 ORDER BY country, time",
    );
    // funnel: users per step as window_funnel counts them
    let funnel = dsl(
        &s,
        &json!({"from": "events", "funnel": {"steps": [["=", "event_type", "view"], ["=", "event_type", "order.placed"]],
                "window": "4 days"}}),
    );
    let levels = s.sql(
        "SELECT sum(CASE WHEN l >= 1 THEN 1 ELSE 0 END) AS s1, sum(CASE WHEN l >= 2 THEN 1 ELSE 0 END) AS s2 FROM \
         (SELECT entity_id, window_funnel(INTERVAL '4 days', timestamp, event_type = 'view', \
           event_type = 'order.placed') AS l FROM events GROUP BY entity_id)",
    );
    assert_eq!(funnel.len(), 2);
    assert_eq!(funnel[0]["users"], levels[0]["s1"]);
    assert_eq!(funnel[1]["users"], levels[0]["s2"]);
    let s1 = levels[0]["s1"].as_f64().unwrap();
    let s2 = levels[0]["s2"].as_f64().unwrap();
    assert_eq!(funnel[1]["conversion"].as_f64().unwrap(), s2 / s1);
    let median = s.scalar(
        "SELECT median(CAST(arrow_cast(f['step_2'], 'Int64') - arrow_cast(f['step_1'], 'Int64') AS DOUBLE) / 1e6) FROM \
         (SELECT funnel_steps(INTERVAL '4 days', timestamp, event_type = 'view', event_type = 'order.placed') AS f \
          FROM events GROUP BY entity_id) WHERE f['level'] >= 2",
    );
    assert!(median.as_f64().unwrap() > 0.0);
    assert_eq!(funnel[1]["median_seconds"], median);
    // funnel with a breakdown and a mode
    let by = dsl(
        &s,
        &json!({"from": "events", "funnel": {"steps": [["=", "event_type", "view"], ["=", "event_type", "order.placed"]],
                "window": 345600, "mode": "strict_increase", "breakdown": "country"}}),
    );
    assert_eq!(by.len(), 8, "{by:?}");
    assert_eq!(by[0]["country"], json!("de"));
    // retention / cohort
    same(
        &s,
        json!({"from": "events", "retention": {"cohort-event": ["=", "event_type", "view"],
               "return-event": ["=", "event_type", "order.placed"], "period": "day", "periods": 4}}),
        "SELECT * FROM cohorts('SELECT entity_id, timestamp, event_type = ''view'' AS j, \
           event_type = ''order.placed'' AS r FROM events', 'day', 4)",
    );
    // anomalies (the form fills with zeros: a day whose amounts are all
    // NULL, which depends on the hour the test runs, counts as 0)
    same(
        &s,
        json!({"from": "events", "anomalies": {"metric": ["sum", "amount"], "interval": "1 day",
               "algorithm": "zscore", "sensitivity": 1.5}}),
        "SELECT * FROM detect_anomalies('SELECT date_bin(INTERVAL ''1 day'', timestamp) AS time, \
           coalesce(sum(amount), 0) AS value FROM events GROUP BY 1 ORDER BY 1', 'value', 'zscore', 1.5)",
    );
    // trend
    same(
        &s,
        json!({"from": "events", "trend": {"metric": ["count"], "interval": "1 day", "periods": 3}}),
        "SELECT * FROM trend('SELECT date_bin(INTERVAL ''1 day'', timestamp) AS time, count(*) AS value \
           FROM events GROUP BY 1', 'time', 'value', 3)",
    );
    same(
        &s,
        json!({"from": "events", "trend": {"metric": ["count"], "interval": "1 day", "periods": 2,
               "method": "holt", "alpha": 0.5, "beta": 0.3, "start": begin, "end": end}}),
        &format!(
            "SELECT * FROM trend('SELECT * FROM gapfill(''SELECT date_bin(INTERVAL ''''1 day'''', timestamp) AS time, \
               count(*) AS value FROM events WHERE timestamp >= ''''{begin}'''' AND timestamp < ''''{end}'''' GROUP BY 1'', \
               ''time'', INTERVAL ''1 day'', ''{begin}'', ''{end}'', ''zero'')', 'time', 'value', 2, 'holt', 0.5, 0.3)"
        ),
    );
}

/// A monthly Holt trend over a gap-filled range: the months are 28 to 31
/// days apart, and the series is still one value per period, with the
/// forecast on the 1st of the following months.
#[test]
fn a_monthly_holt_trend_counts_calendar_months() {
    let s = TestServer::start(&[]);
    shop(&s);
    let rows = dsl(
        &s,
        &json!({"from": "events", "trend": {"metric": ["count"], "interval": "1 month",
                "method": "holt", "periods": 2, "start": ["days-ago", 400], "end": ["now"]}}),
    );
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(rows.len() >= 14, "{rows:?}");
    for t in &times {
        assert!(t.contains("-01T00:00:00"), "not a month start: {t}");
    }
    let forecasts: Vec<&Value> = rows.iter().filter(|r| r["is_forecast"] == true).collect();
    assert_eq!(forecasts.len(), 2, "{rows:?}");
    let total: f64 = rows.iter().filter_map(|r| r["value"].as_f64()).sum();
    assert_eq!(
        total, 40.0,
        "every event in one month of the series: {rows:?}"
    );
}

/// An hourly Holt trend of a sum, where some hours hold only events with
/// no amount: zero filling makes those hours 0 as it does empty ones, so
/// the series has no holes.
#[test]
fn a_zero_filled_series_has_no_holes_where_the_metric_is_null() {
    let s = TestServer::start(&[]);
    shop(&s);
    let rows = dsl(
        &s,
        &json!({"from": "events", "trend": {"metric": ["sum", "amount"], "interval": "1 hour",
                "method": "holt", "start": ["days-ago", 12], "end": ["now"]}}),
    );
    assert!(rows.len() >= 12 * 24, "{}", rows.len());
    assert!(rows.iter().all(|r| r["value"].is_number()), "{rows:?}");
    let total: f64 = rows.iter().filter_map(|r| r["value"].as_f64()).sum();
    let expected = s.sql("SELECT sum(amount) AS s FROM events")[0]["s"]
        .as_f64()
        .unwrap();
    assert!((total - expected).abs() < 1e-9, "{total} vs {expected}");
}

#[test]
fn errors_name_the_json_path() {
    let s = TestServer::start(&[]);
    shop(&s);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([1, 2]),
            "(document): a query document must be a JSON object",
        ),
        (json!({"select": ["event_id"]}), "from: missing"),
        (
            json!({"from": "evnts"}),
            "from: unknown table \"evnts\" (did you mean \"events\"?)",
        ),
        (
            json!({"from": "events", "selct": []}),
            "selct: unknown key \"selct\" (did you mean \"select\"?)",
        ),
        (
            json!({"from": "events", "where": ["and", ["=", "country", "de"], ["==", "vip", true]]}),
            "where[2][0]: unknown operator \"==\" (did you mean \"=\"?)",
        ),
        (
            json!({"from": "events", "select": ["event_id", "amout"]}),
            "select[1]: unknown column \"amout\" (did you mean \"amount\"?)",
        ),
        (
            json!({"from": "events", "limit": -1}),
            "limit: expected a non-negative integer",
        ),
        (
            json!({"from": "events", "limit": "10"}),
            "limit: expected a non-negative integer",
        ),
        (
            json!({"from": "events", "offset": 1.5}),
            "offset: expected a non-negative integer",
        ),
        (
            json!({"from": "events", "where": ["=", "country"]}),
            "where: \"=\" takes 2 arguments, got 1 argument",
        ),
        (
            json!({"from": "events", "where": ["in", "country", "de"]}),
            "where[2]: expected a list of values",
        ),
        (
            json!({"from": "events", "where": [">", ["sum", "amount"], 3]}),
            "where: aggregations are not allowed in where; use having",
        ),
        (
            json!({"from": "events", "where": []}),
            "where: an empty array",
        ),
        (
            json!({"from": "events", "where": [3, 4]}),
            "where[0]: expected an operator name, got a number",
        ),
        (
            json!({"from": "events", "where": {"a": 1}}),
            "where: expected a column name",
        ),
        (
            json!({"from": "events", "select": ["country", ["count"]]}),
            "select[0]: \"country\" must be in group-by or inside an aggregation",
        ),
        (
            json!({"from": "events", "select": ["event_id"], "having": ["=", "event_id", "x"]}),
            "having: having needs group-by or an aggregation",
        ),
        (
            json!({"from": "events", "having": [">", ["count"], 1]}),
            "select: \"event_id\" must be in group-by or inside an aggregation",
        ),
        (
            json!({"from": "events", "select": [["percentile", "amount", 2]]}),
            "select[0][2]: expected a fraction from 0 to 1",
        ),
        (
            json!({"from": "events", "select": [["fn", "uper", "country"]]}),
            "select[0][1]: unknown function \"uper\" (did you mean \"upper\"?)",
        ),
        (
            json!({"from": "events", "select": [["fn", "round", "country"]]}),
            "select[0][1]: function \"round\" does not accept arguments of types (Utf8View)",
        ),
        (
            json!({"from": "events", "select": [["sum", "country"]]}),
            "select[0]: function \"sum\" does not accept arguments of types (Utf8View)",
        ),
        (
            json!({"from": "events", "where": [">", "timestamp", ["days-ago", -1]]}),
            "where[2][1]: expected a non-negative number",
        ),
        (
            json!({"from": "events", "where": ["since", ["days-ago", 96486077]]}),
            "where[1][1]: 96486077 is too far in the past (at most 100000 years)",
        ),
        (
            json!({"from": "events", "where": ["since", "yesterday"]}),
            "where[1]: \"yesterday\" is not an RFC 3339 time",
        ),
        (
            json!({"from": "events", "order-by": [["desc", "nope"]]}),
            "order-by[0][1]: unknown column \"nope\"",
        ),
        (
            json!({"from": "events", "explain": "yes"}),
            "explain: expected true or false",
        ),
        (
            json!({"from": "events", "time-series": {"aggregations": [["count"]]}}),
            "time-series.interval: missing",
        ),
        (
            json!({"from": "events", "time-series": {"interval": "1 fortnight", "aggregations": [["count"]]}}),
            "time-series.interval: expected a positive interval",
        ),
        (
            json!({"from": "events", "time-series": {"interval": "1 hour", "aggregations": ["amount"]}}),
            "time-series.aggregations[0]: expected an aggregation",
        ),
        (
            json!({"from": "events", "time-series": {"interval": "1 hour", "aggregations": [["count"]], "fil": "zero"}}),
            "time-series.fil: unknown key \"fil\" (did you mean \"fill\"?)",
        ),
        (
            json!({"from": "events", "time-series": {"interval": "1 hour", "aggregations": [["count"]], "start": "2026-01-01"}}),
            "time-series.end: missing",
        ),
        (
            json!({"from": "events", "funnel": {"steps": [], "window": "1 day"}}),
            "funnel.steps: expected a list of 1 to 32 conditions",
        ),
        (
            json!({"from": "events", "funnel": {"steps": [["=", "event_type", "view"]], "window": "1 day", "mode": "strict"}}),
            "funnel.mode: funnel: unknown mode \"strict\"",
        ),
        (
            json!({"from": "events", "anomalies": {"metric": ["count"], "interval": "1 day", "algorithm": "sigma"}}),
            "anomalies.algorithm: anomalies: unknown method \"sigma\"",
        ),
        (
            json!({"from": "events", "anomalies": {"metric": ["count"], "interval": "1 day", "sensitivity": 0}}),
            "anomalies.sensitivity: anomalies: the threshold k must be a positive number",
        ),
        (
            json!({"from": "events", "trend": {"metric": ["count"], "interval": "1 day", "method": "arima"}}),
            "trend.method: unknown method \"arima\"",
        ),
        (
            json!({"from": "events", "retention": {"return-event": true}}),
            "retention.cohort-event: missing",
        ),
        (
            json!({"from": "events", "retention": {"cohort-event": true, "return-event": true, "period": "year"}}),
            "retention.period: cohorts: unknown period \"year\"",
        ),
        (
            json!({"from": "events", "funnel": {}, "trend": {}}),
            "trend: a document has one analytics form",
        ),
        (
            json!({"from": "events", "select": ["event_id"], "trend": {}}),
            "select: \"select\" cannot be combined with \"trend\"",
        ),
    ];
    for (doc, expect) in cases {
        let r = s.post("/v1/query", "application/json", doc.to_string());
        assert_eq!(r.status, 400, "{doc}: {}", r.text());
        let e = r.error();
        assert!(
            e.starts_with(expect),
            "{doc}\n  got:  {e}\n  want: {expect}…"
        );
    }
    let r = s.post("/v1/query", "application/json", "{\"from\": ");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("not valid JSON"), "{}", r.error());
    // a type error found by the engine is a 400 too
    let r = s.post(
        "/v1/query",
        "application/json",
        json!({"from": "events", "where": ["=", ["fn", "upper", "country"], 3]}).to_string(),
    );
    assert!(r.status == 400 || r.status == 200, "{}", r.text());
}

#[test]
fn explain_returns_the_plans() {
    let s = TestServer::start(&[]);
    shop(&s);
    let rows = dsl(
        &s,
        &json!({"select": ["event_id"], "from": "events", "where": ["=", "country", "de"], "explain": true}),
    );
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| r["plan_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["logical_plan", "physical_plan"]);
    assert!(
        rows[0]["plan"].as_str().unwrap().contains("country"),
        "{rows:?}"
    );
}

#[test]
fn the_cli_runs_a_document() {
    let s = TestServer::start(&[]);
    shop(&s);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.json");
    std::fs::write(
        &file,
        json!({"select": ["country", ["count"]], "from": "events", "group-by": ["country"], "order-by": ["country"]})
            .to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::server_bin())
        .args([
            "query",
            file.to_str().unwrap(),
            "--url",
            &s.base,
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "country,count\nde,10\nfr,10\njp,10\nus,10\n"
    );
    // stdin, and a refusal with its path on stderr
    let mut child = std::process::Command::new(crate::support::server_bin())
        .args(["query", "--url", &s.base])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"from": "events", "limit": -2}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limit: expected a non-negative integer"),
        "{err}"
    );
}

#[test]
fn every_example_in_the_docs_runs() {
    let s = TestServer::start(&[]);
    shop(&s);
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/dsl.md")).unwrap();
    let mut count = 0;
    let mut rest = text.as_str();
    while let Some(at) = rest.find("```json\n") {
        rest = &rest[at + 8..];
        let end = rest.find("```").unwrap();
        let doc: Value = serde_json::from_str(&rest[..end])
            .unwrap_or_else(|e| panic!("docs/dsl.md example {count} is not JSON: {e}"));
        rest = &rest[end + 3..];
        dsl(&s, &doc);
        count += 1;
    }
    assert!(count >= 10, "only {count} examples found in docs/dsl.md");
}

// ----- random documents -----

/// A random filter, as a DSL condition and the same condition in SQL.
fn condition() -> impl Strategy<Value = (Value, String)> {
    let leaf = prop_oneof![
        (
            prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]),
            0i64..100
        )
            .prop_map(|(op, v)| {
                let sql_op = if op == "!=" { "<>" } else { op };
                (json!([op, "amount", v]), format!("amount {sql_op} {v}"))
            }),
        prop::sample::subsequence(vec!["de", "fr", "us", "jp"], 1..3).prop_map(|cs| {
            let list: Vec<String> = cs.iter().map(|c| format!("'{c}'")).collect();
            (
                json!(["in", "country", cs]),
                format!("country IN ({})", list.join(", ")),
            )
        }),
        (0i64..50, 50i64..100).prop_map(|(a, b)| {
            (
                json!(["between", "amount", a, b]),
                format!("amount BETWEEN {a} AND {b}"),
            )
        }),
        any::<bool>().prop_map(|b| (json!(["=", "vip", b]), format!("vip = {b}"))),
        Just((json!(["is-null", "amount"]), "amount IS NULL".to_string())),
        Just((
            json!(["like", "event_type", "%.%"]),
            "event_type LIKE '%.%'".to_string()
        )),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|cs| {
                let sql: Vec<String> = cs.iter().map(|c| format!("({})", c.1)).collect();
                let mut doc = vec![json!("and")];
                doc.extend(cs.into_iter().map(|c| c.0));
                (Value::Array(doc), sql.join(" AND "))
            }),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|cs| {
                let sql: Vec<String> = cs.iter().map(|c| format!("({})", c.1)).collect();
                let mut doc = vec![json!("or")];
                doc.extend(cs.into_iter().map(|c| c.0));
                (Value::Array(doc), sql.join(" OR "))
            }),
            inner.prop_map(|c| (json!(["not", c.0]), format!("NOT ({})", c.1))),
        ]
    })
}

/// A random valid document and its SQL twin.
fn document() -> impl Strategy<Value = (Value, String)> {
    let columns = prop::sample::subsequence(
        vec!["event_id", "event_type", "amount", "country", "vip"],
        1..5,
    );
    (
        columns,
        prop::option::of(condition()),
        any::<bool>(),
        prop::option::of(0usize..30),
        any::<bool>(),
    )
        .prop_map(|(cols, cond, desc, limit, grouped)| {
            let mut doc = serde_json::Map::new();
            doc.insert("from".into(), json!("events"));
            let where_sql = match cond {
                Some((d, s)) => {
                    doc.insert("where".into(), d);
                    format!(" WHERE {s}")
                }
                None => String::new(),
            };
            let dir = if desc { "DESC" } else { "ASC" };
            let sql = if grouped {
                doc.insert("select".into(), json!(["country", ["count"], ["sum", "amount"]]));
                doc.insert("group-by".into(), json!(["country"]));
                doc.insert("order-by".into(), json!([[if desc { "desc" } else { "asc" }, "country"]]));
                format!(
                    "SELECT country, count(*) AS count, sum(amount) AS sum_amount FROM events{where_sql} \
                     GROUP BY country ORDER BY country {dir}"
                )
            } else {
                doc.insert("select".into(), json!(cols));
                doc.insert(
                    "order-by".into(),
                    json!([[if desc { "desc" } else { "asc" }, "event_id"]]),
                );
                format!(
                    "SELECT {} FROM events{where_sql} ORDER BY event_id {dir}",
                    cols.join(", ")
                )
            };
            let sql = match limit {
                Some(n) => {
                    doc.insert("limit".into(), json!(n));
                    format!("{sql} LIMIT {n}")
                }
                None => sql,
            };
            (Value::Object(doc), sql)
        })
}

/// Random JSON, mostly shaped like a document.
fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "events",
            "amount",
            "country",
            "=",
            "and",
            "in",
            "sum",
            "count",
            "days-ago",
            "fn",
            "as",
            "payload",
            "payload.x.y",
            "",
            "*",
            "desc",
            "1 hour",
            "nope",
        ])
        .prop_map(|s| json!(s)),
    ];
    let value = leaf.prop_recursive(4, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Value::Array)
    });
    let keys = prop::sample::select(vec![
        "select",
        "where",
        "group-by",
        "having",
        "order-by",
        "limit",
        "offset",
        "time-series",
        "funnel",
        "retention",
        "anomalies",
        "trend",
        "explain",
        "bogus",
    ]);
    prop::collection::vec((keys, value), 0..4).prop_map(|kvs| {
        let mut doc = serde_json::Map::new();
        doc.insert("from".into(), json!("events"));
        for (k, v) in kvs {
            doc.insert(k.to_string(), v);
        }
        Value::Object(doc)
    })
}

#[test]
fn random_documents_match_sql_and_junk_is_a_400() {
    let s = TestServer::start(&[]);
    shop(&s);
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |((doc, sql) in document())| {
        let ours = dsl(&s, &doc);
        let theirs = s.sql(&sql);
        prop_assert_eq!(ours, theirs, "\nDSL {}\nSQL {}", doc, sql);
    });
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(doc in junk())| {
        let r = s.post("/v1/query?format=json", "application/json", doc.to_string());
        prop_assert!(r.status == 200 || r.status == 400, "{} → {}: {}", doc, r.status, r.text());
        if r.status == 400 {
            let e = r.error();
            prop_assert!(e.contains(": "), "{} → no path in {}", doc, e);
        }
    });
}
