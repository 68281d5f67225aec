//! An agent's investigation through MCP tool calls only: demo events whose
//! funnel rates and busy hour are drawn from a seed (not chosen by the
//! test), then discovery (tables, event types), the funnel's biggest
//! drop-off and the anomalous hour of errors, each checked against SQL
//! over HTTP.

use crate::mcp_support::{funnel_by_sql, ok, reached_by_tool, session, sql, tokens};
use crate::support::{hs_server, now, seeded};
use serde_json::{Value, json};

const STEPS: [&str; 5] = ["page_view", "signup", "add_to_cart", "checkout", "purchase"];

/// E-commerce demo events over the last three days from `seed`: 400
/// visitors walk the funnel, each step taken with a probability drawn
/// from the seed (30–90%), minutes apart; `error` events come a few an
/// hour, and in one hour drawn from the seed, forty more.
fn demo(seed: u64) -> Value {
    let mut next = seeded(seed);
    // On the hour, so that each hour of errors is one bucket of
    // `date_bin(INTERVAL '1 hour', …)`.
    let start = (now() / 3600 * 3600 - 3 * 86_400) * 1000;
    let continue_percent: Vec<u64> = (1..STEPS.len()).map(|_| 30 + next(61)).collect();
    let mut events = Vec::new();
    for visitor in 0..400u64 {
        let mut at = start + next(60 * 3_600_000);
        for (k, step) in STEPS.iter().enumerate() {
            if k > 0 && next(100) >= continue_percent[k - 1] {
                break;
            }
            events.push(
                json!({"event_type": step, "entity_id": format!("v{visitor}"),
                               "timestamp": at, "payload": {"amount": next(5000) as f64 / 100.0}}),
            );
            at += 60_000 + next(600_000);
        }
    }
    let busy = 2 + next(66);
    for hour in 0..70u64 {
        let n = 2 + next(3) + if hour == busy { 40 } else { 0 };
        for j in 0..n {
            events.push(
                json!({"event_type": "error", "entity_id": format!("service-{}", j % 3),
                               "timestamp": start + hour * 3_600_000 + next(3_600_000),
                               "payload": {"code": 500 + next(4)}}),
            );
        }
    }
    Value::Array(events)
}

#[test]
fn an_agent_finds_the_biggest_drop_off_and_the_anomaly_with_tools_only() {
    let s = hs_server();
    let (admin, writer, reader) = tokens("demo");
    let seed = now();
    eprintln!("demo events from seed {seed}");
    let events = demo(seed);
    let r = s.post_as(
        "/v1/events?table=shop",
        &writer,
        "application/json",
        &events.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Discovery: which tables, which event types.
    let out = session(
        &s,
        &reader,
        &[
            ("list_tables", json!({})),
            ("list_event_types", json!({"table": "shop"})),
        ],
    );
    let tables = ok(&out, 0)["rows"].as_array().unwrap().clone();
    let shop = tables.iter().find(|t| t["table"] == "shop").unwrap();
    assert_eq!(shop["events"], events.as_array().unwrap().len());
    let types: Vec<String> = ok(&out, 1)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_type"].as_str().unwrap().to_string())
        .collect();
    for step in STEPS {
        assert!(types.iter().any(|t| t == step), "{types:?}");
    }
    assert!(types.iter().any(|t| t == "error"), "{types:?}");

    // The funnel over the steps found, and the errors per hour.
    let hourly_errors = "SELECT date_bin(INTERVAL '1 hour', timestamp) AS hour, count(*) AS n \
                         FROM shop WHERE event_type = 'error' GROUP BY 1 ORDER BY 1";
    let out = session(
        &s,
        &reader,
        &[
            (
                "funnel_analysis",
                json!({"table": "shop", "steps": STEPS, "window": "1 day"}),
            ),
            (
                "detect_anomalies",
                json!({"sql": hourly_errors, "column": "n"}),
            ),
        ],
    );

    // Each step's entities as SQL counts them, and the lowest share
    // continuing is the drop-off the tool names.
    let funnel = ok(&out, 0);
    let reached = reached_by_tool(funnel);
    let by_sql = funnel_by_sql(&s, &admin, "shop", &STEPS);
    assert_eq!(reached, by_sql);
    let worst = (1..STEPS.len())
        .min_by(|&a, &b| {
            let rate = |i: usize| by_sql[i] as f64 / by_sql[i - 1].max(1) as f64;
            rate(a).total_cmp(&rate(b))
        })
        .unwrap();
    assert_eq!(funnel["biggest_drop"]["from"], STEPS[worst - 1], "{funnel}");
    assert_eq!(funnel["biggest_drop"]["to"], STEPS[worst], "{funnel}");

    // The anomalous hour is the busiest one by SQL, and the only one.
    let anomalies = ok(&out, 1)["rows"].as_array().unwrap().clone();
    let busiest = &sql(
        &s,
        &admin,
        &format!("SELECT hour, n FROM ({hourly_errors}) ORDER BY n DESC LIMIT 1"),
    )[0];
    assert_eq!(anomalies[0]["hour"], busiest["hour"], "{anomalies:?}");
    assert_eq!(anomalies[0]["n"], busiest["n"]);
    assert_eq!(anomalies[0]["is_anomaly"], true);
    let flagged = anomalies.iter().filter(|r| r["is_anomaly"] == true).count();
    assert_eq!(flagged, 1, "{anomalies:?}");
}
