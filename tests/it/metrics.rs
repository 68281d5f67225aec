//! `GET /metrics`: the Prometheus text format, counting what happened.

use crate::support::{TestServer, events};

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn metrics_count_ingest_queries_flushes_and_compactions() {
    let mut s = TestServer::start(&[]);
    s.ingest(&events("a", 7));
    s.ingest(&events("b", 5));
    let r = s.post("/v1/events", "application/json", "{\"event_type\": 3}");
    assert_eq!(r.status, 400);
    s.sql("SELECT count(*) FROM events");
    let r = s.post("/v1/sql", "text/plain", "SELEC 1");
    assert_eq!(r.status, 400);
    let r = s.post(
        "/v1/query",
        "application/json",
        r#"{"from": "events", "select": [["count"]]}"#,
    );
    assert_eq!(r.status, 200);

    let text = s.client_get("/metrics");
    assert_eq!(
        value(&text, r#"allsource_ingest_events_total{tenant="default"}"#),
        12.0
    );
    assert_eq!(
        value(
            &text,
            r#"allsource_ingest_requests_total{outcome="ok",tenant="default"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"allsource_ingest_requests_total{outcome="rejected",tenant="default"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"allsource_queries_total{interface="sql",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"allsource_queries_total{interface="sql",outcome="rejected"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"allsource_queries_total{interface="dsl",outcome="ok"}"#
        ),
        1.0
    );
    assert!(value(&text, "allsource_wal_fsync_seconds_count") >= 2.0);
    assert_eq!(
        value(&text, r#"allsource_ingest_seconds_count{tenant="default"}"#),
        2.0
    );
    assert_eq!(value(&text, "allsource_buffer_rows"), 12.0);
    assert!(value(&text, "allsource_buffer_bytes") > 0.0);

    // a restart flushes; the new process counts its own work
    s.stop();
    s.restart();
    s.ingest(&events("c", 3));
    s.stop();
    s.restart();
    s.ingest(&events("d", 3));
    let text = s.client_get("/metrics");
    assert_eq!(value(&text, "allsource_buffer_rows"), 3.0);
    let r = s.post("/v1/admin/compact", "application/json", "");
    assert_eq!(r.status, 200);
    let text = s.client_get("/metrics");
    assert_eq!(
        value(&text, r#"allsource_compactions_total{outcome="done"}"#),
        1.0
    );
    assert!(value(&text, r#"allsource_compaction_files_total{direction="in"}"#) >= 2.0);
}
