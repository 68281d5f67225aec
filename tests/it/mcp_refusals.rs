//! MCP calls that must be refused, through the official Python SDK: bad
//! arguments answered with a tool error (never a protocol failure or a
//! 5xx), roles and tenants kept apart, a reader's row filter, mask and
//! quota applied to its tool calls, and refusals audited.

use crate::mcp_support::{ok, result, seed, session, sql, token_of, tokens};
use crate::support::hs_server;
use serde_json::json;

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
        assert!(!text.starts_with('5'), "call {i}: {text}");
    }
    // An admin's bad definitions are refused with the reason.
    let admin = token_of("acme", "admin");
    let bad_definitions = [
        (
            "create_projection",
            json!({"name": "p", "query": "SELECT entity_id, median(amount) AS m FROM shop GROUP BY 1"}),
            "median",
        ),
        (
            "create_projection",
            json!({"name": "Bad Name", "query": "SELECT count(*) AS n FROM shop"}),
            "name",
        ),
        (
            "create_policy",
            json!({"policy": {"name": "x", "kind": "access", "effect": "allow", "actions": ["query"], "principal": {"roles": ["reader"]}}}),
            "principal",
        ),
        (
            "create_policy",
            json!({"policy": {"name": "y", "kind": "row_filter", "filter": "amount >"}}),
            "filter",
        ),
    ];
    let calls: Vec<(&str, serde_json::Value)> = bad_definitions
        .iter()
        .map(|(tool, args, _)| (*tool, args.clone()))
        .collect();
    let out = session(&s, &admin, &calls);
    for (i, (tool, _, want)) in bad_definitions.iter().enumerate() {
        let r = result(&out, i);
        assert_eq!(r["is_error"], true, "{tool} {i}: {r}");
        let text = r["text"].as_str().unwrap();
        assert!(text.contains(want), "{tool} {i}: {text}");
        assert!(!text.starts_with('5'), "{tool} {i}: {text}");
    }
    // Another tenant sees none of acme's tables.
    let other = token_of("globex", "admin");
    let out = session(
        &s,
        &other,
        &[
            ("list_tables", json!({})),
            ("describe_table", json!({"table": "shop"})),
            ("resources/list", json!({})),
            ("resources/read", json!({"uri": "allsource://tables/shop"})),
        ],
    );
    assert_eq!(ok(&out, 0)["row_count"], 0);
    assert_eq!(result(&out, 1)["is_error"], true);
    let listed = out["results"][2]["items"].to_string();
    assert!(listed.contains("allsource://functions"), "{listed}");
    assert!(!listed.contains("allsource://tables/shop"), "{listed}");
    assert!(
        out["results"][3]["protocol_error"].is_string(),
        "{}",
        out["results"][3]
    );
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

#[test]
fn row_filters_masks_and_quotas_hold_for_tool_calls() {
    let s = hs_server();
    let (admin, writer, reader) = tokens("acme");
    seed(&s, &writer);
    for p in [
        json!({"name": "only_u1", "kind": "row_filter", "principals": {"roles": ["reader"]},
               "tables": ["shop"], "filter": "entity_id = 'u1'"}),
        json!({"name": "hide_amount", "kind": "mask", "principals": {"roles": ["reader"]},
               "tables": ["shop"], "masks": {"amount": "null"}}),
        json!({"name": "few_queries", "kind": "quota", "principals": {"roles": ["reader"]},
               "queries_per_day": 3}),
    ] {
        let r = s.post_as("/v1/policies", &admin, "application/json", &p.to_string());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let out = session(
        &s,
        &reader,
        &[
            (
                "advanced_query",
                json!({"sql": "SELECT entity_id, amount FROM shop ORDER BY position"}),
            ),
            (
                "advanced_query",
                json!({"sql": "SELECT count(*) AS n FROM shop"}),
            ),
            ("advanced_query", json!({"sql": "SELECT 1 AS one"})),
            ("advanced_query", json!({"sql": "SELECT 2 AS two"})),
        ],
    );
    // The reader's rows are u1's, with the amount masked.
    let rows = ok(&out, 0)["rows"].as_array().unwrap().clone();
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(row["entity_id"], "u1", "{row}");
        assert_eq!(row["amount"], serde_json::Value::Null, "{row}");
    }
    let u1 = sql(
        &s,
        &admin,
        "SELECT count(*) AS n FROM shop WHERE entity_id = 'u1'",
    );
    assert_eq!(ok(&out, 1)["rows"][0]["n"], u1[0]["n"]);
    // Three queries a day: the fourth is refused, naming the policy.
    let refused = result(&out, 3);
    assert_eq!(refused["is_error"], true, "{refused}");
    let text = refused["text"].as_str().unwrap();
    assert!(
        text.starts_with("429") && text.contains("few_queries"),
        "{text}"
    );
}

#[test]
fn without_auth_only_loopback_names_reach_the_tools() {
    let s = crate::support::TestServer::start(&[]);
    s.ingest(&json!([{"event_type": "a", "entity_id": "u1"}]));
    // No token: the tools answer a loopback client as the local admin.
    let out = session(&s, "", &[("list_tables", json!({}))]);
    let tables = ok(&out, 0)["rows"].as_array().unwrap().clone();
    assert!(tables.iter().any(|t| t["table"] == "events"), "{tables:?}");
    // A request naming another host (a web page rebinding a name to
    // loopback) is refused before any tool runs.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}});
    let post = |host: Option<&str>| {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        headers.extend(host.map(|h| ("host", h)));
        s.post_with("/mcp", &headers, initialize.to_string())
    };
    let r = post(None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(Some("attacker.example"));
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
}
