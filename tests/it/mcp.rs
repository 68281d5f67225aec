//! The MCP endpoint through the official Python SDK over streamable HTTP:
//! every tool called with valid arguments and compared with the same
//! question asked over HTTP (`mcp_refusals` has bad arguments, roles and
//! tenants; `mcp_scenario` an investigation made with tool calls only).

use crate::mcp_support::{funnel_by_sql, ok, reached_by_tool, result, seed, session, sql, tokens};
use crate::support::hs_server;
use serde_json::{Value, json};

#[test]
fn every_tool_answers_as_http_does() {
    let s = hs_server();
    let (admin, writer, reader) = tokens("acme");
    seed(&s, &writer);
    let calls = [
        ("list_tables", json!({})),
        ("describe_table", json!({"table": "shop"})),
        ("list_event_types", json!({"table": "shop"})),
        ("sample_events", json!({"table": "shop", "limit": 3})),
        ("explain_query", json!({"sql": "SELECT count(*) FROM shop"})),
        (
            "advanced_query",
            json!({"sql": "SELECT entity_id, count(*) AS n FROM shop GROUP BY 1 ORDER BY 2 DESC, 1", "limit": 5}),
        ),
        (
            "advanced_query",
            json!({"dsl": {"from": "shop", "select": [["as", ["count"], "n"]], "where": ["=", "event_type", "purchase"]}}),
        ),
        (
            "time_series_analysis",
            json!({"table": "metrics", "interval": "1 hour", "days": 5}),
        ),
        (
            "funnel_analysis",
            json!({"table": "shop", "steps": ["page_view", "signup", "add_to_cart", "purchase"], "window": "1 day"}),
        ),
        (
            "detect_anomalies",
            json!({"sql": "SELECT date_bin(INTERVAL '1 hour', timestamp) AS hour, count(*) AS n FROM metrics GROUP BY 1 ORDER BY 1", "column": "n"}),
        ),
        (
            "validate_events",
            json!({"table": "shop", "events": [{"event_type": "x", "entity_id": "a"}]}),
        ),
        ("list_policies", json!({})),
        (
            "evaluate_policy",
            json!({"action": "query", "table": "shop", "role": "reader", "subject": "x"}),
        ),
        (
            "create_policy",
            json!({"policy": {"name": "no_refunds", "kind": "access", "effect": "deny", "actions": ["ingest"], "tables": ["shop"], "event_types": ["refund"]}}),
        ),
        (
            "create_projection",
            json!({"name": "spend", "query": "SELECT entity_id, sum(amount) AS total, count(*) AS n FROM shop GROUP BY entity_id"}),
        ),
        ("list_projections", json!({})),
        ("health", json!({})),
        (
            "time_series_analysis",
            json!({"table": "metrics", "interval": "1 hour", "days": 5, "forecast": 3}),
        ),
    ];
    let out = session(&s, &admin, &calls);
    // Every tool is listed with a description and a schema.
    let names: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for (tool, _) in &calls {
        assert!(names.contains(tool), "{tool} not listed: {names:?}");
    }
    for t in out["tools"].as_array().unwrap() {
        assert!(
            t["description"].as_str().is_some_and(|d| d.len() > 20),
            "{t}"
        );
        assert_eq!(t["input_schema"]["type"], "object", "{t}");
    }
    // list_tables: counts as SQL gives them.
    let tables = &ok(&out, 0)["rows"];
    let shop_n = sql(&s, &admin, "SELECT count(*) AS n FROM shop")[0]["n"].clone();
    let shop = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "shop")
        .unwrap();
    assert_eq!(shop["events"], shop_n);
    // describe_table: the columns information_schema has.
    let described: Vec<String> = ok(&out, 1)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["column"].as_str().unwrap().to_string())
        .collect();
    let schema: Vec<String> = sql(&s, &admin, "SELECT column_name FROM information_schema.columns WHERE table_name = 'shop' ORDER BY ordinal_position")
        .iter().map(|r| r["column_name"].as_str().unwrap().to_string()).collect();
    assert_eq!(described, schema);
    // list_event_types and sample_events.
    let types = sql(
        &s,
        &admin,
        "SELECT event_type, count(*) AS events FROM shop GROUP BY 1 ORDER BY 2 DESC, 1",
    );
    assert_eq!(ok(&out, 2)["rows"], Value::Array(types));
    let sampled: Vec<String> = ok(&out, 3)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("'{}'", r["event_id"].as_str().unwrap()))
        .collect();
    assert_eq!(sampled.len(), 3);
    let found = sql(
        &s,
        &admin,
        &format!(
            "SELECT count(*) AS n FROM shop WHERE event_id IN ({})",
            sampled.join(", ")
        ),
    );
    assert_eq!(found[0]["n"], 3);
    assert!(
        result(&out, 4)["text"].as_str().unwrap().contains("plan"),
        "{}",
        out["results"][4]
    );
    // explain_query: the logical plan EXPLAIN gives over HTTP.
    let logical = |rows: &Value| -> Value {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["plan_type"] == "logical_plan")
            .cloned()
            .unwrap()
    };
    let explained = sql(&s, &admin, "EXPLAIN SELECT count(*) FROM shop");
    assert_eq!(
        logical(&ok(&out, 4)["rows"]),
        logical(&Value::Array(explained))
    );
    // advanced_query: the first 5 rows, and how many there were.
    let q = ok(&out, 5);
    assert_eq!(q["row_count"], 100);
    assert_eq!(q["truncated"], true);
    let first5 = sql(
        &s,
        &admin,
        "SELECT entity_id, count(*) AS n FROM shop GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
    );
    assert_eq!(q["rows"], Value::Array(first5));
    assert!(
        result(&out, 5)["text"]
            .as_str()
            .unwrap()
            .contains("95 left out"),
        "{}",
        out["results"][5]
    );
    let r = s.post_as(
        "/v1/query",
        &admin,
        "application/json",
        &json!({"from": "shop", "select": [["as", ["count"], "n"]], "where": ["=", "event_type", "purchase"]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ok(&out, 6)["rows"], r.json());
    assert_eq!(ok(&out, 6)["rows"][0]["n"], 9);
    // time_series_analysis: 24 busy hours among the gap-filled ones.
    let series = ok(&out, 7)["rows"].as_array().unwrap().clone();
    let total: i64 = series
        .iter()
        .map(|r| r["count"].as_i64().unwrap_or(0))
        .sum();
    let expected = sql(&s, &admin, "SELECT count(*) AS n FROM metrics")[0]["n"].as_i64();
    assert_eq!(Some(total), expected, "{series:?}");
    // funnel_analysis: 100, 60, 45, 9; the biggest drop is cart → purchase.
    let funnel = ok(&out, 8);
    let reached = reached_by_tool(funnel);
    assert_eq!(reached, [100, 60, 45, 9]);
    let by_sql = funnel_by_sql(
        &s,
        &admin,
        "shop",
        &["page_view", "signup", "add_to_cart", "purchase"],
    );
    assert_eq!(reached, by_sql);
    assert_eq!(funnel["biggest_drop"]["from"], "add_to_cart");
    assert_eq!(funnel["biggest_drop"]["to"], "purchase");
    // detect_anomalies: the busy hour first, flagged.
    let anomalies = ok(&out, 9)["rows"].as_array().unwrap().clone();
    assert_eq!(anomalies[0]["n"], 50, "{anomalies:?}");
    assert_eq!(anomalies[0]["is_anomaly"], true);
    assert_eq!(
        anomalies.iter().filter(|r| r["is_anomaly"] == true).count(),
        1
    );
    let busiest = sql(
        &s,
        &admin,
        "SELECT date_bin(INTERVAL '1 hour', timestamp) AS hour FROM metrics GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    );
    assert_eq!(anomalies[0]["hour"], busiest[0]["hour"]);
    // validate_events, list_policies and evaluate_policy answer as their
    // routes do.
    let r = s.post_as(
        "/v1/validate?table=shop",
        &admin,
        "application/json",
        &json!([{"event_type": "x", "entity_id": "a"}]).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ok(&out, 10), &r.json());
    assert_eq!(ok(&out, 10)["valid"], true);
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    let mut listed = names(ok(&out, 11));
    assert_eq!(listed.len(), 5);
    // The route answers after create_policy added one.
    listed.push("no_refunds".into());
    listed.sort();
    assert_eq!(listed, names(&s.get_as("/v1/policies", &admin).json()));
    assert_eq!(ok(&out, 12)["decision"], "allow");
    let r = s.post_as(
        "/v1/policies/evaluate",
        &admin,
        "application/json",
        &json!({"action": "query", "table": "shop", "principal": {"role": "reader", "subject": "x"}}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ok(&out, 12)["decision"], r.json()["decision"]);
    assert_eq!(ok(&out, 13)["generation"], 1);
    // The policy created over MCP holds over HTTP.
    let r = s.post_as(
        "/v1/events?table=shop",
        &writer,
        "application/json",
        &json!([{"event_type": "refund", "entity_id": "u1"}]).to_string(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // The change made over MCP is audited as the caller's, as over HTTP.
    crate::support::wait_until(
        "the policy change is audited",
        std::time::Duration::from_secs(20),
        || {
            let rows = sql(
                &s,
                &admin,
                "SELECT entity_id, action FROM system.audit WHERE event_type = 'admin'",
            );
            Value::Array(rows).to_string().contains("acme-admin")
        },
    );
    assert_eq!(ok(&out, 14)["name"], "spend");
    let projection_names = |v: &Value| -> Vec<Value> {
        v["projections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect()
    };
    assert_eq!(
        projection_names(ok(&out, 15)),
        projection_names(&s.get_as("/v1/projections", &admin).json())
    );
    assert_eq!(ok(&out, 16)["status"], "ok");
    // Events stored since the start: the seeded ones (the refused refund
    // is not among them).
    let stored = sql(
        &s,
        &admin,
        "SELECT (SELECT count(*) FROM shop) + (SELECT count(*) FROM metrics) AS n",
    )[0]["n"]
        .clone();
    assert_eq!(ok(&out, 16)["events_ingested_since_start"], stored);
    // The same series with a linear trend: least squares over the bucket
    // numbers, and three forecast buckets after it.
    let fitted = ok(&out, 17)["rows"].as_array().unwrap().clone();
    let (points, forecast): (Vec<&Value>, Vec<&Value>) =
        fitted.iter().partition(|r| r["is_forecast"] == false);
    assert_eq!(forecast.len(), 3, "{fitted:?}");
    assert_eq!(points.len(), series.len());
    let values: Vec<f64> = points
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values.iter().sum::<f64>() as i64, total);
    let n = values.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = values.iter().sum::<f64>() / n;
    let (sxy, sxx) = values
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(sxy, sxx), (i, y)| {
            let dx = i as f64 - mean_x;
            (sxy + dx * (y - mean_y), sxx + dx * dx)
        });
    let slope = points[0]["slope"].as_f64().unwrap();
    assert!(
        (slope - sxy / sxx).abs() < 1e-9,
        "{slope} against {}",
        sxy / sxx
    );

    // replay_events: the first events in position order; execute_pipeline
    // copies the purchases; resources and prompts.
    let out = session(
        &s,
        &writer,
        &[
            (
                "replay_events",
                json!({"table": "shop", "from": "earliest", "filter": "event_type = 'purchase'", "limit": 4}),
            ),
            (
                "execute_pipeline",
                json!({"pipeline": {"name": "buys", "source": {"table": "shop", "start": "earliest"},
                "operators": [{"op": "filter", "where": "event_type = 'purchase'"}], "sink": {"table": "buys"}}}),
            ),
            ("resources/list", json!({})),
            ("resources/read", json!({"uri": "allsource://tables/shop"})),
            ("resources/read", json!({"uri": "allsource://functions"})),
            ("prompts/list", json!({})),
            (
                "prompts/get",
                json!({"name": "investigate_conversion_drop", "arguments": {"table": "shop", "steps": "page_view,signup,purchase"}}),
            ),
            ("resources/read", json!({"uri": "allsource://tables/nope"})),
        ],
    );
    let replayed = ok(&out, 0);
    let ids: Vec<Value> = replayed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].clone())
        .collect();
    let expected: Vec<Value> = sql(
        &s,
        &writer,
        "SELECT event_id FROM shop WHERE event_type = 'purchase' ORDER BY position LIMIT 4",
    )
    .into_iter()
    .map(|r| r["event_id"].clone())
    .collect();
    assert_eq!(ids, expected);
    assert_eq!(replayed["range"]["more"], true, "{replayed}");
    assert_eq!(ok(&out, 1)["name"], "buys");
    crate::support::wait_until(
        "the pipeline copies the purchases",
        std::time::Duration::from_secs(30),
        || {
            let r = s.post_as(
                "/v1/sql",
                &writer,
                "text/plain",
                "SELECT count(*) AS n FROM buys",
            );
            r.status == 200 && r.json()[0]["n"] == 9
        },
    );
    let listed: Vec<&str> = out["results"][2]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"allsource://functions") && listed.contains(&"allsource://tables/shop"),
        "{listed:?}"
    );
    assert!(
        out["results"][3]["text"]
            .as_str()
            .unwrap()
            .contains("\"event_type\""),
        "{}",
        out["results"][3]
    );
    assert!(
        out["results"][4]["text"]
            .as_str()
            .unwrap()
            .contains("window_funnel")
    );
    let prompts: Vec<&str> = out["results"][5]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    assert!(
        out["results"][6]["text"]
            .as_str()
            .unwrap()
            .contains("funnel_analysis with steps [page_view,signup,purchase]")
    );
    assert!(
        out["results"][7]["protocol_error"]
            .as_str()
            .unwrap()
            .contains("no table"),
        "{}",
        out["results"][7]
    );

    // The projection's state, once folded, is what SQL says.
    crate::support::wait_until(
        "the projection folds",
        std::time::Duration::from_secs(30),
        || {
            let r = s.get_as("/v1/projections/spend/state?key=u1", &reader);
            r.status == 200 && r.json()[0]["n"].as_i64() == Some(4)
        },
    );
    // A second on, the seeded events count in the last minute's rate.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = session(
        &s,
        &reader,
        &[
            (
                "get_projection_state",
                json!({"name": "spend", "key": ["u1"]}),
            ),
            ("health", json!({})),
        ],
    );
    let seeded = sql(
        &s,
        &reader,
        "SELECT (SELECT count(*) FROM shop) + (SELECT count(*) FROM metrics) AS n",
    )[0]["n"]
        .as_f64()
        .unwrap();
    // Stored events only: the refused refund and the pipeline's output
    // (written by the server, not ingested) are not in the rate.
    let rates = &ok(&out, 1)["last_minute"];
    assert_eq!(
        (rates["events_per_second"].as_f64().unwrap() * 59.0).round(),
        seeded,
        "{rates}"
    );
    assert!(
        rates["queries_per_second"].as_f64().unwrap() > 0.0,
        "{rates}"
    );
    let state = ok(&out, 0);
    let expected = sql(
        &s,
        &reader,
        "SELECT sum(amount) AS total FROM shop WHERE entity_id = 'u1'",
    );
    assert_eq!(
        state["rows"][0]["total"].as_f64(),
        expected[0]["total"].as_f64()
    );
}
