//! `data_quality` on seeded events with known defects (missing fields,
//! repeated ids and payloads, late and out-of-order events, warn-rule
//! violations), checked against the same measures computed by numpy from
//! the raw rows; and the ingest-side quality metrics.

use crate::support::*;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// The measures numpy computes from the rows, keyed like the function's:
/// `event_type|field|measure`.
const NUMPY: &str = r#"
import json, sys
import numpy as np
rows = json.load(sys.stdin)
late_after = 3600.0
out = {}
def put(t, f, m, v):
    out[f"{t or ''}|{f or ''}|{m}"] = float(v)
types = sorted({r["event_type"] for r in rows})
payload = ["amount", "coupon", "page", "gift"]
declared = {("order", "amount"), ("order", "coupon"), ("order", "gift")}
for t in types:
    rs = [r for r in rows if r["event_type"] == t]
    put(t, None, "events", len(rs))
    put(t, None, "duplicate_event_ids", len(rs) - len({r["event_id"] for r in rs}))
    lags = np.array([(r["ing_us"] - r["ts_us"]) / 1e6 for r in rs])
    put(t, None, "lag_p50_seconds", np.percentile(lags, 50))
    put(t, None, "lag_p95_seconds", np.percentile(lags, 95))
    put(t, None, "lag_max_seconds", lags.max())
    put(t, None, "late_arrivals", int((lags > late_after).sum()))
    seen = {}
    for r in rs:
        key = json.dumps([r["entity_id"]] + [r[c] for c in payload])
        seen[key] = seen.get(key, 0) + 1
    put(t, None, "duplicate_payloads", sum(n - 1 for n in seen.values()))
    for c in payload:
        share = sum(r[c] is not None for r in rs) / len(rs)
        if share > 0 or (t, c) in declared:
            put(t, c, "completeness", share)
    rules = {}
    for r in rs:
        for rule in json.loads(r["_violations"] or "[]"):
            rules[rule] = rules.get(rule, 0) + 1
    for rule, n in rules.items():
        put(t, rule, "violations", n)
gaps, disorder = 0, 0
for e in sorted({r["entity_id"] for r in rows}):
    rs = sorted([r for r in rows if r["entity_id"] == e], key=lambda r: r["position"])
    vs = [r["version"] for r in rs]
    gaps += max(vs) - min(vs) + 1 - len(vs)
    disorder += sum(1 for a, b in zip(rs, rs[1:]) if b["ts_us"] < a["ts_us"])
put(None, None, "version_gaps", gaps)
put(None, None, "out_of_order", disorder)
print(json.dumps(out))
"#;

fn numpy(rows: &Value) -> serde_json::Map<String, Value> {
    let mut child = Command::new(python())
        .args(["-c", NUMPY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rows.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Object(m) => m,
        other => panic!("{other}"),
    }
}

/// Seeded events: orders (with warn rules) and views, a minute to a few
/// hours old, with the defects the measures must find.
fn seed_events(now_ms: i64) -> Vec<Value> {
    let mut next = seeded(7);
    let mut events = Vec::new();
    for i in 0..240u64 {
        let entity = format!("u{}", next(12));
        let age_ms = (next(4 * 3600) as i64 + 1) * 1000;
        let (event_type, payload) = match i % 3 {
            0 => ("view", json!({"page": format!("/p/{}", next(5))})),
            _ => {
                let mut p = serde_json::Map::new();
                if next(10) != 0 {
                    p.insert("amount".into(), json!(next(300) as f64));
                }
                if next(4) == 0 {
                    p.insert("coupon".into(), json!(format!("C{}", next(3))));
                }
                ("order", Value::Object(p))
            }
        };
        events.push(
            json!({"event_id": format!("e{i}"), "event_type": event_type, "entity_id": entity,
                           "timestamp": now_ms - age_ms, "payload": payload}),
        );
    }
    // Exact copies of a payload under new ids.
    for i in 0..5 {
        let mut copy = events[1].clone();
        copy["event_id"] = json!(format!("copy{i}"));
        events.push(copy);
    }
    events
}

#[test]
fn data_quality_agrees_with_numpy_on_seeded_defects() {
    // Ids are remembered for no time at all, so a repeated id is stored.
    let s = TestServer::start(&["--dedup-window", "0s"]);
    let r = s.post(
        "/v1/schemas/events/order",
        "application/json",
        json!({"fields": {"amount": {"type": "number", "required": true, "max": 250},
                          "coupon": {"type": "string"}, "gift": {"type": "boolean"}},
               "mode": "warn", "additional_fields": "warn"})
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let now_ms = chrono::Utc::now().timestamp_millis();
    let events = seed_events(now_ms);
    let (first, second) = events.split_at(120);
    s.ingest(&Value::from(first.to_vec()));
    s.ingest(&Value::from(second.to_vec()));
    // Repeated ids: a retry the server no longer remembers.
    s.ingest(&Value::from(events[10..14].to_vec()));
    let measured = s.sql(
        "SELECT event_type, field, measure, value FROM data_quality('events', INTERVAL '1 day')",
    );
    let got: serde_json::Map<String, Value> = measured
        .iter()
        .map(|r| {
            let key = format!(
                "{}|{}|{}",
                r["event_type"].as_str().unwrap_or(""),
                r["field"].as_str().unwrap_or(""),
                r["measure"].as_str().unwrap()
            );
            (key, r["value"].clone())
        })
        .collect();
    let rows = Value::from(s.sql(
        "SELECT event_id, event_type, entity_id, position, version, amount, coupon, page, gift, _violations, \
         CAST(\"timestamp\" AS BIGINT) AS ts_us, CAST(ingested_at AS BIGINT) AS ing_us FROM events",
    ));
    let want = numpy(&rows);
    let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&got), keys(&want), "{got:#?}");
    for (key, expected) in &want {
        let (a, b) = (got[key].as_f64().unwrap(), expected.as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{key}: {a} vs numpy {b}"
        );
    }
    // The defects were there to be found.
    let repeated = |t: &str| want[&format!("{t}||duplicate_event_ids")].as_f64().unwrap();
    assert_eq!(repeated("order") + repeated("view"), 4.0);
    assert!(want["order||duplicate_payloads"].as_f64().unwrap() >= 5.0);
    assert!(want["order||late_arrivals"].as_f64().unwrap() > 0.0);
    assert!(want["order|amount.required|violations"].as_f64().unwrap() > 0.0);
    assert!(want["order|amount.max|violations"].as_f64().unwrap() > 0.0);
    assert!(want["||out_of_order"].as_f64().unwrap() > 0.0);
    // A declared field no event has is reported, empty.
    assert_eq!(got["order|gift|completeness"], 0.0);
    // Bad calls are refused with the usage.
    for (sql, needle) in [
        ("SELECT * FROM data_quality('events')", "expects"),
        (
            "SELECT * FROM data_quality('nope', INTERVAL '1 day')",
            "nope",
        ),
        (
            "SELECT * FROM data_quality('events', 'soon; DROP')",
            "not an interval",
        ),
        (
            "SELECT * FROM data_quality('events', INTERVAL '-1 day')",
            "positive",
        ),
    ] {
        let r = s.post("/v1/sql", "text/plain", sql);
        assert_eq!(r.status, 400, "{sql}: {}", r.text());
        assert!(r.error().contains(needle), "{sql}: {}", r.error());
    }
    // The ingest side: every stored event's lag, and the repeated ids.
    assert_eq!(
        s.metric("allsource_ingest_event_lag_seconds_count{table=\"events\",tenant=\"default\"}"),
        249.0
    );
    let dup_server = TestServer::start(&[]);
    dup_server.ingest(&Value::from(events[..3].to_vec()));
    dup_server.ingest(&Value::from(events[..3].to_vec()));
    assert_eq!(
        dup_server
            .metric("allsource_ingest_duplicate_events_total{table=\"events\",tenant=\"default\"}"),
        3.0
    );
}
