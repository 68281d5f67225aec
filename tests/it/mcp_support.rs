//! What the MCP tests share: tokens, a session of tool calls through the
//! official Python SDK, SQL over HTTP to compare with, and demo events.

use crate::support::{AUDIENCE, ISSUER, SECRET, TestServer, hs, now, python};
use serde_json::{Value, json};

/// The admin's, a writer's and a reader's tokens of `tenant`.
pub(crate) fn tokens(tenant: &str) -> (String, String, String) {
    (
        token_of(tenant, "admin"),
        token_of(tenant, "writer"),
        token_of(tenant, "reader"),
    )
}

/// How many entities of `table` reach each of `steps` (at least that
/// step) within a day of their first, by `window_funnel` in SQL.
pub(crate) fn funnel_by_sql(s: &TestServer, token: &str, table: &str, steps: &[&str]) -> Vec<i64> {
    let conditions: Vec<String> = steps
        .iter()
        .map(|step| format!("event_type = '{step}'"))
        .collect();
    let levels = sql(
        s,
        token,
        &format!(
            "SELECT level, count(*) AS n FROM (SELECT entity_id, window_funnel(INTERVAL '1 day', timestamp, {}) AS level FROM {table} GROUP BY entity_id) GROUP BY level",
            conditions.join(", ")
        ),
    );
    (1..=steps.len() as i64)
        .map(|l| {
            levels
                .iter()
                .filter(|r| r["level"].as_i64().unwrap() >= l)
                .map(|r| r["n"].as_i64().unwrap())
                .sum()
        })
        .collect()
}

/// The entities reaching each step, as `funnel_analysis` answered.
pub(crate) fn reached_by_tool(funnel: &Value) -> Vec<i64> {
    funnel["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entities"].as_i64().unwrap())
        .collect()
}

pub(crate) fn token_of(tenant: &str, role: &str) -> String {
    hs(
        json!({"tenant": tenant, "role": role, "sub": format!("{tenant}-{role}"),
               "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE}),
        SECRET,
        None,
    )
}

/// Lists the tools and makes `calls` ([tool, arguments]) in one session.
pub(crate) fn session(s: &TestServer, token: &str, calls: &[(&str, Value)]) -> Value {
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

pub(crate) fn sql(s: &TestServer, token: &str, q: &str) -> Vec<Value> {
    let r = s.post_as("/v1/sql", token, "text/plain", q);
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    r.json().as_array().unwrap().clone()
}

/// Demo events: a funnel whose biggest drop is add_to_cart → purchase,
/// and hourly ticks with one hour ten times busier.
pub(crate) fn seed(s: &TestServer, writer: &str) {
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

pub(crate) fn result(out: &Value, i: usize) -> &Value {
    let r = &out["results"][i];
    assert!(r.get("protocol_error").is_none(), "call {i}: {r}");
    r
}

pub(crate) fn ok(out: &Value, i: usize) -> &Value {
    let r = result(out, i);
    assert_eq!(r["is_error"], false, "call {i}: {r}");
    &r["structured"]
}
