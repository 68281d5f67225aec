//! The MCP endpoint through the official Python SDK over streamable HTTP:
//! every tool called with valid arguments and compared with the same
//! question asked over HTTP, bad arguments answered with a tool error,
//! roles and tenants kept apart, and a scenario answered with tool calls
//! only (the biggest funnel drop-off and an anomaly).

use crate::support::{AUDIENCE, ISSUER, SECRET, TestServer, hs, hs_server, now, python};
use serde_json::{Value, json};

fn token_of(tenant: &str, role: &str) -> String {
    hs(
        json!({"tenant": tenant, "role": role, "sub": format!("{tenant}-{role}"),
               "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE}),
        SECRET,
        None,
    )
}

/// Lists the tools and makes `calls` ([tool, arguments]) in one session.
fn session(s: &TestServer, token: &str, calls: &[(&str, Value)]) -> Value {
    let calls: Vec<Value> = calls.iter().map(|(t, a)| json!([t, a])).collect();
    let out = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/mcp_client.py"
        ))
        .arg(s.url("/mcp"))
        .arg(token)
        .arg(Value::Array(calls).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mcp client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn sql(s: &TestServer, token: &str, q: &str) -> Vec<Value> {
    let r = s.post_as("/v1/sql", token, "text/plain", q);
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    r.json().as_array().unwrap().clone()
}

/// Demo events: a funnel whose biggest drop is add_to_cart → purchase,
/// and hourly ticks with one hour ten times busier.
fn seed(s: &TestServer, writer: &str) {
    let start = (now() - 3 * 86_400) * 1000;
    let mut shop = Vec::new();
    for i in 0..100u64 {
        let steps = match i {
            0..9 => 4,
            9..45 => 3,
            45..60 => 2,
            _ => 1,
        };
        for (k, ty) in ["page_view", "signup", "add_to_cart", "purchase"]
            .iter()
            .take(steps)
            .enumerate()
        {
            shop.push(json!({"event_type": ty, "entity_id": format!("u{i}"),
                             "timestamp": start + i * 1000 + k as u64 * 60_000,
                             "payload": {"amount": 10 * (i % 7) + k as u64}}));
        }
    }
    let r = s.post_as(
        "/v1/events?table=shop",
        writer,
        "application/json",
        &Value::Array(shop).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ticks = Vec::new();
    for hour in 0..24u64 {
        let n = if hour == 17 { 50 } else { 4 + hour % 3 };
        for j in 0..n {
            ticks.push(
                json!({"event_type": "tick", "entity_id": format!("h{hour}"),
                              "timestamp": start + hour * 3_600_000 + j * 1000}),
            );
        }
    }
    let r = s.post_as(
        "/v1/events?table=metrics",
        writer,
        "application/json",
        &Value::Array(ticks).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn result(out: &Value, i: usize) -> &Value {
    let r = &out["results"][i];
    assert!(r.get("protocol_error").is_none(), "call {i}: {r}");
    r
}

fn ok(out: &Value, i: usize) -> &Value {
    let r = result(out, i);
    assert_eq!(r["is_error"], false, "call {i}: {r}");
    &r["structured"]
}

#[test]
fn every_tool_answers_as_http_does() {
    let s = hs_server();
    let (admin, writer, reader) = (
        token_of("acme", "admin"),
        token_of("acme", "writer"),
        token_of("acme", "reader"),
    );
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
    assert_eq!(ok(&out, 3)["rows"].as_array().unwrap().len(), 3);
    assert!(
        result(&out, 4)["text"].as_str().unwrap().contains("plan"),
        "{}",
        out["results"][4]
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
    assert_eq!(ok(&out, 6)["rows"][0]["n"], 9);
    // time_series_analysis: 24 busy hours among the gap-filled ones.
    let series = ok(&out, 7)["rows"].as_array().unwrap().clone();
    let total: i64 = series
        .iter()
        .map(|r| r["count"].as_i64().unwrap_or(0))
        .sum();
    let expected: i64 = (0..24).map(|h| if h == 17 { 50 } else { 4 + h % 3 }).sum();
    assert_eq!(total, expected, "{series:?}");
    // funnel_analysis: 100, 60, 45, 9; the biggest drop is cart → purchase.
    let funnel = ok(&out, 8);
    let reached: Vec<i64> = funnel["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entities"].as_i64().unwrap())
        .collect();
    assert_eq!(reached, [100, 60, 45, 9]);
    let levels = sql(
        &s,
        &admin,
        "SELECT level, count(*) AS n FROM (SELECT entity_id, window_funnel(INTERVAL '1 day', timestamp, event_type = 'page_view', event_type = 'signup', event_type = 'add_to_cart', event_type = 'purchase') AS level FROM shop GROUP BY entity_id) GROUP BY level",
    );
    let by_sql: Vec<i64> = (1..=4)
        .map(|l| {
            levels
                .iter()
                .filter(|r| r["level"].as_i64().unwrap() >= l)
                .map(|r| r["n"].as_i64().unwrap())
                .sum()
        })
        .collect();
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
    assert_eq!(ok(&out, 10)["valid"], true);
    let policies = ok(&out, 11)["policies"].as_array().unwrap().len();
    assert_eq!(policies, 5);
    assert_eq!(ok(&out, 12)["decision"], "allow");
    assert_eq!(ok(&out, 13)["generation"], 1);
    // The policy created over MCP holds over HTTP.
    let r = s.post_as(
        "/v1/events?table=shop",
        &writer,
        "application/json",
        &json!([{"event_type": "refund", "entity_id": "u1"}]).to_string(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(ok(&out, 14)["name"], "spend");
    assert!(ok(&out, 15)["projections"].as_array().is_some());
    assert_eq!(ok(&out, 16)["status"], "ok");

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
    let rates = &ok(&out, 1)["last_minute"];
    assert!(
        rates["events_per_second"].as_f64().unwrap() * 59.0 >= seeded - 0.5,
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

#[test]
fn bad_arguments_roles_and_tenants_get_tool_errors() {
    let s = hs_server();
    let writer = token_of("acme", "writer");
    seed(&s, &writer);
    let reader = token_of("acme", "reader");
    let calls = [
        ("advanced_query", json!({"sql": "SELEC 1"})),
        ("advanced_query", json!({})),
        ("advanced_query", json!({"sql": "SELECT nope FROM shop"})),
        ("describe_table", json!({"table": "missing"})),
        ("describe_table", json!({})),
        (
            "funnel_analysis",
            json!({"table": "shop", "steps": ["page_view"], "window": "1 day"}),
        ),
        (
            "funnel_analysis",
            json!({"table": "shop", "steps": ["a", "b"], "window": "1 day'; DROP"}),
        ),
        (
            "time_series_analysis",
            json!({"table": "metrics", "interval": "1 hour", "field": "n", "aggregate": "median"}),
        ),
        (
            "detect_anomalies",
            json!({"sql": "SELECT 1 AS n", "column": "n", "method": "nope"}),
        ),
        ("get_projection_state", json!({"name": "missing"})),
        ("evaluate_policy", json!({"action": "fly", "table": "shop"})),
        // A reader may not create a projection or a policy, nor list policies.
        (
            "create_projection",
            json!({"name": "p", "query": "SELECT entity_id, count(*) FROM shop GROUP BY 1"}),
        ),
        (
            "create_policy",
            json!({"policy": {"name": "x", "kind": "access", "effect": "allow", "actions": ["query"]}}),
        ),
        ("list_policies", json!({})),
        (
            "validate_events",
            json!({"table": "shop", "events": [{"entity_id": "no type"}]}),
        ),
        ("sample_events", json!({"table": "nope"})),
        ("list_event_types", json!({"table": "nope"})),
        ("explain_query", json!({"sql": "SELEC 1"})),
        ("replay_events", json!({"table": "shop", "from": "bogus"})),
        ("execute_pipeline", json!({"pipeline": {"name": "x"}})),
        (
            "time_series_analysis",
            json!({"table": "metrics", "interval": "fortnightly"}),
        ),
    ];
    let out = session(&s, &reader, &calls);
    let expect = [
        "400",
        "either sql or dsl",
        "nope",
        "missing",
        "table",
        "2 to 32",
        "not a duration",
        "median",
        "nope",
        "404",
        "fly",
        "403",
        "403",
        "403",
        "event_type",
        "nope",
        "nope",
        "400",
        "bogus",
        "pipeline",
        "time-series.interval",
    ];
    for (i, want) in expect.iter().enumerate() {
        let r = result(&out, i);
        assert_eq!(r["is_error"], true, "call {i} {:?}: {r}", calls[i]);
        let text = r["text"].as_str().unwrap();
        assert!(text.contains(want), "call {i} {:?}: {text}", calls[i]);
        assert!(!text.starts_with("500"), "call {i}: {text}");
    }
    // Another tenant sees none of acme's tables.
    let other = token_of("globex", "admin");
    let out = session(
        &s,
        &other,
        &[
            ("list_tables", json!({})),
            ("describe_table", json!({"table": "shop"})),
        ],
    );
    assert_eq!(ok(&out, 0)["row_count"], 0);
    assert_eq!(result(&out, 1)["is_error"], true);
    // Without a token the endpoint refuses before any tool runs.
    let r = s.post(
        "/mcp",
        "application/json",
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).to_string(),
    );
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn a_refused_mcp_call_is_audited_under_its_own_path() {
    let s = hs_server();
    let r = s.post_as(
        "/mcp",
        "not-a-token",
        "application/json",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let admin = crate::support::token("default", "admin");
    crate::support::wait_until(
        "the refusal is audited",
        std::time::Duration::from_secs(20),
        || {
            let r = s.post_as(
                "/v1/sql",
                &admin,
                "text/plain",
                "SELECT action FROM system.audit WHERE event_type = 'auth_failure'",
            );
            r.status == 200 && r.json().as_array().is_some_and(|rows| !rows.is_empty())
        },
    );
    let r = s.post_as(
        "/v1/sql",
        &admin,
        "text/plain",
        "SELECT action FROM system.audit WHERE event_type = 'auth_failure'",
    );
    assert_eq!(r.json()[0]["action"], "POST /mcp", "{}", r.text());
}
